"""A small CNN engine written once against the Python array API standard.

    import engine
    engine.set_backend("cupy")   # or "numpy" (default), "array_api_strict"

Imported before NumPy, the engine sets ``OPENBLAS_THREAD_TIMEOUT=4`` (idle
BLAS threads sleep at once) unless the user set it; see ``engine/_blas_env.py``.
"""
from ._blas_env import configure_openblas as _configure_openblas

_OPENBLAS_SETTINGS = _configure_openblas()  # before anything imports NumPy

from ._state import (asarray, available_backends, get_backend, get_num_threads, get_rng_state, manual_seed,
                     set_backend, set_num_threads, set_rng_state, to_numpy, use_backend)
from . import data, functional, nn, optim  # noqa: E402  (after the state they use)
from . import checkpoint, models, plots, schedulers, training  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .training import evaluate, fit, predict  # noqa: E402

__version__ = "0.1.0"
__all__ = ["asarray", "available_backends", "get_backend", "manual_seed", "set_backend",
           "to_numpy", "use_backend", "get_rng_state", "set_rng_state", "set_num_threads", "get_num_threads",
           "data", "functional", "nn", "optim",
           "checkpoint", "models", "plots", "schedulers", "training", "fit", "evaluate", "predict",
           "save_checkpoint", "load_checkpoint"]
