"""Whether operations are recorded on the tape: ``no_grad``, ``enable_grad``,
``set_grad_enabled``, ``is_grad_enabled``.

Grad mode is thread-local, as in PyTorch: a ``no_grad`` block in one thread
does not stop another thread from recording. Each context manager also works
as a decorator.
"""
from __future__ import annotations

import functools
import threading

__all__ = ["enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled"]

_local = threading.local()


def is_grad_enabled() -> bool:
    """True when new operations are recorded for backward (the default)."""
    return getattr(_local, "enabled", True)


def _set(mode: bool) -> None:
    _local.enabled = bool(mode)


class _GradMode:
    """Base of the grad-mode context managers; usable as a decorator."""

    mode = True

    def __enter__(self):
        self._previous = is_grad_enabled()
        _set(self.mode)
        return self

    def __exit__(self, *exc):
        _set(self._previous)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)() if not isinstance(self, set_grad_enabled) else set_grad_enabled(self.mode):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Record nothing inside the block: outputs have no ``grad_fn``, and no
    input, column matrix or pooling index is kept for a backward.

        with engine.no_grad():
            logits = model(x)

    Also a decorator (``@engine.no_grad()``).
    """

    mode = False


class enable_grad(_GradMode):
    """Record again inside a ``no_grad`` block (or as a decorator)."""

    mode = True


class set_grad_enabled(_GradMode):
    """``set_grad_enabled(False)`` is ``no_grad()``, ``set_grad_enabled(True)``
    is ``enable_grad()``; calling it outside a ``with`` sets the mode for the
    current thread, as in PyTorch."""

    def __init__(self, mode: bool):
        self._previous = is_grad_enabled()
        self.mode = bool(mode)
        _set(self.mode)

    def __enter__(self):
        return self  # the mode was set by __init__

    def __exit__(self, *exc):
        _set(self._previous)
        return False
