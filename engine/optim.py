"""Optimizers with PyTorch 2.13's update rules, argument names, positional order and
defaults: SGD, Adam, AdamW, RMSprop, Adagrad.

Updates happen in place on ``param.data`` with array-API arithmetic, on the
parameters' backend, without host round trips; SGD and Adam/AdamW ask the backend
first for a fused update (the NumPy backend's C kernels, for float32: the same
operations in the same order, so the same bits).

PyTorch's implementation switches are accepted so that ported code runs:

* ``foreach``, ``fused`` and ``capturable`` choose *how* PyTorch computes the
  same update (a loop per tensor, one multi-tensor kernel, a CUDA-graph-safe
  kernel). The engine has one implementation, with the same results: the
  values are accepted, kept in the parameter groups (``state_dict`` has
  PyTorch's keys) and otherwise ignored. ``fused=True`` together with
  ``foreach=True`` is refused, as in PyTorch.
* ``differentiable=True`` asks for the update itself to be recorded for
  higher-order gradients through the optimizer step, which the engine does not
  do: it is refused with a ``ValueError`` that says so.

A one-element tensor ``lr`` (PyTorch's "Tensor lr", kept on the device for
capturable and fused steps) is read once as its float value.

Every hyper-parameter is checked when the optimizer is built (and for each
parameter group, and again by ``load_state_dict``): its type, finiteness and
range, with an error naming the optimizer, the argument and the value.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._checks import backend_for
from .nn.module import Parameter
from .nn.utils import clip_grad_norm_

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "clip_grad_norm_"]

#: Group keys that select PyTorch implementations of the same update (accepted, ignored).
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable")


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``, ``step``,
    ``state_dict``/``load_state_dict``, ``add_param_group``.

    ``params`` is an iterable of :class:`engine.nn.Parameter`, of
    ``(name, Parameter)`` pairs (``model.named_parameters()``; the names are
    kept as the group's ``param_names``, as in PyTorch), or of dicts with a
    ``"params"`` entry and per-group hyper-parameters.
    """

    def __init__(self, params, defaults: dict):
        name = type(self).__name__
        if isinstance(params, (Parameter, dict)) or hasattr(params, "shape"):
            raise TypeError(f"{name}: params must be an iterable of Parameters or of dicts "
                            f"(e.g. model.parameters()), got a single {type(params).__name__}")
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}  # keyed by the parameter's position over all groups
        for group in (params if isinstance(params[0], dict) else [{"params": params}]):
            self.add_param_group(group)

    # -- groups and checks -------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyper-parameters (the others
        come from the optimizer's defaults), checked like the constructor's."""
        name = type(self).__name__
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' entry, "
                            f"got {type(param_group).__name__}")
        entries = param_group["params"]
        entries = [entries] if isinstance(entries, Parameter) else list(entries)
        names = None
        if entries and all(isinstance(e, tuple) and len(e) == 2 for e in entries):
            names = [str(n) for n, _ in entries]
            entries = [p for _, p in entries]
        for p in entries:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected engine.nn.Parameter objects "
                                f"(model.parameters()), got {type(p).__name__}")
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}, "params": entries}
        if "lr" in group:
            group["lr"] = _scalar_lr(group["lr"])
        if names is not None:
            group["param_names"] = names
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in entries}) != len(entries) or seen & {id(p) for p in entries}:
            raise ValueError(f"{name}: some parameters appear more than once (in one group or in "
                             "two groups); each parameter may be optimized once")
        self._validate(group)
        self.param_groups.append(group)
        self._init_group_state(len(self.param_groups) - 1)

    def _init_group_state(self, group_index: int) -> None:
        """State created when a group is added (Adagrad's accumulators); none by default."""

    def _validate(self, group: dict) -> None:
        """Check the hyper-parameters of one group (subclasses add theirs)."""
        _real(self, group, "lr", minimum=0.0)
        for flag in ("maximize", "differentiable"):
            if flag in group:
                _flag(self, group, flag)
        for flag in IMPLEMENTATION_FLAGS:
            if flag in group and group[flag] is not None:
                _flag(self, group, flag)
        if group.get("differentiable"):
            raise ValueError(f"{type(self).__name__}: differentiable=True asks for the optimizer step to be "
                             "recorded for gradients through the update (higher-order training), which the "
                             "engine does not do; use differentiable=False")
        if group.get("fused") and group.get("foreach"):
            raise ValueError(f"{type(self).__name__}: fused=True and foreach=True cannot be set together "
                             "(as in PyTorch); both are accepted alone and ignored: the engine has one "
                             "implementation of the update")

    def _indexed(self):
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, group, p
                i += 1

    # -- the step ----------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients of every parameter (``set_to_none=False``: set them to zeros)."""
        for _, _, p in self._indexed():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = backend_for(p.grad, where=f"{type(self).__name__}.zero_grad").xp.zeros_like(p.grad)

    def step(self, closure=None):
        """Update every parameter that has a gradient. ``closure`` (optional) is
        called first and its value returned, as in PyTorch."""
        loss = closure() if closure is not None else None
        for i, group, p in self._indexed():
            if p.grad is None:
                continue
            backend = backend_for(p.data, p.grad, where=f"{type(self).__name__}.step")
            state = self.state.setdefault(i, {})
            if not self._fused_update(backend, p, p.grad, state, group):
                self._update(backend.xp, p, p.grad, state, group)
        return loss

    def _update(self, xp, p, grad, state, group):
        """Update one parameter ``p`` in place from ``grad`` with its ``state`` dict."""
        raise NotImplementedError

    def _fused_update(self, backend, p, grad, state, group) -> bool:
        """The same update as :meth:`_update` through the backend's fast path (one pass
        in C for float32 NumPy arrays); False, having changed nothing that
        :meth:`_update` would not, where the backend has none."""
        return False

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {index: {name: value}}, "param_groups": [...]}`` as in PyTorch."""
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict` (this engine's or PyTorch's); state arrays
        move to each parameter's backend and dtype. The restored hyper-parameters
        are checked like the constructor's."""
        from .nn.module import _to_host
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)):
            raise ValueError(f"{name}.load_state_dict: the saved parameter groups do not match "
                             "this optimizer's")
        restored_groups = []
        for saved, own in zip(groups, self.param_groups):
            group = {**own, **{k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "params"}}
            self._validate(group)
            restored_groups.append(group)
        params = [p for _, _, p in self._indexed()]
        state = {}
        for key, entries in state_dict["state"].items():
            index = int(key)
            if not 0 <= index < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {index}, but the optimizer "
                                 f"has {len(params)} parameters")
            p = params[index]
            backend = backend_for(p.data, where=f"{name}.load_state_dict")
            restored = {}
            for entry, value in entries.items():
                if isinstance(value, (int, float)):
                    restored[entry] = value
                    continue
                host = np.array(_to_host(value), copy=True)
                if host.ndim == 0:
                    restored[entry] = host.item()
                elif tuple(host.shape) != tuple(p.data.shape):
                    raise ValueError(f"{name}.load_state_dict: state {entry!r} of parameter {index} has shape "
                                     f"{tuple(host.shape)}, the parameter {tuple(p.data.shape)}")
                else:
                    restored[entry] = backend.asarray(host, dtype=p.data.dtype)
            state[index] = restored
        for own, group in zip(self.param_groups, restored_groups):  # in place: the dicts may be shared
            own.clear()
            own.update(group)
        self.state = state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k not in ("params", "param_names")]
        return "\n".join(lines + [")"])


# ----------------------------------------------------------------------------- checks
def _scalar_lr(lr):
    """PyTorch's Tensor ``lr`` (a one-element tensor, which PyTorch keeps on the device
    for capturable and fused steps): the engine reads its value once, as a float."""
    if not isinstance(lr, (bool, numbers.Real)) and hasattr(lr, "shape") and math.prod(lr.shape) == 1:
        return float(lr.reshape(()) if hasattr(lr, "reshape") else lr)
    return lr


def _real(opt, group, name, minimum=None, maximum=None, below_max=False, above_min=False):
    """``group[name]`` must be a finite real number in the given range; returns it."""
    where = type(opt).__name__
    value = group[name]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, got {value!r}")
    if minimum is not None and (value <= minimum if above_min else value < minimum):
        raise ValueError(f"{where}: {name} must be {'>' if above_min else '>='} {minimum:g}, got {value!r}")
    if maximum is not None and (value >= maximum if below_max else value > maximum):
        raise ValueError(f"{where}: {name} must be {'<' if below_max else '<='} {maximum:g}, got {value!r}")
    return value


def _flag(opt, group, name):
    value = group[name]
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{type(opt).__name__}: {name} must be True or False, got {type(value).__name__} "
                        f"{value!r}")
    return bool(value)


def _betas(opt, group):
    where = type(opt).__name__
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{where}: betas must be a pair of numbers in [0, 1), got {betas!r}")
    for i, beta in enumerate(betas):
        if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) \
                or not 0 <= beta < 1:
            raise ValueError(f"{where}: betas must be in [0, 1), got betas[{i}]={beta!r} in {tuple(betas)!r}")
    group["betas"] = tuple(betas)


# ----------------------------------------------------------------------------- optimizers
class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum,
    dampening and L2 weight decay (PyTorch's formulation and defaults:
    ``lr=1e-3``). ``maximize`` ascends the objective instead."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))

    def _validate(self, group):
        super()._validate(group)
        _real(self, group, "momentum", minimum=0.0)
        _real(self, group, "dampening")
        _real(self, group, "weight_decay", minimum=0.0)
        if _flag(self, group, "nesterov") and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov momentum needs momentum > 0 and dampening = 0, got "
                             f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def _fused_update(self, backend, p, grad, state, group):
        momentum = group["momentum"]
        buf = state.get("momentum_buffer") if momentum else None
        done = backend.sgd_update(p.data, grad, buf, lr=group["lr"], momentum=momentum,
                                  dampening=group["dampening"], weight_decay=group["weight_decay"],
                                  nesterov=group["nesterov"], maximize=group["maximize"])
        if done is None:
            return False
        if momentum:
            state["momentum_buffer"] = done[0]
        return True

    def _update(self, xp, p, grad, state, group):
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = xp.asarray(grad, copy=True)
            else:
                buf = momentum * buf + (1 - group["dampening"]) * grad
            state["momentum_buffer"] = buf
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba), with PyTorch's bias correction, L2 ``weight_decay``
    (or decoupled, as AdamW, with ``decoupled_weight_decay=True``), ``amsgrad``
    and ``maximize``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _validate(self, group):
        super()._validate(group)
        _betas(self, group)
        _real(self, group, "eps", minimum=0.0)
        _real(self, group, "weight_decay", minimum=0.0)
        _flag(self, group, "amsgrad")
        _flag(self, group, "decoupled_weight_decay")

    @staticmethod
    def _init_state(xp, p, state, group):
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:  # amsgrad switched on after the first steps
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)

    def _fused_update(self, backend, p, grad, state, group):
        self._init_state(backend.xp, p, state, group)
        beta1, beta2 = group["betas"]
        done = backend.adam_update(p.data, grad, state["exp_avg"], state["exp_avg_sq"],
                                   state.get("max_exp_avg_sq"), step=state["step"] + 1, lr=group["lr"],
                                   beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                                   decoupled=group["decoupled_weight_decay"], amsgrad=group["amsgrad"],
                                   maximize=group["maximize"])
        if done is None:
            return False
        state["step"] += 1
        state["exp_avg"], state["exp_avg_sq"] = done[0], done[1]
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = done[2]
        return True

    def _update(self, xp, p, grad, state, group):
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if wd:
            if group["decoupled_weight_decay"]:
                p.data *= 1 - lr * wd
            else:
                grad = grad + wd * p.data
        self._init_state(xp, p, state, group)
        state["step"] += 1
        t = state["step"]
        m = state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * grad
        v = state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
        if group["amsgrad"]:
            v = state["max_exp_avg_sq"] = xp.maximum(state["max_exp_avg_sq"], v)
        step_size = lr / (1 - beta1 ** t)
        denom = xp.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
        p.data -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr*wd``
    before the Adam step; PyTorch's default ``weight_decay=1e-2``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused, decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop (Hinton), PyTorch's form: ``square_avg = alpha*square_avg + (1-alpha)*g²``,
    step ``lr * g / (sqrt(square_avg) + eps)``; ``centered`` subtracts the squared
    running mean of the gradient first; ``momentum`` keeps a buffer of the steps."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def _validate(self, group):
        super()._validate(group)
        _real(self, group, "alpha", minimum=0.0)
        _real(self, group, "eps", minimum=0.0)
        _real(self, group, "weight_decay", minimum=0.0)
        _real(self, group, "momentum", minimum=0.0)
        _flag(self, group, "centered")

    def _update(self, xp, p, grad, state, group):
        alpha, eps, momentum = group["alpha"], group["eps"], group["momentum"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        square_avg = state["square_avg"] = alpha * state["square_avg"] + (1 - alpha) * (grad * grad)
        if group["centered"]:
            grad_avg = state.get("grad_avg", 0.0)  # 0.0: centered switched on after the first steps
            grad_avg = state["grad_avg"] = grad_avg + (1 - alpha) * (grad - grad_avg)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            avg = xp.sqrt(square_avg) + eps
        if momentum > 0:
            buf = state["momentum_buffer"] = momentum * state.get("momentum_buffer", 0.0) + grad / avg
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * (grad / avg)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), PyTorch's form: ``sum += g²``, step
    ``clr * g / (sqrt(sum) + eps)`` with ``clr = lr / (1 + (step-1)*lr_decay)``.
    The accumulators start at ``initial_accumulator_value`` when the optimizer
    is built (so they are in ``state_dict`` before the first step, as in PyTorch).
    As in PyTorch, that start value is the constructor's: a parameter group's
    own ``initial_accumulator_value`` is kept in the group but not used."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, fused=fused))

    def _validate(self, group):
        super()._validate(group)
        _real(self, group, "lr_decay", minimum=0.0)
        _real(self, group, "weight_decay", minimum=0.0)
        _real(self, group, "initial_accumulator_value", minimum=0.0)
        _real(self, group, "eps", minimum=0.0)

    def _init_group_state(self, group_index):
        start = sum(len(g["params"]) for g in self.param_groups[:group_index])
        for offset, p in enumerate(self.param_groups[group_index]["params"]):
            self.state[start + offset] = self._fresh_state(p)

    def _fresh_state(self, p):
        xp = backend_for(p.data, where="Adagrad").xp
        start = self.defaults["initial_accumulator_value"]
        return {"step": 0, "sum": xp.full(p.data.shape, start, dtype=p.data.dtype, device=_device(p.data))}

    def _update(self, xp, p, grad, state, group):
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if "sum" not in state:  # e.g. a state_dict that held none for this parameter
            state.update(self._fresh_state(p))
        state["step"] += 1
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        total = state["sum"] = state["sum"] + grad * grad
        p.data -= clr * (grad / (xp.sqrt(total) + group["eps"]))


def _device(x):
    from array_api_compat import device
    return device(x)
