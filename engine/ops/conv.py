"""2-D convolution as im2col + GEMM (and the strided and naive variants kept for
benchmarks and tests), forward and backward."""
from __future__ import annotations

from .._checks import backend_for, pair, positive_int, require_float, require_ndim, require_same_dtype
from ._common import (_batch_chunks, conv_padding, _device, _is_pointwise, _itemsize, _plain, _remember, _window,
                      _window_at)

CONV_METHODS = ("gemm", "strided", "naive")


#: ``(backend, window)`` of the calls :func:`_conv_setup` has checked, by what the checks read
#: (the arrays' types, shapes and dtypes, the arguments as they came): a batch-1 layer spent
#: 9 us of its 60 in the checks (SimpleCNN's 32->64 at 14x14).
_SETUPS: dict = {}


def _conv_setup(x, weight, bias, stride, padding, dilation, groups, method, where):
    key = None
    if _plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int and type(method) is str:
        try:
            key = (type(x), x.shape, x.dtype, type(weight), weight.shape, weight.dtype, type(bias),
                   None if bias is None else (bias.shape, bias.dtype), stride, padding, dilation, groups, method,
                   where)
            found = _SETUPS.get(key)
        except (AttributeError, TypeError):  # not arrays, or an unhashable dtype: checked below
            key = found = None
        if found is not None:
            return found
    return _remember(_SETUPS, key, _checked_conv_setup(x, weight, bias, stride, padding, dilation, groups, method,
                                                       where))


def _checked_conv_setup(x, weight, bias, stride, padding, dilation, groups, method, where):
    backend = backend_for(x, weight, bias, where=where)
    require_ndim(x, 4, "(N, C, H, W)", where)
    require_ndim(weight, 4, "(out_channels, in_channels/groups, kh, kw)", where, "weight")
    require_float(x, where)
    require_same_dtype(x, weight, bias, where)
    groups = positive_int(groups, "groups", where)
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
    pads = conv_padding(padding, (kh, kw), dilation, stride, where)
    win = _window(x.shape, (kh, kw), stride, pads, dilation, where)
    return backend, win


# --------------------------------------------------------------------------- conv2d
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, method="gemm",
           keep_columns=False):
    """2-D cross-correlation, PyTorch's ``conv2d``: ``(N, C, H, W) -> (N, O, OH, OW)``.

    ``padding`` is an int, a pair, ``"valid"`` or ``"same"``. ``method`` picks
    the algorithm: ``"gemm"`` (im2col + one matrix product per batch chunk),
    ``"strided"`` (strided window views + tensordot) or ``"naive"`` (a loop over
    output positions).

    ``keep_columns=True`` returns ``(y, columns)``: the im2col columns, for
    :func:`conv2d_backward` to reuse instead of building them again; ``None``
    when they would take more than the backend's ``keep_columns_bytes`` (or
    the method builds none).
    """
    where = "conv2d"
    backend, win = _conv_setup(x, weight, bias, stride, padding, dilation, groups, method, where)
    xp = backend.xp
    columns = None
    y = backend.conv2d_fused(x, weight, bias, win, groups) if method == "gemm" else None
    if y is None:
        if method == "gemm":
            y, columns = _conv2d_gemm(backend, x, weight, win, groups, keep_columns)
        else:
            y = _per_group(xp, x, weight, groups, lambda xg, wg: _CONV_FORWARD[method](backend, xg, wg, win))
        if bias is not None:
            y += xp.reshape(bias, (1, -1, 1, 1))
    return (y, columns) if keep_columns else y


class Im2colColumns:
    """The im2col columns of one :func:`conv2d` call, one array per batch chunk.

    Opaque: pass it to :func:`conv2d_backward` with the same input. It holds
    ``x_shape``, the window and the chunks, so a mismatch is caught.
    """

    __slots__ = ("x_shape", "win", "parts")

    def __init__(self, x_shape, win, parts):
        self.x_shape, self.win, self.parts = tuple(x_shape), win, parts


def _grouped_matmul(xp, a, b, groups, transpose_a=False, transpose_b=False):
    """Per group ``g``: ``op(a_g) @ op(b_g)``, stacked along the rows, where
    ``a_g``/``b_g`` are the g-th blocks of rows of ``a``/``b`` and ``op``
    transposes when asked.

    2-D products only: NumPy's stacked (3-D) matmul runs 2-3x slower than its
    plain BLAS GEMM on the same data (measured on the im2col shapes).
    """
    def block(m, g, transpose):
        rows = m.shape[0] // groups
        m = m[g * rows:(g + 1) * rows, :] if groups > 1 else m
        return xp.matrix_transpose(m) if transpose else m
    products = [xp.matmul(block(a, g, transpose_a), block(b, g, transpose_b)) for g in range(groups)]
    return products[0] if groups == 1 else xp.concat(products, axis=0)


def _conv2d_gemm(backend, x, weight, win, groups, keep=False):
    """``(y, columns)``; ``columns`` is an :class:`Im2colColumns` when ``keep``
    and they fit in ``backend.keep_columns_bytes``, else ``None``."""
    xp = backend.xp
    n, c, h, w = x.shape
    o = weight.shape[0]
    w_mat = xp.reshape(weight, (o, -1))  # (O, C/groups * kh * kw)
    if _is_pointwise(win):  # 1x1 convolution: each image already is its column matrix, no copy
        y = xp.empty((n, o, h, w), dtype=x.dtype, device=_device(x))
        for i in range(n):
            y[i, ...] = xp.reshape(_grouped_matmul(xp, w_mat, xp.reshape(x[i, ...], (c, h * w)), groups),
                                   (o, h, w))
        return y, None
    per_image = _col_bytes_per_image(xp, x, win)
    keep = keep and per_image * n <= backend.keep_columns_bytes
    kept = []
    y = xp.empty((n, o, win.oh, win.ow), dtype=x.dtype, device=_device(x))
    for part in _batch_chunks(backend, n, per_image):
        nb = part.stop - part.start
        col = backend.im2col(x[part, ...], win)
        out = _grouped_matmul(xp, w_mat, col, groups)  # (O, nb*OH*OW)
        y[part, ...] = xp.permute_dims(xp.reshape(out, (o, nb, win.oh, win.ow)), (1, 0, 2, 3))
        if keep:
            kept.append((part, col))
    return y, (Im2colColumns(x.shape, win, kept) if keep else None)


def _col_bytes_per_image(xp, x, win):
    return x.shape[1] * win.kh * win.kw * win.oh * win.ow * _itemsize(xp, x.dtype)


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


def _per_group(xp, x, weight, groups, fn, axis_in=1):
    if groups == 1:
        return fn(x, weight)
    cg, og = x.shape[1] // groups, weight.shape[0] // groups
    outs = [fn(x[:, g * cg:(g + 1) * cg, ...], weight[g * og:(g + 1) * og, ...]) for g in range(groups)]
    return xp.concat(outs, axis=axis_in)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, method="gemm",
                    need_input_grad=True, has_bias=True, columns=None, need_weight_grad=True):
    """Gradients of :func:`conv2d`: ``(dx, dweight, dbias)``.

    ``dx`` is ``None`` when ``need_input_grad`` is false (the first layer of a
    network needs none), ``dweight`` when ``need_weight_grad`` is false (a
    frozen layer), ``dbias`` when ``has_bias`` is false. ``columns``:
    what ``conv2d(..., keep_columns=True)`` returned for this ``x``, to skip
    building the im2col columns again.
    """
    where = "conv2d backward"
    backend, win = _conv_setup(x, weight, None, stride, padding, dilation, groups, method, where)
    xp = backend.xp
    expected = (x.shape[0], weight.shape[0], win.oh, win.ow)
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"{where}: grad_out must have shape {expected}, got {tuple(grad_out.shape)}")
    db = backend.channel_sum(grad_out) if has_bias else None
    if columns is not None and not isinstance(columns, Im2colColumns):
        raise TypeError(f"{where}: columns must come from conv2d(..., keep_columns=True), "
                        f"got {type(columns).__name__}")
    if columns is not None and (columns.x_shape != tuple(x.shape) or columns.win != win):
        raise ValueError(f"{where}: columns were built for input {columns.x_shape} and window {columns.win}, "
                         f"not for input {tuple(x.shape)} and window {win}")
    if method == "gemm":
        dx, dw = None, None
        if need_input_grad or need_weight_grad:
            dx, dw = backend.conv2d_backward_fused(grad_out, x, weight, win, groups, need_input_grad,
                                                   need_weight_grad)
        missing_dx, missing_dw = need_input_grad and dx is None, need_weight_grad and dw is None
        if missing_dx or missing_dw:
            dx_gemm, dw_gemm = _conv2d_backward_gemm(backend, grad_out, x, weight, win, groups, missing_dx,
                                                     columns, missing_dw)
            dx = dx if dx is not None else dx_gemm
            dw = dw if dw is not None else dw_gemm
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
        if not need_weight_grad:
            dw = None
    return dx, dw, db


def _conv2d_backward_gemm(backend, grad_out, x, weight, win, groups, need_input_grad, columns=None,
                          need_weight_grad=True):
    """``(dx, dw)`` through im2col/col2im and GEMMs; each is ``None`` when not needed."""
    xp = backend.xp
    n, c, h, w = x.shape
    o = weight.shape[0]
    w_mat = xp.reshape(weight, (o, -1))
    dw = None
    dx = xp.empty((n, c, h, w), dtype=x.dtype, device=_device(x)) if need_input_grad else None
    if _is_pointwise(win):
        for i in range(n):
            g = xp.reshape(grad_out[i, ...], (o, h * w))
            if need_weight_grad:
                part_dw = _grouped_matmul(xp, g, xp.reshape(x[i, ...], (c, h * w)), groups, transpose_b=True)
                dw = part_dw if dw is None else dw + part_dw
            if need_input_grad:
                dx[i, ...] = xp.reshape(_grouped_matmul(xp, w_mat, g, groups, transpose_a=True), (c, h, w))
        return dx, _weight_grad_or_zeros(xp, dw, weight, need_weight_grad)
    if columns is not None:
        chunks = columns.parts
    else:
        chunks = [(part, None) for part in _batch_chunks(backend, n, _col_bytes_per_image(xp, x, win))]
    for part, col in chunks:
        nb = part.stop - part.start
        g = xp.reshape(xp.permute_dims(grad_out[part, ...], (1, 0, 2, 3)), (o, nb * win.oh * win.ow))
        if need_weight_grad:
            if col is None:
                col = backend.im2col(x[part, ...], win)  # (C*kh*kw, nb*OH*OW)
            part_dw = _grouped_matmul(xp, g, col, groups, transpose_b=True)
            dw = part_dw if dw is None else dw + part_dw
        if need_input_grad:
            dcol = _grouped_matmul(xp, w_mat, g, groups, transpose_a=True)
            dx[part, ...] = backend.col2im(dcol, (nb, c, h, w), win)
    return dx, _weight_grad_or_zeros(xp, dw, weight, need_weight_grad)


def _weight_grad_or_zeros(xp, dw, weight, needed):
    if not needed:
        return None
    if dw is None:  # an empty batch: no image contributed
        return xp.zeros(weight.shape, dtype=weight.dtype, device=_device(weight))
    return xp.reshape(dw, weight.shape)


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


