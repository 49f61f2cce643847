"""Collectives on backend arrays: which path carries them, and the paths themselves.

=====================  ===============================================================
``LocalCommunicator``  a world of one: every collective leaves the array as it is
``MpiCommunicator``    NumPy arrays straight through MPI (``Allreduce`` in place, ``Bcast``)
``NcclCommunicator``   CuPy arrays GPU to GPU through NCCL (``cupy.cuda.nccl``) on the
                       current stream; the NCCL unique id travels from rank 0 over MPI as
                       128 bytes in a buffer
``StagedCommunicator`` any other backend's arrays: copied to host memory, reduced over
                       MPI, copied back (CuPy without NCCL; array_api_strict)
=====================  ===============================================================

:func:`communicator_for` picks one per backend: NCCL when the arrays live on
the GPU and every rank can import a working NCCL, else host staging (with one
line on rank 0 saying so). Each method works in place on a 1-D C-contiguous
buffer and returns it; ``op`` is ``"sum"``, ``"mean"``, ``"max"`` or ``"min"``.
"""
from __future__ import annotations

import sys

import numpy as np

from .runtime import World, _check_op

__all__ = ["Communicator", "LocalCommunicator", "MpiCommunicator", "NcclCommunicator", "StagedCommunicator",
           "communicator_for", "nccl_unavailable_reason"]

NCCL_INSTALL = ("CuPy's NCCL binding needs the NCCL library: pip install nvidia-nccl-cu12 (CUDA 12) or "
                "nvidia-nccl-cu13 (CUDA 13)")
_notices: set = set()


class Communicator:
    """Base: ``allreduce_(buffer, op)`` and ``broadcast_(buffer, root)`` in place."""

    name = "base"

    def __init__(self, world: World):
        self.world = world
        self.rank, self.size = world.rank, world.size

    def allreduce_(self, buffer, op: str = "sum"):
        raise NotImplementedError

    def broadcast_(self, buffer, root: int = 0):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class LocalCommunicator(Communicator):
    """A world of one: nothing to exchange (``mean`` of one value is the value)."""

    name = "local"

    def allreduce_(self, buffer, op="sum"):
        _check_op(op)
        return buffer

    def broadcast_(self, buffer, root=0):
        return buffer


class MpiCommunicator(Communicator):
    """NumPy buffers through MPI, in place."""

    name = "mpi"

    def allreduce_(self, buffer, op="sum"):
        return self.world.allreduce_host(buffer, op)

    def broadcast_(self, buffer, root=0):
        return self.world.broadcast_host(buffer, root)


class StagedCommunicator(Communicator):
    """Buffers of another backend, through host memory and MPI."""

    name = "mpi-staged"

    def __init__(self, world, backend):
        super().__init__(world)
        self.backend = backend

    def _back(self, buffer, host):
        buffer[...] = self.backend.asarray(host, dtype=buffer.dtype)
        return buffer

    def allreduce_(self, buffer, op="sum"):
        host = np.array(self.backend.to_numpy(buffer), copy=True)
        return self._back(buffer, self.world.allreduce_host(host, op))

    def broadcast_(self, buffer, root=0):
        host = np.array(self.backend.to_numpy(buffer), copy=True)
        return self._back(buffer, self.world.broadcast_host(host, root))


class NcclCommunicator(Communicator):
    """CuPy buffers through NCCL, on the current CUDA stream (no host round trip).

    Build it with :meth:`create` on every rank at the same point (it is
    collective); a world of one needs no MPI (the unique id stays local).
    """

    name = "nccl"

    def __init__(self, world, nccl, comm):
        super().__init__(world)
        self._nccl, self._comm = nccl, comm
        self._dtypes = {np.dtype(k): getattr(nccl, v) for k, v in
                        (("float16", "NCCL_FLOAT16"), ("float32", "NCCL_FLOAT32"), ("float64", "NCCL_FLOAT64"),
                         ("int32", "NCCL_INT32"), ("int64", "NCCL_INT64"), ("uint8", "NCCL_UINT8"),
                         ("int8", "NCCL_INT8")) if hasattr(nccl, v)}
        self._ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    @classmethod
    def create(cls, world: World) -> NcclCommunicator:
        from cupy.cuda import nccl
        uid = np.zeros(128, dtype=np.int8)  # NCCL_UNIQUE_ID_BYTES, as signed chars
        if world.rank == 0:
            uid[:] = np.asarray(nccl.get_unique_id(), dtype=np.int64).astype(np.int8)
        world.broadcast_host(uid, 0)
        comm = nccl.NcclCommunicator(world.size, tuple(int(v) for v in uid), world.rank)
        return cls(world, nccl, comm)

    def _code(self, buffer):
        code = self._dtypes.get(np.dtype(str(buffer.dtype)))
        if code is None:
            raise TypeError(f"NCCL: no datatype for {buffer.dtype}")
        return code

    def allreduce_(self, buffer, op="sum"):
        import cupy
        _check_op(op)
        stream = cupy.cuda.get_current_stream().ptr
        self._comm.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, self._code(buffer), self._ops[op],
                             stream)
        if op == "mean" and self.size > 1:
            buffer /= self.size
        return buffer

    def broadcast_(self, buffer, root=0):
        import cupy
        stream = cupy.cuda.get_current_stream().ptr
        self._comm.bcast(buffer.data.ptr, buffer.size, self._code(buffer), root, stream)
        return buffer


def nccl_unavailable_reason() -> str | None:
    """Why NCCL cannot carry CuPy arrays here, or ``None`` when it can."""
    try:
        from cupy.cuda import nccl
    except Exception as exc:  # noqa: BLE001  (ImportError, or a CUDA library that fails to load)
        return f"cupy.cuda.nccl cannot be imported ({type(exc).__name__}: {exc}); {NCCL_INSTALL}"
    if not getattr(nccl, "available", False):
        return f"this CuPy was built without NCCL; {NCCL_INSTALL}"
    try:
        nccl.get_version()
    except Exception as exc:  # noqa: BLE001
        return f"the NCCL library does not load ({type(exc).__name__}: {exc}); {NCCL_INSTALL}"
    return None


def notice(world: World, text: str) -> None:
    """One line on rank 0's stderr, once per process."""
    if text in _notices:
        return
    _notices.add(text)
    if world.rank == 0:
        print(f"engine.distributed: {text}", file=sys.stderr, flush=True)


def communicator_for(world: World, backend, prefer: str = "auto") -> Communicator:
    """The communicator for ``backend``'s arrays in ``world``.

    ``prefer``: ``"auto"`` (NCCL for CuPy when every rank has it, else host
    staging), ``"nccl"`` (NCCL or an error saying why not; also in a world of
    one, to exercise it), ``"mpi"`` (host memory and MPI even on a GPU).
    Collective: every rank calls it at the same point.
    """
    if prefer not in ("auto", "nccl", "mpi"):
        raise ValueError(f"communicator_for: prefer must be 'auto', 'nccl' or 'mpi', got {prefer!r}")
    if backend.name == "cupy" and prefer != "mpi":
        reason = nccl_unavailable_reason()
        if world.size > 1:  # every rank must take the same path
            usable = world.allreduce_host(np.array([0 if reason else 1], dtype=np.int64), "min")
            if usable[0] == 0 and reason is None:
                reason = "another rank cannot use NCCL"
        if reason is None and (world.size > 1 or prefer == "nccl"):
            return NcclCommunicator.create(world)
        if prefer == "nccl":
            raise RuntimeError(f"engine.distributed: NCCL was asked for but {reason}")
        if world.size > 1:
            notice(world, f"parameters are on the GPU but NCCL is not usable ({reason}); gradients go through "
                          "host memory and MPI instead (slower)")
    if world.size == 1:
        return LocalCommunicator(world)
    if backend.name == "numpy":
        return MpiCommunicator(world)
    return StagedCommunicator(world, backend)
