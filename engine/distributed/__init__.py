"""Data-parallel training over MPI (CPU, many machines) and NCCL (many GPUs).

    mpiexec -n 4 python -m mpi4py train.py        # or: srun -n 4 python -m mpi4py train.py

    import engine
    from engine import distributed as dist

    dist.init()                                   # a world of one under plain `python`
    engine.manual_seed(0)
    model = engine.models.simple_cnn()
    optimizer = dist.DistributedOptimizer(engine.optim.SGD(model.parameters(), lr=0.1), model)
    train = engine.data.DataLoader(data, batch_size=256, shuffle=True, seed=0, shard=True)  # 256 in all
    engine.fit(model, engine.nn.CrossEntropyLoss(), optimizer, train, epochs=5)

What each piece does (docs/distributed.md has the whole story):

* :func:`init` joins the world; :func:`rank`, :func:`world_size`,
  :func:`local_rank`, :func:`is_root`, :func:`barrier`; :func:`allreduce`
  and :func:`broadcast` of backend arrays; :func:`broadcast_object` for
  JSON-able values.
* :class:`DistributedOptimizer` averages gradients over the ranks (one fused
  message per dtype), after checking the ranks hold the same model and
  copying rank 0's weights to all.
* ``DataLoader(..., shard=True)``: every rank takes its slice of each global
  batch of a permutation drawn from (seed, epoch).
* :class:`SyncBatchNorm` (also ``engine.nn.SyncBatchNorm``); without it,
  :func:`average_buffers` averages BatchNorm running statistics (``fit``
  does before validation and checkpoints).
* ``fit`` agrees across ranks on NaN stops, early stopping and checkpoints,
  sums metrics over the ranks, prints and writes on rank 0 only.

Nothing here imports ``mpi4py`` until a launcher started several processes
(or ``init(backend="mpi")`` asks for MPI); ``pip install ".[mpi]"`` installs it.
"""
from __future__ import annotations

import importlib as _importlib

from .collectives import allreduce, broadcast
from .optimizer import (DistributedOptimizer, average_buffers, broadcast_optimizer_state, broadcast_parameters,
                        check_same_layout, on_root, replicas_agree)
from .runtime import DistributedUnavailableError, World, init, is_initialized, launch_info, world

__all__ = ["DistributedOptimizer", "DistributedUnavailableError", "LinearWarmup", "SyncBatchNorm", "World",
           "abort", "allreduce", "average_buffers", "barrier", "broadcast", "broadcast_object",
           "broadcast_optimizer_state", "broadcast_parameters", "check_same_layout", "init", "is_initialized",
           "is_root", "launch_info", "local_rank", "on_root", "rank", "replicas_agree", "use_local_device",
           "world", "world_size"]

# engine.nn imports SyncBatchNorm from here: loaded on first use, so that importing either
# package first works.
_LAZY = {"SyncBatchNorm": "batchnorm", "LinearWarmup": "warmup"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def rank() -> int:
    """This process's rank, 0 .. ``world_size() - 1``."""
    return world().rank


def world_size() -> int:
    """How many processes train together (1 under plain ``python``)."""
    return world().size


def local_rank() -> int:
    """This process's index among the ranks on its machine (use it to pick a GPU)."""
    return world().local_rank


def is_root() -> bool:
    """True on rank 0, the rank that prints and writes checkpoints."""
    return world().rank == 0


def barrier() -> None:
    """Wait until every rank gets here."""
    world().barrier()


def abort(code: int = 1) -> None:
    """End every rank of the job now (``MPI_Abort``)."""
    world().abort(code)


def broadcast_object(value=None, root: int = 0):
    """Rank ``root``'s JSON-able ``value`` on every rank (as UTF-8 JSON in a byte buffer)."""
    return world().broadcast_json(value, root)


def use_local_device() -> int | None:
    """On the CuPy backend, make GPU ``local_rank % device count`` this process's
    current device (one rank per GPU) and return its index; ``None`` when CuPy
    has no device here. Call it after :func:`init` and before building the model."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001  (no CuPy, or no driver/device)
        return None
    if count < 1:
        return None
    device = world().local_rank % count
    cupy.cuda.Device(device).use()
    return device
