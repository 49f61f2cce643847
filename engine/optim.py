"""Optimizers with PyTorch's update rules and argument names: SGD, Adam, AdamW.

Updates happen in place on ``param.data`` with array-API arithmetic, on the
parameters' backend, without host round trips.
"""
from __future__ import annotations

import math

import numpy as np

from ._checks import backend_for
from .nn.module import Parameter
from .nn.utils import clip_grad_norm_

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_"]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``, ``state_dict``."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            group = {**self.defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Parameter):
                    raise TypeError(f"{type(self).__name__}: expected engine.nn.Parameter objects "
                                    f"(model.parameters()), got {type(p).__name__}")
            self._validate(group)
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}  # keyed by the parameter's position over all groups

    def _validate(self, group):
        if group["lr"] < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']!r}")

    def _indexed(self):
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, group, p
                i += 1

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter."""
        for _, _, p in self._indexed():
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for i, group, p in self._indexed():
            if p.grad is None:
                continue
            xp = backend_for(p.data, p.grad, where=f"{type(self).__name__}.step").xp
            self._update(xp, p, p.grad, self.state.setdefault(i, {}), group)

    def _update(self, xp, p, grad, state, group):
        raise NotImplementedError

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
        """Restore a :meth:`state_dict`; state arrays move to each parameter's backend and dtype."""
        from .nn.module import _to_host
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved parameter groups do not match "
                             "this optimizer's")
        for saved, own in zip(groups, self.param_groups):
            own.update({k: v for k, v in saved.items() if k != "params"})
        params = [p for _, _, p in self._indexed()]
        self.state = {}
        for key, entries in state_dict["state"].items():
            p = params[int(key)]
            backend = backend_for(p.data, where=f"{type(self).__name__}.load_state_dict")
            restored = {}
            for name, value in entries.items():
                if isinstance(value, (int, float)):
                    restored[name] = value
                else:
                    host = np.array(_to_host(value), copy=True)
                    restored[name] = (backend.asarray(host, dtype=p.data.dtype) if host.ndim
                                      else host.item())
            self.state[int(key)] = restored


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum,
    dampening and L2 weight decay (PyTorch's formulation)."""

    def __init__(self, params, lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, xp, p, grad, state, group):
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
    """Adam (Kingma & Ba), with PyTorch's bias correction and L2 ``weight_decay``."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas!r}")
        if eps < 0:
            raise ValueError(f"{type(self).__name__}: eps must be >= 0, got {eps!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _update(self, xp, p, grad, state, group):
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if wd:
            if self.decoupled:
                p.data *= 1 - lr * wd
            else:
                grad = grad + wd * p.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
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
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr*wd``."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
