"""Linear layer, element-wise activations, softmax and dropout, forward and backward."""
from __future__ import annotations

from .._checks import backend_for, require_float, require_ndim, require_same_dtype


def linear(x, weight, bias=None):
    """``x @ weight.T + bias``: ``(N, in_features) -> (N, out_features)``."""
    where = "linear"
    backend = backend_for(x, weight, bias, where=where)
    require_ndim(weight, 2, "(out_features, in_features)", where, "weight")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{where}: input must have {weight.shape[1]} features in its last dimension, "
                         f"got shape {tuple(x.shape)}")
    require_float(x, where)
    require_same_dtype(x, weight, bias, where)
    xp = backend.xp
    y = xp.matmul(x, xp.matrix_transpose(weight))
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_out, x, weight, need_input_grad=True, has_bias=True, need_weight_grad=True):
    """Gradients of :func:`linear`: ``(dx, dweight, dbias)`` for 2-D ``x``
    (``None`` where not asked for)."""
    xp = backend_for(grad_out, x, weight, where="linear backward").xp
    dw = xp.matmul(xp.matrix_transpose(grad_out), x) if need_weight_grad else None
    db = xp.sum(grad_out, axis=0) if has_bias else None
    dx = xp.matmul(grad_out, weight) if need_input_grad else None
    return dx, dw, db


# --------------------------------------------------------------------------- activations
def relu(x):
    """``max(x, 0)`` (NaN stays NaN, as in PyTorch)."""
    return backend_for(x, where="relu").relu(x)


def relu_backward(grad_out, y):
    """Gradient of :func:`relu` given its output ``y``: ``grad_out * (y > 0)``."""
    if tuple(grad_out.shape) != tuple(y.shape):
        raise ValueError(f"relu backward: grad_out must have the output's shape {tuple(y.shape)}, "
                         f"got {tuple(grad_out.shape)}")
    return backend_for(grad_out, y, where="relu backward").relu_backward(grad_out, y)


def leaky_relu(x, negative_slope=0.01):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    xp = backend_for(x, where="leaky_relu").xp
    return xp.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
    """Gradient of :func:`leaky_relu` given its input ``x``."""
    xp = backend_for(grad_out, x, where="leaky_relu backward").xp
    return xp.where(x > 0, grad_out, grad_out * negative_slope)


def sigmoid(x):
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""
    xp = backend_for(x, where="sigmoid").xp
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(grad_out, y):
    """Gradient of :func:`sigmoid` given its output ``y``."""
    return grad_out * y * (1 - y)


def tanh(x):
    """Hyperbolic tangent."""
    return backend_for(x, where="tanh").xp.tanh(x)


def tanh_backward(grad_out, y):
    """Gradient of :func:`tanh` given its output ``y``."""
    return grad_out * (1 - y * y)


def log_softmax(x, axis=1):
    """``log(softmax(x))`` computed stably (shifted by the max along ``axis``)."""
    xp = backend_for(x, where="log_softmax").xp
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(grad_out, y, axis=1):
    """Gradient of :func:`log_softmax` given its output ``y``."""
    xp = backend_for(grad_out, y, where="log_softmax backward").xp
    return grad_out - xp.exp(y) * xp.sum(grad_out, axis=axis, keepdims=True)


def softmax(x, axis=1):
    """``exp(x) / sum(exp(x))`` along ``axis``, stable for large inputs."""
    xp = backend_for(x, where="softmax").xp
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def softmax_backward(grad_out, y, axis=1):
    """Gradient of :func:`softmax` given its output ``y``."""
    xp = backend_for(grad_out, y, where="softmax backward").xp
    return y * (grad_out - xp.sum(grad_out * y, axis=axis, keepdims=True))


def dropout(x, p=0.5, training=True, rng=None):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``.

    Returns ``(y, mask)`` where ``mask`` holds the scale of each kept element
    (``None`` when nothing was dropped); the backward pass is ``grad * mask``.
    ``rng`` is a ``numpy.random.Generator`` (default: the engine's, seeded by
    ``engine.manual_seed``).
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p!r}")
    backend = backend_for(x, where="dropout")
    if not training or p == 0:
        return x, None
    xp = backend.xp
    if p == 1:
        return xp.zeros_like(x), xp.zeros_like(x)
    if rng is None:
        from .. import _state
        rng = _state.host_rng()
    keep = backend.uniform(tuple(x.shape), x.dtype, rng) >= p
    mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - p))
    return x * mask, mask


