"""1-D convolution and pooling over ``(N, C, L)`` inputs, on the 2-D machinery.

Each op views its input as an image of height 1, ``(N, C, 1, L)``, runs the
2-D op with a ``1 x k`` window, and drops the unit axis again: the im2col,
GEMM, pooling windows and every backend fast path are shared with 2-D.
Argument names and defaults follow PyTorch's ``conv1d``, ``max_pool1d`` and
``avg_pool1d``.
"""
from __future__ import annotations

import numbers

from .._checks import backend_for, require_float, require_ndim
from .conv import conv2d, conv2d_backward
from .conv_transpose import conv_transpose2d, conv_transpose2d_backward
from .pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward, max_pool2d_flat_indices


def single(value, name: str, where: str, minimum: int = 1) -> int:
    """``value`` (an int or a 1-tuple of ints) as an int, at least ``minimum``."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be an int (or a 1-tuple), got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return int(value)


def _padding1d(padding, where):
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"{where}: padding must be an int, 'valid' or 'same', got {padding!r}")
        return padding
    return (0, single(padding, "padding", where, minimum=0))


def _as_2d(xp, a):
    """``(N, C, L) -> (N, C, 1, L)``."""
    return xp.reshape(a, (a.shape[0], a.shape[1], 1, a.shape[2]))


def _as_1d(xp, a):
    """``(N, C, 1, L) -> (N, C, L)``."""
    return xp.reshape(a, (a.shape[0], a.shape[1], a.shape[3]))


def _renamed(exc, op2d, where):
    return type(exc)(str(exc).replace(f"{op2d}:", f"{where}:", 1).replace(f"{op2d} backward:", f"{where}:", 1))


def _check_input(x, where, layout="(N, C, L)"):
    backend = backend_for(x, where=where)
    require_ndim(x, 3, layout, where)
    require_float(x, where)
    return backend


# --------------------------------------------------------------------------- conv1d
def _conv1d_args(x, weight, stride, padding, dilation, where):
    backend = backend_for(x, weight, where=where)
    require_ndim(x, 3, "(N, C, L)", where)
    require_ndim(weight, 3, "(out_channels, in_channels/groups, k)", where, "weight")
    stride = single(stride, "stride", where)
    dilation = single(dilation, "dilation", where)
    if padding == "same" and stride != 1:
        raise ValueError(f"{where}: padding='same' needs stride 1, got stride={stride}")
    return backend, dict(stride=(1, stride), padding=_padding1d(padding, where), dilation=(1, dilation))


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, method="gemm"):
    """1-D cross-correlation, PyTorch's ``conv1d``: ``(N, C, L) -> (N, O, OL)``,
    weight ``(O, C/groups, k)``. ``padding`` is an int, ``"valid"`` or ``"same"``."""
    where = "conv1d"
    backend, args = _conv1d_args(x, weight, stride, padding, dilation, where)
    xp = backend.xp
    try:
        y = conv2d(_as_2d(xp, x), _as_2d(xp, weight), bias, groups=groups, method=method, **args)
    except (TypeError, ValueError) as exc:
        raise _renamed(exc, "conv2d", where) from None
    return _as_1d(xp, y)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, method="gemm",
                    need_input_grad=True, has_bias=True, need_weight_grad=True):
    """Gradients of :func:`conv1d`: ``(dx, dweight, dbias)`` (``None`` where not asked for)."""
    where = "conv1d backward"
    backend, args = _conv1d_args(x, weight, stride, padding, dilation, where)
    require_ndim(grad_out, 3, "(N, O, OL)", where, "grad_out")
    xp = backend.xp
    try:
        dx, dw, db = conv2d_backward(_as_2d(xp, grad_out), _as_2d(xp, x), _as_2d(xp, weight), groups=groups,
                                     method=method, need_input_grad=need_input_grad, has_bias=has_bias,
                                     need_weight_grad=need_weight_grad, **args)
    except (TypeError, ValueError) as exc:
        raise _renamed(exc, "conv2d", where) from None
    return (None if dx is None else _as_1d(xp, dx)), (None if dw is None else _as_1d(xp, dw)), db


# --------------------------------------------------------------------------- conv_transpose1d
def _conv_transpose1d_args(x, weight, stride, padding, output_padding, dilation, where):
    backend = backend_for(x, weight, where=where)
    require_ndim(x, 3, "(N, C, L)", where)
    require_ndim(weight, 3, "(in_channels, out_channels/groups, k)", where, "weight")
    return backend, dict(stride=(1, single(stride, "stride", where)),
                         padding=(0, single(padding, "padding", where, minimum=0)),
                         output_padding=(0, single(output_padding, "output_padding", where, minimum=0)),
                         dilation=(1, single(dilation, "dilation", where)))


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 1-D convolution, PyTorch's ``conv_transpose1d``: ``(N, C_in, L) -> (N, C_out, OL)``,
    weight ``(C_in, C_out/groups, k)``, ``OL = (L-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``."""
    where = "conv_transpose1d"
    backend, args = _conv_transpose1d_args(x, weight, stride, padding, output_padding, dilation, where)
    xp = backend.xp
    try:
        y = conv_transpose2d(_as_2d(xp, x), _as_2d(xp, weight), bias, groups=groups, **args)
    except (TypeError, ValueError) as exc:
        raise _renamed(exc, "conv_transpose2d", where) from None
    return _as_1d(xp, y)


def conv_transpose1d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, need_input_grad=True, has_bias=True):
    """Gradients of :func:`conv_transpose1d`: ``(dx, dweight, dbias)``."""
    where = "conv_transpose1d backward"
    backend, args = _conv_transpose1d_args(x, weight, stride, padding, output_padding, dilation, where)
    require_ndim(grad_out, 3, "(N, C_out, OL)", where, "grad_out")
    xp = backend.xp
    try:
        dx, dw, db = conv_transpose2d_backward(_as_2d(xp, grad_out), _as_2d(xp, x), _as_2d(xp, weight),
                                               groups=groups, need_input_grad=need_input_grad,
                                               has_bias=has_bias, **args)
    except (TypeError, ValueError) as exc:
        raise _renamed(exc, "conv_transpose2d", where) from None
    return (None if dx is None else _as_1d(xp, dx)), _as_1d(xp, dw), db


# --------------------------------------------------------------------------- pooling
def _pool1d_args(kernel_size, stride, padding, where, dilation=None):
    k = single(kernel_size, "kernel_size", where)
    p = single(padding, "padding", where, minimum=0)
    d = 1 if dilation is None else single(dilation, "dilation", where)
    if p > k // 2:  # PyTorch's bound: half the kernel, whatever the dilation
        raise ValueError(f"{where}: padding {p} must be at most half the kernel size {k}")
    args = dict(kernel_size=(1, k), stride=(1, k if stride is None else single(stride, "stride", where)),
                padding=(0, p))
    if dilation is not None:
        args["dilation"] = (1, d)
    return args


def _shape_2d(x_shape, where):
    if len(x_shape) != 3:
        raise ValueError(f"{where}: x_shape must be (N, C, L), got {tuple(x_shape)}")
    n, c, length = x_shape
    return (n, c, 1, length)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows of ``(N, C, L)``; ``stride`` defaults to ``kernel_size``.

    With ``return_indices`` also returns the in-window position of each
    maximum (what :func:`max_pool1d_backward` needs).
    """
    where = "max_pool1d"
    backend = _check_input(x, where)
    xp = backend.xp
    args = _pool1d_args(kernel_size, stride, padding, where, dilation)
    try:
        y, idx = max_pool2d(_as_2d(xp, x), ceil_mode=ceil_mode, return_indices=True, **args)
    except (TypeError, ValueError) as exc:
        raise _renamed(exc, "max_pool2d", where) from None
    y = _as_1d(xp, y)
    return (y, _as_1d(xp, idx)) if return_indices else y


def max_pool1d_backward(grad_out, indices, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False):
    """Gradient of :func:`max_pool1d` for its input, ``x_shape`` shaped."""
    where = "max_pool1d backward"
    xp = backend_for(grad_out, indices, where=where).xp
    args = _pool1d_args(kernel_size, stride, padding, where, dilation)
    dx = max_pool2d_backward(_as_2d(xp, grad_out), _as_2d(xp, indices), _shape_2d(x_shape, where),
                             ceil_mode=ceil_mode, **args)
    return _as_1d(xp, dx)


def max_pool1d_flat_indices(indices, x_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """PyTorch's ``return_indices`` convention (the position along ``L``) from
    :func:`max_pool1d`'s in-window indices."""
    where = "max_pool1d_flat_indices"
    xp = backend_for(indices, where=where).xp
    args = _pool1d_args(kernel_size, stride, padding, where, dilation)
    flat = max_pool2d_flat_indices(_as_2d(xp, indices), _shape_2d(x_shape, where), ceil_mode=ceil_mode, **args)
    return _as_1d(xp, flat)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over sliding windows of ``(N, C, L)``, PyTorch's divisor rules."""
    where = "avg_pool1d"
    backend = _check_input(x, where)
    xp = backend.xp
    args = _pool1d_args(kernel_size, stride, padding, where)
    try:
        y = avg_pool2d(_as_2d(xp, x), ceil_mode=ceil_mode, count_include_pad=count_include_pad, **args)
    except (TypeError, ValueError) as exc:
        raise _renamed(exc, "avg_pool2d", where) from None
    return _as_1d(xp, y)


def avg_pool1d_backward(grad_out, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """Gradient of :func:`avg_pool1d` for its input, ``x_shape`` shaped."""
    where = "avg_pool1d backward"
    xp = backend_for(grad_out, where=where).xp
    args = _pool1d_args(kernel_size, stride, padding, where)
    dx = avg_pool2d_backward(_as_2d(xp, grad_out), _shape_2d(x_shape, where), ceil_mode=ceil_mode,
                             count_include_pad=count_include_pad, **args)
    return _as_1d(xp, dx)
