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
        # Without padding or NaN: the max is a chain of np.maximum and the first
        # offset equal to it is the argmax (first maximum wins, as in the generic
        # rule). ~1.7x faster than the generic where-chain (bench/results).
        touches_padding = any(win[6:10]) or win.padded_size(*x.shape[2:]) != tuple(x.shape[2:])
        if touches_padding or np.isnan(x).any():
            return super().max_pool2d(x, win)
        views = [x[:, :, rows, cols] for rows, cols in (win.slices(i, j) for i, j in win_offsets(win))]
        best = views[0].copy()
        for v in views[1:]:
            np.maximum(best, v, out=best)
        idx = np.full(best.shape, len(views) - 1, dtype=np.int64)
        hit = np.empty(best.shape, dtype=bool)
        for k in range(len(views) - 2, -1, -1):
            np.copyto(idx, k, where=np.equal(views[k], best, out=hit))
        return best, idx

    def max_pool2d_backward(self, grad_out, idx, x_shape, win: Window):
        # Windows that do not overlap write each input pixel at most once:
        # plain assignments instead of accumulation.
        if win.sh < win.dh * (win.kh - 1) + 1 or win.sw < win.dw * (win.kw - 1) + 1:
            return super().max_pool2d_backward(grad_out, idx, x_shape, win)
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        acc = np.zeros((n, c, hp, wp), dtype=grad_out.dtype)
        zero = np.zeros((), dtype=grad_out.dtype)
        for k, (i, j) in enumerate(win_offsets(win)):
            rows, cols = win.slices(i, j)
            acc[:, :, rows, cols] = np.where(idx == k, grad_out, zero)
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


BACKEND_CLASS = NumpyBackend
