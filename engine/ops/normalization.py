"""Batch normalisation, forward and backward, with PyTorch's semantics.

For an input ``(N, C, *)`` the statistics are per channel, over every axis
but ``1``. In training, the batch mean and *biased* variance normalise the
input, and the running statistics (when given) move towards the batch ones:
``running = (1 - momentum) * running + momentum * batch``, with the
*unbiased* variance (``var * M / (M - 1)``, ``M`` values per channel), as
``torch.nn.functional.batch_norm`` does. In evaluation the running
statistics normalise.
"""
from __future__ import annotations

import math

from .._checks import backend_for, require_float


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
        if count <= 1:
            raise ValueError(f"{where}: expected more than 1 value per channel when training, got input "
                             f"shape {tuple(x.shape)}; use a batch of more than one sample or eval mode")
        mean = xp.mean(x, axis=axes)
        centred = x - xp.reshape(mean, shape)
        var = xp.mean(centred * centred, axis=axes)
        invstd = 1.0 / xp.sqrt(var + eps)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * (var * (count / (count - 1)))
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{where}: running_mean and running_var are needed when training=False")
        mean = running_mean
        centred = x - xp.reshape(mean, shape)
        invstd = 1.0 / xp.sqrt(running_var + eps)
    scale = invstd if weight is None else invstd * weight
    y = centred * xp.reshape(scale, shape)
    if bias is not None:
        y = y + xp.reshape(bias, shape)
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
            dx = (grad_out - xp.reshape(dbias / count, shape)
                  - x_hat * xp.reshape(dweight / count, shape)) * xp.reshape(scale, shape)
        else:
            dx = grad_out * xp.reshape(scale, shape)
    if weight is None:
        return dx, None, None
    return dx, dweight, dbias
