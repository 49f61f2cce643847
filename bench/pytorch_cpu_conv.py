"""The core issue's table: conv2d forward and forward+backward on NumPy float32,
interleaved with PyTorch CPU on the same threads, for the five core shapes,
with PASS/MISS against the targets (engine <= 1.25x PyTorch's median; conv
forward <= 1.3x the bare GEMM).

    python -m engine.bench.pytorch_cpu_conv [--threads N] [--repeat N] [--json FILE] ...

is ``python -m engine.bench --suite core --backend numpy --dtype float32`` plus any
options given.
"""
from __future__ import annotations

import sys

from .__main__ import main


def run(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["--suite", "core", "--backend", "numpy", "--dtype", "float32", *argv])


if __name__ == "__main__":
    sys.exit(run())
