"""Padding with PyTorch's ``pad`` semantics, forward and backward, in the array API.

``pad`` lists ``(left, right)`` of the last axis first, then ``(top, bottom)`` of
the one before, and so on, as ``torch.nn.functional.pad``:

* ``mode="constant"`` pads any number of trailing axes with ``value``; a negative
  entry crops instead.
* ``"reflect"`` (mirror without repeating the edge), ``"replicate"`` (repeat the
  edge) and ``"circular"`` (wrap around) pad the last 1, 2 or 3 axes of an
  input with one or two more axes (``(C, W)``/``(N, C, W)`` for a 2-tuple,
  ``(C, H, W)``/``(N, C, H, W)`` for a 4-tuple, ...). Reflection needs each pad
  smaller than its axis, circular padding at most the axis.

Forward: slices, ``flip`` and ``concat``. Backward: the adjoint, by slicing and
adding the padded borders back onto the positions they copy (a scatter-add
written as slice additions, so it stays in the standard).
"""
from __future__ import annotations

import numbers

from .._checks import backend_for
from ._common import _device

PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _check_pad(shape, pad, mode, value, where):
    if mode not in PAD_MODES:
        raise ValueError(f"{where}: mode must be one of {', '.join(map(repr, PAD_MODES))}, got {mode!r}")
    try:
        pad = tuple(pad)
    except TypeError:
        raise TypeError(f"{where}: pad must be a tuple of ints, got {pad!r}") from None
    if any(isinstance(p, bool) or not isinstance(p, numbers.Integral) for p in pad):
        raise TypeError(f"{where}: pad must be a tuple of ints, got {pad!r}")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise ValueError(f"{where}: pad must have an even length ((left, right) per axis), got {pad!r}")
    k, ndim = len(pad) // 2, len(shape)
    if k > ndim:
        raise ValueError(f"{where}: pad {pad!r} covers {k} axes, the input (shape {tuple(shape)}) has {ndim}")
    if mode == "constant":
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"{where}: value must be a real number, got {type(value).__name__} {value!r}")
        for a in range(k):
            size = shape[ndim - 1 - a] + pad[2 * a] + pad[2 * a + 1]
            if size < 0:
                raise ValueError(f"{where}: pad {pad[2 * a:2 * a + 2]} crops axis {ndim - 1 - a} of size "
                                 f"{shape[ndim - 1 - a]} below zero")
        return pad
    if value not in (None, 0, 0.0):
        raise ValueError(f"{where}: mode={mode!r} takes no value (it is for mode='constant'), got value={value!r}")
    if k not in (1, 2, 3) or ndim not in (k + 1, k + 2):
        raise ValueError(f"{where}: mode={mode!r} pads the last 1, 2 or 3 axes of an input with one or two more "
                         f"axes ((C, ...) or (N, C, ...)); got pad {pad!r} for an input of shape {tuple(shape)}")
    if min(pad) < 0:
        raise ValueError(f"{where}: negative padding (cropping) is supported with mode='constant' only, got {pad!r}")
    for a in range(k):
        axis, (before, after) = ndim - 1 - a, pad[2 * a:2 * a + 2]
        n = shape[axis]
        if n == 0:
            raise ValueError(f"{where}: mode={mode!r} needs non-empty padded axes, axis {axis} of shape "
                             f"{tuple(shape)} is empty")
        if mode == "reflect" and max(before, after) >= n:
            raise ValueError(f"{where}: reflect padding must be smaller than the axis it pads, got {(before, after)} "
                             f"for axis {axis} of size {n}")
        if mode == "circular" and max(before, after) > n:
            raise ValueError(f"{where}: circular padding must be at most the size of the axis it pads, got "
                             f"{(before, after)} for axis {axis} of size {n}")
    return pad


def _along(ndim, axis, part):
    """An index tuple selecting ``part`` (a slice) along ``axis``."""
    return (slice(None),) * axis + (part,) + (slice(None),) * (ndim - axis - 1)


def _axis_pairs(ndim, pad):
    """``(axis, before, after)`` for each padded axis, the last axis first (PyTorch's order)."""
    return [(ndim - 1 - a, pad[2 * a], pad[2 * a + 1]) for a in range(len(pad) // 2)]


def pad(x, pad, mode="constant", value=None):
    """Pad (or, with negative constant entries, crop) the trailing axes of ``x``;
    see the module docstring for ``pad``'s order and the modes."""
    where = "pad"
    xp = backend_for(x, where=where).xp
    pads = _check_pad(tuple(x.shape), pad, mode, value, where)
    if mode == "constant":
        return _pad_constant(xp, x, pads, 0.0 if value is None else value)
    for axis, before, after in _axis_pairs(x.ndim, pads):
        x = _pad_axis(xp, x, axis, before, after, mode)
    return x


def _pad_constant(xp, x, pads, value):
    ndim = x.ndim
    crop = [slice(None)] * ndim
    out_shape = list(x.shape)
    place = [slice(None)] * ndim
    for axis, before, after in _axis_pairs(ndim, pads):
        n = x.shape[axis]
        crop[axis] = slice(max(-before, 0), n - max(-after, 0))
        out_shape[axis] = n + before + after
        place[axis] = slice(max(before, 0), max(before, 0) + (crop[axis].stop - crop[axis].start))
    inner = x[tuple(crop)]
    if tuple(out_shape) == tuple(inner.shape):
        return xp.asarray(inner, copy=True)
    out = xp.full(tuple(out_shape), value, dtype=x.dtype, device=_device(x))
    out[tuple(place)] = inner
    return out


def _pad_axis(xp, x, axis, before, after, mode):
    if not before and not after:
        return x
    n, ndim = x.shape[axis], x.ndim
    pieces = []
    if before:
        if mode == "reflect":
            pieces.append(xp.flip(x[_along(ndim, axis, slice(1, before + 1))], axis=axis))
        elif mode == "replicate":
            edge = x[_along(ndim, axis, slice(0, 1))]
            pieces.append(xp.concat([edge] * before, axis=axis))
        else:
            pieces.append(x[_along(ndim, axis, slice(n - before, n))])
    pieces.append(x)
    if after:
        if mode == "reflect":
            pieces.append(xp.flip(x[_along(ndim, axis, slice(n - 1 - after, n - 1))], axis=axis))
        elif mode == "replicate":
            edge = x[_along(ndim, axis, slice(n - 1, n))]
            pieces.append(xp.concat([edge] * after, axis=axis))
        else:
            pieces.append(x[_along(ndim, axis, slice(0, after))])
    return xp.concat(pieces, axis=axis)


def pad_backward(grad_out, x_shape, pad, mode="constant"):
    """Gradient of :func:`pad` for its input (of shape ``x_shape``): each padded
    position's gradient goes back to the input position it copies (summed where
    several copy one); cropped positions get zero."""
    where = "pad backward"
    xp = backend_for(grad_out, where=where).xp
    x_shape = tuple(x_shape)
    pads = _check_pad(x_shape, pad, mode, None, where)
    expected = list(x_shape)
    for axis, before, after in _axis_pairs(len(x_shape), pads):
        expected[axis] += before + after
    if tuple(grad_out.shape) != tuple(expected):
        raise ValueError(f"{where}: grad_out must have the padded shape {tuple(expected)} of an input "
                         f"{x_shape} with pad {pads}, got {tuple(grad_out.shape)}")
    if mode == "constant":
        inverse = tuple(-p for p in pads)  # crop what was padded, pad with zeros what was cropped
        return _pad_constant(xp, grad_out, inverse, 0.0)
    g = grad_out
    for axis, before, after in reversed(_axis_pairs(len(x_shape), pads)):
        g = _unpad_axis(xp, g, axis, before, after, mode, x_shape[axis])
    return g


def _unpad_axis(xp, g, axis, before, after, mode, n):
    if not before and not after:
        return g
    ndim = g.ndim
    at = lambda part: _along(ndim, axis, part)  # noqa: E731
    dx = xp.asarray(g[at(slice(before, before + n))], copy=True)
    left, right = g[at(slice(0, before))], g[at(slice(before + n, before + n + after))]

    def add(part, values):
        dx[at(part)] = dx[at(part)] + values

    if mode == "reflect":
        if before:
            add(slice(1, before + 1), xp.flip(left, axis=axis))
        if after:
            add(slice(n - 1 - after, n - 1), xp.flip(right, axis=axis))
    elif mode == "replicate":
        if before:
            add(slice(0, 1), xp.sum(left, axis=axis, keepdims=True))
        if after:
            add(slice(n - 1, n), xp.sum(right, axis=axis, keepdims=True))
    else:
        if before:
            add(slice(n - before, n), left)
        if after:
            add(slice(0, after), right)
    return dx


def padded_shape(x_shape, pad):
    """The shape :func:`pad` returns for an input of ``x_shape``."""
    shape = list(x_shape)
    for axis, before, after in _axis_pairs(len(shape), tuple(pad)):
        shape[axis] += before + after
    return tuple(shape)

