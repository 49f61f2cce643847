"""NumPy backend: the default, on the CPU through NumPy's BLAS."""
from __future__ import annotations

import numpy as np
from array_api_compat import numpy as xp_numpy
from numpy.lib.stride_tricks import as_strided

from .base import Backend, Window, win_offsets


class NumpyBackend(Backend):
    name = "numpy"
    xp = xp_numpy
    # Chunks of ~4 MiB keep the im2col buffer in cache while the GEMM reads it
    # (measured with `python -m bench`; larger chunks were slower on big layers).
    default_workspace_bytes = 4 << 20

    def owns(self, x) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def asarray(self, data, dtype=None):
        if not isinstance(data, np.ndarray) and hasattr(data, "__dlpack__") and not self.owns(data):
            data = np.from_dlpack(data)
        return np.asarray(data, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def pad2d(self, x, win: Window, value=0.0):
        n, c, h, w = x.shape
        hp, wp = win.padded_size(h, w)
        if (hp, wp) == (h, w):
            return x
        out = np.empty((n, c, hp, wp), dtype=x.dtype)
        # Fill only the border, then copy the interior once.
        top, left = win.pad_top, win.pad_left
        out[:, :, :top, :] = value
        out[:, :, top + h:, :] = value
        out[:, :, top:top + h, :left] = value
        out[:, :, top:top + h, left + w:] = value
        out[:, :, top:top + h, left:left + w] = x
        return out

    def im2col(self, x, win: Window):
        n, c, _, _ = x.shape
        xt = self.pad2d(x, win).transpose(1, 0, 2, 3)
        col = np.empty((c, win.kh, win.kw, n, win.oh, win.ow), dtype=x.dtype)
        for i in range(win.kh):
            for j in range(win.kw):
                rows, cols = win.slices(i, j)
                col[:, i, j] = xt[:, :, rows, cols]
        return col.reshape(c * win.kh * win.kw, n * win.oh * win.ow)

    def col2im(self, col, x_shape, win: Window):
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        col = col.reshape(c, win.kh, win.kw, n, win.oh, win.ow)
        acc = np.zeros((n, c, hp, wp), dtype=col.dtype)
        acc_t = acc.transpose(1, 0, 2, 3)  # a view: adds land in the (N, C, H, W) buffer
        for i in range(win.kh):
            for j in range(win.kw):
                rows, cols = win.slices(i, j)
                acc_t[:, :, rows, cols] += col[:, i, j]
        return acc[:, :, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w]

    def max_pool2d(self, x, win: Window):
        # Without padding: a separable max, first along each row (W), then down
        # the columns (H), with the first maximum kept at each stage; that is
        # the first maximum in the window's row-major order, as in the generic
        # rule. Indices are uint8 when the window has at most 256 elements.
        # NaN (np.maximum propagates it) and padding go the generic way.
        if win.kh * win.kw == 1 or _touches_padding(x.shape, win):
            return super().max_pool2d(x, win)
        need_h = (win.oh - 1) * win.sh + win.dh * (win.kh - 1) + 1
        rows_max, col_idx = _first_max(x[:, :, :need_h, :], win.kw, win.dw, win.sw, win.ow, axis=3,
                                       idx_dtype=_index_dtype(win))
        best, idx = _first_max(rows_max, win.kh, win.dh, win.sh, win.oh, axis=2, idx_dtype=col_idx.dtype,
                               inner_idx=col_idx, inner_size=win.kw)
        if np.isnan(best).any():
            return super().max_pool2d(x, win)
        return best, idx

    def max_pool2d_backward(self, grad_out, idx, x_shape, win: Window):
        # Windows that do not overlap write each input pixel at most once, so
        # each kernel offset's gradients are plain stores: the gradient's bits
        # where the offset won, zero bits elsewhere (exact, even for inf/NaN).
        if win.sh < win.dh * (win.kh - 1) + 1 or win.sw < win.dw * (win.kw - 1) + 1:
            return super().max_pool2d_backward(grad_out, idx, x_shape, win)
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        tiled = (win.dh, win.dw, win.sh, win.sw) == (1, 1, win.kh, win.kw)
        if tiled:  # windows tile the input: zero only the rows and columns left over
            acc = np.empty((n, c, hp, wp), dtype=grad_out.dtype)
            acc[:, :, win.oh * win.sh:, :] = 0
            acc[:, :, :, win.ow * win.sw:] = 0
        else:  # gaps between the taps or between the windows
            acc = np.zeros((n, c, hp, wp), dtype=grad_out.dtype)
        bits = np.dtype(f"uint{8 * grad_out.dtype.itemsize}")
        g_bits = np.ascontiguousarray(grad_out).view(bits)
        acc_bits = acc.view(bits)
        keep = np.empty(g_bits.shape, dtype=bits)
        for k, (i, j) in enumerate(win_offsets(win)):
            rows, cols = win.slices(i, j)
            np.equal(idx, k, out=keep)
            np.negative(keep, out=keep)  # 1 -> all ones, 0 -> 0
            np.bitwise_and(g_bits, keep, out=acc_bits[:, :, rows, cols])
        return acc[:, :, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w]

    def sliding_windows(self, x_padded, win: Window):
        x_padded = np.ascontiguousarray(x_padded)
        n, c, _, _ = x_padded.shape
        s_n, s_c, s_h, s_w = x_padded.strides
        return as_strided(
            x_padded,
            shape=(n, c, win.oh, win.ow, win.kh, win.kw),
            strides=(s_n, s_c, s_h * win.sh, s_w * win.sw, s_h * win.dh, s_w * win.dw),
            writeable=False,
        )


def _touches_padding(x_shape, win: Window) -> bool:
    return any(win[6:10]) or win.padded_size(*x_shape[2:]) != tuple(x_shape[2:])


def _index_dtype(win: Window):
    return np.uint8 if win.kh * win.kw <= 256 else np.int64


def _first_max(x, k, dilation, stride, out_size, axis, idx_dtype, inner_idx=None, inner_size=1):
    """Max over ``k`` taps along ``axis`` and the index of the first maximum.

    The index is ``tap * inner_size + inner_idx`` (``inner_idx`` the index
    chosen along the other axis, taken at the winning tap). A later tap wins
    only when strictly greater, and its index is larger than any earlier
    one, so ``np.maximum`` keeps the first winner without a select.
    """
    def tap(a, t):
        start = t * dilation
        sl = [slice(None)] * a.ndim
        sl[axis] = slice(start, start + stride * (out_size - 1) + 1, stride)
        return a[tuple(sl)]

    best = tap(x, 0)
    idx = np.array(tap(inner_idx, 0), dtype=idx_dtype) if inner_idx is not None \
        else np.zeros(best.shape, dtype=idx_dtype)
    won = np.empty(best.shape, dtype=bool)
    cand = np.empty(best.shape, dtype=idx_dtype)
    for t in range(1, k):
        v = tap(x, t)
        np.greater(v, best, out=won)
        best = np.maximum(best, v, out=None if t == 1 else best)
        if inner_idx is not None:
            np.add(tap(inner_idx, t), t * inner_size, out=cand, dtype=idx_dtype)
            np.multiply(cand, won, out=cand)
        else:
            np.multiply(won, t, out=cand, dtype=idx_dtype)
        np.maximum(idx, cand, out=idx)
    if k == 1:
        best = best.copy()
    return best, idx


BACKEND_CLASS = NumpyBackend
