"""Gradient utilities."""
from __future__ import annotations

from .._checks import backend_for


def clip_grad_norm_(parameters, max_norm: float, eps: float = 1e-6):
    """Scale all gradients so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping, as a 0-d array (no host round trip: the
    scale is computed on the device).
    """
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be positive, got {max_norm!r}")
    if not grads:
        return 0.0
    xp = backend_for(*grads, where="clip_grad_norm_").xp
    total = xp.sqrt(sum(xp.sum(g * g) for g in grads))
    scale = xp.minimum(max_norm / (total + eps), xp.ones((), dtype=total.dtype))
    for p in parameters:
        if p.grad is not None:
            p.grad = p.grad * xp.astype(scale, p.grad.dtype)
    return total
