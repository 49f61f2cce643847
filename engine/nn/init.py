"""Weight initialisation, drawn on the host with the engine's seeded generator.

Drawing on the host makes a seed give the same initial weights on every
backend. Each function fills a :class:`Parameter` in place and returns it.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backends

from .. import _state

__all__ = ["fan_in_and_out", "calculate_gain", "kaiming_normal_", "kaiming_uniform_",
           "xavier_normal_", "xavier_uniform_", "zeros_", "ones_", "constant_", "uniform_", "normal_"]


def fan_in_and_out(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight: ``(in, out)`` times the kernel's size."""
    if len(shape) < 2:
        raise ValueError(f"fan_in_and_out: needs a weight of at least 2 dimensions, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str = "relu", param: float | None = None) -> float:
    """Recommended gain for a non-linearity (PyTorch's values)."""
    if nonlinearity in ("linear", "conv2d", "sigmoid", "identity"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def _fill(param, values: np.ndarray):
    backend = backends.backend_of(param.data)
    param.data = backend.asarray(values, dtype=param.data.dtype)
    return param


def kaiming_normal_(param, nonlinearity="relu", mode="fan_in", a=0.0):
    """He initialisation: normal with std ``gain / sqrt(fan)``."""
    fan = fan_in_and_out(param.shape)[0 if mode == "fan_in" else 1]
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return _fill(param, _state.host_rng().normal(0.0, std, param.shape))


def kaiming_uniform_(param, nonlinearity="relu", mode="fan_in", a=0.0):
    """He initialisation: uniform in ``±gain * sqrt(3 / fan)``."""
    fan = fan_in_and_out(param.shape)[0 if mode == "fan_in" else 1]
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return _fill(param, _state.host_rng().uniform(-bound, bound, param.shape))


def xavier_normal_(param, gain=1.0):
    """Glorot initialisation: normal with std ``gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_out(param.shape)
    return _fill(param, _state.host_rng().normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), param.shape))


def xavier_uniform_(param, gain=1.0):
    """Glorot initialisation: uniform in ``±gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_out(param.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(param, _state.host_rng().uniform(-bound, bound, param.shape))


def uniform_(param, low=0.0, high=1.0):
    return _fill(param, _state.host_rng().uniform(low, high, param.shape))


def normal_(param, mean=0.0, std=1.0):
    return _fill(param, _state.host_rng().normal(mean, std, param.shape))


def constant_(param, value):
    return _fill(param, np.full(param.shape, value))


def zeros_(param):
    return constant_(param, 0.0)


def ones_(param):
    return constant_(param, 1.0)


def torch_default_(param):
    """PyTorch's default for conv and linear weights: Kaiming uniform with
    ``a=sqrt(5)``, i.e. uniform in ``±1/sqrt(fan_in)``."""
    return kaiming_uniform_(param, nonlinearity="leaky_relu", a=math.sqrt(5))


#: Names accepted by the ``init=`` argument of the convolutions and Linear.
WEIGHT_INITS = {
    "torch": torch_default_,
    "kaiming_normal": kaiming_normal_,
    "kaiming_uniform": kaiming_uniform_,
    "xavier_normal": xavier_normal_,
    "xavier_uniform": xavier_uniform_,
}


def reset_parameters(weight, bias=None, init: str = "torch"):
    """Draw a layer's weight with ``init`` (a name of :data:`WEIGHT_INITS`) and its
    bias: uniform in ``±1/sqrt(fan_in)`` for ``"torch"`` (PyTorch's default), zero
    otherwise."""
    WEIGHT_INITS[init](weight)
    if bias is not None:
        if init == "torch":
            bound = 1 / math.sqrt(fan_in_and_out(weight.shape)[0])
            uniform_(bias, -bound, bound)
        else:
            zeros_(bias)
