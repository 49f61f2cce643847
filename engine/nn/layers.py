"""Layers with PyTorch's class and argument names.

Each layer writes ``forward`` only, through :mod:`engine.nn.functional`; the
autograd tape records what the backward needs. Layers check their input and
name themselves in errors.
"""
from __future__ import annotations

import numpy as np

from .. import _state
from .. import ops
from .._checks import pair, require_ndim
from ..autograd import Tensor, basic as _basic
from ..ops._common import conv_padding
from ..ops.ops1d import single
from . import functional as F
from . import init as _init
from .module import Module, Parameter

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Linear", "Flatten", "Identity",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout"]


def _new_parameter(shape, dtype):
    backend = _state.current()
    return Parameter(backend.asarray(np.zeros(shape), dtype=backend.dtype(dtype)))


def _check_dtype(dtype, where):
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{where}: dtype must be 'float32' or 'float64', got {dtype!r}")


def _init_weight(weight, init, where):
    if init not in _init.WEIGHT_INITS:
        raise ValueError(f"{where}: init must be one of {sorted(_init.WEIGHT_INITS)}, got {init!r}")
    _init.WEIGHT_INITS[init](weight)


class Conv2d(Module):
    """2-D convolution over ``(N, C, H, W)`` inputs, as ``torch.nn.Conv2d``.

    Weight ``(out_channels, in_channels/groups, kh, kw)``, bias ``(out_channels,)``.
    ``init`` picks the weight initialisation (Kaiming normal by default; bias
    starts at zero). ``method`` is ``"gemm"`` (im2col + GEMM), ``"strided"`` or
    ``"naive"``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, init="kaiming_normal", method="gemm", dtype="float32"):
        super().__init__()
        where = f"Conv2d({in_channels}, {out_channels})"
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{where}: {name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{where}: in_channels and out_channels must be divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", where)
        self.stride = pair(stride, "stride", where)
        self.dilation = pair(dilation, "dilation", where)
        if isinstance(padding, str):
            conv_padding(padding, self.kernel_size, self.dilation, self.stride, where)  # validates
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", where, minimum=0)
        if method not in ops.CONV_METHODS:
            raise ValueError(f"{where}: method must be one of {ops.CONV_METHODS}, got {method!r}")
        self.method = method
        _check_dtype(dtype, where)
        self.weight = _new_parameter((out_channels, in_channels // groups) + self.kernel_size, dtype)
        _init_weight(self.weight, init, where)
        self.bias = _new_parameter((out_channels,), dtype) if bias else None

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    method=self.method)

    def forward(self, x):
        require_ndim(x, 4, "(N, C, H, W)", self._label())
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self._label()}: input has {x.shape[1]} channels, expected "
                             f"{self.in_channels} (input shape {tuple(x.shape)})")
        with renamed_errors("conv2d", self._label()):
            return F.conv2d(x, self.weight, self.bias, **self._args())

    def extra_repr(self):
        return conv_extra_repr(self)


class renamed_errors:
    """Re-raise a ``TypeError``/``ValueError`` of the functional op ``op`` under
    the layer's name (``"conv2d: ..."`` becomes ``"Conv2d(1, 8, ...): ..."``)."""

    def __init__(self, op: str, label: str):
        self.op, self.label = op, label

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, (TypeError, ValueError)) and str(exc).startswith(f"{self.op}"):
            text = str(exc)
            for prefix in (f"{self.op} backward:", f"{self.op}:"):
                if text.startswith(prefix):
                    text = f"{self.label}:" + text[len(prefix):]
                    break
            raise kind(text) from None
        return False


def conv_extra_repr(m, output_padding=None) -> str:
    """PyTorch's repr of a convolution's arguments: what differs from the defaults."""
    s = f"{m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, stride={m.stride}"
    if (m.padding != "valid") if isinstance(m.padding, str) else any(m.padding):  # "same", or not all zero
        s += f", padding={m.padding}"
    if output_padding is not None and any(output_padding):
        s += f", output_padding={output_padding}"
    if any(d != 1 for d in m.dilation):
        s += f", dilation={m.dilation}"
    if m.groups != 1:
        s += f", groups={m.groups}"
    if m.bias is None:
        s += ", bias=False"
    return s


class _PoolNd(Module):
    """Max or average pooling over ``N`` spatial axes; subclasses name the
    functional forward and backward and the number of axes."""

    _ndim = 2

    def _size(self, value, name, minimum=1):
        where = type(self).__name__
        return pair(value, name, where, minimum) if self._ndim == 2 else single(value, name, where, minimum)

    def _pool_init(self, kernel_size, stride, padding):
        self.kernel_size = self._size(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else self._size(stride, "stride")
        self.padding = self._size(padding, "padding", minimum=0)

    def forward(self, x):
        layout = "(N, C, H, W)" if self._ndim == 2 else "(N, C, L)"
        require_ndim(x, self._ndim + 2, layout, self._label())
        with renamed_errors(self._op.__name__, self._label()):
            return self._op(x, **self._args())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _MaxPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self._pool_init(kernel_size, stride, padding)
        self.dilation = self._size(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)

    def _args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)

    def extra_repr(self):
        return f"{super().extra_repr()}, dilation={self.dilation}, ceil_mode={self.ceil_mode}"


class _AvgPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, **extra):
        super().__init__()
        self._pool_init(kernel_size, stride, padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self._extra = extra  # divisor_override (2-D only, as in PyTorch)

    def _args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad, **self._extra)



class MaxPool2d(_MaxPoolNd):
    """Max pooling, as ``torch.nn.MaxPool2d`` (stride defaults to kernel_size)."""

    _op = staticmethod(F.max_pool2d)


class AvgPool2d(_AvgPoolNd):
    """Average pooling, as ``torch.nn.AvgPool2d``."""

    _op = staticmethod(F.avg_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override=divisor_override)
        self.divisor_override = divisor_override


class GlobalAvgPool2d(Module):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``."""

    def forward(self, x):
        require_ndim(x, 4, "(N, C, H, W)", "GlobalAvgPool2d")
        return F.global_avg_pool2d(x)


class Linear(Module):
    """Fully connected layer ``y = x W^T + b``: ``(N, in_features) -> (N, out_features)``."""

    def __init__(self, in_features, out_features, bias=True, *, init="kaiming_normal", dtype="float32"):
        super().__init__()
        where = f"Linear({in_features}, {out_features})"
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{where}: {name} must be a positive int, got {v!r}")
        _check_dtype(dtype, where)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _new_parameter((out_features, in_features), dtype)
        _init_weight(self.weight, init, where)
        self.bias = _new_parameter((out_features,), dtype) if bias else None

    def forward(self, x):
        require_ndim(x, 2, "(N, in_features)", self._label())
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self._label()}: input has {x.shape[1]} features, expected "
                             f"{self.in_features} (input shape {tuple(x.shape)})")
        with renamed_errors("linear", self._label()):
            return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` (default: all but the batch)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return _basic.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input unchanged."""

    def forward(self, x):
        return x if isinstance(x, Tensor) else Tensor(x)


class _Activation(Module):
    """An element-wise layer: one functional call."""


class ReLU(_Activation):
    """``max(x, 0)``."""

    def forward(self, x):
        return F.relu(x)


class LeakyReLU(_Activation):
    """``x`` if positive else ``negative_slope * x``."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Activation):
    """Logistic function."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(_Activation):
    """Hyperbolic tangent."""

    def forward(self, x):
        return F.tanh(x)


class Softmax(_Activation):
    """Softmax along ``dim`` (``None``: PyTorch's implicit choice, 0 for 0-, 1-
    and 3-D inputs, else 1)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``log(softmax(x))`` along ``dim``, computed stably."""

    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Dropout(Module):
    """Zero elements with probability ``p`` in training (scaling the rest by
    ``1/(1-p)``); identity in eval mode. Seeded by ``engine.manual_seed``."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
