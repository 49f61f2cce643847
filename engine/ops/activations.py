"""Linear layer, element-wise activations (ReLU, leaky ReLU, sigmoid, tanh, GELU, SiLU,
hardsigmoid, hardswish), softmax and (channel) dropout, forward and backward."""
from __future__ import annotations

import math

from .._checks import backend_for, require_float, require_ndim, require_same_dtype
from ._common import _device, _remember


#: The backend of the :func:`linear` calls checked so far, by the arrays' types, shapes and
#: dtypes (the checks took 1.5 us of a batch-1 layer's 6 us of Python).
_SETUPS: dict = {}


def _linear_setup(x, weight, bias):
    try:
        key = (type(x), x.shape, x.dtype, type(weight), weight.shape, weight.dtype, type(bias),
               None if bias is None else (bias.shape, bias.dtype))
        found = _SETUPS.get(key)
    except (AttributeError, TypeError):  # not arrays, or an unhashable dtype: checked below
        key = found = None
    if found is not None:
        return found
    where = "linear"
    backend = backend_for(x, weight, bias, where=where)
    require_ndim(weight, 2, "(out_features, in_features)", where, "weight")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{where}: input must have {weight.shape[1]} features in its last dimension, "
                         f"got shape {tuple(x.shape)}")
    require_float(x, where)
    require_same_dtype(x, weight, bias, where)
    return _remember(_SETUPS, key, backend)


def linear(x, weight, bias=None):
    """``x @ weight.T + bias``: ``(N, in_features) -> (N, out_features)``."""
    backend = _linear_setup(x, weight, bias)
    if x.ndim == 2:
        fast = backend.linear_fused(x, weight, bias)  # float32 on the CPU: the C kernels, bias in the pass
        if fast is not None:
            return fast
    xp = backend.xp
    y = xp.matmul(x, xp.matrix_transpose(weight))
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_out, x, weight, need_input_grad=True, has_bias=True, need_weight_grad=True):
    """Gradients of :func:`linear`: ``(dx, dweight, dbias)`` for 2-D ``x``
    (``None`` where not asked for)."""
    backend = backend_for(grad_out, x, weight, where="linear backward")
    xp = backend.xp
    db = xp.sum(grad_out, axis=0) if has_bias else None
    if need_input_grad or need_weight_grad:
        fast = backend.linear_backward_fused(grad_out, x, weight, need_input_grad, need_weight_grad)
        if fast is not None:
            return fast[0], fast[1], db
    dw = xp.matmul(xp.matrix_transpose(grad_out), x) if need_weight_grad else None
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
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|`` (the backend's; float32 on the
    NumPy backend: the C kernel, within 2.41 ulp of the exact value)."""
    return backend_for(x, where="sigmoid").sigmoid(x)


def sigmoid_backward(grad_out, y):
    """Gradient of :func:`sigmoid` given its output ``y``: ``grad_out * y * (1 - y)``."""
    return backend_for(grad_out, y, where="sigmoid backward").sigmoid_backward(grad_out, y)


def tanh(x):
    """Hyperbolic tangent (the backend's; float32 on the NumPy backend: the C kernel, within
    2.57 ulp of the exact value)."""
    return backend_for(x, where="tanh").tanh(x)


def tanh_backward(grad_out, y):
    """Gradient of :func:`tanh` given its output ``y``: ``grad_out * (1 - y * y)``."""
    return backend_for(grad_out, y, where="tanh backward").tanh_backward(grad_out, y)


def implicit_softmax_axis(ndim: int) -> int:
    """The axis PyTorch's ``Softmax(dim=None)``/``softmax(x)`` picks for an ``ndim``-D
    input (its deprecated implicit rule: 0 for 0-, 1- and 3-D inputs, else 1)."""
    return 0 if ndim in (0, 1, 3) else 1


def _check_axis(x, axis, where):
    ndim = getattr(x, "ndim", 0)
    if isinstance(axis, bool) or not isinstance(axis, int) or not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{where}: axis must be an int in [{-max(ndim, 1)}, {max(ndim, 1) - 1}] for an input of "
                         f"shape {tuple(getattr(x, 'shape', ()))}, got {axis!r}")


def log_softmax(x, axis=1):
    """``log(softmax(x))`` computed stably (shifted by the max along ``axis``)."""
    xp = backend_for(x, where="log_softmax").xp
    _check_axis(x, axis, "log_softmax")
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(grad_out, y, axis=1):
    """Gradient of :func:`log_softmax` given its output ``y``."""
    xp = backend_for(grad_out, y, where="log_softmax backward").xp
    return grad_out - xp.exp(y) * xp.sum(grad_out, axis=axis, keepdims=True)


def softmax(x, axis=1):
    """``exp(x) / sum(exp(x))`` along ``axis``, stable for large inputs."""
    xp = backend_for(x, where="softmax").xp
    _check_axis(x, axis, "softmax")
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


# --------------------------------------------------------------------------- smooth and hard activations
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_KAPPA = 0.044715
_ONE_SIXTH_FLOAT32 = 0.16666667163372040  # float32(1/6), PyTorch's hardsigmoid slope


def _check_approximate(approximate, where):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{where}: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu(x, approximate="none"):
    """GELU ``x * Phi(x)`` with ``Phi`` the standard normal CDF (``approximate="none"``,
    through the backend's ``erf``), or PyTorch's tanh form
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))``."""
    where = "gelu"
    backend = backend_for(x, where=where)
    require_float(x, where)
    _check_approximate(approximate, where)
    xp = backend.xp
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_KAPPA * x * x * x)))
    return x * (0.5 * (1 + backend.erf(x * _SQRT_HALF)))


def gelu_backward(grad_out, x, approximate="none"):
    """Gradient of :func:`gelu` given its input ``x``: ``Phi(x) + x phi(x)`` (or the tanh form's)."""
    where = "gelu backward"
    backend = backend_for(grad_out, x, where=where)
    _check_approximate(approximate, where)
    xp = backend.xp
    if approximate == "tanh":
        x_sq = x * x
        inner = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_KAPPA * x_sq * x))
        right = 0.5 * x * (1 - inner * inner) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_KAPPA * x_sq)
        return grad_out * (0.5 * (1 + inner) + right)
    cdf = 0.5 * (1 + backend.erf(x * _SQRT_HALF))
    pdf = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return grad_out * (cdf + x * pdf)


def silu(x):
    """SiLU (swish) ``x * sigmoid(x)``."""
    require_float(x, "silu")
    return x * sigmoid(x)


def silu_backward(grad_out, x):
    """Gradient of :func:`silu` given its input: ``s (1 + x (1 - s))``, ``s = sigmoid(x)``."""
    s = sigmoid(x)
    return grad_out * (s * (1 + x * (1 - s)))


def hardsigmoid(x):
    """``relu6(x + 3) / 6``: 0 below -3, 1 above 3, linear between."""
    where = "hardsigmoid"
    xp = backend_for(x, where=where).xp
    require_float(x, where)
    return xp.clip(x + 3, 0.0, 6.0) / 6


def hardsigmoid_backward(grad_out, x):
    """Gradient of :func:`hardsigmoid` given its input: ``1/6`` strictly inside (-3, 3), else 0.

    The slope is ``1/6`` rounded to float32 in every dtype, as PyTorch's CPU
    kernel has it (``1.0f / 6.0f``), so float64 results agree to the last bit."""
    xp = backend_for(grad_out, x, where="hardsigmoid backward").xp
    return xp.where((x > -3) & (x < 3), grad_out * _ONE_SIXTH_FLOAT32, xp.zeros_like(grad_out))


def hardswish(x):
    """``x * relu6(x + 3) / 6``: 0 below -3, ``x`` above 3."""
    where = "hardswish"
    xp = backend_for(x, where=where).xp
    require_float(x, where)
    return x * xp.clip(x + 3, 0.0, 6.0) / 6


def hardswish_backward(grad_out, x):
    """Gradient of :func:`hardswish` given its input, PyTorch's rule at the kinks:
    0 up to -3, ``x/3 + 1/2`` inside (-3, 3), 1 from 3 on."""
    xp = backend_for(grad_out, x, where="hardswish backward").xp
    inside = xp.where(x < 3, grad_out * (x / 3 + 0.5), grad_out)
    return xp.where(x <= -3, xp.zeros_like(grad_out), inside)


# --------------------------------------------------------------------------- channel dropout
#: ranks each feature-dropout variant accepts, and whether that rank has a batch axis
_FEATURE_DROPOUT_RANKS = {
    "dropout1d": {2: False, 3: True},
    "dropout2d": {2: True, 3: True, 4: True},  # 3-D: PyTorch's (N, C, L) reading, 2-D: (N, C)
    "dropout3d": {4: False, 5: True},
}


def feature_dropout(x, p=0.5, training=True, rng=None, batched=True):
    """Channel-wise dropout: zero whole channels (all positions of one sample's
    channel) with probability ``p`` and scale the rest by ``1/(1-p)``.

    The channel axis is 1 when ``batched`` (``(N, C, ...)``), else 0
    (``(C, ...)``). Returns ``(y, mask)``; ``mask`` (``None`` when nothing was
    dropped) holds each channel's scale with size-1 spatial axes, so the
    backward pass is ``grad * mask`` (broadcast). ``rng``: as in :func:`dropout`.
    """
    where = "feature_dropout"
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{where}: p must be in [0, 1], got {p!r}")
    backend = backend_for(x, where=where)
    require_float(x, where)
    lead = 2 if batched else 1
    if x.ndim < lead:
        raise ValueError(f"{where}: input must have a {'batch and a ' if batched else ''}channel axis, got shape "
                         f"{tuple(x.shape)}")
    if not training or p == 0:
        return x, None
    xp = backend.xp
    mask_shape = tuple(x.shape[:lead]) + (1,) * (x.ndim - lead)
    if p == 1:
        return xp.zeros_like(x), xp.zeros(mask_shape, dtype=x.dtype, device=_device(x))
    if rng is None:
        from .. import _state
        rng = _state.host_rng()
    keep = backend.uniform(mask_shape, x.dtype, rng) >= p
    mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - p))
    return x * mask, mask


def _named_feature_dropout(name, x, p, training, rng):
    ranks = _FEATURE_DROPOUT_RANKS[name]
    ndim = getattr(x, "ndim", None)
    if ndim not in ranks:
        raise ValueError(f"{name}: input must have {' or '.join(map(str, ranks))} dimensions, got shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    try:
        return feature_dropout(x, p, training, rng, batched=ranks[ndim])
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("feature_dropout:", f"{name}:", 1)) from None


def dropout1d(x, p=0.5, training=True, rng=None):
    """Channel dropout of ``(N, C, L)`` or unbatched ``(C, L)`` inputs; see :func:`feature_dropout`."""
    return _named_feature_dropout("dropout1d", x, p, training, rng)


def dropout2d(x, p=0.5, training=True, rng=None):
    """Channel dropout of ``(N, C, H, W)`` inputs; see :func:`feature_dropout`. As PyTorch
    2.13 does, a 3-D input is read as ``(N, C, L)`` and a 2-D one as ``(N, C)``."""
    return _named_feature_dropout("dropout2d", x, p, training, rng)


def dropout3d(x, p=0.5, training=True, rng=None):
    """Channel dropout of ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)`` inputs."""
    return _named_feature_dropout("dropout3d", x, p, training, rng)
