"""NumPy backend: the default, on the CPU: float32 convolutions, max pooling and ReLU in the
C kernels of kernels/cpu_conv.c where they are built (linear layers and Adam/SGD updates in
kernels/cpu_dense.c, tanh and sigmoid in kernels/cpu_activations.c), everything else through
NumPy and its BLAS."""
from __future__ import annotations

import numpy as np
from array_api_compat import numpy as xp_numpy
from numpy.lib.stride_tricks import as_strided

from ..kernels import native

from . import native_cpu, native_dense
from .base import Backend, Window, touches_padding, win_offsets
from .host_memory import tune_malloc
from .host_threads import get_num_threads, parallel_for


class NumpyBackend(Backend):
    name = "numpy"
    xp = xp_numpy
    # Chunks of ~4 MiB keep the im2col buffer in cache while the GEMM reads it
    # (measured with `python -m engine.bench`; larger chunks were slower on big layers).
    default_workspace_bytes = 4 << 20
    #: float32 convolutions, max pooling and ReLU go through the C kernels of
    #: ``kernels/cpu_conv.c`` when they are built (``kernels.native.status()``
    #: says whether); False keeps the im2col + BLAS and NumPy paths for every dtype.
    use_native_kernels = True

    def __init__(self):
        tune_malloc()  # reuse freed blocks instead of page-faulting them back in (see host_memory)

    def describe(self) -> str:
        if not self.use_native_kernels:
            return "numpy, C kernels turned off (use_native_kernels = False)"
        return f"numpy, C kernels {native.status()}"

    def owns(self, x) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def asarray(self, data, dtype=None):
        if not isinstance(data, np.ndarray) and hasattr(data, "__dlpack__") and not self.owns(data):
            data = np.from_dlpack(data)
        return np.asarray(data, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def index_add(self, target, key, values):
        np.add.at(target, key, values)
        return target

    def batch_norm_apply(self, x, mean, scale, bias):
        fast = native_cpu.batch_norm_apply(x, mean, scale, bias) if self.use_native_kernels else None
        return fast if fast is not None else super().batch_norm_apply(x, mean, scale, bias)

    def channel_sum(self, x):
        fast = native_cpu.channel_sum(x) if self.use_native_kernels else None
        return fast if fast is not None else super().channel_sum(x)

    def relu(self, x):
        fast = native_cpu.relu(x) if self.use_native_kernels else None  # float32: one threaded pass
        return fast if fast is not None else super().relu(x)

    def relu_backward(self, grad_out, y):
        fast = native_cpu.relu_backward(grad_out, y) if self.use_native_kernels else None
        return fast if fast is not None else super().relu_backward(grad_out, y)

    # float32 tanh and sigmoid through kernels/cpu_activations.c: one threaded pass each
    # (the backward kernels are NumPy's expressions bit for bit; the forward ones within a
    # few ulp, not NumPy's bits); else the array-API expressions of the base class
    def tanh(self, x):
        fast = native_cpu.tanh(x) if self.use_native_kernels else None
        return fast if fast is not None else super().tanh(x)

    def tanh_backward(self, grad_out, y):
        fast = native_cpu.tanh_backward(grad_out, y) if self.use_native_kernels else None
        return fast if fast is not None else super().tanh_backward(grad_out, y)

    def sigmoid(self, x):
        fast = native_cpu.sigmoid(x) if self.use_native_kernels else None
        return fast if fast is not None else super().sigmoid(x)

    def sigmoid_backward(self, grad_out, y):
        fast = native_cpu.sigmoid_backward(grad_out, y) if self.use_native_kernels else None
        return fast if fast is not None else super().sigmoid_backward(grad_out, y)

    def conv2d_fused(self, x, weight, bias, win: Window, groups: int):
        # float32 through the C kernels (im2col inside the GEMM's packing); else None
        if not self.use_native_kernels:
            return None
        return native_cpu.forward(x, weight, bias, win, groups)

    def conv2d_backward_fused(self, grad_out, x, weight, win: Window, groups: int, need_input_grad: bool,
                              need_weight_grad: bool = True):
        if not self.use_native_kernels:
            return None, None
        dw = native_cpu.weight_grad(grad_out, x, weight.shape, win, groups) if need_weight_grad else None
        if (need_weight_grad and dw is None) or not need_input_grad:
            return None, dw
        return native_cpu.input_grad(grad_out, weight, x.shape, win, groups), dw

    # float32 linear layers and Adam/SGD updates through kernels/cpu_dense.c; else None
    def linear_fused(self, x, weight, bias):
        return native_dense.linear(x, weight, bias) if self.use_native_kernels else None

    def linear_backward_fused(self, grad_out, x, weight, need_input_grad, need_weight_grad):
        if not self.use_native_kernels:
            return None
        return native_dense.linear_backward(grad_out, x, weight, need_input_grad, need_weight_grad)

    def adam_update(self, p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **hyper):
        if not self.use_native_kernels:
            return None
        return native_dense.adam_update(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **hyper)

    def sgd_update(self, p, grad, momentum_buffer, **hyper):
        return native_dense.sgd_update(p, grad, momentum_buffer, **hyper) if self.use_native_kernels else None

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
        col = np.empty((c, win.kh, win.kw, n, win.oh, win.ow), dtype=x.dtype)

        xt = self.pad2d(x, win).transpose(1, 0, 2, 3)
        by_channel = c >= n or c >= get_num_threads()  # split the longer axis

        def fill(part):  # copy a share of the channels, or of the images
            src = xt[part] if by_channel else xt[:, part]
            dst = col[part] if by_channel else col[:, :, :, part]
            for i in range(win.kh):
                for j in range(win.kw):
                    rows, cols = win.slices(i, j)
                    dst[:, i, j] = src[:, :, rows, cols]
        parallel_for(fill, c if by_channel else n, col.size)
        return col.reshape(c * win.kh * win.kw, n * win.oh * win.ow)

    def col2im(self, col, x_shape, win: Window):
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        col = col.reshape(c, win.kh, win.kw, n, win.oh, win.ow)
        acc = np.empty((n, c, hp, wp), dtype=col.dtype)

        def add(images):  # each share of the batch sums into its own images
            acc_t = acc[images].transpose(1, 0, 2, 3)  # a view: adds land in the (N, C, H, W) buffer
            acc_t[...] = 0
            for i in range(win.kh):
                for j in range(win.kw):
                    rows, cols = win.slices(i, j)
                    acc_t[:, :, rows, cols] += col[:, i, j, images]
        parallel_for(add, n, col.size)  # the work is reading every column entry
        return acc[:, :, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w]

    def max_pool2d(self, x, win: Window):
        # A separable max, first along each row (W), then down the columns (H),
        # keeping the first maximum at each stage: that is the first maximum in
        # the window's row-major order, the generic rule. Padding is -inf, which
        # any input value beats except -inf itself; windows whose maximum is
        # -inf (where padding could have won) and NaN (np.maximum propagates
        # it) go the generic way. Indices are uint8 for windows of <= 256.
        # Known difference: a window holding both -0.0 and +0.0 gives +0.0
        # where PyTorch gives the first of them (np.maximum ignores the sign).
        if self.use_native_kernels:  # float32: the C kernel, which follows the same rules
            fast = native_cpu.max_pool2d(x, win)
            if fast is not None:
                return fast
        if win.kh * win.kw == 1:
            return self._generic_max_pool2d(x, win)
        padded = touches_padding(x.shape, win)
        src = self.pad2d(x, win, value=-np.inf) if padded else x
        need_h = (win.oh - 1) * win.sh + win.dh * (win.kh - 1) + 1
        n, c = x.shape[:2]
        best = np.empty((n, c, win.oh, win.ow), dtype=x.dtype)
        idx = np.empty(best.shape, dtype=_index_dtype(win))

        def pool(images):
            rows_max, col_idx = _first_max(src[images, :, :need_h, :], win.kw, win.dw, win.sw, win.ow, axis=3,
                                           idx_dtype=idx.dtype)
            _first_max(rows_max, win.kh, win.dh, win.sh, win.oh, axis=2, idx_dtype=idx.dtype,
                       inner_idx=col_idx, inner_size=win.kw, out=(best[images], idx[images]))
        parallel_for(pool, n, src.size)
        if np.isnan(best).any() or (padded and np.isneginf(best).any()):
            return self._generic_max_pool2d(x, win)
        return best, idx

    def avg_pool2d(self, x, win: Window, divisor):
        fast = native_cpu.avg_pool2d(x, win, divisor) if self.use_native_kernels else None  # float32 2x2/2
        return fast if fast is not None else super().avg_pool2d(x, win, divisor)

    def avg_pool2d_backward(self, grad_out, x_shape, win: Window, divisor):
        fast = native_cpu.avg_pool2d_backward(grad_out, x_shape, win, divisor) if self.use_native_kernels else None
        return fast if fast is not None else super().avg_pool2d_backward(grad_out, x_shape, win, divisor)

    def _generic_max_pool2d(self, x, win: Window):
        y, idx = super().max_pool2d(x, win)
        return y, idx.astype(_index_dtype(win), copy=False)  # one index dtype, whatever the path

    def max_pool2d_backward(self, grad_out, idx, x_shape, win: Window):
        # Per kernel offset, the gradient's bits where that offset won and zero
        # bits elsewhere (exact, even for inf/NaN gradients), stored or added.
        # Without dilation and with stride <= kernel, the offsets (i < sh,
        # j < sw) tile the covered area once: they are stores, made before any
        # add that lands on the same pixel (every other offset comes later in
        # the order), so the sums run in offset order as in the generic code.
        # Windows that do not overlap have only stores.
        if self.use_native_kernels:
            fast = native_cpu.max_pool2d_backward(grad_out, idx, x_shape, win)
            if fast is not None:
                return fast
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        overlap = win.sh < win.dh * (win.kh - 1) + 1 or win.sw < win.dw * (win.kw - 1) + 1
        dense = (win.dh, win.dw) == (1, 1) and win.sh <= win.kh and win.sw <= win.kw
        acc = np.empty((n, c, hp, wp), dtype=grad_out.dtype)
        bits = np.dtype(f"uint{8 * grad_out.dtype.itemsize}")
        g_bits = np.ascontiguousarray(grad_out).view(bits)
        acc_bits = acc.view(bits)

        def route(images):
            a = acc[images]
            if dense:  # zero only the rows and columns no window covers
                a[:, :, win.oh * win.sh:, :] = 0
                a[:, :, :, win.ow * win.sw:] = 0
            else:  # gaps between the taps or between the windows
                a[...] = 0
            g = g_bits[images]
            keep = np.empty(g.shape, dtype=bits)
            for k, (i, j) in enumerate(win_offsets(win)):
                rows, cols = win.slices(i, j)
                np.equal(idx[images], k, out=keep)
                np.negative(keep, out=keep)  # 1 -> all ones, 0 -> 0
                if not overlap or (dense and i < win.sh and j < win.sw):
                    np.bitwise_and(g, keep, out=acc_bits[images, :, rows, cols])
                else:
                    np.bitwise_and(g, keep, out=keep)
                    a[:, :, rows, cols] += keep.view(acc.dtype)
        parallel_for(route, n, acc.size)
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


def _index_dtype(win: Window):
    return np.uint8 if win.kh * win.kw <= 256 else np.int64


def _first_max(x, k, dilation, stride, out_size, axis, idx_dtype, inner_idx=None, inner_size=1, out=None):
    """Max over ``k`` taps along ``axis`` and the index of the first maximum.

    The index is ``tap * inner_size + inner_idx`` (``inner_idx`` the index
    chosen along the other axis, taken at the winning tap). A later tap wins
    only when strictly greater, and its index is larger than any earlier
    one, so ``np.maximum`` keeps the first winner without a select.
    ``out``: optional ``(best, idx)`` arrays to write the result into.
    """
    def tap(a, t):
        start = t * dilation
        sl = [slice(None)] * a.ndim
        sl[axis] = slice(start, start + stride * (out_size - 1) + 1, stride)
        return a[tuple(sl)]

    first = tap(x, 0)
    best, idx = out if out is not None else (np.empty(first.shape, x.dtype), np.empty(first.shape, idx_dtype))
    np.copyto(best, first)
    np.copyto(idx, 0 if inner_idx is None else tap(inner_idx, 0))
    won = np.empty(best.shape, dtype=bool)
    cand = np.empty(best.shape, dtype=idx_dtype)
    for t in range(1, k):
        v = tap(x, t)
        np.greater(v, best, out=won)
        np.maximum(best, v, out=best)
        if inner_idx is not None:
            np.add(tap(inner_idx, t), t * inner_size, out=cand, dtype=idx_dtype)
            np.multiply(cand, won, out=cand)
        else:
            np.multiply(won, t, out=cand, dtype=idx_dtype)
        np.maximum(idx, cand, out=idx)
    return best, idx


BACKEND_CLASS = NumpyBackend
