"""Residual connections: networks that are not straight chains.

:class:`Residual` computes ``y = body(x) + shortcut(x)`` (the shortcut is the
identity unless a projection module is given), optionally followed by an
activation. Its backward sends the upstream gradient down both paths and
*sums* the two input gradients where the paths meet, at ``x``.

:class:`BasicBlock` is ResNet's two-convolution block with torchvision's
attribute names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0``,
``downsample.1``), so the state_dict of a torchvision ``BasicBlock`` loads
as is.
"""
from __future__ import annotations

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
        self._start_calls()  # a module shared between the paths keeps each call's state
        y = self.body(x)
        self._called("body", self.body)
        s = x
        if self.shortcut is not None:
            s = self.shortcut(x)
            self._called("shortcut", self.shortcut)
        _check_same_shape("Residual", y, s, "body", "shortcut" if self.shortcut is not None else "identity shortcut",
                          "Give a projection shortcut, e.g. Sequential(Conv2d(c_in, c_out, 1, stride=s, "
                          "bias=False), BatchNorm2d(c_out))." if self.shortcut is None else "")
        out = y + s
        if self.activation is None:
            return out
        out = self.activation(out)
        self._called("activation", self.activation)
        return out

    def backward(self, grad_out):
        if self.activation is not None:
            grad_out = self._child_backward("activation", self.activation, grad_out)
        d_short = grad_out if self.shortcut is None else self._child_backward("shortcut", self.shortcut, grad_out)
        d_body = self._child_backward("body", self.body, grad_out)
        return d_body + d_short  # the two paths meet at x: their gradients add

    def _child_backward(self, key, child, grad_out):
        self._restore_call(key)
        grad = child.backward(grad_out)
        self._finish_call(key, child)
        return grad


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

    def backward(self, grad_out):
        g = self.relu2.backward(grad_out)
        d_body = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(g)))))
        d_short = g if self.downsample is None else self.downsample.backward(g)
        return d_body + d_short
