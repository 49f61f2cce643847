"""A small CNN engine written once against the Python array API standard.

    import engine
    engine.set_backend("cupy")   # or "numpy" (default), "array_api_strict"

One installed name: the repository's ``backends/``, ``kernels/`` and ``bench/``
folders are the subpackages ``engine.backends``, ``engine.kernels`` and
``engine.bench`` (``pyproject.toml`` maps them).

``import engine`` loads nothing heavy: the public names below are imported on
first use (PEP 562), so ``python -m engine.bench --threads N`` can still set the
BLAS thread variables before NumPy loads. Imported before NumPy, the engine
sets ``OPENBLAS_THREAD_TIMEOUT=4`` (idle BLAS threads sleep at once) unless the
user set it; see ``engine/_blas_env.py``.
"""
import importlib as _importlib
import importlib.util as _importlib_util
import os as _os

from ._blas_env import configure_openblas as _configure_openblas

_OPENBLAS_SETTINGS = _configure_openblas()  # before anything imports NumPy


def _source_checkout_path():
    """In a source checkout used without ``pip install`` (the repository root on
    ``sys.path``), ``engine.backends`` and its siblings are the root's folders."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.isdir(_os.path.join(here, "backends")):
        return None  # an installed wheel: the subpackages sit inside engine/
    if _importlib_util.find_spec(f"{__name__}.backends") is not None:
        return None  # an editable install maps them
    root = _os.path.dirname(here)
    if all(_os.path.isfile(_os.path.join(root, name, "__init__.py")) for name in ("backends", "kernels", "bench")):
        return root
    raise ImportError("engine is incomplete: engine.backends was not found; "
                      "run `pip install -e .` in the repository root")


_root = _source_checkout_path()
if _root is not None:
    __path__.append(_root)  # noqa: F821  (a package's __path__)

__version__ = "0.1.0"

#: public name -> submodule that defines it (imported on first access)
_ATTRIBUTES = {
    **dict.fromkeys(("asarray", "available_backends", "get_backend", "get_num_threads", "get_rng_state",
                     "manual_seed", "set_backend", "set_num_threads", "set_rng_state", "to_numpy",
                     "use_backend"), "_state"),
    **dict.fromkeys(("CheckpointError", "load_checkpoint", "save_checkpoint"), "checkpoint"),
    **dict.fromkeys(("evaluate", "fit", "predict"), "training"),
    **dict.fromkeys(("Tensor", "tensor", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
                     "cat", "stack", "split", "chunk", "where", "flatten", "zeros", "ones", "full",
                     "zeros_like", "ones_like", "randn", "rand", "arange"), "autograd"),
}
_SUBMODULES = ("autograd", "backends", "checkpoint", "data", "distributed", "kernels", "models", "nn", "ops",
               "optim", "plots", "schedulers", "summary", "training")

__all__ = sorted(set(_ATTRIBUTES) | set(_SUBMODULES) - {"backends", "kernels", "summary"})


def __getattr__(name):
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    if name in _ATTRIBUTES:
        value = getattr(_importlib.import_module(f"{__name__}.{_ATTRIBUTES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES) | set(_SUBMODULES))
