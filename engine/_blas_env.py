"""The one OpenBLAS setting the engine makes before NumPy loads its BLAS.

``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's idle threads sleep at once instead
of spinning ~0.1 s after every matrix product. The spinning took a core from
the engine's own loops: a Fashion-MNIST epoch of simple_cnn on 2 cores took
28.4 s with OpenBLAS's default and 21.5 s with this (README, "Speed").

OpenBLAS reads its environment once, when NumPy imports it, so this takes
effect only when ``import engine`` comes before ``import numpy`` (as in
``python -m engine``), and never overrides a value the user set. This module
imports nothing heavy for that reason.
"""
from __future__ import annotations

import os
import sys

SETTINGS = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def configure_openblas(environ=os.environ, modules=sys.modules) -> dict:
    """Set :data:`SETTINGS` in ``environ`` unless NumPy is loaded already or
    the user set them; returns what was set."""
    if "numpy" in modules:
        return {}
    applied = {}
    for name, value in SETTINGS.items():
        if name not in environ:
            environ[name] = value
            applied[name] = value
    return applied
