"""Argument normalisation and input checks shared by the array-level ops (engine.ops) and the layers.

Every error names the op or layer (``where``), the argument, what was expected
and what came, so users never see a traceback from deep inside an array library.
"""
from __future__ import annotations

import numbers

from . import backends

from . import _state
from .autograd.tensor import Tensor


def backend_for(*arrays, where: str):
    """The backend owning all ``arrays`` (``None`` entries are ignored).

    Raises ``TypeError`` for non-arrays and for arrays of two backends.
    """
    _state.current()  # make sure the default backend is loaded
    found = None
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, Tensor):
            op = where.split()[0].split(":")[0]
            raise TypeError(f"{where}: got an engine.Tensor; engine.ops functions take plain backend arrays "
                            f"(pass t.data), and record nothing for autograd: the differentiable version is "
                            f"engine.nn.functional.{op}")
        owner = backends.backend_of(a)
        if owner is None:
            raise TypeError(f"{where}: expected an array of one of the engine's backends "
                            f"({', '.join(backends._loaded)}), got {type(a).__module__}.{type(a).__name__}; "
                            "convert it with engine.asarray(...)")
        if found is not None and owner is not found:
            raise TypeError(f"{where}: arrays from two backends in one call: {found.name!r} and "
                            f"{owner.name!r}; move the model or the data with model.to({found.name!r}) "
                            f"or engine.asarray(x, backend={found.name!r})")
        found = owner
    return found


def pair(value, name: str, where: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as a pair, each at least ``minimum``."""
    kind = type(value)  # plain ints and tuples of them first: numbers.Integral is an ABC check (~1 us)
    if kind is int or (kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int):
        value = (value, value) if kind is int else value
        if value[0] < minimum or value[1] < minimum:
            raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        value = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return value


_IS_FLOAT: dict = {}  # dtype -> whether its name says float (str(dtype) costs ~1 us a call)


def require_float(x, where: str, name: str = "input") -> None:
    """Floating-point arrays only (convolution of integers is almost always a bug)."""
    dtype = x.dtype
    key = (type(dtype), dtype)  # the type first: dtypes of two libraries are never compared
    ok = _IS_FLOAT.get(key)
    if ok is None:
        ok = _IS_FLOAT[key] = "float" in str(dtype)
    if not ok:
        kind = str(dtype)
        raise TypeError(f"{where}: {name} must be a floating-point array (float32 or float64), "
                        f"got dtype {kind}; convert it with engine.asarray(x, dtype='float32')")


def require_same_dtype(x, weight, bias, where: str) -> None:
    """Weight (and bias) must be floating point and of the input's dtype."""
    require_float(weight, where, "weight")
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None and a.dtype != x.dtype:
            raise TypeError(f"{where}: input dtype {x.dtype} differs from {name} dtype {a.dtype}; "
                            "convert one of them (e.g. model.to('float64'))")


def positive_int(value, name: str, where: str) -> int:
    """``value`` as an int >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    return int(value)


def require_ndim(x, ndim: int, layout: str, where: str, name: str = "input") -> None:
    if not hasattr(x, "ndim"):
        raise TypeError(f"{where}: {name} must be an array, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{where}: {name} must have {ndim} dimensions {layout}, "
                         f"got {x.ndim} dimensions with shape {tuple(x.shape)}")
