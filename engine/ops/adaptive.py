"""Adaptive average pooling: a fixed output size whatever the input size.

Output cell ``i`` (of ``out``) along an axis of length ``size`` averages the
input over ``[floor(i*size/out), ceil((i+1)*size/out))``, PyTorch's bins (they
overlap when ``size`` is not a multiple of ``out``). Since every cell averages
a rectangle, the op is separable: ``y = A_h @ x @ A_w^T`` with ``A`` the
``(out, size)`` averaging matrices, and its backward is
``dx = A_h^T @ grad @ A_w``: two matmuls each way, written once against the
array API. When the sizes divide evenly it is ordinary average pooling and
takes that (fast) path; a ``1x1`` output is a plain mean.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import backend_for, require_float, require_ndim
from .pooling import avg_pool2d, avg_pool2d_backward


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the ``out`` bins over an axis of length ``size``."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _averaging_matrix(backend, size, out, dtype):
    a = np.zeros((out, size))
    for i, (start, end) in enumerate(adaptive_bins(size, out)):
        a[i, start:end] = 1.0 / (end - start)
    return backend.asarray(a, dtype=dtype)


def _output_size(output_size, in_hw, where):
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"{where}: output_size must be an int or a pair (entries may be None), "
                             f"got {output_size!r}")
        sizes = tuple(output_size)
    else:
        sizes = (output_size, output_size)
    result = []
    for s, full in zip(sizes, in_hw):
        if s is None:
            result.append(full)
            continue
        if not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 1:
            raise ValueError(f"{where}: output_size entries must be positive ints or None, got {output_size!r}")
        result.append(int(s))
    return tuple(result)


def _plan(x_shape, output_size, where):
    """``("mean" | "pool" | "matmul", (OH, OW))`` for an ``(N, C, H, W)`` input."""
    h, w = x_shape[2], x_shape[3]
    if h < 1 or w < 1:
        raise ValueError(f"{where}: input must have a non-empty spatial size, got shape {tuple(x_shape)}")
    oh, ow = _output_size(output_size, (h, w), where)
    if (oh, ow) == (1, 1):
        return "mean", (oh, ow)
    if h % oh == 0 and w % ow == 0:
        return "pool", (oh, ow)
    return "matmul", (oh, ow)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed ``output_size`` (an int, or a pair whose
    entries may be ``None`` for "keep the input size"): ``(N, C, H, W) -> (N, C, OH, OW)``."""
    where = "adaptive_avg_pool2d"
    backend = backend_for(x, where=where)
    require_ndim(x, 4, "(N, C, H, W)", where)
    require_float(x, where)
    xp = backend.xp
    kind, (oh, ow) = _plan(x.shape, output_size, where)
    h, w = x.shape[2], x.shape[3]
    if kind == "mean":
        return xp.mean(x, axis=(2, 3), keepdims=True)
    if kind == "pool":
        return avg_pool2d(x, (h // oh, w // ow))
    a_h = _averaging_matrix(backend, h, oh, x.dtype)
    a_w = _averaging_matrix(backend, w, ow, x.dtype)
    return xp.matmul(xp.matmul(a_h, x), xp.matrix_transpose(a_w))


def adaptive_avg_pool2d_backward(grad_out, x_shape, output_size):
    """Gradient of :func:`adaptive_avg_pool2d` for its input, ``x_shape`` shaped."""
    where = "adaptive_avg_pool2d backward"
    backend = backend_for(grad_out, where=where)
    xp = backend.xp
    if len(x_shape) != 4:
        raise ValueError(f"{where}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    kind, (oh, ow) = _plan(x_shape, output_size, where)
    n, c, h, w = x_shape
    if tuple(grad_out.shape) != (n, c, oh, ow):
        raise ValueError(f"{where}: grad_out must have shape {(n, c, oh, ow)}, got {tuple(grad_out.shape)}")
    if kind == "mean":
        return grad_out / (h * w) * xp.ones(tuple(x_shape), dtype=grad_out.dtype)
    if kind == "pool":
        return avg_pool2d_backward(grad_out, tuple(x_shape), (h // oh, w // ow))
    a_h = _averaging_matrix(backend, h, oh, grad_out.dtype)
    a_w = _averaging_matrix(backend, w, ow, grad_out.dtype)
    return xp.matmul(xp.matmul(xp.matrix_transpose(a_h), grad_out), a_w)


def adaptive_avg_pool1d(x, output_size):
    """Average pooling of ``(N, C, L)`` to ``(N, C, output_size)`` with PyTorch's bins."""
    where = "adaptive_avg_pool1d"
    backend = backend_for(x, where=where)
    require_ndim(x, 3, "(N, C, L)", where)
    xp = backend.xp
    n, c, length = x.shape
    try:
        y = adaptive_avg_pool2d(xp.reshape(x, (n, c, 1, length)), (1, _single_size(output_size, where)))
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("adaptive_avg_pool2d:", f"{where}:", 1)) from None
    return xp.reshape(y, (n, c, y.shape[3]))


def adaptive_avg_pool1d_backward(grad_out, x_shape, output_size):
    """Gradient of :func:`adaptive_avg_pool1d` for its input, ``x_shape`` shaped."""
    where = "adaptive_avg_pool1d backward"
    xp = backend_for(grad_out, where=where).xp
    if len(x_shape) != 3:
        raise ValueError(f"{where}: x_shape must be (N, C, L), got {tuple(x_shape)}")
    n, c, length = x_shape
    g = xp.reshape(grad_out, (grad_out.shape[0], grad_out.shape[1], 1, grad_out.shape[2]))
    dx = adaptive_avg_pool2d_backward(g, (n, c, 1, length), (1, _single_size(output_size, where)))
    return xp.reshape(dx, tuple(x_shape))


def _single_size(output_size, where):
    if isinstance(output_size, (tuple, list)) and len(output_size) == 1:
        output_size = output_size[0]
    if not isinstance(output_size, numbers.Integral) or isinstance(output_size, bool) or output_size < 1:
        raise ValueError(f"{where}: output_size must be a positive int, got {output_size!r}")
    return int(output_size)
