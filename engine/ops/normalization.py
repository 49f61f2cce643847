"""Batch, layer and group normalisation, forward and backward, with PyTorch's semantics.

For an input ``(N, C, *)`` the statistics are per channel, over every axis
but ``1``. In training, the batch mean and *biased* variance normalise the
input, and the running statistics (when given) move towards the batch ones:
``running = (1 - momentum) * running + momentum * batch``, with the
*unbiased* variance (``var * M / (M - 1)``, ``M`` values per channel), as
``torch.nn.functional.batch_norm`` does. In evaluation the running
statistics normalise. An empty batch (``N = 0``) in training gives an empty
output and leaves the running statistics alone, as PyTorch does.

:func:`layer_norm` normalises each sample over its last
``len(normalized_shape)`` axes, :func:`group_norm` each sample over groups of
channels (and every spatial position); both use the biased variance and have
no running statistics.
"""
from __future__ import annotations

import math

from .._checks import backend_for, positive_int, require_float
from ._common import _device


def _channel_shape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _reduce_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _check(x, arrays, where):
    backend = backend_for(x, *arrays.values(), where=where)
    if not hasattr(x, "ndim") or x.ndim < 2:
        raise ValueError(f"{where}: input must have at least 2 dimensions (N, C, ...), "
                         f"got shape {tuple(getattr(x, 'shape', ()))}")
    require_float(x, where)
    c = x.shape[1]
    for name, a in arrays.items():
        if a is None:
            continue
        if tuple(a.shape) != (c,):
            raise ValueError(f"{where}: {name} must have shape ({c},) for an input with {c} channels "
                             f"(shape {tuple(x.shape)}), got {tuple(a.shape)}")
        if a.dtype != x.dtype:
            raise TypeError(f"{where}: {name} dtype {a.dtype} differs from input dtype {x.dtype}; "
                            "convert the model or the data (e.g. model.to('float64'))")
    return backend


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, return_stats=False):
    """Batch normalisation of ``x (N, C, *)``, PyTorch's ``batch_norm`` (same argument order).

    ``training``: normalise with the batch statistics and, if
    ``running_mean``/``running_var`` are given, update them **in place** with
    ``momentum`` (a number, or a 0-d array such as ``1/num_batches_tracked``
    for a cumulative average). Otherwise normalise with the running
    statistics. ``weight``/``bias`` (``(C,)``, optional) scale and shift.

    With ``return_stats`` returns ``(y, mean, invstd)``, the per-channel
    statistics that normalised ``x`` (what :func:`batch_norm_backward` needs).
    """
    where = "batch_norm"
    backend = _check(x, dict(running_mean=running_mean, running_var=running_var, weight=weight, bias=bias),
                     where)
    xp = backend.xp
    if eps < 0:
        raise ValueError(f"{where}: eps must be >= 0, got {eps!r}")
    shape = _channel_shape(x)
    if training:
        axes = _reduce_axes(x)
        count = math.prod(x.shape[i] for i in axes)
        if count == 0:  # an empty batch: nothing to normalise, nothing learnt (PyTorch's behaviour)
            mean = xp.zeros((x.shape[1],), dtype=x.dtype, device=_device(x))
            invstd = xp.full((x.shape[1],), 1.0 / math.sqrt(eps) if eps else math.inf, dtype=x.dtype,
                             device=_device(x))
            y = xp.zeros(tuple(x.shape), dtype=x.dtype, device=_device(x))
            return (y, mean, invstd) if return_stats else y
        if count <= 1:
            raise ValueError(f"{where}: expected more than 1 value per channel when training, got input "
                             f"shape {tuple(x.shape)}; use a batch of more than one sample or eval mode")
        mean = xp.mean(x, axis=axes)
        centred = x - xp.reshape(mean, shape)
        var = xp.mean(centred * centred, axis=axes)
        del centred
        invstd = 1.0 / xp.sqrt(var + eps)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * (var * (count / (count - 1)))
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{where}: running_mean and running_var are needed when training=False")
        mean = running_mean
        invstd = 1.0 / xp.sqrt(running_var + eps)
    scale = invstd if weight is None else invstd * weight
    y = backend.batch_norm_apply(x, mean, scale, bias)  # (x - mean) * scale (+ bias), per channel
    return (y, mean, invstd) if return_stats else y


def batch_norm_backward(grad_out, x, mean, invstd, weight=None, training=True, need_input_grad=True):
    """Gradients of :func:`batch_norm`: ``(dx, dweight, dbias)``.

    ``mean``/``invstd`` are the statistics the forward normalised with (its
    ``return_stats``). ``training`` says whether they were the batch's own (the
    gradient then also flows through them) or fixed running statistics.
    ``dweight``/``dbias`` are ``None`` without ``weight`` (``affine=False``),
    ``dx`` without ``need_input_grad``.
    """
    where = "batch_norm backward"
    backend = _check(x, dict(mean=mean, invstd=invstd, weight=weight), where)
    backend_for(grad_out, x, where=where)
    if tuple(grad_out.shape) != tuple(x.shape):
        raise ValueError(f"{where}: grad_out must have shape {tuple(x.shape)}, got {tuple(grad_out.shape)}")
    xp = backend.xp
    shape = _channel_shape(x)
    axes = _reduce_axes(x)
    x_hat = (x - xp.reshape(mean, shape)) * xp.reshape(invstd, shape)
    dbias = xp.sum(grad_out, axis=axes)
    dweight = xp.sum(grad_out * x_hat, axis=axes)
    dx = None
    if need_input_grad:
        scale = invstd if weight is None else invstd * weight
        if training:
            count = math.prod(x.shape[i] for i in axes)
            if count == 0:
                return xp.zeros_like(x), (None if weight is None else dweight), (None if weight is None else dbias)
            dx = (grad_out - xp.reshape(dbias / count, shape)
                  - x_hat * xp.reshape(dweight / count, shape)) * xp.reshape(scale, shape)
        else:
            dx = grad_out * xp.reshape(scale, shape)
    if weight is None:
        return dx, None, None
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- layer norm
def _normalized_shape(normalized_shape, where):
    if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    try:
        shape = tuple(normalized_shape)
    except TypeError:
        shape = None
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise TypeError(f"{where}: normalized_shape must be an int or a non-empty tuple of ints, "
                        f"got {normalized_shape!r}")
    return shape


def _check_affine(x, arrays, shape, where):
    for name, a in arrays.items():
        if a is None:
            continue
        if tuple(a.shape) != shape:
            raise ValueError(f"{where}: {name} must have shape {shape}, got {tuple(a.shape)}")
        if a.dtype != x.dtype:
            raise TypeError(f"{where}: {name} dtype {a.dtype} differs from input dtype {x.dtype}; "
                            "convert the model or the data (e.g. model.to('float64'))")


def _layer_setup(x, normalized_shape, arrays, where):
    backend = backend_for(x, *arrays.values(), where=where)
    if not hasattr(x, "ndim"):
        raise TypeError(f"{where}: input must be an array, got {type(x).__name__}")
    require_float(x, where)
    shape = _normalized_shape(normalized_shape, where)
    if tuple(x.shape[x.ndim - len(shape):]) != shape or x.ndim < len(shape):
        raise ValueError(f"{where}: input of shape {tuple(x.shape)} must end with normalized_shape {shape}")
    _check_affine(x, arrays, shape, where)
    return backend.xp, tuple(range(x.ndim - len(shape), x.ndim))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, return_stats=False):
    """Layer normalisation (PyTorch's ``layer_norm``): each sample is normalised over
    its last ``len(normalized_shape)`` axes with the biased variance, then scaled
    by ``weight`` and shifted by ``bias`` (both ``normalized_shape``, optional).

    With ``return_stats`` returns ``(y, mean, rstd)``, the statistics kept with
    their axes (shape ``x.shape[:-k] + (1,) * k``), as :func:`layer_norm_backward` needs.
    """
    where = "layer_norm"
    xp, axes = _layer_setup(x, normalized_shape, dict(weight=weight, bias=bias), where)
    _check_eps(eps, where)
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    rstd = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=axes, keepdims=True) + eps)
    y = centred * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return (y, mean, rstd) if return_stats else y


def layer_norm_backward(grad_out, x, normalized_shape, mean, rstd, weight=None, need_input_grad=True):
    """Gradients of :func:`layer_norm`: ``(dx, dweight, dbias)``; ``mean``/``rstd``
    from its ``return_stats``. ``dweight`` is ``None`` without ``weight``
    (``dbias`` is always returned: ignore it where there is no bias), ``dx``
    without ``need_input_grad``."""
    where = "layer_norm backward"
    backend_for(grad_out, mean, rstd, where=where)
    xp, axes = _layer_setup(x, normalized_shape, dict(weight=weight), where)
    _require_grad_shape(grad_out, x, where)
    x_hat = (x - mean) * rstd
    lead = tuple(range(x.ndim - len(axes)))
    dbias = xp.sum(grad_out, axis=lead) if lead else grad_out
    dweight = None if weight is None else (xp.sum(grad_out * x_hat, axis=lead) if lead else grad_out * x_hat)
    dx = None
    if need_input_grad:
        g = grad_out if weight is None else grad_out * weight
        dx = (g - xp.mean(g, axis=axes, keepdims=True)
              - x_hat * xp.mean(g * x_hat, axis=axes, keepdims=True)) * rstd
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- group norm
def _group_setup(x, num_groups, arrays, where):
    backend = backend_for(x, *arrays.values(), where=where)
    if not hasattr(x, "ndim") or x.ndim < 2:
        raise ValueError(f"{where}: input must have at least 2 dimensions (N, C, ...), "
                         f"got shape {tuple(getattr(x, 'shape', ()))}")
    require_float(x, where)
    groups = positive_int(num_groups, "num_groups", where)
    c = x.shape[1]
    if c % groups:
        raise ValueError(f"{where}: the {c} channels of the input (shape {tuple(x.shape)}) must be divisible "
                         f"by num_groups={groups}")
    _check_affine(x, arrays, (c,), where)
    grouped = (x.shape[0], groups, c // groups * math.prod(x.shape[2:]))
    return backend.xp, groups, grouped


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, return_stats=False):
    """Group normalisation (PyTorch's ``group_norm``) of ``x (N, C, *)``: the ``C``
    channels form ``num_groups`` groups and each sample's group is normalised
    over its channels and positions (biased variance); ``weight``/``bias``
    ``(C,)`` scale and shift per channel.

    With ``return_stats`` returns ``(y, mean, rstd)``, each ``(N, num_groups)``.
    """
    where = "group_norm"
    xp, groups, grouped = _group_setup(x, num_groups, dict(weight=weight, bias=bias), where)
    _check_eps(eps, where)
    g = xp.reshape(x, grouped)
    mean = xp.mean(g, axis=2, keepdims=True)
    centred = g - mean
    rstd = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=2, keepdims=True) + eps)
    y = xp.reshape(centred * rstd, tuple(x.shape))
    shape = _channel_shape(x)
    if weight is not None:
        y = y * xp.reshape(weight, shape)
    if bias is not None:
        y = y + xp.reshape(bias, shape)
    if not return_stats:
        return y
    return y, xp.reshape(mean, grouped[:2]), xp.reshape(rstd, grouped[:2])


def group_norm_backward(grad_out, x, num_groups, mean, rstd, weight=None, need_input_grad=True):
    """Gradients of :func:`group_norm`: ``(dx, dweight, dbias)``; ``mean``/``rstd``
    ``(N, num_groups)`` from its ``return_stats``. ``dweight`` is ``None``
    without ``weight``, ``dx`` without ``need_input_grad``."""
    where = "group_norm backward"
    backend_for(grad_out, mean, rstd, where=where)
    xp, groups, grouped = _group_setup(x, num_groups, dict(weight=weight), where)
    _require_grad_shape(grad_out, x, where)
    n = x.shape[0]
    stats = (n, groups, 1)
    if tuple(mean.shape) != (n, groups) or tuple(rstd.shape) != (n, groups):
        raise ValueError(f"{where}: mean and rstd must have shape {(n, groups)}, got {tuple(mean.shape)} and "
                         f"{tuple(rstd.shape)}")
    mean, rstd = xp.reshape(mean, stats), xp.reshape(rstd, stats)
    x_hat = xp.reshape((xp.reshape(x, grouped) - mean) * rstd, tuple(x.shape))
    axes = _reduce_axes(x)
    dbias = xp.sum(grad_out, axis=axes)
    dweight = None if weight is None else xp.sum(grad_out * x_hat, axis=axes)
    dx = None
    if need_input_grad:
        g = grad_out if weight is None else grad_out * xp.reshape(weight, _channel_shape(x))
        g, h = xp.reshape(g, grouped), xp.reshape(x_hat, grouped)
        dx = xp.reshape((g - xp.mean(g, axis=2, keepdims=True) - h * xp.mean(g * h, axis=2, keepdims=True)) * rstd,
                        tuple(x.shape))
    return dx, dweight, dbias


def _check_eps(eps, where):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{where}: eps must be a finite number >= 0, got {eps!r}")


def _require_grad_shape(grad_out, x, where):
    if tuple(grad_out.shape) != tuple(x.shape):
        raise ValueError(f"{where}: grad_out must have the input's shape {tuple(x.shape)}, "
                         f"got {tuple(grad_out.shape)}")
