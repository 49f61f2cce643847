"""Engine state: the active backend (process-wide) and the random generator
(one per thread, so that concurrent trainings are each reproducible)."""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import backends

_current = None  # set lazily to the numpy backend
_rng_local = threading.local()  # .rng: this thread's generator


def current():
    """The active :class:`backends.Backend` object."""
    global _current
    if _current is None:
        _current = backends.get("numpy")
    return _current


def set_backend(name: str) -> None:
    """Make ``name`` ("numpy", "cupy" or "array_api_strict") the active backend.

    New arrays (``engine.asarray``, data loaders, freshly built layers) go to it.
    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when the
    backend cannot run here, saying why.
    """
    global _current
    _current = backends.get(name)


def get_backend() -> str:
    """Name of the active backend."""
    return current().name


@contextlib.contextmanager
def use_backend(name: str):
    """``with engine.use_backend("array_api_strict"): ...`` switches the backend for a block."""
    global _current
    previous = current()
    set_backend(name)
    try:
        yield backends.get(name)
    finally:
        _current = previous


def available_backends() -> list[str]:
    """Names of the backends usable on this machine (``"numpy"`` always is)."""
    return backends.available()


def manual_seed(seed: int) -> None:
    """Seed every random draw of the engine made in this thread (initialisation,
    dropout, shuffling, augmentation).

    The generator is per thread: two threads that each call ``manual_seed`` and
    train their own model draw from their own streams, so each run reproduces
    its single-threaded result. (A device backend's generator, CuPy's, is one
    per process and is reseeded too.)
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _rng_local.rng = np.random.default_rng(int(seed))
    for b in backends._loaded.values():
        reseed = getattr(b, "reseed", None)
        if reseed is not None:
            reseed(int(seed))


def host_rng() -> np.random.Generator:
    """This thread's host random generator (seeded by :func:`manual_seed`; from
    the operating system's entropy until then)."""
    rng = getattr(_rng_local, "rng", None)
    if rng is None:
        rng = _rng_local.rng = np.random.default_rng()
    return rng


def get_rng_state() -> dict:
    """This thread's generator state, as a JSON-able dict (saved in checkpoints)."""
    return host_rng().bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by :func:`get_rng_state` (in this thread)."""
    host_rng().bit_generator.state = state


def dtype_of(dtype, backend=None):
    """The dtype object of ``backend`` (default: the active one) for a name such
    as ``"float32"``, a NumPy dtype or scalar type, or a dtype of that backend."""
    b = current() if backend is None else backend
    if isinstance(dtype, str):
        return b.dtype(dtype)
    if isinstance(dtype, (type, np.dtype)):
        return b.dtype(np.dtype(dtype).name)
    return dtype


def asarray(data, dtype=None, backend: str | None = None):
    """``data`` as an array of the active backend (or of ``backend``).

    ``dtype`` may be a name such as ``"float32"``, a NumPy dtype, or a dtype
    of the target backend.
    """
    b = backends.get(backend) if backend is not None else current()
    if hasattr(data, "grad_fn") and hasattr(data, "data"):  # an engine.Tensor
        data = data.data
    return b.asarray(data, dtype=None if dtype is None else dtype_of(dtype, b))


def to_numpy(x) -> np.ndarray:
    """A NumPy array holding ``x`` (an array or a Tensor), whatever backend it lives on."""
    if hasattr(x, "grad_fn") and hasattr(x, "data"):  # an engine.Tensor
        x = x.data
    if isinstance(x, np.ndarray):
        return x
    owner = backends.backend_of(x)
    if owner is None:
        return np.asarray(x)
    return owner.to_numpy(x)


def set_num_threads(n: int) -> None:
    """Split the host backends' own loops (im2col, col2im, pooling) over ``n``
    threads (default: ``$ENGINE_NUM_THREADS``, else every usable core).

    NumPy's BLAS keeps its own pool: limit it with ``threadpoolctl`` or
    ``OPENBLAS_NUM_THREADS`` (``python -m engine train --threads N`` does both).
    """
    from .backends import host_threads
    host_threads.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the host backends' own loops use (see :func:`set_num_threads`)."""
    from .backends import host_threads
    return host_threads.get_num_threads()
