"""Cross-entropy and mean-squared-error losses, forward and backward."""
from __future__ import annotations

import math

from .._checks import backend_for, require_float, require_ndim
from ._common import _device
from .activations import log_softmax, softmax


def _check_labels(backend, logits, target, where):
    xp = backend.xp
    require_ndim(logits, 2, "(N, num_classes)", where, "logits")
    require_float(logits, where, "logits")
    if "int" not in str(target.dtype):
        raise TypeError(f"{where}: target must hold integer class labels, got dtype {target.dtype}")
    if tuple(target.shape) != (logits.shape[0],):
        raise ValueError(f"{where}: target must have shape ({logits.shape[0]},) to match logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    n_classes = logits.shape[1]
    if not backend.host_memory:
        return  # no device sync per step: cross_entropy turns bad labels into a NaN loss instead
    if target.shape[0] and bool(xp.any((target < 0) | (target >= n_classes))):
        lo, hi = int(xp.min(target)), int(xp.max(target))
        raise ValueError(f"{where}: labels must be in [0, {n_classes - 1}] for {n_classes} classes, "
                         f"got values in [{lo}, {hi}]")


def _one_hot(xp, target, n_classes, dtype):
    classes = xp.arange(n_classes, dtype=target.dtype, device=_device(target))
    return xp.astype(xp.reshape(target, (-1, 1)) == xp.reshape(classes, (1, -1)), dtype)


def _target_weights(xp, target, logits, label_smoothing):
    """Per-class target weights: one-hot labels, smoothed towards uniform."""
    n_classes = logits.shape[1]
    weights = _one_hot(xp, target, n_classes, logits.dtype)
    if label_smoothing:
        weights = weights * (1 - label_smoothing) + label_smoothing / n_classes
    return weights


def check_reduction(reduction, where):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of ``logits (N, K)`` against integer labels ``target (N,)``.

    Stable for logits in the thousands (log-sum-exp). ``reduction`` is
    ``"mean"``, ``"sum"`` or ``"none"``.
    """
    where = "cross_entropy"
    backend = backend_for(logits, target, where=where)
    check_reduction(reduction, where)
    _check_labels(backend, logits, target, where)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    xp = backend.xp
    n_classes = logits.shape[1]
    logp = log_softmax(logits, axis=1)
    weights = _target_weights(xp, target, logits, label_smoothing)
    losses = -xp.sum(weights * logp, axis=1)
    if not backend.host_memory:  # labels outside [0, K) were not checked on the host: poison the loss
        in_range = (target >= 0) & (target < n_classes)
        losses = xp.where(in_range, losses, xp.asarray(float("nan"), dtype=losses.dtype))
    return _reduce(xp, losses, reduction)


def cross_entropy_backward(logits, target, reduction="mean", label_smoothing=0.0, grad_out=1.0):
    """Gradient of :func:`cross_entropy` for ``logits``: ``(softmax - target) / N``."""
    where = "cross_entropy backward"
    backend = backend_for(logits, target, where=where)
    check_reduction(reduction, where)
    _check_labels(backend, logits, target, where)
    xp = backend.xp
    weights = _target_weights(xp, target, logits, label_smoothing)
    grad = softmax(logits, axis=1) * xp.sum(weights, axis=1, keepdims=True) - weights
    return _scale_grad(xp, grad, grad_out, reduction, logits.shape[0])


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum) of squared differences."""
    where = "mse_loss"
    xp = backend_for(input, target, where=where).xp
    check_reduction(reduction, where)
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{where}: input shape {tuple(input.shape)} differs from target shape "
                         f"{tuple(target.shape)}")
    diff = input - target
    return _reduce(xp, diff * diff, reduction)


def mse_loss_backward(input, target, reduction="mean", grad_out=1.0):
    """Gradient of :func:`mse_loss` for ``input``."""
    xp = backend_for(input, target, where="mse_loss backward").xp
    grad = 2 * (input - target)
    return _scale_grad(xp, grad, grad_out, reduction, math.prod(input.shape))


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
