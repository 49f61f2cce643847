"""Winograd's F(2x2, 3x3) (kernels/cpu_winograd.c) against the GEMM path and PyTorch, forward
and input gradient, on 3x3 stride-1 layers of the sweep and a few more, 2 threads: where does
it win, and by how much (the data behind ``wino_wins``)?

Each timed call follows a 20 ms untimed burst of the same call (as ``python -m engine.bench``);
the three are interleaved, medians of 7; ``wins`` is what ``wino_wins`` picks for the layer
(for the input gradient: for the forward of dY it runs as).
Run: python bench/results/scripts/winograd_vs_gemm.py
"""
import numpy as np
import torch

import engine
from engine.backends import native_cpu
from engine.backends.base import Window
from engine.kernels import native

from _burst import burst_time

LAYERS = [  # (name, N, C, H, O)
    ("SimpleCNN conv2 b8", 8, 32, 14, 64),
    ("SimpleCNN conv2 b128", 128, 32, 14, 64),
    ("VGG CIFAR 128->256 8x8", 128, 128, 8, 256),
    ("VGG-16 conv2_1 b1", 1, 64, 112, 128),
    ("VGG-16 conv4_2 b1", 1, 512, 28, 512),
    ("VGG-16 conv5_1 b1", 1, 512, 14, 512),
    ("ResNet layer1 b8", 8, 64, 56, 64),
    ("ResNet layer3 b8", 8, 256, 14, 256),
    ("ResNet layer4 b8", 8, 512, 7, 512),
    ("ResNet layer4 b1", 1, 512, 7, 512),
    ("ResNet-20 stage1 b128", 128, 16, 32, 16),
    ("ResNet-20 stage2 b128", 128, 32, 16, 32),
    ("ResNet-20 stage3 b128", 128, 64, 8, 64),
    ("7x7, 64 channels b128", 128, 64, 7, 64),
    ("16->32 at 28x28 b128", 128, 16, 28, 32),
]


def median_ms(times):
    return sorted(times)[len(times) // 2] * 1e3


lib = native.library()
torch.set_num_threads(2)
engine.set_num_threads(2)
rng = np.random.default_rng(0)
print(f"{'layer':24s} {'op':3s} {'wins':>4s} {'wino ms':>8s} {'gemm ms':>8s} {'torch ms':>8s} "
      f"{'wino/gemm':>9s} {'wino/torch':>10s} {'gemm/torch':>10s}")
for name, n, c, h, o in LAYERS:
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    g = rng.standard_normal((n, o, h, h)).astype(np.float32)
    win = Window(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, h, h)
    tx, tw, tb, tg = map(torch.from_numpy, (x, w, b, g))
    calls = {
        "fwd": (lambda: native_cpu.forward(x, w, b, win, 1),
                lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1)),
        "dx": (lambda: native_cpu.input_grad(g, w, x.shape, win, 1),
               lambda: torch.ops.aten.convolution_backward(tg, tx, tw, None, [1, 1], [1, 1], [1, 1], False, [0, 0],
                                                           1, [True, False, False])),
    }
    for op, (ours, theirs) in calls.items():
        geom_x, geom_o = ((n, c, h, h), o) if op == "fwd" else ((n, o, h, h), c)
        geom = native_cpu._geometry(geom_x, geom_o, win, 1)
        wins = bool(lib.wino_wins(native_cpu._ptr(geom)))
        times = {"wino": [], "gemm": [], "torch": []}
        with torch.no_grad():
            for _ in range(7):
                for setting in ("always", "never"):
                    native_cpu.WINOGRAD = setting
                    times["wino" if setting == "always" else "gemm"].append(burst_time(ours))
                lib.pool_quiesce()
                times["torch"].append(burst_time(theirs))
        native_cpu.WINOGRAD = "auto"
        wi, ge, to = (median_ms(times[k]) for k in ("wino", "gemm", "torch"))
        print(f"{name:24s} {op:3s} {'yes' if wins else 'no':>4s} {wi:8.3f} {ge:8.3f} {to:8.3f} "
              f"{wi / ge:9.2f} {wi / to:10.2f} {ge / to:10.2f}", flush=True)
