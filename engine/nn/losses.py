"""Loss modules: calling one returns the loss (a 0-d array); ``backward()``
returns the gradient of the loss for its input."""
from __future__ import annotations

from .. import ops as F
from ..ops.losses import check_reduction
from .module import Module


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        check_reduction(reduction, type(self).__name__)
        self.reduction = reduction
        self._input = self._target = None

    def backward(self, grad_out=1.0):
        """Gradient of the loss for the input of the last call (``grad_out``
        scales it, e.g. for a weighted sum of losses)."""
        inp, target = self._saved("_input", "_target")
        return self._grad(inp, target, grad_out)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross-entropy on logits ``(N, K)`` with integer labels ``(N,)``, as
    ``torch.nn.CrossEntropyLoss`` (stable for logits in the thousands)."""

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits, target):
        try:
            loss = F.cross_entropy(logits, target, self.reduction, self.label_smoothing)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("cross_entropy:", "CrossEntropyLoss:", 1)) from None
        self._input, self._target = logits, target
        return loss

    def _grad(self, logits, target, grad_out):
        return F.cross_entropy_backward(logits, target, self.reduction, self.label_smoothing, grad_out)


class MSELoss(_Loss):
    """Mean squared error between an input and a target of the same shape."""

    def forward(self, input, target):
        try:
            loss = F.mse_loss(input, target, self.reduction)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("mse_loss:", "MSELoss:", 1)) from None
        self._input, self._target = input, target
        return loss

    def _grad(self, input, target, grad_out):
        return F.mse_loss_backward(input, target, self.reduction, grad_out)
