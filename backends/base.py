"""The backend interface and its generic, array-API-only implementation.

Every operation the array API standard lacks (padding, sliding windows,
im2col/col2im, pooling windows, random numbers, device transfer) is a method
here. The methods of :class:`Backend` use nothing but the standard (slicing,
slice assignment, ``where``, ``reshape``, ``permute_dims``), so they run on any
compliant namespace, ``array_api_strict`` included. Concrete backends subclass
it and override what they can do faster.

Layouts used throughout (N batch, C channels, kh/kw kernel, OH/OW output):

* images are ``(N, C, H, W)``;
* ``im2col`` returns ``(C*kh*kw, N*OH*OW)``: one GEMM ``W(O, C*kh*kw) @ col``
  covers the whole batch, and ``col.T`` is the operand of the weight gradient;
* pooling indices are the flat position ``i*kw + j`` of the chosen element
  inside its window, shape ``(N, C, OH, OW)``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class BackendUnavailableError(RuntimeError):
    """The backend's library or device is missing; the message says how to fix it."""


class Window(NamedTuple):
    """Geometry of a 2-D sliding window (conv or pool), computed by the engine.

    ``pad_top``/``pad_bottom``/``pad_left``/``pad_right`` are the user's
    padding; when the output needs more rows or columns than that (pooling
    with ``ceil_mode``), the backend extends the bottom/right edge itself.
    """

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    oh: int
    ow: int

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """Height and width of the padded input the windows are read from."""
        need_h = (self.oh - 1) * self.sh + self.dh * (self.kh - 1) + 1
        need_w = (self.ow - 1) * self.sw + self.dw * (self.kw - 1) + 1
        return (max(h + self.pad_top + self.pad_bottom, need_h),
                max(w + self.pad_left + self.pad_right, need_w))

    def slices(self, i: int, j: int) -> tuple[slice, slice]:
        """Row and column slices of the padded input seen by kernel offset (i, j)."""
        r0, c0 = i * self.dh, j * self.dw
        return (slice(r0, r0 + self.sh * (self.oh - 1) + 1, self.sh),
                slice(c0, c0 + self.sw * (self.ow - 1) + 1, self.sw))


class Backend:
    """Generic backend over an array API namespace.

    Subclasses set :attr:`name` and :attr:`xp` (an array-API namespace, as
    returned by ``array_api_compat``) and implement :meth:`owns`,
    :meth:`asarray` and :meth:`to_numpy`.
    """

    name: str = "generic"
    xp = None
    #: Arrays live in host memory, so reading a value back costs no device sync.
    host_memory: bool = True
    #: im2col workspace per chunk, in bytes; ``None`` means the backend's default.
    workspace_limit: int | None = None
    default_workspace_bytes: int = 8 << 20
    #: Largest im2col columns (bytes, whole batch) a conv layer keeps from its
    #: forward for its backward instead of building them again (memory held
    #: between the two; 0 turns it off).
    keep_columns_bytes: int = 32 << 20

    # -- arrays -------------------------------------------------------------
    def owns(self, x) -> bool:
        """True if ``x`` is an array of this backend."""
        raise NotImplementedError

    def asarray(self, data, dtype=None):
        """``data`` (any array or nested sequence) as an array of this backend;
        like ``numpy.asarray``, no copy is made when none is needed."""
        raise NotImplementedError

    def to_numpy(self, x) -> np.ndarray:
        """A NumPy copy (or view) of ``x``."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs: the name, and whatever decides this backend's speed."""
        return self.name

    def dtype(self, name: str):
        """This backend's dtype object called ``name`` (e.g. ``"float32"``)."""
        return getattr(self.xp, name)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on host backends)."""

    def workspace_bytes(self) -> int:
        """Bytes an im2col chunk may use: the settable limit, else the default."""
        return self.workspace_limit if self.workspace_limit is not None else self.default_workspace_bytes

    # -- random numbers ------------------------------------------------------
    def uniform(self, shape, dtype, rng: np.random.Generator):
        """Uniform [0, 1) samples (dropout masks). Host backends draw from the
        engine's seeded host generator; device backends draw on the device."""
        return self.asarray(rng.random(shape), dtype=dtype)

    # -- whole convolutions (fast paths) -------------------------------------
    def index_add(self, target, key, values):
        """``target`` with ``values`` added at ``target[key]``, repeated indices
        accumulating (NumPy's ``np.add.at``): the backward of advanced indexing.

        Generic version: through NumPy on the host (the standard has no
        scatter-add); the NumPy and CuPy backends override it.
        """
        host = self.to_numpy(target).copy()
        host_key = tuple(self.to_numpy(k) if hasattr(k, "shape") else k for k in key) \
            if isinstance(key, tuple) else (self.to_numpy(key) if hasattr(key, "shape") else key)
        np.add.at(host, host_key, self.to_numpy(values))
        return self.asarray(host, dtype=target.dtype)

    def conv2d_fused(self, x, weight, bias, win: Window, groups: int):
        """``y (N, O, OH, OW)`` of a whole convolution (bias included) in one
        fast path, or ``None`` where this backend has none for these arguments;
        the engine then runs its im2col + GEMM code. The generic backend has none."""
        return None

    def conv2d_backward_fused(self, grad_out, x, weight, win: Window, groups: int, need_input_grad: bool,
                              need_weight_grad: bool = True):
        """``(dx, dw)`` of a convolution from a fast path; either may be ``None``
        (not computed here: the engine computes it), and ``dx`` (``dw``) is
        ``None`` when ``need_input_grad`` (``need_weight_grad``) is false. The
        generic backend has none."""
        return None, None

    # -- linear layers and optimizer updates (fast paths) ---------------------
    def linear_fused(self, x, weight, bias):
        """``x @ weight.T + bias`` for a 2-D ``x`` from a fast path, or ``None``
        (the engine then uses ``matmul``). The generic backend has none."""
        return None

    def linear_backward_fused(self, grad_out, x, weight, need_input_grad: bool, need_weight_grad: bool):
        """``(dx, dw)`` of a linear layer from a fast path (``None`` where not asked
        for), or ``None`` where this backend has none for these arguments."""
        return None

    def adam_update(self, p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **hyper):
        """One Adam step on ``p`` in place from a fast path: the new ``(exp_avg,
        exp_avg_sq, max_exp_avg_sq)``, or ``None`` (the optimizer then runs its
        array-API update). ``hyper``: see ``engine.optim.Adam._update``."""
        return None

    def sgd_update(self, p, grad, momentum_buffer, **hyper):
        """One SGD step on ``p`` in place from a fast path: ``(new momentum buffer,)``,
        or ``None`` (the optimizer then runs its array-API update)."""
        return None

    # -- element-wise ------------------------------------------------------
    def batch_norm_apply(self, x, mean, scale, bias):
        """``(x - mean) * scale (+ bias)`` with ``mean``, ``scale``, ``bias`` (``(C,)``, bias
        optional) broadcast over the channels of ``x (N, C, *)``: batch normalisation's map."""
        xp = self.xp
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        y = (x - xp.reshape(mean, shape)) * xp.reshape(scale, shape)
        return y if bias is None else y + xp.reshape(bias, shape)

    def channel_sum(self, x):
        """The sum of ``x (N, C, *)`` over every axis but the channels: ``(C,)``."""
        return self.xp.sum(x, axis=(0,) + tuple(range(2, x.ndim)))

    def relu(self, x):
        """``max(x, 0)``; NaN stays NaN, as in PyTorch."""
        xp = self.xp
        return xp.maximum(x, xp.zeros((), dtype=x.dtype))

    def relu_backward(self, grad_out, y):
        """``grad_out * (y > 0)`` for the ReLU output ``y`` (a product: a NaN gradient stays NaN)."""
        xp = self.xp
        return grad_out * xp.astype(y > 0, grad_out.dtype)

    def tanh(self, x):
        """The hyperbolic tangent, element-wise."""
        return self.xp.tanh(x)

    def tanh_backward(self, grad_out, y):
        """``grad_out * (1 - y * y)``: the gradient of tanh given its output ``y``."""
        return grad_out * (1 - y * y)

    def sigmoid(self, x):
        """``1 / (1 + exp(-x))`` without overflow: ``e = exp(-|x|)``, then ``1 / (1 + e)``
        where ``x >= 0`` and ``e / (1 + e)`` elsewhere (full relative accuracy in the tail)."""
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def sigmoid_backward(self, grad_out, y):
        """``grad_out * y * (1 - y)``: the gradient of sigmoid given its output ``y``."""
        return grad_out * y * (1 - y)

    def erf(self, x):
        """The error function, element-wise, which the standard lacks (GELU needs it).

        Generic array-API code, within a few float64 ulps of ``math.erf``:
        an odd Taylor series below 0.5 (full relative accuracy near 0),
        piecewise Chebyshev series of ``erfc`` on [0.5, 6) (tables built once
        per dtype from ``math.erfc``), and +-1 beyond; NaN stays NaN.
        """
        return _erf(self.xp, x, self._erf_tables(x.dtype))

    def _erf_tables(self, dtype):
        cache = self.__dict__.setdefault("_erf_cache", {})
        key = str(dtype)
        if key not in cache:
            taylor, pieces = _erf_coefficients()
            cache[key] = ([float(c) for c in taylor],
                          [self.asarray(np.ascontiguousarray(pieces[:, j]), dtype=dtype)
                           for j in range(pieces.shape[1])])
        return cache[key]

    # -- padding and windows -------------------------------------------------
    def pad2d(self, x, win: Window, value=0.0):
        """Pad the last two axes of ``x`` as ``win`` requires, with ``value``."""
        xp = self.xp
        n, c, h, w = x.shape
        hp, wp = win.padded_size(h, w)
        if (hp, wp) == (h, w):
            return x
        out = xp.full((n, c, hp, wp), value, dtype=x.dtype, device=_device(x))
        out[:, :, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w] = x
        return out

    def im2col(self, x, win: Window):
        """Columns ``(C*kh*kw, N*OH*OW)`` of the windows of ``x (N, C, H, W)``."""
        xp = self.xp
        n, c, _, _ = x.shape
        xt = xp.permute_dims(self.pad2d(x, win), (1, 0, 2, 3))
        col = xp.empty((c, win.kh, win.kw, n, win.oh, win.ow), dtype=x.dtype, device=_device(x))
        for i in range(win.kh):
            for j in range(win.kw):
                rows, cols = win.slices(i, j)
                col[:, i, j, :, :, :] = xt[:, :, rows, cols]
        return xp.reshape(col, (c * win.kh * win.kw, n * win.oh * win.ow))

    def col2im(self, col, x_shape, win: Window):
        """Adjoint of :meth:`im2col`: sum columns back into an ``x_shape`` image."""
        xp = self.xp
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        col = xp.reshape(col, (c, win.kh, win.kw, n, win.oh, win.ow))
        acc = xp.zeros((c, n, hp, wp), dtype=col.dtype, device=_device(col))
        for i in range(win.kh):
            for j in range(win.kw):
                rows, cols = win.slices(i, j)
                acc[:, :, rows, cols] = acc[:, :, rows, cols] + col[:, i, j, :, :, :]
        acc = acc[:, :, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w]
        return xp.permute_dims(acc, (1, 0, 2, 3))

    def sliding_windows(self, x_padded, win: Window):
        """Read-only view ``(N, C, OH, OW, kh, kw)`` of a padded input, no copy.

        Needs ``as_strided``, which the array API standard lacks."""
        raise NotImplementedError(
            f"the {self.name!r} backend has no strided window views (as_strided); "
            "use method='gemm' or method='naive'")

    # -- pooling -------------------------------------------------------------
    def max_pool2d(self, x, win: Window):
        """Max over each window: ``(y, idx)``, ``idx`` the flat in-window argmax
        (first maximum wins; the last NaN wins so NaN propagates, as in PyTorch).
        Padding never wins, even over -inf."""
        xp = self.xp
        lowest = xp.finfo(x.dtype).min  # not -inf: argmax over -inf is buggy on some GPU libraries
        xpad = self.pad2d(x, win, value=lowest)
        masks = window_masks(tuple(x.shape), win)
        best = idx = seen = None
        for k, (i, j) in enumerate(win_offsets(win)):
            rows, cols = win.slices(i, j)
            v = xpad[:, :, rows, cols]
            valid = None if masks is None else self.asarray(masks[k])
            if best is None:
                best, seen = v, valid
                idx = xp.zeros(v.shape, dtype=xp.int64, device=_device(x))
                continue
            take = (v > best) | xp.isnan(v)  # the last NaN wins, as in PyTorch
            if valid is not None:
                take = valid & (take | ~seen)
                seen = seen | valid
            best = xp.where(take, v, best)
            idx = xp.where(take, xp.asarray(k, dtype=xp.int64), idx)
        return best, idx

    def max_pool2d_backward(self, grad_out, idx, x_shape, win: Window):
        """Route each output gradient to its window's argmax."""
        xp = self.xp
        zero = xp.zeros((), dtype=grad_out.dtype)
        parts = [(i, j, xp.where(idx == i * win.kw + j, grad_out, zero))
                 for i in range(win.kh) for j in range(win.kw)]
        return self._scatter_windows(parts, x_shape, win, grad_out)

    def avg_pool_divisor(self, x_shape, win: Window, count_include_pad: bool, dtype):
        """``(OH, OW)`` divisors of average pooling, as PyTorch defines them."""
        _, _, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        mask = np.zeros((hp, wp))
        if count_include_pad:  # padded area counts, the ceil_mode overhang does not
            mask[:h + win.pad_top + win.pad_bottom, :w + win.pad_left + win.pad_right] = 1
        else:
            mask[win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w] = 1
        count = np.zeros((win.oh, win.ow))
        for i in range(win.kh):
            for j in range(win.kw):
                rows, cols = win.slices(i, j)
                count += mask[rows, cols]
        return self.asarray(count, dtype=dtype)

    def avg_pool2d(self, x, win: Window, divisor):
        """Sum over each window divided by ``divisor`` (scalar or ``(OH, OW)``)."""
        xpad = self.pad2d(x, win)
        total = None
        for i in range(win.kh):
            for j in range(win.kw):
                rows, cols = win.slices(i, j)
                v = xpad[:, :, rows, cols]
                total = v if total is None else total + v
        return total / divisor

    def avg_pool2d_backward(self, grad_out, x_shape, win: Window, divisor):
        """Spread each output gradient evenly over its window."""
        g = grad_out / divisor
        parts = [(i, j, g) for i in range(win.kh) for j in range(win.kw)]
        return self._scatter_windows(parts, x_shape, win, grad_out)

    def _scatter_windows(self, parts, x_shape, win: Window, like):
        xp = self.xp
        n, c, h, w = x_shape
        hp, wp = win.padded_size(h, w)
        acc = xp.zeros((n, c, hp, wp), dtype=like.dtype, device=_device(like))
        for i, j, g in parts:
            rows, cols = win.slices(i, j)
            acc[:, :, rows, cols] = acc[:, :, rows, cols] + g
        return acc[:, :, win.pad_top:win.pad_top + h, win.pad_left:win.pad_left + w]

    def __repr__(self) -> str:
        return f"<backend {self.name!r}>"


def win_offsets(win: Window):
    """Kernel offsets ``(i, j)`` in the order of the flat in-window index ``i*kw + j``."""
    return [(i, j) for i in range(win.kh) for j in range(win.kw)]


def touches_padding(x_shape, win: Window) -> bool:
    """True if some window reaches past the input: user padding, or the
    bottom/right extension ``ceil_mode`` may need."""
    _, _, h, w = x_shape
    return any(win[6:10]) or win.padded_size(h, w) != (h, w)


def window_masks(x_shape, win: Window):
    """Per kernel offset, an ``(OH, OW)`` NumPy bool mask of the outputs whose
    window element at that offset lies inside the input (not in the padding);
    ``None`` when no window touches padding."""
    _, _, h, w = x_shape
    if not touches_padding(x_shape, win):
        return None
    masks = []
    for i, j in win_offsets(win):
        rows = np.arange(win.oh) * win.sh + i * win.dh - win.pad_top
        cols = np.arange(win.ow) * win.sw + j * win.dw - win.pad_left
        masks.append(((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :])
    return masks


def _device(x):
    from array_api_compat import device
    return device(x)


#: erf: the Taylor series is used below ``_ERF_SMALL``, Chebyshev pieces of width
#: ``_ERF_STEP`` (degree ``_ERF_DEGREE``) up to ``_ERF_LARGE``; beyond, erf is +-1 in float64.
_ERF_SMALL, _ERF_STEP, _ERF_LARGE, _ERF_DEGREE, _ERF_TAYLOR_TERMS = 0.5, 0.5, 6.0, 12, 13


def _erf_coefficients():
    """Taylor coefficients of ``erf(x)/x`` in ``x**2`` and, per piece of [0.5, 6),
    the Chebyshev coefficients of ``erfc`` in the piece's local variable in [-1, 1]."""
    import math
    from numpy.polynomial import chebyshev
    taylor = [2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1))
              for n in range(_ERF_TAYLOR_TERMS)]
    erfc = np.vectorize(math.erfc)
    starts = np.arange(_ERF_SMALL, _ERF_LARGE, _ERF_STEP)
    pieces = np.array([chebyshev.chebinterpolate(lambda t, a=a: erfc(a + (t + 1) * _ERF_STEP / 2), _ERF_DEGREE)
                       for a in starts])
    return taylor, pieces


def _erf(xp, x, tables):
    shape = tuple(x.shape)
    x = xp.reshape(x, (-1,))  # take() gathers with 1-D indices
    taylor, pieces = tables
    a = xp.abs(x)
    x_small = xp.where(a < _ERF_SMALL, x, xp.zeros_like(x))  # no inf * 0 in the series
    z = x_small * x_small
    series = xp.zeros_like(x)
    for c in reversed(taylor):
        series = series * z + c
    small = x_small * series
    inside = (a >= _ERF_SMALL) & (a < _ERF_LARGE)
    a_mid = xp.where(inside, a, xp.full_like(a, _ERF_SMALL))  # NaN, inf and the rest index piece 0
    piece = xp.astype(xp.floor((a_mid - _ERF_SMALL) / _ERF_STEP), xp.int64)
    piece = xp.minimum(piece, xp.asarray(pieces[0].shape[0] - 1, dtype=xp.int64))
    t = (a_mid - (_ERF_SMALL + _ERF_STEP * xp.astype(piece, x.dtype))) * (2 / _ERF_STEP) - 1
    b1 = b2 = xp.zeros_like(x)
    for coefficients in reversed(pieces[1:]):  # Clenshaw
        b1, b2 = xp.take(coefficients, piece) + 2 * t * b1 - b2, b1
    erfc = xp.take(pieces[0], piece) + t * b1 - b2
    one = xp.ones_like(x)
    large = xp.where(a < _ERF_LARGE, 1 - erfc, one)
    out = xp.where(a < _ERF_SMALL, small, xp.where(x < 0, -large, large))
    return xp.reshape(xp.where(xp.isnan(x), x, out), shape)
