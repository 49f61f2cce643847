"""The direct kernels for one input channel a group (depthwise convolutions, with or without
a channel multiplier): kernels/cpu_depthwise.c via backends/native_cpu.py.

Against the float64 im2col path and PyTorch (float32 and float64), values and gradients; odd
sizes, strides 1 to 3, dilation, asymmetric and oversized padding; results independent of the
thread count; an empty batch; and the whole file again on the AVX2 build.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine import ops
from engine.backends import host_threads, native_cpu
from engine.kernels import native

from _helpers import (TORCH_TOL, assert_rel, avx2_rerun, count_native_calls, from_torch, run_file_under_avx2, to_torch,
                      torch_or_skip)

pytestmark = pytest.mark.skipif(native.library() is None,
                                reason=f"the C kernels are not usable here: {native.status()}")

# (N, C, H, W, multiplier, kernel, stride, padding, dilation): what each case exercises
CASES = {
    "3x3": (2, 3, 9, 9, 1, 3, 1, 1, 1),
    "tiny_7x7": (3, 5, 7, 7, 1, 3, 1, 1, 1),  # a plane shorter than 4 vectors
    "mult2_s2": (2, 5, 13, 11, 2, 3, 2, 1, 1),  # channel multiplier, odd sizes, stride 2
    "5x5_s2": (3, 6, 17, 19, 1, 5, 2, 2, 1),
    "mixed": (2, 4, 20, 23, 3, (3, 5), (2, 1), (1, 2), (2, 1)),  # per-axis stride and dilation
    "7x7_s3": (2, 3, 40, 37, 1, 7, 3, 3, 1),
    "no_pad": (1, 2, 5, 5, 1, 3, 1, 0, 1),
    "wide": (2, 4, 57, 55, 1, 3, 2, 1, 1),  # many vectors a row; stride-2 columns split and merged by vectors
    "wide_5x5_s2": (2, 3, 21, 71, 1, 5, 2, 2, 1),  # the same from an even column (padding 2), odd widths
    "big_pad": (1, 3, 8, 8, 1, 3, 1, 4, 1),  # output border made of padding only
    "1x7": (2, 3, 12, 12, 1, (1, 7), 1, (0, 3), 1),
    "1x1_mult": (2, 3, 9, 10, 2, 1, 1, 0, 1),
    "2x2_s2": (2, 3, 9, 10, 1, 2, 2, 0, 1),  # the last input row and column read by no tap
    "13x13": (1, 16, 14, 14, 1, 13, 1, 6, 1),  # more taps than one pass of the dW kernel takes
    "same": (2, 4, 12, 11, 1, (4, 3), 1, "same", (2, 1)),  # asymmetric "same" padding
    "3x3_32ch": (2, 32, 10, 10, 1, 3, 1, 1, 1),  # channel vectors (AVX-512), its dx as a forward too
}


def _data(case, seed=0):
    n, c, h, w, m, k, s, p, d = CASES[case]
    kh, kw = (k, k) if isinstance(k, int) else k
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (r.standard_normal((c * m, 1, kh, kw)) / np.sqrt(kh * kw)).astype(np.float32)
    b = r.standard_normal(c * m).astype(np.float32)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=c)
    y64 = ops.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), **kwargs)
    gy = r.standard_normal(y64.shape).astype(np.float32)
    return x, wt, b, gy, kwargs





@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_input_channel_weight_gradient_is_shared_by_output_channel_blocks(threads, monkeypatch):
    """One input channel (one group): dW's output channels are cut into blocks that threads
    share; every weight is still summed over the whole batch by one item, so the bits equal
    one item for all channels (ob = O) and the float64 path's values."""
    r = np.random.default_rng(5)
    x = r.standard_normal((3, 1, 15, 13)).astype(np.float32)
    wt = r.standard_normal((6, 1, 3, 3)).astype(np.float32)
    gy = r.standard_normal((3, 6, 15, 13)).astype(np.float32)
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(host_threads, "_num_threads", threads)
    dw = ops.conv2d_backward(gy, x, wt, padding=1, need_input_grad=False, has_bias=False)[1]
    lib = native.library()
    geom = native_cpu._geometry(x.shape, 6, native_cpu.Window(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 15, 13), 1)
    whole = np.empty_like(wt)
    assert lib.dw_conv_dw_f32(native_cpu._ptr(x), native_cpu._ptr(gy), native_cpu._ptr(whole), 0, 1, 6,
                              native_cpu._ptr(geom)) == 0
    np.testing.assert_array_equal(dw, whole)
    want = ops.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), wt.astype(np.float64), padding=1,
                               need_input_grad=False, has_bias=False)[1]
    assert_rel(dw, want, 1e-5, "dW")

def _run(x, wt, b, gy, kw):
    return (ops.conv2d(x, wt, b, **kw), *ops.conv2d_backward(gy, x, wt, **kw))


@pytest.mark.parametrize("case", list(CASES))
def test_depthwise_kernels_equal_the_float64_im2col_path(case, monkeypatch):
    x, wt, b, gy, kw = _data(case)
    counts = count_native_calls(monkeypatch)
    got = _run(x, wt, b, gy, kw)
    assert {"dw_conv_fwd_f32", "dw_conv_dw_f32"} <= set(counts), counts
    # the input gradient: its own loops, or (depthwise, stride 1) the forward's on dY
    assert "dw_conv_dx_f32" in counts or counts["dw_conv_fwd_f32"] == 2, counts
    assert not {"conv2d_fwd_f32", "conv2d_fwd_split_f32", "conv2d_fwd_split_inline_f32",
                "conv2d_dw_shares_f32"} & set(counts), counts
    want = _run(*(a.astype(np.float64) for a in (x, wt, b, gy)), kw)
    for name, g, w in zip(("y", "dx", "dw", "db"), got, want):
        assert g.dtype == np.float32 and g.shape == w.shape, name
        assert_rel(g, w, 1e-5, f"{case} {name}")


@pytest.mark.parametrize("case", ["3x3", "mult2_s2", "mixed", "7x7_s3", "same", "big_pad"])
@pytest.mark.parametrize("torch_dtype", ["float32", "float64"])
def test_depthwise_kernels_match_torch(case, torch_dtype):
    torch = torch_or_skip()
    x, wt, b, gy, kw = _data(case)
    xt, wtt = to_torch(x.astype(torch_dtype), True), to_torch(wt.astype(torch_dtype), True)
    yt = torch.nn.functional.conv2d(xt, wtt, to_torch(b.astype(torch_dtype)), **kw)
    yt.backward(to_torch(gy.astype(torch_dtype)))
    y, dx, dw, _ = _run(x, wt, b, gy, kw)
    for name, got, want in (("y", y, yt), ("dx", dx, xt.grad), ("dw", dw, wtt.grad)):
        assert_rel(got, from_torch(want), TORCH_TOL["float32"], f"{case} {name} vs torch {torch_dtype}")


@pytest.mark.parametrize("case", ["3x3", "mult2_s2", "tiny_7x7", "13x13"])
def test_depthwise_results_do_not_depend_on_the_thread_count(case, monkeypatch):
    x, wt, b, gy, kw = _data(case)
    x, gy = np.concatenate([x] * 3), np.concatenate([gy] * 3)
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)  # split even these small calls
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(host_threads, "_num_threads", threads)
        results.append(_run(x, wt, b, gy, kw))
    for other in results[1:]:
        for name, a, c in zip(("y", "dx", "dw", "db"), results[0], other):
            np.testing.assert_array_equal(a, c, err_msg=name)


def test_depthwise_empty_batch_gives_empty_outputs_and_zero_weight_gradients():
    x, w = np.ones((0, 4, 6, 6), np.float32), np.ones((8, 1, 3, 3), np.float32)
    y = ops.conv2d(x, w, np.ones(8, np.float32), padding=1, groups=4)
    dx, dw, db = ops.conv2d_backward(np.ones(y.shape, np.float32), x, w, padding=1, groups=4)
    assert y.shape == (0, 8, 6, 6) and dx.shape == x.shape
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros(8, np.float32))


def test_other_groups_keep_the_gemm_kernels(monkeypatch):
    counts = count_native_calls(monkeypatch)
    r = np.random.default_rng(1)
    x, w = r.standard_normal((2, 8, 6, 6)).astype(np.float32), r.standard_normal((8, 2, 3, 3)).astype(np.float32)
    y = ops.conv2d(x, w, padding=1, groups=4)
    ops.conv2d_backward(np.ones(y.shape, np.float32), x, w, padding=1, groups=4)
    forward_calls = sum(counts.get(e, 0) for e in ("conv2d_fwd_f32", "conv2d_fwd_split_f32", "conv2d_fwd_batched_f32",
                                                    "conv2d_fwd_split_inline_f32", "conv2d_fwd_direct_f32",
                                                    "conv2d_fwd_cv_f32"))
    assert "dw_conv_fwd_f32" not in counts and forward_calls >= 1, counts


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    """The depthwise kernels built for AVX2 (-march=haswell: 8-wide vectors, vmaskmov tails)."""
    run_file_under_avx2(__file__, tmp_path)


@pytest.mark.parametrize("case, as_forward", [("3x3", False), ("1x7", True), ("13x13", True), ("same", True),
                                              ("5x5_s2", False), ("mult2_s2", False), ("3x3_32ch", "avx512")])
def test_stride_1_depthwise_input_gradient_runs_as_the_forward_of_dy(case, as_forward, monkeypatch):
    """Depthwise at stride 1 with a kernel reaching 4 or more pixels (or rows 56 wide, or where
    the forward of dY takes channel vectors): the forward's loops on dY with the flipped taps
    (they compute only the image's rows and unroll 3x3 and 5x5); else, and for strides and
    channel multipliers, the input-gradient loops. The two agree with float64 either way."""
    if as_forward == "avx512":
        as_forward = native.library().native_isa() == 512
    x, wt, b, gy, kw = _data(case)
    counts = count_native_calls(monkeypatch)
    dx = ops.conv2d_backward(gy, x, wt, **kw)[0]
    assert ("dw_conv_dx_f32" not in counts) == as_forward, counts
    monkeypatch.setattr(native_cpu, "DW_DX_AS_FORWARD_SPAN", 10 ** 6)
    monkeypatch.setattr(native_cpu, "DW_DX_AS_FORWARD_WIDTH", 10 ** 6)
    monkeypatch.setattr(native_cpu, "DW_CHANNEL_VECTORS", "never")
    own_loops = ops.conv2d_backward(gy, x, wt, **kw)[0]
    want = ops.conv2d_backward(*(a.astype(np.float64) for a in (gy, x, wt)), **kw)[0]
    assert_rel(dx, want, 1e-5, "dx")
    assert_rel(own_loops, want, 1e-5, "dx by the input-gradient loops")



# (N, C, H, W, multiplier, kernel, padding): planes that go by blocks of rows
ROW_BLOCK_CASES = {
    "3x3_w17": (2, 3, 9, 17, 1, 3, 1),  # two vectors, one lane of the second: 6-row blocks, a tail
    "5x5_w40": (1, 2, 11, 40, 2, 5, 2),  # three vectors, a channel multiplier
    "7x7_w56": (2, 2, 13, 56, 1, 7, 3),  # four vectors, 4-row blocks; 13 rows: the last block starts higher
    "3x3_w130": (1, 2, 8, 130, 1, 3, 1),  # column blocks of 4 vectors, 4 and 1 more
    "5x5_crop": (1, 3, 12, 36, 1, 5, 0),  # no padding
}


@pytest.mark.parametrize("case", sorted(ROW_BLOCK_CASES))
def test_depthwise_forward_by_blocks_of_rows_gives_the_same_bits(case, monkeypatch):
    """AVX-512, stride 1, dilation 1, 3x3/5x5/7x7, rows wider than a vector: the forward computes blocks
    of rows, each loaded vector multiplied into every row that reads it; the same sums as the
    wide-row loops, so the same bits, with and without bias, forward and the input gradient
    run as one; float64's values; rows of one vector or less keep the wide row."""
    n, c, h, w, m, k, p = ROW_BLOCK_CASES[case]
    r = np.random.default_rng(4)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((c * m, 1, k, k)).astype(np.float32)
    b = r.standard_normal(c * m).astype(np.float32)
    kw = dict(padding=p, groups=c)
    lib = native.library()
    win = native_cpu.Window(k, k, 1, 1, 1, 1, p, p, p, p, h + 2 * p - k + 1, w + 2 * p - k + 1)
    blocks_here = lib.native_isa() == 512  # the AVX2 build keeps the wide row
    assert lib.dw_forward_kind(native_cpu._ptr(native_cpu._geometry(x.shape, c * m, win, c))) == int(blocks_here)
    narrow, side = native_cpu.Window(k, k, 1, 1, 1, 1, p, p, p, p, 8, 8), 8 + k - 1 - 2 * p  # rows of 8: one vector
    assert lib.dw_forward_kind(native_cpu._ptr(native_cpu._geometry((1, c, side, side), c * m, narrow, c))) == 0
    gy = r.standard_normal((n, c * m) + win[-2:]).astype(np.float32)
    results = {}
    for blocks in (True, False):
        monkeypatch.setattr(native_cpu, "DW_ROW_BLOCKS", blocks)
        results[blocks] = (ops.conv2d(x, wt, b, **kw), ops.conv2d(x, wt, None, **kw),
                           ops.conv2d_backward(gy, x, wt, **kw)[0])
    for name, a, c_ in zip(("y", "y without bias", "dx"), results[True], results[False]):
        np.testing.assert_array_equal(a, c_, err_msg=f"{case} {name}")
    want = ops.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), **kw)
    assert_rel(results[True][0], want, 1e-5, case)


# (N, C, H, W, kernel, stride, padding): forwards with 16 channels in the vector
CHANNEL_VECTOR_CASES = {
    "5x5_w14": (2, 24, 14, 14, 5, 1, 2),  # a group of 16 and one of 8; 14-pixel chunks
    "3x3_s2_w9": (3, 16, 9, 9, 3, 2, 1),  # 5 output columns: 7-pixel chunks
    "7x7_13ch": (2, 13, 11, 12, 7, 1, 3),  # 13 of 16 lanes, a non-square plane
    "7x7_s2": (2, 32, 23, 21, 7, 2, 3),
    "3x3_w30": (1, 48, 30, 30, 3, 1, 1),  # the widest 3x3 rows at stride 1 it takes
    "5x5_s2_bands": (1, 16, 120, 40, 5, 2, 2),  # three bands of output rows
    "7x7_bands": (2, 32, 70, 20, 7, 1, 3),  # two bands, padding rows in both
    "3x3_s2_rows": (2, 24, 10, 13, 3, 2, (2, 0)),  # row padding only; the last input row read by no tap
}


def _channel_vector_data(case, seed=6):
    n, c, h, w, k, s, p = CHANNEL_VECTOR_CASES[case]
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (r.standard_normal((c, 1, k, k)) / k).astype(np.float32)
    b = r.standard_normal(c).astype(np.float32)
    return x, wt, b, dict(stride=s, padding=p, groups=c)


@pytest.mark.parametrize("case", sorted(CHANNEL_VECTOR_CASES))
def test_depthwise_forward_with_channels_in_the_vector_gives_the_same_bits(case, monkeypatch):
    """AVX-512, one channel a group in and out, 3x3/5x5/7x7, stride 1 or 2: the forward lays 16
    channels out pixel by pixel (a 16x16 transpose) and sums each output pixel's taps in the
    order the planar loops do, so the same bits as they give, with and without bias, split
    between 1, 2 or 3 threads anywhere in a group of 16 channels, and the input gradient
    that runs as a forward (stride 1: 5x5 and 7x7 always, 3x3 where the channel vectors
    serve); float64's values."""
    x, wt, b, kw = _channel_vector_data(case)
    n, c, h, w, k, s, p = CHANNEL_VECTOR_CASES[case]
    lib = native.library()
    y64 = ops.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), **kw)
    pt, pl = (p, p) if isinstance(p, int) else p
    win = native_cpu.Window(k, k, s, s, 1, 1, pt, pt, pl, pl, *y64.shape[2:])
    want_kind = 2 if lib.native_isa() == 512 else 0
    assert lib.dw_forward_kind(native_cpu._ptr(native_cpu._geometry(x.shape, c, win, c))) == want_kind
    gy = np.random.default_rng(7).standard_normal(y64.shape).astype(np.float32)
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)  # split even these small calls
    results = {}
    for vectors, threads in (("auto", 1), ("auto", 2), ("auto", 3), ("never", 2)):
        monkeypatch.setattr(native_cpu, "DW_CHANNEL_VECTORS", vectors)
        monkeypatch.setattr(host_threads, "_num_threads", threads)
        results[vectors, threads] = (ops.conv2d(x, wt, b, **kw), ops.conv2d(x, wt, None, **kw),
                                     ops.conv2d_backward(gy, x, wt, **kw)[0])
    # a 3x3 stride-1 input gradient runs as the forward of dY with channel vectors only: the
    # input-gradient loops sum in another order
    dx_paths_differ = k == 3 and s == 1
    for key, got in results.items():
        for name, a, ref in zip(("y", "y without bias", "dx"), got, results["auto", 1]):
            if not (name == "dx" and key[0] == "never" and dx_paths_differ):
                np.testing.assert_array_equal(a, ref, err_msg=f"{case} {name} {key}")
    assert_rel(results["auto", 2][0], y64, 1e-5, case)
    dx64 = ops.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), wt.astype(np.float64), **kw)[0]
    for key in (("auto", 2), ("never", 2)):
        assert_rel(results[key][2], dx64, 1e-5, f"{case} dx {key}")


@pytest.mark.parametrize("shape, k, s, d, m, why", [
    ((1, 32, 36, 36), 3, 1, 1, 1, "3x3 at stride 1 on rows of 34"),
    ((1, 8, 14, 14), 5, 1, 1, 1, "8 channels: half a vector"),
    ((1, 20, 14, 14), 5, 1, 1, 1, "20 channels: 20 of 32 lanes"),
    ((1, 24, 40, 40), 5, 1, 1, 1, "24 channels on rows of 40, where the blocks of rows serve"),
    ((1, 32, 14, 14), 3, 1, 2, 1, "dilation 2"),
    ((1, 16, 14, 14), 5, 1, 1, 2, "a channel multiplier"),
    ((1, 16, 14, 14), 5, 3, 1, 1, "stride 3"),
    ((1, 16, 14, 14), 9, 1, 1, 1, "a 9x9 kernel"),
    ((1, 16, 200, 200), 7, 1, 1, 1, "bands of 5 rows: 6 of the 11 they read shared"),
    ((1, 16, 12, 2400), 3, 1, 1, 1, "a 3x3 stride-1 frame row past the scratch"),
    ((1, 16, 12, 2400), 3, 2, 1, 1, "a frame row past the scratch"),
])
def test_channels_in_the_vector_only_where_they_serve(shape, k, s, d, m, why, monkeypatch):
    """The rule (dwc_serves) turns them down; where the kernel could take the layer still,
    "always" gives the planar loops' bits."""
    n, c, h, w = shape
    p = d * (k - 1) // 2
    oh, ow = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
    geom = native_cpu._geometry(shape, c * m, native_cpu.Window(k, k, s, s, d, d, p, p, p, p, oh, ow), c)
    assert native.library().dw_forward_kind(native_cpu._ptr(geom)) != 2, why
    if h * w <= 2000 and m == 1:
        r = np.random.default_rng(8)
        x, wt = r.standard_normal(shape).astype(np.float32), r.standard_normal((c, 1, k, k)).astype(np.float32)
        kw = dict(stride=s, padding=p, dilation=d, groups=c)
        planar = ops.conv2d(x, wt, **kw)
        monkeypatch.setattr(native_cpu, "DW_CHANNEL_VECTORS", "always")
        np.testing.assert_array_equal(ops.conv2d(x, wt, **kw), planar, err_msg=why)
