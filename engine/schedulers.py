"""Learning-rate schedulers with PyTorch's semantics: ``StepLR``, ``CosineAnnealingLR``.

    opt = engine.optim.Adam(model.parameters(), lr=1e-3)
    sched = engine.schedulers.CosineAnnealingLR(opt, T_max=10)
    for epoch in range(10):
        train_one_epoch(...)
        sched.step()                 # once per epoch, after the optimizer steps

As in PyTorch, building a scheduler records each group's ``initial_lr`` and
sets ``last_epoch`` to 0; every ``step()`` advances ``last_epoch`` by one and
writes the new rate into ``optimizer.param_groups[i]["lr"]``. The update
rules are PyTorch's recursive forms, so the rates match ``torch.optim``'s to
the last bit when nothing else touches ``lr``. ``engine.fit(scheduler=...)``
calls ``step()`` at the end of every epoch.
"""
from __future__ import annotations

import math

__all__ = ["CosineAnnealingLR", "LRScheduler", "StepLR", "get_scheduler"]


class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``state_dict()`` / ``load_state_dict()``."""

    def __init__(self, optimizer, last_epoch: int = -1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__}: expected an engine.optim optimizer, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"{type(self).__name__}: param_groups[{i}] has no 'initial_lr' while "
                                   f"resuming with last_epoch={last_epoch}; load the optimizer's "
                                   "state first")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        self.step()
        self._is_initial = False

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rates."""
        self._step_count += 1
        self.last_epoch += 1
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The rates set by the last ``step()`` (one per parameter group)."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer, as plain Python values (JSON-able)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "optimizer"})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.get_last_lr()})"


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if not isinstance(step_size, int) or isinstance(step_size, bool) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size = step_size
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial rate to ``eta_min`` over ``T_max`` epochs:
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``
    (PyTorch's recursive form; past ``T_max`` the rate climbs back, as there)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if not isinstance(T_max, int) or isinstance(T_max, bool) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        t, T = self.last_epoch, self.T_max
        if self._is_initial:
            return [group["lr"] for group in groups]
        if self._step_count == 1 and t > 0:
            return [self.eta_min + (base - self.eta_min) * (1 + math.cos(t * math.pi / T)) / 2
                    for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [group["lr"] + (base - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for base, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (group["lr"] - self.eta_min) + self.eta_min for group in groups]


def get_scheduler(name: str | None, optimizer, *, epochs: int, step_size: int | None = None,
                  gamma: float = 0.1, eta_min: float = 0.0):
    """A scheduler by name for the CLI: ``None``/``"none"``, ``"step"`` or ``"cosine"``.

    ``step`` decays by ``gamma`` every ``step_size`` epochs (default: a third
    of ``epochs``); ``cosine`` anneals to ``eta_min`` over ``epochs``.
    """
    if name in (None, "none", "constant"):
        return None
    if name == "step":
        return StepLR(optimizer, step_size or max(1, epochs // 3), gamma)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, max(1, epochs), eta_min)
    raise ValueError(f"unknown scheduler {name!r}; expected 'none', 'step' or 'cosine'")
