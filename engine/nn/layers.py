"""Layers with PyTorch's class names, constructor arguments (positional order
included), defaults and input ranks.

Each layer writes ``forward`` only, through :mod:`engine.nn.functional`; the
autograd tape records what the backward needs. Layers check their input and
name themselves in errors.

PyTorch's factory arguments ``device=`` and ``dtype=`` are accepted by every
layer with parameters (see :mod:`engine.nn._args`: ``dtype=None`` is float32;
``device`` must name where the active backend computes). ``inplace=True``
(ReLU, dropout, ...) is accepted and computed out of place: the tape never
overwrites an array that a backward may need; the values are PyTorch's.
Keyword-only extras that PyTorch lacks come after PyTorch's arguments:
``init=`` (weight initialisation) and ``method=`` (convolution algorithm).
"""
from __future__ import annotations

import numpy as np

from .. import _state
from .. import ops
from .._checks import pair
from ..autograd import Tensor, basic as _basic
from ..data.layout import check_layout
from ..ops._common import conv_padding
from ..ops.ops1d import single
from . import functional as F
from . import init as _init
from ._args import check_device, dtype_name
from .module import Module, Parameter

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "Linear", "Flatten", "Identity",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "GELU", "SiLU", "Hardswish",
           "Hardsigmoid", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d"]

#: ``padding_mode`` values of the convolutions (PyTorch's), the non-zero ones are ``F.pad`` modes.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _new_parameter(shape, dtype):
    backend = _state.current()
    return Parameter(backend.asarray(np.zeros(shape), dtype=backend.dtype(dtype)))


def _factory(device, dtype, where) -> str:
    """The dtype name for a layer's parameters from PyTorch's ``device=``/``dtype=``."""
    check_device(device, where)
    return dtype_name(dtype, where)


def _check_dtype(dtype, where):
    dtype_name(dtype, where)


def _init_parameters(weight, bias, init, where):
    """Draw ``weight`` (and ``bias``) with ``init``: ``"torch"`` (the default) as
    PyTorch's layers do, else a name of ``engine.nn.init.WEIGHT_INITS`` with a zero bias."""
    if init not in _init.WEIGHT_INITS:
        raise ValueError(f"{where}: init must be one of {sorted(_init.WEIGHT_INITS)}, got {init!r}")
    _init.reset_parameters(weight, bias, init)


def check_channels(label, x, spatial, channels, layout):
    """``x`` is ``(N, C, *S)`` or unbatched ``(C, *S)`` with ``len(S) == spatial`` and ``C == channels``.
    ``label`` names the layer in errors: a string, or the module (its ``_label()`` is then
    formatted only for an error, not on every call)."""
    ndim = getattr(x, "ndim", None)
    if ndim is not None and ndim in (spatial + 1, spatial + 2) and x.shape[-spatial - 1] == channels:
        return
    if not isinstance(label, str):
        label = label._label()
    if ndim is None:
        raise TypeError(f"{label}: input must be a Tensor or an array, got {type(x).__name__}")
    if ndim not in (spatial + 1, spatial + 2):
        raise ValueError(f"{label}: input must be {layout} or unbatched (without N), got {ndim} dimensions with "
                         f"shape {tuple(x.shape)}")
    if x.shape[-spatial - 1] != channels:
        if spatial == 2 and ndim == 4 and x.shape[-1] == channels:
            check_layout(x, channels, label)  # the last axis holds the channels: an error naming NHWC
        raise ValueError(f"{label}: input has {x.shape[-spatial - 1]} channels, expected {channels} "
                         f"(input shape {tuple(x.shape)})")


def padding_mode_pad(padding, kernel_size, dilation, ndim):
    """PyTorch's ``_reversed_padding_repeated_twice``: the ``F.pad`` tuple (last axis
    first) a convolution with ``padding_mode != "zeros"`` pads with before a conv
    with no padding; ``"same"`` splits the total ``d * (k - 1)`` with the extra one
    after, ``"valid"`` pads nothing."""
    if padding == "valid":
        return (0, 0) * ndim
    if padding == "same":
        out = []
        for k, d in zip(reversed(kernel_size), reversed(dilation)):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    out = []
    for p in reversed(padding):
        out += [p, p]
    return tuple(out)


def check_padding_mode(padding_mode, where, allowed=PADDING_MODES):
    if padding_mode not in allowed:
        raise ValueError(f"{where}: padding_mode must be one of {', '.join(map(repr, allowed))}, "
                         f"got {padding_mode!r}")
    return padding_mode


class _ConvNd(Module):
    """Shared forward of :class:`Conv2d` and :class:`Conv1d`."""

    _ndim = 2
    _layout = "(N, C, H, W)"

    def _padding_for_conv(self):
        return self.padding if isinstance(self.padding, str) or self._ndim == 2 else self.padding[0]

    def forward(self, input):
        check_channels(self, input, self._ndim, self.in_channels, self._layout)
        padding = self._padding_for_conv()
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        functional = F.conv2d if self._ndim == 2 else F.conv1d
        args = dict(stride=self.stride if self._ndim == 2 else self.stride[0], padding=padding,
                    dilation=self.dilation if self._ndim == 2 else self.dilation[0], groups=self.groups,
                    method=self.method)
        with renamed_errors(functional.__name__, self):
            return functional(input, self.weight, self.bias, **args)

    def _finish(self, in_channels, out_channels, groups, bias, padding_mode, init, method, dtype, where):
        self.padding_mode = check_padding_mode(padding_mode, where)
        self._reversed_padding_repeated_twice = padding_mode_pad(self.padding, self.kernel_size, self.dilation,
                                                                 self._ndim)
        if method not in ops.CONV_METHODS:
            raise ValueError(f"{where}: method must be one of {ops.CONV_METHODS}, got {method!r}")
        self.method = method
        self.weight = _new_parameter((out_channels, in_channels // groups) + self.kernel_size, dtype)
        self.bias = _new_parameter((out_channels,), dtype) if bias else None
        _init_parameters(self.weight, self.bias, init, where)

    def extra_repr(self):
        return conv_extra_repr(self)


def check_channel_counts(in_channels, out_channels, groups, where):
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{where}: {name} must be a positive int, got {v!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{where}: in_channels and out_channels must be divisible by groups={groups}")


class Conv2d(_ConvNd):
    """2-D convolution over ``(N, C, H, W)`` or unbatched ``(C, H, W)`` inputs, as ``torch.nn.Conv2d``.

    Weight ``(out_channels, in_channels/groups, kh, kw)``, bias ``(out_channels,)``.
    ``padding_mode``: ``"zeros"``, or ``"reflect"``/``"replicate"``/``"circular"``
    (the input is padded by ``F.pad`` first, then convolved without padding).
    ``init`` picks the initialisation (``"torch"``, PyTorch's default, unless
    another is named). ``method`` is ``"gemm"`` (im2col + GEMM), ``"strided"`` or
    ``"naive"``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, init="torch",
                 method="gemm"):
        super().__init__()
        where = f"Conv2d({in_channels}, {out_channels})"
        check_channel_counts(in_channels, out_channels, groups, where)
        dtype = _factory(device, dtype, where)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", where)
        self.stride = pair(stride, "stride", where)
        self.dilation = pair(dilation, "dilation", where)
        if isinstance(padding, str):
            conv_padding(padding, self.kernel_size, self.dilation, self.stride, where)  # validates
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", where, minimum=0)
        self._finish(in_channels, out_channels, groups, bias, padding_mode, init, method, dtype, where)


class renamed_errors:
    """Re-raise a ``TypeError``/``ValueError`` of the functional op ``op`` under
    the layer's name (``"conv2d: ..."`` becomes ``"Conv2d(1, 8, ...): ..."``).
    ``label`` is that name, or the module itself: its ``_label()`` is then formatted
    only when an error is renamed, not on every call."""

    def __init__(self, op: str, label):
        self.op, self.label = op, label

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, (TypeError, ValueError)) and str(exc).startswith(f"{self.op}"):
            text = str(exc)
            label = self.label if isinstance(self.label, str) else self.label._label()
            for prefix in (f"{self.op} backward:", f"{self.op}:"):
                if text.startswith(prefix):
                    text = f"{label}:" + text[len(prefix):]
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
    if getattr(m, "padding_mode", "zeros") != "zeros":
        s += f", padding_mode={m.padding_mode}"
    return s


class _PoolNd(Module):
    """Max or average pooling over ``N`` spatial axes; subclasses name the
    functional op and the number of axes."""

    _ndim = 2

    def _size(self, value, name, minimum=1):
        where = type(self).__name__
        return pair(value, name, where, minimum) if self._ndim == 2 else single(value, name, where, minimum)

    def _pool_init(self, kernel_size, stride, padding):
        self.kernel_size = self._size(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else self._size(stride, "stride")
        self.padding = self._size(padding, "padding", minimum=0)

    def forward(self, input):
        layout = "(N, C, H, W)" if self._ndim == 2 else "(N, C, L)"
        ndim = getattr(input, "ndim", None)
        if ndim not in (self._ndim + 1, self._ndim + 2):
            shape = tuple(input.shape) if ndim is not None else type(input).__name__
            raise ValueError(f"{self._label()}: input must be {layout} or unbatched (without N), got {ndim} "
                             f"dimensions with shape {shape}")
        with renamed_errors(self._op.__name__, self):
            return self._op(input, **self._args())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _MaxPoolNd(_PoolNd):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self._pool_init(kernel_size, stride, padding)
        self.dilation = self._size(dilation, "dilation")
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)

    def _args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode, return_indices=self.return_indices)

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
    """Max pooling of ``(N, C, H, W)`` or ``(C, H, W)``, as ``torch.nn.MaxPool2d`` (stride
    defaults to kernel_size). ``return_indices=True``: ``forward`` also returns
    PyTorch's flat indices, which :class:`MaxUnpool2d` takes."""

    _op = staticmethod(F.max_pool2d)


class AvgPool2d(_AvgPoolNd):
    """Average pooling of ``(N, C, H, W)`` or ``(C, H, W)``, as ``torch.nn.AvgPool2d``."""

    _op = staticmethod(F.avg_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override=divisor_override)
        self.divisor_override = divisor_override


class GlobalAvgPool2d(Module):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)`` (no PyTorch twin;
    ``AdaptiveAvgPool2d(1)`` followed by ``Flatten`` is the same)."""

    def forward(self, input):
        if getattr(input, "ndim", None) != 4:
            raise ValueError(f"GlobalAvgPool2d: input must have 4 dimensions (N, C, H, W), got shape "
                             f"{tuple(getattr(input, 'shape', ()))}")
        return F.global_avg_pool2d(input)


class Linear(Module):
    """Fully connected layer ``y = x W^T + b``: ``(*, in_features) -> (*, out_features)``
    (``(in_features,)`` included), as ``torch.nn.Linear``."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, init="torch"):
        super().__init__()
        where = f"Linear({in_features}, {out_features})"
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{where}: {name} must be a positive int, got {v!r}")
        dtype = _factory(device, dtype, where)
        self.in_features, self.out_features = in_features, out_features
        self.weight = _new_parameter((out_features, in_features), dtype)
        self.bias = _new_parameter((out_features,), dtype) if bias else None
        _init_parameters(self.weight, self.bias, init, where)

    def forward(self, input):
        ndim = getattr(input, "ndim", None)
        if ndim is None:
            raise TypeError(f"{self._label()}: input must be a Tensor or an array, got {type(input).__name__}")
        if ndim < 1:
            raise ValueError(f"{self._label()}: input must be (*, in_features) with at least 1 dimension, got "
                             f"shape {tuple(input.shape)}")
        if input.shape[-1] != self.in_features:
            raise ValueError(f"{self._label()}: input has {input.shape[-1]} features, expected {self.in_features} "
                             f"(input shape {tuple(input.shape)})")
        with renamed_errors("linear", self):
            return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` (default: all but the batch)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return _basic.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input unchanged; any constructor arguments are ignored, as in PyTorch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input if isinstance(input, Tensor) else Tensor(input)


class _Activation(Module):
    """An element-wise layer: one functional call."""


class _InplaceActivation(_Activation):
    """An activation with PyTorch's ``inplace`` flag (accepted; computed out of place)."""

    _fn = None

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, input):
        return type(self)._fn(input)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_InplaceActivation):
    """``max(x, 0)``."""

    _fn = staticmethod(F.relu)


class SiLU(_InplaceActivation):
    """SiLU (swish): ``x * sigmoid(x)``."""

    _fn = staticmethod(F.silu)


class Hardswish(_InplaceActivation):
    """``x * relu6(x + 3) / 6``."""

    _fn = staticmethod(F.hardswish)


class Hardsigmoid(_InplaceActivation):
    """``relu6(x + 3) / 6``."""

    _fn = staticmethod(F.hardsigmoid)


class LeakyReLU(_Activation):
    """``x`` if positive else ``negative_slope * x``."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(_Activation):
    """GELU ``x * Phi(x)``; ``approximate="tanh"`` for the tanh form."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Sigmoid(_Activation):
    """Logistic function."""

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(_Activation):
    """Hyperbolic tangent."""

    def forward(self, input):
        return F.tanh(input)


class Softmax(_Activation):
    """Softmax along ``dim`` (``None``: PyTorch's implicit choice, 0 for 0-, 1-
    and 3-D inputs, else 1)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``log(softmax(x))`` along ``dim``, computed stably."""

    def forward(self, input):
        return F.log_softmax(input, self.dim)


class _DropoutNd(Module):
    _fn = None

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = bool(inplace)

    def forward(self, input):
        return type(self)._fn(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}" + (", inplace=True" if self.inplace else "")


class Dropout(_DropoutNd):
    """Zero elements with probability ``p`` in training (scaling the rest by
    ``1/(1-p)``); identity in eval mode. Seeded by ``engine.manual_seed``."""

    _fn = staticmethod(F.dropout)


class Dropout1d(_DropoutNd):
    """Zero whole channels of ``(N, C, L)`` or ``(C, L)`` in training, as ``torch.nn.Dropout1d``."""

    _fn = staticmethod(F.dropout1d)


class Dropout2d(_DropoutNd):
    """Zero whole channels of ``(N, C, H, W)`` in training, as ``torch.nn.Dropout2d``."""

    _fn = staticmethod(F.dropout2d)


class Dropout3d(_DropoutNd):
    """Zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` in training."""

    _fn = staticmethod(F.dropout3d)
