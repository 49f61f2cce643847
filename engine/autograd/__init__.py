"""Define-by-run autograd over the engine's array-level pairs.

``engine.Tensor`` wraps a backend array; operations on Tensors that require a
gradient record :class:`Function` nodes (``engine/autograd/function.py``) whose
forward and backward call the array-level pairs of :mod:`engine.ops`;
``loss.backward()`` walks them in reverse creation order. The module names
follow PyTorch: ``engine.autograd.grad``, ``engine.autograd.backward``,
``engine.autograd.Function``.
"""
from . import basic as _basic, function as _function
from .basic import cat, chunk, flatten, split, stack, where
from .creation import arange, full, ones, ones_like, rand, randn, zeros, zeros_like
from .function import Function, backward, grad
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import Tensor, tensor

Tensor._ops, Tensor._graph = _basic, _function  # see the note in tensor.py

__all__ = ["Function", "Tensor", "arange", "backward", "cat", "chunk", "enable_grad", "flatten", "full",
           "grad", "is_grad_enabled", "no_grad", "ones", "ones_like", "rand", "randn", "set_grad_enabled",
           "split", "stack", "tensor", "where", "zeros", "zeros_like"]
