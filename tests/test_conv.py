"""conv2d: naive-loop reference, PyTorch CPU forward/backward, finite differences,
all three methods, every geometry knob, non-contiguous inputs, backends."""
from __future__ import annotations

import numpy as np
import pytest

from engine import backends
import engine
from engine import ops
from engine import nn

import reference as ref
from _helpers import (FD_TOL, REF_TOL, TORCH_TOL, assert_rel, forward_backward, from_torch, to_torch,
                      torch_or_skip)
from conftest import assert_close

METHODS = ["gemm", "strided", "naive"]

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

# (N, C, H, W, O, kernel, stride, padding, dilation, groups)
CASES = {
    "basic": (2, 3, 7, 7, 4, 3, 1, 0, 1, 1),
    "stride2_pad1": (2, 3, 8, 7, 4, 3, 2, 1, 1, 1),
    "nonsquare_tuple": (1, 2, 6, 9, 3, (2, 3), (2, 1), (1, 0), 1, 1),
    "dilation2": (2, 2, 9, 8, 3, 3, 1, 2, 2, 1),
    "dilation_tuple": (1, 2, 8, 10, 2, (3, 2), (1, 2), (0, 1), (1, 3), 1),
    "groups2": (2, 4, 6, 6, 6, 3, 1, 1, 1, 2),
    "depthwise": (1, 3, 5, 6, 3, 3, 1, 1, 1, 3),
    "groups_stride_dil": (1, 4, 9, 8, 4, (3, 2), 2, (2, 1), (2, 1), 2),
    "same_odd": (2, 2, 6, 5, 3, 3, 1, "same", 1, 1),
    "same_even": (1, 2, 6, 7, 2, (2, 4), 1, "same", 1, 1),
    "same_even_dilated": (1, 2, 7, 6, 2, 4, 1, "same", 2, 1),
    "same_groups": (1, 4, 5, 5, 2, 2, 1, "same", 1, 2),
    "valid": (2, 2, 6, 6, 2, (3, 2), 1, "valid", 1, 1),
    "pointwise": (2, 4, 4, 5, 6, 1, 1, 0, 1, 1),
    "pointwise_groups": (2, 4, 3, 3, 2, 1, 1, 0, 1, 2),
    "pointwise_stride2": (1, 3, 5, 6, 2, 1, 2, 0, 1, 1),
    "kernel_equals_input": (2, 2, 5, 4, 3, (5, 4), 1, 0, 1, 1),
    "stride_gt_kernel": (1, 2, 8, 8, 2, 2, 3, 1, 1, 1),
    "batch1_odd": (1, 1, 5, 3, 1, (3, 1), 1, (1, 0), 1, 1),
    "pad_only_w": (1, 1, 3, 3, 2, 3, (1, 2), (0, 2), 1, 1),
}
# Small enough for finite differences on every method.
FD_CASES = ["basic", "stride2_pad1", "nonsquare_tuple", "dilation_tuple", "groups2", "same_even",
            "pointwise_groups", "batch1_odd"]
# array_api_strict is slow: a representative subset.
STRICT_CASES = ["stride2_pad1", "nonsquare_tuple", "dilation_tuple", "groups_stride_dil", "same_even",
                "pointwise_groups"]


def _data(case, dtype="float64", seed=0):
    n, c, h, w, o, k, s, p, d, g = CASES[case]
    kh, kw = (k, k) if isinstance(k, int) else k
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, h, w))
    wt = r.standard_normal((o, c // g, kh, kw)) / np.sqrt(c // g * kh * kw)
    b = r.standard_normal(o)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=g)
    pt, pb, pl, pr = ref.as_pads(p, (kh, kw), (d, d) if isinstance(d, int) else d)
    (sh, sw), (dh, dw) = ((s, s) if isinstance(s, int) else s), ((d, d) if isinstance(d, int) else d)
    gy = r.standard_normal((n, o, ref.out_size(h, kh, sh, pt, pb, dh), ref.out_size(w, kw, sw, pl, pr, dw)))
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return cast(x), cast(wt), cast(b), cast(gy), kwargs


_REF_CACHE: dict = {}


def _reference(case):
    """(y, dx, dw, db) of the float64 data of ``case`` from the loop reference, cached."""
    if case not in _REF_CACHE:
        x, wt, b, gy, kw = _data(case)
        y = ref.conv2d(x, wt, b, **kw)
        dx, dw, db = ref.conv2d_backward(gy, x, wt, **kw)
        _REF_CACHE[case] = (y, dx, dw, db)
    return _REF_CACHE[case]


def _engine(x, wt, b, gy, kwargs, method):
    y = ops.conv2d(x, wt, b, method=method, **kwargs)
    dx, dw, db = ops.conv2d_backward(gy, x, wt, method=method, **kwargs)
    return y, dx, dw, db


# --------------------------------------------------------------------------- reference (tier 1)
def test_reference_conv_agrees_with_torch_on_one_case():
    """Guard the guard: the loop reference itself equals PyTorch."""
    torch = torch_or_skip()
    x, wt, b, gy, kw = _data("groups_stride_dil")
    y = torch.nn.functional.conv2d(to_torch(x), to_torch(wt), to_torch(b), **kw)
    assert_rel(ref.conv2d(x, wt, b, **kw), from_torch(y), 1e-12, "reference vs torch")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_backward_match_loop_reference(case, method):
    x, wt, b, gy, kw = _data(case)
    y, dx, dw, db = _engine(x, wt, b, gy, kw, method)
    ry, rdx, rdw, rdb = _reference(case)
    assert_close(y, ry, rtol=REF_TOL["float64"], err_msg="y")
    assert_close(dx, rdx, rtol=REF_TOL["float64"], err_msg="dx")
    assert_close(dw, rdw, rtol=REF_TOL["float64"], err_msg="dweight")
    assert_close(db, rdb, rtol=REF_TOL["float64"], err_msg="dbias")


# --------------------------------------------------------------------------- PyTorch (tier 2)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(case, method, dtype):
    torch = torch_or_skip()
    x, wt, b, gy, kw = _data(case, dtype)
    tx, tw, tb = (to_torch(a, requires_grad=True) for a in (x, wt, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    ty.backward(to_torch(gy))
    y, dx, dw, db = _engine(x, wt, b, gy, kw, method)
    tol = TORCH_TOL[dtype]
    for name, got, want in (("y", y, ty), ("dx", dx, tx.grad), ("dweight", dw, tw.grad), ("dbias", db, tb.grad)):
        assert engine.to_numpy(got).dtype == np.dtype(dtype), f"{name} dtype"
        assert_rel(got, from_torch(want), tol, f"{name} [{dtype}, {method}]")


# --------------------------------------------------------------------------- finite differences (tier 3)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", FD_CASES)
def test_backward_matches_finite_differences(case, method):
    x, wt, b, gy, kw = _data(case)
    loss = lambda x_, w_, b_: float(np.sum(ops.conv2d(x_, w_, b_, method=method, **kw) * gy))  # noqa: E731
    _, dx, dw, db = _engine(x, wt, b, gy, kw, method)
    assert_rel(dx, ref.numerical_grad(lambda v: loss(v, wt, b), x), FD_TOL, "dx")
    assert_rel(dw, ref.numerical_grad(lambda v: loss(x, v, b), wt), FD_TOL, "dweight")
    assert_rel(db, ref.numerical_grad(lambda v: loss(x, wt, v), b), FD_TOL, "dbias")


# --------------------------------------------------------------------------- flags of the backward
@pytest.mark.parametrize("method", METHODS)
def test_backward_without_input_grad_or_bias(method):
    x, wt, b, gy, kw = _data("stride2_pad1")
    dx, dw, db = ops.conv2d_backward(gy, x, wt, method=method, need_input_grad=False, has_bias=False, **kw)
    assert dx is None and db is None
    assert_close(dw, _reference("stride2_pad1")[2], rtol=1e-12)


def test_conv_without_bias_equals_bias_zero():
    x, wt, b, gy, kw = _data("basic")
    assert_close(ops.conv2d(x, wt, None, **kw), ref.conv2d(x, wt, None, **kw), rtol=1e-12)


# --------------------------------------------------------------------------- non-contiguous inputs
NONCONTIG_GEOMETRY = {  # kernel, stride, padding, dilation
    "padded": ((3, 2), (1, 2), (1, 2), (2, 1)),
    "unpadded": ((3, 2), 2, 0, 1),  # no pad2d copy: the view itself reaches im2col / as_strided
    "pointwise": (1, 1, 0, 1),      # the 1x1 path reshapes the input directly
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("geometry", list(NONCONTIG_GEOMETRY))
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channel_sliced"])
def test_non_contiguous_inputs(layout, geometry, method, dtype):
    r = np.random.default_rng(7)
    normal = lambda shape: r.standard_normal(shape).astype(dtype)  # noqa: E731  (cast first: astype copies)
    if layout == "transposed":  # (N, C, W, H) buffer seen as (N, C, H, W)
        x = normal((2, 3, 6, 7)).transpose(0, 1, 3, 2)
    elif layout == "sliced":  # every other row and column
        x = normal((2, 3, 14, 12))[:, :, ::2, 1::2]
    else:  # a channel slice and a reversed batch axis: negative strides
        x = normal((3, 5, 7, 6))[::-1, 1:4]
    k, s, p, d = NONCONTIG_GEOMETRY[geometry]
    kh, kw_ = (k, k) if isinstance(k, int) else k
    wt = np.swapaxes(normal((4, 3, kw_, kh)), 2, 3)  # non-contiguous weight too
    b = normal(4)
    assert not x.flags.c_contiguous and not (wt.flags.c_contiguous and k != 1)
    kw = dict(stride=s, padding=p, dilation=d)
    y = ops.conv2d(x, wt, b, method=method, **kw)
    ry = ref.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(wt), b, **kw)
    gy = normal(ry.shape[::-1]).T  # non-contiguous upstream gradient
    assert not gy.flags.c_contiguous
    dx, dw, db = ops.conv2d_backward(gy, x, wt, method=method, **kw)
    rdx, rdw, rdb = ref.conv2d_backward(np.ascontiguousarray(gy), x, wt, **kw)
    tol = REF_TOL[dtype]
    for name, got, want in (("y", y, ry), ("dx", dx, rdx), ("dw", dw, rdw), ("db", db, rdb)):
        assert_close(got, want.astype(dtype), rtol=tol, err_msg=name)


# --------------------------------------------------------------------------- im2col batch chunks
@pytest.mark.parametrize("case", ["stride2_pad1", "groups_stride_dil", "pointwise_stride2"])
def test_gemm_batch_chunking_gives_the_same_result(case, monkeypatch):
    """A tiny workspace splits the batch into one im2col chunk per image."""
    x, wt, b, gy, kw = _data(case)
    x = np.concatenate([x, x[::-1] * 0.5, x], axis=0)[:3]
    gy = np.concatenate([gy, gy, gy], axis=0)[:3]
    whole = _engine(x, wt, b, gy, kw, "gemm")
    monkeypatch.setattr(backends.get("numpy"), "workspace_limit", 1)
    chunked = _engine(x, wt, b, gy, kw, "gemm")
    for name, a, c in zip(("y", "dx", "dw", "db"), whole, chunked):
        assert_close(c, engine.to_numpy(a), rtol=1e-13, err_msg=name)


# --------------------------------------------------------------------------- kept im2col columns
@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("case", ["stride2_pad1", "groups_stride_dil", "same_even_dilated", "batch1_odd"])
def test_backward_with_the_forwards_columns_equals_backward_without(case, chunked, monkeypatch):
    x, wt, b, gy, kw = _data(case)
    x, gy = np.concatenate([x, -x, x]), np.concatenate([gy, gy, -gy])  # 3+ images: several chunks
    if chunked:
        monkeypatch.setattr(backends.get("numpy"), "workspace_limit", 1)  # one image a chunk
    y, columns = ops.conv2d(x, wt, b, keep_columns=True, **kw)
    assert columns is not None and len(columns.parts) == (x.shape[0] if chunked else 1)
    np.testing.assert_array_equal(y, ops.conv2d(x, wt, b, **kw))
    with_columns = ops.conv2d_backward(gy, x, wt, columns=columns, **kw)
    for name, got, want in zip(("dx", "dw", "db"), with_columns, ops.conv2d_backward(gy, x, wt, **kw)):
        np.testing.assert_array_equal(got, want, err_msg=name)  # the same columns: bit for bit


def test_columns_are_kept_only_under_the_limit_and_never_for_pointwise(monkeypatch):
    x, wt, b, _, kw = _data("basic")
    numpy_backend = backends.get("numpy")
    col_bytes = 3 * 3 * 3 * 5 * 5 * 2 * 8  # C*kh*kw * N*OH*OW float64
    monkeypatch.setattr(numpy_backend, "keep_columns_bytes", col_bytes)
    assert ops.conv2d(x, wt, b, keep_columns=True, **kw)[1] is not None
    monkeypatch.setattr(numpy_backend, "keep_columns_bytes", col_bytes - 1)
    assert ops.conv2d(x, wt, b, keep_columns=True, **kw)[1] is None
    xp, wp, bp, _, kwp = _data("pointwise")
    assert ops.conv2d(xp, wp, bp, keep_columns=True, **kwp)[1] is None  # 1x1: no im2col at all
    assert ops.conv2d(x, wt, b, keep_columns=True, method="naive", **kw)[1] is None


def test_columns_of_another_input_or_of_another_kind_are_refused():
    x, wt, b, gy, kw = _data("basic")
    _, columns = ops.conv2d(x, wt, b, keep_columns=True, **kw)
    with pytest.raises(ValueError, match=r"conv2d backward: columns were built for input \(2, 3, 7, 7\)"):
        ops.conv2d_backward(gy[:1], x[:1], wt, columns=columns, **kw)
    with pytest.raises(TypeError, match=r"columns must come from conv2d\(\.\.\., keep_columns=True\), got ndarray"):
        ops.conv2d_backward(gy, x, wt, columns=np.zeros(3), **kw)


def test_conv2d_node_keeps_columns_only_while_recording_and_frees_them_in_backward(monkeypatch):
    monkeypatch.setattr(backends.get("numpy"), "use_native_kernels", False)  # the C path builds no columns
    engine.manual_seed(0)
    layer = nn.Conv2d(3, 4, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = layer(x)
    node = y.grad_fn
    assert node.saved[2] is not None  # the im2col columns, for the weight gradient
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert node.saved is None  # freed by the backward
    dw = engine.to_numpy(layer.weight.grad).copy()
    with engine.no_grad():
        y2 = layer(x)
    assert y2.grad_fn is None and np.array_equal(engine.to_numpy(y2), engine.to_numpy(y.detach()))
    layer.zero_grad()
    layer.eval()  # eval mode still records: gradients work in both modes
    layer(x).backward(np.ones(y.shape, dtype=np.float32))
    np.testing.assert_array_equal(engine.to_numpy(layer.weight.grad), dw)
    layer.requires_grad_(False)  # frozen: nothing to record for data input
    assert layer(x).grad_fn is None
    x_t = engine.tensor(x, requires_grad=True)
    y3 = layer(x_t)
    assert y3.grad_fn.saved[2] is None  # a frozen weight needs no columns: only dx is computed


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("case", STRICT_CASES)
def test_backends_match_reference(backend, case):
    x, wt, b, gy, kw = _data(case)
    ry, rdx, rdw, rdb = _reference(case)
    xb, wb, bb, gb = (backend.asarray(a) for a in (x, wt, b, gy))
    for method in ("gemm", "naive") if backend.name == "array_api_strict" else METHODS:
        y, dx, dw, db = _engine(xb, wb, bb, gb, kw, method)
        for name, got, want in (("y", y, ry), ("dx", dx, rdx), ("dw", dw, rdw), ("db", db, rdb)):
            assert_close(got, want, rtol=1e-12, backend=backend, err_msg=f"{name} {method}")


def test_backends_float32(backend):
    x, wt, b, gy, kw = _data("groups_stride_dil", "float32")
    y, dx, dw, db = _engine(*(backend.asarray(a) for a in (x, wt, b, gy)), kw, "gemm")
    ry, rdx, rdw, rdb = _reference("groups_stride_dil")
    for name, got, want in (("y", y, ry), ("dx", dx, rdx), ("dw", dw, rdw), ("db", db, rdb)):
        assert_close(got, want.astype(np.float32), rtol=1e-5, backend=backend, err_msg=name)


def test_strided_method_availability(backend):
    """``strided`` needs as_strided: numpy/cupy run it, array_api_strict says why it cannot."""
    x, wt, b, gy, kw = (backend.asarray(a) if not isinstance(a, dict) else a for a in _data("basic"))
    if backend.name == "array_api_strict":
        with pytest.raises(NotImplementedError, match=r"array_api_strict.*as_strided.*method='gemm'"):
            ops.conv2d(x, wt, b, method="strided", **kw)
        with pytest.raises(NotImplementedError, match=r"array_api_strict.*as_strided"):
            ops.conv2d_backward(gy, x, wt, method="strided", **kw)
        layer = nn.Conv2d(3, 4, 3, method="strided", dtype="float64")
        with pytest.raises(NotImplementedError, match="as_strided"):
            layer(x)
    else:
        y = ops.conv2d(x, wt, b, method="strided", **kw)
        assert_close(y, _reference("basic")[0], rtol=1e-12, backend=backend)


# --------------------------------------------------------------------------- output size
@pytest.mark.parametrize("size,kernel,stride,padding,dilation,expected", [
    (28, 5, 2, 2, 1, 14),   # course example: 28x28, k5 s2 p2 -> 14x14
    (64, 5, 4, 4, 1, 17),   # course example, first layer
    (17, 3, 1, 2, 1, 19),   # course example, second layer
    (7, 3, 1, 0, 1, 5),
    (7, 3, 2, 1, 1, 4),
    (8, 3, 2, 1, 1, 4),
    (9, 3, 1, 2, 2, 9),
    (10, 2, 3, 1, 3, 3),
    (5, 5, 1, 0, 1, 1),
    (4, 5, 1, 0, 1, 0),     # kernel larger than input: no window
    (6, 4, 1, (1, 2), 1, 6),  # asymmetric ("same" for an even kernel)
])
def test_conv_output_size_formula(size, kernel, stride, padding, dilation, expected):
    assert ops.conv_output_size(size, kernel, stride, padding, dilation) == expected
    before, after = (padding, padding) if isinstance(padding, int) else padding
    assert ref.out_size(size, kernel, stride, before, after, dilation) == expected


def test_conv_output_size_matches_the_closed_form_everywhere():
    for size in range(1, 12):
        for k in range(1, 6):
            for s in range(1, 4):
                for p in range(0, 3):
                    for d in range(1, 3):
                        span = size + 2 * p - d * (k - 1) - 1
                        want = span // s + 1 if span >= 0 else 0
                        assert ops.conv_output_size(size, k, s, p, d) == want, (size, k, s, p, d)
                        assert ref.out_size(size, k, s, p, p, d) == want


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_conv_output_size_ceil_mode_matches_pytorch_pooling_rule(ceil_mode):
    for size in range(2, 12):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    if k > size + 2 * p:
                        continue  # no window fits: an error, tested in test_errors.py
                    want = ref.pool_out_size(size, k, s, p, 1, ceil_mode)
                    assert ops.conv_output_size(size, k, s, p, 1, ceil_mode) == want, (size, k, s, p)


def test_layer_output_shapes_course_examples():
    x = engine.asarray(np.zeros((1, 1, 28, 28)), dtype="float32")
    assert tuple(nn.Conv2d(1, 1, 5, stride=2, padding=2)(x).shape) == (1, 1, 14, 14)
    model = nn.Sequential(nn.Conv2d(2, 4, 5, stride=4, padding=4), nn.Conv2d(4, 8, 3, stride=1, padding=2))
    y = model(engine.asarray(np.random.default_rng(0).standard_normal((12, 2, 64, 64)), dtype="float32"))
    assert tuple(y.shape) == (12, 8, 19, 19)
    assert tuple(model[0](engine.asarray(np.zeros((12, 2, 64, 64)), dtype="float32")).shape) == (12, 4, 17, 17)


@pytest.mark.parametrize("case", list(CASES))
def test_layer_output_shape_equals_formula(case):
    n, c, h, w, o, k, s, p, d, g = CASES[case]
    layer = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g, dtype="float64")
    y = layer(engine.asarray(np.zeros((n, c, h, w))))
    kh, kw = (k, k) if isinstance(k, int) else k
    pt, pb, pl, pr = ref.as_pads(p, (kh, kw), (d, d) if isinstance(d, int) else d)
    sh, sw = (s, s) if isinstance(s, int) else s
    dh, dw = (d, d) if isinstance(d, int) else d
    assert tuple(y.shape) == (n, o, ops.conv_output_size(h, kh, sh, (pt, pb), dh),
                              ops.conv_output_size(w, kw, sw, (pl, pr), dw))
    if p == "same":
        assert tuple(y.shape[2:]) == (h, w)


# --------------------------------------------------------------------------- the Conv2d layer
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", ["stride2_pad1", "groups_stride_dil", "same_even", "pointwise"])
def test_conv2d_layer_matches_torch_layer(case, method, dtype):
    torch = torch_or_skip()
    n, c, h, w, o, k, s, p, d, g = CASES[case]
    tdtype = getattr(torch, dtype)
    torch.manual_seed(0)
    tl = torch.nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g).to(tdtype)
    layer = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g, method=method, dtype=dtype)
    assert list(layer.state_dict()) == list(tl.state_dict())
    layer.load_state_dict(tl.state_dict())
    x = np.random.default_rng(1).standard_normal((n, c, h, w)).astype(dtype)
    tx = to_torch(x, requires_grad=True)
    ty = tl(tx)
    gy = np.random.default_rng(2).standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(to_torch(gy))
    y, dx = forward_backward(layer, x, gy)
    tol = TORCH_TOL[dtype]
    assert_rel(y, from_torch(ty), tol, "y")
    assert_rel(dx, from_torch(tx.grad), tol, "dx")
    assert_rel(layer.weight.grad, from_torch(tl.weight.grad), tol, "weight.grad")
    assert_rel(layer.bias.grad, from_torch(tl.bias.grad), tol, "bias.grad")


def test_conv2d_layer_gradients_accumulate_and_reset():
    x, wt, b, gy, kw = _data("stride2_pad1")
    layer = nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype="float64")
    layer.load_state_dict({"weight": wt, "bias": b})
    layer(x).backward(gy)
    layer(x).backward(gy)
    _, _, rdw, rdb = _reference("stride2_pad1")
    assert_close(layer.weight.grad, 2 * rdw, rtol=1e-12)
    assert_close(layer.bias.grad, 2 * rdb, rtol=1e-12)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_conv2d_layer_without_bias_and_without_input_grad():
    x, wt, _, gy, kw = _data("stride2_pad1")
    layer = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False, dtype="float64")
    assert list(layer.state_dict()) == ["weight"]
    layer.load_state_dict({"weight": wt})
    y = layer(x)
    assert_close(y, ref.conv2d(x, wt, None, **kw), rtol=1e-12)
    y.backward(gy)  # the input is data: no dx is computed, only the weight gradient
    assert_close(layer.weight.grad, _reference("stride2_pad1")[2], rtol=1e-12)


def test_conv2d_layer_weight_shape_and_init_scale():
    engine.manual_seed(0)
    layer = nn.Conv2d(8, 16, (3, 5), groups=2)
    assert layer.weight.shape == (16, 4, 3, 5) and layer.bias.shape == (16,)
    assert layer.weight.dtype == np.float32
    w = engine.to_numpy(layer.weight.data)
    bound = 1 / np.sqrt(4 * 3 * 5)  # PyTorch's default, fan_in = C/groups * kh * kw
    assert np.abs(w).max() <= bound and abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.15
    assert np.abs(engine.to_numpy(layer.bias.data)).max() <= bound
