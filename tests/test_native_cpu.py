"""The NumPy backend's C convolution kernels (kernels/cpu_conv.c via backends/native_cpu.py).

The float32 cases of test_conv.py already run through them (tiny shapes, against
the loop reference and PyTorch). Here: shapes that cross every tiling boundary
of the kernels (row tiles of 8, column panels of 48 and their 16-wide tails,
reduction blocks of 128), that the path is really taken, that results do not
depend on the thread count, and that the NumPy path takes over when the
kernels cannot be had.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from engine import backends
from engine import ops
from engine.backends import host_threads, native_cpu
from engine.backends.base import Window
from engine.kernels import native

from _helpers import (TORCH_TOL, assert_rel, avx2_rerun, count_native_calls, from_torch, run_file_under_avx2, to_torch,
                      torch_or_skip)

pytestmark = pytest.mark.skipif(native.library() is None,
                                reason=f"the C kernels are not usable here: {native.status()}")

# (N, C, H, W, O, kernel, stride, padding, dilation, groups): what each case exercises
CASES = {
    "tails": (3, 5, 13, 11, 13, 3, 1, 1, 1, 1),  # O=13: a partial row tile; 143 pixels: a 16-wide tail
    "deep_k": (2, 40, 9, 10, 16, 3, 1, 1, 1, 1),  # K=360: three reduction blocks; dX K=144
    "wide": (2, 8, 30, 31, 9, (2, 5), 1, (1, 2), 1, 1),  # 930 pixels: many panels, asymmetric kernel
    "strided": (2, 6, 23, 17, 10, 5, 2, 2, 1, 1),  # stride 2: dx by phases, gathers in packing
    "stem": (2, 3, 30, 31, 8, 7, 2, 3, 1, 1),  # 3 input channels, stride 2: dx by phases, 3-row tiles
    "strided_dilated": (2, 6, 19, 18, 4, 4, 2, 3, 2, 1),  # gcd(2, 2): odd rows read by no tap
    "mixed_strides": (2, 4, 20, 21, 5, (3, 5), (2, 3), (1, 2), (2, 1), 1),
    "pointwise_s2": (2, 16, 14, 13, 8, 1, 2, 0, 1, 1),  # three of four phases get no tap
    "strided_groups": (2, 8, 15, 14, 12, 3, 3, 1, 1, 2),
    "dilated_same": (2, 8, 12, 12, 8, (4, 3), 1, "same", (2, 1), 1),  # asymmetric "same" padding
    "big_pad": (1, 8, 6, 6, 4, 3, 1, 3, 1, 1),  # padding > k-1: the dx conv crops (negative padding)
    "groups": (2, 12, 8, 8, 24, 3, 1, 1, 1, 3),  # weight-gradient panels of several groups
    "depthwise": (2, 16, 9, 9, 16, 3, 1, 1, 1, 16),  # 1 channel a group: the direct kernels
    "pointwise": (2, 20, 7, 7, 33, 1, 1, 0, 1, 1),
    # no padding: the forward packs straight from x (no frame), rows and columns past the
    # taps' reach unread, the last image's last group without the permute's slack
    "unpadded": (3, 10, 13, 11, 12, 5, 1, 0, 1, 1),
    "unpadded_strided_groups": (3, 8, 14, 15, 10, 3, 2, 0, 1, 2),
    "unpadded_dilated": (2, 6, 12, 13, 7, 3, 1, 0, 2, 1),
    "batch1_tall": (1, 4, 50, 3, 8, (3, 1), (1, 1), (1, 0), 1, 1),
    # batch 1, few pixels: a full panel and a nearly empty one, channel blocks, dx weights
    # packed straight from W (several row panels, groups, phases)
    "b1_pointwise_7": (1, 40, 7, 7, 70, 1, 1, 0, 1, 1),
    "b1_pointwise_groups": (1, 20, 7, 7, 12, 1, 1, 0, 1, 2),  # 1x1 dx packing: a full row panel and a tail, 2 groups
    "b1_dilated_14": (1, 16, 14, 14, 24, 3, 1, 2, 2, 2),
    "b1_strided_groups": (1, 12, 9, 9, 18, 3, 2, 1, 1, 3),
    # one large image: dW in shares of its pixels (not whole rows: 1763 pixels in two)
    "b1_big_stem": (1, 3, 81, 85, 8, 3, 2, 1, 1, 1),
    "b1_big_dilated_groups": (1, 6, 50, 50, 4, 3, 1, 2, 2, 2),
}


@pytest.fixture(autouse=True)
def _gemm_weight_gradients(monkeypatch):
    """The weight gradients here go through the GEMM path (its shares, pixel shares and column
    panels), not the rows kernel that layers with few input channels take by default
    (tests/test_native_dw_rows.py covers that one)."""
    monkeypatch.setattr(native_cpu, "DW_ROWS", "never")


def _data(case, seed=0):
    n, c, h, w, o, k, s, p, d, g = CASES[case]
    kh, kw = (k, k) if isinstance(k, int) else k
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (r.standard_normal((o, c // g, kh, kw)) / np.sqrt(c // g * kh * kw)).astype(np.float32)
    b = r.standard_normal(o).astype(np.float32)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=g)
    y64 = ops.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), **kwargs)
    gy = r.standard_normal(y64.shape).astype(np.float32)
    return x, wt, b, gy, kwargs


def _float64_im2col(x, wt, b, gy, kwargs):
    """The same convolution in float64 through the NumPy im2col path: the reference."""
    x, wt, b, gy = (a.astype(np.float64) for a in (x, wt, b, gy))
    y = ops.conv2d(x, wt, b, **kwargs)
    return (y, *ops.conv2d_backward(gy, x, wt, **kwargs))




def _forward_calls(counts):
    return sum(counts.get(entry, 0) for entry in (
        "conv2d_fwd_f32", "conv2d_fwd_split_f32", "conv2d_fwd_split_inline_f32", "conv2d_fwd_batched_f32",
        "conv2d_fwd_direct_f32", "conv2d_fwd_cv_f32"))


@pytest.mark.parametrize("case", list(CASES))
def test_native_float32_equals_float64_im2col(case, monkeypatch):
    x, wt, b, gy, kw = _data(case)
    counts = count_native_calls(monkeypatch)
    y = ops.conv2d(x, wt, b, **kw)
    dx, dw, db = ops.conv2d_backward(gy, x, wt, **kw)
    if case == "depthwise":
        assert counts.get("dw_conv_fwd_f32", 0) >= 1 and counts.get("dw_conv_dw_f32", 0) >= 1, counts
    else:
        dw_calls = sum(counts.get(e, 0) for e in ("conv2d_dw_shares_f32", "conv2d_dw_cols_f32"))
        assert _forward_calls(counts) >= 1 and dw_calls >= 1, counts
    for name, got, want in zip(("y", "dx", "dw", "db"), (y, dx, dw, db), _float64_im2col(x, wt, b, gy, kw)):
        assert got.dtype == np.float32 and got.shape == want.shape, name
        assert_rel(got, want, 1e-5, f"{case} {name}")


@pytest.mark.parametrize("case", ["tails", "strided", "dilated_same", "groups", "b1_pointwise_7", "b1_dilated_14",
                                  "b1_strided_groups", "b1_big_stem"])
def test_native_float32_matches_torch(case):
    torch = torch_or_skip()
    x, wt, b, gy, kw = _data(case)
    xt, wtt = to_torch(x.astype(np.float64), True), to_torch(wt.astype(np.float64), True)
    yt = torch.nn.functional.conv2d(xt, wtt, to_torch(b.astype(np.float64)), **kw)
    yt.backward(to_torch(gy.astype(np.float64)))
    y = ops.conv2d(x, wt, b, **kw)
    dx, dw, _ = ops.conv2d_backward(gy, x, wt, **kw)
    for name, got, want in (("y", y, yt), ("dx", dx, xt.grad), ("dw", dw, wtt.grad)):
        assert_rel(got, from_torch(want), TORCH_TOL["float32"], f"{case} {name}")


def test_input_gradient_takes_the_c_kernels_for_any_stride(monkeypatch):
    counts = count_native_calls(monkeypatch)
    x, wt, b, gy, kw = _data("deep_k")
    ops.conv2d_backward(gy, x, wt, need_weight_grad=False, **kw)
    assert _forward_calls(counts) == 1 and "conv2d_dw_shares_f32" not in counts, counts
    counts.clear()
    x, wt, b, gy, kw = _data("strided")  # stride 2, 5x5: four phases, each one forward call
    ops.conv2d_backward(gy, x, wt, need_weight_grad=False, **kw)
    assert _forward_calls(counts) == 4, counts


@pytest.mark.parametrize("x_shape, k, stride, padding, dilation", [
    ((2, 5, 9, 11), 3, 2, 1, 1),  # odd width: one more even column than odd
    ((2, 5, 10, 40), 3, 2, 1, 1),  # even width, rows of whole vectors
    ((1, 3, 8, 37), 1, 2, 0, 1),  # 1x1: three of the four phases reached by no tap (zeros)
    ((2, 4, 12, 13), (3, 4), (1, 2), (1, 2), 1),  # a column stride only
    ((2, 4, 12, 13), 3, (2, 1), 1, 1),  # a row stride only: each phase on its own
    ((1, 4, 16, 33), 3, 2, 2, 2),  # dilation 2 with stride 2
    ((1, 3, 17, 19), 5, 3, 2, 1),  # stride 3: each phase on its own
    ((2, 3, 9, 1), 3, 2, 1, 1),  # one column: one column phase
])
def test_strided_input_gradient_puts_every_phase_in_place(x_shape, k, stride, padding, dilation, monkeypatch):
    """The input gradient by phases: at a column stride of 2 the two column phases of a row
    phase go in together (place_phases2_f32), else one at a time (place_phase_f32); every
    input pixel gets its phase's value, or zero where no tap reaches it."""
    rng = np.random.default_rng(5)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal(x_shape).astype(np.float32)
    wt = rng.standard_normal((6, x_shape[1], kh, kw)).astype(np.float32)
    kw_args = dict(stride=stride, padding=padding, dilation=dilation)
    y = ops.conv2d(x, wt, **kw_args)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    counts = count_native_calls(monkeypatch)
    dx = ops.conv2d_backward(gy, x, wt, need_weight_grad=False, **kw_args)[0]
    sw = stride if isinstance(stride, int) else stride[1]
    paired = sw == 2 and x_shape[3] > 1
    assert ("place_phases2_f32" in counts) == paired, counts
    dx64 = ops.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), wt.astype(np.float64),
                               need_weight_grad=False, **kw_args)[0]
    assert_rel(dx, dx64, 1e-5, str(x_shape))


@pytest.mark.parametrize("case", ["deep_k", "pointwise", "big_pad", "batch1_tall", "b1_pointwise_7", "b1_dilated_14",
                                  "unpadded_strided_groups"])
def test_panels_across_images_give_the_per_image_bits(case, monkeypatch):
    """Images with few output pixels share column panels (conv2d_fwd_batched_f32): each
    output is summed as by the per-image kernel, so the results are the same bits. Per
    image, a last panel of at most 4 columns (49 = 48 + 1, 196 = 4 * 48 + 4) goes through
    the narrow kernel, across images through the register tile: the same bits too."""
    x, wt, b, gy, kw = _data(case)
    x, gy = np.concatenate([x] * 5), np.concatenate([gy] * 5)
    monkeypatch.setattr(native_cpu, "DIRECT", "never")  # the GEMM path's kernels (cpu_direct.c has its own tests,
    monkeypatch.setattr(native_cpu, "CHANNEL_VECTOR", "never")  # its channel vectors too,
    monkeypatch.setattr(native_cpu, "WINOGRAD", "never")  # and so has cpu_winograd.c)
    counts = count_native_calls(monkeypatch)
    batched = (ops.conv2d(x, wt, b, **kw), ops.conv2d_backward(gy, x, wt, **kw)[0])
    assert counts.get("conv2d_fwd_batched_f32", 0) >= 1, counts
    monkeypatch.setattr(native_cpu, "BATCH_FRAME_FLOATS", 0)  # one image a panel row
    counts.clear()
    single = (ops.conv2d(x, wt, b, **kw), ops.conv2d_backward(gy, x, wt, **kw)[0])
    assert "conv2d_fwd_batched_f32" not in counts and _forward_calls(counts) >= 1, counts
    for a, c in zip(batched, single):
        np.testing.assert_array_equal(a, c)


def test_few_channel_input_gradient_with_a_large_frame_takes_the_numpy_path(monkeypatch):
    """dx with fewer than 4 channels a group packs more than it multiplies; past L2 (a 7x7
    stem on a 224x224 image, 64 channels of dY) W^T @ dY and col2im are faster."""
    counts = count_native_calls(monkeypatch)
    r = np.random.default_rng(0)
    x, wt = r.standard_normal((1, 3, 224, 224)).astype(np.float32), r.standard_normal((64, 3, 7, 7)).astype(np.float32)
    gy = r.standard_normal((1, 64, 112, 112)).astype(np.float32)
    dx, _, _ = ops.conv2d_backward(gy, x, wt, stride=2, padding=3, need_weight_grad=False)
    assert _forward_calls(counts) == 0, counts
    monkeypatch.setattr(native_cpu, "FEW_ROWS_FRAME_BYTES", 1 << 40)
    dx_c, _, _ = ops.conv2d_backward(gy, x, wt, stride=2, padding=3, need_weight_grad=False)
    assert counts.get("pack_weights_t_f32") == 4, counts  # one forward a phase, weights packed from W
    assert_rel(dx_c, dx, 1e-5, "dx")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_small_image_splits_output_channels_with_the_same_bits(threads, monkeypatch):
    """Batch 1, 7x7: two panels, so each panel's output channels are cut into blocks too
    (conv2d_fwd_split_f32); the sums, and so the bits, are those of one block."""
    r = np.random.default_rng(0)
    x, wt = r.standard_normal((1, 24, 7, 7)).astype(np.float32), r.standard_normal((70, 24, 3, 3)).astype(np.float32)
    b = r.standard_normal(70).astype(np.float32)
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(host_threads, "_num_threads", threads)
    split = ops.conv2d(x, wt, b, padding=1)
    monkeypatch.setattr(native_cpu, "_split_plan", lambda batch, *args: (batch, 1))  # one block of channels
    whole = ops.conv2d(x, wt, b, padding=1)
    np.testing.assert_array_equal(split, whole)
    assert_rel(split, ops.conv2d(*(a.astype(np.float64) for a in (x, wt, b)), padding=1), 1e-5, "y")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_panels_across_images_split_output_channels_with_the_same_bits(threads, monkeypatch):
    """8 images of 7x7 share 9 panels (8 full, one of 8 columns), which threads would take
    unevenly: each panel's output channels are cut into blocks (conv2d_fwd_batched_f32 with
    blocks); the sums, and so the bits, are those of one block, and of the per-image kernel."""
    r = np.random.default_rng(1)
    x, wt = r.standard_normal((8, 24, 7, 7)).astype(np.float32), r.standard_normal((70, 24, 3, 3)).astype(np.float32)
    b = r.standard_normal(70).astype(np.float32)
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(host_threads, "_num_threads", threads)
    counts = count_native_calls(monkeypatch)
    plans = []
    real = native_cpu._split_plan.__wrapped__
    monkeypatch.setattr(native_cpu, "_split_plan", lambda *args: plans.append(real(*args)) or plans[-1])
    split = ops.conv2d(x, wt, b, padding=1)
    assert counts.get("conv2d_fwd_batched_f32", 0) >= 1, counts
    assert len(plans) == 1 and (plans[0][1] == 1 if threads == 1 else native_cpu.native.library().native_nr() != 48
                                or plans[0][1] > 1), plans  # AVX2's 32-column panels may split evenly
    monkeypatch.setattr(native_cpu, "_split_plan", lambda batch, *args: (batch, 4))  # 9 row panels (AVX2: 12)
    four = ops.conv2d(x, wt, b, padding=1)
    monkeypatch.setattr(native_cpu, "_split_plan", lambda batch, *args: (3, 2))  # chunks of 3, 3 and 2 images
    threes = ops.conv2d(x, wt, b, padding=1)
    monkeypatch.setattr(native_cpu, "_split_plan", lambda batch, *args: (batch, 1))
    whole = ops.conv2d(x, wt, b, padding=1)
    monkeypatch.setattr(native_cpu, "BATCH_FRAME_FLOATS", 0)  # one image a panel row
    single = ops.conv2d(x, wt, b, padding=1)
    for other in (four, threes, whole, single):
        np.testing.assert_array_equal(split, other)
    assert_rel(split, ops.conv2d(*(a.astype(np.float64) for a in (x, wt, b)), padding=1), 1e-5, "y")


def test_forward_plan_evens_out_the_threads_shares():
    """Blocks of channels and images a panel row depend on the panels' widths and the threads:
    one thread or an even split needs none; 17 panels with a narrow last one (VGG conv4_2 at
    batch 1) on 2 threads get 2 blocks; 8 images of 17x17 go 4 (not 3) a panel row."""
    blocks = native_cpu._channel_blocks
    full = (48,) * 16 + (16,)
    assert blocks(full, full, 1, 1, 64, 1)[0] == 1
    assert blocks((48,) * 6 + (1,), (48,) * 6 + (1,), 8, 1, 16, 2)[0] == 1  # 8 images: 4 each
    assert blocks(full, full, 1, 1, 64, 2)[0] == 2
    assert blocks((48, 1), (48, 1), 1, 1, 64, 3)[0] == 3  # batch 1, 7x7
    assert blocks((48,) * 8 + (8,), (48,) * 8 + (8,), 1, 1, 1, 2)[0] == 1  # one row panel: nothing to cut
    plan = native_cpu._split_plan.__wrapped__
    assert plan(3, 48, 8, 289, 1000, 1 << 22, 1, 16, 2) == (4, 1)
    assert plan(3, 48, 8, 289, 1000, 1 << 22, 1, 16, 1) == (3, 1)
    assert plan(3, 48, 8, 289, 1000, 3000, 1, 16, 2)[0] == 3  # 4 frames would pass the limit


@pytest.mark.parametrize("case", ["b1_pointwise_7", "b1_dilated_14", "b1_strided_groups", "b1_big_stem",
                                  "b1_big_dilated_groups"])
def test_one_image_gives_the_same_bits_for_any_thread_count(case, monkeypatch):
    """Batch 1 with few pixels: channel blocks whose panels run together, weights (also the
    transposed ones of dx) packed by the threads in shares, dW by column panels; with many
    pixels, dW in fixed shares of the pixels: the bits of one thread."""
    x, wt, b, gy, kw = _data(case)
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS_PER_THREAD", 1)  # split the packing too
    monkeypatch.setattr(native_cpu, "DIRECT", "never")  # the GEMM path's kernels (cpu_direct.c has its own tests,
    monkeypatch.setattr(native_cpu, "CHANNEL_VECTOR", "never")  # its channel vectors too,
    monkeypatch.setattr(native_cpu, "WINOGRAD", "never")  # and so has cpu_winograd.c)
    monkeypatch.setattr(native_cpu, "INLINE_PACK", "never")  # the packing pass (the other: its own test)
    counts = count_native_calls(monkeypatch)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(host_threads, "_num_threads", threads)
        results.append((ops.conv2d(x, wt, b, **kw), *ops.conv2d_backward(gy, x, wt, **kw)))
    assert counts.get("conv2d_fwd_split_f32", 0) >= 1 and counts.get("pack_weights_t_f32", 0) >= 1, counts
    assert ("conv2d_dw_shares_f32" in counts) == ("big" in case), counts  # shares of the pixels (one image)
    assert ("conv2d_dw_cols_f32" in counts) == ("big" not in case), counts  # column panels of dW
    for other in results[1:]:
        for name, a, c in zip(("y", "dx", "dw", "db"), results[0], other):
            np.testing.assert_array_equal(a, c, err_msg=name)
    for name, got, want in zip(("y", "dx", "dw", "db"), results[0], _float64_im2col(x, wt, b, gy, kw)):
        assert_rel(got, want, 1e-5, f"{case} {name}")


@pytest.mark.parametrize("case", [c for c in CASES if c != "depthwise"])
def test_weights_packed_as_the_tiles_go_give_the_same_bits(case, monkeypatch):
    """One image: the forward and the input gradient (its transposed weights, phases of a
    strided one too) with the weights packed block by block inside the GEMM give the bits of
    the packing pass, on 1, 2 and 3 threads (channel blocks or not)."""
    x, wt, b, gy, kw = _data(case)
    x, gy = x[:1], gy[:1]
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS_PER_THREAD", 1)
    for setting in ("DIRECT", "CHANNEL_VECTOR", "WINOGRAD"):  # the GEMM's split forward for every case
        monkeypatch.setattr(native_cpu, setting, "never")
    counts = count_native_calls(monkeypatch)
    for threads in (1, 2, 3):
        monkeypatch.setattr(host_threads, "_num_threads", threads)
        results = {}
        for setting in ("never", "always"):
            monkeypatch.setattr(native_cpu, "INLINE_PACK", setting)
            results[setting] = (ops.conv2d(x, wt, b, **kw),
                                ops.conv2d_backward(gy, x, wt, need_weight_grad=False, **kw)[0])
        for name, a, c in zip(("y", "dx"), results["never"], results["always"]):
            np.testing.assert_array_equal(a, c, err_msg=f"{case} {name} on {threads} threads")
    assert counts.get("conv2d_fwd_split_inline_f32", 0) >= 3, counts
    if case in ("tails", "strided", "b1_pointwise_7", "b1_pointwise_groups"):
        for name, got, want in zip(("y", "dx"), results["always"], _float64_im2col(x, wt, b, gy, kw)):
            assert_rel(got, want, 1e-5, f"{case} {name}")


def test_inline_packing_rule(monkeypatch):
    """"auto" packs as the tiles go for one image of at most INLINE_PACK_PANELS panels whose
    threads take their own channel blocks; not for a batch, nor for many panels."""
    lib = native.library()
    monkeypatch.setattr(host_threads, "_num_threads", 2)

    def inline(n, c, h, o, k, p):
        win = Window(k, k, 1, 1, 1, 1, p, p, p, p, h, h)
        plan = native_cpu._forward_plan(lib, (n, c, h, h), (o, c, k, k), win, 1)
        return plan.entry == "conv2d_fwd_split_f32" and plan.inline
    assert inline(1, 512, 7, 512, 3, 1)  # ResNet layer4 at batch 1 (2 panels)
    assert inline(1, 512, 7, 2048, 1, 0)  # ResNet-50's 1x1 512->2048
    assert not inline(8, 512, 7, 512, 1, 0)  # a batch
    assert not inline(1, 512, 28, 512, 1, 0)  # 17 panels: each weight meets several runs


def test_strided_input_gradient_matches_torch_float64():
    torch = torch_or_skip()
    for case in ("strided", "stem", "strided_dilated", "mixed_strides", "pointwise_s2", "strided_groups"):
        x, wt, b, gy, kw = _data(case)
        xt = to_torch(x.astype(np.float64), True)
        torch.nn.functional.conv2d(xt, to_torch(wt.astype(np.float64)), **kw).backward(to_torch(gy.astype(np.float64)))
        dx, _, _ = ops.conv2d_backward(gy, x, wt, **kw)
        assert_rel(dx, from_torch(xt.grad), TORCH_TOL["float32"], case)


@pytest.mark.parametrize("case", ["tails", "deep_k", "groups", "wide", "strided", "stem"])
def test_results_do_not_depend_on_the_thread_count(case, monkeypatch):
    x, wt, b, gy, kw = _data(case)
    x, gy = np.concatenate([x] * 4), np.concatenate([gy] * 4)  # enough images to split
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)  # split even these small calls
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(host_threads, "_num_threads", threads)
        results.append((ops.conv2d(x, wt, b, **kw), *ops.conv2d_backward(gy, x, wt, **kw)))
    for other in results[1:]:
        for name, a, c in zip(("y", "dx", "dw", "db"), results[0], other):
            np.testing.assert_array_equal(a, c, err_msg=name)


@pytest.mark.parametrize("case", [c for c in CASES if c != "depthwise"])
def test_weight_gradient_in_w_order_gives_the_same_bits(case, monkeypatch):
    """dW written in W's (c, ky, kx) column order (taps gathered) and in (ky, kx, c) order then
    transposed: the same sums, so the same bits, through the column panels (one share), the
    shares of a batch (x4 images) and the shares of one large image's pixels."""
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    counts = count_native_calls(monkeypatch)
    x, wt, b, gy, kw = _data(case)
    for batch in (1, 4):
        xb, gyb = np.concatenate([x] * batch), np.concatenate([gy] * batch)
        dws = {}
        for order in ("never", "always"):
            monkeypatch.setattr(native_cpu, "DW_W_ORDER", order)
            dws[order] = ops.conv2d_backward(gyb, xb, wt, need_input_grad=False, **kw)[1]
        assert dws["always"].flags.c_contiguous and dws["always"].shape == wt.shape
        np.testing.assert_array_equal(dws["always"], dws["never"], err_msg=f"{case} x{batch}")
    assert counts.get("conv2d_dw_shares_f32", 0) + counts.get("conv2d_dw_cols_f32", 0) == 4, counts
    if case == "tails":
        assert_rel(dws["always"], _float64_im2col(xb, wt, b, gyb, kw)[2], 1e-5, "dw")


def test_weight_gradient_order_rule():
    """W's order where the batch has at most DW_W_ORDER_PIXELS pixels per output channel of a
    group (batch-1 512-channel layers), the transpose elsewhere."""
    assert native_cpu._dw_in_w_order(49, 512)  # ResNet layer4 at batch 1
    assert native_cpu._dw_in_w_order(8 * 49, 512)  # and at batch 8
    assert native_cpu._dw_in_w_order(289, 192)  # Inception 7x1 at batch 1
    assert not native_cpu._dw_in_w_order(729, 128)  # AlexNet conv2 (2 groups of 128) at batch 1
    assert not native_cpu._dw_in_w_order(128 * 256, 32)  # ResNet-20 stage2 at batch 128


def test_weight_gradient_shares_split_evenly_over_2_4_or_8_threads(monkeypatch):
    """The weight gradient's fixed shares of a batch are 2, 4 or 8 (3 on 2 threads would
    leave a thread idle a third of the time); the shapes alone decide, so the bits do not
    depend on the thread count, and they match PyTorch."""
    for n, pixels in ((1, 5000), (8, 289), (3, 1024), (6, 1024), (7, 1024), (64, 196), (2, 49)):
        assert native_cpu._dw_parts(n, pixels) in (2, 4, 8), (n, pixels)
    assert native_cpu._dw_parts(8, 289) == 2 and native_cpu._dw_parts(5, 1024) == 4
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 5, 17, 17)).astype(np.float32)  # 8 x 289 pixels: 3 shares before
    wt = rng.standard_normal((6, 5, 7, 1)).astype(np.float32)
    gy = rng.standard_normal((8, 6, 17, 17)).astype(np.float32)
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    calls = count_native_calls(monkeypatch)
    dws = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(host_threads, "_num_threads", threads)
        dws.append(ops.conv2d_backward(gy, x, wt, padding=(3, 0), need_input_grad=False)[1])
    assert calls.get("conv2d_dw_shares_f32") == 3
    for other in dws[1:]:
        np.testing.assert_array_equal(dws[0], other)
    torch = torch_or_skip()
    wtt = to_torch(wt.astype(np.float64), True)
    torch.nn.functional.conv2d(to_torch(x.astype(np.float64)), wtt, padding=(3, 0)).backward(
        to_torch(gy.astype(np.float64)))
    assert_rel(dws[0], from_torch(wtt.grad), TORCH_TOL["float32"], "7x1 dW")


def test_non_contiguous_inputs():
    x, wt, b, gy, kw = _data("tails")
    xs = np.asfortranarray(x)[:, :, ::-1, :][:, :, ::-1, :]  # same values, other strides
    ws = wt.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(ops.conv2d(xs, ws, b, **kw), ops.conv2d(x, wt, b, **kw))
    gys = np.asfortranarray(gy)
    (dx, dw, db), (dx0, dw0, db0) = ops.conv2d_backward(gys, xs, ws, **kw), ops.conv2d_backward(gy, x, wt, **kw)
    np.testing.assert_array_equal(dx, dx0)  # the C kernels see the same contiguous copies
    np.testing.assert_array_equal(dw, dw0)
    np.testing.assert_allclose(db, db0, rtol=1e-6)  # NumPy's own sum, in the order of the strides


def test_float64_and_mixed_grad_dtype_stay_on_numpy(monkeypatch):
    counts = count_native_calls(monkeypatch)
    x, wt, b, gy, kw = _data("tails")
    ops.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), **kw)
    assert counts == {}
    dx, dw, _ = ops.conv2d_backward(gy.astype(np.float64), x, wt, **kw)  # float64 gradient of a float32 conv
    assert "conv2d_dw_shares_f32" not in counts
    ref = _float64_im2col(x, wt, b, gy, kw)
    assert_rel(dw, ref[2], 1e-5, "dw")


def test_use_native_kernels_false_takes_the_im2col_path(monkeypatch):
    monkeypatch.setattr(backends.get("numpy"), "use_native_kernels", False)
    counts = count_native_calls(monkeypatch)
    x, wt, b, gy, kw = _data("tails")
    ops.conv2d(x, wt, b, **kw)
    ops.conv2d_backward(gy, x, wt, **kw)
    assert counts == {}


def _run_fresh(env_extra, code):
    env = {**os.environ, **env_extra}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


CHECK = ("import numpy as np, engine.ops as ops; from engine.kernels import native; "
         "x = np.ones((1, 2, 5, 5), np.float32); w = np.ones((3, 2, 3, 3), np.float32); "
         "y = ops.conv2d(x, w, padding=1); print(native.status()); print(float(y.sum()))")


def test_engine_native_0_turns_the_kernels_off():
    status, total = _run_fresh({"ENGINE_NATIVE": "0"}, CHECK).splitlines()
    assert status == "off (ENGINE_NATIVE=0)" and float(total) == 3 * 2 * (9 * 9 + 12 * 6 + 4 * 4)


def test_without_a_compiler_the_numpy_path_runs_and_status_says_why(tmp_path):
    out = _run_fresh({"CC": "no-such-compiler-xyz", "ENGINE_CACHE_DIR": str(tmp_path)}, CHECK)
    status, total = out.splitlines()
    assert status.startswith("off: no C compiler ('no-such-compiler-xyz' is not on PATH")
    assert float(total) == 3 * 2 * (9 * 9 + 12 * 6 + 4 * 4)


def test_a_failed_build_warns_once_and_the_numpy_path_runs(tmp_path):
    """A compiler that runs but fails (here a script that says so): one RuntimeWarning naming
    the compiler's error line, status() with its output, and the NumPy path's results."""
    cc = tmp_path / "broken-cc"
    cc.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "brokencc 1.0"; exit 0; fi\n'
                  'echo "kernels/cpu_conv.c:1:1: error: broken on purpose" >&2\nexit 1\n')
    cc.chmod(0o755)
    code = "import warnings; warnings.simplefilter('always'); " + CHECK + "; ops.conv2d(x, w, padding=1)"
    env = {**os.environ, "CC": str(cc), "ENGINE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    *status, total = done.stdout.strip().splitlines()  # the status carries the compiler's lines
    assert status[0].startswith("off: building kernels/cpu_*.c failed") and "broken on purpose" in "".join(status)
    assert float(total) == 3 * 2 * (9 * 9 + 12 * 6 + 4 * 4)
    assert done.stderr.count("RuntimeWarning: engine: the C kernels did not build") == 1, done.stderr
    assert "error: broken on purpose" in done.stderr


def test_a_build_is_cached_under_a_hash_and_reused(tmp_path):
    out1 = _run_fresh({"ENGINE_CACHE_DIR": str(tmp_path)}, CHECK)
    built = sorted(os.listdir(tmp_path / "native"))
    assert re.match(r"on \((AVX-512|AVX2), built by ", out1.splitlines()[0]), out1
    assert len(built) == 2 and built[0].endswith(".so") and built[1] == built[0] + ".sha256"
    stamp = os.stat(tmp_path / "native" / built[0]).st_mtime_ns
    _run_fresh({"ENGINE_CACHE_DIR": str(tmp_path)}, CHECK)
    assert sorted(os.listdir(tmp_path / "native")) == built  # no temporary build left behind
    assert os.stat(tmp_path / "native" / built[0]).st_mtime_ns == stamp  # loaded, not rebuilt


# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = {
    "k2": (2, 3, 28, 28, 2, 2, 0, 1, False),
    "k3s2p1_overlap": (2, 4, 17, 16, 3, 2, 1, 1, False),
    "k3s1_overlap": (1, 2, 9, 11, 3, 1, 1, 1, False),
    "nonsquare_dilated": (2, 2, 13, 12, (2, 3), (1, 2), (1, 1), (2, 1), False),
    "ceil": (2, 2, 7, 9, 3, 2, 1, 1, True),
    "stride3": (1, 3, 20, 21, 2, 3, 0, 1, False),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool_kernel_equals_torch_bit_for_bit(case, monkeypatch):
    """Values and indices, and the gradient summed window by window as PyTorch does."""
    torch = torch_or_skip()
    n, c, h, w, k, s, p, d, ceil = POOL_CASES[case]
    r = np.random.default_rng(1)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    x[r.random(x.shape) < 0.05] = np.nan
    x[r.random(x.shape) < 0.05] = -np.inf
    x.reshape(-1)[::7] = 0.5  # ties
    counts = count_native_calls(monkeypatch)
    y, idx = ops.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert counts.get("max_pool2d_fwd_f32") and idx.dtype == np.uint8
    xt = to_torch(x, True)
    yt, it = torch.nn.functional.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, from_torch(yt))
    kh, kw = (k, k) if isinstance(k, int) else k
    rows, cols = np.divmod(from_torch(it), w)  # torch: flat position in the image
    win = ops.pooling._pool_window(x.shape, k, s, p, d, ceil, "test")
    oy = np.arange(win.oh)[:, None] * win.sh - win.pad_top
    ox = np.arange(win.ow)[None, :] * win.sw - win.pad_left
    ky, kx = (rows - oy) // win.dh, (cols - ox) // win.dw
    np.testing.assert_array_equal(idx, ky * kw + kx)
    g = r.standard_normal(y.shape).astype(np.float32)
    yt.backward(to_torch(g))
    dx = ops.max_pool2d_backward(g, idx, x.shape, k, s, p, d, ceil)
    assert counts.get("max_pool2d_bwd_f32")
    np.testing.assert_array_equal(dx, from_torch(xt.grad))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (13, 300, 1000), (64, 576, 200), (9, 7, 47), (128, 200, 400)])
@pytest.mark.parametrize("layout", ["contiguous", "b_transposed", "a_transposed"])
def test_gemm_kernel_equals_float64_matmul(m, k, n, layout):
    """The kernels' plain GEMM (the benchmark's bare GEMM): both packing paths of B."""
    r = np.random.default_rng(m * n + k)
    a = r.standard_normal((k, m) if layout == "a_transposed" else (m, k)).astype(np.float32)
    b = r.standard_normal((n, k) if layout == "b_transposed" else (k, n)).astype(np.float32)
    a = a.T if layout == "a_transposed" else a
    b = b.T if layout == "b_transposed" else b
    got = native_cpu.matmul(a, b)
    assert got.shape == (m, n) and got.dtype == np.float32
    assert_rel(got, a.astype(np.float64) @ b.astype(np.float64), 1e-5, f"{layout} {m}x{k}x{n}")


def test_gemm_kernel_declines_what_it_does_not_take():
    a = np.ones((3, 4), np.float32)
    assert native_cpu.matmul(a.astype(np.float64), a.T) is None
    assert native_cpu.matmul(a, np.ones((5, 2), np.float32)) is None  # inner sizes differ
    assert native_cpu.matmul(a[:, ::-1], a.T) is None  # negative strides


def test_a_failed_scratch_allocation_is_a_memory_error_naming_the_op():
    with pytest.raises(MemoryError, match=r"^conv2d: the C kernels .* could not allocate their scratch memory"):
        native_cpu._ok(-1, "conv2d")
    native_cpu._ok(0, "conv2d")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k,p", [(3, 1), (1, 0)])
def test_an_empty_batch_gives_empty_outputs_and_zero_weight_gradients(dtype, k, p):
    """As in PyTorch; the NumPy path used to fail reshaping a weight gradient nobody summed."""
    x, w = np.ones((0, 3, 5, 5), dtype), np.ones((4, 3, k, k), dtype)
    y = ops.conv2d(x, w, np.ones(4, dtype), padding=p)
    dx, dw, db = ops.conv2d_backward(np.ones(y.shape, dtype), x, w, padding=p)
    assert y.shape == (0, 4, 5, 5) and dx.shape == x.shape
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros(4, dtype))
    assert ops.max_pool2d(x, 2).shape == (0, 3, 2, 2)


AVG_POOL_CASES = {  # (N, C, H, W, avg_pool2d keyword arguments): the kernels serve the first three
    "k2": (3, 4, 28, 28, {"kernel_size": 2}),
    "k2_odd_edges": (2, 3, 33, 35, {"kernel_size": 2}),
    "k2_divisor_override": (2, 2, 10, 40, {"kernel_size": 2, "divisor_override": 3}),
    "k2_padded": (2, 2, 9, 9, {"kernel_size": 2, "padding": 1}),
    "k3s2": (2, 2, 9, 9, {"kernel_size": 3, "stride": 2}),
}


@pytest.mark.parametrize("case", list(AVG_POOL_CASES))
def test_avg_pool_kernel_equals_the_generic_path_and_torch(case, monkeypatch):
    """2x2 stride-2 windows inside the image go through the kernels with the generic path's
    bits (inf, NaN and -0.0 gradients included) for 1, 2 and 3 threads; other windows keep
    the generic path. Both agree with PyTorch."""
    torch = torch_or_skip()
    n, c, h, w, kwargs = AVG_POOL_CASES[case]
    r = np.random.default_rng(3)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    x.reshape(-1)[::11] = np.inf
    x.reshape(-1)[5::13] = np.nan
    counts = count_native_calls(monkeypatch)
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS_PER_THREAD", 1)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(host_threads, "_num_threads", threads)
        y = ops.avg_pool2d(x, **kwargs)
        g = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
        g.reshape(-1)[::9] = -0.0
        results.append((y.tobytes(), ops.avg_pool2d_backward(g, x.shape, **kwargs).tobytes()))
    assert results[0] == results[1] == results[2]
    served = bool(counts.get("avg_pool2d_k2s2_fwd_f32")) and bool(counts.get("avg_pool2d_k2s2_bwd_f32"))
    assert served == (case.startswith("k2") and case != "k2_padded" and native.library().native_isa() == 512)
    monkeypatch.setattr(backends.get("numpy"), "use_native_kernels", False)
    y0 = ops.avg_pool2d(x, **kwargs)
    dx0 = ops.avg_pool2d_backward(g, x.shape, **kwargs)
    assert results[0] == (y0.tobytes(), dx0.tobytes())
    xt = to_torch(x, True)
    yt = torch.nn.functional.avg_pool2d(xt, **kwargs)
    np.testing.assert_array_equal(y0, from_torch(yt))
    yt.backward(to_torch(g))
    np.testing.assert_allclose(dx0, from_torch(xt.grad), rtol=1e-6, atol=0)


def test_max_pool_gradient_of_minus_zero_lands_as_plus_zero_like_torch():
    """PyTorch adds each gradient to a zeroed buffer, so -0.0 arrives as +0.0 (2x2 path and generic)."""
    for k in (2, 3):
        x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)[:, :, :k, :k].copy()
        y, idx = ops.max_pool2d(x, k, k, return_indices=True)
        dx = ops.max_pool2d_backward(np.full(y.shape, -0.0, np.float32), idx, x.shape, k, k)
        assert not np.signbit(dx).any(), dx


def test_max_pool_backward_refuses_mismatched_or_out_of_window_indices():
    x = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    y, idx = ops.max_pool2d(x, 3, 1, return_indices=True)
    with pytest.raises(ValueError, match=r"max_pool2d backward: grad_out must have the pooled shape \(1, 1, 6, 6\)"):
        ops.max_pool2d_backward(y[:, :, :1, :1].copy(), idx, x.shape, 3, 1)
    with pytest.raises(ValueError, match=r"max_pool2d backward: indices must have the pooled shape"):
        ops.max_pool2d_backward(y, idx[:, :, :1, :1].copy(), x.shape, 3, 1)
    with pytest.raises(ValueError, match=r"in-window positions below kh\*kw = 4, got 8"):
        ops.max_pool2d_backward(np.ones((1, 1, 7, 7), np.float32), np.full((1, 1, 7, 7), 8, np.uint8), x.shape, 2, 1)


def test_relu_kernel_equals_numpys_bit_for_bit(monkeypatch):
    r = np.random.default_rng(3)
    x = r.standard_normal((3, 5, 17, 19)).astype(np.float32)
    x.flat[:6] = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0]
    g = r.standard_normal(x.shape).astype(np.float32)
    g.flat[6:10] = [np.nan, np.inf, -np.inf, -0.0]
    counts = count_native_calls(monkeypatch)
    y, dx = ops.relu(x), ops.relu_backward(g, ops.relu(x))
    assert counts.get("relu_f32") and counts.get("relu_backward_f32")
    numpy_backend = backends.get("numpy")
    monkeypatch.setattr(numpy_backend, "use_native_kernels", False)
    with np.errstate(invalid="ignore"):  # inf * 0 where the output is not positive: NaN, on both paths
        y0, dx0 = ops.relu(x), ops.relu_backward(g, ops.relu(x))
    assert y.tobytes() == y0.tobytes() and dx.tobytes() == dx0.tobytes()  # NaN payloads and zero signs too
    with pytest.raises(ValueError, match=r"relu backward: grad_out must have the output's shape \(3, 5, 17, 19\)"):
        ops.relu_backward(g[:1], y)


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    """The kernels built for AVX2 (-march=haswell: 8-wide vectors, a 6x16 tile, no 2x2 pooling
    kernel), as on CPUs without AVX-512, run every test of this file."""
    run_file_under_avx2(__file__, tmp_path)
    status = _run_fresh({"ENGINE_NATIVE_MARCH": "haswell", "ENGINE_CACHE_DIR": str(tmp_path)}, CHECK)
    assert status.splitlines()[0].startswith("on (AVX2, built by ")


def test_a_build_without_avx2_or_avx512_turns_the_kernels_off(tmp_path):
    """-march=x86-64 (SSE2 only) compiles the source's fallback branch: native_isa() says 0."""
    out = _run_fresh({"ENGINE_NATIVE_MARCH": "x86-64", "ENGINE_CACHE_DIR": str(tmp_path)}, CHECK)
    status, total = out.splitlines()
    assert status.startswith("off: this CPU has neither AVX-512 nor AVX2 with FMA")
    assert float(total) == 3 * 2 * (9 * 9 + 12 * 6 + 4 * 4)


@pytest.mark.parametrize("cg, og, groups, k, ys, xs", [
    (16, 5, 1, (3, 3), [2, 1, 0], [2, 1, 0]),  # a 3x3 input gradient's flipped taps: permutes (AVX-512)
    (8, 3, 2, (3, 3), [2, 1, 0], [2, 1, 0]),  # two groups
    (16, 4, 1, (3, 3), [2, 0], [1]),  # a phase of a 3x3/2: a subset of the taps
    (24, 3, 1, (2, 2), [1, 0], [1, 0]),
    (8, 2, 1, (1, 3), [0], [2, 1, 0]),
    (16, 2, 1, (3, 1), [2, 1, 0], [0]),
    (13, 3, 1, (3, 3), [2, 1, 0], [2, 1, 0]),  # a last panel of 5 (or 1) rows: the scalar loop
    (8, 2, 1, (5, 5), [4, 3, 2, 1, 0], [4, 3, 2, 1, 0]),  # 200 floats of 8 kernels: the scalar loop
    (16, 3, 1, (1, 1), [0], [0]),  # 1x1: a row's run
])
def test_transposed_weights_are_packed_as_numpy_lays_them_out(cg, og, groups, k, ys, xs):
    """pack_weights_t_f32 (the input gradient's weights, transposed, taps in a given order),
    whose MR-row runs of whole tap lists go by vector permutes on AVX-512: every float where
    the layout puts it, rows past the channels zero."""
    lib = native.library()
    mr = 8 if lib.native_isa() == 512 else 6
    kh, kw = k
    c, o = cg * groups, og * groups
    w = np.random.default_rng(9).standard_normal((o, cg, kh, kw)).astype(np.float32)
    win = native_cpu.Window(kh, kw, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1)
    geom = native_cpu._geometry((1, c, kh, kw), o, win, groups)
    ys_a, xs_a = np.array(ys, dtype=np.int64), np.array(xs, dtype=np.int64)
    nt, rp = len(ys) * len(xs), -(-cg // mr)
    out = np.full(groups * rp * mr * og * nt, np.nan, dtype=np.float32)
    assert lib.pack_weights_t_f32(native_cpu._ptr(w), native_cpu._ptr(geom), native_cpu._ptr(ys_a), len(ys),
                                  native_cpu._ptr(xs_a), len(xs), native_cpu._ptr(out), 0, groups * rp) == 0
    taps = w.reshape(groups, og, cg, kh, kw)[:, :, :, ys, :][:, :, :, :, xs].reshape(groups, og, cg, nt)
    want = np.zeros((groups, rp * mr, og, nt), dtype=np.float32)
    want[:, :cg] = taps.transpose(0, 2, 1, 3)  # (group, input channel, output channel, tap)
    # panel i = (group, MR rows): columns (o, t), each column's MR rows together
    want = want.reshape(groups, rp, mr, og * nt).transpose(0, 1, 3, 2).reshape(-1)
    np.testing.assert_array_equal(out, want)
