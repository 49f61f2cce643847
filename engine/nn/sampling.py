"""Padding and resampling layers, with PyTorch's names and arguments:
``ZeroPad1d/2d``, ``ConstantPad1d/2d``, ``ReflectionPad1d/2d``,
``ReplicationPad1d/2d``, ``CircularPad1d/2d`` (through ``F.pad``), and
``Upsample``, ``UpsamplingNearest2d``, ``UpsamplingBilinear2d`` (through
``F.interpolate``). None has parameters.
"""
from __future__ import annotations

import numbers

from . import functional as F
from .layers import renamed_errors
from .module import Module

__all__ = ["ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d", "ReflectionPad2d",
           "ReplicationPad1d", "ReplicationPad2d", "CircularPad1d", "CircularPad2d", "Upsample",
           "UpsamplingNearest2d", "UpsamplingBilinear2d"]


class _PadNd(Module):
    """``F.pad(x, padding, mode, value)``; ``padding`` an int (every side) or a
    tuple ``(left, right[, top, bottom])``, last axis first."""

    _axes = 1
    _mode = "constant"

    def __init__(self, padding, value=0.0):
        super().__init__()
        where = type(self).__name__
        if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
            padding = (int(padding),) * (2 * self._axes)
        try:
            padding = tuple(padding)
        except TypeError:
            raise TypeError(f"{where}: padding must be an int or a tuple of {2 * self._axes} ints, "
                            f"got {padding!r}") from None
        if len(padding) != 2 * self._axes or any(isinstance(p, bool) or not isinstance(p, numbers.Integral)
                                                 for p in padding):
            raise ValueError(f"{where}: padding must be an int or a tuple of {2 * self._axes} ints, got {padding!r}")
        self.padding = tuple(int(p) for p in padding)
        self.value = float(value)

    def forward(self, input):
        with renamed_errors("pad", self):
            return F.pad(input, self.padding, self._mode, self.value if self._mode == "constant" else None)

    def extra_repr(self):
        return f"{self.padding}" + (f", value={self.value}" if self._mode == "constant" else "")


class _ConstantPadNd(_PadNd):
    def __init__(self, padding, value):
        super().__init__(padding, value)


class ConstantPad1d(_ConstantPadNd):
    """Pad the last axis with ``value``."""


class ConstantPad2d(_ConstantPadNd):
    """Pad the last two axes with ``value``."""

    _axes = 2


class ZeroPad1d(_PadNd):
    """Pad the last axis with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ZeroPad2d(ZeroPad1d):
    """Pad the last two axes with zeros."""

    _axes = 2


class _ModePadNd(_PadNd):
    def __init__(self, padding):
        super().__init__(padding)


class ReflectionPad1d(_ModePadNd):
    """Pad ``(N, C, L)`` or ``(C, L)`` by reflection (the edge not repeated)."""

    _mode = "reflect"


class ReflectionPad2d(_ModePadNd):
    """Pad ``(N, C, H, W)`` or ``(C, H, W)`` by reflection."""

    _axes, _mode = 2, "reflect"


class ReplicationPad1d(_ModePadNd):
    """Pad ``(N, C, L)`` or ``(C, L)`` by repeating the edge."""

    _mode = "replicate"


class ReplicationPad2d(_ModePadNd):
    """Pad ``(N, C, H, W)`` or ``(C, H, W)`` by repeating the edge."""

    _axes, _mode = 2, "replicate"


class CircularPad1d(_ModePadNd):
    """Pad ``(N, C, L)`` or ``(C, L)`` by wrapping around."""

    _mode = "circular"


class CircularPad2d(_ModePadNd):
    """Pad ``(N, C, H, W)`` or ``(C, H, W)`` by wrapping around."""

    _axes, _mode = 2, "circular"


class Upsample(Module):
    """Resample ``(N, C, ...)`` to ``size`` or by ``scale_factor``, as ``torch.nn.Upsample``
    (``mode``: ``"nearest"``, ``"nearest-exact"``, ``"linear"``, ``"bilinear"``,
    ``"bicubic"``, ``"trilinear"``, ``"area"``; ``align_corners`` for the interpolating modes)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size = tuple(size) if isinstance(size, (list, tuple)) else size
        if isinstance(scale_factor, (list, tuple)):
            scale_factor = tuple(float(f) for f in scale_factor)
        elif scale_factor is not None:
            scale_factor = float(scale_factor)
        self.scale_factor = scale_factor
        self.mode, self.align_corners, self.recompute_scale_factor = mode, align_corners, recompute_scale_factor

    def forward(self, input):
        with renamed_errors("interpolate", self):
            return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                                 recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self):
        what = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{what}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """``Upsample(size, scale_factor, mode="nearest")`` of ``(N, C, H, W)``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``Upsample(size, scale_factor, mode="bilinear", align_corners=True)`` of ``(N, C, H, W)``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
