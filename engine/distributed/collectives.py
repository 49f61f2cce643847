"""``allreduce`` and ``broadcast`` of whole backend arrays, and the fused buffers
that carry many arrays in one message."""
from __future__ import annotations

import math

import numpy as np

from .. import backends
from .runtime import _check_op, world

__all__ = ["FusedBuffer", "allreduce", "broadcast"]


def _owner(array, where):
    if hasattr(array, "grad_fn") and hasattr(array, "data"):  # an engine.Tensor
        array = array.data
    if isinstance(array, np.ndarray):
        return array, backends.get("numpy")
    owner = backends.backend_of(array)
    if owner is None:
        raise TypeError(f"{where}: expected an array of one of the engine's backends or a NumPy array, "
                        f"got {type(array).__module__}.{type(array).__name__}")
    return array, owner


def allreduce(array, op: str = "sum"):
    """``op`` (``"sum"``, ``"mean"``, ``"max"``, ``"min"``) of ``array`` over every
    rank: a new array of the same backend, dtype and shape, equal on every rank.
    Collective: every rank calls it with an array of the same shape and dtype.
    In a world of one it is a copy."""
    _check_op(op)
    array, backend = _owner(array, "allreduce")
    if op == "mean" and "float" not in str(array.dtype):
        raise TypeError(f"allreduce: op='mean' needs a floating array, got {array.dtype}; use 'sum'")
    xp = backend.xp
    shape = tuple(array.shape)
    flat = xp.reshape(xp.asarray(array, copy=True), (-1,))
    world().device_communicator(backend).allreduce_(flat, op)
    return xp.reshape(flat, shape)


def broadcast(array, root: int = 0):
    """Rank ``root``'s ``array`` on every rank (a new array; the others' values are
    replaced). Collective: every rank passes an array of the same shape and dtype."""
    array, backend = _owner(array, "broadcast")
    w = world()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < w.size:
        raise ValueError(f"broadcast: root must be a rank in [0, {w.size - 1}], got {root!r}")
    xp = backend.xp
    shape = tuple(array.shape)
    flat = xp.reshape(xp.asarray(array, copy=True), (-1,))
    w.device_communicator(backend).broadcast_(flat, int(root))
    return xp.reshape(flat, shape)


class FusedBuffer:
    """One preallocated 1-D array of one dtype holding several arrays end to end,
    plus ``extra`` trailing slots, so that one collective carries them all.

    ``sizes``: the element count of each array, in order. ``pack(arrays)``
    copies them in (``None`` becomes zeros: every rank sends the same layout),
    ``views()`` gives each one's slice, reshaped to ``shapes``.
    """

    def __init__(self, backend, dtype, shapes, extra: int = 0):
        self.backend, self.dtype = backend, dtype
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)]).tolist()
        self.total = int(self.offsets[-1])
        self.extra = int(extra)
        self.array = backend.xp.zeros((self.total + self.extra,), dtype=dtype)

    def pack(self, arrays) -> None:
        xp, buf = self.backend.xp, self.array
        for a, start, stop in zip(arrays, self.offsets[:-1], self.offsets[1:]):
            if stop == start:
                continue
            if a is None:
                buf[start:stop] = 0
            else:
                buf[start:stop] = xp.reshape(a, (-1,))

    def view(self, i: int):
        """Array ``i``'s part of the buffer, in its shape (a view: copy it to keep it)."""
        return self.backend.xp.reshape(self.array[self.offsets[i]:self.offsets[i + 1]], self.shapes[i])

    @property
    def extras(self):
        """The trailing ``extra`` slots."""
        return self.array[self.total:]

    def __repr__(self) -> str:
        return (f"FusedBuffer({self.backend.name}, {self.dtype}, {len(self.shapes)} arrays, "
                f"{self.total:,} values + {self.extra} extra)")
