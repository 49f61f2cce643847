"""The direct stride-1 convolution of kernels/cpu_direct.c (few output channels a group):
when it serves, the same bits as the GEMM path it replaces (the same sums in the same
order), against float64 and PyTorch, forward and as the input gradient, on 1-3 threads
and in the AVX2 build."""
from __future__ import annotations

import numpy as np
import pytest

from engine import ops
from engine.backends import native_cpu
from engine.backends.base import Window
from engine.kernels import native

from _helpers import (assert_conv2d_matches_torch_float64, avx2_rerun, conv2d_bits_over_threads,
                      count_native_calls, run_file_under_avx2)

lib = native.library()
pytestmark = pytest.mark.skipif(lib is None, reason=f"C kernels unavailable: {native.status()}")
#: Output channels a group the direct kernel takes: two row panels (8 rows on AVX-512, 6 on AVX2).
TWO_PANELS = 2 * (8 if lib is not None and lib.native_isa() == 512 else 6)

# (x shape, weight shape, padding, dilation): every tile height (1-16 output channels a
# group), rows of 1 to 70 pixels (one to five vectors, tails), groups, dilation, and
# padding that crops (negative) or runs past the image.
CASES = {
    "lenet-dx": ((4, 16, 10, 10), (6, 16, 5, 5), 4, 1),
    "sixteen": ((3, 6, 14, 14), (16, 6, 3, 3), 1, 1),
    "one-channel": ((2, 3, 9, 17), (1, 3, 3, 3), 1, 1),
    "two": ((2, 3, 9, 33), (2, 3, 3, 3), 1, 1),
    "three": ((2, 4, 8, 16), (3, 4, 3, 3), 1, 1),
    "five": ((2, 2, 7, 70), (5, 2, 3, 3), 1, 1),
    "seven": ((1, 5, 12, 15), (7, 5, 3, 3), 1, 1),
    "twelve-dilated": ((2, 4, 11, 19), (12, 4, 3, 3), 2, 2),
    "grouped": ((2, 6, 10, 14), (10, 3, 3, 3), 1, 1),
    "one-pixel-rows": ((2, 3, 6, 3), (4, 3, 3, 3), 0, 1),
    "1x7": ((2, 8, 9, 17), (8, 8, 1, 7), (0, 3), 1),
    "deep": ((1, 40, 8, 18), (9, 40, 3, 3), 1, 1),  # 360 taps: three blocks of the reduction
}


def _window(x_shape, w_shape, padding, dilation):
    ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    oh = x_shape[2] + 2 * ph - dilation * (w_shape[2] - 1)
    ow = x_shape[3] + 2 * pw - dilation * (w_shape[3] - 1)
    return Window(w_shape[2], w_shape[3], 1, 1, dilation, dilation, ph, ph, pw, pw, oh, ow)


def _case(name, seed=0):
    xs, ws, padding, dilation = CASES[name]
    if ws[0] // (xs[1] // ws[1]) > TWO_PANELS:
        pytest.skip(f"{ws[0]} output channels a group: more than this build's two row panels")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    return x, w, b, dict(padding=padding, dilation=dilation, groups=xs[1] // ws[1])


@pytest.fixture(autouse=True)
def _always_direct(monkeypatch):
    """Every case through the direct kernel wherever it serves (its cost model aside), not
    the channel-vector kernel (tests/test_native_channel_vector.py) or Winograd's
    (tests/test_native_winograd.py), which come first."""
    monkeypatch.setattr(native_cpu, "DIRECT", "always")
    monkeypatch.setattr(native_cpu, "CHANNEL_VECTOR", "never")
    monkeypatch.setattr(native_cpu, "WINOGRAD", "never")


def test_every_case_is_served_by_the_direct_kernel():
    for name, (xs, ws, padding, dilation) in CASES.items():
        geom = native_cpu._geometry(xs, ws[0], _window(xs, ws, padding, dilation), xs[1] // ws[1])
        assert lib.direct_serves(native_cpu._ptr(geom)) == (ws[0] // (xs[1] // ws[1]) <= TWO_PANELS), name


def test_direct_wins_on_lenet5s_input_gradient():
    xs, ws = (64, 16, 10, 10), (6, 16, 5, 5)
    geom = native_cpu._geometry(xs, ws[0], _window(xs, ws, 4, 1), 1)
    assert lib.direct_wins(native_cpu._ptr(geom))


def test_direct_loses_where_its_idle_lanes_cost_more_than_packing():
    """Three row panels, a stride of 2, rows of 7 pixels with two panels, or LeNet-5's second
    layer (two panels, rows of 10 pixels; measured 1.16x the GEMM path's time): the GEMM path."""
    for xs, ws, stride in (((1, 4, 9, 20), (24, 4, 3, 3), 1), ((1, 4, 9, 20), (8, 4, 3, 3), 2),
                           ((1, 4, 7, 7), (16, 4, 3, 3), 1), ((1, 6, 10, 10), (16, 6, 3, 3), 1)):
        oh, ow = (xs[2] + 2 - 3) // stride + 1, (xs[3] + 2 - 3) // stride + 1
        geom = native_cpu._geometry(xs, ws[0], Window(3, 3, stride, stride, 1, 1, 1, 1, 1, 1, oh, ow), 1)
        assert not lib.direct_wins(native_cpu._ptr(geom)), (xs, ws, stride)
        assert lib.direct_serves(native_cpu._ptr(geom)) == (stride == 1 and ws[0] <= TWO_PANELS), (xs, ws, stride)


@pytest.mark.parametrize("name", sorted(CASES))
def test_direct_gives_the_gemm_paths_bits(name, monkeypatch):
    x, w, b, kw = _case(name)
    counts = count_native_calls(monkeypatch)
    direct = ops.conv2d(x, w, b, **kw)
    assert counts.get("conv2d_fwd_direct_f32", 0) == 1, counts
    monkeypatch.setattr(native_cpu, "DIRECT", "never")
    gemm = ops.conv2d(x, w, b, **kw)
    assert direct.tobytes() == gemm.tobytes()
    ref = ops.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    np.testing.assert_allclose(direct, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["sixteen", "five", "twelve-dilated", "grouped", "1x7"])
def test_input_gradient_through_the_direct_kernel(name, monkeypatch):
    """A layer with few input channels: its input gradient is a forward with the transposed
    weights and as few output channels; the same bits as the GEMM path, and float64's values."""
    x, w, b, kw = _case(name)
    g = np.cos(ops.conv2d(x, w, b, **kw))
    dx, _, _ = ops.conv2d_backward(g, x, w, **kw)
    monkeypatch.setattr(native_cpu, "DIRECT", "never")
    dx_gemm, _, _ = ops.conv2d_backward(g, x, w, **kw)
    assert dx.tobytes() == dx_gemm.tobytes()
    ref, _, _ = ops.conv2d_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), **kw)
    np.testing.assert_allclose(dx, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["lenet-dx", "twelve-dilated", "1x7"])
def test_direct_matches_torch(name):
    x, w, b, kw = _case(name, seed=1)
    assert_conv2d_matches_torch_float64(x, w, b, **kw)


def test_direct_bits_do_not_depend_on_the_thread_count(monkeypatch):
    x, w, b, kw = _case("lenet-dx")
    outs = conv2d_bits_over_threads(monkeypatch, x, w, b, **kw)
    assert outs[0] == outs[1] == outs[2]


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    """The direct kernel built for AVX2 (-march=haswell: 8-wide vectors, 6-row panels)."""
    run_file_under_avx2(__file__, tmp_path)
