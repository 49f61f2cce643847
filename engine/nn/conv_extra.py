"""More convolution and pooling layers, with PyTorch's class and argument names:
``ConvTranspose2d``, ``ConvTranspose1d``, ``Conv1d``, ``MaxPool1d``,
``AvgPool1d``, ``AdaptiveAvgPool2d``, ``AdaptiveAvgPool1d``, ``MaxUnpool2d``
and ``MaxUnpool1d``. Each takes batched ``(N, C, ...)`` or unbatched
``(C, ...)`` inputs, as PyTorch.

As everywhere in ``engine.nn``, modules write ``forward`` only (through
:mod:`engine.nn.functional`). Weight shapes and state_dict keys are PyTorch's,
so weights load from ``torch_module.state_dict()`` unchanged.
"""
from __future__ import annotations

from .._checks import pair
from ..ops.adaptive import _output_size, _single_size
from ..ops.conv_transpose import conv_transpose_output_size
from ..ops.ops1d import single
from . import functional as F
from .layers import (_AvgPoolNd, _ConvNd, _factory, _init_parameters, _MaxPoolNd, _new_parameter,
                     check_channel_counts as _check_channels, check_channels, check_padding_mode, conv_extra_repr,
                     renamed_errors)
from .module import Module

__all__ = ["ConvTranspose2d", "ConvTranspose1d", "Conv1d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool2d",
           "AdaptiveAvgPool1d", "MaxUnpool2d", "MaxUnpool1d"]


class _ConvTransposeNd(Module):
    _ndim = 2

    def _build(self, in_channels, out_channels, kernel_size, bias, init, padding_mode, device, dtype, where):
        _check_channels(in_channels, out_channels, self.groups, where)
        dtype = _factory(device, dtype, where)
        self.padding_mode = check_padding_mode(padding_mode, where, allowed=("zeros",))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = _new_parameter((in_channels, out_channels // self.groups) + self.kernel_size, dtype)
        self.bias = _new_parameter((out_channels,), dtype) if bias else None
        _init_parameters(self.weight, self.bias, init, where)

    def _output_padding_for(self, x, output_size):
        """``output_padding``, or the one that gives ``output_size`` (PyTorch's forward argument)."""
        if output_size is None:
            return self.output_padding
        sizes = tuple(output_size)[-self._ndim:]
        spatial = tuple(x.shape)[-self._ndim:]
        if len(sizes) != self._ndim:
            raise ValueError(f"{self._label()}: output_size must give the last {self._ndim} sizes, "
                             f"got {output_size!r}")
        pads = []
        for i, want in enumerate(sizes):
            base = conv_transpose_output_size(spatial[i], self.kernel_size[-self._ndim + i],
                                              self.stride[-self._ndim + i], self.padding[-self._ndim + i], 0,
                                              self.dilation[-self._ndim + i])
            limit = max(self.stride[-self._ndim + i], self.dilation[-self._ndim + i])
            if not base <= want < base + limit:
                raise ValueError(f"{self._label()}: output_size {tuple(sizes)} is not reachable from input "
                                 f"shape {tuple(x.shape)}: size {i} must be in [{base}, {base + limit - 1}]")
            pads.append(want - base)
        return tuple(pads)

    def forward(self, input, output_size=None):
        layout = "(N, C, H, W)" if self._ndim == 2 else "(N, C, L)"
        check_channels(self, input, self._ndim, self.in_channels, layout)
        op = self._output_padding_for(input, output_size)
        functional = F.conv_transpose2d if self._ndim == 2 else F.conv_transpose1d
        with renamed_errors(functional.__name__, self):
            return functional(input, self.weight, self.bias, **self._args(op))

    def extra_repr(self):
        return conv_extra_repr(self, self.output_padding)


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution (the adjoint of :class:`Conv2d`), as ``torch.nn.ConvTranspose2d``.

    Weight ``(in_channels, out_channels/groups, kh, kw)``, bias ``(out_channels,)``.
    Output size ``(H-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``;
    ``forward(x, output_size=...)`` picks the output padding that gives
    ``output_size`` instead, as in PyTorch. ``init`` picks the
    initialisation (``"torch"``, PyTorch's default, unless another is named).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None, *, init="torch"):
        super().__init__()
        where = f"ConvTranspose2d({in_channels}, {out_channels})"
        if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
        self.groups = groups
        self.kernel_size = pair(kernel_size, "kernel_size", where)
        self.stride = pair(stride, "stride", where)
        self.padding = pair(padding, "padding", where, minimum=0)
        self.output_padding = pair(output_padding, "output_padding", where, minimum=0)
        self.dilation = pair(dilation, "dilation", where)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(f"{where}: output_padding {self.output_padding} must be smaller than the "
                                 f"stride {self.stride} or the dilation {self.dilation}")
        self._build(in_channels, out_channels, self.kernel_size, bias, init, padding_mode, device, dtype, where)

    def _args(self, output_padding):
        return dict(stride=self.stride, padding=self.padding, output_padding=output_padding, groups=self.groups,
                    dilation=self.dilation)

class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution over ``(N, C, L)``, as ``torch.nn.ConvTranspose1d``.

    Weight ``(in_channels, out_channels/groups, k)``; runs on the 2-D
    machinery with a height of 1.
    """

    _ndim = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None, *, init="torch"):
        super().__init__()
        where = f"ConvTranspose1d({in_channels}, {out_channels})"
        if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
        self.groups = groups
        self.kernel_size = (single(kernel_size, "kernel_size", where),)
        self.stride = (single(stride, "stride", where),)
        self.padding = (single(padding, "padding", where, minimum=0),)
        self.output_padding = (single(output_padding, "output_padding", where, minimum=0),)
        self.dilation = (single(dilation, "dilation", where),)
        if self.output_padding[0] >= self.stride[0] and self.output_padding[0] >= self.dilation[0]:
            raise ValueError(f"{where}: output_padding {self.output_padding[0]} must be smaller than the "
                             f"stride {self.stride[0]} or the dilation {self.dilation[0]}")
        self._build(in_channels, out_channels, self.kernel_size, bias, init, padding_mode, device, dtype, where)

    def _args(self, output_padding):
        return dict(stride=self.stride[0], padding=self.padding[0], output_padding=output_padding[0],
                    groups=self.groups, dilation=self.dilation[0])

class Conv1d(_ConvNd):
    """1-D convolution over ``(N, C, L)`` or unbatched ``(C, L)`` inputs, as ``torch.nn.Conv1d``.

    Weight ``(out_channels, in_channels/groups, k)``, bias ``(out_channels,)``;
    ``padding`` is an int, ``"valid"`` or ``"same"``; ``padding_mode`` as
    :class:`Conv2d`. Runs on the 2-D machinery (im2col + GEMM) with a height of 1.
    """

    _ndim = 1
    _layout = "(N, C, L)"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, init="torch",
                 method="gemm"):
        super().__init__()
        where = f"Conv1d({in_channels}, {out_channels})"
        _check_channels(in_channels, out_channels, groups, where)
        dtype = _factory(device, dtype, where)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = (single(kernel_size, "kernel_size", where),)
        self.stride = (single(stride, "stride", where),)
        self.dilation = (single(dilation, "dilation", where),)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{where}: padding must be an int, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1,):
                raise ValueError(f"{where}: padding='same' needs stride 1, got stride={self.stride[0]}")
            self.padding = padding
        else:
            self.padding = (single(padding, "padding", where, minimum=0),)
        self._finish(in_channels, out_channels, groups, bias, padding_mode, init, method, dtype, where)


class MaxPool1d(_MaxPoolNd):
    """Max pooling over ``(N, C, L)``, as ``torch.nn.MaxPool1d`` (stride defaults to kernel_size)."""

    _ndim = 1
    _op = staticmethod(F.max_pool1d)


class AvgPool1d(_AvgPoolNd):
    """Average pooling over ``(N, C, L)``, as ``torch.nn.AvgPool1d``."""

    _ndim = 1
    _op = staticmethod(F.avg_pool1d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class _AdaptiveAvgPoolNd(Module):
    """Average pooling to a fixed output size over ``N`` spatial axes;
    subclasses name the functional op and validate the size."""

    _layout, _ndim = "", 0  # the input's layout, e.g. "(N, C, L)", and its number of axes
    _op = None

    def __init__(self, output_size):
        super().__init__()
        self.output_size = self._checked_size(output_size)

    def forward(self, input):
        ndim = getattr(input, "ndim", None)
        if ndim not in (self._ndim - 1, self._ndim):
            raise ValueError(f"{self._label()}: input must be {self._layout} or unbatched (without N), got "
                             f"shape {tuple(getattr(input, 'shape', ()))}")
        with renamed_errors(self._op.__name__, self):
            return self._op(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Average pooling to a fixed output size, as ``torch.nn.AdaptiveAvgPool2d``:
    ``(N, C, H, W) -> (N, C, OH, OW)`` with PyTorch's bins
    ``[floor(i*H/OH), ceil((i+1)*H/OH))``. ``output_size`` is an int or a pair
    whose entries may be ``None`` (keep that input size)."""

    _layout, _ndim = "(N, C, H, W)", 4
    _op = staticmethod(F.adaptive_avg_pool2d)

    @staticmethod
    def _checked_size(output_size):
        _output_size(output_size, (1, 1), "AdaptiveAvgPool2d")  # validates; None entries resolve per input
        return output_size


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Average pooling of ``(N, C, L)`` to ``(N, C, output_size)``, as ``torch.nn.AdaptiveAvgPool1d``."""

    _layout, _ndim = "(N, C, L)", 3
    _op = staticmethod(F.adaptive_avg_pool1d)

    @staticmethod
    def _checked_size(output_size):
        return _single_size(output_size, "AdaptiveAvgPool1d")


class _MaxUnpoolNd(Module):
    """The partial inverse of max pooling: ``forward(input, indices, output_size=None)``
    puts each value at its flat index (PyTorch's, as ``MaxPool2d(return_indices=True)``
    gives them) in a zero output."""

    _ndim = 2
    _op = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        where = type(self).__name__
        size = pair if self._ndim == 2 else (lambda v, n, w, m=1: (single(v, n, w, m),))
        self.kernel_size = size(kernel_size, "kernel_size", where)
        self.stride = self.kernel_size if stride is None else size(stride, "stride", where)
        self.padding = size(padding, "padding", where, 0)

    def forward(self, input, indices, output_size=None):
        args = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)
        if self._ndim == 1:
            args = {k: v[0] for k, v in args.items()}
        with renamed_errors(self._op.__name__, self):
            return self._op(input, indices, output_size=output_size, **args)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool2d(_MaxUnpoolNd):
    """Max-unpooling of ``(N, C, H, W)`` or ``(C, H, W)``, as ``torch.nn.MaxUnpool2d``."""

    _op = staticmethod(F.max_unpool2d)


class MaxUnpool1d(_MaxUnpoolNd):
    """Max-unpooling of ``(N, C, L)`` or ``(C, L)``, as ``torch.nn.MaxUnpool1d``."""

    _ndim = 1
    _op = staticmethod(F.max_unpool1d)
