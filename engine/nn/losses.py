"""Loss modules: calling one returns the loss as a Tensor (0-d unless
``reduction="none"``); ``loss.backward()`` sends the gradient into the graph."""
from __future__ import annotations

from ..ops.losses import check_reduction
from . import functional as F
from .layers import renamed_errors
from .module import Module


class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        reduction = F._reduction(size_average, reduce, reduction)
        check_reduction(reduction, type(self).__name__)
        self.reduction = reduction

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross-entropy on logits ``(N, K)`` with integer labels ``(N,)``, as
    ``torch.nn.CrossEntropyLoss`` (stable for logits in the thousands)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(size_average, reduce, reduction)
        self.weight, self.ignore_index = weight, ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        with renamed_errors("cross_entropy", "CrossEntropyLoss"):
            return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                                   reduction=self.reduction, label_smoothing=self.label_smoothing)


class MSELoss(_Loss):
    """Mean squared error between an input and a target of the same shape."""

    def forward(self, input, target):
        with renamed_errors("mse_loss", "MSELoss"):
            return F.mse_loss(input, target, reduction=self.reduction)
