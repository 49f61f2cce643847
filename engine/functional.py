"""Functional ops: forward and backward of every layer, written once against the array API.

Each forward takes arrays of one backend and gets that backend (and its
namespace ``xp``) once per call; the backend supplies what the standard lacks
(padding, im2col/col2im, pooling windows). Backward functions take the
upstream gradient and whatever the forward needs to recompute, and return
gradients in the order of the forward's array arguments.

Shapes: images ``(N, C, H, W)``, conv weights ``(O, C/groups, kh, kw)``,
linear weights ``(out_features, in_features)`` as in PyTorch.
"""
from __future__ import annotations

import math

from backends import Window

from ._checks import backend_for, pair, require_float, require_ndim

__all__ = [
    "conv_output_size", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "global_avg_pool2d", "global_avg_pool2d_backward",
    "linear", "linear_backward", "relu", "relu_backward", "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "softmax", "softmax_backward",
    "log_softmax", "log_softmax_backward", "dropout", "cross_entropy", "cross_entropy_backward",
    "mse_loss", "mse_loss_backward", "CONV_METHODS",
]

CONV_METHODS = ("gemm", "strided", "naive")


# --------------------------------------------------------------------------- geometry
def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | tuple[int, int] = 0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a sliding window: ``floor((H + 2p - d(k-1) - 1)/s) + 1``.

    ``padding`` may be one int (both sides) or ``(before, after)``. With
    ``ceil_mode`` the division rounds up, but the last window must start
    inside the input or the leading padding (PyTorch's rule).
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    span = size + before + after - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1
    return out


def _conv_padding(padding, kernel, dilation, stride, where):
    """``(top, bottom, left, right)`` from an int, a pair, "valid" or "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{where}: padding='same' needs stride 1, got stride={stride}")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]  # the extra row/column goes last, as in PyTorch
            return tuple(pads)
        raise ValueError(f"{where}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = pair(padding, "padding", where, minimum=0)
    return ph, ph, pw, pw


def _window(x_shape, kernel, stride, pads, dilation, where, ceil_mode=False) -> Window:
    _, _, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = pads
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eff_h > h + pt + pb or eff_w > w + pl + pr:
        raise ValueError(
            f"{where}: kernel ({eff_h}x{eff_w} with dilation {dilation}) is larger than the padded "
            f"input ({h + pt + pb}x{w + pl + pr} = {h}x{w} plus padding {pads[0]},{pads[1]} rows and "
            f"{pads[2]},{pads[3]} columns)")
    oh = conv_output_size(h, kh, sh, (pt, pb), dh, ceil_mode)
    ow = conv_output_size(w, kw, sw, (pl, pr), dw, ceil_mode)
    return Window(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, oh, ow)


def _conv_setup(x, weight, bias, stride, padding, dilation, groups, method, where):
    backend = backend_for(x, weight, bias, where=where)
    require_ndim(x, 4, "(N, C, H, W)", where)
    require_ndim(weight, 4, "(out_channels, in_channels/groups, kh, kw)", where, "weight")
    require_float(x, where)
    require_float(weight, where, "weight")
    if x.dtype != weight.dtype:
        raise TypeError(f"{where}: input dtype {x.dtype} differs from weight dtype {weight.dtype}; "
                        "convert one of them (e.g. model.to('float64'))")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
    if method not in CONV_METHODS:
        raise ValueError(f"{where}: method must be one of {CONV_METHODS}, got {method!r}")
    o, cg, kh, kw = weight.shape
    c = x.shape[1]
    if c != cg * groups:
        raise ValueError(f"{where}: input has {c} channels, expected {cg * groups} "
                         f"(weight {tuple(weight.shape)} with groups={groups})")
    if o % groups:
        raise ValueError(f"{where}: out_channels={o} is not divisible by groups={groups}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"{where}: bias must have shape ({o},), got {tuple(bias.shape)}")
    stride = pair(stride, "stride", where)
    dilation = pair(dilation, "dilation", where)
    pads = _conv_padding(padding, (kh, kw), dilation, stride, where)
    win = _window(x.shape, (kh, kw), stride, pads, dilation, where)
    return backend, win


def _batch_chunks(backend, n, per_image_bytes):
    """Slices of the batch whose im2col buffer fits in the backend's workspace."""
    step = max(1, backend.workspace_bytes() // max(1, per_image_bytes))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _is_pointwise(win: Window) -> bool:
    return (win.kh, win.kw, win.sh, win.sw) == (1, 1, 1, 1) and not any(win[6:10])


# --------------------------------------------------------------------------- conv2d
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, method="gemm"):
    """2-D cross-correlation, PyTorch's ``conv2d``: ``(N, C, H, W) -> (N, O, OH, OW)``.

    ``padding`` is an int, a pair, ``"valid"`` or ``"same"``. ``method`` picks
    the algorithm: ``"gemm"`` (im2col + one matrix product per batch chunk),
    ``"strided"`` (strided window views + tensordot) or ``"naive"`` (a loop over
    output positions).
    """
    where = "conv2d"
    backend, win = _conv_setup(x, weight, bias, stride, padding, dilation, groups, method, where)
    xp = backend.xp
    if method == "gemm":
        y = _conv2d_gemm(backend, x, weight, win, groups)
    else:
        y = _per_group(xp, x, weight, groups, lambda xg, wg: _CONV_FORWARD[method](backend, xg, wg, win))
    if bias is not None:
        y += xp.reshape(bias, (1, -1, 1, 1))
    return y


def _conv2d_gemm(backend, x, weight, win, groups):
    xp = backend.xp
    n, c, h, w = x.shape
    o = weight.shape[0]
    cols_per_group = weight.shape[1] * win.kh * win.kw
    w_mat = xp.reshape(weight, (groups, o // groups, cols_per_group))
    if _is_pointwise(win):  # 1x1 convolution: the input already is the column matrix
        y = xp.matmul(w_mat, xp.reshape(x, (n, groups, c // groups, h * w)))
        return xp.reshape(y, (n, o, h, w))
    y = xp.empty((n, o, win.oh, win.ow), dtype=x.dtype, device=_device(x))
    itemsize = 8 if x.dtype == xp.float64 else 4
    per_image = c * win.kh * win.kw * win.oh * win.ow * itemsize
    for part in _batch_chunks(backend, n, per_image):
        nb = part.stop - part.start
        col = xp.reshape(backend.im2col(x[part, ...], win), (groups, cols_per_group, nb * win.oh * win.ow))
        out = xp.reshape(xp.matmul(w_mat, col), (o, nb, win.oh, win.ow))
        y[part, ...] = xp.permute_dims(out, (1, 0, 2, 3))
    return y


def _conv2d_strided(backend, x, weight, win):
    xp = backend.xp
    windows = backend.sliding_windows(backend.pad2d(x, win), win)  # (N, C, OH, OW, kh, kw)
    y = xp.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))  # (N, OH, OW, O)
    return xp.permute_dims(y, (0, 3, 1, 2))


def _conv2d_naive(backend, x, weight, win):
    xp = backend.xp
    xpad = backend.pad2d(x, win)
    n, o = x.shape[0], weight.shape[0]
    y = xp.empty((n, o, win.oh, win.ow), dtype=x.dtype, device=_device(x))
    for oh in range(win.oh):
        for ow in range(win.ow):
            patch = xpad[:, :, _window_at(oh, win.sh, win.dh, win.kh), _window_at(ow, win.sw, win.dw, win.kw)]
            y[:, :, oh, ow] = xp.tensordot(patch, weight, axes=([1, 2, 3], [1, 2, 3]))
    return y


_CONV_FORWARD = {"strided": _conv2d_strided, "naive": _conv2d_naive}


def _window_at(pos, stride, dilation, kernel):
    start = pos * stride
    return slice(start, start + dilation * (kernel - 1) + 1, dilation)


def _per_group(xp, x, weight, groups, fn, axis_in=1):
    if groups == 1:
        return fn(x, weight)
    cg, og = x.shape[1] // groups, weight.shape[0] // groups
    outs = [fn(x[:, g * cg:(g + 1) * cg, ...], weight[g * og:(g + 1) * og, ...]) for g in range(groups)]
    return xp.concat(outs, axis=axis_in)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, method="gemm",
                    need_input_grad=True, has_bias=True):
    """Gradients of :func:`conv2d`: ``(dx, dweight, dbias)``.

    ``dx`` is ``None`` when ``need_input_grad`` is false (the first layer of a
    network needs none), ``dbias`` when ``has_bias`` is false.
    """
    where = "conv2d backward"
    backend, win = _conv_setup(x, weight, None, stride, padding, dilation, groups, method, where)
    xp = backend.xp
    expected = (x.shape[0], weight.shape[0], win.oh, win.ow)
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"{where}: grad_out must have shape {expected}, got {tuple(grad_out.shape)}")
    db = xp.sum(grad_out, axis=(0, 2, 3)) if has_bias else None
    if method == "gemm":
        dx, dw = _conv2d_backward_gemm(backend, grad_out, x, weight, win, groups, need_input_grad)
    else:
        fn = _CONV_BACKWARD[method]
        if groups == 1:
            dx, dw = fn(backend, grad_out, x, weight, win)
        else:
            cg, og = x.shape[1] // groups, weight.shape[0] // groups
            parts = [fn(backend, grad_out[:, g * og:(g + 1) * og, ...], x[:, g * cg:(g + 1) * cg, ...],
                        weight[g * og:(g + 1) * og, ...], win) for g in range(groups)]
            dx = xp.concat([p[0] for p in parts], axis=1)
            dw = xp.concat([p[1] for p in parts], axis=0)
        if not need_input_grad:
            dx = None
    return dx, dw, db


def _conv2d_backward_gemm(backend, grad_out, x, weight, win, groups, need_input_grad):
    xp = backend.xp
    n, c, h, w = x.shape
    o = weight.shape[0]
    og, kcols = o // groups, weight.shape[1] * win.kh * win.kw
    w_mat = xp.reshape(weight, (groups, og, kcols))
    w_mat_t = xp.permute_dims(w_mat, (0, 2, 1))
    if _is_pointwise(win):
        g = xp.reshape(grad_out, (n, groups, og, h * w))
        xs = xp.reshape(x, (n, groups, c // groups, h * w))
        dw = xp.sum(xp.matmul(g, xp.permute_dims(xs, (0, 1, 3, 2))), axis=0)
        dx = xp.reshape(xp.matmul(w_mat_t, g), (n, c, h, w)) if need_input_grad else None
        return dx, xp.reshape(dw, weight.shape)
    dw = None
    dx = xp.empty((n, c, h, w), dtype=x.dtype, device=_device(x)) if need_input_grad else None
    itemsize = 8 if x.dtype == xp.float64 else 4
    per_image = c * win.kh * win.kw * win.oh * win.ow * itemsize
    for part in _batch_chunks(backend, n, per_image):
        nb = part.stop - part.start
        cols = nb * win.oh * win.ow
        col = xp.reshape(backend.im2col(x[part, ...], win), (groups, kcols, cols))
        g = xp.reshape(xp.permute_dims(grad_out[part, ...], (1, 0, 2, 3)), (groups, og, cols))
        part_dw = xp.matmul(g, xp.permute_dims(col, (0, 2, 1)))
        dw = part_dw if dw is None else dw + part_dw
        if need_input_grad:
            dcol = xp.reshape(xp.matmul(w_mat_t, g), (c * win.kh * win.kw, cols))
            dx[part, ...] = backend.col2im(dcol, (nb, c, h, w), win)
    return dx, xp.reshape(dw, weight.shape)


def _conv2d_backward_strided(backend, grad_out, x, weight, win):
    xp = backend.xp
    n, c, h, w = x.shape
    windows = backend.sliding_windows(backend.pad2d(x, win), win)  # (N, C, OH, OW, kh, kw)
    dw = xp.tensordot(grad_out, windows, axes=([0, 2, 3], [0, 2, 3]))  # (O, C, kh, kw)
    dcol = xp.tensordot(weight, grad_out, axes=([0], [1]))  # (C, kh, kw, N, OH, OW)
    dx = backend.col2im(xp.reshape(dcol, (c * win.kh * win.kw, n * win.oh * win.ow)), x.shape, win)
    return dx, dw


def _conv2d_backward_naive(backend, grad_out, x, weight, win):
    xp = backend.xp
    n, c, h, w = x.shape
    xpad = backend.pad2d(x, win)
    hp, wp = xpad.shape[2], xpad.shape[3]
    dxpad = xp.zeros((n, c, hp, wp), dtype=x.dtype, device=_device(x))
    dw = xp.zeros(weight.shape, dtype=x.dtype, device=_device(x))
    for oh in range(win.oh):
        for ow in range(win.ow):
            rows = _window_at(oh, win.sh, win.dh, win.kh)
            cols = _window_at(ow, win.sw, win.dw, win.kw)
            g = grad_out[:, :, oh, ow]  # (N, O)
            dw += xp.tensordot(g, xpad[:, :, rows, cols], axes=([0], [0]))
            dxpad[:, :, rows, cols] = dxpad[:, :, rows, cols] + xp.tensordot(g, weight, axes=([1], [0]))
    dx = dxpad[:, :, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w]
    return dx, dw


_CONV_BACKWARD = {"strided": _conv2d_backward_strided, "naive": _conv2d_backward_naive}


# --------------------------------------------------------------------------- pooling
def _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, where):
    backend = backend_for(x, where=where)
    require_ndim(x, 4, "(N, C, H, W)", where)
    require_float(x, where)
    return backend, _pool_window(x.shape, kernel_size, stride, padding, dilation, ceil_mode, where)


def _pool_window(x_shape, kernel_size, stride, padding, dilation, ceil_mode, where):
    if len(x_shape) != 4:
        raise ValueError(f"{where}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    kernel = pair(kernel_size, "kernel_size", where)
    stride = kernel if stride is None else pair(stride, "stride", where)
    dilation = pair(dilation, "dilation", where)
    ph, pw = pair(padding, "padding", where, minimum=0)
    eff = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if ph > eff[0] // 2 or pw > eff[1] // 2:
        raise ValueError(f"{where}: padding {(ph, pw)} must be at most half the (dilated) kernel "
                         f"size {eff}")
    return _window(x_shape, kernel, stride, (ph, ph, pw, pw), dilation, where, ceil_mode)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows: ``(N, C, H, W) -> (N, C, OH, OW)``.

    ``stride`` defaults to ``kernel_size``. With ``return_indices`` also returns
    the flat in-window position ``i*kw + j`` of each maximum (what
    :func:`max_pool2d_backward` needs).
    """
    backend, win = _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    y, idx = backend.max_pool2d(x, win)
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_out, indices, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False):
    """Gradient of :func:`max_pool2d` for its input, ``x_shape`` shaped."""
    backend = backend_for(grad_out, indices, where="max_pool2d backward")
    win = _pool_window(x_shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d backward")
    return backend.max_pool2d_backward(grad_out, indices, tuple(x_shape), win)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over sliding windows: ``(N, C, H, W) -> (N, C, OH, OW)``, PyTorch's divisor rules."""
    backend, win = _pool_setup(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    return backend.avg_pool2d(x, win, _avg_divisor(backend, x.shape, x.dtype, win, count_include_pad,
                                                   divisor_override))


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d` for its input, ``x_shape`` shaped."""
    backend = backend_for(grad_out, where="avg_pool2d backward")
    win = _pool_window(x_shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d backward")
    divisor = _avg_divisor(backend, x_shape, grad_out.dtype, win, count_include_pad, divisor_override)
    return backend.avg_pool2d_backward(grad_out, tuple(x_shape), win, divisor)


def _avg_divisor(backend, x_shape, dtype, win, count_include_pad, divisor_override):
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or divisor_override <= 0:
            raise ValueError(f"avg_pool2d: divisor_override must be a positive int, got {divisor_override!r}")
        return float(divisor_override)
    _, _, h, w = x_shape
    no_overhang = win.padded_size(h, w) == (h + win.pad_top + win.pad_bottom, w + win.pad_left + win.pad_right)
    if no_overhang and (count_include_pad or not any(win[6:10])):
        return float(win.kh * win.kw)
    return backend.avg_pool_divisor(tuple(x_shape), win, count_include_pad, dtype)


def global_avg_pool2d(x):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``."""
    backend = backend_for(x, where="global_avg_pool2d")
    require_ndim(x, 4, "(N, C, H, W)", "global_avg_pool2d")
    return backend.xp.mean(x, axis=(2, 3))


def global_avg_pool2d_backward(grad_out, x_shape):
    """Gradient of :func:`global_avg_pool2d`: each pixel gets ``grad / (H*W)``."""
    xp = backend_for(grad_out, where="global_avg_pool2d backward").xp
    n, c, h, w = x_shape
    g = xp.reshape(grad_out / (h * w), (n, c, 1, 1))
    return xp.broadcast_to(g, tuple(x_shape))


# --------------------------------------------------------------------------- linear
def linear(x, weight, bias=None):
    """``x @ weight.T + bias``: ``(N, in_features) -> (N, out_features)``."""
    where = "linear"
    backend = backend_for(x, weight, bias, where=where)
    require_ndim(weight, 2, "(out_features, in_features)", where, "weight")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{where}: input must have {weight.shape[1]} features in its last dimension, "
                         f"got shape {tuple(x.shape)}")
    require_float(x, where)
    xp = backend.xp
    y = xp.matmul(x, xp.matrix_transpose(weight))
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_out, x, weight, need_input_grad=True, has_bias=True):
    """Gradients of :func:`linear`: ``(dx, dweight, dbias)`` for 2-D ``x``."""
    xp = backend_for(grad_out, x, weight, where="linear backward").xp
    dw = xp.matmul(xp.matrix_transpose(grad_out), x)
    db = xp.sum(grad_out, axis=0) if has_bias else None
    dx = xp.matmul(grad_out, weight) if need_input_grad else None
    return dx, dw, db


# --------------------------------------------------------------------------- activations
def relu(x):
    """``max(x, 0)``."""
    xp = backend_for(x, where="relu").xp
    return xp.where(x > 0, x, xp.zeros((), dtype=x.dtype))


def relu_backward(grad_out, y):
    """Gradient of :func:`relu` given its output ``y``."""
    xp = backend_for(grad_out, y, where="relu backward").xp
    return xp.where(y > 0, grad_out, xp.zeros((), dtype=grad_out.dtype))


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
        from . import _state
        rng = _state.host_rng()
    keep = backend.uniform(tuple(x.shape), x.dtype, rng) >= p
    mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - p))
    return x * mask, mask


# --------------------------------------------------------------------------- losses
def _check_labels(backend, logits, target, where):
    xp = backend.xp
    require_ndim(logits, 2, "(N, num_classes)", where, "logits")
    require_float(logits, where, "logits")
    if "int" not in str(target.dtype):
        raise TypeError(f"{where}: target must hold integer class labels, got dtype {target.dtype}")
    if tuple(target.shape) != (logits.shape[0],):
        raise ValueError(f"{where}: target must have shape ({logits.shape[0]},) to match logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    n_classes = logits.shape[1]
    if target.shape[0] and bool(xp.any((target < 0) | (target >= n_classes))):
        lo, hi = int(xp.min(target)), int(xp.max(target))
        raise ValueError(f"{where}: labels must be in [0, {n_classes - 1}] for {n_classes} classes, "
                         f"got values in [{lo}, {hi}]")


def _one_hot(xp, target, n_classes, dtype):
    classes = xp.arange(n_classes, dtype=target.dtype, device=_device(target))
    return xp.astype(xp.reshape(target, (-1, 1)) == xp.reshape(classes, (1, -1)), dtype)


def _check_reduction(reduction, where):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of ``logits (N, K)`` against integer labels ``target (N,)``.

    Stable for logits in the thousands (log-sum-exp). ``reduction`` is
    ``"mean"``, ``"sum"`` or ``"none"``.
    """
    where = "cross_entropy"
    backend = backend_for(logits, target, where=where)
    _check_reduction(reduction, where)
    _check_labels(backend, logits, target, where)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    xp = backend.xp
    n_classes = logits.shape[1]
    logp = log_softmax(logits, axis=1)
    weights = _one_hot(xp, target, n_classes, logits.dtype)
    if label_smoothing:
        weights = weights * (1 - label_smoothing) + label_smoothing / n_classes
    losses = -xp.sum(weights * logp, axis=1)
    return _reduce(xp, losses, reduction)


def cross_entropy_backward(logits, target, reduction="mean", label_smoothing=0.0, grad_out=1.0):
    """Gradient of :func:`cross_entropy` for ``logits``: ``(softmax - target) / N``."""
    xp = backend_for(logits, target, where="cross_entropy backward").xp
    n_classes = logits.shape[1]
    weights = _one_hot(xp, target, n_classes, logits.dtype)
    if label_smoothing:
        weights = weights * (1 - label_smoothing) + label_smoothing / n_classes
    grad = softmax(logits, axis=1) * xp.sum(weights, axis=1, keepdims=True) - weights
    return _scale_grad(xp, grad, grad_out, reduction, logits.shape[0])


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum) of squared differences."""
    where = "mse_loss"
    xp = backend_for(input, target, where=where).xp
    _check_reduction(reduction, where)
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{where}: input shape {tuple(input.shape)} differs from target shape "
                         f"{tuple(target.shape)}")
    diff = input - target
    return _reduce(xp, diff * diff, reduction)


def mse_loss_backward(input, target, reduction="mean", grad_out=1.0):
    """Gradient of :func:`mse_loss` for ``input``."""
    xp = backend_for(input, target, where="mse_loss backward").xp
    grad = 2 * (input - target)
    return _scale_grad(xp, grad, grad_out, reduction, math.prod(input.shape))


def _reduce(xp, losses, reduction):
    if reduction == "mean":
        return xp.mean(losses) if losses.shape[0] else xp.sum(losses)
    if reduction == "sum":
        return xp.sum(losses)
    return losses


def _scale_grad(xp, grad, grad_out, reduction, count):
    if reduction == "mean":
        grad = grad / max(count, 1)
    if reduction == "none" and getattr(grad_out, "ndim", grad.ndim) < grad.ndim:
        return grad * xp.reshape(grad_out, (-1,) + (1,) * (grad.ndim - 1))
    return grad * grad_out


def _device(x):
    from array_api_compat import device
    return device(x)
