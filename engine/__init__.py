"""A small CNN engine written once against the Python array API standard.

    import engine
    engine.set_backend("cupy")   # or "numpy" (default), "array_api_strict"

Imported before NumPy, the engine sets ``OPENBLAS_THREAD_TIMEOUT=4`` unless it
is set already: OpenBLAS's idle threads then sleep at once instead of spinning
~0.1 s after every matrix product, which on a 2-core machine took a core from
the engine's own loops (a Fashion-MNIST epoch of simple_cnn: 28.4 s -> 22.2 s;
README, "Speed"). Set the variable yourself to keep another value.
"""
import os as _os
import sys as _sys

if "numpy" not in _sys.modules:  # OpenBLAS reads it once, when NumPy loads it
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
from ._state import (asarray, available_backends, get_backend, get_num_threads, get_rng_state, manual_seed,
                     set_backend, set_num_threads, set_rng_state, to_numpy, use_backend)
from . import data, functional, nn, optim  # noqa: E402  (after the state they use)
from . import checkpoint, models, plots, schedulers, training  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .training import evaluate, fit, predict  # noqa: E402

__version__ = "0.1.0"
__all__ = ["asarray", "available_backends", "get_backend", "manual_seed", "set_backend",
           "to_numpy", "use_backend", "get_rng_state", "set_rng_state", "set_num_threads", "get_num_threads", "data", "functional", "nn", "optim",
           "checkpoint", "models", "plots", "schedulers", "training", "fit", "evaluate", "predict",
           "save_checkpoint", "load_checkpoint"]
