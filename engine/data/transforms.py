"""Image transforms that run batched on the backend the images live on.

    from engine.data import DataLoader, transforms as T
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    loader = DataLoader(train, batch_size=128, shuffle=True, transform=augment)

Every transform takes a batch ``(N, C, H, W)`` (or one image ``(C, H, W)``)
of any backend (NumPy, CuPy, array_api_strict) and returns one of the same
backend, so on a GPU the pixels never leave it. The DataLoader hands its
``transform`` floating images in [0, 1], before normalisation (which comes
last); a dataset's own ``transform`` gets one sample at a time.

Randomness: each random transform draws its per-sample parameters (crop
offsets, flip flags, factors, boxes) on the host from a NumPy generator — the
engine generator by default (:func:`engine.manual_seed` fixes it), or the
``rng`` passed to the call (the DataLoader passes its own when it has a
``seed``) — and moves only those few numbers to the device. A seeded run
therefore draws the same parameters on every backend and gives the same
images up to float rounding.

The pixel work uses only the array API standard: a crop (with its padding)
is one ``take`` from the flattened batch at source indices built on the
device from the per-sample offsets; resampling is a product with small
per-sample interpolation matrices (``R @ x @ C``, one batched ``matmul`` per
axis); flips are ``flip`` + ``where``; erasing and jitter are element-wise.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _state
from .. import backends

__all__ = ["CenterCrop", "ColorJitter", "Compose", "Normalize", "RandomCrop", "RandomErasing",
           "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "ToFloat", "Transform"]


def _device(x):
    from array_api_compat import device
    return device(x)


def _unwrap(x):
    """The array of an ``engine.Tensor`` (transforms are data preparation: not recorded for autograd)."""
    return x.data if hasattr(x, "grad_fn") and hasattr(x, "data") else x


def _owner(x):
    """The backend of ``x`` (NumPy arrays: the numpy backend, loaded if need be)."""
    if isinstance(x, np.ndarray):
        return backends.get("numpy")
    _state.current()
    return backends.backend_of(x)


def _size_pair(size, name, where):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    elif (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)):
        size = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{where}: {name} must be an int or a pair of ints (height, width), got {size!r}")
    if min(size) < 1:
        raise ValueError(f"{where}: {name} must be positive, got {size!r}")
    return size


def _range(value, name, where, low=0.0, high=None, center=None):
    """``value`` as ``(lo, hi)``: a pair, or a number ``v`` meaning ``center ± v``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}: {name} must be a non-negative number or a (min, max) pair, got {value!r}")
        lo, hi = (max(low, center - v), center + v) if center is not None else (v, v)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        lo, hi = float(value[0]), float(value[1])
    else:
        raise TypeError(f"{where}: {name} must be a number or a (min, max) pair, got {value!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < low or (high is not None and hi > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{where}: {name} must be a range (min <= max) within {bounds}, got {value!r}")
    return lo, hi


def _probability(p, where):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{where}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


class Transform:
    """Base of the transforms: ``t(x, rng=None)``.

    ``x``: ``(N, C, H, W)`` or ``(C, H, W)``, an array of any engine backend
    (NumPy included); ``rng``: a ``numpy.random.Generator`` for the random
    parameters (default: the engine generator). Subclasses write
    ``_apply(backend, x, rng)`` on a 4-D batch.
    """

    #: whether the transform draws random parameters
    random = False
    #: whether it needs floating input (every one but ToFloat)
    needs_float = True

    def __call__(self, x, rng=None):
        x = _unwrap(x)
        owner = _owner(x)
        if owner is None:
            raise TypeError(f"{self._name()}: expected an image array (NumPy or an engine backend's), "
                            f"got {type(x).__module__}.{type(x).__name__}")
        xp = owner.xp
        if x.ndim not in (3, 4):
            raise ValueError(f"{self._name()}: expected images (N, C, H, W) or one image (C, H, W), "
                             f"got shape {tuple(x.shape)}")
        if self.needs_float and "float" not in str(x.dtype):
            raise TypeError(f"{self._name()}: expected floating images in [0, 1], got dtype {x.dtype}; "
                            f"put ToFloat() first (the DataLoader converts before its transform)")
        single = x.ndim == 3
        if single:
            x = xp.expand_dims(x, axis=0)
        if self.random and rng is None:
            rng = _state.host_rng()
        y = self._apply(owner, x, rng)
        return y[0, ...] if single else y

    def _apply(self, b, x, rng):
        raise NotImplementedError

    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{self._name()}({args})"

    def _repr_args(self) -> dict:
        return {}


class Compose(Transform):
    """Apply ``transforms`` in order, passing the same generator along.
    Entries that are not :class:`Transform` objects are called as ``t(x)``."""

    needs_float = False

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: entry {i} ({t!r}) is not callable")
        self.transforms = transforms
        self.random = any(getattr(t, "random", True) for t in transforms)

    def __call__(self, x, rng=None):
        if self.random and rng is None:
            rng = _state.host_rng()
        for t in self.transforms:
            x = t(x, rng=rng) if isinstance(t, Transform) else t(x)
        return x

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {t!r}" for t in self.transforms)
        return f"Compose([\n{inner}\n])"


class ToFloat(Transform):
    """uint8 pixels (0-255) to floating point in [0, 1] (``dtype``, default
    float32); floating input is only cast to ``dtype`` when one is given."""

    needs_float = False

    def __init__(self, dtype=None):
        self.dtype = dtype

    def _apply(self, b, x, rng):
        xp = b.xp
        dt = b.dtype(self.dtype) if isinstance(self.dtype, str) else self.dtype
        if "float" in str(x.dtype):
            return x if dt is None or x.dtype == dt else xp.astype(x, dt)
        if "uint8" not in str(x.dtype):
            raise TypeError(f"ToFloat: expected uint8 (0-255) or floating images, got dtype {x.dtype}")
        return xp.astype(x, dt if dt is not None else b.dtype("float32")) / 255.0

    def _repr_args(self):
        return {"dtype": self.dtype} if self.dtype is not None else {}


class Normalize(Transform):
    """``(x - mean) / std``, each a number or one value per channel."""

    def __init__(self, mean, std):
        m = np.asarray(mean, dtype=np.float64)
        s = np.asarray(std, dtype=np.float64)
        for name, v in (("mean", m), ("std", s)):
            if v.ndim > 1 or not np.all(np.isfinite(v)):
                raise ValueError(f"Normalize: {name} must be a finite number or one per channel, got {v.tolist()}")
        if np.any(s <= 0):
            raise ValueError(f"Normalize: std must be positive, got {s.tolist()}")
        self.mean, self.std = m, s

    def _apply(self, b, x, rng):
        c = int(x.shape[1])
        out = x
        for v, op in ((self.mean, "sub"), (self.std, "div")):
            if v.ndim == 1 and v.size not in (1, c):
                raise ValueError(f"Normalize: {v.size} values for {c} channels")
            value = float(v.reshape(-1)[0]) if v.size == 1 else \
                b.asarray(v.reshape(1, c, 1, 1).astype(str_dtype(x.dtype)), dtype=x.dtype)
            out = out - value if op == "sub" else out / value
        return out

    def _repr_args(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


# ---------------------------------------------------------------------------
# geometry: gathers for crops, interpolation matrices for resampling
# ---------------------------------------------------------------------------
def _resample(xp, x, rows, cols):
    """``rows (M, h, H) @ x (N, C, H, W) @ cols (M, w, W)^T`` with ``M`` 1 or N."""
    out = xp.matmul(xp.expand_dims(rows, axis=1), x)
    return xp.matmul(out, xp.expand_dims(xp.matrix_transpose(cols), axis=1))


def _linear_weights(b, start, length, out_size, in_size, antialias, dtype, dev):
    """Interpolation matrices ``(M, out_size, in_size)`` that resize the
    window ``[start, start + length)`` (host arrays ``(M,)``) to ``out_size``
    samples: bilinear (triangle filter) with half-pixel centres, as PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)``; with
    ``antialias`` the filter widens by the downscaling factor (as PIL and
    ``antialias=True``), so shrinking averages instead of skipping pixels."""
    xp = b.xp
    start_h = np.asarray(start, dtype=np.float64).reshape(-1, 1, 1)
    length_h = np.asarray(length, dtype=np.float64).reshape(-1, 1, 1)
    scale_h = length_h / out_size
    inv_support_h = 1.0 / np.maximum(scale_h, 1.0) if antialias else np.ones_like(scale_h)
    start_d, length_d, scale_d, inv_d = (b.asarray(a.astype(str_dtype(dtype)), dtype=dtype)
                                         for a in (start_h, length_h, scale_h, inv_support_h))
    i = xp.reshape(xp.arange(out_size, dtype=dtype, device=dev), (1, out_size, 1))
    k = xp.reshape(xp.arange(in_size, dtype=dtype, device=dev), (1, 1, in_size))
    centre = start_d + scale_d * (i + 0.5)
    w = xp.maximum(1.0 - xp.abs(k + 0.5 - centre) * inv_d, xp.zeros((), dtype=dtype, device=dev))
    inside = (k >= start_d) & (k < start_d + length_d)
    w = xp.where(inside, w, xp.zeros((), dtype=dtype, device=dev))
    return w / xp.sum(w, axis=2, keepdims=True)


def str_dtype(dtype) -> str:
    """The NumPy name of a backend dtype (``float32`` …)."""
    text = str(dtype)
    for name in ("float16", "float32", "float64"):
        if name in text:
            return name
    raise TypeError(f"expected a floating dtype, got {dtype}")


def _padding4(padding, where):
    """torchvision's padding forms: int, (left/right, top/bottom), (left, top, right, bottom)."""
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        p = (int(padding),) * 4
    elif isinstance(padding, (tuple, list)) and len(padding) in (2, 4) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in padding):
        p = tuple(int(v) for v in padding)
        if len(p) == 2:
            p = (p[0], p[1], p[0], p[1])
    else:
        raise TypeError(f"{where}: padding must be an int, (left/right, top/bottom) or "
                        f"(left, top, right, bottom), got {padding!r}")
    if min(p) < 0:
        raise ValueError(f"{where}: padding must be >= 0, got {padding!r}")
    return p  # left, top, right, bottom


def _source_index(idx, size, mode):
    """Map padded-frame indices to source indices for ``mode``; constant
    padding keeps out-of-range indices (they select nothing)."""
    if mode == "constant":
        return idx
    if mode == "edge":
        return np.clip(idx, 0, size - 1)
    # reflect (no edge repeat), as numpy.pad(mode="reflect") / torch "reflect"
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    r = np.mod(idx, period)
    return np.where(r >= size, period - r, r)


def _crop(b, x, top, left, h, w, fill=0.0, mode="constant"):
    """Per-sample crops ``x[n, :, top[n]:top[n]+h, left[n]:left[n]+w]`` (host
    int arrays of length 1 or N); positions outside the image are padding.

    One ``take`` from the flattened batch: the flat source index of every
    output pixel is built on the device from the per-sample rows and columns
    (only those ``N*(h+w)`` numbers travel), so a crop costs one gather."""
    xp = b.xp
    dev = _device(x)
    n, c, H, W = (int(s) for s in x.shape)
    rows_idx = np.asarray(top, dtype=np.int64).reshape(-1, 1) + np.arange(h)
    cols_idx = np.asarray(left, dtype=np.int64).reshape(-1, 1) + np.arange(w)
    src_rows, src_cols = _source_index(rows_idx, H, mode), _source_index(cols_idx, W, mode)
    m = src_rows.shape[0]
    inside = None
    if mode == "constant" and (src_rows.min() < 0 or src_rows.max() >= H or src_cols.min() < 0 or src_cols.max() >= W):
        inside_h = b.asarray((src_rows >= 0) & (src_rows < H))
        inside_w = b.asarray((src_cols >= 0) & (src_cols < W))
        inside = xp.reshape(inside_h, (m, 1, h, 1)) & xp.reshape(inside_w, (m, 1, 1, w))
        src_rows, src_cols = np.clip(src_rows, 0, H - 1), np.clip(src_cols, 0, W - 1)
    rows = xp.reshape(b.asarray(src_rows * W), (m, 1, h, 1))
    cols = xp.reshape(b.asarray(src_cols), (m, 1, 1, w))
    planes = xp.reshape(xp.arange(n * c, dtype=rows.dtype, device=dev) * (H * W), (n, c, 1, 1))
    index = xp.reshape(planes + rows + cols, (-1,))
    out = xp.reshape(xp.take(xp.reshape(x, (-1,)), index, axis=0), (n, c, h, w))
    if inside is not None:
        out = xp.where(inside, out, xp.asarray(fill, dtype=x.dtype, device=dev))
    return out


class RandomCrop(Transform):
    """A random ``size`` window per sample, after padding the image.

    ``padding``: an int, ``(left/right, top/bottom)`` or ``(left, top, right,
    bottom)`` (torchvision's forms); ``padding_mode``: ``"constant"`` (with
    ``fill``), ``"edge"`` or ``"reflect"``; ``pad_if_needed`` pads images
    smaller than ``size``. Every offset of the padded image is equally
    likely. The CIFAR recipe: ``RandomCrop(32, padding=4)``.
    """

    random = True

    def __init__(self, size, padding=0, pad_if_needed: bool = False, fill: float = 0.0,
                 padding_mode: str = "constant"):
        self.size = _size_pair(size, "size", "RandomCrop")
        self.padding = _padding4(padding, "RandomCrop")
        if padding_mode not in ("constant", "edge", "reflect"):
            raise ValueError(f"RandomCrop: padding_mode must be 'constant', 'edge' or 'reflect', "
                             f"got {padding_mode!r}")
        if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not math.isfinite(fill):
            raise ValueError(f"RandomCrop: fill must be a finite number, got {fill!r}")
        self.pad_if_needed, self.fill, self.padding_mode = bool(pad_if_needed), float(fill), padding_mode

    def _apply(self, b, x, rng):
        n, _, H, W = (int(s) for s in x.shape)
        h, w = self.size
        left, top, right, bottom = self.padding
        if self.pad_if_needed:
            extra_h, extra_w = max(0, h - (H + top + bottom)), max(0, w - (W + left + right))
            top, bottom, left, right = top + extra_h, bottom + extra_h, left + extra_w, right + extra_w
        hp, wp = H + top + bottom, W + left + right
        if h > hp or w > wp:
            raise ValueError(f"RandomCrop: crop {h}x{w} is larger than the padded image {hp}x{wp} "
                             f"(input {H}x{W}); pass pad_if_needed=True or a smaller size")
        if self.padding_mode == "reflect" and (max(top, bottom) >= H or max(left, right) >= W):
            raise ValueError(f"RandomCrop: reflect padding must be smaller than the image ({H}x{W}), "
                             f"got {self.padding}")
        oy = rng.integers(0, hp - h + 1, size=n)
        ox = rng.integers(0, wp - w + 1, size=n)
        return _crop(b, x, oy - top, ox - left, h, w, self.fill, self.padding_mode)

    def _repr_args(self):
        return {"size": self.size, "padding": self.padding, "padding_mode": self.padding_mode}


class CenterCrop(Transform):
    """The central ``size`` window (torchvision's rounding); an image smaller
    than ``size`` is padded with zeros."""

    def __init__(self, size):
        self.size = _size_pair(size, "size", "CenterCrop")

    def _apply(self, b, x, rng):
        _, _, H, W = (int(s) for s in x.shape)
        h, w = self.size
        top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
        if 0 <= top and top + h <= H and 0 <= left and left + w <= W:
            return x[:, :, top:top + h, left:left + w]
        return _crop(b, x, np.array([top]), np.array([left]), h, w)

    def _repr_args(self):
        return {"size": self.size}


class RandomHorizontalFlip(Transform):
    """Mirror each sample left-right with probability ``p``."""

    random = True

    def __init__(self, p: float = 0.5):
        self.p = _probability(p, "RandomHorizontalFlip")

    def _apply(self, b, x, rng):
        xp = b.xp
        flags = rng.random(int(x.shape[0])) < self.p
        flip = xp.reshape(b.asarray(flags), (-1, 1, 1, 1))
        return xp.where(flip, xp.flip(x, axis=3), x)

    def _repr_args(self):
        return {"p": self.p}


class Resize(Transform):
    """Resample to ``size``: an int sets the shorter side (the other keeps the
    aspect ratio, truncated as torchvision does), a pair ``(h, w)`` sets both.
    Bilinear, with antialiasing when shrinking (``antialias=True``), as
    ``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)``."""

    def __init__(self, size, antialias: bool = True):
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            if size < 1:
                raise ValueError(f"Resize: size must be positive, got {size!r}")
            self.size = int(size)
        else:
            self.size = _size_pair(size, "size", "Resize")
        self.antialias = bool(antialias)

    def output_size(self, H: int, W: int) -> tuple[int, int]:
        if isinstance(self.size, tuple):
            return self.size
        if H <= W:
            return self.size, int(self.size * W / H)
        return int(self.size * H / W), self.size

    def _apply(self, b, x, rng):
        _, _, H, W = (int(s) for s in x.shape)
        h, w = self.output_size(H, W)
        if (h, w) == (H, W):
            return x
        dev = _device(x)
        rows = _linear_weights(b, [0], [H], h, H, self.antialias, x.dtype, dev)
        cols = _linear_weights(b, [0], [W], w, W, self.antialias, x.dtype, dev)
        return _resample(b.xp, x, rows, cols)

    def _repr_args(self):
        return {"size": self.size, "antialias": self.antialias}


class RandomResizedCrop(Transform):
    """A random box per sample — area a fraction ``scale`` of the image,
    aspect ratio (w/h) log-uniform in ``ratio``, up to 10 tries, else the
    largest central box of an allowed ratio (torchvision's procedure) —
    resized to ``size`` (bilinear, antialiased when shrinking)."""

    random = True

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias: bool = True):
        self.size = _size_pair(size, "size", "RandomResizedCrop")
        self.scale = _range(scale, "scale", "RandomResizedCrop", low=0.0, high=1.0)
        self.ratio = _range(ratio, "ratio", "RandomResizedCrop", low=1e-6)
        if self.scale[1] <= 0:
            raise ValueError(f"RandomResizedCrop: scale must allow a positive area, got {scale!r}")
        self.antialias = bool(antialias)

    def boxes(self, rng, n: int, H: int, W: int):
        """``(top, left, height, width)`` host int arrays of ``n`` boxes."""
        tries = 10
        area = H * W
        target = area * rng.uniform(self.scale[0], self.scale[1], size=(n, tries))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = np.exp(rng.uniform(log_lo, log_hi, size=(n, tries)))
        w = np.round(np.sqrt(target * aspect)).astype(np.int64)
        h = np.round(np.sqrt(target / aspect)).astype(np.int64)
        ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        first = np.argmax(ok, axis=1)
        found = ok[np.arange(n), first]
        hh, ww = h[np.arange(n), first], w[np.arange(n), first]
        ratio_in = W / H
        if ratio_in < self.ratio[0]:
            fw, fh = W, int(round(W / self.ratio[0]))
        elif ratio_in > self.ratio[1]:
            fh, fw = H, int(round(H * self.ratio[1]))
        else:
            fh, fw = H, W
        hh, ww = np.where(found, hh, fh), np.where(found, ww, fw)
        top = np.minimum((rng.random(n) * (H - hh + 1)).astype(np.int64), H - hh)
        left = np.minimum((rng.random(n) * (W - ww + 1)).astype(np.int64), W - ww)
        top = np.where(found, top, (H - fh) // 2)
        left = np.where(found, left, (W - fw) // 2)
        return top, left, hh, ww

    def _apply(self, b, x, rng):
        n, _, H, W = (int(s) for s in x.shape)
        top, left, hh, ww = self.boxes(rng, n, H, W)
        dev = _device(x)
        h, w = self.size
        rows = _linear_weights(b, top, hh, h, H, self.antialias, x.dtype, dev)
        cols = _linear_weights(b, left, ww, w, W, self.antialias, x.dtype, dev)
        return _resample(b.xp, x, rows, cols)

    def _repr_args(self):
        return {"size": self.size, "scale": self.scale, "ratio": self.ratio}


class ColorJitter(Transform):
    """Random brightness and contrast per sample, on images in [0, 1].

    ``brightness``: ``b`` (factor uniform in ``[max(0, 1-b), 1+b]``) or a
    ``(min, max)`` factor range: ``x * f``. ``contrast``: the same forms:
    ``f * x + (1 - f) * mean``, ``mean`` the image's mean grey level (ITU-R
    601 luma for 3 channels, the channel mean otherwise). Brightness comes
    first, then contrast; results are clipped to [0, 1].
    """

    random = True

    def __init__(self, brightness=0.0, contrast=0.0):
        self.brightness = _range(brightness, "brightness", "ColorJitter", center=1.0)
        self.contrast = _range(contrast, "contrast", "ColorJitter", center=1.0)

    def _apply(self, b, x, rng):
        xp = b.xp
        n, c = int(x.shape[0]), int(x.shape[1])
        out = x
        for lo, hi, kind in ((*self.brightness, "brightness"), (*self.contrast, "contrast")):
            if lo == hi == 1.0:
                continue
            f = b.asarray(rng.uniform(lo, hi, size=(n, 1, 1, 1)).astype(str_dtype(x.dtype)), dtype=x.dtype)
            if kind == "brightness":
                out = out * f
            else:
                if c == 3:
                    grey = 0.299 * out[:, 0:1, ...] + 0.587 * out[:, 1:2, ...] + 0.114 * out[:, 2:3, ...]
                else:
                    grey = xp.mean(out, axis=1, keepdims=True)
                m = xp.mean(grey, axis=(1, 2, 3), keepdims=True)
                out = f * out + (1.0 - f) * m
            out = xp.clip(out, 0.0, 1.0)
        return out

    def _repr_args(self):
        return {"brightness": self.brightness, "contrast": self.contrast}


class RandomErasing(Transform):
    """With probability ``p``, overwrite one random box per sample with
    ``value`` (a number or one per channel): area a fraction ``scale`` of the
    image, aspect ratio (h/w) log-uniform in ``ratio``, up to 10 tries for a
    box that fits (else the sample is left alone), as torchvision's
    ``RandomErasing``. Usually placed after normalisation."""

    random = True

    def __init__(self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0):
        self.p = _probability(p, "RandomErasing")
        self.scale = _range(scale, "scale", "RandomErasing", low=0.0, high=1.0)
        self.ratio = _range(ratio, "ratio", "RandomErasing", low=1e-6)
        v = np.asarray(value, dtype=np.float64)
        if v.ndim > 1 or not np.all(np.isfinite(v)):
            raise ValueError(f"RandomErasing: value must be a finite number or one per channel, got {value!r}")
        self.value = v

    def boxes(self, rng, n: int, H: int, W: int):
        """``(apply, top, left, height, width)`` host arrays for ``n`` samples."""
        tries = 10
        apply = rng.random(n) < self.p
        area = H * W
        target = area * rng.uniform(self.scale[0], self.scale[1], size=(n, tries))
        aspect = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), size=(n, tries)))
        h = np.round(np.sqrt(target * aspect)).astype(np.int64)
        w = np.round(np.sqrt(target / aspect)).astype(np.int64)
        ok = (h < H) & (w < W)
        first = np.argmax(ok, axis=1)
        apply &= ok[np.arange(n), first]
        hh, ww = h[np.arange(n), first], w[np.arange(n), first]
        top = (rng.random(n) * np.maximum(H - hh + 1, 1)).astype(np.int64)
        left = (rng.random(n) * np.maximum(W - ww + 1, 1)).astype(np.int64)
        return apply, top, left, hh, ww

    def _apply(self, b, x, rng):
        xp = b.xp
        n, c, H, W = (int(s) for s in x.shape)
        apply, top, left, hh, ww = self.boxes(rng, n, H, W)
        dev = _device(x)
        if self.value.ndim == 1 and self.value.size not in (1, c):
            raise ValueError(f"RandomErasing: {self.value.size} values for {c} channels")
        col = lambda a: b.asarray(np.asarray(a, dtype=np.int64))
        t, l_, hh_d, ww_d = (xp.reshape(col(a), (-1, 1, 1, 1)) for a in (top, left, hh, ww))
        on = xp.reshape(b.asarray(apply), (-1, 1, 1, 1))
        r = xp.reshape(xp.arange(H, dtype=t.dtype, device=dev), (1, 1, H, 1))
        k = xp.reshape(xp.arange(W, dtype=t.dtype, device=dev), (1, 1, 1, W))
        mask = on & (r >= t) & (r < t + hh_d) & (k >= l_) & (k < l_ + ww_d)
        if self.value.size == 1:
            fill = xp.asarray(float(self.value.reshape(-1)[0]), dtype=x.dtype, device=dev)
        else:
            fill = b.asarray(self.value.reshape(1, c, 1, 1).astype(str_dtype(x.dtype)), dtype=x.dtype)
        return xp.where(mask, fill, x)

    def _repr_args(self):
        return {"p": self.p, "scale": self.scale, "ratio": self.ratio, "value": self.value.tolist()}
