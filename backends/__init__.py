"""Backend registry: find array libraries by name, import them lazily.

Each backend is a :class:`backends.base.Backend` subclass living in its own
module. ``get(name)`` returns the (cached) instance or raises a clear error;
``backend_of(array)`` tells which loaded backend owns an array.
"""
from __future__ import annotations

import importlib

from .base import Backend, BackendUnavailableError, Window

__all__ = ["Backend", "BackendUnavailableError", "Window", "NAMES", "get", "available", "backend_of"]

#: Known backend names and the module that implements each.
_MODULES = {
    "numpy": f"{__name__}.numpy_backend",
    "cupy": f"{__name__}.cupy_backend",
    "array_api_strict": f"{__name__}.array_api_strict_backend",
}
NAMES = tuple(_MODULES)
_loaded: dict[str, Backend] = {}


def get(name: str) -> Backend:
    """Return the backend called ``name``, importing it on first use.

    Raises ``ValueError`` for an unknown name (listing the known ones) and
    :class:`BackendUnavailableError` (a ``RuntimeError``) when the backend's
    library or device is missing, saying why and how to fix it.
    """
    if isinstance(name, Backend):
        return name
    if name not in _MODULES:
        raise ValueError(
            f"unknown backend {name!r}; known backends are {', '.join(NAMES)} "
            f"(usable here: {', '.join(available()) or 'none'})"
        )
    if name not in _loaded:
        module = importlib.import_module(_MODULES[name])
        backend = module.BACKEND_CLASS()  # raises BackendUnavailableError with the reason
        _loaded[name] = backend
    return _loaded[name]


def unavailable_reason(name: str) -> str | None:
    """``None`` if backend ``name`` can be used here, else the reason it cannot."""
    try:
        get(name)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def available() -> list[str]:
    """Names of the backends that can be used on this machine."""
    usable = []
    for name in _MODULES:
        try:
            get(name)
        except BackendUnavailableError:
            continue
        usable.append(name)
    return usable


#: Owners found by :func:`backend_of`, by the array's type (backends own arrays by type):
#: an op asks for every argument, and the loop over ``owns`` took 1 us an array.
_owner_by_type: dict[type, Backend] = {}


def backend_of(x) -> Backend | None:
    """The loaded backend that owns array ``x``, or ``None`` if none does."""
    owner = _owner_by_type.get(type(x))
    if owner is not None:
        return owner
    for backend in _loaded.values():
        if backend.owns(x):
            _owner_by_type[type(x)] = backend
            return backend
    return None
