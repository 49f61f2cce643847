"""Textbook references in plain NumPy, written as explicit loops.

Nothing here imports the engine: these are independent re-derivations of each
op from its definition (PyTorch's, where PyTorch defines the corner cases), so
a shared helper bug cannot hide in both the engine and its reference. They are
slow on purpose; call them on small sizes only.

Conventions: images ``(N, C, H, W)``, conv weights ``(O, C/groups, kh, kw)``,
linear weights ``(out, in)``. Everything is computed in float64 and returned
as float64.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "as_pads", "out_size", "pool_out_size", "pad_zeros",
    "conv2d", "conv2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "linear", "linear_backward", "relu", "leaky_relu", "sigmoid", "tanh",
    "softmax", "log_softmax", "cross_entropy", "cross_entropy_grad", "mse",
    "numerical_grad",
]


# --------------------------------------------------------------------------- geometry
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def as_pads(padding, kernel, dilation=(1, 1)):
    """``(top, bottom, left, right)`` from an int, a pair, ``"valid"`` or ``"same"``.

    ``"same"`` pads ``d*(k-1)`` in total per axis, the odd extra row/column at
    the bottom/right (PyTorch's rule for even kernels).
    """
    kh, kw = _pair(kernel)
    dh, dw = _pair(dilation)
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = _pair(padding)
    return ph, ph, pw, pw


def out_size(size, kernel, stride=1, pad_before=0, pad_after=0, dilation=1):
    """Convolution output length by counting window positions one by one."""
    span = dilation * (kernel - 1) + 1
    count, start = 0, 0
    while start + span <= size + pad_before + pad_after:
        count += 1
        start += stride
    return count


def pool_out_size(size, kernel, stride, pad, dilation=1, ceil_mode=False):
    """PyTorch's ``pooling_output_shape``: floor or ceil division, and with
    ``ceil_mode`` the last window must start inside the input or the left padding."""
    num = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (math.ceil(num / stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pad_zeros(x, pads):
    """Zero-pad the last two axes by ``(top, bottom, left, right)`` with explicit loops."""
    n, c, h, w = x.shape
    pt, pb, pl, pr = pads
    out = np.zeros((n, c, h + pt + pb, w + pl + pr))
    for a in range(n):
        for b in range(c):
            for i in range(h):
                for j in range(w):
                    out[a, b, pt + i, pl + j] = x[a, b, i, j]
    return out


# --------------------------------------------------------------------------- convolution
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation by its definition::

        y[n, o, p, q] = b[o] + sum_{c, i, j} xpad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw] * w[o, c, i, j]

    with ``g = o // (O/groups)``: six nested loops (n, o, p, q, then c, i, j)."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n, c_in, h, w = x.shape
    o_ch, cg, kh, kw = weight.shape
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    pads = as_pads(padding, (kh, kw), (dh, dw))
    xp = pad_zeros(x, pads)
    oh = out_size(h, kh, sh, pads[0], pads[1], dh)
    ow = out_size(w, kw, sw, pads[2], pads[3], dw)
    og = o_ch // groups
    y = np.zeros((n, o_ch, oh, ow))
    for a in range(n):
        for o in range(o_ch):
            g = o // og
            for p in range(oh):
                for q in range(ow):
                    acc = 0.0 if bias is None else float(bias[o])
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                acc += xp[a, g * cg + c, p * sh + i * dh, q * sw + j * dw] * weight[o, c, i, j]
                    y[a, o, p, q] = acc
    return y


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """``(dx, dweight, dbias)`` of :func:`conv2d` by the same loops, each
    product's gradient added to both of its factors."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    n, c_in, h, w = x.shape
    o_ch, cg, kh, kw = weight.shape
    sh, sw = _pair(stride)
    dh, dw_ = _pair(dilation)
    pads = as_pads(padding, (kh, kw), (dh, dw_))
    xp = pad_zeros(x, pads)
    dxp = np.zeros_like(xp)
    dwt = np.zeros_like(weight)
    db = np.zeros(o_ch)
    og = o_ch // groups
    _, _, oh, ow = grad_out.shape
    for a in range(n):
        for o in range(o_ch):
            g = o // og
            for p in range(oh):
                for q in range(ow):
                    go = grad_out[a, o, p, q]
                    db[o] += go
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                r, s = p * sh + i * dh, q * sw + j * dw_
                                dwt[o, c, i, j] += go * xp[a, g * cg + c, r, s]
                                dxp[a, g * cg + c, r, s] += go * weight[o, c, i, j]
    pt, _, pl, _ = pads
    return dxp[:, :, pt:pt + h, pl:pl + w].copy(), dwt, db


# --------------------------------------------------------------------------- pooling
def _pool_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    _, _, h, w = x_shape
    oh = pool_out_size(h, kh, sh, ph, dh, ceil_mode)
    ow = pool_out_size(w, kw, sw, pw, dw, ceil_mode)
    return kh, kw, sh, sw, ph, pw, dh, dw, oh, ow


def _max_pool_argmax(x, kernel_size, stride, padding, dilation, ceil_mode):
    """For each output, the value and the input position ``(r, s)`` of the
    maximum over the window's *real* elements (padding never wins), scanning
    rows then columns and keeping the first maximum; NaN wins (PyTorch CPU)."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _pool_geometry(x.shape, kernel_size, stride, padding,
                                                            dilation, ceil_mode)
    y = np.zeros((n, c, oh, ow))
    pos = np.zeros((n, c, oh, ow, 2), dtype=np.int64)
    for a in range(n):
        for b in range(c):
            for p in range(oh):
                for q in range(ow):
                    best, where = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            r, s = p * sh - ph + i * dh, q * sw - pw + j * dw
                            if not (0 <= r < h and 0 <= s < w):
                                continue
                            v = x[a, b, r, s]
                            if where is None or v > best or (np.isnan(v) and not np.isnan(best)):
                                best, where = v, (r, s)
                    y[a, b, p, q] = best
                    pos[a, b, p, q] = where
    return y, pos


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling as PyTorch defines it (padding is -inf, ceil_mode windows clipped)."""
    return _max_pool_argmax(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Each output's gradient added to the input element that was its maximum."""
    _, pos = _max_pool_argmax(x, kernel_size, stride, padding, dilation, ceil_mode)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    dx = np.zeros(np.shape(x))
    n, c, oh, ow = grad_out.shape
    for a in range(n):
        for b in range(c):
            for p in range(oh):
                for q in range(ow):
                    r, s = pos[a, b, p, q]
                    dx[a, b, r, s] += grad_out[a, b, p, q]
    return dx


def _avg_windows(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """PyTorch's avg_pool2d loop: yields ``(p, q, rows, cols, divisor)``."""
    _, _, h, w = x_shape
    kh, kw, sh, sw, ph, pw, _, _, oh, ow = _pool_geometry(x_shape, kernel_size, stride, padding, 1, ceil_mode)
    for p in range(oh):
        for q in range(ow):
            h0, w0 = p * sh - ph, q * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            pool_size = (h1 - h0) * (w1 - w0)  # padded area counts, the ceil_mode overhang does not
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            if divisor_override:
                divisor = divisor_override
            elif count_include_pad:
                divisor = pool_size
            else:
                divisor = (h1 - h0) * (w1 - w0)
            yield p, q, range(h0, h1), range(w0, w1), divisor, (oh, ow)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling with PyTorch's divisor rules."""
    x = np.asarray(x, dtype=np.float64)
    n, c, _, _ = x.shape
    y = None
    for p, q, rows, cols, divisor, (oh, ow) in _avg_windows(x.shape, kernel_size, stride, padding, ceil_mode,
                                                            count_include_pad, divisor_override):
        if y is None:
            y = np.zeros((n, c, oh, ow))
        for a in range(n):
            for b in range(c):
                total = 0.0
                for r in rows:
                    for s in cols:
                        total += x[a, b, r, s]
                y[a, b, p, q] = total / divisor
    return y


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """Each output's gradient spread over its window's real elements, divided by the divisor."""
    grad_out = np.asarray(grad_out, dtype=np.float64)
    n, c, _, _ = x_shape
    dx = np.zeros(x_shape)
    for p, q, rows, cols, divisor, _ in _avg_windows(x_shape, kernel_size, stride, padding, ceil_mode,
                                                     count_include_pad, divisor_override):
        for a in range(n):
            for b in range(c):
                for r in rows:
                    for s in cols:
                        dx[a, b, r, s] += grad_out[a, b, p, q] / divisor
    return dx


# --------------------------------------------------------------------------- dense and element-wise
def linear(x, weight, bias=None):
    """``y[n, o] = b[o] + sum_i x[n, i] * w[o, i]``."""
    x = np.asarray(x, dtype=np.float64)
    n, f_in = x.shape
    f_out = weight.shape[0]
    y = np.zeros((n, f_out))
    for a in range(n):
        for o in range(f_out):
            acc = 0.0 if bias is None else float(bias[o])
            for i in range(f_in):
                acc += x[a, i] * weight[o, i]
            y[a, o] = acc
    return y


def linear_backward(grad_out, x, weight):
    """``(dx, dweight, dbias)`` of :func:`linear`."""
    n, f_in = x.shape
    f_out = weight.shape[0]
    dx, dw, db = np.zeros((n, f_in)), np.zeros((f_out, f_in)), np.zeros(f_out)
    for a in range(n):
        for o in range(f_out):
            g = grad_out[a, o]
            db[o] += g
            for i in range(f_in):
                dw[o, i] += g * x[a, i]
                dx[a, i] += g * weight[o, i]
    return dx, dw, db


def _elementwise(fn, x):
    x = np.asarray(x, dtype=np.float64)
    return np.array([fn(float(v)) for v in x.ravel()]).reshape(x.shape)


def relu(x):
    return _elementwise(lambda v: v if v > 0 else 0.0, x)


def leaky_relu(x, negative_slope=0.01):
    return _elementwise(lambda v: v if v > 0 else negative_slope * v, x)


def sigmoid(x):
    """Logistic function, by the branch that never overflows ``math.exp``."""
    def f(v):
        if v >= 0:
            return 1.0 / (1.0 + math.exp(-v))
        e = math.exp(v)
        return e / (1.0 + e)
    return _elementwise(f, x)


def tanh(x):
    return _elementwise(math.tanh, x)


def _rows(x, axis):
    """View ``x`` as rows along ``axis`` (moved last), and a function undoing it."""
    x = np.asarray(x, dtype=np.float64)
    moved = np.moveaxis(x, axis, -1)
    shape = moved.shape
    return moved.reshape(-1, shape[-1]), lambda r: np.moveaxis(r.reshape(shape), -1, axis)


def log_softmax(x, axis=1):
    """``x_k - max - log(sum_j exp(x_j - max))`` row by row with ``math``."""
    rows, back = _rows(x, axis)
    out = np.zeros_like(rows)
    for r in range(rows.shape[0]):
        m = max(rows[r])
        lse = m + math.log(math.fsum(math.exp(v - m) for v in rows[r]))
        for k in range(rows.shape[1]):
            out[r, k] = rows[r, k] - lse
    return back(out)


def softmax(x, axis=1):
    """``exp(x_k - max) / sum_j exp(x_j - max)`` row by row with ``math``."""
    rows, back = _rows(x, axis)
    out = np.zeros_like(rows)
    for r in range(rows.shape[0]):
        m = max(rows[r])
        e = [math.exp(v - m) for v in rows[r]]
        s = math.fsum(e)
        for k in range(rows.shape[1]):
            out[r, k] = e[k] / s
    return back(out)


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """PyTorch's cross-entropy with label smoothing:
    ``-(1-eps) log p[y] - eps/K sum_k log p[k]`` per sample."""
    logp = log_softmax(logits, axis=1)
    n, k = logp.shape
    losses = np.zeros(n)
    for a in range(n):
        smooth = math.fsum(logp[a]) / k
        losses[a] = -(1 - label_smoothing) * logp[a, int(target[a])] - label_smoothing * smooth
    if reduction == "mean":
        return np.float64(losses.mean())
    if reduction == "sum":
        return np.float64(losses.sum())
    return losses


def cross_entropy_grad(logits, target, reduction="mean", label_smoothing=0.0):
    """``softmax - smoothed one-hot`` per sample (divided by N for the mean)."""
    p = softmax(logits, axis=1)
    n, k = p.shape
    g = np.zeros((n, k))
    for a in range(n):
        for c in range(k):
            q = (1 - label_smoothing) * (c == int(target[a])) + label_smoothing / k
            g[a, c] = p[a, c] - q
    return g / n if reduction == "mean" else g


def mse(x, target, reduction="mean"):
    d = (np.asarray(x, dtype=np.float64) - np.asarray(target, dtype=np.float64)) ** 2
    if reduction == "mean":
        return np.float64(d.mean())
    if reduction == "sum":
        return np.float64(d.sum())
    return d


# --------------------------------------------------------------------------- finite differences
def numerical_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar function ``f`` at ``x``, in float64.

    ``f`` takes a float64 NumPy array shaped like ``x`` and returns something
    ``float()`` accepts. Each element is perturbed by ``±eps`` in turn.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        f_plus = float(f(x.copy()))
        flat[k] = old - eps
        f_minus = float(f(x.copy()))
        flat[k] = old
        gflat[k] = (f_plus - f_minus) / (2 * eps)
    return grad
