"""CrossEntropyLoss and MSELoss: loop reference, PyTorch CPU, finite differences,
stability for logits in the thousands, reductions, label smoothing, backends."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import ops
from engine import nn

import reference as ref
from _helpers import FD_TOL, TORCH_TOL, assert_raises, assert_rel, from_torch, to_torch, torch_or_skip
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


# =========================================================================== PyTorch's full semantics
import reference_parity as rp  # noqa: E402

TARGET_KINDS = ["index", "index_kdim", "unbatched", "soft", "soft_kdim"]


def _ce_case(kind, dtype="float64", ignore=None, seed=0, n=5, k=4):
    """Logits and a target of ``kind``; with ``ignore``, some labels equal it."""
    r = np.random.default_rng(seed)
    shape = {"index": (n, k), "index_kdim": (n - 2, k, 3, 2), "unbatched": (k,), "soft": (n, k),
             "soft_kdim": (2, k, 2, 3)}[kind]
    logits = (r.standard_normal(shape) * 2).astype(dtype)
    if kind.startswith("soft"):
        t = r.random(shape)
        target = (t / t.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)).astype(dtype)
        return logits, target
    target_shape = () if kind == "unbatched" else (shape[0],) + shape[2:]
    target = np.asarray(r.integers(0, k, target_shape))
    if ignore is not None and target.ndim:
        flat = target.reshape(-1)
        flat[::3] = ignore
    elif ignore is not None:
        target = np.asarray(ignore)
    return logits, target


def _tensor(torch, a, requires_grad=False):
    t = torch.from_numpy(np.array(a))  # np.array keeps 0-d arrays 0-d (ascontiguousarray would not)
    return t.requires_grad_(True) if requires_grad else t


def _torch_loss(torch, fn, inputs, kwargs, grad_out, grads_for=(0,)):
    ts = [_tensor(torch, a, i in grads_for) if isinstance(a, np.ndarray) else a for i, a in enumerate(inputs)]
    loss = fn(*ts, **{k: (_tensor(torch, v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()})
    loss.backward(_tensor(torch, grad_out) if grad_out is not None else None)
    return from_torch(loss), [from_torch(ts[i].grad) for i in grads_for]


def _assert_rel_nan(got, expected, tol, what):
    """``assert_rel`` where NaN must meet NaN (e.g. a mean over only ignored labels)."""
    got, expected = np.asarray(engine.to_numpy(got), dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{what}: NaN positions")
    assert_rel(got[~nan], expected[~nan], tol, what)


def _grad_out(shape, reduction, dtype, seed=7):
    if reduction != "none":
        return None
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


CE_CASES = [(kind, ignore, weighted, smoothing, dtype)
            for kind in TARGET_KINDS
            for ignore in ([None] if kind.startswith("soft") else [None, 1, -100])
            for weighted in (False, True) for smoothing in (0.0, 0.2)
            for dtype in (("float64", "float32") if weighted and smoothing else ("float64",))]


@pytest.mark.parametrize("kind, ignore, weighted, smoothing, dtype", CE_CASES)
def test_cross_entropy_full_semantics_match_torch(kind, ignore, weighted, smoothing, dtype):
    """Class indices (2-D, K-dim, unbatched; some labels equal to ignore_index) and
    probabilities, each with and without class weights and label smoothing
    (float32 with both), every reduction."""
    torch = torch_or_skip()
    logits, target = _ce_case(kind, dtype, ignore)
    k = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    weight = np.linspace(0.5, 2.0, k).astype(dtype) if weighted else None
    ignore_index = -100 if ignore is None else ignore
    for reduction in REDUCTIONS:
        t_shape = logits.shape[:1] + logits.shape[2:] if logits.ndim > 1 else ()
        g = _grad_out(t_shape, reduction, dtype)
        kwargs = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
        grads_for = (0, 1) if kind.startswith("soft") else (0,)
        t_loss, t_grads = _torch_loss(torch, torch.nn.functional.cross_entropy, [logits, target], kwargs, g,
                                      grads_for)
        loss = ops.cross_entropy(logits, target, reduction, smoothing, weight=weight, ignore_index=ignore_index)
        assert tuple(loss.shape) == t_loss.shape and engine.to_numpy(loss).dtype == np.dtype(dtype)
        _assert_rel_nan(loss, t_loss, TORCH_TOL[dtype], f"{reduction} loss")
        out = ops.cross_entropy_backward(logits, target, reduction, smoothing, 1.0 if g is None else g,
                                         weight=weight, ignore_index=ignore_index,
                                         need_target_grad=kind.startswith("soft"))
        grads = out if isinstance(out, tuple) else (out,)
        for i, (ours, theirs) in enumerate(zip(grads, t_grads)):
            _assert_rel_nan(ours, theirs, TORCH_TOL[dtype], f"{reduction} grad {i}")
        if dtype == "float64":
            _assert_rel_nan(loss, rp.cross_entropy(logits, target, weight, ignore_index, reduction, smoothing), 1e-12,
                       f"{reduction} reference")


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_cross_entropy_full_backward_matches_finite_differences(kind):
    logits, target = _ce_case(kind, ignore=2 if kind.startswith("index") else None, seed=3)
    k = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    weight = np.linspace(0.5, 2.0, k)
    for reduction in ("mean", "sum"):
        kw = dict(weight=weight, ignore_index=-100 if kind.startswith("soft") else 2)
        num = ref.numerical_grad(
            lambda v: engine.to_numpy(ops.cross_entropy(v, target, reduction, 0.1, **kw)), logits)
        assert_rel(ops.cross_entropy_backward(logits, target, reduction, 0.1, **kw), num, FD_TOL, "d logits")
        if kind.startswith("soft"):
            num_t = ref.numerical_grad(
                lambda v: engine.to_numpy(ops.cross_entropy(logits, v, reduction, 0.1, **kw)), target)
            _, d_target = ops.cross_entropy_backward(logits, target, reduction, 0.1, need_target_grad=True, **kw)
            assert_rel(d_target, num_t, FD_TOL, "d target")


def test_cross_entropy_every_label_ignored_is_nan_for_mean_and_zero_for_sum():
    torch = torch_or_skip()
    logits, target = np.zeros((3, 4)), np.full(3, -100)
    assert np.isnan(float(ops.cross_entropy(logits, target)))
    assert float(ops.cross_entropy(logits, target, "sum")) == 0.0
    assert np.isnan(float(torch.nn.functional.cross_entropy(to_torch(logits), to_torch(target))))
    np.testing.assert_array_equal(ops.cross_entropy_backward(logits, target), np.zeros((3, 4)))


@pytest.mark.parametrize("make, exc, words", [
    (lambda l, t: ops.cross_entropy(l, t, label_smoothing=-0.1), ValueError, ["label_smoothing must be in [0, 1]",
                                                                            "-0.1"]),
    (lambda l, t: ops.cross_entropy(l, t, label_smoothing=float("nan")), ValueError, ["label_smoothing", "nan"]),
    (lambda l, t: ops.cross_entropy_backward(l, t, label_smoothing=2), ValueError, ["label_smoothing", "2"]),
    (lambda l, t: ops.cross_entropy(l, t, weight=np.ones(3)), ValueError, ["weight", "4 per-class weights"]),
    (lambda l, t: ops.cross_entropy(l, t, weight=np.ones(4, dtype=np.float32)), TypeError, ["weight dtype"]),
    (lambda l, t: ops.cross_entropy(l, t, ignore_index=1.5), TypeError, ["ignore_index must be an int"]),
    (lambda l, t: ops.cross_entropy(l, np.full((5, 4), 0.25), ignore_index=0), ValueError,
     ["ignore_index=0 applies to class-index targets only"]),
    (lambda l, t: ops.cross_entropy(l, np.full((5, 3), 0.25)), TypeError, ["class probabilities", "(5, 3)"]),
    (lambda l, t: ops.cross_entropy(l[0], t), ValueError, ["unbatched", "0-d target"]),
    (lambda l, t: ops.cross_entropy(l.reshape(5, 4, 1), t), ValueError, ["target must have shape (5, 1)"]),
    (lambda l, t: ops.cross_entropy(l, np.array([0, 1, 2, 3, 7])), ValueError, ["labels must be in [0, 3]",
                                                                             "got values in [0, 7]"]),
    (lambda l, t: ops.cross_entropy_backward(l, t, need_target_grad=True), ValueError, ["integers"]),
])
def test_cross_entropy_bad_arguments(make, exc, words):
    logits, target = _ce_case("index")
    assert_raises(exc, lambda: make(logits, target), *words)


def test_cross_entropy_ignored_labels_may_be_out_of_range():
    logits, target = _ce_case("index")
    target[0] = -100
    ours = ops.cross_entropy(logits, target)
    assert_rel(ours, rp.cross_entropy(logits, target), 1e-12, "loss")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [-100, 0])
@pytest.mark.parametrize("kind", ["index", "index_kdim", "unbatched"])
def test_nll_loss_matches_torch_and_reference(kind, ignore, weighted, dtype):
    torch = torch_or_skip()
    logits, target = _ce_case(kind, dtype, ignore if ignore >= 0 else None, seed=4)
    logp = engine.to_numpy(ops.log_softmax(logits, axis=0 if logits.ndim == 1 else 1))
    k = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    weight = np.linspace(2.0, 0.5, k).astype(dtype) if weighted else None
    for reduction in REDUCTIONS:
        g = _grad_out(target.shape, reduction, dtype)
        t_loss, (t_grad,) = _torch_loss(torch, torch.nn.functional.nll_loss, [logp, target],
                                        dict(weight=weight, ignore_index=ignore, reduction=reduction), g)
        loss = ops.nll_loss(logp, target, weight, ignore, reduction)
        _assert_rel_nan(loss, t_loss, TORCH_TOL[dtype], "loss")
        _assert_rel_nan(ops.nll_loss_backward(logp, target, weight, ignore, reduction, 1.0 if g is None else g),
                   t_grad, TORCH_TOL[dtype], "grad")
        if dtype == "float64":
            _assert_rel_nan(loss, rp.nll_loss(logp, target, weight, ignore, reduction), 1e-12, "reference")
            if reduction != "none" and not np.isnan(t_loss):
                num = ref.numerical_grad(lambda v: engine.to_numpy(ops.nll_loss(v, target, weight, ignore,
                                                                                reduction)), logp)
                _assert_rel_nan(ops.nll_loss_backward(logp, target, weight, ignore, reduction), num, FD_TOL, "fd")


# --------------------------------------------------------------------------- element-wise losses
def _pair(shape, dtype, seed=0, kind="real"):
    r = np.random.default_rng(seed)
    if kind == "prob":
        x, t = r.uniform(0.05, 0.95, shape), r.random(shape)
    elif kind == "kl":
        x, t = r.standard_normal(shape) - 1.0, np.array(r.random(shape))
        t.reshape(-1)[::4] = 0.0  # target zeros count for nothing
    else:
        x, t = r.standard_normal(shape), r.standard_normal(shape)
    return np.asarray(x, dtype=dtype), np.asarray(t, dtype=dtype)


POINTWISE = {
    # name: (our forward, our backward, torch functional, reference, kwargs, data kind)
    "l1": (ops.l1_loss, ops.l1_loss_backward, "l1_loss", rp.l1_loss, {}, "real"),
    "smooth_l1": (ops.smooth_l1_loss, ops.smooth_l1_loss_backward, "smooth_l1_loss", rp.smooth_l1_loss,
                  dict(beta=0.7), "real"),
    "smooth_l1_beta0": (ops.smooth_l1_loss, ops.smooth_l1_loss_backward, "smooth_l1_loss", rp.smooth_l1_loss,
                        dict(beta=0.0), "real"),
    "huber": (ops.huber_loss, ops.huber_loss_backward, "huber_loss", rp.huber_loss, dict(delta=0.8), "real"),
    "mse": (ops.mse_loss, ops.mse_loss_backward, "mse_loss", ref.mse, {}, "real"),
    "kl": (ops.kl_div, ops.kl_div_backward, "kl_div", rp.kl_div, {}, "kl"),
    "kl_log_target": (ops.kl_div, ops.kl_div_backward, "kl_div", rp.kl_div, dict(log_target=True), "real"),
    "bce": (ops.binary_cross_entropy, ops.binary_cross_entropy_backward, "binary_cross_entropy",
            rp.binary_cross_entropy, {}, "prob"),
    "bce_logits": (ops.binary_cross_entropy_with_logits, ops.binary_cross_entropy_with_logits_backward,
                   "binary_cross_entropy_with_logits", rp.binary_cross_entropy_with_logits, {}, "real"),
}


def _extra_reductions(name):
    return ["batchmean"] if name.startswith("kl") else []


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2), ()])
@pytest.mark.parametrize("name", list(POINTWISE))
def test_pointwise_losses_match_torch_reference_and_target_grads(name, shape, dtype):
    torch = torch_or_skip()
    forward, backward, torch_name, reference, kwargs, kind = POINTWISE[name]
    x, t = _pair(shape, dtype, kind=kind)
    if kind == "real" and name != "bce_logits":
        x.reshape(-1)[:1] = t.reshape(-1)[:1] + 0.5  # a difference at |d| = 0.5: inside beta/delta
    for reduction in REDUCTIONS + _extra_reductions(name):
        g = _grad_out(shape, reduction, dtype)
        t_loss, (t_dx, t_dt) = _torch_loss(torch, getattr(torch.nn.functional, torch_name), [x, t],
                                           dict(reduction=reduction, **kwargs), g, grads_for=(0, 1))
        loss = forward(x, t, reduction=reduction, **kwargs)
        assert tuple(loss.shape) == t_loss.shape
        assert_rel(loss, t_loss, TORCH_TOL[dtype], f"{reduction} loss")
        dx, dt = backward(x, t, reduction=reduction, grad_out=1.0 if g is None else g, need_target_grad=True,
                          **kwargs)
        assert_rel(dx, t_dx, TORCH_TOL[dtype], f"{reduction} d input")
        _assert_rel_nan(dt, t_dt, TORCH_TOL[dtype], f"{reduction} d target")  # kl: NaN where target == 0
        if dtype == "float64":
            assert_rel(loss, reference(x, t, reduction=reduction, **kwargs), 1e-12, f"{reduction} reference")


@pytest.mark.parametrize("name", list(POINTWISE))
def test_pointwise_loss_backward_matches_finite_differences(name):
    forward, backward, _, _, kwargs, kind = POINTWISE[name]
    x, t = _pair((3, 4), "float64", seed=5, kind=kind)
    for reduction in ["mean", "sum"] + _extra_reductions(name):
        num = ref.numerical_grad(lambda v: engine.to_numpy(forward(v, t, reduction=reduction, **kwargs)), x)
        dx, dt = backward(x, t, reduction=reduction, need_target_grad=True, **kwargs)
        assert_rel(dx, num, FD_TOL, f"{reduction} d input")
        if name == "kl":
            t = np.where(t == 0, 0.3, t)  # d(t log t)/dt is -inf at 0
            dx, dt = backward(x, t, reduction=reduction, need_target_grad=True, **kwargs)
        num_t = ref.numerical_grad(lambda v: engine.to_numpy(forward(x, v, reduction=reduction, **kwargs)), t)
        assert_rel(dt, num_t, FD_TOL, f"{reduction} d target")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bce_weights_and_pos_weight_match_torch(dtype):
    torch = torch_or_skip()
    r = np.random.default_rng(2)
    x, t = r.standard_normal((4, 3)).astype(dtype) * 3, r.random((4, 3)).astype(dtype)
    weight, pos_weight = r.random((4, 1)).astype(dtype) + 0.5, np.array([0.5, 2.0, 4.0], dtype=dtype)
    F = torch.nn.functional
    for reduction in REDUCTIONS:
        g = _grad_out((4, 3), reduction, dtype)
        kw = dict(weight=weight, reduction=reduction, pos_weight=pos_weight)
        t_loss, (t_dx, t_dt) = _torch_loss(torch, F.binary_cross_entropy_with_logits, [x, t], kw, g, (0, 1))
        assert_rel(ops.binary_cross_entropy_with_logits(x, t, **kw), t_loss, TORCH_TOL[dtype], "logits loss")
        dx, dt = ops.binary_cross_entropy_with_logits_backward(x, t, **kw, grad_out=1.0 if g is None else g,
                                                               need_target_grad=True)
        assert_rel(dx, t_dx, TORCH_TOL[dtype], "logits d input")
        assert_rel(dt, t_dt, TORCH_TOL[dtype], "logits d target")
        p = engine.to_numpy(ops.sigmoid(x))
        kw = dict(weight=weight, reduction=reduction)
        t_loss, (t_dp, t_dt) = _torch_loss(torch, F.binary_cross_entropy, [p, t], kw, g, (0, 1))
        assert_rel(ops.binary_cross_entropy(p, t, **kw), t_loss, TORCH_TOL[dtype], "bce loss")
        dp, dt = ops.binary_cross_entropy_backward(p, t, **kw, grad_out=1.0 if g is None else g,
                                                   need_target_grad=True)
        assert_rel(dp, t_dp, TORCH_TOL[dtype], "bce d input")
        assert_rel(dt, t_dt, TORCH_TOL[dtype], "bce d target")
        if dtype == "float64":
            assert_rel(ops.binary_cross_entropy_with_logits(x, t, weight, reduction, pos_weight),
                       rp.binary_cross_entropy_with_logits(x, t, weight, reduction, pos_weight), 1e-12, "reference")


def test_bce_clamps_log_at_minus_100_and_logits_are_stable():
    torch = torch_or_skip()
    p, t = np.array([0.0, 1.0, 0.0, 1.0, 0.5]), np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    ours = ops.binary_cross_entropy(p, t, reduction="none")
    theirs = torch.nn.functional.binary_cross_entropy(to_torch(p), to_torch(t), reduction="none")
    np.testing.assert_array_equal(ours, from_torch(theirs))
    assert_rel(ops.binary_cross_entropy_backward(p[2:], t[2:]),
               _torch_loss(torch, torch.nn.functional.binary_cross_entropy, [p[2:], t[2:]], {}, None)[1][0],
               1e-12, "grad with the epsilon floor")
    x = np.array([-1e4, 1e4, 800.0, -800.0])
    losses = engine.to_numpy(ops.binary_cross_entropy_with_logits(x, np.array([1.0, 0.0, 1.0, 0.0]), reduction="none"))
    np.testing.assert_allclose(losses, [1e4, 1e4, 0.0, 0.0], atol=1e-300)


@pytest.mark.parametrize("make, exc, words", [
    (lambda: ops.binary_cross_entropy(np.array([0.5, 1.5]), np.array([0.0, 1.0])), ValueError,
     ["binary_cross_entropy", "probabilities in [0, 1]", "1.5"]),
    (lambda: ops.binary_cross_entropy(np.array([0.5, 0.5]), np.array([0.0, 1.0, 1.0])), ValueError,
     ["input shape (2,) differs from target shape (3,)"]),
    (lambda: ops.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(2)),
     ValueError, ["pos_weight of shape (2,) does not broadcast", "(2, 3)"]),
    (lambda: ops.l1_loss(np.zeros(2), np.zeros(2, dtype=np.float32)), TypeError, ["l1_loss", "dtype"]),
    (lambda: ops.l1_loss(np.zeros(2), np.zeros(2), reduction="batchmean"), ValueError, ["reduction must be"]),
    (lambda: ops.smooth_l1_loss(np.zeros(2), np.zeros(2), beta=-1.0), ValueError, ["beta must be", ">= 0"]),
    (lambda: ops.huber_loss(np.zeros(2), np.zeros(2), delta=0.0), ValueError, ["delta must be", "> 0"]),
    (lambda: ops.kl_div(np.zeros(2), np.zeros(2), reduction="avg"), ValueError, ["'batchmean'"]),
    (lambda: ops.kl_div(np.zeros(2), np.zeros(2, dtype=np.int64)), TypeError, ["target must be a floating"]),
])
def test_pointwise_loss_bad_arguments(make, exc, words):
    assert_raises(exc, make, *words)


def test_new_losses_on_every_backend(backend):
    logits, target = _ce_case("index_kdim", ignore=1, seed=8)
    weight = np.linspace(0.5, 2.0, 4)
    got = ops.cross_entropy(backend.asarray(logits), backend.asarray(target), "mean", 0.1,
                            weight=backend.asarray(weight), ignore_index=1)
    assert_close(got, rp.cross_entropy(logits, target, weight, 1, "mean", 0.1), rtol=1e-12, backend=backend)
    grad = ops.cross_entropy_backward(backend.asarray(logits), backend.asarray(target), "mean", 0.1,
                                      weight=backend.asarray(weight), ignore_index=1)
    assert_close(grad, engine.to_numpy(ops.cross_entropy_backward(logits, target, "mean", 0.1, weight=weight,
                                                                  ignore_index=1)), rtol=1e-13, backend=backend)
    soft_logits, soft = _ce_case("soft_kdim", seed=9)
    got = ops.cross_entropy(backend.asarray(soft_logits), backend.asarray(soft), "sum", 0.2)
    assert_close(got, rp.cross_entropy(soft_logits, soft, reduction="sum", label_smoothing=0.2), rtol=1e-12,
                 backend=backend)
    for name, (forward, backward, _, reference, kwargs, kind) in POINTWISE.items():
        x, t = _pair((3, 2), "float64", kind=kind)
        assert_close(forward(backend.asarray(x), backend.asarray(t), reduction="sum", **kwargs),
                     reference(x, t, reduction="sum", **kwargs), rtol=1e-12, backend=backend, err_msg=name)
        want = engine.to_numpy(backward(x, t, reduction="mean", **kwargs))
        assert_close(backward(backend.asarray(x), backend.asarray(t), reduction="mean", **kwargs), want,
                     rtol=1e-13, backend=backend, err_msg=name)
