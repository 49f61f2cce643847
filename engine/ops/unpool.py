"""Max-unpooling (PyTorch's ``max_unpool1d``/``max_unpool2d``), forward and backward.

``indices`` are PyTorch's: the flat position of each value inside its output
plane (``row * W_out + col`` for 2-D), as ``max_pool2d`` with
``return_indices=True`` gives them in PyTorch (here:
:func:`engine.ops.max_pool2d_flat_indices`). The output is zero except at
those positions. Written in the array API without scatter: the planes'
indices are made global, sorted (stable), and every output position looks
itself up with ``searchsorted``; where an index repeats, the value that comes
later in the input wins, as in PyTorch's CPU loop. The backward gathers the
upstream gradient at each index (every repeat gets it, as in PyTorch).
"""
from __future__ import annotations

import math

from .._checks import backend_for, pair, require_float
from ._common import _device
from .ops1d import single


def _default_size(in_size, kernel, stride, padding):
    return (in_size - 1) * stride - 2 * padding + kernel


def _output_spatial(in_spatial, kernel, stride, padding, output_size, where):
    default = tuple(_default_size(n, k, s, p) for n, k, s, p in zip(in_spatial, kernel, stride, padding))
    if output_size is None:
        sizes = default
    else:
        sizes = tuple(output_size)
        if len(sizes) == len(default) + 2 or (len(sizes) == len(default) + 1):
            sizes = sizes[-len(default):]  # PyTorch also takes (N, C, ...) or (C, ...) shapes
        if len(sizes) != len(default) or any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
            raise ValueError(f"{where}: output_size must hold {len(default)} ints (or the full output shape), got "
                             f"{output_size!r}")
        for s, d, st in zip(sizes, default, stride):
            if not d - st < s < d + st:
                raise ValueError(f"{where}: output_size {tuple(sizes)} must be within one stride of the default "
                                 f"{default} (strictly between {tuple(a - b for a, b in zip(default, stride))} and "
                                 f"{tuple(a + b for a, b in zip(default, stride))})")
    if min(sizes) < 1:
        raise ValueError(f"{where}: the output size {tuple(sizes)} must be positive")
    return tuple(sizes)


def _check_inputs(x, indices, spatial_dims, where):
    """``x`` and ``indices`` must share a shape ``(N, C, *S)`` or ``(C, *S)``."""
    require_float(x, where)
    if "int" not in str(indices.dtype):
        raise TypeError(f"{where}: indices must be an integer array, got dtype {indices.dtype}")
    if tuple(indices.shape) != tuple(x.shape):
        raise ValueError(f"{where}: indices must have the input's shape {tuple(x.shape)}, got {tuple(indices.shape)}")
    if x.ndim not in (spatial_dims + 1, spatial_dims + 2):
        raise ValueError(f"{where}: input must have {spatial_dims + 1} or {spatial_dims + 2} dimensions "
                         f"((C, ...) or (N, C, ...)), got shape {tuple(x.shape)}")


def _global_indices(backend, indices, plane_size, out_size, where):
    xp = backend.xp
    flat = xp.reshape(xp.astype(indices, xp.int64), (plane_size[0], plane_size[1]))
    if backend.host_memory and math.prod(flat.shape) and bool(xp.any((flat < 0) | (flat >= out_size))):
        raise ValueError(f"{where}: indices must be in [0, {out_size - 1}] for output planes of {out_size} "
                         f"elements, got values in [{int(xp.min(flat))}, {int(xp.max(flat))}]")
    offsets = xp.reshape(xp.arange(plane_size[0], dtype=xp.int64, device=_device(flat)) * out_size, (-1, 1))
    return xp.reshape(flat + offsets, (-1,))


def _unpool(x, indices, kernel, stride, padding, output_size, spatial_dims, where):
    backend = backend_for(x, indices, where=where)
    _check_inputs(x, indices, spatial_dims, where)
    xp = backend.xp
    in_spatial = tuple(x.shape[x.ndim - spatial_dims:])
    out_spatial = _output_spatial(in_spatial, kernel, stride, padding, output_size, where)
    lead = tuple(x.shape[:x.ndim - spatial_dims])
    planes, per_plane, out_size = math.prod(lead), math.prod(in_spatial), math.prod(out_spatial)
    target = _global_indices(backend, indices, (planes, per_plane), out_size, where)
    values = xp.reshape(x, (-1,))
    total = planes * out_size
    if values.shape[0] == 0:
        return xp.zeros(lead + out_spatial, dtype=x.dtype, device=_device(x))
    order = xp.argsort(target, stable=True)
    sorted_target = xp.take(target, order)
    queries = xp.arange(total, dtype=xp.int64, device=_device(x))
    last = xp.searchsorted(sorted_target, queries, side="right") - 1  # the last write to each position wins
    safe = xp.maximum(last, xp.zeros_like(last))
    hit = (last >= 0) & (xp.take(sorted_target, safe) == queries)
    picked = xp.take(values, xp.take(order, safe))
    y = xp.where(hit, picked, xp.zeros_like(picked))
    return xp.reshape(y, lead + out_spatial)


def _unpool_backward(grad_out, indices, spatial_dims, where):
    backend = backend_for(grad_out, indices, where=where)
    xp = backend.xp
    if "int" not in str(indices.dtype):
        raise TypeError(f"{where}: indices must be an integer array, got dtype {indices.dtype}")
    lead = tuple(indices.shape[:indices.ndim - spatial_dims])
    if tuple(grad_out.shape[:grad_out.ndim - spatial_dims]) != lead or grad_out.ndim != indices.ndim:
        raise ValueError(f"{where}: grad_out {tuple(grad_out.shape)} and indices {tuple(indices.shape)} must share "
                         "their leading (N, C) axes")
    planes = math.prod(lead)
    per_plane = math.prod(indices.shape[indices.ndim - spatial_dims:])
    out_size = math.prod(grad_out.shape[grad_out.ndim - spatial_dims:])
    target = _global_indices(backend, indices, (planes, per_plane), out_size, where)
    return xp.reshape(xp.take(xp.reshape(grad_out, (-1,)), target), tuple(indices.shape))


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Place each value of ``x`` ``(N, C, H, W)`` (or ``(C, H, W)``) at its flat
    ``indices`` in a zero output ``(N, C, H_out, W_out)``; by default
    ``H_out = (H - 1) * stride - 2 * padding + kernel_size`` (and ``W_out`` alike),
    or ``output_size`` within one stride of that. ``stride`` defaults to ``kernel_size``."""
    where = "max_unpool2d"
    kernel = pair(kernel_size, "kernel_size", where)
    strides = kernel if stride is None else pair(stride, "stride", where)
    pads = pair(padding, "padding", where, minimum=0)
    return _unpool(x, indices, kernel, strides, pads, output_size, 2, where)


def max_unpool2d_backward(grad_out, indices):
    """Gradient of :func:`max_unpool2d` for its input: ``grad_out`` read at ``indices``."""
    return _unpool_backward(grad_out, indices, 2, "max_unpool2d backward")


def max_unpool1d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """1-D :func:`max_unpool2d`: ``(N, C, L)`` or ``(C, L)`` to ``L_out = (L - 1) * stride - 2 * padding + kernel``."""
    where = "max_unpool1d"
    kernel = single(kernel_size, "kernel_size", where)
    strides = kernel if stride is None else single(stride, "stride", where)
    pad = single(padding, "padding", where, minimum=0)
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size,)
    return _unpool(x, indices, (kernel,), (strides,), (pad,), output_size, 1, where)


def max_unpool1d_backward(grad_out, indices):
    """Gradient of :func:`max_unpool1d` for its input."""
    return _unpool_backward(grad_out, indices, 1, "max_unpool1d backward")
