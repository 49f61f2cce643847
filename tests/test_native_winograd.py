"""Winograd's F(2x2, 3x3) (kernels/cpu_winograd.c, conv2d_fwd_wino_f32: 3x3 stride-1 layers on
AVX-512): PyTorch's float64 values in the forward and the input gradient, for odd sizes,
any padding, groups, channels past one transformed chunk, tiles across images and blocks of
output channels; the same bits on 1-3 threads; its cost model; the AVX2 build, which never
takes it."""
from __future__ import annotations

import numpy as np
import pytest

from engine import ops
from engine.backends import native_cpu
from engine.backends.base import Window
from engine.kernels import native

from _helpers import (assert_conv2d_matches_torch_float64, avx2_rerun, conv2d_bits_over_threads,
                      count_native_calls, run_file_under_avx2, torch_conv2d_input_grad_float64)

lib = native.library()
pytestmark = pytest.mark.skipif(lib is None, reason=f"C kernels unavailable: {native.status()}")
AVX512 = lib is not None and lib.native_isa() == 512

# (x shape, output channels, padding, groups)
CASES = {
    "odd-7x7": ((2, 8, 7, 7), 16, 1, 1),          # 4x4 tiles, the last row and column half outside
    "no-pad": ((3, 40, 9, 11), 33, 0, 1),         # 7x9 outputs, 33 channels: a short last row panel
    "pad-2": ((1, 5, 6, 13), 12, 2, 1),           # tiles reaching two pixels past every edge
    "pad-3": ((2, 20, 9, 8), 24, 3, 1),           # its input gradient: a forward with padding -1 (a crop)
    "deep": ((1, 130, 6, 5), 20, 1, 1),           # 130 channels: two chunks of V
    "grouped": ((2, 16, 8, 8), 16, 1, 2),
    "many-tiles": ((3, 9, 17, 40), 10, 1, 1),     # 20 tiles a row: runs across vectors, 540 tiles
    "one-pixel": ((4, 6, 1, 1), 8, 1, 1),         # 1x1 outputs: one tile, three quarters outside
    "wide-row": ((1, 3, 2, 70), 9, 1, 1),         # 35 tiles in one row: runs of 16, 16 and 3
}


def _case(name, seed=0):
    xs, o, padding, groups = CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((o, xs[1] // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    return x, w, b, dict(padding=padding, groups=groups)


def _geom(xs, o, stride=1, dilation=1, pad=1, k=3):
    oh, ow = ((size + 2 * pad - dilation * (k - 1) - 1) // stride + 1 for size in xs[2:])
    win = Window(k, k, stride, stride, dilation, dilation, pad, pad, pad, pad, oh, ow)
    return native_cpu._ptr(native_cpu._geometry(xs, o, win, 1))


@pytest.fixture(autouse=True)
def _always(monkeypatch):
    """Every case through the kernel wherever it serves (its cost model aside)."""
    monkeypatch.setattr(native_cpu, "WINOGRAD", "always")


def test_it_serves_3x3_stride_1_undilated_on_avx512_only():
    assert bool(lib.wino_serves(_geom((1, 4, 9, 9), 8))) == AVX512
    assert not lib.wino_serves(_geom((1, 4, 9, 9), 8, stride=2))
    assert not lib.wino_serves(_geom((1, 4, 9, 9), 8, dilation=2, pad=2))
    assert not lib.wino_serves(_geom((1, 4, 9, 9), 8, k=5, pad=2))


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_torch_float64(name, monkeypatch):
    x, w, b, kw = _case(name)
    counts = count_native_calls(monkeypatch)
    assert_conv2d_matches_torch_float64(x, w, b, **kw)
    assert counts.get("conv2d_fwd_wino_f32", 0) == (1 if AVX512 else 0), counts


def test_without_bias_it_is_the_biased_output_less_the_bias():
    x, w, b, kw = _case("no-pad")
    with_bias, without = ops.conv2d(x, w, b, **kw), ops.conv2d(x, w, None, **kw)
    np.testing.assert_allclose(with_bias - b[:, None, None], without, rtol=0, atol=1e-5 * np.abs(without).max())


@pytest.mark.parametrize("name", ["odd-7x7", "pad-2", "pad-3", "grouped", "deep"])
def test_input_gradient_matches_torch_float64(name, monkeypatch):
    """The stride-1 input gradient is a forward of dY with the flipped weights, which Winograd's
    kernel takes too, weights transformed straight from w (wino_pack_weights_t_f32)."""
    x, w, b, kw = _case(name, seed=3)
    g = np.cos(ops.conv2d(x, w, b, **kw))
    counts = count_native_calls(monkeypatch)
    dx, _, _ = ops.conv2d_backward(g, x, w, **kw)
    assert counts.get("wino_pack_weights_t_f32", 0) == (1 if AVX512 else 0), counts
    want = torch_conv2d_input_grad_float64(x, w, g, **kw)
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_strided_input_gradient_phases_of_three_taps_take_it(monkeypatch):
    """A 5x5 stride-2 layer's input gradient runs by phases; the even phase sees taps 0, 2
    and 4 one output apart: a 3x3 stride-1 forward of dY, its weights picked from the 5x5
    kernel (ys, xs = 4, 2, 0)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 15, 13)).astype(np.float32)
    w = rng.standard_normal((10, 6, 5, 5)).astype(np.float32)
    g = rng.standard_normal((2, 10, 7, 6)).astype(np.float32)
    counts = count_native_calls(monkeypatch)
    dx, _, _ = ops.conv2d_backward(g, x, w, stride=2, padding=1)
    assert counts.get("wino_pack_weights_t_f32", 0) == (1 if AVX512 else 0), counts
    want = torch_conv2d_input_grad_float64(x, w, g, stride=2, padding=1)
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_it_rounds_no_worse_than_the_gemm_path(monkeypatch):
    """Against float64, the largest error stays within 3x the GEMM path's on a wide layer
    (the transforms add and subtract up to 9 products, so the errors differ)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 96, 12, 12)).astype(np.float32)
    w = rng.standard_normal((64, 96, 3, 3)).astype(np.float32)
    ref = ops.conv2d(x.astype(np.float64), w.astype(np.float64), None, padding=1)
    wino = np.abs(ops.conv2d(x, w, None, padding=1) - ref).max()
    monkeypatch.setattr(native_cpu, "WINOGRAD", "never")
    gemm = np.abs(ops.conv2d(x, w, None, padding=1) - ref).max()
    assert wino <= 3 * gemm, (wino, gemm)


@pytest.mark.parametrize("name", ["many-tiles", "deep"])
def test_bits_do_not_depend_on_the_thread_count(name, monkeypatch):
    """Threads split (group, tile block, block of output channels); each output is summed
    by one item in one order."""
    x, w, b, kw = _case(name)
    outs = conv2d_bits_over_threads(monkeypatch, x, w, b, **kw)
    assert outs[0] == outs[1] == outs[2]


def test_channel_blocks_even_out_the_threads_shares():
    """Three tile blocks on two threads: cut in two blocks of channels, six even items."""
    assert native_cpu._wino_channel_blocks(1, 3, 3 * 48, 48, 8, 2) == 2
    assert native_cpu._wino_channel_blocks(1, 4, 4 * 48, 48, 8, 2) == 1
    assert native_cpu._wino_channel_blocks(1, 3, 3 * 48, 48, 8, 1) == 1


@pytest.mark.skipif(not AVX512, reason="the AVX2 build never takes this kernel")
def test_cost_model():
    """It wins with channels and tiles enough (ResNet layer1 and layer3, VGG at batch 1, ResNet
    layer4 at batch 8), not on 16 -> 16 channels, one 7x7 image of 512 channels, or 7x7 images
    of 64 channels (a third of the tiles' pixels outside)."""
    assert lib.wino_wins(_geom((8, 64, 56, 56), 64))
    assert lib.wino_wins(_geom((8, 256, 14, 14), 256))
    assert lib.wino_wins(_geom((1, 64, 112, 112), 128))
    assert lib.wino_wins(_geom((8, 512, 7, 7), 512))
    assert not lib.wino_wins(_geom((128, 16, 32, 32), 16))
    assert not lib.wino_wins(_geom((1, 512, 7, 7), 512))
    assert not lib.wino_wins(_geom((128, 64, 7, 7), 64))


def test_auto_takes_it_where_it_wins(monkeypatch):
    monkeypatch.setattr(native_cpu, "WINOGRAD", "auto")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 16, 16)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    counts = count_native_calls(monkeypatch)
    ops.conv2d(x, w, None, padding=1)
    assert counts.get("conv2d_fwd_wino_f32", 0) == (1 if AVX512 else 0), counts
    monkeypatch.setattr(native_cpu, "WINOGRAD", "never")
    ops.conv2d(x, w, None, padding=1)
    assert counts.get("conv2d_fwd_wino_f32", 0) == (1 if AVX512 else 0), counts


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    run_file_under_avx2(__file__, tmp_path)
