"""What ``engine.fit`` and ``engine.evaluate`` do differently when several ranks
train together. In a world of one every hook here does nothing (or what
``fit`` did before: one host read of the step's loss and accuracy)."""
from __future__ import annotations

import warnings

import numpy as np

from .. import _state, backends
from .optimizer import DistributedOptimizer, average_buffers
from .runtime import world

__all__ = ["FitSync", "is_sharded", "run_record", "sum_evaluation"]


def is_sharded(loader) -> bool:
    """Whether ``loader`` hands each rank of a world of several its own share."""
    info = getattr(loader, "shard_info", None)
    return callable(info) and info() is not None and info()[1] > 1


class FitSync:
    """The distributed side of :func:`engine.fit`, for one call.

    ``active`` when the world has several ranks: then the optimizer must be a
    :class:`DistributedOptimizer` (else the ranks would drift apart), and a
    sharded training loader must drop its final short batch (the ranks must
    take the same number of equal steps).
    """

    def __init__(self, optimizer, train_loader):
        w = world()
        self.world, self.optimizer = w, optimizer
        self.active = w.size > 1
        self.is_root = w.rank == 0
        if not self.active:
            return
        if not isinstance(optimizer, DistributedOptimizer):
            raise ValueError(f"fit: this process is rank {w.rank} of {w.size}, but the optimizer is a "
                             f"{type(optimizer).__name__}: wrap it in engine.distributed.DistributedOptimizer("
                             "optimizer, model) so that the ranks average their gradients")
        if is_sharded(train_loader):
            if not train_loader.drop_last_effective:
                raise ValueError("fit: the sharded training loader keeps its final short batch, which cannot be "
                                 "split evenly over the ranks; pass shuffle=True or drop_last=True")
        elif self.is_root:
            warnings.warn(f"fit: the training loader is not sharded, so each of the {w.size} ranks trains on every "
                          "sample; pass DataLoader(..., shard=True)", RuntimeWarning, stacklevel=3)

    def begin_epoch(self, loader, epoch: int) -> None:
        """A sharded loader draws epoch ``epoch``'s permutation (a resumed run
        draws the same as an uninterrupted one)."""
        if getattr(loader, "shard", None):
            loader.epoch = epoch

    def read_step(self, pair, n: int):
        """``(loss, correct, samples)`` of the step from ``pair`` (the batch's mean
        loss and correct count, on the device): the one host read of the step.
        Across ranks it rides in the gradient average's message, summed (loss
        weighted by each rank's sample count): every rank then sees the whole
        batch's figures, and a NaN on any rank is a NaN on all."""
        if not self.active:
            host = _state.to_numpy(pair)
            return float(host[0]), float(host[1]), n
        xp = backends.backend_of(pair).xp
        weight = xp.asarray(float(n), dtype=pair.dtype)
        values = xp.stack([pair[0] * weight, pair[1], weight])
        host = _state.to_numpy(self.optimizer.synchronize(values)).astype(np.float64)
        total = host[2]
        loss = host[0] / total if total > 0 else float("nan")
        return float(loss), float(host[1]), int(round(total))

    def end_epoch(self, model) -> None:
        """Average the BatchNorm running statistics, so that validation and
        checkpoints see one model."""
        if self.active:
            average_buffers(model, self.optimizer.communicator)

    def agree_to_stop(self, state) -> None:
        """If any rank's callbacks stopped training, every rank stops."""
        if not self.active:
            return
        flag = self.world.allreduce_host(np.array([1 if state.stop_training else 0], dtype=np.int64), "max")
        if flag[0] and not state.stop_training:
            state.stop("training stopped on another rank")


def sum_evaluation(loader, n: int, correct: float, loss_sum: float, classify):
    """``(n, correct, loss_sum, classify)`` summed over the ranks when ``loader``
    is sharded (each rank evaluated its share); unchanged otherwise."""
    if not is_sharded(loader):
        return n, correct, loss_sum, classify
    totals = world().allreduce_host(np.array([n, correct, loss_sum, 1.0 if classify else 0.0]), "sum")
    return int(round(totals[0])), float(totals[1]), float(totals[2]), bool(totals[3] > 0)


def run_record(state) -> dict:
    """What a checkpoint written during a distributed run records about it:
    world size, global batch and the loader's seed (nothing in a world of one)."""
    w = world()
    if w.size == 1:
        return {}
    loader = getattr(state, "train_loader", None)
    record = {"world_size": w.size}
    if loader is not None and getattr(loader, "batch_size", None) is not None:
        record["global_batch"] = int(loader.batch_size)
    seed = getattr(loader, "shard_seed", None)
    if seed is not None:
        record["seed"] = int(seed)
    return record
