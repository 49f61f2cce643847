"""Learning-rate schedulers with PyTorch's semantics and argument names:
``StepLR``, ``MultiStepLR``, ``ExponentialLR``, ``LinearLR`` (warm-up),
``CosineAnnealingLR``, ``OneCycleLR``, ``SequentialLR``, ``ReduceLROnPlateau``.

    opt = engine.optim.Adam(model.parameters(), lr=1e-3)
    sched = engine.schedulers.CosineAnnealingLR(opt, T_max=10)
    for epoch in range(10):
        train_one_epoch(...)
        sched.step()                 # once per epoch, after the optimizer steps

As in PyTorch, building a scheduler records each group's ``initial_lr`` and
sets ``last_epoch`` to 0; every ``step()`` advances ``last_epoch`` by one and
writes the new rate into ``optimizer.param_groups[i]["lr"]``. The update
rules are PyTorch's recursive forms (and its closed forms for ``step(epoch)``
and inside ``SequentialLR``), so the rates match ``torch.optim.lr_scheduler``'s
to the last bit or so when nothing else touches ``lr``. ``OneCycleLR`` steps
once per *batch* and also cycles ``momentum`` (SGD, RMSprop) or ``betas[0]``
(Adam, AdamW). ``ReduceLROnPlateau.step(metric)`` takes the watched value.
``engine.fit(scheduler=...)`` calls ``step()`` at the end of every epoch, after
every optimizer step for ``OneCycleLR``, and ``step(loss)`` with the validation
(else training) loss for ``ReduceLROnPlateau`` (a ``step_unit`` attribute,
``"epoch"``/``"batch"``/``"metric"``, overrides this; ``engine.training.scheduler_step_unit``).

``state_dict()`` returns plain Python values (JSON-able: checkpoints store it
as JSON); ``load_state_dict`` takes it (or PyTorch's) back.
"""
from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from collections import Counter

__all__ = ["CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LinearLR", "MultiStepLR", "OneCycleLR",
           "ReduceLROnPlateau", "SequentialLR", "StepLR", "get_scheduler"]


# ----------------------------------------------------------------------------- checks
def _int(value, name, where, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return int(value)


def _real(value, name, where, minimum=None, maximum=None, above_min=False, below_max=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, got {value!r}")
    low_bad = minimum is not None and (value <= minimum if above_min else value < minimum)
    high_bad = maximum is not None and (value >= maximum if below_max else value > maximum)
    if low_bad or high_bad:
        low = "" if minimum is None else f"{'(' if above_min else '['}{minimum:g}, "
        high = "" if maximum is None else f"{maximum:g}{')' if below_max else ']'}"
        span = f"in {low}{high}" if minimum is not None and maximum is not None else (
            f"{'>' if above_min else '>='} {minimum:g}" if minimum is not None
            else f"{'<' if below_max else '<='} {maximum:g}")
        raise ValueError(f"{where}: {name} must be {span}, got {value!r}")
    return float(value)


def _choice(value, name, where, choices):
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _flag(value, name, where):
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def _per_group(value, name, where, optimizer, **limits):
    """One number per parameter group, from a number or a list/tuple of them."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{where}: expected {n} values of {name} (one per parameter group), "
                             f"got {len(value)}")
        return [_real(v, f"{name}[{i}]", where, **limits) for i, v in enumerate(value)]
    return [_real(value, name, where, **limits)] * n


def _check_optimizer(optimizer, where):
    if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "defaults"):
        raise TypeError(f"{where}: expected an engine.optim optimizer, got {type(optimizer).__name__}")


def _json_ready(value):
    if isinstance(value, Counter):
        return sorted(value.elements())
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- base class
class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``state_dict()`` / ``load_state_dict()``.

    Subclasses implement ``get_lr()`` (the recursive rule applied at
    ``last_epoch``) and, where one exists, ``_get_closed_form_lr()`` (the rate
    at ``last_epoch`` from ``base_lrs``, used by ``step(epoch)``).
    """

    _is_initial = False

    def __init__(self, optimizer, last_epoch: int = -1):
        where = type(self).__name__
        _check_optimizer(optimizer, where)
        last_epoch = _int(last_epoch, "last_epoch", where, -1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"{where}: param_groups[{i}] has no 'initial_lr' while resuming with "
                                   f"last_epoch={last_epoch}; load the optimizer's state first")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """The step every scheduler takes when it is built (PyTorch's ``_initial_step``)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or jump to ``epoch``, PyTorch's deprecated form) and set
        the optimizer's learning rates."""
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = _int(epoch, "epoch", f"{type(self).__name__}.step", 0)
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The rates set by the last ``step()`` (one per parameter group)."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer, as plain Python values (JSON-able)."""
        return {k: _json_ready(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict` (this engine's, or PyTorch's)."""
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "optimizer"})

    def _group_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self.get_last_lr()})"


# ----------------------------------------------------------------------------- epoch-wise decays
class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size = _int(step_size, "step_size", "StepLR", 1)
        self.gamma = _real(gamma, "gamma", "StepLR", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each epoch listed in ``milestones``
    (by ``gamma**k`` where a milestone is listed ``k`` times)."""

    def __init__(self, optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
        try:
            milestones = list(milestones)
        except TypeError:
            raise TypeError(f"MultiStepLR: milestones must be a list of ints, got {milestones!r}") from None
        self.milestones = Counter(_int(m, "milestones", "MultiStepLR", 0) for m in milestones)
        self.gamma = _real(gamma, "gamma", "MultiStepLR", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._group_lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base * self.gamma ** bisect_right(milestones, self.last_epoch) for base in self.base_lrs]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        m = self.milestones
        self.milestones = Counter({int(k): v for k, v in m.items()}) if isinstance(m, dict) else Counter(m)


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = _real(gamma, "gamma", "ExponentialLR", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the rate linearly from ``start_factor`` to ``end_factor`` times the
    initial rate over ``total_iters`` steps, then keep it (a warm-up when
    ``start_factor < end_factor``)."""

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1):
        self.start_factor = _real(start_factor, "start_factor", "LinearLR", minimum=0.0, maximum=1.0,
                                  above_min=True)
        self.end_factor = _real(end_factor, "end_factor", "LinearLR", minimum=0.0, maximum=1.0)
        self.total_iters = _int(total_iters, "total_iters", "LinearLR", 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._group_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._group_lrs()
        span = self.end_factor - self.start_factor
        ratio = 1.0 + span / (self.total_iters * self.start_factor + (self.last_epoch - 1) * span)
        return [lr * ratio for lr in self._group_lrs()]

    def _get_closed_form_lr(self):
        factor = (self.start_factor + (self.end_factor - self.start_factor)
                  * min(self.total_iters, self.last_epoch) / self.total_iters)
        return [base * factor for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial rate to ``eta_min`` over ``T_max`` epochs:
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``
    (PyTorch's recursive form; past ``T_max`` the rate climbs back, as there)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max = _int(T_max, "T_max", "CosineAnnealingLR", 1)
        self.eta_min = _real(eta_min, "eta_min", "CosineAnnealingLR", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        t, T = self.last_epoch, self.T_max
        if self._is_initial:
            return self._group_lrs()
        if self._step_count == 1 and t > 0:
            return [self.eta_min + (base - self.eta_min) * (1 + math.cos(t * math.pi / T)) / 2
                    for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [group["lr"] + (base - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for base, group in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (group["lr"] - self.eta_min) + self.eta_min for group in groups]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


# ----------------------------------------------------------------------------- per-batch one-cycle
class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin), stepped once per **batch**: the rate rises
    from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of
    ``total_steps`` (or ``epochs * steps_per_epoch``), then anneals to
    ``initial_lr / final_div_factor`` (``three_phase``: back to the initial rate
    first, then down). With ``cycle_momentum`` the momentum (SGD, RMSprop) or
    ``betas[0]`` (Adam, AdamW) moves the opposite way between ``max_momentum``
    and ``base_momentum``. ``anneal_strategy`` is ``"cos"`` or ``"linear"``.
    Stepping past ``total_steps`` is an error, as in PyTorch."""

    def __init__(self, optimizer, max_lr, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum=0.85, max_momentum=0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False, last_epoch: int = -1):
        where = "OneCycleLR"
        _check_optimizer(optimizer, where)
        if total_steps is not None:
            self.total_steps = _int(total_steps, "total_steps", where, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_int(epochs, "epochs", where, 1)
                                * _int(steps_per_epoch, "steps_per_epoch", where, 1))
        else:
            raise ValueError(f"{where}: give total_steps, or both epochs and steps_per_epoch")
        pct_start = _real(pct_start, "pct_start", where, minimum=0.0, maximum=1.0)
        self._anneal_func_type = _choice(anneal_strategy, "anneal_strategy", where, ("cos", "linear"))
        div_factor = _real(div_factor, "div_factor", where, minimum=0.0, above_min=True)
        final_div_factor = _real(final_div_factor, "final_div_factor", where, minimum=0.0, above_min=True)
        _flag(three_phase, "three_phase", where)
        self.cycle_momentum = _flag(cycle_momentum, "cycle_momentum", where)
        up = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._schedule_phases = [
                dict(end_step=up, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * self.total_steps) - 2, start_lr="max_lr", end_lr="initial_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
                dict(end_step=self.total_steps - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum"),
            ]
        else:
            self._schedule_phases = [
                dict(end_step=up, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=self.total_steps - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
            ]
        max_lrs = _per_group(max_lr, "max_lr", where, optimizer, minimum=0.0)
        if last_epoch == -1:
            for group, top in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"{where}: cycle_momentum=True needs an optimizer with momentum or betas "
                                 f"(SGD, RMSprop, Adam, AdamW), got {type(optimizer).__name__}; pass "
                                 "cycle_momentum=False")
            self.use_beta1 = "betas" in optimizer.defaults
            tops = _per_group(max_momentum, "max_momentum", where, optimizer, minimum=0.0)
            bases = _per_group(base_momentum, "base_momentum", where, optimizer, minimum=0.0)
            if last_epoch == -1:
                for group, top, base in zip(optimizer.param_groups, tops, bases):
                    if self.use_beta1:
                        group["betas"] = (top, *group["betas"][1:])
                    else:
                        group["momentum"] = top
                    group["max_momentum"] = top
                    group["base_momentum"] = base
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, past total_steps={self.total_steps}; "
                             "build it with the number of batches of the whole run")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


# ----------------------------------------------------------------------------- chaining
class SequentialLR(LRScheduler):
    """Run ``schedulers[0]`` until epoch ``milestones[0]``, then ``schedulers[1]``
    (restarted at its epoch 0), and so on: e.g. a ``LinearLR`` warm-up followed
    by ``CosineAnnealingLR``. All must drive ``optimizer``."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch: int = -1):
        where = "SequentialLR"
        _check_optimizer(optimizer, where)
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError(f"{where}: expects at least one scheduler, got none")
        for i, s in enumerate(schedulers):
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"{where}: schedulers[{i}] is a ReduceLROnPlateau, whose step() needs a metric; "
                                 "it cannot be chained")
            if not isinstance(s, LRScheduler):
                raise TypeError(f"{where}: schedulers[{i}] must be an engine scheduler, got {type(s).__name__}")
            if s.optimizer is not optimizer:
                raise ValueError(f"{where}: schedulers[{i}] ({type(s).__name__}) drives another optimizer; all "
                                 "schedulers must belong to the one given")
        milestones = [_int(m, "milestones", where, 0) for m in milestones]
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{where}: expects one milestone fewer than schedulers, got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        if milestones != sorted(milestones):
            raise ValueError(f"{where}: milestones must be in increasing order, got {milestones}")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = _int(last_epoch, "last_epoch", where, -1) + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:  # undo the steps the schedulers took when they were built
            group["lr"] = group["initial_lr"]
        for s in schedulers:
            s.last_epoch -= 1
        first = schedulers[bisect_right(milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self, epoch=None) -> None:
        if epoch is not None:
            raise TypeError("SequentialLR.step() takes no epoch (as in PyTorch)")
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        state = {k: _json_ready(v) for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        inner = state_dict["_schedulers"]
        if len(inner) != len(self._schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: the state holds {len(inner)} schedulers, this "
                             f"SequentialLR has {len(self._schedulers)}")
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in ("optimizer", "_schedulers")})
        for s, state in zip(self._schedulers, inner):
            s.load_state_dict(state)


# ----------------------------------------------------------------------------- metric-driven
class ReduceLROnPlateau(LRScheduler):
    """Multiply the rate by ``factor`` when ``step(metric)`` has not improved for
    more than ``patience`` calls (``mode="min"``: lower is better, ``"max"``:
    higher), improvement measured ``threshold_mode="rel"`` (by a factor
    ``1 -/+ threshold``) or ``"abs"``; ``cooldown`` calls are ignored after each
    reduction; rates never go below ``min_lr`` (one value, or one per group),
    and changes smaller than ``eps`` are skipped."""

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr=0,
                 eps: float = 1e-8):
        where = "ReduceLROnPlateau"
        _check_optimizer(optimizer, where)
        self.factor = _real(factor, "factor", where, minimum=0.0, maximum=1.0, below_max=True)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group(min_lr, "min_lr", where, optimizer, minimum=0.0)
        else:
            self.default_min_lr = _real(min_lr, "min_lr", where, minimum=0.0)
            self.min_lrs = [self.default_min_lr] * len(optimizer.param_groups)
        self.patience = _int(patience, "patience", where, 0)
        self.cooldown = _int(cooldown, "cooldown", where, 0)
        self.eps = _real(eps, "eps", where, minimum=0.0)
        self.last_epoch = 0
        self._last_lr = self._group_lrs()
        self.mode = _choice(mode, "mode", where, ("min", "max"))
        self.threshold = _real(threshold, "threshold", where, minimum=0.0)
        self.threshold_mode = _choice(threshold_mode, "threshold_mode", where, ("rel", "abs"))
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, value, best) -> bool:
        if self.mode == "min":
            return value < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return value > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics=None, epoch=None) -> None:
        """Record one value of the watched metric (e.g. the validation loss) and
        reduce the rates if it has stopped improving."""
        if metrics is None:
            raise TypeError("ReduceLROnPlateau.step(metrics) needs the value it watches, e.g. "
                            "scheduler.step(val_loss)")
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(f"ReduceLROnPlateau.step: metrics must be a number, got "
                            f"{type(metrics).__name__} {metrics!r}") from None
        self.last_epoch = self.last_epoch + 1 if epoch is None else _int(epoch, "epoch", "ReduceLROnPlateau", 0)
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._group_lrs()

    def state_dict(self) -> dict:
        """As the base class's, JSON-safe: an infinite ``best`` (nothing seen yet) is
        ``None`` and ``mode_worse`` (it follows from ``mode``) is left out."""
        state = {k: v for k, v in super().state_dict().items() if k != "mode_worse"}
        if not math.isfinite(state["best"]):
            state["best"] = None
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict` (this engine's, or PyTorch's)."""
        super().load_state_dict(state_dict)
        self.mode_worse = math.inf if self.mode == "min" else -math.inf
        if self.best is None:
            self.best = self.mode_worse

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise ValueError(f"ReduceLROnPlateau: the optimizer has {len(groups)} parameter groups, "
                                 f"min_lr was given for {len(self.min_lrs)}; set scheduler.min_lrs to match")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, floor in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                group["lr"] = new


# ----------------------------------------------------------------------------- by name
def get_scheduler(name: str | None, optimizer, *, epochs: int, step_size: int | None = None,
                  gamma: float = 0.1, eta_min: float = 0.0):
    """A per-epoch scheduler by name for the CLI: ``None``/``"none"``, ``"step"``,
    ``"multistep"``, ``"exponential"`` or ``"cosine"``.

    ``step`` decays by ``gamma`` every ``step_size`` epochs (default: a third
    of ``epochs``); ``multistep`` by ``gamma`` at half and three quarters of
    ``epochs``; ``exponential`` by ``gamma`` every epoch; ``cosine`` anneals to
    ``eta_min`` over ``epochs``.
    """
    if name in (None, "none", "constant"):
        return None
    if name == "step":
        return StepLR(optimizer, step_size or max(1, epochs // 3), gamma)
    if name == "multistep":
        return MultiStepLR(optimizer, sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)}), gamma)
    if name == "exponential":
        return ExponentialLR(optimizer, gamma)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, max(1, epochs), eta_min)
    raise ValueError(f"unknown scheduler {name!r}; expected 'none', 'step', 'multistep', 'exponential' or 'cosine'")
