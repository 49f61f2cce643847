"""Resampling with ``torch.nn.functional.interpolate``'s semantics, forward and backward.

Modes: ``"nearest"`` and ``"nearest-exact"`` for ``(N, C, L)``, ``(N, C, H, W)``
and ``(N, C, D, H, W)`` inputs; ``"linear"`` (3-D input), ``"bilinear"`` (4-D),
``"trilinear"`` (5-D) and ``"bicubic"`` (4-D, PyTorch's cubic convolution with
``A = -0.75`` over four taps, the edge repeated) with ``align_corners`` False
(default) or True; ``"area"`` (adaptive average pooling, 3-D and 4-D). Give ``size`` or ``scale_factor``
(not both); with a ``scale_factor`` and ``recompute_scale_factor`` not True the
coordinates use ``1/scale_factor``, as PyTorch does, otherwise ``in/out``.

Every mode is separable: along each spatial axis an output position reads one
input position (nearest) or mixes two (linear) or four (cubic), so the forward is a gather
(``take``) per axis, the last axis first, and the source indices and weights
are computed on the host with PyTorch's arithmetic (float32 for the nearest
modes' scale, the input's precision for the linear weights), which makes the
results agree with PyTorch's to rounding. The backward applies each axis's
transpose: strided slices summed for a nearest upsampling by a whole factor,
otherwise a small dense ``(in, out)`` matrix contracted with ``tensordot``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._checks import backend_for, require_float
from .adaptive import (adaptive_avg_pool1d, adaptive_avg_pool1d_backward, adaptive_avg_pool2d,
                       adaptive_avg_pool2d_backward)

INTERPOLATE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")
_LINEAR_RANK = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}
_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution parameter


def _plan(x_shape, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias, where):
    """``(out_sizes, scales, align_corners)`` with PyTorch's argument rules."""
    if mode not in INTERPOLATE_MODES:
        raise ValueError(f"{where}: mode must be one of {', '.join(map(repr, INTERPOLATE_MODES))}, got {mode!r}")
    if antialias:
        raise ValueError(f"{where}: antialias=True is not implemented")
    ndim = len(x_shape)
    if mode in _LINEAR_RANK:
        if ndim != _LINEAR_RANK[mode]:
            raise ValueError(f"{where}: mode={mode!r} needs a {_LINEAR_RANK[mode]}-D input (N, C, ...), got shape "
                             f"{tuple(x_shape)}")
        if align_corners is None:
            align_corners = False
        elif not isinstance(align_corners, bool):
            raise TypeError(f"{where}: align_corners must be True or False, got {align_corners!r}")
    else:
        if align_corners is not None:
            raise ValueError(f"{where}: align_corners can only be set with the interpolating modes "
                             f"linear | bilinear | bicubic | trilinear, not with mode={mode!r}")
        if ndim not in ((3, 4) if mode == "area" else (3, 4, 5)):
            raise ValueError(f"{where}: mode={mode!r} needs a {'3-D or 4-D' if mode == 'area' else '3-D, 4-D or 5-D'} "
                             f"input (N, C, ...), got shape {tuple(x_shape)}")
    dim = ndim - 2
    in_sizes = tuple(x_shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{where}: give exactly one of size and scale_factor, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(f"{where}: recompute_scale_factor is not meaningful with an explicit size")
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * dim
        if len(sizes) != dim or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in sizes):
            raise ValueError(f"{where}: size must be an int or {dim} ints for an input with spatial shape "
                             f"{in_sizes}, got {size!r}")
        out_sizes, scales = tuple(int(s) for s in sizes), (None,) * dim
    else:
        factors = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * dim
        if len(factors) != dim or any(isinstance(f, bool) or not isinstance(f, numbers.Real)
                                      or not math.isfinite(f) or f <= 0 for f in factors):
            raise ValueError(f"{where}: scale_factor must be a positive finite number or {dim} of them, got "
                             f"{scale_factor!r}")
        out_sizes = tuple(int(math.floor(n * float(f))) for n, f in zip(in_sizes, factors))
        recompute = recompute_scale_factor or mode == "area"
        scales = (None,) * dim if recompute else tuple(float(f) for f in factors)
    if min(in_sizes) < 1 or min(out_sizes) < 1:
        raise ValueError(f"{where}: input and output spatial sizes must be positive, got input {in_sizes} and "
                         f"output {out_sizes}")
    return out_sizes, scales, align_corners


def _nearest_map(in_size, out_size, scale, exact):
    """Source index of each output position (PyTorch's float32 arithmetic)."""
    o = np.arange(out_size)
    if not exact:
        if out_size == in_size:
            return o
        if out_size == 2 * in_size:
            return o >> 1
    step = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
    if exact:
        pos = np.float32((o + 0.5) * np.float64(step))
    else:
        pos = o.astype(np.float32) * step
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def _linear_map(in_size, out_size, scale, align_corners, dtype):
    """``(i0, i1, w0, w1)`` per output position, in the input's precision (PyTorch's opmath)."""
    T = np.float32 if dtype == "float32" else np.float64
    o = np.arange(out_size)
    if out_size == in_size:
        return o, o, np.ones(out_size, dtype=T), np.zeros(out_size, dtype=T)
    if align_corners:
        ratio = T(in_size - 1) / T(out_size - 1) if out_size > 1 else T(0)
        real = ratio * o.astype(T)
    else:
        ratio = T(1.0 / scale) if scale else T(in_size) / T(out_size)
        real = np.maximum(ratio * (o.astype(T) + T(0.5)) - T(0.5), T(0))
    i0 = np.minimum(np.floor(real.astype(np.float32)).astype(np.int64), in_size - 1)  # floorf, as PyTorch
    w1 = np.minimum(np.maximum(real - i0.astype(T), T(0)), T(1)).astype(T)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, (T(1) - w1).astype(T), w1


def _cubic_map(in_size, out_size, scale, align_corners, dtype):
    """``(indices, weights)``, each ``(4, out)``: the four taps of every output position
    (``i-1 .. i+2`` around the source coordinate, clamped to the axis) and their
    cubic-convolution weights, with PyTorch's arithmetic (the source coordinate is
    not clamped at 0, unlike the linear modes; ``floorf`` for its integer part)."""
    T = np.float32 if dtype == "float32" else np.float64
    o = np.arange(out_size).astype(T)
    if align_corners:
        ratio = T(in_size - 1) / T(out_size - 1) if out_size > 1 else T(0)
        real = ratio * o
    else:
        ratio = T(1.0 / scale) if scale else T(in_size) / T(out_size)
        real = ratio * (o + T(0.5)) - T(0.5)
    i0 = np.minimum(np.floor(real.astype(np.float32)).astype(np.int64), in_size - 1)
    t = np.minimum(np.maximum(real - i0.astype(T), T(0)), T(1)).astype(T)
    a = T(_CUBIC_A)

    def inner(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def outer(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    rest = T(1) - t
    weights = np.stack([outer(t + T(1)), inner(t), inner(rest), outer(rest + T(1))]).astype(T)
    indices = np.clip(i0[None, :] + np.arange(-1, 3)[:, None], 0, in_size - 1)
    return indices, weights


def _axis_maps(x_shape, out_sizes, scales, mode, align_corners, dtype):
    maps = []
    for in_size, out_size, scale in zip(x_shape[2:], out_sizes, scales):
        if mode in ("nearest", "nearest-exact"):
            maps.append(("nearest", _nearest_map(in_size, out_size, scale, mode == "nearest-exact")))
        elif mode == "bicubic":
            maps.append(("cubic", _cubic_map(in_size, out_size, scale, align_corners, dtype)))
        else:
            maps.append(("linear", _linear_map(in_size, out_size, scale, align_corners, dtype)))
    return maps


def _weights_along(xp, backend, w, axis, ndim, dtype):
    shape = [1] * ndim
    shape[axis] = w.shape[0]
    return xp.reshape(backend.asarray(w, dtype=dtype), tuple(shape))


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
                antialias=False):
    """Resample the spatial axes of ``x (N, C, ...)``; PyTorch's ``interpolate``
    (see the module docstring for the modes and the coordinate rules)."""
    where = "interpolate"
    backend = backend_for(x, where=where)
    require_float(x, where)
    out_sizes, scales, align_corners = _plan(tuple(x.shape), size, scale_factor, mode, align_corners,
                                             recompute_scale_factor, antialias, where)
    xp = backend.xp
    if mode == "area":
        return adaptive_avg_pool1d(x, out_sizes[0]) if x.ndim == 3 else adaptive_avg_pool2d(x, out_sizes)
    dtype = str(x.dtype).split(".")[-1]
    maps = _axis_maps(tuple(x.shape), out_sizes, scales, mode, align_corners, dtype)
    y = x
    for axis in reversed(range(2, x.ndim)):  # the last axis first, as PyTorch nests its sums
        kind, m = maps[axis - 2]
        if kind == "nearest":
            y = xp.take(y, backend.asarray(m), axis=axis)
            continue
        if kind == "cubic":
            indices, weights = m
            source, y = y, None
            for k in range(4):
                term = (xp.take(source, backend.asarray(indices[k]), axis=axis)
                        * _weights_along(xp, backend, weights[k], axis, source.ndim, x.dtype))
                y = term if y is None else y + term
            continue
        i0, i1, w0, w1 = m
        y = (xp.take(y, backend.asarray(i0), axis=axis) * _weights_along(xp, backend, w0, axis, y.ndim, x.dtype)
             + xp.take(y, backend.asarray(i1), axis=axis) * _weights_along(xp, backend, w1, axis, y.ndim, x.dtype))
    return y


def interpolate_backward(grad_out, x_shape, size=None, scale_factor=None, mode="nearest", align_corners=None,
                         recompute_scale_factor=None, antialias=False):
    """Gradient of :func:`interpolate` for its input (of shape ``x_shape``), same arguments."""
    where = "interpolate backward"
    backend = backend_for(grad_out, where=where)
    x_shape = tuple(x_shape)
    out_sizes, scales, align_corners = _plan(x_shape, size, scale_factor, mode, align_corners,
                                             recompute_scale_factor, antialias, where)
    expected = x_shape[:2] + out_sizes
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"{where}: grad_out must have the resampled shape {expected}, got {tuple(grad_out.shape)}")
    if mode == "area":
        if len(x_shape) == 3:
            return adaptive_avg_pool1d_backward(grad_out, x_shape, out_sizes[0])
        return adaptive_avg_pool2d_backward(grad_out, x_shape, out_sizes)
    xp = backend.xp
    dtype = str(grad_out.dtype).split(".")[-1]
    maps = _axis_maps(x_shape, out_sizes, scales, mode, align_corners, dtype)
    g = grad_out
    for axis in range(2, len(x_shape)):  # the transpose of each axis's map, in reverse order
        kind, m = maps[axis - 2]
        in_size, out_size = x_shape[axis], out_sizes[axis - 2]
        if kind == "nearest" and out_size % in_size == 0 and np.array_equal(m, np.arange(out_size) //
                                                                            (out_size // in_size)):
            g = _sum_repeats(xp, g, axis, out_size // in_size)
            continue
        matrix = np.zeros((in_size, out_size), dtype=np.float64)
        if kind == "nearest":
            matrix[m, np.arange(out_size)] = 1.0
        elif kind == "cubic":
            indices, weights = m
            for k in range(4):  # repeated (clamped) taps add up
                np.add.at(matrix, (indices[k], np.arange(out_size)), weights[k].astype(np.float64))
        else:
            i0, i1, w0, w1 = m
            np.add.at(matrix, (i0, np.arange(out_size)), w0.astype(np.float64))
            np.add.at(matrix, (i1, np.arange(out_size)), w1.astype(np.float64))
        g = _contract(xp, g, backend.asarray(matrix, dtype=grad_out.dtype), axis)
    return g


def _sum_repeats(xp, g, axis, factor):
    """Adjoint of repeating each position ``factor`` times along ``axis``: strided slices summed."""
    ndim = g.ndim
    total = None
    for k in range(factor):
        part = g[(slice(None),) * axis + (slice(k, None, factor),) + (slice(None),) * (ndim - axis - 1)]
        total = part if total is None else total + part
    return total


def _contract(xp, g, matrix, axis):
    """``g`` with ``axis`` (of length ``out``) replaced by ``matrix (in, out) @`` it."""
    moved = xp.tensordot(g, matrix, axes=([axis], [1]))  # the new axis comes last
    order = list(range(moved.ndim - 1))
    order.insert(axis, moved.ndim - 1)
    return xp.permute_dims(moved, tuple(order))


def interpolate_output_size(x_shape, size=None, scale_factor=None, mode="nearest", recompute_scale_factor=None):
    """The spatial output size :func:`interpolate` gives an input of ``x_shape``."""
    align = False if mode in _LINEAR_RANK else None
    return _plan(tuple(x_shape), size, scale_factor, mode, align, recompute_scale_factor, False, "interpolate")[0]
