"""Gradual learning-rate warm-up for large global batches (Goyal et al., 2017,
"Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", section 2.2)."""
from __future__ import annotations

from ..training import Callback

__all__ = ["LinearWarmup"]


class LinearWarmup(Callback):
    """Ramp every group's learning rate linearly, step by step, from
    ``start_factor`` times its scheduled value to the scheduled value over the
    first ``epochs`` epochs (Goyal et al.: from ``lr`` to ``k * lr`` over 5
    epochs when the batch grows ``k`` times; ``start_factor = 1 / k``).

    A :func:`engine.fit` callback. It multiplies the rate the optimizer (and
    its epoch-wise scheduler, if any) sets, and puts the scheduled rate back
    after each epoch's last step, so that schedulers and checkpoints see their
    own values. A resumed run ramps from where it stopped (the position comes
    from the epoch number and the loader's length).
    """

    def __init__(self, epochs: int, start_factor: float):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"LinearWarmup: epochs must be a positive int, got {epochs!r}")
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearWarmup: start_factor must be in (0, 1], got {start_factor!r}")
        self.epochs, self.start_factor = epochs, float(start_factor)
        self._scheduled = None
        self._steps_per_epoch = None
        self._epoch = 0

    def factor(self, step: int) -> float:
        """The multiplier for the optimizer step number ``step`` (0-based over training)."""
        total = self.epochs * self._steps_per_epoch
        if step >= total:
            return 1.0
        return self.start_factor + (1.0 - self.start_factor) * step / total

    def _apply(self, state, step):
        for group, lr in zip(state.optimizer.param_groups, self._scheduled):
            group["lr"] = lr * self.factor(step)

    def on_train_begin(self, state):
        from ..training import scheduler_step_unit
        if state.scheduler is not None and scheduler_step_unit(state.scheduler) == "batch":
            raise ValueError(f"LinearWarmup: {type(state.scheduler).__name__} steps every batch and would fight the "
                             "warm-up over the rate; use an epoch-wise scheduler, or a per-batch schedule with "
                             "its own warm-up (OneCycleLR)")

    def on_epoch_begin(self, epoch, state):
        loader = getattr(state, "train_loader", None)
        try:
            self._steps_per_epoch = max(1, len(loader))
        except TypeError:
            raise ValueError("LinearWarmup: the training loader has no len(); the warm-up counts steps") from None
        self._epoch = epoch
        self._scheduled = [group["lr"] for group in state.optimizer.param_groups]
        if epoch <= self.epochs:
            self._apply(state, (epoch - 1) * self._steps_per_epoch)

    def on_batch_end(self, step, logs, state):
        if self._epoch > self.epochs:
            return
        if step >= self._steps_per_epoch:  # the epoch's last step: the scheduler steps on its own value
            for group, lr in zip(state.optimizer.param_groups, self._scheduled):
                group["lr"] = lr
            return
        self._apply(state, (self._epoch - 1) * self._steps_per_epoch + step)
