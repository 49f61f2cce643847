"""Textbook references, written as explicit loops in plain NumPy (float64), for the
ops added for PyTorch parity: the full cross-entropy and the other losses,
layer/group normalisation, GELU/SiLU/hardswish, padding modes, interpolation
and max-unpooling. Nothing here imports the engine (see ``reference.py``).
Slow on purpose: small sizes only.
"""
from __future__ import annotations

import itertools
import math

import numpy as np


def _reduce(losses, reduction, denominator=None):
    losses = np.asarray(losses, dtype=np.float64)
    if reduction == "none":
        return losses
    total = float(sum(losses.ravel().tolist()))
    if reduction == "sum":
        return np.float64(total)
    count = losses.size if denominator is None else denominator
    return np.float64(total / count) if count else np.float64(np.nan)


def _samples(shape):
    """Every ``(n, spatial...)`` position of a ``(N, C, d1, ...)`` array, and the class count."""
    n, c, rest = shape[0], shape[1], shape[2:]
    return [(i,) + pos for i in range(n) for pos in itertools.product(*[range(d) for d in rest])], c


def _log_softmax_at(x, i, pos, c):
    row = [float(x[(i, k) + pos]) for k in range(c)]
    top = max(row)
    lse = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - lse for v in row]


# --------------------------------------------------------------------------- class losses
def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """PyTorch's cross-entropy from its definition: ``(1-ε)·nll + ε/C·Σ_c w_c·(-log p_c)``
    for class indices; ``-Σ_c w_c·((1-ε)t_c + ε/C)·log p_c`` for probabilities."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target)
    unbatched = x.ndim == 1
    if unbatched:
        x, t = x[None], t[None]
    soft = t.dtype.kind == "f"
    positions, c = _samples(x.shape)
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    out_shape = (x.shape[0],) + x.shape[2:]
    losses = np.zeros(out_shape)
    denominator = 0.0
    for pos in positions:
        i, rest = pos[0], pos[1:]
        logp = _log_softmax_at(x, i, rest, c)
        if soft:
            probs = [float(t[(i, k) + rest]) for k in range(c)]
            losses[pos] = -sum(w[k] * ((1 - label_smoothing) * probs[k] + label_smoothing / c) * logp[k]
                               for k in range(c))
            denominator += 1
            continue
        y = int(t[pos])
        if y == ignore_index:
            continue
        nll = -w[y] * logp[y]
        smooth = -sum(w[k] * logp[k] for k in range(c))
        losses[pos] = (1 - label_smoothing) * nll + label_smoothing / c * smooth
        denominator += w[y]
    if unbatched and reduction == "none":
        return losses[0]
    return _reduce(losses, reduction, denominator)


def nll_loss(logp, target, weight=None, ignore_index=-100, reduction="mean"):
    x = np.asarray(logp, dtype=np.float64)
    t = np.asarray(target)
    unbatched = x.ndim == 1
    if unbatched:
        x, t = x[None], t[None]
    positions, c = _samples(x.shape)
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    losses = np.zeros((x.shape[0],) + x.shape[2:])
    denominator = 0.0
    for pos in positions:
        y = int(t[pos])
        if y == ignore_index:
            continue
        losses[pos] = -w[y] * x[(pos[0], y) + pos[1:]]
        denominator += w[y]
    if unbatched and reduction == "none":
        return losses[0]
    return _reduce(losses, reduction, denominator)


# --------------------------------------------------------------------------- element-wise losses
def _pointwise(fn, *arrays):
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    out = np.zeros(arrays[0].shape)
    for idx in np.ndindex(*arrays[0].shape):
        out[idx] = fn(*[float(a[idx]) for a in arrays])
    return out


def l1_loss(x, t, reduction="mean"):
    return _reduce(_pointwise(lambda a, b: abs(a - b), x, t), reduction)


def smooth_l1_loss(x, t, reduction="mean", beta=1.0):
    def f(a, b):
        d = abs(a - b)
        return d if beta == 0 else (0.5 * d * d / beta if d < beta else d - 0.5 * beta)
    return _reduce(_pointwise(f, x, t), reduction)


def huber_loss(x, t, reduction="mean", delta=1.0):
    def f(a, b):
        d = abs(a - b)
        return 0.5 * d * d if d < delta else delta * (d - 0.5 * delta)
    return _reduce(_pointwise(f, x, t), reduction)


def kl_div(x, t, reduction="mean", log_target=False):
    def f(a, b):
        if log_target:
            return math.exp(b) * (b - a)
        return (0.0 if b == 0 else b * math.log(b)) - b * a
    losses = _pointwise(f, x, t)
    if reduction == "batchmean":
        return np.float64(losses.sum() / (losses.shape[0] if losses.ndim else 1))
    return _reduce(losses, reduction)


def binary_cross_entropy(p, t, weight=None, reduction="mean"):
    w = np.ones_like(np.asarray(p, dtype=np.float64)) if weight is None else \
        np.broadcast_to(np.asarray(weight, dtype=np.float64), np.shape(p))

    def f(a, b, c):
        log_a = max(math.log(a), -100.0) if a > 0 else -100.0
        log_1a = max(math.log(1 - a), -100.0) if a < 1 else -100.0
        return -c * (b * log_a + (1 - b) * log_1a)
    return _reduce(_pointwise(f, p, t, w), reduction)


def binary_cross_entropy_with_logits(x, t, weight=None, reduction="mean", pos_weight=None):
    shape = np.shape(x)
    w = np.ones(shape) if weight is None else np.broadcast_to(np.asarray(weight, dtype=np.float64), shape)
    pw = np.ones(shape) if pos_weight is None else np.broadcast_to(np.asarray(pos_weight, dtype=np.float64), shape)

    def f(a, b, c, d):
        log_sig = -math.log1p(math.exp(-a)) if a >= 0 else a - math.log1p(math.exp(a))
        log_one_minus = log_sig - a  # log(1 - sigmoid(a)) = log sigmoid(a) - a
        return -c * (d * b * log_sig + (1 - b) * log_one_minus)
    return _reduce(_pointwise(f, x, t, w, pw), reduction)


# --------------------------------------------------------------------------- normalisation
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    k = len(normalized_shape)
    lead = x.shape[:x.ndim - k]
    out = np.zeros(x.shape)
    for idx in np.ndindex(*lead):
        values = [float(v) for v in x[idx].ravel()]
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        y = (x[idx] - mean) / math.sqrt(var + eps)
        if weight is not None:
            y = y * np.asarray(weight, dtype=np.float64)
        if bias is not None:
            y = y + np.asarray(bias, dtype=np.float64)
        out[idx] = y
    return out


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    n, c = x.shape[:2]
    per = c // num_groups
    out = np.zeros(x.shape)
    for i in range(n):
        for g in range(num_groups):
            block = x[i, g * per:(g + 1) * per]
            values = [float(v) for v in block.ravel()]
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / len(values)
            out[i, g * per:(g + 1) * per] = (block - mean) / math.sqrt(var + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * np.asarray(weight, dtype=np.float64).reshape(shape)
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64).reshape(shape)
    return out


# --------------------------------------------------------------------------- activations
def gelu(x, approximate="none"):
    def f(v):
        if approximate == "tanh":
            return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
        return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))
    return _pointwise(f, x)


def silu(x):
    return _pointwise(lambda v: v / (1 + math.exp(-v)), x)


def hardsigmoid(x):
    return _pointwise(lambda v: 0.0 if v <= -3 else (1.0 if v >= 3 else v / 6 + 0.5), x)


def hardswish(x):
    return _pointwise(lambda v: 0.0 if v <= -3 else (v if v >= 3 else v * (v + 3) / 6), x)


# --------------------------------------------------------------------------- padding
def pad(x, pads, mode="constant", value=0.0):
    """``pads`` in PyTorch's order: (left, right) of the last axis, then of the one before…"""
    x = np.asarray(x, dtype=np.float64)
    k = len(pads) // 2
    sizes = list(x.shape)
    for a in range(k):
        axis = x.ndim - 1 - a
        sizes[axis] += pads[2 * a] + pads[2 * a + 1]
    out = np.zeros(sizes)
    for idx in np.ndindex(*sizes):
        src, inside = list(idx), True
        for a in range(k):
            axis = x.ndim - 1 - a
            n, i = x.shape[axis], idx[axis] - pads[2 * a]
            if 0 <= i < n:
                src[axis] = i
            elif mode == "constant":
                inside = False
            elif mode == "reflect":
                src[axis] = -i if i < 0 else 2 * (n - 1) - i
            elif mode == "replicate":
                src[axis] = 0 if i < 0 else n - 1
            elif mode == "circular":
                src[axis] = i % n
        out[idx] = x[tuple(src)] if inside else value
    return out


# --------------------------------------------------------------------------- interpolation
def _source_nearest(out_size, in_size, scale, exact):
    step = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
    idx = []
    for o in range(out_size):
        if out_size == in_size and not exact:
            idx.append(o)
            continue
        pos = (np.float32(o) + np.float32(0.5)) * step if exact else np.float32(o) * step
        idx.append(min(int(math.floor(pos)), in_size - 1))
    return idx


def _source_linear(out_size, in_size, scale, align_corners):
    taps = []
    for o in range(out_size):
        if out_size == in_size:
            taps.append((o, o, 1.0, 0.0))
            continue
        if align_corners:
            ratio = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
            src = ratio * o
        else:
            ratio = 1.0 / scale if scale else in_size / out_size
            src = max(ratio * (o + 0.5) - 0.5, 0.0)
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = i0 + (1 if i0 < in_size - 1 else 0)
        lam = min(max(src - i0, 0.0), 1.0)
        taps.append((i0, i1, 1.0 - lam, lam))
    return taps


def _keys_kernel(d, a=-0.75):
    """Keys' cubic convolution kernel W(d) (Keys 1981) with parameter ``a``."""
    d = abs(d)
    if d <= 1:
        return (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1
    if d < 2:
        return a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a
    return 0.0


def _source_cubic(out_size, in_size, scale, align_corners):
    """Per output position: four ``(input index, weight)`` taps, indices clamped to the axis."""
    taps = []
    for o in range(out_size):
        if align_corners:
            src = ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0) * o
        else:
            src = (1.0 / scale if scale else in_size / out_size) * (o + 0.5) - 0.5
        base = math.floor(src)
        taps.append([(min(max(base + j, 0), in_size - 1), _keys_kernel(src - (base + j))) for j in (-1, 0, 1, 2)])
    return taps


def interpolate(x, size, mode="nearest", align_corners=False, scales=None):
    """Nearest / nearest-exact / (bi)linear / bicubic resampling of the last 1 or 2 axes, one output at a time."""
    x = np.asarray(x, dtype=np.float64)
    k = len(size)
    scales = scales or [None] * k
    out = np.zeros(x.shape[:x.ndim - k] + tuple(size))
    in_sizes = x.shape[x.ndim - k:]
    if mode.startswith("nearest"):
        maps = [_source_nearest(o, i, s, mode == "nearest-exact") for o, i, s in zip(size, in_sizes, scales)]
        for idx in np.ndindex(*out.shape):
            lead, pos = idx[:x.ndim - k], idx[x.ndim - k:]
            out[idx] = x[lead + tuple(m[p] for m, p in zip(maps, pos))]
        return out
    if mode == "bicubic":
        taps = [_source_cubic(o, i, s, align_corners) for o, i, s in zip(size, in_sizes, scales)]
        for idx in np.ndindex(*out.shape):
            lead, pos = idx[:x.ndim - k], idx[x.ndim - k:]
            out[idx] = sum(np.prod([w for _, w in corner]) * x[lead + tuple(i for i, _ in corner)]
                           for corner in itertools.product(*(taps[a][pos[a]] for a in range(k))))
        return out
    taps = [_source_linear(o, i, s, align_corners) for o, i, s in zip(size, in_sizes, scales)]
    for idx in np.ndindex(*out.shape):
        lead, pos = idx[:x.ndim - k], idx[x.ndim - k:]
        total = 0.0
        for corner in itertools.product((0, 1), repeat=k):
            weight, src = 1.0, []
            for axis, bit in enumerate(corner):
                i0, i1, w0, w1 = taps[axis][pos[axis]]
                src.append(i1 if bit else i0)
                weight *= w1 if bit else w0
            total += weight * x[lead + tuple(src)]
        out[idx] = total
    return out


# --------------------------------------------------------------------------- unpooling
def max_unpool(x, indices, out_spatial):
    """Write each value at its flat per-plane index (later writes win)."""
    x = np.asarray(x, dtype=np.float64)
    lead = x.shape[:2] if x.ndim > len(out_spatial) + 1 else x.shape[:1]
    out = np.zeros(lead + tuple(out_spatial))
    for plane in np.ndindex(*lead):
        flat = out[plane].reshape(-1)
        for v, i in zip(x[plane].ravel(), np.asarray(indices)[plane].ravel()):
            flat[int(i)] = v
        out[plane] = flat.reshape(out_spatial)
    return out
