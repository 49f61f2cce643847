"""Largest error, in float32 ulps against float64, of the C tanh and sigmoid kernels
(kernels/cpu_activations.c) over every float32 input, beside NumPy's float32 np.tanh and the
engine's array-API sigmoid on the same inputs.

    PYTHONPATH=. python bench/results/scripts/activation_ulps.py [--step 1]

``--step k`` takes every k-th bit pattern (1: all 2^32; takes a few minutes on one core).
The ulp of a value is that of its float32 rounding's binade (2^-149 below the normal range);
NaN inputs must give NaN, and infinite results must be exact.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """``|got - exact| / ulp(exact)`` in float32 ulps, ``exact`` in float64 (finite)."""
    _, e = np.frexp(exact)
    ulp = np.ldexp(1.0, np.maximum(e - 1, -126) - 23)
    return np.abs(got.astype(np.float64) - exact) / ulp


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step", type=int, default=1, help="take every STEP-th float32 bit pattern")
    args = p.parse_args(argv)
    from engine.backends import native_cpu
    from engine.kernels import native
    print("kernels:", native.status())
    lib = native.library()
    worst = {k: (0.0, None) for k in ("tanh C", "tanh np.tanh", "sigmoid C", "sigmoid array-API")}
    chunk = 1 << 24
    start = time.perf_counter()
    for base in range(0, 1 << 32, chunk):
        bits = np.arange(base, base + chunk, args.step, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        nan = np.isnan(x)
        with np.errstate(over="ignore", invalid="ignore"):  # signalling NaNs warn when cast
            x64 = x.astype(np.float64)
            refs = {"tanh": np.tanh(x64), "sigmoid": 1.0 / (1.0 + np.exp(-x64))}
        outs = {"tanh C": ("tanh", np.empty_like(x)), "sigmoid C": ("sigmoid", np.empty_like(x))}
        lib.tanh_f32(native_cpu._ptr(x), native_cpu._ptr(outs["tanh C"][1]), 0, x.size)
        lib.sigmoid_f32(native_cpu._ptr(x), native_cpu._ptr(outs["sigmoid C"][1]), 0, x.size)
        with np.errstate(all="ignore"):
            outs["tanh np.tanh"] = ("tanh", np.tanh(x))
            e = np.exp(-np.abs(x))
            outs["sigmoid array-API"] = ("sigmoid", np.where(x >= 0, 1 / (1 + e), e / (1 + e)))
        for name, (fn, got) in outs.items():
            if not np.array_equal(np.isnan(got), nan):
                raise SystemExit(f"{name}: NaN where the input is not NaN, or a number for a NaN")
            err = ulp_error(got[~nan], refs[fn][~nan])
            i = int(np.argmax(err))
            if err[i] > worst[name][0]:
                worst[name] = (float(err[i]), float(x[~nan][i]))
        if base % (1 << 28) == 0:
            print(f"  {base / 2**32:5.1%}  {time.perf_counter() - start:6.0f} s", flush=True)
    for name, (err, at) in worst.items():
        print(f"{name:20s} max {err:.3f} ulp (at x = {at!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
