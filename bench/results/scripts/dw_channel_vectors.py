"""Depthwise forwards with 16 channels in the vector (``native_cpu.DW_CHANNEL_VECTORS``: a 16x16
transpose lays the channels out pixel by pixel, every output pixel one vector of multiply-adds)
against the planar loops (``"never"``: blocks of rows, or the wide row) and PyTorch, 2 threads:
the depthwise layers of the sweep and more, 3x3/5x5/7x7 at stride 1 and 2, 7 to 112 pixels a
row. ``rule`` is the path ``"auto"`` takes; ``always`` forces the channel vectors where the
rule keeps the planar loops (3x3 at stride 1 on rows wider than 32, channels filling less than
3/4 of their vectors), which is how the rule was set. ``dx`` rows time the input gradient,
which at stride 1 with a 5x5 or 7x7 kernel runs as the forward of dY. All engine paths give
the same bits (asserted). Each timed call follows a 20 ms untimed burst of the same call (as
``python -m engine.bench``); the four are interleaved for 3 s (at least 7 each), medians.
Run: python bench/results/scripts/dw_channel_vectors.py
"""
import numpy as np
import torch

from engine import ops
from engine.backends import native_cpu
from engine.kernels import native

from _burst import interleaved_medians

LAYERS = [  # (name, N, C, H, k, stride, padding, op)
    ("EfficientNet dw 5x5 240@14", 8, 240, 14, 5, 1, 2, "fwd"),
    ("EfficientNet dw 5x5 240@14", 8, 240, 14, 5, 1, 2, "dx"),
    ("EfficientNet dw 5x5 672@14", 8, 672, 14, 5, 1, 2, "fwd"),
    ("EfficientNet dw 5x5 1152@7", 8, 1152, 7, 5, 1, 2, "fwd"),
    ("EfficientNet dw 5x5/2 144@56", 8, 144, 56, 5, 2, 2, "fwd"),
    ("EfficientNet dw 5x5 24@56 (3/4 lanes)", 8, 24, 56, 5, 1, 2, "fwd"),
    ("MobileNet dw 3x3/2 64@112", 8, 64, 112, 3, 2, 1, "fwd"),
    ("MobileNetV2 dw 3x3/2 144@56", 8, 144, 56, 3, 2, 1, "fwd"),
    ("MobileNetV2 dw 3x3 144@28", 8, 144, 28, 3, 1, 1, "fwd"),
    ("MobileNet dw 3x3 512@14", 64, 512, 14, 3, 1, 1, "fwd"),
    ("MobileNet dw 3x3 512@14 b1", 1, 512, 14, 3, 1, 1, "fwd"),
    ("MobileNet dw 3x3 1024@7", 128, 1024, 7, 3, 1, 1, "fwd"),
    ("MobileNet dw 3x3 1024@7 b1", 1, 1024, 7, 3, 1, 1, "fwd"),
    ("ConvNeXt dw 7x7 96@56", 8, 96, 56, 7, 1, 3, "fwd"),
    ("ConvNeXt dw 7x7 96@56", 8, 96, 56, 7, 1, 3, "dx"),
    ("ConvNeXt dw 7x7 384@14", 8, 384, 14, 7, 1, 3, "fwd"),
    ("MobileNet dw 3x3 32@112 (rows of 112)", 8, 32, 112, 3, 1, 1, "fwd"),
    ("MobileNet dw 3x3 32@112 b1", 1, 32, 112, 3, 1, 1, "fwd"),
    ("MobileNet dw 3x3 128@56 (rows of 56)", 64, 128, 56, 3, 1, 1, "fwd"),
    ("dw 3x3 24@56 (3/4 lanes, rows of 56)", 8, 24, 56, 3, 1, 1, "fwd"),
    ("dw 3x3/2 8@56 (half the lanes)", 8, 8, 56, 3, 2, 1, "fwd"),
]


def main():
    lib = native.library()
    print(f"{'layer':40s} {'op':3s} {'rule':6s} {'planar':>7s} {'chvec':>7s} {'torch':>7s} "
          f"{'chvec/planar':>12s} {'rule/torch':>10s}")
    for name, n, c, h, k, s, p, op in LAYERS:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, 1, k, k), dtype=np.float32)
        b = rng.standard_normal(c, dtype=np.float32)
        kw = dict(stride=s, padding=p, groups=c)
        oh = (h + 2 * p - k) // s + 1
        gy = rng.standard_normal((n, c, oh, oh), dtype=np.float32)
        xt, wt, bt, gyt = map(torch.from_numpy, (x, w, b, gy))
        win = native_cpu.Window(k, k, s, s, 1, 1, p, p, p, p, oh, oh)
        rule = ("chvec" if lib.dw_forward_kind(native_cpu._ptr(native_cpu._geometry(x.shape, c, win, c))) == 2
                else "planar")

        def engine_call(setting):
            def f():
                native_cpu.DW_CHANNEL_VECTORS = setting
                if op == "fwd":
                    return ops.conv2d(x, w, b, **kw)
                return ops.conv2d_backward(gy, x, w, need_weight_grad=False, has_bias=False, **kw)[0]
            return f
        if op == "fwd":
            def torch_call():
                return torch.nn.functional.conv2d(xt, wt, bt, **kw)
        else:
            def torch_call():
                return torch.ops.aten.convolution_backward(gyt, xt, wt, None, [s, s], [p, p], [1, 1], False, [0, 0], c,
                                                           [True, False, False])[0]
        calls = {"planar": engine_call("never"), "chvec": engine_call("always"), "torch": torch_call}
        assert np.array_equal(calls["planar"](), calls["chvec"]()), name
        m = interleaved_medians(calls, 3, 7)
        print(f"{name:40s} {op:3s} {rule:6s} {m['planar']:7.3f} {m['chvec']:7.3f} {m['torch']:7.3f} "
              f"{m['chvec'] / m['planar']:12.2f} {m[rule] / m['torch']:10.2f}", flush=True)
    native_cpu.DW_CHANNEL_VECTORS = "auto"


if __name__ == "__main__":
    main()
