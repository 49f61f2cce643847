"""The weight gradient through dot products along output rows (``DW_ROWS = "always"``,
``kernels/cpu_dw_rows.c``) against the path it replaces (``"never"``: the GEMM path, or for
one input channel the depthwise loops of ``kernels/cpu_depthwise.c``) and PyTorch,
interleaved in one process (the bench's burst protocol), over layers with 1 to 64 input
channels:

    python bench/results/scripts/dw_rows_ab.py [seconds per shape]

Each row: medians (ms), rows/other, each over PyTorch, and the largest difference of either
path from a float64 reference, relative to its largest element."""
import sys

import numpy as np
import torch

from _burst import interleaved_medians
from engine.backends import native_cpu
from engine.backends.base import Window

SHAPES = [  # name, (N, C, H, O, k, stride, pad)
    ("SimpleCNN conv1", (128, 1, 28, 32, 3, 1, 1)),
    ("LeNet-5 C1", (64, 1, 28, 6, 5, 1, 2)),
    ("LeNet-5 C1 b1", (1, 1, 28, 6, 5, 1, 2)),
    ("LeNet-5 C1 32x32", (64, 1, 32, 6, 5, 1, 0)),
    ("5x5 1->16@28", (128, 1, 28, 16, 5, 1, 2)),
    ("3x3 1->32@64", (8, 1, 64, 32, 3, 1, 1)),
    ("LeNet-5 C3", (128, 6, 14, 16, 5, 1, 0)),
    ("NumPy-course conv2 5x5/2", (64, 8, 14, 16, 5, 2, 2)),
    ("VGG CIFAR conv1", (64, 3, 32, 64, 3, 1, 1)),
    ("VGG CIFAR conv1 b8", (8, 3, 32, 64, 3, 1, 1)),
    ("ResNet-20 stage1 3x3", (128, 16, 32, 16, 3, 1, 1)),
    ("ResNet-20 conv1", (128, 3, 32, 16, 3, 1, 1)),
    ("ResNet stem 7x7/2", (8, 3, 224, 64, 7, 2, 3)),
    ("ResNet stem 7x7/2 b1", (1, 3, 224, 64, 7, 2, 3)),
    ("VGG-16 conv1_1 b1", (1, 3, 224, 64, 3, 1, 1)),
    ("VGG-16 conv1_2 b1", (1, 64, 224, 64, 3, 1, 1)),
    ("AlexNet conv1 11x11/4", (8, 3, 227, 64, 11, 4, 2)),
    ("CIFAR 3x3 8->32@32", (64, 8, 32, 32, 3, 1, 1)),
    ("CIFAR 3x3 32->32@32", (64, 32, 32, 32, 3, 1, 1)),
    ("3x3 16->32@16", (64, 16, 16, 32, 3, 1, 1)),
    ("3x3 3->32@7", (64, 3, 7, 32, 3, 1, 1)),
    ("1x1/2 32->64@16", (128, 32, 16, 64, 1, 2, 0)),
    ("3x3 3->16@112", (8, 3, 112, 16, 3, 1, 1)),
    ("3x3 3->32@28", (64, 3, 28, 32, 3, 1, 1)),
    ("5x5 4->24@56", (16, 4, 56, 24, 5, 1, 2)),
    ("3x3 8->16@14", (64, 8, 14, 16, 3, 1, 1)),
    ("7x7 3->32@64", (16, 3, 64, 32, 7, 1, 3)),
    ("3x3/2 3->24@224 b1", (1, 3, 224, 24, 3, 2, 1)),
    ("3x3 2->8@48", (32, 2, 48, 8, 3, 1, 1)),
]


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    torch.set_num_threads(2)
    print(f"{'layer':28s} {'shape':26s} {'rows':>8s} {'other':>8s} {'torch':>8s} {'rows/other':>10s} "
          f"{'rows/torch':>10s} {'other/torch':>11s} {'err rows':>8s} {'err other':>9s}")
    for name, (n, c, h, o, k, s, p) in SHAPES:
        oh = (h + 2 * p - k) // s + 1
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        gy = rng.standard_normal((n, o, oh, oh), dtype=np.float32)
        win = Window(k, k, s, s, 1, 1, p, p, p, p, oh, oh)
        xt, gt = torch.from_numpy(x), torch.from_numpy(gy)

        def path(mode):
            def f():
                native_cpu.DW_ROWS = mode
                return native_cpu.weight_grad(gy, x, (o, c, k, k), win, 1)
            return f
        calls = {"rows": path("always"), "other": path("never"),
                 "torch": lambda: torch.ops.aten.convolution_backward(
                     gt, xt, torch.empty(o, c, k, k), None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                     [False, True, False])}
        w64 = torch.empty(o, c, k, k, dtype=torch.float64)
        ref = torch.ops.aten.convolution_backward(gt.double(), xt.double(), w64, None, [s, s], [p, p], [1, 1],
                                                  False, [0, 0], 1, [False, True, False])[1].numpy()
        err = {m: float(np.abs(calls[m]() - ref).max() / np.abs(ref).max()) for m in ("rows", "other")}
        m = interleaved_medians(calls, seconds, 7)
        shape = f"{n}x{c}x{h}->{o} k{k} s{s} p{p}"
        print(f"{name:28s} {shape:26s} {m['rows']:8.3f} {m['other']:8.3f} {m['torch']:8.3f} "
              f"{m['rows'] / m['other']:10.2f} {m['rows'] / m['torch']:10.2f} {m['other'] / m['torch']:11.2f} "
              f"{err['rows']:8.1e} {err['other']:9.1e}", flush=True)
    native_cpu.DW_ROWS = "auto"


if __name__ == "__main__":
    main()
