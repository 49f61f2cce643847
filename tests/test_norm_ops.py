"""ops.layer_norm / ops.group_norm (and batch_norm on an empty batch): loop
references, PyTorch CPU forward and backward, finite differences, backends."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import ops

import reference as ref
import reference_parity as rp
from _helpers import FD_TOL, TORCH_TOL, assert_raises, assert_rel, from_torch, to_torch, torch_or_skip
from conftest import assert_close

LAYER_CASES = [((4, 6), (6,)), ((2, 3, 5), (5,)), ((2, 3, 4), (3, 4)), ((3, 2, 2, 3), (2, 2, 3)), ((5,), (5,))]
GROUP_CASES = [((3, 6), 2), ((2, 6, 5), 2), ((2, 4, 3, 3), 4), ((1, 6, 2, 2), 1), ((2, 4, 2, 3, 2), 2)]


def _data(shape, affine_shape, dtype, seed=0, affine=True, bias=True):
    r = np.random.default_rng(seed)
    x = (r.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = (r.standard_normal(affine_shape) + 1.0).astype(dtype) if affine else None
    b = r.standard_normal(affine_shape).astype(dtype) if affine and bias else None
    g = r.standard_normal(shape).astype(dtype)
    return x, w, b, g


def _torch_grads(torch, fn, x, w, b, g):
    tx = to_torch(x, requires_grad=True)
    tw = None if w is None else to_torch(w, requires_grad=True)
    tb = None if b is None else to_torch(b, requires_grad=True)
    y = fn(tx, tw, tb)
    y.backward(to_torch(g))
    return from_torch(y), from_torch(tx.grad), None if w is None else from_torch(tw.grad), \
        None if b is None else from_torch(tb.grad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("affine", ["none", "weight", "both"])
@pytest.mark.parametrize("shape, normalized", LAYER_CASES)
def test_layer_norm_matches_torch_and_reference(shape, normalized, affine, dtype):
    torch = torch_or_skip()
    x, w, b, g = _data(shape, normalized, dtype, affine=affine != "none", bias=affine == "both")
    eps = 1e-3
    ty, tdx, tdw, tdb = _torch_grads(
        torch, lambda a, c, d: torch.nn.functional.layer_norm(a, normalized, c, d, eps), x, w, b, g)
    y, mean, rstd = ops.layer_norm(x, normalized, w, b, eps, return_stats=True)
    assert engine.to_numpy(y).dtype == np.dtype(dtype)
    assert tuple(mean.shape) == shape[:len(shape) - len(normalized)] + (1,) * len(normalized)
    assert_rel(y, ty, TORCH_TOL[dtype], "y")
    dx, dw, db = ops.layer_norm_backward(g, x, normalized, mean, rstd, w)
    assert_rel(dx, tdx, TORCH_TOL[dtype] * 10, "dx")
    if w is not None:
        assert_rel(dw, tdw, TORCH_TOL[dtype], "dweight")
    else:
        assert dw is None
    if b is not None:
        assert_rel(db, tdb, TORCH_TOL[dtype], "dbias")
    if dtype == "float64":
        assert_rel(y, rp.layer_norm(x, normalized, w, b, eps), 1e-12, "reference")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape, groups", GROUP_CASES)
def test_group_norm_matches_torch_and_reference(shape, groups, affine, dtype):
    torch = torch_or_skip()
    x, w, b, g = _data(shape, (shape[1],), dtype, seed=1, affine=affine)
    ty, tdx, tdw, tdb = _torch_grads(
        torch, lambda a, c, d: torch.nn.functional.group_norm(a, groups, c, d, 1e-4), x, w, b, g)
    y, mean, rstd = ops.group_norm(x, groups, w, b, 1e-4, return_stats=True)
    assert tuple(mean.shape) == tuple(rstd.shape) == (shape[0], groups)
    assert_rel(y, ty, TORCH_TOL[dtype], "y")
    dx, dw, db = ops.group_norm_backward(g, x, groups, mean, rstd, w)
    assert_rel(dx, tdx, TORCH_TOL[dtype] * 10, "dx")
    if affine:
        assert_rel(dw, tdw, TORCH_TOL[dtype], "dweight")
        assert_rel(db, tdb, TORCH_TOL[dtype], "dbias")
    if dtype == "float64":
        assert_rel(y, rp.group_norm(x, groups, w, b, 1e-4), 1e-12, "reference")


@pytest.mark.parametrize("which", ["layer", "group"])
def test_norm_backward_matches_finite_differences(which):
    if which == "layer":
        x, w, b, g = _data((3, 2, 4), (2, 4), "float64", seed=2)
        def run(x_, w_, b_):
            return ops.layer_norm(x_, (2, 4), w_, b_, 1e-5, return_stats=True)
        def back(stats):
            return ops.layer_norm_backward(g, x, (2, 4), stats[1], stats[2], w)
    else:
        x, w, b, g = _data((2, 6, 3), (6,), "float64", seed=3)
        def run(x_, w_, b_):
            return ops.group_norm(x_, 3, w_, b_, 1e-5, return_stats=True)
        def back(stats):
            return ops.group_norm_backward(g, x, 3, stats[1], stats[2], w)
    dx, dw, db = back(run(x, w, b))
    loss = lambda x_, w_, b_: float(np.sum(engine.to_numpy(run(x_, w_, b_)[0]) * g))  # noqa: E731
    assert_rel(dx, ref.numerical_grad(lambda v: loss(v, w, b), x), FD_TOL, "dx")
    assert_rel(dw, ref.numerical_grad(lambda v: loss(x, v, b), w), FD_TOL, "dweight")
    assert_rel(db, ref.numerical_grad(lambda v: loss(x, w, v), b), FD_TOL, "dbias")


def test_batch_norm_on_an_empty_batch_in_training_matches_torch():
    torch = torch_or_skip()
    for shape in [(0, 3), (0, 3, 4, 4)]:
        x = np.zeros(shape)
        rm, rv = np.full(3, 0.5), np.full(3, 2.0)
        w, b = np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3])
        trm, trv = to_torch(rm.copy()), to_torch(rv.copy())
        tx, tw, tb = to_torch(x, True), to_torch(w, True), to_torch(b, True)
        ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=True)
        ty.sum().backward()
        y, mean, invstd = ops.batch_norm(x, rm, rv, w, b, training=True, return_stats=True)
        assert tuple(y.shape) == tuple(ty.shape) == shape
        np.testing.assert_array_equal(rm, from_torch(trm))  # running statistics untouched
        np.testing.assert_array_equal(rv, from_torch(trv))
        dx, dw, db = ops.batch_norm_backward(np.ones(shape), x, mean, invstd, w, training=True)
        assert tuple(dx.shape) == shape
        np.testing.assert_array_equal(dw, from_torch(tw.grad))
        np.testing.assert_array_equal(db, from_torch(tb.grad))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ops.batch_norm(np.zeros((1, 3)), training=True)


@pytest.mark.parametrize("make, exc, words", [
    (lambda: ops.layer_norm(np.zeros((2, 3)), (4,)), ValueError, ["layer_norm", "(2, 3)", "end with", "(4,)"]),
    (lambda: ops.layer_norm(np.zeros((2, 3)), "3"), TypeError, ["normalized_shape must be an int"]),
    (lambda: ops.layer_norm(np.zeros((2, 3)), 3, np.ones(2)), ValueError, ["weight must have shape (3,)"]),
    (lambda: ops.layer_norm(np.zeros((2, 3)), 3, np.ones(3, dtype=np.float32)), TypeError, ["weight dtype"]),
    (lambda: ops.layer_norm(np.zeros((2, 3)), 3, eps=-1.0), ValueError, ["eps must be"]),
    (lambda: ops.layer_norm(np.zeros((2, 3), dtype=np.int64), 3), TypeError, ["floating-point"]),
    (lambda: ops.group_norm(np.zeros((2, 6)), 4), ValueError, ["6 channels", "divisible by num_groups=4"]),
    (lambda: ops.group_norm(np.zeros((2, 6)), 0), ValueError, ["num_groups must be a positive int"]),
    (lambda: ops.group_norm(np.zeros(6), 2), ValueError, ["at least 2 dimensions"]),
    (lambda: ops.group_norm(np.zeros((2, 6)), 2, bias=np.ones(4)), ValueError, ["bias must have shape (6,)"]),
    (lambda: ops.group_norm_backward(np.zeros((2, 6)), np.zeros((2, 6)), 2, np.zeros(2), np.zeros(2)),
     ValueError, ["mean and rstd must have shape (2, 2)"]),
])
def test_norm_bad_arguments(make, exc, words):
    assert_raises(exc, make, *words)


def test_norms_on_every_backend(backend):
    x, w, b, g = _data((2, 4, 3), (3,), "float64", seed=4)
    y, mean, rstd = ops.layer_norm(backend.asarray(x), 3, backend.asarray(w), backend.asarray(b),
                                   return_stats=True)
    assert_close(y, rp.layer_norm(x, (3,), w, b), rtol=1e-12, backend=backend)
    want = ops.layer_norm_backward(g, x, 3, *ops.layer_norm(x, 3, w, b, return_stats=True)[1:], w)
    got = ops.layer_norm_backward(backend.asarray(g), backend.asarray(x), 3, mean, rstd, backend.asarray(w))
    for a, e in zip(got, want):
        assert_close(a, engine.to_numpy(e), rtol=1e-13, backend=backend)
    wc, bc = w[:1].repeat(4) + np.arange(4), b[:1].repeat(4)
    y, mean, rstd = ops.group_norm(backend.asarray(x), 2, backend.asarray(wc), backend.asarray(bc),
                                   return_stats=True)
    assert_close(y, rp.group_norm(x, 2, wc, bc), rtol=1e-12, backend=backend)
    want = ops.group_norm_backward(g, x, 2, *ops.group_norm(x, 2, wc, bc, return_stats=True)[1:], wc)
    got = ops.group_norm_backward(backend.asarray(g), backend.asarray(x), 2, mean, rstd, backend.asarray(wc))
    for a, e in zip(got, want):
        assert_close(a, engine.to_numpy(e), rtol=1e-13, backend=backend)
