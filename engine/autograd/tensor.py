"""``engine.Tensor``: one backend array plus what autograd needs.

A Tensor wraps an array of the active backend (``.data``: a ``numpy.ndarray``,
``cupy.ndarray`` or ``array_api_strict`` array) and records, when it was made
by a recorded operation, the node that made it (``.grad_fn``). Leaves (made by
the user or a layer, ``grad_fn is None``) with ``requires_grad=True`` receive
their gradient in ``.grad`` (an array of the same backend, shape and dtype)
when ``backward()`` runs. Names and semantics follow PyTorch.
"""
from __future__ import annotations

import math
from collections import namedtuple

from .. import _state
from .. import backends
from .grad_mode import is_grad_enabled

__all__ = ["Tensor", "tensor", "as_array"]

#: What ``Tensor.max(dim)`` / ``Tensor.min(dim)`` return, as ``torch.return_types.max``.
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def as_array(x):
    """The backend array inside a Tensor, or ``x`` itself."""
    return x.data if isinstance(x, Tensor) else x


def _backend(a, where="Tensor"):
    owner = backends.backend_of(a)
    if owner is None:
        raise TypeError(f"{where}: expected an array of one of the engine's backends, got "
                        f"{type(a).__module__}.{type(a).__name__}; convert it with engine.tensor(...) or "
                        "engine.asarray(...)")
    return owner


def _is_float(dtype) -> bool:
    return "float" in str(dtype) or "complex" in str(dtype)


class Tensor:
    """An array of the active backend, with autograd.

    ``Tensor(data, requires_grad=False)`` wraps a backend array as is (no copy);
    :func:`engine.tensor` copies and converts anything array-like.
    """

    # The operations (engine/autograd/basic.py) and the backward pass
    # (engine/autograd/function.py) build on this class; engine/autograd/__init__.py
    # binds them here once both exist, so neither module imports the other in a cycle.
    _ops = None
    _graph = None

    __slots__ = ("data", "grad", "_requires_grad", "grad_fn", "_output_nr", "_hooks", "_retains_grad",
                 "__weakref__")
    __array_ufunc__ = None  # NumPy hands `ndarray + Tensor` to Tensor.__radd__
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        elif backends.backend_of(data) is None:
            data = _state.asarray(data)
        self.data = data
        self.grad = None
        self.grad_fn = None
        self._output_nr = 0
        self._hooks = None
        self._retains_grad = False
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _wrap(cls, array, grad_fn=None, output_nr=0):
        """A Tensor around ``array`` (made by a node when ``grad_fn`` is given)."""
        t = object.__new__(cls)
        t.data = array
        t.grad = None
        t.grad_fn = grad_fn
        t._output_nr = output_nr
        t._hooks = None
        t._retains_grad = False
        t._requires_grad = grad_fn is not None
        return t

    # -- autograd state ---------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag) -> None:
        if self.grad_fn is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf tensors; use .detach() to get "
                               "a tensor that does not require grad")
        if flag and not _is_float(self.data.dtype):
            raise RuntimeError(f"only tensors of floating point dtype can require gradients, got {self.data.dtype}")
        self._requires_grad = bool(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place (leaves only); returns ``self``."""
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        """True for tensors not made by a recorded operation."""
        return self.grad_fn is None

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` during ``backward()``."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that has requires_grad=False")
        if self.grad_fn is not None and not self._retains_grad:
            self._graph.retain(self.grad_fn, self._output_nr, self)
        self._retains_grad = True

    def register_hook(self, hook):
        """Call ``hook(grad)`` with this tensor's gradient during backward; a
        Tensor it returns replaces the gradient. Returns a handle with ``remove()``."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            return self._graph.register_tensor_hook(self.grad_fn, self._output_nr, hook)
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return self._graph._HookHandle(self._hooks, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None) -> None:
        """Accumulate the gradient of this tensor into the ``.grad`` of every leaf
        it depends on. ``gradient`` is needed unless the tensor has one element."""
        self._graph.backward(self, gradient, retain_graph, create_graph, inputs)

    def detach(self) -> Tensor:
        """The same array, cut from the graph (no ``grad_fn``, no ``requires_grad``)."""
        return Tensor._wrap(self.data)

    def detach_(self) -> Tensor:
        self.grad_fn = None
        self._requires_grad = False
        return self

    # -- array facts ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    def size(self, dim=None):
        """The shape, or the size of dimension ``dim``."""
        return self.shape if dim is None else self.shape[dim]

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def device(self):
        from array_api_compat import device
        return device(self.data)

    @property
    def backend(self) -> str:
        """Name of the backend holding the data (``"numpy"``, ``"cupy"``, ...)."""
        return _backend(self.data).name

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    # -- conversion ------------------------------------------------------------------------
    def numpy(self):
        """A NumPy array of the values (a copy for device backends)."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                               "instead.")
        return _state.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"a Tensor with {self.numel()} elements cannot be converted to a Python scalar")
        return _state.to_numpy(self.data).reshape(()).item()

    def tolist(self):
        return _state.to_numpy(self.data).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self.numel()} values is ambiguous")
        return bool(self.item())

    def __index__(self):
        if _is_float(self.data.dtype) or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        owner = _backend(self.data)
        if not owner.host_memory:
            raise TypeError(f"can't convert a {owner.name} (device) tensor to NumPy implicitly; use .numpy()")
        a = owner.to_numpy(self.data)
        return a if dtype is None else a.astype(dtype)

    def __format__(self, spec):
        if self.numel() == 1 and spec:
            return format(self.item(), spec)
        return repr(self)

    def __repr__(self) -> str:
        text = repr(_state.to_numpy(self.data)).replace("array(", "tensor(", 1)
        if not text.startswith("tensor("):
            text = f"tensor({text})"
        if self.grad_fn is not None:
            return f"{text[:-1]}, grad_fn={self.grad_fn!r})"
        if self.requires_grad:
            return f"{text[:-1]}, requires_grad=True)"
        return text

    __hash__ = object.__hash__  # comparison operators return Tensors; hashing stays by identity

    def to(self, target) -> Tensor:
        """A cast (``"float32"``, ``"float64"``) recorded on the tape, or a move to
        a backend (``"numpy"``, ``"cupy"``, ``"array_api_strict"``), detached."""
        if target in ("float16", "float32", "float64"):
            return self._ops.cast(self, target)
        owner = _backend(self.data)
        backend = backends.get(target)
        if backend is owner:
            return self
        return Tensor(backend.asarray(owner.to_numpy(self.data)), requires_grad=self.requires_grad)

    def float(self) -> Tensor:
        return self.to("float32")

    def double(self) -> Tensor:
        return self.to("float64")

    def cpu(self) -> Tensor:
        return self.to("numpy")

    def clone(self) -> Tensor:
        """A copy, recorded on the tape (gradients flow back to ``self``)."""
        return self._ops.clone(self)

    def contiguous(self) -> Tensor:
        return self

    # -- in place -------------------------------------------------------------------------------------
    def _check_inplace(self, what):
        if is_grad_enabled() and (self.requires_grad or self.grad_fn is not None):
            raise RuntimeError(f"{what}: a tensor that requires grad (or is part of a graph) cannot be changed "
                               "in place while recording; wrap the update in `with engine.no_grad():`")

    def _set(self, array) -> Tensor:
        self.data = array
        return self

    def __setitem__(self, key, value):
        self._check_inplace("item assignment")
        value = as_array(value)
        new = _backend(self.data).xp.asarray(self.data, copy=True)
        new[self._ops.index_key(key, self.data.ndim)] = value
        self.data = new

    def __iadd__(self, other):
        self._check_inplace("+=")
        return self._set(self.data + as_array(other))

    def __isub__(self, other):
        self._check_inplace("-=")
        return self._set(self.data - as_array(other))

    def __imul__(self, other):
        self._check_inplace("*=")
        return self._set(self.data * as_array(other))

    def __itruediv__(self, other):
        self._check_inplace("/=")
        return self._set(self.data / as_array(other))

    def add_(self, other, alpha=1):
        self._check_inplace("add_")
        other = as_array(other)
        return self._set(self.data + (other if alpha == 1 else other * alpha))

    def sub_(self, other, alpha=1):
        return self.add_(other, -alpha)

    def mul_(self, other):
        self._check_inplace("mul_")
        return self._set(self.data * as_array(other))

    def zero_(self):
        self._check_inplace("zero_")
        return self._set(_backend(self.data).xp.zeros_like(self.data))

    def fill_(self, value):
        self._check_inplace("fill_")
        xp = _backend(self.data).xp
        return self._set(xp.full_like(self.data, value))

    def copy_(self, src):
        self._check_inplace("copy_")
        src = as_array(src)
        xp = _backend(self.data).xp
        return self._set(xp.astype(xp.broadcast_to(src, self.data.shape), self.data.dtype, copy=True))

    # -- arithmetic (recorded) -------------------------------------------------------------------
    def __add__(self, other):
        return self._ops.add(self, other)

    def __radd__(self, other):
        return self._ops.add(other, self)

    def __sub__(self, other):
        return self._ops.sub(self, other)

    def __rsub__(self, other):
        return self._ops.sub(other, self)

    def __mul__(self, other):
        return self._ops.mul(self, other)

    def __rmul__(self, other):
        return self._ops.mul(other, self)

    def __truediv__(self, other):
        return self._ops.div(self, other)

    def __rtruediv__(self, other):
        return self._ops.div(other, self)

    def __matmul__(self, other):
        return self._ops.matmul(self, other)

    def __rmatmul__(self, other):
        return self._ops.matmul(other, self)

    def __pow__(self, exponent):
        return self._ops.pow(self, exponent)

    def __rpow__(self, base):
        return self._ops.pow(base, self)

    def __neg__(self):
        return self._ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return self._ops.abs(self)

    # -- comparisons (not differentiable) ------------------------------------------------------------
    def _compare(self, other, op):
        return Tensor._wrap(op(self.data, self._ops.operand_array(other, self.data)))

    def __eq__(self, other):
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    # -- methods that record -------------------------------------------------------------------------
    def __getitem__(self, key):
        return self._ops.getitem(self, key)

    def reshape(self, *shape):
        return self._ops.reshape(self, _shape_args(shape))

    def view(self, *shape):
        """As :meth:`reshape` (arrays here have no separate views to share)."""
        return self._ops.reshape(self, _shape_args(shape))

    def view_as(self, other):
        return self._ops.reshape(self, tuple(other.shape))

    def reshape_as(self, other):
        return self._ops.reshape(self, tuple(other.shape))

    def flatten(self, start_dim=0, end_dim=-1):
        return self._ops.flatten(self, start_dim, end_dim)

    def permute(self, *dims):
        return self._ops.permute(self, _shape_args(dims))

    def transpose(self, dim0, dim1):
        return self._ops.transpose(self, dim0, dim1)

    @property
    def T(self):
        return self._ops.permute(self, tuple(range(self.ndim - 1, -1, -1)))

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, got {self.ndim}")
        return self.T

    def squeeze(self, dim=None):
        return self._ops.squeeze(self, dim)

    def unsqueeze(self, dim):
        return self._ops.unsqueeze(self, dim)

    def expand(self, *sizes):
        return self._ops.expand(self, _shape_args(sizes))

    def expand_as(self, other):
        return self._ops.expand(self, tuple(other.shape))

    def sum(self, dim=None, keepdim=False):
        return self._ops.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return self._ops.mean(self, dim, keepdim)

    def var(self, dim=None, keepdim=False, *, correction=1, unbiased=None):
        return self._ops.var(self, dim, keepdim, correction if unbiased is None else int(bool(unbiased)))

    def std(self, dim=None, keepdim=False, *, correction=1, unbiased=None):
        return self._ops.sqrt(self.var(dim, keepdim, correction=correction, unbiased=unbiased))

    def max(self, dim=None, keepdim=False):
        """The largest value (gradient shared by ties), ``(values, indices)`` along
        ``dim``, or the element-wise maximum with a tensor given as ``dim``."""
        return self._ops.max_min(self, dim, keepdim, "max")

    def min(self, dim=None, keepdim=False):
        return self._ops.max_min(self, dim, keepdim, "min")

    def amax(self, dim=None, keepdim=False):
        return self._ops.amax_amin(self, dim, keepdim, "max")

    def amin(self, dim=None, keepdim=False):
        return self._ops.amax_amin(self, dim, keepdim, "min")

    def argmax(self, dim=None, keepdim=False):
        return self._ops.arg(self, dim, keepdim, "argmax")

    def argmin(self, dim=None, keepdim=False):
        return self._ops.arg(self, dim, keepdim, "argmin")

    def exp(self):
        return self._ops.exp(self)

    def log(self):
        return self._ops.log(self)

    def sqrt(self):
        return self._ops.sqrt(self)

    def abs(self):
        return self._ops.abs(self)

    def clamp(self, min=None, max=None):
        return self._ops.clamp(self, min, max)

    clip = clamp

    def pow(self, exponent):
        return self._ops.pow(self, exponent)

    def relu(self):
        from ..nn import functional as F
        return F.relu(self)

    def sigmoid(self):
        from ..nn import functional as F
        return F.sigmoid(self)

    def tanh(self):
        from ..nn import functional as F
        return F.tanh(self)

    def softmax(self, dim):
        from ..nn import functional as F
        return F.softmax(self, dim)

    def log_softmax(self, dim):
        from ..nn import functional as F
        return F.log_softmax(self, dim)


def _shape_args(args) -> tuple:
    """``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    return tuple(int(a) for a in args)


def _as_grad_array(t: Tensor, g, where):
    """The gradient given for root ``t`` as an array of ``t``'s backend, shape and dtype."""
    xp = _backend(t.data).xp
    if g is None:
        if t.numel() != 1:
            raise RuntimeError(f"{where}: grad can be implicitly created only for scalar outputs; pass a "
                               f"gradient of shape {t.shape}")
        return xp.ones(t.shape, dtype=t.data.dtype, device=t.device)
    g = as_array(g)
    if backends.backend_of(g) is not backends.backend_of(t.data):
        g = _backend(t.data).asarray(_state.to_numpy(g), dtype=t.data.dtype)
    if tuple(g.shape) != t.shape:
        raise RuntimeError(f"{where}: the gradient has shape {tuple(g.shape)} but the tensor has shape {t.shape}")
    if g.dtype != t.data.dtype:
        g = xp.astype(g, t.data.dtype)
    return g


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """A new Tensor on the active backend holding a copy of ``data`` (a list, a
    number, a NumPy or backend array, a Tensor).

    ``dtype``: ``"float32"``, ``"float64"``, ``"int64"``, ... or a dtype object.
    Python floats become float32 (PyTorch's default); arrays keep their dtype.
    """
    import numpy as np
    if isinstance(data, Tensor):
        data = data.data
    owner = backends.backend_of(data)
    if dtype is None and owner is None and not isinstance(data, np.ndarray):
        host = np.asarray(data)
        if host.dtype == np.float64:
            dtype = "float32"
    if owner is not None and owner is not _state.current():
        data = owner.to_numpy(data)
        owner = None
    if owner is not None:
        xp = owner.xp
        array = xp.asarray(data, copy=True)
        if dtype is not None:
            array = xp.astype(array, _state.dtype_of(dtype, owner))
    else:
        array = _state.asarray(np.array(data, copy=True), dtype=dtype)
    return Tensor(array, requires_grad=requires_grad)

