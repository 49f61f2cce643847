"""Max, average and global average pooling: loop reference (PyTorch's padding,
dilation, ceil_mode and count_include_pad rules), PyTorch CPU, finite
differences, layers, backends."""
from __future__ import annotations

import numpy as np
import pytest

from engine import backends
from engine.kernels import native
import engine
from engine import ops
from engine import nn

import reference as ref
from _helpers import (FD_TOL, REF_TOL, TORCH_TOL, assert_rel, backward_through, from_torch, to_torch,
                      torch_or_skip)
from conftest import assert_close

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = {
    "k2": (2, 3, 6, 6, 2, None, 0, 1, False),
    "k3s2p1": (2, 2, 7, 7, 3, 2, 1, 1, False),
    "ceil_overhang": (1, 2, 5, 5, 2, 2, 0, 1, True),
    "ceil_last_window_rule": (1, 1, 5, 5, 2, 2, 1, 1, True),
    "ceil_s3_p1": (1, 2, 8, 7, 3, 3, 1, 1, True),
    "nonsquare": (2, 2, 6, 9, (2, 3), (1, 2), (1, 0), 1, False),
    "dilation2": (1, 2, 9, 8, 3, 1, 1, 2, False),
    "dilation_tuple_ceil": (1, 2, 9, 10, (2, 3), 2, (1, 1), (2, 1), True),
    "overlap_s1": (1, 2, 5, 6, 3, 1, 1, 1, False),
    "batch1_odd_ceil": (1, 1, 5, 3, (3, 1), (2, 1), (1, 0), 1, True),
    "whole_image": (2, 2, 4, 5, (4, 5), None, 0, 1, False),
}
# (N, C, H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = {
    "k2": (2, 3, 6, 6, 2, None, 0, False, True, None),
    "pad_include": (2, 2, 7, 7, 3, 2, 1, False, True, None),
    "pad_exclude": (2, 2, 7, 7, 3, 2, 1, False, False, None),
    "ceil_include": (1, 2, 5, 5, 2, 2, 0, True, True, None),
    "ceil_exclude": (1, 2, 5, 5, 2, 2, 0, True, False, None),
    "ceil_pad_include": (1, 2, 6, 5, 3, 2, 1, True, True, None),
    "ceil_pad_exclude": (1, 2, 6, 5, 3, 2, 1, True, False, None),
    "nonsquare": (2, 2, 6, 9, (2, 3), (1, 2), (1, 0), False, True, None),
    "nonsquare_exclude_ceil": (1, 2, 7, 9, (3, 2), (2, 3), (1, 1), True, False, None),
    "divisor_override": (1, 2, 6, 6, 3, 2, 1, True, True, 5),
    "overlap_exclude": (1, 1, 5, 6, 3, 1, 1, False, False, None),
    "batch1_odd": (1, 1, 5, 3, (3, 1), (2, 1), (1, 0), False, True, None),
}
STRICT_MAX = ["k3s2p1", "dilation_tuple_ceil", "nonsquare"]
STRICT_AVG = ["ceil_pad_exclude", "nonsquare", "divisor_override"]


def _max_args(case):
    n, c, h, w, k, s, p, d, cm = MAX_CASES[case]
    return (n, c, h, w), dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=cm)


def _avg_args(case):
    n, c, h, w, k, s, p, cm, cip, dov = AVG_CASES[case]
    return (n, c, h, w), dict(kernel_size=k, stride=s, padding=p, ceil_mode=cm, count_include_pad=cip,
                              divisor_override=dov)


def _x(shape, dtype="float64", seed=0):
    # A permutation scaled: no ties, so the max is unique and finite differences are clean.
    r = np.random.default_rng(seed)
    return (r.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0 + 0.01 * r.random(shape)).astype(dtype)


def _gy(y_shape, dtype="float64", seed=1):
    return np.random.default_rng(seed).standard_normal(y_shape).astype(dtype)


# --------------------------------------------------------------------------- max pooling
@pytest.mark.parametrize("case", list(MAX_CASES))
def test_max_pool_matches_loop_reference(case):
    shape, kw = _max_args(case)
    x = _x(shape)
    y, idx = ops.max_pool2d(x, return_indices=True, **kw)
    ry = ref.max_pool2d(x, **kw)
    assert_close(y, ry, rtol=0)  # a max is exact
    gy = _gy(ry.shape)
    dx = ops.max_pool2d_backward(gy, idx, x.shape, **kw)
    assert_close(dx, ref.max_pool2d_backward(gy, x, **kw), rtol=REF_TOL["float64"])


def test_reference_pooling_agrees_with_torch_on_one_case():
    torch = torch_or_skip()
    shape, kw = _max_args("dilation_tuple_ceil")
    x = _x(shape)
    assert_close(ref.max_pool2d(x, **kw), from_torch(torch.nn.functional.max_pool2d(to_torch(x), **kw)), rtol=0)
    shape, akw = _avg_args("ceil_pad_exclude")
    x = _x(shape)
    assert_close(ref.avg_pool2d(x, **akw), from_torch(torch.nn.functional.avg_pool2d(to_torch(x), **akw)),
                 rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(MAX_CASES))
def test_max_pool_matches_torch(case, dtype):
    torch = torch_or_skip()
    shape, kw = _max_args(case)
    x = _x(shape, dtype)
    tx = to_torch(x, requires_grad=True)
    ty, tidx = torch.nn.functional.max_pool2d(tx, return_indices=True, **kw)
    gy = _gy(tuple(ty.shape), dtype)
    ty.backward(to_torch(gy))
    y, idx = ops.max_pool2d(x, return_indices=True, **kw)
    assert_close(y, from_torch(ty), rtol=0)
    dx = ops.max_pool2d_backward(gy, idx, x.shape, **kw)
    assert_rel(dx, from_torch(tx.grad), TORCH_TOL[dtype], "dx")
    # Indices: the engine's in-window position i*kw + j, torch's flat position in the image.
    (_, kw_), (sh, sw) = _pair(kw["kernel_size"]), _pair(kw["stride"] or kw["kernel_size"])
    (ph, pw), (dh, dw) = _pair(kw["padding"]), _pair(kw["dilation"])
    idx = engine.to_numpy(idx)
    p, q = np.meshgrid(np.arange(idx.shape[2]), np.arange(idx.shape[3]), indexing="ij")
    rows = p * sh - ph + (idx // kw_) * dh
    cols = q * sw - pw + (idx % kw_) * dw
    np.testing.assert_array_equal(rows * shape[3] + cols, from_torch(tidx))


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def test_max_pool_ties_route_gradient_like_torch():
    """After a ReLU most of the input is 0: ties everywhere, overlapping padded windows.
    The first maximum in row-major window order takes the gradient, as in PyTorch."""
    torch = torch_or_skip()
    x = np.maximum(np.random.default_rng(3).standard_normal((2, 3, 7, 8)), 0)
    x[0, 0] = 0.0  # a whole channel of ties
    kw = dict(kernel_size=3, stride=1, padding=1)
    tx = to_torch(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, **kw)
    gy = _gy(tuple(ty.shape))
    ty.backward(to_torch(gy))
    y, idx = ops.max_pool2d(x, return_indices=True, **kw)
    assert_close(y, from_torch(ty), rtol=0)
    assert_close(ops.max_pool2d_backward(gy, idx, x.shape, **kw), from_torch(tx.grad), rtol=1e-14)
    assert_close(ops.max_pool2d_backward(gy, idx, x.shape, **kw), ref.max_pool2d_backward(gy, x, **kw), rtol=1e-14)


def test_max_pool_propagates_nan_like_torch():
    torch = torch_or_skip()
    x = _x((1, 2, 6, 6))
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 5, 5] = np.nan
    kw = dict(kernel_size=3, stride=2, padding=1)
    y = engine.to_numpy(ops.max_pool2d(x, **kw))
    ty = from_torch(torch.nn.functional.max_pool2d(to_torch(x), **kw))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ty))
    assert np.isnan(y).sum() == 5  # (1, 1) lies in four overlapping windows, (5, 5) in one
    np.testing.assert_array_equal(y[~np.isnan(y)], ty[~np.isnan(ty)])


def test_max_pool_of_minus_inf_in_a_padded_window():
    x = np.full((1, 1, 3, 3), -np.inf)
    x[0, 0, 2, 2] = 1.0
    kw = dict(kernel_size=2, stride=2, padding=1)
    y, idx = ops.max_pool2d(x, return_indices=True, **kw)
    assert_close(y, ref.max_pool2d(x, **kw), rtol=0)  # [[-inf, -inf], [-inf, 1]]
    dx = ops.max_pool2d_backward(np.ones((1, 1, 2, 2)), idx, x.shape, **kw)
    assert float(np.sum(engine.to_numpy(dx))) == 4.0  # every output's gradient lands on the input


@pytest.mark.parametrize("case", ["k3s2p1", "ceil_last_window_rule", "nonsquare", "dilation_tuple_ceil",
                                  "batch1_odd_ceil"])
def test_max_pool_backward_matches_finite_differences(case):
    shape, kw = _max_args(case)
    x = _x(shape)
    y, idx = ops.max_pool2d(x, return_indices=True, **kw)
    gy = _gy(tuple(y.shape))
    num = ref.numerical_grad(lambda v: np.sum(engine.to_numpy(ops.max_pool2d(v, **kw)) * gy), x)
    assert_rel(ops.max_pool2d_backward(gy, idx, x.shape, **kw), num, FD_TOL, "dx")


# --------------------------------------------------------------------------- average pooling
@pytest.mark.parametrize("case", list(AVG_CASES))
def test_avg_pool_matches_loop_reference(case):
    shape, kw = _avg_args(case)
    x = _x(shape)
    y = ops.avg_pool2d(x, **kw)
    ry = ref.avg_pool2d(x, **kw)
    assert_close(y, ry, rtol=REF_TOL["float64"])
    gy = _gy(ry.shape)
    assert_close(ops.avg_pool2d_backward(gy, x.shape, **kw), ref.avg_pool2d_backward(gy, x.shape, **kw),
                 rtol=REF_TOL["float64"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(AVG_CASES))
def test_avg_pool_matches_torch(case, dtype):
    torch = torch_or_skip()
    shape, kw = _avg_args(case)
    x = _x(shape, dtype)
    tx = to_torch(x, requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, **kw)
    gy = _gy(tuple(ty.shape), dtype)
    ty.backward(to_torch(gy))
    y = ops.avg_pool2d(x, **kw)
    assert engine.to_numpy(y).dtype == np.dtype(dtype)
    assert_rel(y, from_torch(ty), TORCH_TOL[dtype], "y")
    assert_rel(ops.avg_pool2d_backward(gy, x.shape, **kw), from_torch(tx.grad), TORCH_TOL[dtype], "dx")


@pytest.mark.parametrize("case", ["pad_exclude", "ceil_pad_include", "nonsquare_exclude_ceil",
                                  "divisor_override", "batch1_odd"])
def test_avg_pool_backward_matches_finite_differences(case):
    shape, kw = _avg_args(case)
    x = _x(shape)
    y = ops.avg_pool2d(x, **kw)
    gy = _gy(tuple(y.shape))
    num = ref.numerical_grad(lambda v: np.sum(engine.to_numpy(ops.avg_pool2d(v, **kw)) * gy), x)
    assert_rel(ops.avg_pool2d_backward(gy, x.shape, **kw), num, FD_TOL, "dx")


def test_avg_pool_count_include_pad_changes_only_border_windows():
    x = np.ones((1, 1, 4, 4))
    inc = engine.to_numpy(ops.avg_pool2d(x, 3, 1, 1, count_include_pad=True))
    exc = engine.to_numpy(ops.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    np.testing.assert_allclose(exc, 1.0, rtol=1e-15)  # averages of ones over real cells
    assert inc[0, 0, 0, 0] == pytest.approx(4 / 9) and inc[0, 0, 0, 1] == pytest.approx(6 / 9)
    assert inc[0, 0, 1, 1] == pytest.approx(1.0)


# --------------------------------------------------------------------------- global average pooling
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_global_avg_pool_matches_torch_and_finite_differences(dtype):
    torch = torch_or_skip()
    x = _x((2, 3, 5, 4), dtype)
    tx = to_torch(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, 1).flatten(1)
    gy = _gy((2, 3), dtype)
    ty.backward(to_torch(gy))
    y = ops.global_avg_pool2d(x)
    assert tuple(y.shape) == (2, 3)
    assert_rel(y, from_torch(ty), TORCH_TOL[dtype], "y")
    dx = ops.global_avg_pool2d_backward(gy, x.shape)
    assert_rel(dx, from_torch(tx.grad), TORCH_TOL[dtype], "dx")
    if dtype == "float64":
        num = ref.numerical_grad(lambda v: np.sum(engine.to_numpy(ops.global_avg_pool2d(v)) * gy), x)
        assert_rel(dx, num, FD_TOL, "finite differences")


def test_global_avg_pool_layer_backward():
    layer = nn.GlobalAvgPool2d()
    x = _x((2, 3, 4, 4))
    assert_close(layer(x), x.mean(axis=(2, 3)), rtol=1e-14)
    gy = _gy((2, 3))
    assert_close(backward_through(layer, x, gy), np.broadcast_to(gy[:, :, None, None] / 16, x.shape), rtol=1e-15)


# --------------------------------------------------------------------------- non-contiguous
@pytest.mark.parametrize("op", ["max", "avg"])
def test_pooling_of_non_contiguous_views(op):
    base = _x((3, 4, 9, 10))
    x = base[::-1, 1:3, ::2, :].transpose(0, 1, 3, 2)  # reversed batch, sliced, transposed
    assert not x.flags.c_contiguous
    if op == "max":
        kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        y, idx = ops.max_pool2d(x, return_indices=True, **kw)
        gy = _gy(tuple(y.shape))[..., ::-1]  # non-contiguous upstream gradient
        assert_close(y, ref.max_pool2d(x, **kw), rtol=0)
        assert_close(ops.max_pool2d_backward(gy, idx, x.shape, **kw), ref.max_pool2d_backward(gy, x, **kw),
                     rtol=1e-14)
    else:
        kw = dict(kernel_size=(2, 3), stride=(2, 1), padding=1, ceil_mode=True, count_include_pad=False)
        y = ops.avg_pool2d(x, **kw)
        gy = _gy(tuple(y.shape))[..., ::-1]
        assert_close(y, ref.avg_pool2d(x, **kw), rtol=1e-14)
        assert_close(ops.avg_pool2d_backward(gy, x.shape, **kw), ref.avg_pool2d_backward(gy, x.shape, **kw),
                     rtol=1e-14)


# --------------------------------------------------------------------------- output sizes
@pytest.mark.parametrize("size,k,s,p,d,ceil,expected", [
    (28, 2, 2, 0, 1, False, 14),
    (5, 2, 2, 0, 1, False, 2),
    (5, 2, 2, 0, 1, True, 3),
    (5, 2, 2, 1, 1, True, 3),   # ceil would give 4, but that window would start in the right padding
    (6, 3, 2, 1, 1, True, 4),
    (8, 3, 3, 1, 1, True, 3),
    (9, 2, 2, 1, 2, True, 5),
])
def test_pool_output_size(size, k, s, p, d, ceil, expected):
    assert ref.pool_out_size(size, k, s, p, d, ceil) == expected
    x = np.zeros((1, 1, size, size))
    y = ops.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
    assert tuple(y.shape) == (1, 1, expected, expected)
    if d == 1:
        assert tuple(ops.avg_pool2d(x, k, s, p, ceil_mode=ceil).shape) == (1, 1, expected, expected)


# --------------------------------------------------------------------------- layers
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["k3s2p1", "dilation_tuple_ceil", "batch1_odd_ceil"])
def test_maxpool_layer_matches_torch(case, dtype):
    torch = torch_or_skip()
    shape, kw = _max_args(case)
    x = _x(shape, dtype)
    tl = torch.nn.MaxPool2d(**kw)
    layer = nn.MaxPool2d(**kw)
    tx = to_torch(x, requires_grad=True)
    ty = tl(tx)
    gy = _gy(tuple(ty.shape), dtype)
    ty.backward(to_torch(gy))
    assert_close(layer(x), from_torch(ty), rtol=0)
    assert_rel(backward_through(layer, x, gy), from_torch(tx.grad), TORCH_TOL[dtype], "dx")
    assert list(layer.state_dict()) == []


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["pad_exclude", "ceil_pad_include", "divisor_override"])
def test_avgpool_layer_matches_torch(case, dtype):
    torch = torch_or_skip()
    shape, kw = _avg_args(case)
    x = _x(shape, dtype)
    tl = torch.nn.AvgPool2d(**kw)
    layer = nn.AvgPool2d(**kw)
    tx = to_torch(x, requires_grad=True)
    ty = tl(tx)
    gy = _gy(tuple(ty.shape), dtype)
    ty.backward(to_torch(gy))
    assert_rel(layer(x), from_torch(ty), TORCH_TOL[dtype], "y")
    assert_rel(backward_through(layer, x, gy), from_torch(tx.grad), TORCH_TOL[dtype], "dx")


def test_pool_layers_record_nothing_without_grad_and_backward_in_eval_mode():
    x = _x((1, 1, 4, 4))
    for layer in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.GlobalAvgPool2d()):
        layer.eval()
        assert layer(x).grad_fn is None  # data in, no parameters: nothing to record
        x_t = engine.tensor(x, requires_grad=True)
        with engine.no_grad():
            assert layer(x_t).grad_fn is None
        y = layer(x_t)  # eval mode: gradients still flow (saliency maps)
        y.backward(np.ones(y.shape))
        assert x_t.grad is not None and float(x_t.grad.sum()) == pytest.approx(y.numel())


def test_maxpool_stride_defaults_to_kernel_size():
    layer = nn.MaxPool2d(3)
    assert layer.stride == (3, 3)
    assert tuple(layer(_x((1, 1, 9, 7))).shape) == (1, 1, 3, 2)


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("case", STRICT_MAX)
def test_max_pool_backends(backend, case):
    shape, kw = _max_args(case)
    x = _x(shape)
    ry = ref.max_pool2d(x, **kw)
    gy = _gy(ry.shape)
    y, idx = ops.max_pool2d(backend.asarray(x), return_indices=True, **kw)
    assert_close(y, ry, rtol=0, backend=backend)
    dx = ops.max_pool2d_backward(backend.asarray(gy), idx, x.shape, **kw)
    assert_close(dx, ref.max_pool2d_backward(gy, x, **kw), rtol=1e-14, backend=backend)


@pytest.mark.parametrize("case", STRICT_AVG)
def test_avg_pool_backends(backend, case):
    shape, kw = _avg_args(case)
    x = _x(shape, "float32")
    ry = ref.avg_pool2d(x, **kw)
    gy = _gy(ry.shape, "float32")
    y = ops.avg_pool2d(backend.asarray(x), **kw)
    assert_close(y, ry.astype(np.float32), rtol=1e-6, backend=backend)
    dx = ops.avg_pool2d_backward(backend.asarray(gy), x.shape, **kw)
    assert_close(dx, ref.avg_pool2d_backward(gy, x.shape, **kw).astype(np.float32), rtol=1e-6, backend=backend)


def test_global_avg_pool_backends(backend):
    x = _x((2, 3, 4, 5))
    y = ops.global_avg_pool2d(backend.asarray(x))
    assert_close(y, x.mean(axis=(2, 3)), rtol=1e-14, backend=backend)
    dx = ops.global_avg_pool2d_backward(backend.asarray(np.ones((2, 3))), x.shape)
    assert_close(dx, np.full(x.shape, 1 / 20), rtol=1e-15, backend=backend)


# --------------------------------------------------------------------------- numpy fast paths
# (N, C, H, W, kernel, stride, dilation, padding, ceil_mode): the NumPy
# backend's separable max and its store-or-sum backward, against the generic code.
FAST_MAX_CASES = {
    "k2_tiled": (3, 2, 6, 8, 2, 2, 1, 0, False),
    "k2_floor_tails": (2, 2, 7, 9, 2, 2, 1, 0, False),
    "k3s1_overlap": (2, 2, 6, 7, 3, 1, 1, 0, False),
    "k3s2_overlap": (2, 3, 9, 9, 3, 2, 1, 0, False),
    "nonsquare": (2, 2, 7, 9, (2, 3), (1, 2), 1, 0, False),
    "dilated": (1, 2, 9, 10, (2, 3), (3, 4), (2, 1), 0, False),
    "stride_gt_kernel": (2, 2, 8, 8, 2, 3, 1, 0, False),
    "row_only": (2, 2, 5, 8, (1, 3), (1, 3), 1, 0, False),
    "column_only": (2, 2, 8, 5, (3, 1), (3, 1), 1, 0, False),
    "whole_image_int64_index": (1, 2, 17, 17, 17, 17, 1, 0, False),
    "k3s2p1_padded_overlap": (2, 3, 9, 8, 3, 2, 1, 1, False),
    "k2p1_padded_tiled": (2, 2, 7, 6, 2, 2, 1, 1, False),
    "ceil_overhang": (2, 2, 7, 7, 2, 2, 1, 0, True),
    "ceil_padded_dilated": (1, 2, 9, 10, (2, 3), 2, (2, 1), (1, 1), True),
}


@pytest.mark.parametrize("use_native", [True, False], ids=["c_kernel", "numpy_separable"])
@pytest.mark.parametrize("case", list(FAST_MAX_CASES))
def test_numpy_max_pool_fast_path_equals_generic_on_ties_and_infinities(case, use_native, monkeypatch):
    """Integer data in {-1, 0, 1} (ties in every window, including the
    [[0, 1], [1, 0]] pattern that an argmax taken column-first gets wrong) and
    +-inf: values, indices and gradients equal the generic array-API code's,
    bit for bit, with inf and NaN in the output gradient too. Both float32
    fast paths: the C kernel and NumPy's separable max."""
    from engine.backends.base import Backend
    monkeypatch.setattr(backends.get("numpy"), "use_native_kernels", use_native)
    n, c, h, w, k, s, d, p, ceil = FAST_MAX_CASES[case]
    rng = np.random.default_rng(len(case))
    x = rng.integers(-1, 2, (n, c, h, w)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.inf
    x[rng.random(x.shape) < (0.0 if p else 0.05)] = -np.inf  # padded: see the all -inf image below
    x[0, 0, :2, :2] = [[0, 1], [1, 0]]
    numpy_backend = backends.get("numpy")
    win = ops.pooling._pool_window(x.shape, k, s, p, d, ceil, "test")
    y, idx = numpy_backend.max_pool2d(x, win)
    generic = Backend.__new__(type(numpy_backend))  # the numpy backend's xp with the base class's methods
    y_ref, idx_ref = Backend.max_pool2d(generic, x, win)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    # uint8 indices on every path (the generic one's are cast), int64 for windows over 256 elements
    assert idx.dtype == (np.int64 if case.endswith("int64_index") else np.uint8)
    if p:  # a padded window whose only input value is -inf: the padding must not win
        x_inf = np.full((1, 1, h, w), -np.inf, dtype=np.float32)
        win1 = ops.pooling._pool_window(x_inf.shape, k, s, p, d, ceil, "test")
        y1, idx1 = numpy_backend.max_pool2d(x_inf, win1)
        np.testing.assert_array_equal(idx1, Backend.max_pool2d(generic, x_inf, win1)[1])

    g = rng.standard_normal(y.shape).astype(np.float32)
    g.flat[:3] = [np.inf, -np.inf, np.nan]
    with np.errstate(invalid="ignore"):  # inf + -inf where overlapping windows share a pixel
        dx = numpy_backend.max_pool2d_backward(g, idx, x.shape, win)
        dx_ref = Backend.max_pool2d_backward(generic, g, idx_ref, x.shape, win)
    overlap = win.sh < win.dh * (win.kh - 1) + 1 or win.sw < win.dw * (win.kw - 1) + 1
    if overlap and numpy_backend.use_native_kernels and native.library() is not None:
        # The C kernel sums a pixel's shares window by window (PyTorch's order, bit for bit:
        # test_native_cpu.py); the generic code offset by offset. Same special values.
        np.testing.assert_array_equal(np.isnan(dx), np.isnan(dx_ref))
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(dx, dx_ref)  # NaN where NaN, inf where inf, zeros elsewhere


def test_numpy_max_pool_with_nan_input_takes_the_generic_path():
    x = _x((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 1, 0] = np.nan
    x[0, 1, 4, 5] = np.nan
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y).sum() == 2 and np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 1, 2, 2])
    assert idx[0, 0, 0, 0] == 2 and idx[0, 1, 2, 2] == 1  # the NaN's in-window position
