"""``python -m engine train --distributed``: the command line's data-parallel options.

    mpiexec -n 4 python -m mpi4py -m engine train --distributed --batch-size 256 ...
    srun -n 4 python -m mpi4py -m engine train --distributed --batch-size 256 ...

``python -m mpi4py`` runs the module and, if any rank raises an exception that
nobody catches, calls ``MPI_Abort``: every rank ends at once instead of the
others waiting forever in their next collective. Errors the command itself
reports (a bad checkpoint, a dataset that is not there) end the job the same
way, with the failing rank named.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback

__all__ = ["DistributedRun", "add_arguments", "run_distributed"]


def add_arguments(parser) -> None:
    """The ``train`` options of data-parallel training."""
    group = parser.add_argument_group("data-parallel training (see docs/distributed.md)")
    group.add_argument("--distributed", action="store_true",
                       help="train on every rank of an MPI job started with 'mpiexec -n N python -m mpi4py -m "
                            "engine train --distributed ...' (or srun): --batch-size is the global batch, split "
                            "over the ranks; gradients are averaged; rank 0 prints and writes files. Needs mpi4py "
                            '(pip install ".[mpi]"); alone under plain python it is a world of one')
    group.add_argument("--sync-bn", action="store_true",
                       help="batch-norm statistics over the whole global batch (SyncBatchNorm) instead of each "
                            "rank's share; needs --distributed")
    group.add_argument("--lr-scaling", default="none", choices=("none", "linear"),
                       help="linear: multiply --lr by the number of ranks (Goyal et al. 2017); --lr is then the "
                            "rate for one rank's share of the batch (default: %(default)s)")
    group.add_argument("--warmup-epochs", type=int, default=0, metavar="N",
                       help="with --lr-scaling linear: ramp the rate step by step from --lr to the scaled rate "
                            "over the first N epochs (default: %(default)s)")


def check_arguments(args) -> None:
    """Refuse options that need another option, before anything starts."""
    if not args.distributed:
        used = [flag for flag, on in (("--sync-bn", args.sync_bn), ("--lr-scaling linear", args.lr_scaling == "linear"),
                                      ("--warmup-epochs", args.warmup_epochs)) if on]
        if used:
            raise ValueError(f"{', '.join(used)} need(s) --distributed")
    if args.warmup_epochs < 0:
        raise ValueError(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if args.warmup_epochs and args.lr_scaling != "linear":
        raise ValueError("--warmup-epochs ramps the rate from --lr to the linearly scaled rate: it needs "
                         "--lr-scaling linear")


class DistributedRun:
    """The world and what ``train --distributed`` does with it."""

    def __init__(self, args):
        from . import init, use_local_device
        check_arguments(args)
        self.args = args
        self.world = init()
        self.is_root = self.world.rank == 0
        self.device = use_local_device() if args.backend == "cupy" else None
        self.lr_factor = self.world.size if args.lr_scaling == "linear" else 1

    def describe(self, batch_size: int) -> str:
        w = self.world
        per_rank = batch_size // w.size
        where = f", GPU {self.device} per rank" if self.device is not None else ""
        return (f"{w.size} rank(s) ({w.launcher or 'not launched by mpiexec/srun'}{where}), "
                f"{per_rank} samples per rank and step")

    def scaled_lr(self, lr: float) -> float:
        return lr * self.lr_factor

    def wrap(self, optimizer, model, batch_size: int):
        """``--sync-bn`` conversion, then the DistributedOptimizer (which copies rank
        0's weights and optimizer state, resumed or fresh, to every rank).
        ``batch_size``: the global batch, which must divide evenly over the ranks."""
        from . import DistributedOptimizer, SyncBatchNorm
        if batch_size % self.world.size:
            raise ValueError(f"--batch-size {batch_size} is the global batch and must divide evenly over the "
                             f"{self.world.size} ranks; use a multiple of {self.world.size}")
        if self.args.sync_bn:
            SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedOptimizer(optimizer, model)

    def share_resume(self, history, initial_epoch, scheduler):
        """Rank 0 read the checkpoint: its epoch, history, scheduler and RNG state
        go to every rank (the weights go with :meth:`wrap`)."""
        from .. import _state
        from ..history import History
        state = None
        if self.is_root:
            state = {"epoch": initial_epoch, "history": None if history is None else history.as_dict(),
                     "scheduler": None if scheduler is None else scheduler.state_dict(),
                     "rng": _state.get_rng_state()}
        state = self.world.broadcast_json(state)
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        _state.set_rng_state(state["rng"])
        history = None if state["history"] is None else History.from_dict(state["history"])
        return history, state["epoch"]

    def callbacks(self) -> list:
        from .warmup import LinearWarmup
        if self.args.warmup_epochs and self.lr_factor > 1:
            return [LinearWarmup(self.args.warmup_epochs, 1.0 / self.lr_factor)]
        return []

    def record(self, batch_size: int) -> dict:
        """What the checkpoint's ``extra`` says about the run."""
        return {"world_size": self.world.size, "global_batch": batch_size,
                "lr_scaling": self.args.lr_scaling, "sync_bn": bool(self.args.sync_bn)}


def run_distributed(command, args, out, exit_code=None) -> int:
    """Run ``command(args, out, run)`` on this rank: rank 0 prints, the others are
    silent; an error on any rank is printed with its rank and ends every rank
    (``MPI_Abort``, with ``exit_code(exception)``, default 2) instead of leaving
    the others waiting."""
    run = DistributedRun(args)  # fails the same way on every rank (options, mpi4py missing): no abort needed
    if run.world.size == 1:
        return command(args, out, run)
    quiet = open(os.devnull, "w") if not run.is_root else None  # noqa: SIM115  (closed below)
    try:
        with contextlib.ExitStack() as stack:
            if quiet is not None:
                stack.enter_context(contextlib.redirect_stdout(quiet))
                stack.enter_context(contextlib.redirect_stderr(quiet))
            return command(args, out if quiet is None else quiet, run)
    except (Exception, KeyboardInterrupt) as exc:
        w = run.world
        print(f"error (rank {w.rank} of {w.size}): {type(exc).__name__}: {exc}", file=sys.__stderr__, flush=True)
        if getattr(args, "debug", False) or os.environ.get("ENGINE_DEBUG", "").strip() not in ("", "0"):
            traceback.print_exc(file=sys.__stderr__)
        w.abort(exit_code(exc) if exit_code is not None else 130 if isinstance(exc, KeyboardInterrupt) else 2)
    finally:
        if quiet is not None:
            quiet.close()
    return 2  # not reached: abort() does not return
