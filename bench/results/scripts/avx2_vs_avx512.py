"""The C kernels' float32 conv forward built for AVX-512 (``-march=native`` here) and for
AVX2 (``ENGINE_NATIVE_MARCH=haswell``), alternating, each in a fresh process with its own
build cache. Medians of 9 calls, 2 threads, two shapes of the core table.

    python bench/results/scripts/avx2_vs_avx512.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

CHILD = r'''
import time
import numpy as np
import engine  # noqa: F401  (sets the BLAS thread timeout before NumPy's BLAS starts)
from engine.backends import native_cpu
from engine.ops._common import _window, conv_padding
from engine.kernels import native

def median_ms(fn, repeat=9):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3

rng = np.random.default_rng(0)
cells = [native.status().split(",")[0]]
for n, c, h, o in [(64, 32, 14, 64), (32, 64, 32, 128)]:
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = rng.standard_normal((o, c, 3, 3), dtype=np.float32)
    win = _window(x.shape, (3, 3), (1, 1), conv_padding(1, (3, 3), (1, 1), (1, 1), "x"), (1, 1), "x")
    ms = median_ms(lambda: native_cpu.forward(x, w, None, win, 1))
    cells.append(f"{n}x{c}x{h}->{o} k3: {ms:.2f} ms, {2 * n * o * h * h * c * 9 / ms / 1e6:.0f} GFLOP/s")
print(" | ".join(cells), flush=True)
'''


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    with tempfile.TemporaryDirectory() as tmp:
        for march in ("haswell", "native", "haswell", "native"):
            env = {**os.environ, "ENGINE_NATIVE_MARCH": march, "ENGINE_CACHE_DIR": os.path.join(tmp, march)}
            subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=root, check=True)


if __name__ == "__main__":
    main()
