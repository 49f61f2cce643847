"""NumPy backend: the default, on the CPU through NumPy's BLAS."""
from __future__ import annotations

import numpy as np
from array_api_compat import numpy as xp_numpy
from numpy.lib.stride_tricks import as_strided

from .base import Backend, Window, win_offsets, window_masks


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
        # Same rule as the generic version, with in-place updates instead of
        # fresh arrays per kernel offset, and the NaN test only when there are NaNs.
        masks = window_masks(x.shape, win)
        xpad = self.pad2d(x, win, value=np.finfo(x.dtype).min)
        shape = (x.shape[0], x.shape[1], win.oh, win.ow)
        best = np.empty(shape, dtype=x.dtype)
        idx = np.zeros(shape, dtype=np.int64)
        take = np.empty(shape, dtype=bool)
        has_nan = bool(np.isnan(x).any())
        seen = None
        for k, (i, j) in enumerate(win_offsets(win)):
            rows, cols = win.slices(i, j)
            v = xpad[:, :, rows, cols]
            if k == 0:
                best[...] = v
                seen = None if masks is None else masks[0].copy()
                continue
            np.greater(v, best, out=take)
            if has_nan:
                take |= np.isnan(v)
            if masks is not None:
                take |= ~seen
                take &= masks[k]
                seen |= masks[k]
            np.copyto(best, v, where=take)
            np.copyto(idx, k, where=take)
        return best, idx

    def max_pool2d_backward(self, grad_out, idx, x_shape, win: Window):
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        acc = np.zeros((n, c, hp, wp), dtype=grad_out.dtype)
        hit = np.empty(idx.shape, dtype=bool)
        for k, (i, j) in enumerate(win_offsets(win)):
            rows, cols = win.slices(i, j)
            view = acc[:, :, rows, cols]  # one offset never visits a pixel twice
            np.add(view, grad_out, out=view, where=np.equal(idx, k, out=hit))
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
