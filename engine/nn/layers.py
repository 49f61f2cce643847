"""Layers with PyTorch's class and argument names.

Each layer's forward keeps what its backward needs (nothing in eval mode for
layers without parameters), and its backward returns the input gradient while
accumulating parameter gradients into ``.grad``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _state
from .. import ops as F
from ..ops._common import conv_padding
from .._checks import backend_for, pair, require_ndim
from ..ops.ops1d import single
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

    skips_input_grad = True

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
        if method not in F.CONV_METHODS:
            raise ValueError(f"{where}: method must be one of {F.CONV_METHODS}, got {method!r}")
        self.method = method
        _check_dtype(dtype, where)
        self.weight = _new_parameter((out_channels, in_channels // groups) + self.kernel_size, dtype)
        _init_weight(self.weight, init, where)
        self.bias = _new_parameter((out_channels,), dtype) if bias else None
        self._x = self._columns = None

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    method=self.method)

    def forward(self, x):
        require_ndim(x, 4, "(N, C, H, W)", self._label())
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self._label()}: input has {x.shape[1]} channels, expected "
                             f"{self.in_channels} (input shape {tuple(x.shape)})")
        keep = self.training and self.method == "gemm"  # the backward reuses the forward's im2col columns
        try:
            y = F.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data, **self._args(),
                         keep_columns=keep)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("conv2d:", f"{self._label()}:", 1)) from None
        y, self._columns = y if keep else (y, None)
        self._x = x if self.training else None
        return y

    def backward(self, grad_out, input_grad: bool = True):
        (x,) = self._saved("_x")
        columns, self._columns = self.__dict__.get("_columns"), None  # used once, then freed
        dx, dw, db = F.conv2d_backward(grad_out, x, self.weight.data, need_input_grad=input_grad,
                                       has_bias=self.bias is not None, columns=columns, **self._args())
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return conv_extra_repr(self)


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
        self._idx = self._x_shape = None

    def _run(self, fn, x, **extra):
        layout = "(N, C, H, W)" if self._ndim == 2 else "(N, C, L)"
        require_ndim(x, self._ndim + 2, layout, self._label())
        try:
            return fn(x, **extra, **self._args())
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace(f"{fn.__name__}:", f"{self._label()}:", 1)) from None

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

    def forward(self, x):
        y, idx = self._run(self._forward, x, return_indices=True)
        self._idx, self._x_shape = (idx, tuple(x.shape)) if self.training else (None, None)
        return y

    def backward(self, grad_out):
        idx, x_shape = self._saved("_idx", "_x_shape")
        return self._backward(grad_out, idx, x_shape, **self._args())

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

    def forward(self, x):
        y = self._run(self._forward, x)
        self._x_shape = tuple(x.shape) if self.training else None
        return y

    def backward(self, grad_out):
        (x_shape,) = self._saved("_x_shape")
        return self._backward(grad_out, x_shape, **self._args())


class MaxPool2d(_MaxPoolNd):
    """Max pooling, as ``torch.nn.MaxPool2d`` (stride defaults to kernel_size)."""

    _forward, _backward = staticmethod(F.max_pool2d), staticmethod(F.max_pool2d_backward)


class AvgPool2d(_AvgPoolNd):
    """Average pooling, as ``torch.nn.AvgPool2d``."""

    _forward, _backward = staticmethod(F.avg_pool2d), staticmethod(F.avg_pool2d_backward)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override=divisor_override)
        self.divisor_override = divisor_override


class GlobalAvgPool2d(Module):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``."""

    def __init__(self):
        super().__init__()
        self._x_shape = None

    def forward(self, x):
        require_ndim(x, 4, "(N, C, H, W)", "GlobalAvgPool2d")
        self._x_shape = tuple(x.shape) if self.training else None
        return F.global_avg_pool2d(x)

    def backward(self, grad_out):
        (x_shape,) = self._saved("_x_shape")
        return F.global_avg_pool2d_backward(grad_out, x_shape)


class Linear(Module):
    """Fully connected layer ``y = x W^T + b``: ``(N, in_features) -> (N, out_features)``."""

    skips_input_grad = True

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
        self._x = None

    def forward(self, x):
        require_ndim(x, 2, "(N, in_features)", self._label())
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self._label()}: input has {x.shape[1]} features, expected "
                             f"{self.in_features} (input shape {tuple(x.shape)})")
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._x = x if self.training else None
        return y

    def backward(self, grad_out, input_grad: bool = True):
        (x,) = self._saved("_x")
        dx, dw, db = F.linear_backward(grad_out, x, self.weight.data, need_input_grad=input_grad,
                                       has_bias=self.bias is not None)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` (default: all but the batch)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim
        self._x_shape = None

    def forward(self, x):
        shape = tuple(x.shape)
        start = self.start_dim % len(shape)
        end = self.end_dim % len(shape)
        new_shape = shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]
        self._x_shape = shape
        return backend_for(x, where="Flatten").xp.reshape(x, new_shape)

    def backward(self, grad_out):
        (x_shape,) = self._saved("_x_shape")
        return backend_for(grad_out, where="Flatten backward").xp.reshape(grad_out, x_shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input unchanged."""

    def forward(self, x):
        return x

    def backward(self, grad_out):
        return grad_out


class _Activation(Module):
    """An element-wise layer whose backward needs its output (or input)."""

    def __init__(self):
        super().__init__()
        self._saved_array = None

    def _keep(self, a):
        self._saved_array = a if self.training else None


class ReLU(_Activation):
    """``max(x, 0)``."""

    def forward(self, x):
        y = F.relu(x)
        self._keep(y)
        return y

    def backward(self, grad_out):
        (y,) = self._saved("_saved_array")
        return F.relu_backward(grad_out, y)


class LeakyReLU(_Activation):
    """``x`` if positive else ``negative_slope * x``."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        self._keep(x)
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, grad_out):
        (x,) = self._saved("_saved_array")
        return F.leaky_relu_backward(grad_out, x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Activation):
    """Logistic function."""

    def forward(self, x):
        y = F.sigmoid(x)
        self._keep(y)
        return y

    def backward(self, grad_out):
        (y,) = self._saved("_saved_array")
        return F.sigmoid_backward(grad_out, y)


class Tanh(_Activation):
    """Hyperbolic tangent."""

    def forward(self, x):
        y = F.tanh(x)
        self._keep(y)
        return y

    def backward(self, grad_out):
        (y,) = self._saved("_saved_array")
        return F.tanh_backward(grad_out, y)


class Softmax(_Activation):
    """Softmax along ``dim`` (default 1, the class axis)."""

    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        y = F.softmax(x, axis=self.dim)
        self._keep(y)
        return y

    def backward(self, grad_out):
        (y,) = self._saved("_saved_array")
        return F.softmax_backward(grad_out, y, axis=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``log(softmax(x))`` along ``dim``, computed stably."""

    def forward(self, x):
        y = F.log_softmax(x, axis=self.dim)
        self._keep(y)
        return y

    def backward(self, grad_out):
        (y,) = self._saved("_saved_array")
        return F.log_softmax_backward(grad_out, y, axis=self.dim)


_NOT_RUN = object()  # Dropout's mask before any forward (None means "nothing dropped")


class Dropout(Module):
    """Zero elements with probability ``p`` in training (scaling the rest by
    ``1/(1-p)``); identity in eval mode. Seeded by ``engine.manual_seed``."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self._mask = _NOT_RUN

    def forward(self, x):
        y, self._mask = F.dropout(x, self.p, self.training)
        return y

    def backward(self, grad_out):
        if self._mask is _NOT_RUN:
            raise RuntimeError(f"{self._label()}: backward() called before forward()")
        return grad_out if self._mask is None else grad_out * self._mask

    def extra_repr(self):
        return f"p={self.p}"
