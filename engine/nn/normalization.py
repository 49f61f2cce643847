"""Normalisation layers: ``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm`` and
``GroupNorm``, with PyTorch's arguments (``bias=`` included) and state_dict keys.

State_dict keys are PyTorch's: ``weight`` and ``bias`` (parameters, with
``affine=True``), ``running_mean``, ``running_var`` and
``num_batches_tracked`` (buffers, with ``track_running_stats=True``), so a
PyTorch model's state_dict loads as is and vice versa.

* Training mode: normalise with the batch statistics (biased variance);
  update the running ones with ``momentum`` (unbiased variance), or with a
  cumulative average when ``momentum=None``; count ``num_batches_tracked``.
* Eval mode: normalise with the running statistics (or, with
  ``track_running_stats=False``, with the batch's own, as PyTorch does).
"""
from __future__ import annotations

import numpy as np

from .. import backends

from .. import _state
from ..autograd.tensor import as_array
from .._checks import backend_for, positive_int
from ..ops.normalization import _normalized_shape
from . import functional as F
from .layers import _factory, renamed_errors
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm"]


def _affine(shape, enabled, bias, dtype):
    """``(weight, bias)`` Parameters of ``shape`` (ones, zeros), or ``None`` where off."""
    if not enabled:
        return None, None
    backend = _state.current()
    dt = backend.dtype(dtype)
    weight = Parameter(backend.asarray(np.ones(shape), dtype=dt))
    return weight, (Parameter(backend.asarray(np.zeros(shape), dtype=dt)) if bias else None)


class _BatchNorm(Module):
    _layout = ""
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        where = f"{type(self).__name__}({num_features})"
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features <= 0:
            raise ValueError(f"{where}: num_features must be a positive int, got {num_features!r}")
        if not eps > 0:
            raise ValueError(f"{where}: eps must be positive, got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{where}: momentum must be in [0, 1] or None (cumulative average), got {momentum!r}")
        dtype = _factory(device, dtype, where)
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        backend = _state.current()
        dt = backend.dtype(dtype)
        self.weight, self.bias = _affine((num_features,), self.affine, bias, dtype)
        if self.track_running_stats:
            self.register_buffer("running_mean", backend.asarray(np.zeros(num_features), dtype=dt))
            self.register_buffer("running_var", backend.asarray(np.ones(num_features), dtype=dt))
            self.register_buffer("num_batches_tracked", backend.asarray(np.array(0), dtype=backend.dtype("int64")))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    # -- state -------------------------------------------------------------------
    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if not self.track_running_stats:
            return
        xp = backends.backend_of(self.running_mean).xp
        self._set_buffer("running_mean", xp.zeros_like(self.running_mean))
        self._set_buffer("running_var", xp.ones_like(self.running_var))
        self._set_buffer("num_batches_tracked", xp.zeros_like(self.num_batches_tracked))

    def reset_parameters(self) -> None:
        """Running statistics reset; weight 1, bias 0."""
        self.reset_running_stats()
        if self.affine:
            xp = backends.backend_of(self.weight.data).xp
            self.weight.data = xp.ones_like(self.weight.data)
            if self.bias is not None:
                self.bias.data = xp.zeros_like(self.bias.data)

    # -- forward / backward ---------------------------------------------------
    def _check_input(self, x):
        if not hasattr(x, "ndim") or x.ndim not in self._ndims:
            got = f"{x.ndim} dimensions with shape {tuple(x.shape)}" if hasattr(x, "ndim") else type(x).__name__
            raise ValueError(f"{self._label()}: input must be {self._layout}, got {got}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self._label()}: input has {x.shape[1]} channels, expected "
                             f"{self.num_features} (input shape {tuple(x.shape)})")

    def forward(self, input):
        self._check_input(input)
        factor = 0.0
        if self.training and self.track_running_stats:
            xp = backend_for(as_array(input), where=self._label()).xp
            nbt = self.num_batches_tracked + 1
            self._set_buffer("num_batches_tracked", nbt)
            # momentum=None: cumulative average, factor 1/num_batches_tracked (kept on the device).
            factor = self.momentum if self.momentum is not None else 1.0 / xp.astype(nbt, input.dtype)
        use_batch_stats = self.training or not self.track_running_stats
        update = not self.training or self.track_running_stats  # running stats passed (and updated in training)
        with renamed_errors("batch_norm", self):
            return F.batch_norm(input, self.running_mean if update else None, self.running_var if update else None,
                                self.weight, self.bias, training=use_batch_stats, momentum=factor, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over ``(N, C)`` or ``(N, C, L)``, statistics per channel ``C``."""

    _layout = "(N, C) or (N, C, L)"
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over ``(N, C, H, W)``, statistics per channel ``C``."""

    _layout = "(N, C, H, W)"
    _ndims = (4,)


class LayerNorm(Module):
    """Layer normalisation, as ``torch.nn.LayerNorm``: each sample is normalised over
    its last ``len(normalized_shape)`` axes (biased variance, ``eps`` added), then
    scaled by ``weight`` and shifted by ``bias`` (both ``normalized_shape``, with
    ``elementwise_affine``; ``bias=False`` leaves out the shift). No running statistics:
    training and evaluation compute the same."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        where = "LayerNorm"
        self.normalized_shape = _normalized_shape(normalized_shape, where)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight, self.bias = _affine(self.normalized_shape, self.elementwise_affine, bias,
                                         _factory(device, dtype, where))

    def forward(self, input):
        with renamed_errors("layer_norm", self):
            return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Group normalisation, as ``torch.nn.GroupNorm``: the ``num_channels`` channels of
    ``(N, C, *)`` form ``num_groups`` groups, each normalised per sample over its
    channels and positions; ``weight``/``bias`` ``(C,)`` (with ``affine``) scale and
    shift per channel."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        where = f"GroupNorm({num_groups}, {num_channels})"
        self.num_groups = positive_int(num_groups, "num_groups", where)
        self.num_channels = positive_int(num_channels, "num_channels", where)
        if num_channels % num_groups:
            raise ValueError(f"{where}: num_channels must be divisible by num_groups")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.weight, self.bias = _affine((num_channels,), self.affine, bias, _factory(device, dtype, where))

    def forward(self, input):
        if getattr(input, "ndim", 0) >= 2 and input.shape[1] != self.num_channels:
            raise ValueError(f"{self._label()}: input has {input.shape[1]} channels, expected {self.num_channels} "
                             f"(input shape {tuple(input.shape)})")
        with renamed_errors("group_norm", self):
            return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
