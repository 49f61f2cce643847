"""The weight gradient as dot products along output rows (kernels/cpu_dw_rows.c, for layers
with few input channels): against float64 and PyTorch on every tile tail (1-9 output
channels, tap counts that do not fill a tile), rows shorter and longer than a vector,
strides 2-4 (the frame's phases), dilation, groups and uneven padding; which layers take it;
the same bits on 1-3 threads; and in the AVX2 build."""
from __future__ import annotations

import numpy as np
import pytest

from engine import ops
from engine.backends import native_cpu
from engine.backends.base import Window
from engine.kernels import native

from _helpers import avx2_rerun, bits_over_threads, count_native_calls, run_file_under_avx2, torch_or_skip

lib = native.library()
pytestmark = pytest.mark.skipif(lib is None, reason=f"C kernels unavailable: {native.status()}")

# (x shape, weight shape, stride, padding, dilation, groups)
CASES = {
    "rgb-3x3": ((2, 3, 9, 32), (5, 3, 3, 3), 1, 1, 1, 1),
    "one-output": ((2, 3, 8, 17), (1, 3, 3, 3), 1, 1, 1, 1),
    "nine-outputs-5x5": ((2, 2, 12, 20), (9, 2, 5, 5), 1, 2, 1, 1),
    "stem-7x7-s2": ((2, 3, 23, 29), (7, 3, 7, 7), 2, 3, 1, 1),
    "11x11-s4": ((1, 3, 35, 43), (4, 3, 11, 11), 4, 2, 1, 1),
    "3x3-s3-d2": ((2, 3, 14, 50), (4, 3, 3, 3), 3, 0, 2, 1),
    "dilated-rows-narrower-than-a-vector": ((3, 4, 11, 13), (6, 4, 3, 3), 1, 2, 2, 1),
    "grouped": ((2, 4, 17, 19), (8, 2, 3, 3), 2, 1, 1, 2),
    "1x1-s2": ((2, 2, 13, 13), (3, 2, 1, 1), 2, 0, 1, 1),
    "same-4x4": ((2, 3, 10, 21), (6, 3, 4, 4), 1, "same", 1, 1),
    "kernel-past-the-image": ((1, 3, 6, 6), (2, 3, 7, 7), 1, 3, 1, 1),
    "eight-channels": ((2, 8, 9, 35), (4, 8, 3, 3), 1, 1, 1, 1),
    "grey": ((3, 1, 12, 28), (6, 1, 5, 5), 1, 2, 1, 1),
    "depthwise-multiplier": ((2, 3, 10, 20), (12, 1, 3, 3), 1, 1, 1, 3),
}


def _case(name, seed=0):
    xs, ws, stride, padding, dilation, groups = CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(ops.conv2d(x, w, **kw).shape).astype(np.float32)
    return x, w, g, kw


def _dw(g, x, w, **kw):
    return ops.conv2d_backward(g, x, w, need_input_grad=False, has_bias=False, **kw)[1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_rows_weight_gradient_matches_float64(name, monkeypatch):
    x, w, g, kw = _case(name)
    monkeypatch.setattr(native_cpu, "DW_ROWS", "always")
    counts = count_native_calls(monkeypatch)
    got = _dw(g, x, w, **kw)
    assert counts.get("conv2d_dw_rows_f32", 0) == 1, counts
    ref = _dw(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), **kw)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # PyTorch's, on the 4x4 kernel
@pytest.mark.parametrize("name", ["stem-7x7-s2", "3x3-s3-d2", "grouped", "same-4x4"])
def test_rows_weight_gradient_matches_torch(name, monkeypatch):
    torch = torch_or_skip()
    x, w, g, kw = _case(name, seed=1)
    monkeypatch.setattr(native_cpu, "DW_ROWS", "always")
    got = _dw(g, x, w, **kw)
    wt = torch.from_numpy(w).double().requires_grad_(True)
    torch.nn.functional.conv2d(torch.from_numpy(x).double(), wt, **kw).backward(torch.from_numpy(g).double())
    want = wt.grad.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_long_sums_keep_the_gemm_paths_accuracy(monkeypatch):
    """Each lane's sum runs in blocks (a band of rows, then the bands): over 64 x 32 x 32
    pixels, no worse than 1.5x the GEMM path's largest error."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((64, 16, 32, 32)).astype(np.float32)
    ref = _dw(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), padding=1)
    errors = {}
    for mode in ("always", "never"):
        monkeypatch.setattr(native_cpu, "DW_ROWS", mode)
        errors[mode] = np.abs(_dw(g, x, w, padding=1) - ref).max()
    assert errors["always"] <= 1.5 * errors["never"], errors


def test_which_layers_take_the_rows_kernel(monkeypatch):
    """auto: up to 8 input channels a group on rows that fill >= 85% of their vectors (VGG's
    CIFAR conv1, the 7x7/2 stem, rows of 28, one grey channel), with at least 4 output
    channels; not 16 channels, nor LeNet-5's rows of 10."""
    lanes = lib.native_isa() // 32

    def takes(xs, ws, stride, padding):
        oh = (xs[2] + 2 * padding - ws[2]) // stride + 1
        ow = (xs[3] + 2 * padding - ws[3]) // stride + 1
        win = Window(ws[2], ws[3], stride, stride, 1, 1, padding, padding, padding, padding, oh, ow)
        return native_cpu._dw_rows_wins(lib, xs, ws, win, 1)
    assert takes((64, 3, 32, 32), (64, 3, 3, 3), 1, 1)
    assert takes((8, 3, 224, 224), (64, 3, 7, 7), 2, 3)
    for width in (7, 28):  # 7 of 8 lanes (AVX2) or 7 of 16; 28 of 32 either way
        fills = width / (-(-width // lanes) * lanes) >= 0.85
        assert takes((64, 8, width, width), (32, 8, 3, 3), 1, 1) == fills, width
    assert not takes((128, 16, 32, 32), (16, 16, 3, 3), 1, 1)
    assert takes((128, 1, 28, 28), (32, 1, 3, 3), 1, 1)  # SimpleCNN's conv1, not the depthwise loops
    assert takes((64, 1, 28, 28), (6, 1, 5, 5), 1, 2) == (28 / (-(-28 // lanes) * lanes) >= 0.85)
    assert not takes((64, 3, 32, 32), (3, 3, 3, 3), 1, 1)  # fewer outputs than a tile
    assert not takes((128, 6, 14, 14), (16, 6, 5, 5), 1, 0)
    # its frame's 32-bit offsets: 2^20 channels of 66x66 run past them (nothing is allocated here)
    big = Window(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64, 64)
    assert lib.dw_rows_serves(native_cpu._ptr(native_cpu._geometry((1, 3, 64, 64), 4, big, 1)))
    assert not lib.dw_rows_serves(native_cpu._ptr(native_cpu._geometry((1, 1 << 20, 64, 64), 4, big, 1)))
    counts = count_native_calls(monkeypatch)
    x, w, g, kw = _case("rgb-3x3")
    _dw(g, x, w, **kw)
    assert counts.get("conv2d_dw_rows_f32", 0) == 1, counts


def test_rows_bits_do_not_depend_on_the_thread_count(monkeypatch):
    x, w, g, kw = _case("nine-outputs-5x5")
    monkeypatch.setattr(native_cpu, "DW_ROWS", "always")
    outs = bits_over_threads(monkeypatch, lambda: _dw(g, x, w, **kw))
    assert outs[0] == outs[1] == outs[2]


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    """The rows kernel built for AVX2 (-march=haswell: 8-wide vectors, 4 x 2 tiles)."""
    run_file_under_avx2(__file__, tmp_path)
