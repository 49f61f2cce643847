"""Tensor factories with PyTorch's names: ``zeros``, ``ones``, ``full``,
``zeros_like``, ``ones_like``, ``randn``, ``rand``, ``arange``.

They make Tensors on the active backend; ``dtype`` defaults to float32
(``arange`` of integers: int64). Random draws come from the engine generator
(``engine.manual_seed``) on the host, so a seed gives the same numbers on
every backend.
"""
from __future__ import annotations

import numpy as np

from .. import _state
from .tensor import Tensor, as_array

__all__ = ["arange", "full", "ones", "ones_like", "rand", "randn", "zeros", "zeros_like"]


def _size(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


def _make(host, dtype, requires_grad):
    return Tensor(_state.asarray(host, dtype=dtype or "float32"), requires_grad=requires_grad)


def zeros(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return _make(np.zeros(_size(size)), dtype, requires_grad)


def ones(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return _make(np.ones(_size(size)), dtype, requires_grad)


def full(size, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    return _make(np.full(_size((size,)), fill_value), dtype, requires_grad)


def _like(t, value, dtype, requires_grad):
    from .. import backends
    a = as_array(t)
    owner = backends.backend_of(a)
    xp = owner.xp
    out = xp.full(tuple(a.shape), value, dtype=a.dtype if dtype is None else _state.dtype_of(dtype, owner))
    return Tensor(out, requires_grad=requires_grad)


def zeros_like(input, dtype=None, requires_grad: bool = False) -> Tensor:
    return _like(input, 0, dtype, requires_grad)


def ones_like(input, dtype=None, requires_grad: bool = False) -> Tensor:
    return _like(input, 1, dtype, requires_grad)


def randn(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the engine generator."""
    return _make(_state.host_rng().standard_normal(_size(size)), dtype, requires_grad)


def rand(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from the engine generator."""
    return _make(_state.host_rng().random(_size(size)), dtype, requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    default = "int64" if values.dtype.kind in "iu" else "float32"
    return _make(values, dtype or default, requires_grad)
