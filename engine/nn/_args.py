"""PyTorch's factory arguments (``device=``, ``dtype=``) as the engine reads them.

``dtype``: ``None`` (float32, PyTorch's default), a name (``"float64"``), a
NumPy dtype or scalar type, a backend dtype, or a ``torch`` dtype
(``torch.float64``); floating point only (float32 or float64), since the
layers' arithmetic is floating point.

``device``: the engine puts every array on the *active backend*
(``engine.set_backend``), so ``device`` is not a placement request. It is
accepted when it names where that backend already computes (``None``,
``"cpu"`` or a ``torch.device("cpu")`` on the NumPy and array_api_strict
backends; ``"cuda"``/``"cuda:N"`` on CuPy), and refused with a ``ValueError``
that says how to move the computation otherwise, so a ported
``device="cuda"`` never runs silently on the CPU.
"""
from __future__ import annotations

from .. import _state

__all__ = ["FLOAT_DTYPES", "dtype_name", "check_device"]

FLOAT_DTYPES = ("float32", "float64")


def dtype_name(dtype, where: str, default: str = "float32", allowed=FLOAT_DTYPES) -> str:
    """The name (``"float32"``…) of a dtype given any of the forms above."""
    if dtype is None:
        return default
    if isinstance(dtype, str):
        name = dtype
    else:
        text = str(getattr(dtype, "name", None) or dtype)  # numpy dtypes have .name; torch.float64 prints so
        if text.startswith("<class '"):  # a scalar type such as numpy.float64
            text = text[len("<class '"):-2]
        name = text.split(".")[-1]
    if name not in allowed:
        names = " or ".join(repr(a) for a in allowed)
        raise ValueError(f"{where}: dtype must be {names} (a name, a NumPy or torch dtype), got {dtype!r}")
    return name


def check_device(device, where: str) -> None:
    """Accept ``device`` if it names where the active backend computes; else explain."""
    if device is None:
        return
    text = str(getattr(device, "type", None) or device).lower()
    kind = text.split(":")[0]
    backend = _state.current()
    on_gpu = backend.name == "cupy"
    if (kind == "cpu" and not on_gpu) or (kind == "cuda" and on_gpu):
        return
    here = "an NVIDIA GPU (cuda)" if on_gpu else "the CPU"
    raise ValueError(f"{where}: device={device!r} does not match the active backend {backend.name!r}, which "
                     f"computes on {here}. The engine creates parameters on the active backend: call "
                     "engine.set_backend('cupy') for the GPU or engine.set_backend('numpy') for the CPU "
                     "before building the model (or move it with model.to(...)), and pass device=None")
