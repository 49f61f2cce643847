"""Losses with PyTorch's semantics, forward and backward, on plain arrays.

``cross_entropy``, ``nll_loss``, ``binary_cross_entropy``,
``binary_cross_entropy_with_logits``, ``mse_loss``, ``l1_loss``,
``smooth_l1_loss``, ``huber_loss``, ``kl_div``. Every one takes
``reduction="mean" | "sum" | "none"`` (``kl_div`` also ``"batchmean"``).

Backward functions return the gradient for the input (the logits for
``cross_entropy``), scaled by ``grad_out`` (a number or 0-d array for
``mean``/``sum``; the per-element upstream gradient for ``none``). Where
PyTorch also differentiates the target, ``need_target_grad=True`` makes them
return ``(d_input, d_target)``: ``cross_entropy`` with probability targets,
``binary_cross_entropy``, ``binary_cross_entropy_with_logits``, ``mse_loss``,
``l1_loss``, ``smooth_l1_loss``, ``huber_loss`` and ``kl_div``. Class-index
targets (``cross_entropy``, ``nll_loss``) are integers and get no gradient;
``weight`` and ``pos_weight`` get none either (as in PyTorch).

Class-index losses accept PyTorch's shapes: logits ``(C,)`` with a 0-d target
(one unbatched sample), ``(N, C)`` with ``(N,)``, and ``(N, C, d1, ..., dk)``
with ``(N, d1, ..., dk)`` (per-pixel classes, as in segmentation).
"""
from __future__ import annotations

import math
import numbers

from .._checks import backend_for, require_float
from ._common import _device
from .activations import log_softmax, sigmoid, softmax

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction, where, allowed=REDUCTIONS):
    if reduction not in allowed:
        names = ", ".join(repr(r) for r in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"{where}: reduction must be {names}, got {reduction!r}")


def _check_smoothing(label_smoothing, where):
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0 <= label_smoothing <= 1:  # NaN fails the range test too
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing!r}")


def _check_index(ignore_index, where):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"{where}: ignore_index must be an int, got {type(ignore_index).__name__} "
                        f"{ignore_index!r}")


def _is_int(a) -> bool:
    return "int" in str(a.dtype)


def _class_axis_shape(ndim, size):
    """Shape that broadcasts a ``(C,)`` vector along axis 1 of an ``ndim``-D array."""
    return (1, size) + (1,) * (ndim - 2)


def _nan_like(xp, a):
    return xp.asarray(float("nan"), dtype=a.dtype, device=_device(a))


# ----------------------------------------------------------------------------- class-index targets
class _ClassTarget:
    """Logits/log-probabilities ``(N, C, *)`` (unbatched ``(C,)`` lifted to ``(1, C)``)
    with integer targets ``(N, *)``: the per-class target weights ``q`` of every
    sample (``weight[y]`` one-hot, zero where ``y == ignore_index``), the weight
    of each sample, and the denominator of ``mean``."""

    def __init__(self, backend, scores, target, weight, ignore_index, where, name="input"):
        xp = self.xp = backend.xp
        require_float(scores, where, name)
        if not _is_int(target):
            raise TypeError(f"{where}: target must hold integer class indices (or, for cross_entropy, "
                            f"probabilities of the input's shape and dtype), got dtype {target.dtype} with shape "
                            f"{tuple(target.shape)}")
        self.unbatched = scores.ndim == 1
        if scores.ndim == 0:
            raise ValueError(f"{where}: {name} must have a class axis: (C,), (N, C) or (N, C, d1, ...), got a 0-d "
                             "array")
        if self.unbatched:
            if target.ndim != 0:
                raise ValueError(f"{where}: an unbatched {name} of shape {tuple(scores.shape)} needs a 0-d target, "
                                 f"got shape {tuple(target.shape)}")
            scores, target = xp.reshape(scores, (1, -1)), xp.reshape(target, (1,))
        expected = (scores.shape[0],) + tuple(scores.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"{where}: target must have shape {expected} to match {name} {tuple(scores.shape)} "
                             f"(the class axis is 1), got {tuple(target.shape)}")
        n_classes = self.n_classes = scores.shape[1]
        _check_index(ignore_index, where)
        _check_weight(weight, scores, n_classes, where)
        self.scores = scores
        self.ignored = target == ignore_index
        self.out_of_range = ((target < 0) | (target >= n_classes)) & ~self.ignored
        if backend.host_memory and math.prod(target.shape) and bool(xp.any(self.out_of_range)):
            info = xp.iinfo(target.dtype)
            lo = int(xp.min(xp.where(self.ignored, xp.full_like(target, info.max), target)))
            hi = int(xp.max(xp.where(self.ignored, xp.full_like(target, info.min), target)))
            raise ValueError(f"{where}: labels must be in [0, {n_classes - 1}] for {n_classes} classes (or equal "
                             f"ignore_index={ignore_index}), got values in [{lo}, {hi}]")
        classes = xp.reshape(xp.arange(n_classes, dtype=target.dtype, device=_device(target)),
                             _class_axis_shape(scores.ndim, n_classes))
        hit = (xp.expand_dims(target, axis=1) == classes) & xp.expand_dims(~self.ignored, axis=1)
        one_hot = xp.astype(hit, scores.dtype)  # all zero for ignored (and out-of-range) labels
        if weight is not None:
            one_hot = one_hot * xp.reshape(weight, _class_axis_shape(scores.ndim, n_classes))
        self.q = one_hot
        self.sample_weight = xp.sum(one_hot, axis=1)  # weight[y] per sample, 0 where ignored
        self.total_weight = xp.sum(self.sample_weight)

    def restore(self, a):
        """Undo the unbatched lift on a per-sample result (or an input-shaped gradient)."""
        if not self.unbatched:
            return a
        return self.xp.reshape(a, ()) if a.ndim == 1 else self.xp.reshape(a, (-1,))

    def poison(self, losses):
        """NaN where a label is out of range (device backends, where it was not checked)."""
        return self.xp.where(self.out_of_range, _nan_like(self.xp, losses), losses)


def _check_weight(weight, scores, n_classes, where, name="weight"):
    if weight is None:
        return
    if not hasattr(weight, "shape") or tuple(weight.shape) != (n_classes,):
        raise ValueError(f"{where}: {name} must be a 1-D array of {n_classes} per-class weights, got "
                         f"{tuple(getattr(weight, 'shape', ())) if hasattr(weight, 'shape') else type(weight).__name__}")
    if weight.dtype != scores.dtype:
        raise TypeError(f"{where}: {name} dtype {weight.dtype} differs from the input's {scores.dtype}")


def _safe_divide(xp, total, denominator):
    """``total / denominator``, NaN (without a warning) where the denominator is 0."""
    zero = denominator == 0
    return xp.where(zero, _nan_like(xp, total), total / xp.where(zero, xp.ones_like(denominator), denominator))


def _reduce_classes(ct, losses, reduction, denominator):
    xp = ct.xp
    if reduction == "none":
        return ct.restore(losses)
    total = xp.sum(losses)
    return total if reduction == "sum" else _safe_divide(xp, total, denominator)


def _per_sample_grad_scale(xp, grad_out, reduction, denominator, scores, unbatched):
    """Upstream gradient per sample, shaped to broadcast along the class axis of ``scores``."""
    if reduction == "none":
        g = grad_out
        if not hasattr(g, "shape"):
            g = xp.asarray(g, dtype=scores.dtype, device=_device(scores))
        if unbatched:
            g = xp.reshape(g, (1,))
        expected = (scores.shape[0],) + tuple(scores.shape[2:])
        if tuple(g.shape) != expected:
            g = xp.broadcast_to(g, expected)
        return xp.expand_dims(g, axis=1)
    if reduction == "mean":
        return grad_out / xp.where(denominator == 0, xp.ones_like(denominator), denominator)
    return grad_out


# ----------------------------------------------------------------------------- cross-entropy
def _cross_entropy_setup(logits, target, weight, ignore_index, reduction, label_smoothing, where):
    backend = backend_for(logits, target, weight, where=where)
    check_reduction(reduction, where)
    _check_smoothing(label_smoothing, where)
    xp = backend.xp
    if hasattr(target, "dtype") and "float" in str(target.dtype):  # class probabilities
        require_float(logits, where, "logits")
        if tuple(target.shape) != tuple(logits.shape) or logits.ndim == 0:
            raise TypeError(f"{where}: target must hold integer class labels, or class probabilities of the "
                            f"logits' shape {tuple(logits.shape)}; got dtype {target.dtype} with shape "
                            f"{tuple(target.shape)}")
        if target.dtype != logits.dtype:
            raise TypeError(f"{where}: probability target dtype {target.dtype} differs from the logits' "
                            f"{logits.dtype}")
        _check_index(ignore_index, where)
        if ignore_index >= 0:
            raise ValueError(f"{where}: ignore_index={ignore_index} applies to class-index targets only, not to "
                             "probabilities (as in PyTorch)")
        unbatched = logits.ndim == 1
        scores = xp.reshape(logits, (1, -1)) if unbatched else logits
        probs = xp.reshape(target, (1, -1)) if unbatched else target
        n_classes = scores.shape[1]
        _check_weight(weight, scores, n_classes, where)
        q = probs * (1 - label_smoothing) + label_smoothing / n_classes if label_smoothing else probs
        if weight is not None:
            q = q * xp.reshape(weight, _class_axis_shape(scores.ndim, n_classes))
        samples = math.prod(scores.shape) // max(n_classes, 1) if n_classes else 0
        return xp, scores, q, None, xp.asarray(float(samples), dtype=scores.dtype, device=_device(scores)), unbatched
    ct = _ClassTarget(backend, logits, target, weight, ignore_index, where, "logits")
    q = ct.q
    if label_smoothing:
        n = ct.n_classes
        spread = (xp.ones((n,), dtype=q.dtype, device=_device(q)) if weight is None else weight) * (label_smoothing / n)
        valid = xp.expand_dims(xp.astype(~ct.ignored, q.dtype), axis=1)
        q = q * (1 - label_smoothing) + valid * xp.reshape(spread, _class_axis_shape(q.ndim, n))
    return xp, ct.scores, q, ct, ct.total_weight, ct.unbatched


def _plain_class_targets(logits, target, reduction, label_smoothing, weight, ignore_index):
    """``(xp, shifted logits)`` for the training loop's usual case, or ``None``: 2-D float logits on
    a host backend, 1-D integer labels all in ``[0, C)``, no weight, no smoothing, ``mean`` or
    ``sum``, an ``ignore_index`` no label can equal. That case needs none of the general path's
    one-hot and weight arrays (a fifth of a small model's step went there); anything else,
    errors included, goes the general way."""
    if (weight is not None or label_smoothing or reduction not in ("mean", "sum") or getattr(logits, "ndim", 0) != 2
            or getattr(target, "ndim", 0) != 1 or target.shape[0] != logits.shape[0] or logits.shape[0] == 0
            or (isinstance(ignore_index, int) and 0 <= ignore_index < logits.shape[1])):
        return None
    backend = backend_for(logits, target, where="cross_entropy")
    check_reduction(reduction, "cross_entropy")
    _check_smoothing(label_smoothing, "cross_entropy")
    _check_index(ignore_index, "cross_entropy")
    xp = backend.xp
    if not backend.host_memory or not hasattr(xp, "take_along_axis") or not _is_int(target):
        return None
    require_float(logits, "cross_entropy", "logits")
    if not bool(xp.all((target >= 0) & (target < logits.shape[1]))):
        return None  # ignore_index or a bad label: the general path counts or reports it
    return xp, logits - xp.max(logits, axis=1, keepdims=True)


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, *, weight=None, ignore_index=-100):
    """Cross-entropy of ``logits`` against class indices or class probabilities, PyTorch's rules.

    ``target`` is an integer array of class indices (``(N,)`` for ``(N, C)``
    logits, ``(N, d1, ...)`` for ``(N, C, d1, ...)``, 0-d for ``(C,)``), or a
    float array of probabilities of the logits' shape. ``weight`` ``(C,)``
    rescales each class; samples whose index equals ``ignore_index`` count for
    nothing. ``label_smoothing`` in [0, 1] mixes the target with the uniform
    distribution. ``mean`` divides by the summed weights of the counted samples
    (class indices) or by the number of samples (probabilities), as PyTorch.
    Stable for logits in the thousands (log-sum-exp).
    """
    where = "cross_entropy"
    plain = _plain_class_targets(logits, target, reduction, label_smoothing, weight, ignore_index)
    if plain is not None:  # -log_softmax at the label, summed or averaged
        xp, shifted = plain
        picked = xp.take_along_axis(shifted, xp.expand_dims(target, axis=1), axis=1)
        total = xp.sum(xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True)) - picked)
        return total if reduction == "sum" else xp.asarray(total / logits.shape[0])
    xp, scores, q, ct, denominator, unbatched = _cross_entropy_setup(
        logits, target, weight, ignore_index, reduction, label_smoothing, where)
    losses = -xp.sum(q * log_softmax(scores, axis=1), axis=1)
    if ct is None:
        if reduction == "none":
            return xp.reshape(losses, ()) if unbatched else losses
        total = xp.sum(losses)
        return total if reduction == "sum" else _safe_divide(xp, total, denominator)
    return _reduce_classes(ct, ct.poison(losses), reduction, denominator)


def cross_entropy_backward(logits, target, reduction="mean", label_smoothing=0.0, grad_out=1.0, *, weight=None,
                           ignore_index=-100, need_target_grad=False):
    """Gradient of :func:`cross_entropy` for ``logits``: ``(sum(q) * softmax - q) * scale``
    with ``q`` the (weighted, smoothed) target distribution of each sample.

    With probability targets and ``need_target_grad``, returns
    ``(d_logits, d_target)``, ``d_target = -(1 - label_smoothing) * weight * log_softmax``.
    """
    where = "cross_entropy backward"
    plain = None if need_target_grad else _plain_class_targets(logits, target, reduction, label_smoothing, weight,
                                                                 ignore_index)
    if plain is not None:  # (softmax - one_hot) * grad_out [/ N]
        xp, shifted = plain
        e = xp.exp(shifted)
        hit = xp.expand_dims(target, axis=1) == xp.arange(logits.shape[1], dtype=target.dtype, device=_device(target))
        scale = grad_out / logits.shape[0] if reduction == "mean" else grad_out
        return (e / xp.sum(e, axis=1, keepdims=True) - xp.astype(hit, logits.dtype)) * scale
    xp, scores, q, ct, denominator, unbatched = _cross_entropy_setup(
        logits, target, weight, ignore_index, reduction, label_smoothing, where)
    scale = _per_sample_grad_scale(xp, grad_out, reduction, denominator, scores, unbatched)
    grad = (softmax(scores, axis=1) * xp.sum(q, axis=1, keepdims=True) - q) * scale
    grad = xp.reshape(grad, tuple(logits.shape))
    if not need_target_grad:
        return grad
    if ct is not None:
        raise ValueError(f"{where}: class-index targets are integers and have no gradient; need_target_grad is "
                         "for probability targets")
    d_target = -(1 - label_smoothing) * log_softmax(scores, axis=1) * scale
    if weight is not None:
        d_target = d_target * xp.reshape(weight, _class_axis_shape(scores.ndim, scores.shape[1]))
    return grad, xp.reshape(d_target, tuple(logits.shape))


# ----------------------------------------------------------------------------- nll
def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices given log-probabilities ``input``
    (PyTorch's ``nll_loss``): ``-weight[y] * input[y]`` per sample, shapes as in
    :func:`cross_entropy`; ``mean`` divides by the summed ``weight[y]`` of the
    samples not ignored (NaN when there are none)."""
    where = "nll_loss"
    backend = backend_for(input, target, weight, where=where)
    check_reduction(reduction, where)
    ct = _ClassTarget(backend, input, target, weight, ignore_index, where)
    losses = -backend.xp.sum(ct.q * ct.scores, axis=1)
    return _reduce_classes(ct, ct.poison(losses), reduction, ct.total_weight)


def nll_loss_backward(input, target, weight=None, ignore_index=-100, reduction="mean", grad_out=1.0):
    """Gradient of :func:`nll_loss` for ``input``: ``-weight[y]`` at each sample's class, scaled."""
    where = "nll_loss backward"
    backend = backend_for(input, target, weight, where=where)
    check_reduction(reduction, where)
    ct = _ClassTarget(backend, input, target, weight, ignore_index, where)
    grad = -ct.q * _per_sample_grad_scale(backend.xp, grad_out, reduction, ct.total_weight, ct.scores, ct.unbatched)
    return backend.xp.reshape(grad, tuple(input.shape))


# ----------------------------------------------------------------------------- element-wise losses
def _pair_setup(input, target, where, reduction, extra=(), reductions=REDUCTIONS):
    """The namespace of two same-shape, same-dtype float arrays, the reduction checked."""
    backend = backend_for(input, target, *extra, where=where)
    check_reduction(reduction, where, reductions)
    for name, a in (("input", input), ("target", target)):
        if not hasattr(a, "dtype"):
            raise TypeError(f"{where}: {name} must be an array, got {type(a).__name__}")
        require_float(a, where, name)
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{where}: input shape {tuple(input.shape)} differs from target shape "
                         f"{tuple(target.shape)}")
    if input.dtype != target.dtype:
        raise TypeError(f"{where}: input dtype {input.dtype} differs from target dtype {target.dtype}")
    return backend.xp


def _reduce(xp, losses, reduction):
    if reduction == "mean":
        return xp.mean(losses)  # of no elements: NaN, as in PyTorch
    if reduction == "sum":
        return xp.sum(losses)
    return losses


def _scale_grad(xp, grad, grad_out, reduction, count):
    if reduction == "mean":
        grad = grad / max(count, 1)
    if reduction == "none" and getattr(grad_out, "ndim", grad.ndim) < grad.ndim:
        return grad * xp.reshape(grad_out, (-1,) + (1,) * (grad.ndim - 1))
    return grad * grad_out


def _with_target(d_input, d_target, need_target_grad):
    return (d_input, d_target) if need_target_grad else d_input


def _difference_grad(xp, local, input, reduction, grad_out, need_target_grad):
    """Scaled gradient of a loss of ``input - target`` (the target's is its negative)."""
    grad = _scale_grad(xp, local, grad_out, reduction, math.prod(input.shape))
    return _with_target(grad, -grad, need_target_grad)


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum, or each) of the squared differences ``(input - target)²``."""
    where = "mse_loss"
    xp = backend_for(input, target, where=where).xp
    check_reduction(reduction, where)
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{where}: input shape {tuple(input.shape)} differs from target shape "
                         f"{tuple(target.shape)}")
    diff = input - target
    return _reduce(xp, diff * diff, reduction)


def mse_loss_backward(input, target, reduction="mean", grad_out=1.0, *, need_target_grad=False):
    """Gradient of :func:`mse_loss` for ``input`` (``2 (input - target)``, scaled);
    with ``need_target_grad`` also for ``target`` (its negative)."""
    xp = backend_for(input, target, where="mse_loss backward").xp
    return _difference_grad(xp, 2 * (input - target), input, reduction, grad_out, need_target_grad)


def l1_loss(input, target, reduction="mean"):
    """Mean (or sum, or each) of the absolute differences ``|input - target|``."""
    where = "l1_loss"
    xp = _pair_setup(input, target, where, reduction)
    return _reduce(xp, xp.abs(input - target), reduction)


def l1_loss_backward(input, target, reduction="mean", grad_out=1.0, *, need_target_grad=False):
    """Gradient of :func:`l1_loss`: ``sign(input - target)`` (0 where equal), scaled."""
    where = "l1_loss backward"
    xp = _pair_setup(input, target, where, reduction)
    return _difference_grad(xp, xp.sign(input - target), input, reduction, grad_out, need_target_grad)


def _check_positive(value, name, where, allow_zero):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or (value < 0 if allow_zero else value <= 0):
        raise ValueError(f"{where}: {name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """Smooth L1: ``0.5 d²/beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``
    (``d = input - target``; ``beta=0`` is the L1 loss)."""
    where = "smooth_l1_loss"
    xp = _pair_setup(input, target, where, reduction)
    _check_positive(beta, "beta", where, allow_zero=True)
    d = xp.abs(input - target)
    if beta == 0:
        return _reduce(xp, d, reduction)
    return _reduce(xp, xp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta), reduction)


def smooth_l1_loss_backward(input, target, reduction="mean", beta=1.0, grad_out=1.0, *, need_target_grad=False):
    """Gradient of :func:`smooth_l1_loss`: ``d/beta`` inside ``beta``, ``sign(d)`` outside."""
    where = "smooth_l1_loss backward"
    xp = _pair_setup(input, target, where, reduction)
    _check_positive(beta, "beta", where, allow_zero=True)
    d = input - target
    local = xp.sign(d) if beta == 0 else xp.where(xp.abs(d) < beta, d / beta, xp.sign(d))
    return _difference_grad(xp, local, input, reduction, grad_out, need_target_grad)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """Huber: ``0.5 d²`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``
    (``smooth_l1_loss`` times ``delta`` with ``beta = delta``)."""
    where = "huber_loss"
    xp = _pair_setup(input, target, where, reduction)
    _check_positive(delta, "delta", where, allow_zero=False)
    d = xp.abs(input - target)
    return _reduce(xp, xp.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction)


def huber_loss_backward(input, target, reduction="mean", delta=1.0, grad_out=1.0, *, need_target_grad=False):
    """Gradient of :func:`huber_loss`: ``d`` inside ``delta``, ``delta * sign(d)`` outside."""
    where = "huber_loss backward"
    xp = _pair_setup(input, target, where, reduction)
    _check_positive(delta, "delta", where, allow_zero=False)
    d = input - target
    local = xp.where(xp.abs(d) <= delta, d, delta * xp.sign(d))
    return _difference_grad(xp, local, input, reduction, grad_out, need_target_grad)


def kl_div(input, target, reduction="mean", log_target=False):
    """Kullback-Leibler divergence with ``input`` holding log-probabilities, PyTorch's
    ``kl_div``: ``target * (log(target) - input)`` per element (0 where
    ``target == 0``), or ``exp(target) * (target - input)`` with ``log_target``.
    ``reduction="batchmean"`` divides the sum by the batch size (``input.shape[0]``),
    which is the mathematical KL divergence; ``"mean"`` divides by every element."""
    where = "kl_div"
    xp = _pair_setup(input, target, where, reduction, reductions=("mean", "batchmean", "sum", "none"))
    if log_target:
        losses = xp.exp(target) * (target - input)
    else:
        positive = target > 0
        xlogx = target * xp.log(xp.where(positive, target, xp.ones_like(target)))  # no log of t <= 0 (no warning)
        xlogx = xp.where(target < 0, xp.full_like(target, math.nan), xlogx)
        losses = xlogx - target * input  # xlogy(t, t) - t x: 0 where t == 0, NaN where t < 0
    if reduction == "batchmean":
        total = xp.sum(losses)
        return total / input.shape[0] if input.ndim else total
    return _reduce(xp, losses, reduction)


def kl_div_backward(input, target, reduction="mean", log_target=False, grad_out=1.0, *, need_target_grad=False):
    """Gradient of :func:`kl_div` for ``input`` (``-target``, or ``-exp(target)``),
    and with ``need_target_grad`` for ``target`` (``log(target) + 1 - input``, or
    ``exp(target) (target - input + 1)``)."""
    where = "kl_div backward"
    xp = _pair_setup(input, target, where, reduction, reductions=("mean", "batchmean", "sum", "none"))
    if reduction == "batchmean":
        reduction, grad_out = "sum", grad_out / (input.shape[0] if input.ndim else 1)
    count = math.prod(input.shape)
    p = xp.exp(target) if log_target else target
    grad = _scale_grad(xp, -p, grad_out, reduction, count)
    if not need_target_grad:
        return grad
    if log_target:
        local = p * (target - input + 1)
    else:
        positive = target > 0
        local = xp.log(xp.where(positive, target, xp.ones_like(target))) + 1 - input
        local = xp.where(positive, local, xp.full_like(target, math.nan))  # NaN at target <= 0, as PyTorch
    return grad, _scale_grad(xp, local, grad_out, reduction, count)


# ----------------------------------------------------------------------------- binary cross-entropy
def _check_elementwise_weight(xp, weight, input, where, name="weight"):
    if weight is None:
        return
    if not hasattr(weight, "shape"):
        raise TypeError(f"{where}: {name} must be an array, got {type(weight).__name__}")
    if weight.dtype != input.dtype:
        raise TypeError(f"{where}: {name} dtype {weight.dtype} differs from the input's {input.dtype}")
    if _broadcast_shape(tuple(weight.shape), tuple(input.shape)) != tuple(input.shape):
        raise ValueError(f"{where}: {name} of shape {tuple(weight.shape)} does not broadcast to the input's shape "
                         f"{tuple(input.shape)}")


def _broadcast_shape(a, b):
    """The broadcast of shapes ``a`` and ``b`` (``None`` if they do not broadcast)."""
    out = []
    for x, y in zip(((1,) * len(b) + a)[-max(len(a), len(b)):], ((1,) * len(a) + b)[-max(len(a), len(b)):]):
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)
    return tuple(out)


def _clamped_log(xp, p):
    """``max(log(p), -100)``, PyTorch's clamp, without a log(0) warning."""
    positive = p > 0
    logs = xp.log(xp.where(positive, p, xp.ones_like(p)))
    return xp.where(positive, xp.maximum(logs, xp.asarray(-100.0, dtype=p.dtype, device=_device(p))),
                    xp.full_like(p, -100.0))


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities ``input`` in [0, 1]:
    ``-weight * (target log(input) + (1 - target) log(1 - input))``, each log
    clamped at -100 as in PyTorch (so a probability of exactly 0 or 1 gives a
    finite loss). ``weight`` broadcasts to the input."""
    where = "binary_cross_entropy"
    backend = backend_for(input, target, weight, where=where)
    xp = _pair_setup(input, target, where, reduction, (weight,))
    _check_elementwise_weight(xp, weight, input, where)
    if backend.host_memory and math.prod(input.shape) and bool(xp.any(~((input >= 0) & (input <= 1)))):
        raise ValueError(f"{where}: input must hold probabilities in [0, 1] (apply a sigmoid first, or use "
                         f"binary_cross_entropy_with_logits), got values in [{float(xp.min(input))}, "
                         f"{float(xp.max(input))}]")
    log_p, log_q = _clamped_log(xp, input), _clamped_log(xp, 1 - input)
    losses = -(target * log_p + (1 - target) * log_q)
    if weight is not None:
        losses = losses * weight
    return _reduce(xp, losses, reduction)


def binary_cross_entropy_backward(input, target, weight=None, reduction="mean", grad_out=1.0, *,
                                  need_target_grad=False):
    """Gradient of :func:`binary_cross_entropy` for ``input``, PyTorch's form
    ``weight (input - target) / max(input (1 - input), 1e-12)``; with
    ``need_target_grad`` also for ``target``: ``weight (log(1 - input) - log(input))``."""
    where = "binary_cross_entropy backward"
    xp = _pair_setup(input, target, where, reduction, (weight,))
    _check_elementwise_weight(xp, weight, input, where)
    floor = xp.asarray(1e-12, dtype=input.dtype, device=_device(input))
    local = (input - target) / xp.maximum((1 - input) * input, floor)
    return _weighted_grads(xp, input, local, lambda: xp.log(1 - input) - xp.log(input), weight, reduction, grad_out,
                           need_target_grad)


def _weighted_grads(xp, input, local, target_local, weight, reduction, grad_out, need_target_grad):
    """``weight * local`` scaled for the reduction; with ``need_target_grad`` also
    ``weight * target_local()`` (computed only then)."""
    count = math.prod(input.shape)
    grads = [local] + ([target_local()] if need_target_grad else [])
    grads = [_scale_grad(xp, g if weight is None else g * weight, grad_out, reduction, count) for g in grads]
    return tuple(grads) if need_target_grad else grads[0]


def _softplus_neg(xp, x):
    """``log(1 + exp(-x))`` without overflow: ``max(-x, 0) + log1p(exp(-|x|))``."""
    return xp.maximum(-x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def _logits_setup(input, target, weight, pos_weight, reduction, where):
    xp = _pair_setup(input, target, where, reduction, (weight, pos_weight))
    _check_elementwise_weight(xp, weight, input, where)
    _check_elementwise_weight(xp, pos_weight, input, where, "pos_weight")
    return xp


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Binary cross-entropy of ``sigmoid(input)``, computed stably from the logits:
    ``weight * ((1 - target) x + (1 + (pos_weight - 1) target) log(1 + exp(-x)))``.
    ``pos_weight`` (broadcast along the last axis, e.g. ``(C,)``) weighs the
    positive term of each class; ``weight`` broadcasts to the input."""
    where = "binary_cross_entropy_with_logits"
    xp = _logits_setup(input, target, weight, pos_weight, reduction, where)
    softplus = _softplus_neg(xp, input)
    if pos_weight is None:
        losses = (1 - target) * input + softplus
    else:
        losses = (1 - target) * input + (1 + (pos_weight - 1) * target) * softplus
    if weight is not None:
        losses = losses * weight
    return _reduce(xp, losses, reduction)


def binary_cross_entropy_with_logits_backward(input, target, weight=None, reduction="mean", pos_weight=None,
                                              grad_out=1.0, *, need_target_grad=False):
    """Gradient of :func:`binary_cross_entropy_with_logits` for ``input``:
    ``weight * ((1 + (pos_weight - 1) target) sigmoid(x) - pos_weight target)``;
    with ``need_target_grad`` also for ``target``:
    ``weight * (-x + (pos_weight - 1) log(1 + exp(-x)))``."""
    where = "binary_cross_entropy_with_logits backward"
    xp = _logits_setup(input, target, weight, pos_weight, reduction, where)
    s = sigmoid(input)
    if pos_weight is None:
        local = s - target
    else:
        pt = pos_weight * target
        local = (pt + 1 - target) * s - pt
    return _weighted_grads(xp, input, local,
                           lambda: -input if pos_weight is None else -input + (pos_weight - 1) * _softplus_neg(xp, input),
                           weight, reduction, grad_out, need_target_grad)
