"""The NumPy backend's float32 linear layers and optimizer updates through the C kernels
of ``kernels/cpu_dense.c``.

Each function returns ``None`` where the kernels do not apply:
another dtype, an empty or non-contiguous array, no compiled library, a product small
enough for OpenBLAS to compute on the calling thread (see :data:`MIN_MACS`), the backward of
a batch of one. The caller then takes the NumPy path.

* ``y = x W^T + b``: a grid of dot products over the rows of ``x`` and ``W`` (both keep the
  in-features contiguous), bias added in the same pass; threads take whole output features.
* ``dx = g W`` and ``dW = g^T x``: the right operand's rows are contiguous, so a register
  tile reads them in place (no packing); threads take panels of columns. ``db`` stays
  NumPy's sum.
* Adam/AdamW and SGD: one pass per parameter with NumPy's float32 operations in NumPy's
  order (the same bits), split over the threads by elements when the parameter is large.

Every output element is summed in an order fixed by the shapes, whatever the thread count.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels import native

from . import native_calls
from .native_calls import START, STOP

#: Multiply-adds a thread must get before a product is split (on the C pool: a hand-off
#: costs a few microseconds).
MIN_MACS_PER_THREAD = 1 << 20
#: Elements of a parameter a thread must get before an optimizer update is split.
MIN_ELEMENTS_PER_THREAD = 1 << 16
#: Products smaller than this (multiply-adds) stay with NumPy's BLAS. It is OpenBLAS's own
#: threshold (65536 x GEMM_MULTITHREAD_THRESHOLD 4): below it OpenBLAS computes on the
#: calling thread and is quick (LeNet-5's 64x120 by 120x84: 25 us, the kernels 37); above
#: it OpenBLAS wakes its workers, which on a busy machine stalled a call for milliseconds.
MIN_MACS = 1 << 18
#: A batch of one (a matrix-vector product) stays with NumPy below this many weights
#: (OpenBLAS's threshold for threading gemv: 2304 x 4).
MIN_GEMV_WEIGHTS = 2304 * 4
#: Weights a thread must get before a batch of one is split: a matrix-vector product is bound
#: by reading the weights, which two cores do faster than one (SimpleCNN's 3136 -> 128, 1.6 MB:
#: 32 -> 19 us on two threads), long before it has the multiply-adds of MIN_MACS_PER_THREAD.
GEMV_WEIGHTS_PER_THREAD = 1 << 16
_F32 = np.float32


def _lib(*arrays):
    """The library, for C-contiguous float32 arrays with no empty axis."""
    for a in arrays:
        if (a is None or not isinstance(a, np.ndarray) or a.dtype != _F32 or a.size == 0
                or not a.flags.c_contiguous):
            return None
    return native.library()


_ptr = native_calls.address


def _run(lib, name: str, args, extent: int, work: int, work_per_thread: int) -> None:
    """Entry point ``name`` over ``[0, extent)`` on the C pool, one thread per ``work_per_thread``."""
    native_calls.run(lib, name, args, extent, native_calls.threads_for(extent, work, work_per_thread))


def linear(x, weight, bias):
    """``x @ weight.T + bias`` for a 2-D float32 ``x (M, K)`` and ``weight (N, K)``, or ``None``."""
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        return None
    (m, k), n = x.shape, weight.shape[0]
    if (m * n * k < MIN_MACS) if m > 1 else (n * k < MIN_GEMV_WEIGHTS):
        return None
    lib = _lib(x, weight) if bias is None else _lib(x, weight, bias)
    if lib is None or (bias is not None and bias.shape != (n,)):
        return None
    y = np.empty((m, n), dtype=_F32)
    args = (_ptr(x), _ptr(weight), native_calls.address_or_none(bias), _ptr(y), m, n, k, START, STOP)
    _run(lib, "linear_fwd_f32", args, lib.linear_tiles(n), m * n * k,
         MIN_MACS_PER_THREAD if m > 1 else GEMV_WEIGHTS_PER_THREAD)
    return y


def _gemm(lib, a, a_strides, b, m, n, k):
    """``C (m x n) = A . B`` through ``gemm_nn_f32``: A with strides ``a_strides`` (in floats),
    B a C-contiguous (k x n) array, read in place."""
    c = np.empty((m, n), dtype=_F32)
    args = (_ptr(a), *a_strides, _ptr(b), n, _ptr(c), n, m, n, k, START, STOP)
    _run(lib, "gemm_nn_f32", args, lib.gemm_panels(n), m * n * k, MIN_MACS_PER_THREAD)
    return c


def linear_backward(grad_out, x, weight, need_input_grad, need_weight_grad):
    """``(dx, dW)`` of :func:`linear` (``None`` where not asked for), or ``None`` when the
    kernels do not apply to either product."""
    if grad_out.ndim != 2 or x.ndim != 2 or weight.ndim != 2:
        return None
    (m, k), n = x.shape, weight.shape[0]
    if grad_out.shape != (m, n) or weight.shape != (n, k) or m * n * k < MIN_MACS or m == 1:
        return None
    lib = _lib(grad_out, x, weight)
    if lib is None:
        return None
    dx = _gemm(lib, grad_out, (n, 1), weight, m, k, n) if need_input_grad else None  # g (M,N) . W (N,K)
    dw = _gemm(lib, grad_out, (1, n), x, n, k, m) if need_weight_grad else None      # g^T (N,M) . x (M,K)
    return dx, dw


# ------------------------------------------------------------------------------ optimizers
def _update_lib(p, grad, *state):
    """The library, if ``p``, ``grad`` and the state arrays are one float32 shape, contiguous
    and ``p`` writable; else ``None``."""
    if not isinstance(p, np.ndarray) or not p.flags.writeable:
        return None
    if any(s is not None and (not isinstance(s, np.ndarray) or s.shape != p.shape) for s in (grad, *state)):
        return None
    return _lib(p, grad, *(s for s in state if s is not None))


def adam_update(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay,
                decoupled, amsgrad, maximize):
    """One Adam/AdamW step on ``p`` in place, as ``engine.optim.Adam._update`` computes it:
    ``(exp_avg, exp_avg_sq, max_exp_avg_sq)`` new arrays (the old ones are left as they were;
    the last is ``None`` without ``amsgrad``), or ``None`` when the kernels do not apply.
    ``step`` is the step number after this one (1 on the first)."""
    lib = _update_lib(p, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None)
    if lib is None:
        return None
    flags = (1 if maximize else 0) | (2 if decoupled else 0) | (4 if amsgrad else 0) | (8 if weight_decay else 0)
    decay = 1 - lr * weight_decay if decoupled else weight_decay
    consts = np.array([decay, beta1, 1 - beta1, beta2, 1 - beta2, lr / (1 - beta1 ** step),
                       math.sqrt(1 - beta2 ** step), eps], dtype=_F32)
    m_out, v_out = np.empty_like(p), np.empty_like(p)
    vmax_out = np.empty_like(p) if amsgrad else None
    vmax_in = max_exp_avg_sq if amsgrad else None
    ptrs = (_ptr(p), _ptr(grad), _ptr(exp_avg), _ptr(m_out), _ptr(exp_avg_sq), _ptr(v_out),
            _ptr(vmax_in) if amsgrad else None, _ptr(vmax_out) if amsgrad else None, _ptr(consts), flags,
            START, STOP)
    _run(lib, "adam_f32", ptrs, p.size, p.size, MIN_ELEMENTS_PER_THREAD)  # memory-bound: threads only for big ones
    return m_out, v_out, vmax_out


def sgd_update(p, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """One SGD step on ``p`` in place, as ``engine.optim.SGD._update`` computes it: the new
    momentum buffer (``None`` without momentum; the old one is left as it was), wrapped in a
    1-tuple, or ``None`` when the kernels do not apply. ``momentum_buffer`` is ``None`` on
    the first step."""
    lib = _update_lib(p, grad, momentum_buffer)
    if lib is None:
        return None
    first = momentum_buffer is None
    flags = (1 if maximize else 0) | (2 if weight_decay else 0) | (4 if momentum else 0) | \
            (8 if first else 0) | (16 if nesterov else 0)
    consts = np.array([weight_decay, momentum, 1 - dampening, lr], dtype=_F32)
    buf_out = np.empty_like(p) if momentum else None
    ptrs = (_ptr(p), _ptr(grad), None if first or not momentum else _ptr(momentum_buffer),
            _ptr(buf_out) if momentum else None, _ptr(consts), flags, START, STOP)
    _run(lib, "sgd_f32", ptrs, p.size, p.size, MIN_ELEMENTS_PER_THREAD)
    return (buf_out,)
