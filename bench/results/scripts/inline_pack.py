"""Weights packed as the tiles go (``native_cpu.INLINE_PACK``) against a packing pass of their
own before the GEMM, on the batch-1 layers of the sweep and a few more, forward and input
gradient, 2 threads: the data behind ``INLINE_PACK_PANELS``. Both give the same bits
(asserted). Each timed call follows a 20 ms untimed burst of the same call (as
``python -m engine.bench``); the two are interleaved for 1.5 s (at least 5 each), medians.
``inline`` says whether "auto" packs as it goes for that call.
Run: python bench/results/scripts/inline_pack.py
"""
import numpy as np

from engine import ops
from engine.backends import native_cpu
from engine.bench.suites import SWEEP

from _burst import interleaved_medians

EXTRA = [  # (name, C, H, O, k, stride, padding): more batch-1 layers of 1-12 panels
    ("ResNet layer3 3x3 b1", 256, 14, 256, 3, 1, 1),
    ("ResNet layer4 down 1x1/2 b1", 256, 14, 512, 1, 2, 0),
    ("ResNet-50 1x1 2048->512 b1", 2048, 7, 512, 1, 1, 0),
    ("VGG-16 conv4_3 b1", 512, 28, 512, 3, 1, 1),
    ("ResNet layer2 3x3 b1", 128, 28, 128, 3, 1, 1),
    ("SimpleCNN conv2 b1", 32, 14, 64, 3, 1, 1),
]


def layers():
    for s in SWEEP:
        if s.n == 1 and s.c // s.groups > 1:
            pw = s.pad if s.pad_w is None else s.pad_w
            yield s.name, s.c, s.h, s.w, s.o, (s.k, s.kw), s.stride, (s.pad, pw), s.dilation, s.groups
    for name, c, h, o, k, st, p in EXTRA:
        yield name, c, h, h, o, (k, k), st, (p, p), 1, 1


def main():
    modes = ("never", "auto")
    print(f"{'layer':32s} {'op':3s} {'pass ms':>8s} {'inline ms':>9s} {'ratio':>6s} inline")
    for name, c, h, w, o, k, stride, pad, dil, groups in layers():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((o, c // groups) + k, dtype=np.float32)
        kw = dict(stride=stride, padding=pad, dilation=dil, groups=groups)
        gy = rng.standard_normal(ops.conv2d(x, wt, None, **kw).shape, dtype=np.float32)
        calls = {"fwd": lambda: ops.conv2d(x, wt, None, **kw),
                 "dx": lambda: ops.conv2d_backward(gy, x, wt, need_weight_grad=False, **kw)[0]}
        for op, f in calls.items():
            def packing(mode, f=f):
                def g():
                    native_cpu.INLINE_PACK = mode
                    return f()
                return g
            by_mode = {m: packing(m) for m in modes}
            assert np.array_equal(by_mode["never"](), by_mode["auto"]()), (name, op)
            ms = interleaved_medians(by_mode, 1.5, 5)
            plans = [p for p in native_cpu._plans.values() if p.inline]
            inline = "yes" if plans else "no"
            native_cpu._plans.clear()
            a, b = (ms[m] for m in modes)
            print(f"{name:32s} {op:3s} {a:8.3f} {b:9.3f} {b / a:6.2f} {inline}", flush=True)
    native_cpu.INLINE_PACK = "auto"


if __name__ == "__main__":
    main()
