"""Max, average and global average pooling, forward and backward."""
from __future__ import annotations

from .._checks import backend_for, pair, require_float, require_ndim
from ._common import _device, _plain, _remember, _window


#: ``(backend, window)`` of the calls :func:`_pool_setup` has checked, by what the checks read
#: (as for the convolutions' setups: 2.5 us of a batch-1 pooling's 14 us of Python).
_SETUPS: dict = {}


def _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, where):
    key = None
    if _plain(kernel_size) and (stride is None or _plain(stride)) and _plain(padding) and _plain(dilation) \
            and type(ceil_mode) is bool:
        try:
            key = (type(x), x.shape, x.dtype, kernel_size, stride, padding, dilation, ceil_mode, where)
            found = _SETUPS.get(key)
        except (AttributeError, TypeError):  # not an array, or an unhashable dtype: checked below
            key = found = None
        if found is not None:
            return found
    return _remember(_SETUPS, key, _checked_pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, where))


def _checked_pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, where):
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
    if ph > kernel[0] // 2 or pw > kernel[1] // 2:  # PyTorch's bound: every window then holds input
        raise ValueError(f"{where}: padding {(ph, pw)} must be at most half the kernel size {kernel}")
    return _window(x_shape, kernel, stride, (ph, ph, pw, pw), dilation, where, ceil_mode)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows: ``(N, C, H, W) -> (N, C, OH, OW)``.

    ``stride`` defaults to ``kernel_size``. With ``return_indices`` also returns
    the flat in-window position ``i*kw + j`` of each maximum (what
    :func:`max_pool2d_backward` needs), in an integer dtype that depends on the
    backend (uint8 on NumPy for windows of up to 256 elements, else int64);
    :func:`max_pool2d_flat_indices` turns them into PyTorch's per-plane
    ``row * W + col`` (what ``return_indices=True`` gives in PyTorch).
    """
    backend, win = _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    y, idx = backend.max_pool2d(x, win)
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_out, indices, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False):
    """Gradient of :func:`max_pool2d` for its input, ``x_shape`` shaped."""
    where = "max_pool2d backward"
    backend = backend_for(grad_out, indices, where=where)
    win = _pool_window(x_shape, kernel_size, stride, padding, dilation, ceil_mode, where)
    _require_output_shape(grad_out, x_shape, win, where, "grad_out")
    _require_output_shape(indices, x_shape, win, where, "indices")
    return backend.max_pool2d_backward(grad_out, indices, tuple(x_shape), win)


def _require_output_shape(a, x_shape, win, where, name):
    expected = (x_shape[0], x_shape[1], win.oh, win.ow)
    if tuple(a.shape) != expected:
        raise ValueError(f"{where}: {name} must have the pooled shape {expected} of an input {tuple(x_shape)}, "
                         f"got {tuple(a.shape)}")


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
    _require_output_shape(grad_out, x_shape, win, "avg_pool2d backward", "grad_out")
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
    return g * xp.ones(tuple(x_shape), dtype=g.dtype)  # a writable array, not a broadcast view




# ----------------------------------------------------------------------------- PyTorch's flat indices
def _index_setup(indices, x_shape, kernel_size, stride, padding, dilation, ceil_mode, where):
    """``(backend, window, indices as int64, rows, cols)``: ``rows (OH, 1)`` and ``cols (1, OW)``
    are the top-left input position of every window (padding subtracted)."""
    backend = backend_for(indices, where=where)
    win = _pool_window(x_shape, kernel_size, stride, padding, dilation, ceil_mode, where)
    _require_output_shape(indices, x_shape, win, where, "indices")
    xp = backend.xp
    as_int = xp.astype(indices, xp.int64)
    rows = xp.reshape(xp.arange(win.oh, dtype=xp.int64, device=_device(as_int)), (win.oh, 1)) * win.sh - win.pad_top
    cols = xp.reshape(xp.arange(win.ow, dtype=xp.int64, device=_device(as_int)), (1, win.ow)) * win.sw - win.pad_left
    return backend, win, as_int, rows, cols


def max_pool2d_flat_indices(indices, x_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """PyTorch's ``return_indices`` convention from :func:`max_pool2d`'s in-window indices:
    the flat position ``row * W + col`` of each maximum in its ``(H, W)`` input plane
    (int64, shape ``(N, C, OH, OW)``), what ``torch.nn.functional.max_pool2d`` and
    :func:`engine.ops.max_unpool2d` use."""
    _, win, k, rows, cols = _index_setup(indices, x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                                         "max_pool2d_flat_indices")
    row = rows + (k // win.kw) * win.dh
    col = cols + (k % win.kw) * win.dw
    return row * x_shape[3] + col


def max_pool2d_window_indices(flat_indices, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                              ceil_mode=False):
    """The inverse of :func:`max_pool2d_flat_indices`: in-window indices ``i*kw + j``
    (int64) from PyTorch's flat ones, for :func:`max_pool2d_backward`. Flat
    indices outside their window raise ``ValueError`` (checked on host backends)."""
    where = "max_pool2d_window_indices"
    backend, win, flat, rows, cols = _index_setup(flat_indices, x_shape, kernel_size, stride, padding, dilation,
                                                  ceil_mode, where)
    xp = backend.xp
    dr, dc = flat // x_shape[3] - rows, flat % x_shape[3] - cols
    i, j = dr // win.dh, dc // win.dw
    if backend.host_memory and bool(xp.any((dr % win.dh != 0) | (dc % win.dw != 0) | (i < 0) | (i >= win.kh)
                                           | (j < 0) | (j >= win.kw))):
        raise ValueError(f"{where}: some indices do not point inside their pooling window (kernel "
                         f"{(win.kh, win.kw)}, stride {(win.sh, win.sw)}) of an input {tuple(x_shape)}")
    return i * win.kw + j
