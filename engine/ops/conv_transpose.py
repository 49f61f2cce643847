"""2-D transposed convolution (PyTorch's ``conv_transpose2d``) as GEMM + col2im.

A transposed convolution is the adjoint of :func:`engine.ops.conv2d`
with the same weight, stride, padding, dilation and groups: where conv2d reads
windows with im2col and multiplies by ``W``, the transpose multiplies by ``W^T``
and sums the columns back into the (larger) output with col2im. So

* forward:  ``y = col2im(W^T @ x)``;
* backward: ``dx = W @ im2col(grad_out)`` (a plain conv2d of ``grad_out``),
  ``dW = x @ im2col(grad_out)^T``.

Weights are ``(in_channels, out_channels/groups, kh, kw)`` as in PyTorch, and
the output size is ``(H-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``.
"""
from __future__ import annotations

from ..backends import Window

from .._checks import backend_for, pair, require_float, require_ndim
from ._common import _batch_chunks, _device, _itemsize


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of a transposed convolution:
    ``(size-1)*stride - 2*padding + dilation*(kernel-1) + output_padding + 1``."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _setup(x, weight, bias, stride, padding, output_padding, groups, dilation, where):
    backend = backend_for(x, weight, bias, where=where)
    require_ndim(x, 4, "(N, C, H, W)", where)
    require_ndim(weight, 4, "(in_channels, out_channels/groups, kh, kw)", where, "weight")
    require_float(x, where)
    require_float(weight, where, "weight")
    if x.dtype != weight.dtype:
        raise TypeError(f"{where}: input dtype {x.dtype} differs from weight dtype {weight.dtype}; "
                        "convert one of them (e.g. model.to('float64'))")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
    cin, og, kh, kw = weight.shape
    n, c, h, w = x.shape
    if c != cin:
        raise ValueError(f"{where}: input has {c} channels, expected {cin} "
                         f"(weight {tuple(weight.shape)} is (in_channels, out_channels/groups, kh, kw))")
    if cin % groups:
        raise ValueError(f"{where}: in_channels={cin} is not divisible by groups={groups}")
    o = og * groups
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"{where}: bias must have shape ({o},), got {tuple(bias.shape)}")
    if isinstance(padding, str):
        raise ValueError(f"{where}: padding must be an int or a pair of ints, got {padding!r} "
                         "(string paddings are not defined for transposed convolutions)")
    stride = pair(stride, "stride", where)
    dilation = pair(dilation, "dilation", where)
    ph, pw = pair(padding, "padding", where, minimum=0)
    oph, opw = pair(output_padding, "output_padding", where, minimum=0)
    for op, s, d, axis in ((oph, stride[0], dilation[0], "height"), (opw, stride[1], dilation[1], "width")):
        if op >= s and op >= d:
            raise ValueError(f"{where}: output_padding ({op} along the {axis}) must be smaller than the "
                             f"stride ({s}) or the dilation ({d})")
    oh = conv_transpose_output_size(h, kh, stride[0], ph, oph, dilation[0])
    ow = conv_transpose_output_size(w, kw, stride[1], pw, opw, dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{where}: output would be {oh}x{ow} for a {h}x{w} input (kernel {(kh, kw)}, "
                         f"stride {stride}, padding {(ph, pw)}, dilation {dilation}, output_padding "
                         f"{(oph, opw)}); reduce the padding")
    # The window of the conv2d this op is the adjoint of: it reads the (OH, OW)
    # output and produces the (H, W) input.
    win = Window(kh, kw, stride[0], stride[1], dilation[0], dilation[1], ph, ph, pw, pw, h, w)
    return backend, win, (n, o, oh, ow)


def _is_plain_gemm(win, x_shape, y_shape):
    """1x1 kernel, stride 1, no padding and no output padding: a pure GEMM."""
    return ((win.kh, win.kw, win.sh, win.sw) == (1, 1, 1, 1) and not any(win[6:10])
            and tuple(x_shape[2:]) == tuple(y_shape[2:]))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution, PyTorch's ``conv_transpose2d`` (same argument order):
    ``(N, C_in, H, W) -> (N, C_out, OH, OW)``, weight ``(C_in, C_out/groups, kh, kw)``.

    ``OH = (H-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1``
    (likewise for the width); ``output_padding`` must be smaller than the
    stride or the dilation.
    """
    where = "conv_transpose2d"
    backend, win, y_shape = _setup(x, weight, bias, stride, padding, output_padding, groups, dilation, where)
    xp = backend.xp
    n, cin, h, w = x.shape
    o = y_shape[1]
    kcols = (o // groups) * win.kh * win.kw
    w_mat_t = xp.permute_dims(xp.reshape(weight, (groups, cin // groups, kcols)), (0, 2, 1))
    if _is_plain_gemm(win, x.shape, y_shape):
        y = xp.matmul(w_mat_t, xp.reshape(x, (n, groups, cin // groups, h * w)))
        y = xp.reshape(y, y_shape)
    else:
        y = xp.empty(y_shape, dtype=x.dtype, device=_device(x))
        per_image = o * win.kh * win.kw * h * w * _itemsize(xp, x.dtype)
        for part in _batch_chunks(backend, n, per_image):
            nb = part.stop - part.start
            xg = xp.reshape(xp.permute_dims(x[part, ...], (1, 0, 2, 3)), (groups, cin // groups, nb * h * w))
            col = xp.reshape(xp.matmul(w_mat_t, xg), (o * win.kh * win.kw, nb * h * w))
            y[part, ...] = backend.col2im(col, (nb,) + tuple(y_shape[1:]), win)
    if bias is not None:
        y = y + xp.reshape(bias, (1, -1, 1, 1))
    return y


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, need_input_grad=True, has_bias=True):
    """Gradients of :func:`conv_transpose2d`: ``(dx, dweight, dbias)``.

    ``dx`` is a conv2d of ``grad_out`` with the same weight (im2col + GEMM);
    ``dx`` is ``None`` when ``need_input_grad`` is false, ``dbias`` when
    ``has_bias`` is false.
    """
    where = "conv_transpose2d backward"
    backend, win, y_shape = _setup(x, weight, None, stride, padding, output_padding, groups, dilation, where)
    xp = backend.xp
    if tuple(grad_out.shape) != tuple(y_shape):
        raise ValueError(f"{where}: grad_out must have shape {tuple(y_shape)}, got {tuple(grad_out.shape)}")
    n, cin, h, w = x.shape
    o = y_shape[1]
    cg = cin // groups
    kcols = (o // groups) * win.kh * win.kw
    w_mat = xp.reshape(weight, (groups, cg, kcols))
    db = backend.channel_sum(grad_out) if has_bias else None
    if _is_plain_gemm(win, x.shape, y_shape):
        g = xp.reshape(grad_out, (n, groups, o // groups, h * w))
        xs = xp.reshape(x, (n, groups, cg, h * w))
        dw = xp.sum(xp.matmul(xs, xp.permute_dims(g, (0, 1, 3, 2))), axis=0)
        dx = xp.reshape(xp.matmul(w_mat, g), (n, cin, h, w)) if need_input_grad else None
        return dx, xp.reshape(dw, weight.shape), db
    dw = None
    dx = xp.empty((n, cin, h, w), dtype=x.dtype, device=_device(x)) if need_input_grad else None
    per_image = o * win.kh * win.kw * h * w * _itemsize(xp, x.dtype)
    for part in _batch_chunks(backend, n, per_image):
        nb = part.stop - part.start
        col = xp.reshape(backend.im2col(grad_out[part, ...], win), (groups, kcols, nb * h * w))
        xg = xp.reshape(xp.permute_dims(x[part, ...], (1, 0, 2, 3)), (groups, cg, nb * h * w))
        part_dw = xp.matmul(xg, xp.permute_dims(col, (0, 2, 1)))
        dw = part_dw if dw is None else dw + part_dw
        if need_input_grad:
            dxg = xp.reshape(xp.matmul(w_mat, col), (cin, nb, h, w))
            dx[part, ...] = xp.permute_dims(dxg, (1, 0, 2, 3))
    return dx, xp.reshape(dw, weight.shape), db
