"""Depthwise 3x3 stride-1 input gradients on rows narrower than 56: the input-gradient loops
(``dw_conv_dx_f32``) against the forward of dY with the flipped taps through the channel
vectors (``dwc_forward``; what ``native_cpu.input_grad`` picks where they serve the forward of
dY), and PyTorch, 2 threads. Both engine paths are checked against float64. Each timed call
follows a 20 ms untimed burst of the same call (as ``python -m engine.bench``), the engine's
with the C pool warm and PyTorch's with it asleep; the three are interleaved for 4 s (at
least 9 each), medians.
Run: python bench/results/scripts/dw_dx_as_forward.py
"""
import numpy as np
import torch

from engine import ops
from engine.backends import native_calls, native_cpu

from _burst import interleaved_medians

LAYERS = [  # (name, N, C, H)
    ("MobileNet dw 3x3 1024@7", 128, 1024, 7),
    ("MobileNet dw 3x3 1024@7 b1", 1, 1024, 7),
    ("MobileNet dw 3x3 512@14", 64, 512, 14),
    ("MobileNet dw 3x3 512@14 b1", 1, 512, 14),
    ("MobileNetV2 dw 3x3 144@28", 8, 144, 28),
    ("MobileNetV2 dw 3x3 96@28", 32, 96, 28),
]


def main():
    print(f"{'layer':28s} {'loops ms':>8s} {'forward ms':>10s} {'torch ms':>8s} {'forward/loops':>13s} "
          f"{'loops/torch':>11s} {'forward/torch':>13s}")
    for name, n, c, h in LAYERS:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, 1, 3, 3), dtype=np.float32)
        gy = rng.standard_normal((n, c, h, h), dtype=np.float32)
        xt, wt, gyt = map(torch.from_numpy, (x, w, gy))

        def engine_call(as_forward):
            def f():
                native_cpu.DW_CHANNEL_VECTORS = "auto" if as_forward else "never"
                native_calls.warm()
                return ops.conv2d_backward(gy, x, w, padding=1, groups=c, need_weight_grad=False, has_bias=False)[0]
            return f

        def torch_call():
            native_calls.quiesce()
            return torch.ops.aten.convolution_backward(gyt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], c,
                                                       [True, False, False])[0]
        calls = {"loops": engine_call(False), "forward": engine_call(True), "torch": torch_call}
        want = ops.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), padding=1,
                                   groups=c, need_weight_grad=False, has_bias=False)[0]
        for key in ("loops", "forward"):
            got = calls[key]()
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), (name, key)
        m = interleaved_medians(calls, 4, 9)
        print(f"{name:28s} {m['loops']:8.3f} {m['forward']:10.3f} {m['torch']:8.3f} {m['forward'] / m['loops']:13.2f} "
              f"{m['loops'] / m['torch']:11.2f} {m['forward'] / m['torch']:13.2f}", flush=True)
    native_cpu.DW_CHANNEL_VECTORS = "auto"


if __name__ == "__main__":
    main()
