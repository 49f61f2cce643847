"""CrossEntropyLoss and MSELoss: loop reference, PyTorch CPU, finite differences,
stability for logits in the thousands, reductions, label smoothing, backends."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import ops
from engine import nn

import reference as ref
from _helpers import FD_TOL, TORCH_TOL, assert_rel, from_torch, to_torch, torch_or_skip
from conftest import assert_close

REDUCTIONS = ["mean", "sum", "none"]


def _logits(n=5, k=4, scale=2.0, dtype="float64", seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal((n, k)) * scale).astype(dtype), r.integers(0, k, n)


def _loss_and_grad(crit, input, target, grad_out=None):
    """``crit(input, target)`` on a leaf Tensor, then ``backward(grad_out)``:
    ``(loss Tensor, gradient for input)``."""
    x = engine.Tensor(engine.asarray(input) if isinstance(input, np.ndarray) else input, requires_grad=True)
    loss = crit(x, engine.asarray(target) if isinstance(target, np.ndarray) else target)
    loss.backward(grad_out)
    return loss, x.grad


def _torch_ce(torch, logits, target, reduction, smoothing, grad_out):
    tx = to_torch(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(tx, to_torch(target), reduction=reduction,
                                             label_smoothing=smoothing)
    loss.backward(to_torch(grad_out) if reduction == "none" else None)
    return from_torch(loss), from_torch(tx.grad)


# --------------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_loop_reference(reduction, smoothing):
    logits, target = _logits()
    loss = ops.cross_entropy(logits, target, reduction, smoothing)
    assert_close(loss, ref.cross_entropy(logits, target, reduction, smoothing), rtol=1e-12)
    grad = ops.cross_entropy_backward(logits, target, reduction, smoothing,
                                    grad_out=np.ones(5) if reduction == "none" else 1.0)
    assert_close(grad, ref.cross_entropy_grad(logits, target, "sum" if reduction == "none" else reduction,
                                              smoothing), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_loss_matches_torch(reduction, smoothing, dtype):
    torch = torch_or_skip()
    logits, target = _logits(dtype=dtype)
    grad_out = np.random.default_rng(3).standard_normal(5).astype(dtype)
    t_loss, t_grad = _torch_ce(torch, logits, target, reduction, smoothing, grad_out)
    crit = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    loss, grad = _loss_and_grad(crit, logits, target, grad_out if reduction == "none" else None)
    assert engine.to_numpy(loss.detach()).dtype == np.dtype(dtype)
    assert tuple(loss.shape) == t_loss.shape
    assert_rel(loss.detach(), t_loss, TORCH_TOL[dtype], "loss")
    assert_rel(grad, t_grad, TORCH_TOL[dtype], "grad")


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_backward_matches_finite_differences(reduction, smoothing):
    logits, target = _logits(n=3, k=5)
    num = ref.numerical_grad(lambda v: engine.to_numpy(ops.cross_entropy(v, target, reduction, smoothing)), logits)
    assert_rel(ops.cross_entropy_backward(logits, target, reduction, smoothing), num, FD_TOL, "grad")


def test_cross_entropy_none_backward_with_weights_matches_finite_differences():
    logits, target = _logits(n=4, k=3)
    w = np.array([0.5, -1.0, 2.0, 0.0])
    num = ref.numerical_grad(lambda v: np.sum(engine.to_numpy(ops.cross_entropy(v, target, "none")) * w), logits)
    _, grad = _loss_and_grad(nn.CrossEntropyLoss(reduction="none"), logits, target, w)
    assert_rel(grad, num, FD_TOL, "grad")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("scale", [1e3, 5e3, 3e4])
def test_cross_entropy_stable_for_logits_in_the_thousands(scale, dtype):
    torch = torch_or_skip()
    logits, target = _logits(n=6, k=5, scale=scale, dtype=dtype)
    logits[0, :] = scale  # a row of equal huge logits
    logits[1, target[1]] = -scale  # the true class hugely wrong
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = _loss_and_grad(nn.CrossEntropyLoss(label_smoothing=0.1), logits, target)
        loss, grad = engine.to_numpy(loss.detach()), engine.to_numpy(grad)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    t_loss, t_grad = _torch_ce(torch, logits, target, "mean", 0.1, None)
    assert_rel(loss, t_loss, TORCH_TOL[dtype], "loss")
    assert_rel(grad, t_grad, TORCH_TOL[dtype], "grad")
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)  # softmax minus a distribution


def test_cross_entropy_batch_of_one_and_int32_labels():
    torch = torch_or_skip()
    logits = np.array([[0.2, -1.0, 3.0]])
    for target in (np.array([2]), np.array([0], dtype=np.int32)):
        loss = ops.cross_entropy(logits, target)
        t_loss, t_grad = _torch_ce(torch, logits, target.astype(np.int64), "mean", 0.0, None)
        assert_rel(loss, t_loss, 1e-14, "loss")
        assert_rel(ops.cross_entropy_backward(logits, target), t_grad, 1e-14, "grad")


def test_cross_entropy_perfect_prediction_is_zero_and_uniform_is_log_k():
    logits = np.array([[1000.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    losses = engine.to_numpy(ops.cross_entropy(logits, np.array([0, 1]), reduction="none"))
    assert losses[0] == 0.0
    assert losses[1] == pytest.approx(np.log(3.0), rel=1e-15)


def test_loss_backward_scales_with_grad_out():
    logits, target = _logits()
    crit = nn.CrossEntropyLoss()
    g1 = engine.to_numpy(_loss_and_grad(crit, logits, target)[1])
    assert_close(_loss_and_grad(crit, logits, target, np.array(2.5))[1], 2.5 * g1, rtol=1e-15)


# --------------------------------------------------------------------------- MSE
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2, 2), (1, 1)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_matches_torch_and_reference(reduction, shape, dtype):
    torch = torch_or_skip()
    r = np.random.default_rng(0)
    x, t = r.standard_normal(shape).astype(dtype), r.standard_normal(shape).astype(dtype)
    g = r.standard_normal(shape).astype(dtype)
    tx = to_torch(x, requires_grad=True)
    tl = torch.nn.functional.mse_loss(tx, to_torch(t), reduction=reduction)
    tl.backward(to_torch(g) if reduction == "none" else None)
    crit = nn.MSELoss(reduction=reduction)
    loss, grad = _loss_and_grad(crit, x, t, g if reduction == "none" else None)
    assert_rel(loss.detach(), from_torch(tl), TORCH_TOL[dtype], "loss")
    assert_rel(loss.detach(), ref.mse(x, t, reduction), TORCH_TOL[dtype], "reference")
    assert_rel(grad, from_torch(tx.grad), TORCH_TOL[dtype], "grad")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_backward_matches_finite_differences(reduction):
    r = np.random.default_rng(1)
    x, t = r.standard_normal((2, 3, 2)), r.standard_normal((2, 3, 2))
    num = ref.numerical_grad(lambda v: engine.to_numpy(ops.mse_loss(v, t, reduction)), x)
    assert_rel(ops.mse_loss_backward(x, t, reduction), num, FD_TOL, "grad")


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_on_every_backend(backend, reduction, smoothing):
    logits, target = _logits(scale=1000.0)
    crit = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    loss, grad = _loss_and_grad(crit, backend.asarray(logits), backend.asarray(target),
                                backend.asarray(np.ones(5)) if reduction == "none" else None)
    assert_close(loss, ref.cross_entropy(logits, target, reduction, smoothing), rtol=1e-12, backend=backend)
    want = ref.cross_entropy_grad(logits, target, "sum" if reduction == "none" else reduction, smoothing)
    assert_close(grad, want, rtol=1e-12, backend=backend)


def test_mse_on_every_backend(backend):
    r = np.random.default_rng(0)
    x, t = r.standard_normal((3, 4)).astype(np.float32), r.standard_normal((3, 4)).astype(np.float32)
    loss, grad = _loss_and_grad(nn.MSELoss(), backend.asarray(x), backend.asarray(t))
    assert_close(loss, np.float32(ref.mse(x, t)), rtol=1e-6, backend=backend)
    assert_close(grad, (2 * (x - t) / 12).astype(np.float32), rtol=1e-6, backend=backend)
