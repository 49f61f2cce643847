"""The channel-vector forward (``conv2d_fwd_cv_f32``) with 17-64 output channels (2-4 vectors a
pixel) against the GEMM path and PyTorch, 2 threads: strided layers, which ``cv_wins`` gives
it from a batch of 2 on, and batch-1 and stride-1 layers past 16 channels, which it does not
(``always`` forced there, Winograd off). Both engine paths give the same bits (asserted). Each timed call follows a 20
ms untimed burst of the same call (as ``python -m engine.bench``); the three are interleaved
for 3 s (at least 7 each), medians.
Run: python bench/results/scripts/channel_vector_wide.py
"""
import numpy as np
import torch

from engine import ops
from engine.backends import native_cpu

from _burst import interleaved_medians

LAYERS = [  # (name, N, C, H, O, k, stride, padding)
    ("ResNet-20 stage3 3x3/2", 128, 32, 16, 64, 3, 2, 1),
    ("ResNet-56 stage2 3x3/2", 128, 16, 32, 32, 3, 2, 1),
    ("ResNet stem 7x7/2 b8", 8, 3, 224, 64, 7, 2, 3),
    ("ResNet stem 7x7/2 b1", 1, 3, 224, 64, 7, 2, 3),
    ("AlexNet conv1 11x11/4 b8", 8, 3, 227, 64, 11, 4, 2),
    ("LeNet-ish 5x5/2 8->24", 64, 8, 28, 24, 5, 2, 2),
    ("ResNet-20-ish 3x3/2 32->64 @32 b1", 1, 32, 32, 64, 3, 2, 1),
    ("stride 1: 32->64 3x3 @14 b8", 8, 32, 14, 64, 3, 1, 1),
    ("stride 1: 16->32 5x5 @28 b32", 32, 16, 28, 32, 5, 1, 2),
    ("stride 1: 24->48 3x3 @9 b64", 64, 24, 9, 48, 3, 1, 1),
]


def main():
    print(f"{'layer':30s} {'gemm ms':>8s} {'cv ms':>8s} {'torch ms':>8s} {'cv/gemm':>7s} {'cv/torch':>8s} auto")
    native_cpu.WINOGRAD = "never"
    for name, n, c, h, o, k, st, p in LAYERS:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((o, c, k, k), dtype=np.float32)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)

        def engine_call(setting):
            def f():
                native_cpu.CHANNEL_VECTOR = setting
                return ops.conv2d(x, w, None, stride=st, padding=p)
            return f
        calls = {"gemm": engine_call("never"), "cv": engine_call("always"),
                 "torch": lambda: torch.nn.functional.conv2d(xt, wt, stride=st, padding=p)}
        assert np.array_equal(calls["gemm"](), calls["cv"]()), name
        native_cpu.CHANNEL_VECTOR = "auto"
        auto = native_cpu.forward_kernel(x.shape, w.shape, native_cpu.Window(
            k, k, st, st, 1, 1, p, p, p, p, (h + 2 * p - k) // st + 1, (h + 2 * p - k) // st + 1), 1)
        m = interleaved_medians(calls, 3, 7)
        print(f"{name:30s} {m['gemm']:8.3f} {m['cv']:8.3f} {m['torch']:8.3f} {m['cv'] / m['gemm']:7.2f} "
              f"{m['cv'] / m['torch']:8.2f} {'cv' if auto == 'conv2d_fwd_cv_f32' else 'other'}", flush=True)
    native_cpu.CHANNEL_VECTOR = native_cpu.WINOGRAD = "auto"


if __name__ == "__main__":
    main()
