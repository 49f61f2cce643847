"""Depthwise stride-1 forwards by blocks of output rows (``native_cpu.DW_ROW_BLOCKS``, each
loaded vector of the frame multiplied into every row that reads it) against the wide-row loops
(a vector load per multiply-add) and PyTorch, 2 threads: the layers of the sweep and a few
more, 3x3/5x5/7x7 at 14-112 pixels a row (rows of 14 keep the wide row: the control). Both
engine paths give the same bits (asserted). Each timed call follows a 20 ms untimed burst of
the same call (as ``python -m engine.bench``); the three are interleaved for 3 s (at least 7
each), medians.
Run: python bench/results/scripts/dw_row_blocks.py
"""
import numpy as np
import torch

from engine import ops
from engine.backends import native_cpu

from _burst import interleaved_medians

LAYERS = [  # (name, N, C, H, k, padding)
    ("ConvNeXt dw 7x7 96@56", 8, 96, 56, 7, 3),
    ("ConvNeXt dw 7x7 96@56 b1", 1, 96, 56, 7, 3),
    ("ConvNeXt dw 7x7 192@28", 8, 192, 28, 7, 3),
    ("MobileNet dw 3x3 32@112", 8, 32, 112, 3, 1),
    ("MobileNet dw 3x3 32@112 b1", 1, 32, 112, 3, 1),
    ("MobileNet dw 3x3 128@56", 64, 128, 56, 3, 1),
    ("MobileNetV2 dw 3x3 144@28", 32, 144, 28, 3, 1),
    ("EfficientNet dw 5x5 144@28", 32, 144, 28, 5, 2),
    ("EfficientNet dw 5x5 40@112", 8, 40, 112, 5, 2),
    ("CIFAR dw 3x3 96@32", 32, 96, 32, 3, 1),
    ("EfficientNet dw 5x5 240@14 (wide row)", 8, 240, 14, 5, 2),
]


def main():
    print(f"{'layer':38s} {'rows ms':>8s} {'blocks ms':>9s} {'torch ms':>8s} {'blocks/rows':>11s} {'/torch':>6s}")
    for name, n, c, h, k, p in LAYERS:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, 1, k, k), dtype=np.float32)
        b = rng.standard_normal(c, dtype=np.float32)
        xt, wt, bt = map(torch.from_numpy, (x, w, b))

        def engine_call(blocks):
            def f():
                native_cpu.DW_ROW_BLOCKS = blocks
                return ops.conv2d(x, w, b, padding=p, groups=c)
            return f
        calls = {"rows": engine_call(False), "blocks": engine_call(True),
                 "torch": lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=p, groups=c)}
        assert np.array_equal(calls["rows"](), calls["blocks"]()), name
        m = interleaved_medians(calls, 3, 7)
        print(f"{name:38s} {m['rows']:8.3f} {m['blocks']:9.3f} {m['torch']:8.3f} {m['blocks'] / m['rows']:11.2f} "
              f"{m['blocks'] / m['torch']:6.2f}", flush=True)
    native_cpu.DW_ROW_BLOCKS = True


if __name__ == "__main__":
    main()
