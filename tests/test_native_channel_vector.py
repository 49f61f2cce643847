"""The kernel with the output channels in the vector (kernels/cpu_direct.c, conv2d_fwd_cv_f32:
9-64 output channels a group on AVX-512, in 1-4 vectors): the same bits as the GEMM path wherever it serves,
any stride, dilation, groups and padding, forward and as the input gradient, on 1-3 threads;
float64's and PyTorch's values; its cost model; the AVX2 build, which never takes it."""
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
AVX512 = lib is not None and lib.native_isa() == 512

# (x shape, weight shape, stride, padding, dilation, groups)
CASES = {
    "lenet-c3": ((4, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),
    "course-5x5/2": ((3, 8, 14, 14), (16, 8, 5, 5), 2, 2, 1, 1),
    "nine-3x3/3": ((2, 7, 17, 23), (9, 7, 3, 3), 3, 1, 1, 1),
    "twelve-dilated": ((2, 5, 13, 30), (12, 5, 3, 3), (2, 1), (1, 3), (1, 2), 1),
    "grouped": ((2, 8, 11, 12), (26, 4, 3, 5), 1, (2, 1), 1, 2),  # 13 a group
    "wide-rows": ((1, 3, 5, 40), (16, 3, 5, 5), 1, 2, 1, 1),  # 40 pixels: chunks of 12 and a tail
    "one-pixel": ((2, 4, 5, 5), (10, 4, 5, 5), 1, 0, 1, 1),
    "max-depth": ((1, 24, 6, 9), (16, 24, 4, 4), 2, 1, 1, 1),  # 384 taps: one block, the most
    # two to four vectors of channels: tiles of 12, 8 and 6 pixels and their tails
    "two-vectors-3x3/2": ((3, 8, 16, 29), (32, 8, 3, 3), 2, 1, 1, 1),  # rows of 15: 12 + 3
    "three-vectors-17": ((2, 5, 9, 11), (40, 5, 3, 3), 1, 1, 1, 1),  # 40: a part-full third vector
    "four-vectors-resnet20": ((4, 32, 16, 16), (64, 32, 3, 3), 2, 1, 1, 1),  # rows of 8: 6 + 2
    "four-vectors-grouped-dilated": ((2, 6, 13, 17), (98, 3, 3, 3), (1, 2), 2, 2, 2),  # 49 a group
    "stem-7x7/2": ((1, 3, 37, 41), (64, 3, 7, 7), 2, 3, 1, 1),  # 147 taps, rows of 21
    # past one reduction block (384 taps): each block's sums added in turn, as the GEMM path's
    "two-blocks": ((2, 40, 7, 9), (20, 40, 3, 4), 1, 1, 1, 1),  # 480 taps
    "two-blocks-grouped": ((2, 64, 6, 13), (40, 32, 3, 5), 1, (1, 2), 1, 2),  # 480 taps, rows of 13: 12 + 1
    "nine-blocks-alexnet-dx": ((1, 128, 9, 11), (48, 128, 5, 5), 1, 2, 1, 1),  # 3200 taps, rows of 11: 8 + 3
}


def _case(name, seed=0):
    xs, ws, stride, padding, dilation, groups = CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _geom(xs, ws, kh_kw=(3, 3), stride=1, pad=1):
    oh, ow = (xs[2] + 2 * pad - kh_kw[0]) // stride + 1, (xs[3] + 2 * pad - kh_kw[1]) // stride + 1
    win = Window(kh_kw[0], kh_kw[1], stride, stride, 1, 1, pad, pad, pad, pad, oh, ow)
    return native_cpu._ptr(native_cpu._geometry(xs, ws[0], win, 1))


@pytest.fixture(autouse=True)
def _always(monkeypatch):
    """Every case through the kernel wherever it serves (its cost model aside); Winograd's
    kernel, which comes first, never (it rounds otherwise than the GEMM path)."""
    monkeypatch.setattr(native_cpu, "CHANNEL_VECTOR", "always")
    monkeypatch.setattr(native_cpu, "WINOGRAD", "never")


def test_it_serves_9_to_64_channels_a_group_on_avx512_only():
    for ws, want in (((9, 4, 3, 3), True), ((16, 4, 3, 3), True), ((8, 4, 3, 3), False), ((17, 4, 3, 3), True),
                     ((64, 4, 3, 3), True), ((65, 4, 3, 3), False)):
        geom = native_cpu._geometry((1, 4, 9, 9), ws[0], Window(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9), 1)
        assert bool(lib.cv_serves(native_cpu._ptr(geom))) == (want and AVX512), ws
    geom = native_cpu._geometry((1, 48, 9, 9), 16, Window(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9), 1)  # 432 taps
    assert bool(lib.cv_serves(native_cpu._ptr(geom))) == AVX512  # past one reduction block too


@pytest.mark.skipif(not AVX512, reason="the AVX2 build never takes this kernel")
def test_cost_model():
    """It wins on LeNet-5's second layer (rows of 10) and the NumPy course's 5x5/2 (a stride),
    ResNet-20's 3x3/2 into 64 channels and a 7x7/2 stem (strides, a batch), on stride 1 past
    16 channels (one image or a batch), not on 32-pixel rows into 16 channels (the direct tile
    fills its lanes), nor strided on one image past 16 channels, nor with fewer than 64 taps."""
    xs = (8, 6, 14, 14)
    assert lib.cv_wins(_geom(xs, (16, 6, 5, 5), (5, 5), 1, 0))
    assert lib.cv_wins(_geom((8, 8, 14, 14), (16, 8, 5, 5), (5, 5), 2, 2))
    assert not lib.cv_wins(_geom((8, 16, 32, 32), (16, 16, 3, 3)))
    assert not lib.cv_wins(_geom((8, 3, 32, 32), (16, 3, 3, 3), (3, 3), 2, 1))  # 27 taps
    assert lib.cv_wins(_geom((128, 32, 16, 16), (64, 32, 3, 3), (3, 3), 2, 1))
    assert lib.cv_wins(_geom((8, 3, 224, 224), (64, 3, 7, 7), (7, 7), 2, 3))
    assert not lib.cv_wins(_geom((1, 3, 224, 224), (64, 3, 7, 7), (7, 7), 2, 3))  # one image, 4 vectors
    assert lib.cv_wins(_geom((1, 8, 14, 14), (16, 8, 5, 5), (5, 5), 2, 2))  # one image, one vector
    assert lib.cv_wins(_geom((8, 32, 14, 10), (32, 32, 3, 3)))  # stride 1, two vectors
    assert lib.cv_wins(_geom((1, 128, 27, 27), (48, 128, 5, 5), (5, 5), 1, 2))  # 3200 taps, one image
    assert not lib.cv_wins(_geom((1, 32, 16, 16), (64, 32, 3, 3), (3, 3), 2, 1))  # strided, one image


@pytest.mark.parametrize("name", sorted(CASES))
def test_channel_vector_gives_the_gemm_paths_bits(name, monkeypatch):
    x, w, b, kw = _case(name)
    counts = count_native_calls(monkeypatch)
    got = ops.conv2d(x, w, b, **kw)
    assert counts.get("conv2d_fwd_cv_f32", 0) == (1 if AVX512 else 0), counts
    monkeypatch.setattr(native_cpu, "CHANNEL_VECTOR", "never")
    monkeypatch.setattr(native_cpu, "DIRECT", "never")
    gemm = ops.conv2d(x, w, b, **kw)
    assert got.tobytes() == gemm.tobytes()
    no_bias = ops.conv2d(x, w, None, **kw)
    monkeypatch.setattr(native_cpu, "CHANNEL_VECTOR", "always")
    assert ops.conv2d(x, w, None, **kw).tobytes() == no_bias.tobytes()
    ref = ops.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("xs, ws, padding, groups", [
    ((2, 12, 9, 10), (20, 12, 3, 3), 1, 1),  # 12 input channels: a forward of dY into 12
    ((1, 96, 9, 11), (64, 48, 5, 5), 2, 2),  # AlexNet's grouped 5x5, smaller: 48 a group, 800 taps
])
def test_input_gradient_through_it(xs, ws, padding, groups, monkeypatch):
    """The input gradient is a forward of dY with C/groups output channels."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    g = rng.standard_normal((xs[0], ws[0]) + xs[2:]).astype(np.float32)
    counts = count_native_calls(monkeypatch)
    dx, _, _ = ops.conv2d_backward(g, x, w, padding=padding, groups=groups)
    assert counts.get("conv2d_fwd_cv_f32", 0) == (1 if AVX512 else 0), counts
    monkeypatch.setattr(native_cpu, "CHANNEL_VECTOR", "never")
    assert dx.tobytes() == ops.conv2d_backward(g, x, w, padding=padding, groups=groups)[0].tobytes()
    ref = ops.conv2d_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), padding=padding,
                              groups=groups)[0]
    np.testing.assert_allclose(dx, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["course-5x5/2", "twelve-dilated", "grouped", "four-vectors-grouped-dilated",
                                  "stem-7x7/2", "two-blocks-grouped"])
def test_channel_vector_matches_torch(name):
    x, w, b, kw = _case(name, seed=1)
    assert_conv2d_matches_torch_float64(x, w, b, **kw)


@pytest.mark.parametrize("name", ["nine-3x3/3", "four-vectors-resnet20", "two-blocks-grouped"])
def test_bits_do_not_depend_on_the_thread_count(name, monkeypatch):
    x, w, b, kw = _case(name)
    outs = conv2d_bits_over_threads(monkeypatch, x, w, b, **kw)
    assert outs[0] == outs[1] == outs[2]


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    run_file_under_avx2(__file__, tmp_path)
