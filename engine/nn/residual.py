"""Residual connections: networks that are not straight chains.

:class:`Residual` computes ``y = body(x) + shortcut(x)`` (the shortcut is the
identity unless a projection module is given), optionally followed by an
activation. The tape sends the upstream gradient down both paths and sums
the two input gradients where the paths meet, at ``x``.

:class:`BasicBlock` is ResNet's two-convolution block with torchvision's
attribute names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0``,
``downsample.1``), so the state_dict of a torchvision ``BasicBlock`` loads
as is.
"""
from __future__ import annotations

from ..autograd import Tensor
from .layers import Conv2d, ReLU
from .module import Module, Sequential
from .normalization import BatchNorm2d

__all__ = ["Residual", "BasicBlock"]


def _check_same_shape(label, a, b, what_a, what_b, hint):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{label}: the {what_a} output has shape {tuple(a.shape)} but the {what_b} output has "
                         f"shape {tuple(b.shape)}; they are added, so they must match. {hint}")


class Residual(Module):
    """``y = activation(body(x) + shortcut(x))``: a block with a skip connection.

    ``body``: any module (typically a :class:`Sequential`). ``shortcut``:
    ``None`` for the identity, or a projection module (e.g.
    ``Sequential(Conv2d(c_in, c_out, 1, stride=2, bias=False), BatchNorm2d(c_out))``)
    when the body changes the shape. ``activation``: an optional module
    applied after the sum (e.g. ``ReLU()``).

    State_dict keys are ``body.…``, ``shortcut.…`` (and ``activation.…``).
    """

    def __init__(self, body: Module, shortcut: Module | None = None, activation: Module | None = None):
        super().__init__()
        for name, m in (("body", body), ("shortcut", shortcut), ("activation", activation)):
            if m is not None and not isinstance(m, Module):
                raise TypeError(f"Residual: {name} must be a Module or None, got {type(m).__name__}")
        if body is None:
            raise TypeError("Residual: body must be a Module, got None")
        self.body = body
        self.shortcut = shortcut
        self.activation = activation

    def forward(self, x):
        y = self.body(x)
        s = x if self.shortcut is None else self.shortcut(x)
        _check_same_shape("Residual", y, s, "body", "shortcut" if self.shortcut is not None else "identity shortcut",
                          "Give a projection shortcut, e.g. Sequential(Conv2d(c_in, c_out, 1, stride=s, "
                          "bias=False), BatchNorm2d(c_out))." if self.shortcut is None else "")
        out = _as_tensor(y) + s
        return out if self.activation is None else self.activation(out)


class BasicBlock(Module):
    """ResNet's basic block (He et al. 2016), with torchvision's names:

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, ``conv1`` a 3x3
    convolution with ``stride``, ``conv2`` a 3x3 one, both without bias. The
    shortcut is the identity when the shape is kept, else ``downsample``: a
    1x1 convolution with ``stride`` and a :class:`BatchNorm2d`.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, dtype="float32"):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, dtype=dtype)
        self.bn1 = BatchNorm2d(out_channels, dtype=dtype)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False, dtype=dtype)
        self.bn2 = BatchNorm2d(out_channels, dtype=dtype)
        if stride != 1 or in_channels != out_channels:
            self.downsample = Sequential(
                Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, dtype=dtype),
                BatchNorm2d(out_channels, dtype=dtype))
        else:
            self.downsample = None
        self.relu2 = ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        _check_same_shape("BasicBlock", out, identity, "body", "shortcut", "")
        return self.relu2(out + identity)


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)
