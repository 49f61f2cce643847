"""The weight gradient's two column orders (``native_cpu.DW_W_ORDER``) on every sweep layer
that takes the GEMM path, 2 threads: dW written in W's own (c, ky, kx) order, each vector of
taps gathered from the frame, against the (ky, kx, c) order, one load per vector, and the
transpose of dW afterwards (the data behind ``DW_W_ORDER_PIXELS``). Both give the same bits
(asserted). Each timed call follows a 20 ms untimed burst of the same call (as
``python -m engine.bench``); the two are interleaved for 1.5 s (at least 5 each), medians.
Run: python bench/results/scripts/dw_order.py
"""
import numpy as np

import engine  # noqa: F401  (binds the backends)
from engine.backends import native_cpu
from engine.backends.base import Window
from engine.bench.suites import SWEEP

from _burst import interleaved_medians


def window(s):
    pw = s.pad if s.pad_w is None else s.pad_w
    oh = (s.h + 2 * s.pad - s.dilation * (s.k - 1) - 1) // s.stride + 1
    ow = (s.w + 2 * pw - s.dilation * (s.kw - 1) - 1) // s.stride + 1
    return Window(s.k, s.kw, s.stride, s.stride, s.dilation, s.dilation, s.pad, s.pad, pw, pw, oh, ow)


def main():
    modes = ("never", "always")
    print(f"{'layer':32s} {'N*P':>7s} {'og':>5s} {'N*P/og':>7s} {'(ky,kx,c)+T ms':>14s} {'W order ms':>10s} "
          f"{'ratio':>6s} auto")
    for s in SWEEP:
        if s.c // s.groups == 1:  # one input channel a group: the direct kernels
            continue
        win = window(s)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((s.n, s.c, s.h, s.w), dtype=np.float32)
        gy = rng.standard_normal((s.n, s.o, win.oh, win.ow), dtype=np.float32)
        wshape = (s.o, s.c // s.groups, win.kh, win.kw)
        def in_order(mode):
            def f():
                native_cpu.DW_W_ORDER = mode
                return native_cpu.weight_grad(gy, x, wshape, win, s.groups)
            return f
        calls = {m: in_order(m) for m in modes}
        assert np.array_equal(calls["never"](), calls["always"]()), s.name
        ms = interleaved_medians(calls, 1.5, 5)
        native_cpu.DW_W_ORDER = "auto"
        a, b = (ms[m] for m in modes)
        pixels, og = s.n * win.oh * win.ow, s.o // s.groups
        auto = "W" if native_cpu._dw_in_w_order(pixels, og) else "T"
        print(f"{s.name:32s} {pixels:7d} {og:5d} {pixels / og:7.1f} {a:14.3f} {b:10.3f} {b / a:6.2f} {auto}",
              flush=True)


if __name__ == "__main__":
    main()
