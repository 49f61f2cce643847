"""``array_api_strict`` backend: the reference implementation of the standard.

Slow, and not meant for training; it exists to prove that the engine's layer
code uses nothing outside the array API standard.
"""
from __future__ import annotations

import numpy as np

from .base import Backend, BackendUnavailableError

try:
    import array_api_strict as _strict
    from array_api_strict._array_object import Array as _StrictArray
    from array_api_strict._dtypes import DType as _StrictDType
except ImportError as exc:  # kept to explain the failure when the backend is asked for
    _strict = None
    _import_error = exc


class ArrayApiStrictBackend(Backend):
    name = "array_api_strict"

    def __init__(self):
        if _strict is None:
            raise BackendUnavailableError(
                f"the 'array_api_strict' backend needs the array-api-strict package "
                f"({_import_error}); install it with: pip install array-api-strict")
        self.xp = _strict

    def owns(self, x) -> bool:
        return isinstance(x, _StrictArray)

    def asarray(self, data, dtype=None):
        if isinstance(dtype, str):
            dtype = getattr(_strict, dtype)
        elif dtype is not None and not isinstance(dtype, _StrictDType):
            dtype = getattr(_strict, np.dtype(dtype).name)
        if self.owns(data):
            return _strict.asarray(data, dtype=dtype, copy=True)
        if hasattr(data, "__dlpack__") and not isinstance(data, np.ndarray):
            data = np.from_dlpack(data)
        data = np.asarray(data)
        if dtype is None and data.dtype == np.float16:
            dtype = _strict.float32
        return _strict.asarray(data, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.from_dlpack(x).copy()


BACKEND_CLASS = ArrayApiStrictBackend
