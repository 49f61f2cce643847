"""Loss modules with PyTorch's names, arguments (positional order included) and
semantics: calling one returns the loss as a Tensor (0-d unless
``reduction="none"``); ``loss.backward()`` sends the gradient into the graph,
to the target too where PyTorch defines one (float targets that require a
gradient).

``weight`` (and ``BCEWithLogitsLoss``'s ``pos_weight``) are registered as
buffers, as in PyTorch: they move with ``model.to(...)`` and appear in the
state_dict (when given). They may be a backend array, an engine Tensor, a NumPy
array or a PyTorch tensor; they are stored as an array of the active backend.
The deprecated ``size_average``/``reduce`` arguments map to ``reduction`` as
PyTorch maps them.
"""
from __future__ import annotations

import numpy as np

from .. import _state, backends
from ..autograd.tensor import Tensor
from ..ops.losses import check_reduction
from . import functional as F
from .layers import renamed_errors
from .module import Module, _to_host

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
           "BCELoss", "BCEWithLogitsLoss"]


def _buffer_array(value):
    """``value`` as an array of the active backend (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value.data
    if backends.backend_of(value) is not None:
        return value
    return _state.current().asarray(np.array(_to_host(value), copy=True))


class _Loss(Module):
    _reductions = ("mean", "sum", "none")

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        reduction = F._reduction(size_average, reduce, reduction)
        check_reduction(reduction, type(self).__name__, self._reductions)
        self.reduction = reduction

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _buffer_array(weight))


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy of logits ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)`` against class
    indices or class probabilities, as ``torch.nn.CrossEntropyLoss``: ``weight`` per
    class, ``ignore_index``, ``label_smoothing`` (stable for logits in the thousands)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        with renamed_errors("cross_entropy", "CrossEntropyLoss"):
            return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                                   reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of class indices given log-probabilities, as ``torch.nn.NLLLoss``."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        with renamed_errors("nll_loss", "NLLLoss"):
            return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(_Loss):
    """Mean squared error between an input and a target of the same shape."""

    def forward(self, input, target):
        with renamed_errors("mse_loss", "MSELoss"):
            return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error between an input and a target of the same shape."""

    def forward(self, input, target):
        with renamed_errors("l1_loss", "L1Loss"):
            return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """Smooth L1: ``0.5 d²/beta`` inside ``|d| < beta``, ``|d| - 0.5 beta`` outside."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = float(beta)

    def forward(self, input, target):
        with renamed_errors("smooth_l1_loss", "SmoothL1Loss"):
            return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """Huber: ``0.5 d²`` inside ``|d| < delta``, ``delta (|d| - 0.5 delta)`` outside."""

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = float(delta)

    def forward(self, input, target):
        with renamed_errors("huber_loss", "HuberLoss"):
            return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class KLDivLoss(_Loss):
    """KL divergence with the input holding log-probabilities; ``reduction="batchmean"``
    is the mathematical one (``"mean"`` divides by every element, as PyTorch)."""

    _reductions = ("mean", "batchmean", "sum", "none")

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = bool(log_target)

    def forward(self, input, target):
        with renamed_errors("kl_div", "KLDivLoss"):
            return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities in [0, 1] (logs clamped at -100, as PyTorch)."""

    def forward(self, input, target):
        with renamed_errors("binary_cross_entropy", "BCELoss"):
            return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of ``sigmoid(input)`` from the logits, computed stably;
    ``pos_weight`` weighs the positive term of each class."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _buffer_array(weight))
        self.register_buffer("pos_weight", _buffer_array(pos_weight))

    def forward(self, input, target):
        with renamed_errors("binary_cross_entropy_with_logits", "BCEWithLogitsLoss"):
            return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                      pos_weight=self.pos_weight)
