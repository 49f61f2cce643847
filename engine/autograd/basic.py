"""The tensor operations every model uses: arithmetic with broadcasting, shape
changes, indexing, reductions, element-wise functions, ``cat``/``stack``/
``split``/``where``. Each is a small :class:`~engine.autograd.Function` whose
forward and backward are a few lines of array-API code.

Broadcasting is undone in backward: the gradient of an operand that was
broadcast is summed over the broadcast axes (:func:`sum_to_shape`).
"""
from __future__ import annotations

import builtins
import math
import numbers

from .. import backends
from .function import Function
from .tensor import Tensor, ValuesIndices, _backend, as_array

__all__ = ["add", "sub", "mul", "div", "matmul", "pow", "neg", "exp", "log", "sqrt", "abs", "clamp",
           "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "expand", "getitem",
           "sum", "mean", "var", "max_min", "amax_amin", "arg", "cat", "stack", "split", "chunk", "where",
           "clone", "cast", "sum_to_shape"]


def _xp(a):
    return _backend(a).xp


def broadcast_shapes(*shapes) -> tuple:
    """The shape that arrays of ``shapes`` broadcast to (NumPy's rules)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        sizes = {s[i - ndim + len(s)] for s in shapes if i - ndim + len(s) >= 0} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {shapes} cannot be broadcast together")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def sum_to_shape(xp, g, shape):
    """Sum ``g`` over the axes along which an operand of ``shape`` was broadcast."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = xp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.reshape(g, shape)


def operand_array(other, like):
    """``other`` as something array arithmetic with ``like`` accepts: Tensors
    unwrapped, Python numbers kept, other arrays moved to ``like``'s backend."""
    if isinstance(other, Tensor):
        return other.data
    if isinstance(other, (bool, int, float)):
        return other
    if isinstance(other, numbers.Number):
        return other.item() if hasattr(other, "item") else float(other)
    owner = backends.backend_of(like)
    if backends.backend_of(other) is owner:
        return other
    import numpy as np
    host = np.asarray(other)
    return owner.asarray(host, dtype=like.dtype if host.dtype.kind == "f" else None)


def _binary(node_cls, a, b):
    like = a.data if isinstance(a, Tensor) else b.data
    a = a if isinstance(a, Tensor) else operand_array(a, like)
    b = b if isinstance(b, Tensor) else operand_array(b, like)
    return node_cls()(a, b)


def _shape_of(v):
    return tuple(v.shape) if hasattr(v, "shape") else ()


class _Binary(Function):
    def _remember(self, a, b):
        if self.recording:
            self.shapes = (_shape_of(a), _shape_of(b))

    def _grads(self, xp, ga, gb):
        sa, sb = self.shapes
        ga = sum_to_shape(xp, ga, sa) if self.needs_input_grad[0] and ga is not None else None
        gb = sum_to_shape(xp, gb, sb) if self.needs_input_grad[1] and gb is not None else None
        return ga, gb


class AddNode(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        return a + b

    def backward(self, g):
        return self._grads(_xp(g), g, g)


class SubNode(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        return a - b

    def backward(self, g):
        return self._grads(_xp(g), g, -g if self.needs_input_grad[1] else None)


class MulNode(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        if self.recording:
            self.saved = (b if self.needs_input_grad[0] else None, a if self.needs_input_grad[1] else None)
        return a * b

    def backward(self, g):
        b, a = self.saved
        return self._grads(_xp(g), g * b if b is not None else None, g * a if a is not None else None)


class DivNode(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        if self.recording:
            self.saved = (a if self.needs_input_grad[1] else None, b)
        return a / b

    def backward(self, g):
        a, b = self.saved
        ga = g / b if self.needs_input_grad[0] else None
        gb = -g * a / (b * b) if self.needs_input_grad[1] else None
        return self._grads(_xp(g), ga, gb)


class PowNode(_Binary):
    def forward(self, a, b):
        self._remember(a, b)
        xp = _xp(a if hasattr(a, "shape") else b)
        y = xp.pow(a, b) if hasattr(a, "shape") else xp.pow(xp.asarray(a, dtype=b.dtype), b)
        if self.recording:
            self.saved = (a, b, y)
        return y

    def backward(self, g):
        a, b, y = self.saved
        xp = _xp(g)
        ga = gb = None
        if self.needs_input_grad[0]:
            if isinstance(b, (int, float)) and b == 0:
                ga = xp.zeros_like(g)
            else:
                ga = g * b * xp.pow(a, b - 1) if hasattr(a, "shape") else None
        if self.needs_input_grad[1]:
            base = a if hasattr(a, "shape") else xp.asarray(a, dtype=y.dtype)
            # d(a**b)/db = a**b * log(a), taken as 0 where a == 0 (PyTorch's convention)
            at_zero = base == 0
            log_a = xp.where(at_zero, xp.zeros_like(base), xp.log(xp.where(at_zero, xp.ones_like(base), base)))
            gb = g * y * log_a
        return self._grads(xp, ga, gb)


class MatmulNode(Function):
    def forward(self, a, b):
        xp = _xp(a)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both arguments must have at least one dimension, got shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        if self.recording:
            self.saved = (a, b)
        return xp.matmul(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = _xp(g)
        a2 = a if a.ndim > 1 else xp.reshape(a, (1, -1))
        b2 = b if b.ndim > 1 else xp.reshape(b, (-1, 1))
        g2 = xp.reshape(g, broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = xp.reshape(sum_to_shape(xp, xp.matmul(g2, xp.matrix_transpose(b2)), a2.shape), a.shape)
        if self.needs_input_grad[1]:
            gb = xp.reshape(sum_to_shape(xp, xp.matmul(xp.matrix_transpose(a2), g2), b2.shape), b.shape)
        return ga, gb


def add(a, b):
    return _binary(AddNode, a, b)


def sub(a, b):
    return _binary(SubNode, a, b)


def mul(a, b):
    return _binary(MulNode, a, b)


def div(a, b):
    return _binary(DivNode, a, b)


def pow(a, b):
    return _binary(PowNode, a, b)


def matmul(a, b):
    like = a.data if isinstance(a, Tensor) else b.data
    a = a if isinstance(a, Tensor) else operand_array(a, like)
    b = b if isinstance(b, Tensor) else operand_array(b, like)
    return MatmulNode()(a, b)


# --------------------------------------------------------------------------- element-wise
class _Unary(Function):
    """An element-wise function ``f`` whose derivative is ``df(x, y)``."""

    def forward(self, x):
        y = self.f(_xp(x), x)
        if self.recording:
            self.saved = (x, y)
        return y

    def backward(self, g):
        x, y = self.saved
        return g * self.df(_xp(g), x, y)


class NegNode(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class ExpNode(_Unary):
    f = staticmethod(lambda xp, x: xp.exp(x))
    df = staticmethod(lambda xp, x, y: y)


class LogNode(_Unary):
    f = staticmethod(lambda xp, x: xp.log(x))
    df = staticmethod(lambda xp, x, y: 1 / x)


class SqrtNode(_Unary):
    f = staticmethod(lambda xp, x: xp.sqrt(x))
    df = staticmethod(lambda xp, x, y: 0.5 / y)


class AbsNode(_Unary):
    f = staticmethod(lambda xp, x: xp.abs(x))
    df = staticmethod(lambda xp, x, y: xp.sign(x))  # 0 at 0, as PyTorch


class ClampNode(Function):
    def __init__(self, low, high):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x):
        xp = _xp(x)
        y = x
        if self.low is not None:
            y = xp.maximum(y, xp.asarray(self.low, dtype=x.dtype)) if not hasattr(self.low, "shape") else \
                xp.maximum(y, self.low)
        if self.high is not None:
            y = xp.minimum(y, xp.asarray(self.high, dtype=x.dtype)) if not hasattr(self.high, "shape") else \
                xp.minimum(y, self.high)
        if self.recording:
            self.saved = x
        return y

    def backward(self, g):
        x = self.saved
        xp = _xp(g)
        inside = xp.ones(x.shape, dtype=xp.bool, device=_device(x))
        if self.low is not None:
            inside = inside & (x >= self.low)
        if self.high is not None:
            inside = inside & (x <= self.high)
        return xp.where(inside, g, xp.zeros_like(g))


def _device(x):
    from array_api_compat import device
    return device(x)


def neg(x):
    return NegNode()(x)


def exp(x):
    return ExpNode()(x)


def log(x):
    return LogNode()(x)


def sqrt(x):
    return SqrtNode()(x)


def abs(x):
    return AbsNode()(x)


def clamp(x, min=None, max=None):
    """Values limited to ``[min, max]``; the gradient passes where ``min <= x <= max``."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return ClampNode(as_array(min), as_array(max))(x)


class CastNode(Function):
    def __init__(self, dtype_name):
        super().__init__()
        self.dtype_name = dtype_name

    def forward(self, x):
        owner = _backend(x)
        self.source = x.dtype
        return owner.xp.astype(x, owner.dtype(self.dtype_name))

    def backward(self, g):
        return _xp(g).astype(g, self.source)


def cast(x, dtype_name):
    return CastNode(dtype_name)(x)


class CloneNode(Function):
    def forward(self, x):
        return _xp(x).asarray(x, copy=True)

    def backward(self, g):
        return g


def clone(x):
    return CloneNode()(x)


# --------------------------------------------------------------------------- shape
class ReshapeNode(Function):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        self.in_shape = tuple(x.shape)
        try:
            return _xp(x).reshape(x, self.shape)
        except ValueError:
            raise RuntimeError(f"shape {list(self.shape)} is invalid for input of shape {list(x.shape)} "
                               f"({math.prod(x.shape)} elements)") from None

    def backward(self, g):
        return _xp(g).reshape(g, self.in_shape)


def reshape(x, shape):
    return ReshapeNode(tuple(shape))(x)


def _dim(d, ndim, where="dim"):
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise IndexError(f"{where} {d} is out of range for a tensor of {ndim} dimensions")
    return d % max(ndim, 1)


def flatten(x, start_dim=0, end_dim=-1):
    """Flatten dimensions ``start_dim..end_dim`` into one (``torch.flatten``)."""
    shape = tuple(x.shape)
    if not shape:
        return reshape(x, (1,))
    start, end = _dim(start_dim, len(shape)), _dim(end_dim, len(shape))
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(x, shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])


class PermuteNode(Function):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        if sorted(self.dims) != list(range(x.ndim)):
            raise ValueError(f"permute: dims {self.dims} are not a permutation of the {x.ndim} dimensions")
        return _xp(x).permute_dims(x, self.dims)

    def backward(self, g):
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d] = i
        return _xp(g).permute_dims(g, tuple(inverse))


def permute(x, dims):
    ndim = len(as_array(x).shape)
    return PermuteNode(tuple(_dim(d, ndim) for d in dims))(x)


def transpose(x, dim0, dim1):
    ndim = len(as_array(x).shape)
    dims = list(range(ndim))
    a, b = _dim(dim0, ndim), _dim(dim1, ndim)
    dims[a], dims[b] = dims[b], dims[a]
    return PermuteNode(tuple(dims))(x)


def squeeze(x, dim=None):
    shape = tuple(as_array(x).shape)
    if dim is None:
        new = tuple(n for n in shape if n != 1)
    else:
        dims = {_dim(d, len(shape)) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        new = tuple(n for i, n in enumerate(shape) if not (i in dims and n == 1))
    return reshape(x, new)


def unsqueeze(x, dim):
    shape = tuple(as_array(x).shape)
    d = _dim(dim, len(shape) + 1)
    return reshape(x, shape[:d] + (1,) + shape[d:])


class ExpandNode(Function):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        self.in_shape = tuple(x.shape)
        lead = len(self.shape) - x.ndim
        shape = tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(self.shape))
        return _xp(x).broadcast_to(x, shape)

    def backward(self, g):
        return sum_to_shape(_xp(g), g, self.in_shape)


def expand(x, shape):
    return ExpandNode(tuple(shape))(x)


# --------------------------------------------------------------------------- indexing
def index_key(key, ndim=None):
    """An indexing key with Tensors replaced by their arrays; given ``ndim``, a
    basic key that names fewer axes gets a trailing ``...`` (NumPy's implicit
    rule, which the array API standard leaves out: ``t[1]`` of a 4-D tensor)."""
    parts = tuple(as_array(k) for k in key) if isinstance(key, tuple) else (as_array(key),)
    if ndim is not None and _is_basic(parts) and not any(k is Ellipsis for k in parts):
        named = builtins.sum(1 for k in parts if k is not None)
        if named < ndim:
            parts = parts + (Ellipsis,)
    return parts if isinstance(key, tuple) or len(parts) > 1 else parts[0]


def _is_basic(key) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (slice, int)) for k in parts)


class GetItemNode(Function):
    def __init__(self, key):
        super().__init__()
        self.key = key

    def forward(self, x):
        self.in_shape, self.dtype = tuple(x.shape), x.dtype
        return x[self.key]

    def backward(self, g):
        owner = _backend(g)
        full = owner.xp.zeros(self.in_shape, dtype=g.dtype, device=_device(g))
        if _is_basic(self.key):
            full[self.key] = g
            return full
        return owner.index_add(full, self.key, g)


def getitem(x, key):
    return GetItemNode(index_key(key, as_array(x).ndim))(x)


# --------------------------------------------------------------------------- reductions
def _axes(dim, ndim):
    if dim is None:
        return None
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return tuple(sorted(_dim(d, ndim) for d in dims))


def _expand_reduced(xp, g, in_shape, axes, keepdim):
    """``g`` of a reduction over ``axes`` reshaped so it broadcasts against the input."""
    if axes is None:
        return xp.reshape(g, (1,) * len(in_shape))
    if not keepdim:
        shape = [1 if i in axes else n for i, n in enumerate(in_shape)]
        return xp.reshape(g, tuple(shape))
    return g


class SumNode(Function):
    def __init__(self, axes, keepdim):
        super().__init__()
        self.axes, self.keepdim = axes, keepdim

    def forward(self, x):
        self.in_shape = tuple(x.shape)
        return _xp(x).sum(x, axis=self.axes, keepdims=self.keepdim)

    def backward(self, g):
        xp = _xp(g)
        g = _expand_reduced(xp, g, self.in_shape, self.axes, self.keepdim)
        return g * xp.ones(self.in_shape, dtype=g.dtype, device=_device(g))


class MeanNode(SumNode):
    def forward(self, x):
        self.in_shape = tuple(x.shape)
        return _xp(x).mean(x, axis=self.axes, keepdims=self.keepdim)

    def backward(self, g):
        count = math.prod(self.in_shape) if self.axes is None else math.prod(self.in_shape[a] for a in self.axes)
        return super().backward(g / max(count, 1))


class VarNode(SumNode):
    def __init__(self, axes, keepdim, correction):
        super().__init__(axes, keepdim)
        self.correction = correction

    def forward(self, x):
        xp = _xp(x)
        self.in_shape = tuple(x.shape)
        mean = xp.mean(x, axis=self.axes, keepdims=True)
        centred = x - mean
        count = self._count()
        y = xp.sum(centred * centred, axis=self.axes, keepdims=self.keepdim) / max(count - self.correction, 0)
        if self.recording:
            self.saved = centred
        return y

    def _count(self):
        return math.prod(self.in_shape) if self.axes is None else math.prod(self.in_shape[a] for a in self.axes)

    def backward(self, g):
        xp = _xp(g)
        g = _expand_reduced(xp, g, self.in_shape, self.axes, self.keepdim)
        return g * (2 / max(self._count() - self.correction, 0)) * self.saved


def sum(x, dim=None, keepdim=False):
    return SumNode(_axes(dim, len(as_array(x).shape)), keepdim)(x)


def mean(x, dim=None, keepdim=False):
    return MeanNode(_axes(dim, len(as_array(x).shape)), keepdim)(x)


def var(x, dim=None, keepdim=False, correction=1):
    return VarNode(_axes(dim, len(as_array(x).shape)), keepdim, correction)(x)


class ExtremeNode(Function):
    """``max``/``min`` (or ``amax``/``amin``) over ``axes``; the gradient is shared
    evenly among the elements equal to the result, as PyTorch's."""

    def __init__(self, which, axes, keepdim):
        super().__init__()
        self.which, self.axes, self.keepdim = which, axes, keepdim

    def forward(self, x):
        xp = _xp(x)
        y = (xp.max if self.which == "max" else xp.min)(x, axis=self.axes, keepdims=self.keepdim)
        if self.recording:
            self.saved = (x, y)
        return y

    def backward(self, g):
        x, y = self.saved
        xp = _xp(g)
        y = _expand_reduced(xp, y, x.shape, self.axes, self.keepdim)
        g = _expand_reduced(xp, g, x.shape, self.axes, self.keepdim)
        hit = xp.astype(x == y, g.dtype)
        return g * hit / xp.sum(hit, axis=self.axes, keepdims=True)


class SelectNode(Function):
    """``max(dim)``/``min(dim)``: values and indices; the gradient goes to the index."""

    non_differentiable = (1,)

    def __init__(self, which, axis, keepdim):
        super().__init__()
        self.which, self.axis, self.keepdim = which, axis, keepdim

    def forward(self, x):
        xp = _xp(x)
        idx = (xp.argmax if self.which == "max" else xp.argmin)(x, axis=self.axis, keepdims=True)
        values = xp.take_along_axis(x, idx, axis=self.axis)
        if self.recording:
            self.saved = (tuple(x.shape), idx)
        if not self.keepdim:
            values = xp.squeeze(values, axis=self.axis)
            idx = xp.squeeze(idx, axis=self.axis)
        return values, idx

    def backward(self, g, _g_idx=None):
        shape, idx = self.saved
        xp = _xp(g)
        if not self.keepdim:
            g = xp.expand_dims(g, axis=self.axis)
        positions = xp.reshape(xp.arange(shape[self.axis], device=_device(g)),
                               tuple(-1 if i == self.axis else 1 for i in range(len(shape))))
        return xp.where(positions == idx, g, xp.zeros((), dtype=g.dtype, device=_device(g)))


class MaximumNode(_Binary):
    """Element-wise ``maximum``/``minimum``; ties share the gradient in halves (PyTorch)."""

    def __init__(self, which):
        super().__init__()
        self.which = which

    def forward(self, a, b):
        self._remember(a, b)
        xp = _xp(a)
        if self.recording:
            self.saved = (a, b)
        return xp.maximum(a, b) if self.which == "max" else xp.minimum(a, b)

    def backward(self, g):
        a, b = self.saved
        xp = _xp(g)
        wins = (a > b) if self.which == "max" else (a < b)
        zero = xp.zeros((), dtype=g.dtype, device=_device(g))
        tie = xp.where(a == b, g / 2, zero)
        ga = xp.where(wins, g, zero) + tie
        gb = xp.where((a == b) | wins, zero, g) + tie
        return self._grads(xp, ga, gb)


def max_min(x, dim, keepdim, which):
    if isinstance(dim, Tensor) or hasattr(dim, "shape"):
        return _binary(lambda: MaximumNode(which), x, dim)
    ndim = len(as_array(x).shape)
    if dim is None:
        return ExtremeNode(which, None, False)(x)
    values, indices = SelectNode(which, _dim(dim, ndim), keepdim)(x)
    return ValuesIndices(values, indices)


def amax_amin(x, dim, keepdim, which):
    return ExtremeNode(which, _axes(dim, len(as_array(x).shape)), keepdim)(x)


def arg(x, dim, keepdim, which):
    a = as_array(x)
    xp = _xp(a)
    fn = xp.argmax if which == "argmax" else xp.argmin
    if dim is None:
        return Tensor._wrap(fn(xp.reshape(a, (-1,))))
    return Tensor._wrap(fn(a, axis=_dim(dim, a.ndim), keepdims=keepdim))


# --------------------------------------------------------------------------- joining and splitting
def _tensors_arg(tensors, where):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{where}: expected a non-empty sequence of tensors")
    like = next((as_array(t) for t in tensors if backends.backend_of(as_array(t)) is not None), None)
    if like is None:
        raise TypeError(f"{where}: expected Tensors or backend arrays, got "
                        f"{', '.join(type(t).__name__ for t in tensors)}")
    return [t if isinstance(t, Tensor) else operand_array(t, like) for t in tensors]


class CatNode(Function):
    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def forward(self, *arrays):
        self.sizes = [a.shape[self.axis] for a in arrays]
        return _xp(arrays[0]).concat(arrays, axis=self.axis)

    def backward(self, g):
        out, start = [], 0
        for size, need in zip(self.sizes, self.needs_input_grad):
            index = [slice(None)] * g.ndim
            index[self.axis] = slice(start, start + size)
            out.append(g[tuple(index)] if need else None)
            start += size
        return tuple(out)


class StackNode(Function):
    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def forward(self, *arrays):
        return _xp(arrays[0]).stack(arrays, axis=self.axis)

    def backward(self, g):
        out = []
        for i, need in enumerate(self.needs_input_grad):
            index = [slice(None)] * g.ndim
            index[self.axis] = i
            out.append(g[tuple(index)] if need else None)
        return tuple(out)


def cat(tensors, dim=0):
    """Join tensors along an existing dimension (``torch.cat``)."""
    parts = _tensors_arg(tensors, "cat")
    ndim = len(as_array(parts[0]).shape)
    for i, p in enumerate(parts):
        if len(as_array(p).shape) != ndim:
            raise ValueError(f"cat: tensor {i} has {len(as_array(p).shape)} dimensions, tensor 0 has {ndim}")
    return CatNode(_dim(dim, ndim))(*parts)


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dimension (``torch.stack``)."""
    parts = _tensors_arg(tensors, "stack")
    shapes = {tuple(as_array(p).shape) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"stack: expects tensors of one shape, got {sorted(shapes)}")
    return StackNode(_dim(dim, len(shapes.pop()) + 1))(*parts)


class SplitNode(Function):
    def __init__(self, sizes, axis):
        super().__init__()
        self.sizes, self.axis = sizes, axis

    def forward(self, x):
        self.shape, self.dtype = tuple(x.shape), x.dtype
        out, start = [], 0
        for size in self.sizes:
            index = [slice(None)] * x.ndim
            index[self.axis] = slice(start, start + size)
            out.append(x[tuple(index)])
            start += size
        return tuple(out)

    def backward(self, *grads):
        like = next(g for g in grads if g is not None)
        xp = _xp(like)
        parts = []
        for size, g in zip(self.sizes, grads):
            if g is None:
                shape = list(self.shape)
                shape[self.axis] = size
                g = xp.zeros(tuple(shape), dtype=like.dtype, device=_device(like))
            parts.append(g)
        return xp.concat(parts, axis=self.axis)


def split(x, split_size_or_sections, dim=0):
    """Pieces of ``x`` along ``dim``: of ``split_size`` each (the last may be
    smaller), or of the sizes listed (``torch.split``)."""
    shape = tuple(as_array(x).shape)
    axis = _dim(dim, len(shape))
    n = shape[axis]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of dimension {dim}")
    return SplitNode(tuple(sizes), axis)(x)


def chunk(x, chunks, dim=0):
    """``chunks`` pieces of (nearly) equal size along ``dim`` (``torch.chunk``)."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = tuple(as_array(x).shape)[_dim(dim, len(as_array(x).shape))]
    return split(x, max(1, -(-n // chunks)), dim)



class WhereNode(Function):
    def __init__(self, condition):
        super().__init__()
        self.condition = condition

    def forward(self, a, b):
        self.shapes = (_shape_of(a), _shape_of(b))
        return _xp(self.condition).where(self.condition, a, b)

    def backward(self, g):
        xp = _xp(g)
        zero = xp.zeros((), dtype=g.dtype, device=_device(g))
        ga = sum_to_shape(xp, xp.where(self.condition, g, zero), self.shapes[0]) if self.needs_input_grad[0] \
            else None
        gb = sum_to_shape(xp, xp.where(self.condition, zero, g), self.shapes[1]) if self.needs_input_grad[1] \
            else None
        return ga, gb


def where(condition, input, other):
    """``input`` where ``condition`` holds, else ``other`` (``torch.where``)."""
    cond = as_array(condition)
    like = as_array(input) if hasattr(as_array(input), "shape") else as_array(other)
    a = input if isinstance(input, Tensor) else operand_array(input, like)
    b = other if isinstance(other, Tensor) else operand_array(other, like)
    xp = _xp(like)
    if not hasattr(a, "shape") and not isinstance(a, Tensor):
        a = xp.asarray(a, dtype=like.dtype)
    if not hasattr(b, "shape") and not isinstance(b, Tensor):
        b = xp.asarray(b, dtype=like.dtype)
    return WhereNode(cond)(a, b)
