"""``engine.nn.functional`` (import as ``F``): differentiable functions on Tensors,
with ``torch.nn.functional``'s names, arguments and input ranks.

Each function records one node whose forward calls the array-level forward of
:mod:`engine.ops` and whose backward calls the matching array-level backward
(the explicit pairs learners read, and the C/CUDA fast paths, are the same
code either way). They accept Tensors or plain backend arrays and return
Tensors. Under :class:`engine.no_grad`, or when no input requires a gradient,
nothing is kept for a backward: no input, no im2col columns, no pooling
indices.

Unbatched inputs are accepted where PyTorch accepts them (``(C, H, W)`` for
the 2-D convolutions and pools, ``(C, L)`` for the 1-D ones, ``(in,)`` for
``linear``): a batch axis of one is added on the tape and taken off again.
``inplace=True`` (``relu``, ``dropout``, ...) is accepted and computed out of
place: the tape never overwrites an array a backward may need, so the result
is the same tensor values PyTorch returns, in a new Tensor.
"""
from __future__ import annotations

from .. import ops
from .._state import host_rng
from ..autograd import Function
from ..autograd.basic import broadcast_shapes, cast, expand, flatten, reshape
from ..autograd.tensor import Tensor, as_array
from ._args import dtype_name

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "linear", "max_pool1d", "max_pool2d",
           "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "global_avg_pool2d",
           "max_unpool1d", "max_unpool2d", "batch_norm", "layer_norm", "group_norm", "dropout", "dropout1d",
           "dropout2d", "dropout3d", "relu", "leaky_relu", "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid",
           "tanh", "softmax", "log_softmax", "interpolate", "pad", "cross_entropy", "nll_loss", "mse_loss",
           "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "flatten"]


# --------------------------------------------------------------------------- convolutions and linear
class _WeightedNode(Function):
    """``y = op(x, weight, bias)``: saves ``x`` and ``weight`` while recording;
    its backward computes only the gradients asked for (no ``dx`` for data, no
    ``dW`` for a frozen weight)."""

    def __init__(self, **args):
        super().__init__()
        self.args = args

    def _save(self, x, weight):
        if self.recording:
            self.saved = (x, weight)

    def _needs(self):
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        return need_x, need_w, need_b

    def _result(self, dx, dw, db):
        need_x, need_w, need_b = self._needs()
        grads = (dx if need_x else None), (dw if need_w else None), (db if need_b else None)
        return grads[:len(self.needs_input_grad)]


class Conv2dNode(_WeightedNode):
    def forward(self, x, weight, bias=None):
        # im2col columns are kept for the weight gradient only while recording one
        keep = self.recording and self.needs_input_grad[1] and self.args.get("method", "gemm") == "gemm"
        y = ops.conv2d(x, weight, bias, keep_columns=keep, **self.args)
        y, columns = y if keep else (y, None)
        if self.recording:
            self.saved = (x, weight, columns)
        return y

    def backward(self, g):
        x, weight, columns = self.saved
        need_x, need_w, need_b = self._needs()
        return self._result(*ops.conv2d_backward(g, x, weight, need_input_grad=need_x, need_weight_grad=need_w,
                                                 has_bias=need_b, columns=columns, **self.args))


class Conv1dNode(_WeightedNode):
    def forward(self, x, weight, bias=None):
        self._save(x, weight)
        return ops.conv1d(x, weight, bias, **self.args)

    def backward(self, g):
        x, weight = self.saved
        need_x, need_w, need_b = self._needs()
        return self._result(*ops.conv1d_backward(g, x, weight, need_input_grad=need_x, need_weight_grad=need_w,
                                                 has_bias=need_b, **self.args))


class ConvTransposeNode(_WeightedNode):
    def __init__(self, ndim, **args):
        super().__init__(**args)
        self.forward_fn = ops.conv_transpose2d if ndim == 2 else ops.conv_transpose1d
        self.backward_fn = ops.conv_transpose2d_backward if ndim == 2 else ops.conv_transpose1d_backward

    def forward(self, x, weight, bias=None):
        self._save(x, weight)
        return self.forward_fn(x, weight, bias, **self.args)

    def backward(self, g):
        x, weight = self.saved
        need_x, _, need_b = self._needs()
        return self._result(*self.backward_fn(g, x, weight, need_input_grad=need_x, has_bias=need_b,
                                              **self.args))


class LinearNode(_WeightedNode):
    def forward(self, x, weight, bias=None):
        self._save(x, weight)
        return ops.linear(x, weight, bias)

    def backward(self, g):
        x, weight = self.saved
        need_x, need_w, need_b = self._needs()
        xp = _xp(g)
        lead = tuple(x.shape[:-1])
        if len(lead) != 1:  # (..., in) inputs: the pair works on (N, in) matrices
            g = xp.reshape(g, (-1, g.shape[-1]))
            x = xp.reshape(x, (-1, x.shape[-1]))
        dx, dw, db = ops.linear_backward(g, x, weight, need_input_grad=need_x, need_weight_grad=need_w,
                                         has_bias=need_b)
        if dx is not None and len(lead) != 1:
            dx = xp.reshape(dx, lead + (dx.shape[-1],))
        return self._result(dx, dw, db)


def _xp(a):
    from .. import backends
    return backends.backend_of(a).xp


def _call(node, *inputs):
    """``node(*inputs)``, dropping trailing ``None`` inputs (an absent bias)."""
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    return node(*inputs)


def _ndim(input, where):
    a = as_array(input)
    if not hasattr(a, "ndim"):
        raise TypeError(f"{where}: input must be a Tensor or an array, got {type(input).__name__}")
    return a.ndim


def _batched(input, ndim, where, layout):
    """``(input with a batch axis, lifted)``: an unbatched ``(C, ...)`` input of
    ``ndim - 1`` dimensions gets a batch axis of one (on the tape)."""
    got = _ndim(input, where)
    if got == ndim:
        return input, False
    if got == ndim - 1:
        return reshape(input, (1,) + tuple(as_array(input).shape)), True
    shape = tuple(as_array(input).shape)
    raise ValueError(f"{where}: input must be {layout} or unbatched (without N), got {got} dimensions with "
                     f"shape {shape}")


def _unbatched(y, lifted):
    """Undo :func:`_batched` on an output (or each of several)."""
    if not lifted:
        return y
    if isinstance(y, tuple):
        return tuple(_unbatched(t, True) for t in y)
    return reshape(y, tuple(y.shape)[1:])


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, method="gemm"):
    """2-D convolution (cross-correlation) of ``(N, C, H, W)`` (or unbatched ``(C, H, W)``)
    with weight ``(O, C/groups, kh, kw)``; ``padding`` an int, a pair, ``"valid"`` or ``"same"``.
    ``method``: ``"gemm"`` (im2col + GEMM, or the C kernels), ``"strided"``, ``"naive"``."""
    x, lifted = _batched(input, 4, "conv2d", "(N, C, H, W)")
    node = Conv2dNode(stride=stride, padding=padding, dilation=dilation, groups=groups, method=method)
    return _unbatched(_call(node, x, weight, bias), lifted)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, method="gemm"):
    """1-D convolution of ``(N, C, L)`` (or ``(C, L)``) with weight ``(O, C/groups, k)``."""
    x, lifted = _batched(input, 3, "conv1d", "(N, C, L)")
    node = Conv1dNode(stride=stride, padding=padding, dilation=dilation, groups=groups, method=method)
    return _unbatched(_call(node, x, weight, bias), lifted)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution of ``(N, C, H, W)`` (or ``(C, H, W)``), weight ``(C_in, C_out/groups, kh, kw)``."""
    x, lifted = _batched(input, 4, "conv_transpose2d", "(N, C, H, W)")
    node = ConvTransposeNode(2, stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                             dilation=dilation)
    return _unbatched(_call(node, x, weight, bias), lifted)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 1-D convolution of ``(N, C, L)`` (or ``(C, L)``), weight ``(C_in, C_out/groups, k)``."""
    x, lifted = _batched(input, 3, "conv_transpose1d", "(N, C, L)")
    node = ConvTransposeNode(1, stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                             dilation=dilation)
    return _unbatched(_call(node, x, weight, bias), lifted)


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``: ``(..., in_features) -> (..., out_features)``, ``(in,)`` included."""
    return _call(LinearNode(), input, weight, bias)


# --------------------------------------------------------------------------- pooling
class MaxPoolNode(Function):
    """Max pooling; with ``return_indices`` a second, non-differentiable output
    holds PyTorch's flat indices (``row * W + col`` in each input plane)."""

    def __init__(self, ndim, return_indices=False, **args):
        super().__init__()
        self.args, self.return_indices = args, return_indices
        self.forward_fn = ops.max_pool2d if ndim == 2 else ops.max_pool1d
        self.backward_fn = ops.max_pool2d_backward if ndim == 2 else ops.max_pool1d_backward
        self.flat_fn = ops.max_pool2d_flat_indices if ndim == 2 else ops.max_pool1d_flat_indices
        if return_indices:
            self.non_differentiable = (1,)

    def forward(self, x):
        y, idx = self.forward_fn(x, return_indices=True, **self.args)
        if self.recording:
            self.saved = (idx, tuple(x.shape))
        if self.return_indices:
            return y, self.flat_fn(idx, tuple(x.shape), **self.args)
        return y

    def backward(self, g, *_):
        idx, x_shape = self.saved
        return self.backward_fn(g, idx, x_shape, **self.args)


class ShapeOnlyNode(Function):
    """A linear op whose backward needs only the input's shape (average pooling, resampling)."""

    def __init__(self, forward_fn, backward_fn, **args):
        super().__init__()
        self.forward_fn, self.backward_fn, self.args = forward_fn, backward_fn, args

    def forward(self, x):
        self.x_shape = tuple(x.shape)
        return self.forward_fn(x, **self.args)

    def backward(self, g):
        return self.backward_fn(g, self.x_shape, **self.args)


def _pool(node, input, ndim, where):
    layout = "(N, C, H, W)" if ndim == 2 else "(N, C, L)"
    x, lifted = _batched(input, ndim + 2, where, layout)
    return _unbatched(node(x), lifted)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows of ``(N, C, H, W)`` or ``(C, H, W)``; ``stride`` defaults to
    ``kernel_size``. ``return_indices``: also PyTorch's flat indices (int64), as
    :func:`max_unpool2d` takes them."""
    return _pool(MaxPoolNode(2, return_indices, kernel_size=kernel_size, stride=stride, padding=padding,
                             dilation=dilation, ceil_mode=ceil_mode), input, 2, "max_pool2d")


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows of ``(N, C, L)`` or ``(C, L)``; ``return_indices`` as :func:`max_pool2d`."""
    return _pool(MaxPoolNode(1, return_indices, kernel_size=kernel_size, stride=stride, padding=padding,
                             dilation=dilation, ceil_mode=ceil_mode), input, 1, "max_pool1d")


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over sliding windows of ``(N, C, H, W)`` or ``(C, H, W)``, PyTorch's divisor rules."""
    return _pool(ShapeOnlyNode(ops.avg_pool2d, ops.avg_pool2d_backward, kernel_size=kernel_size, stride=stride,
                               padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                               divisor_override=divisor_override), input, 2, "avg_pool2d")


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over sliding windows of ``(N, C, L)`` or ``(C, L)``."""
    return _pool(ShapeOnlyNode(ops.avg_pool1d, ops.avg_pool1d_backward, kernel_size=kernel_size, stride=stride,
                               padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad),
                 input, 1, "avg_pool1d")


def adaptive_avg_pool2d(input, output_size):
    """Average pooling of ``(N, C, H, W)`` or ``(C, H, W)`` to ``output_size`` (PyTorch's bins)."""
    return _pool(ShapeOnlyNode(ops.adaptive_avg_pool2d, ops.adaptive_avg_pool2d_backward, output_size=output_size),
                 input, 2, "adaptive_avg_pool2d")


def adaptive_avg_pool1d(input, output_size):
    """Average pooling of ``(N, C, L)`` or ``(C, L)`` to length ``output_size``."""
    return _pool(ShapeOnlyNode(ops.adaptive_avg_pool1d, ops.adaptive_avg_pool1d_backward, output_size=output_size),
                 input, 1, "adaptive_avg_pool1d")


def global_avg_pool2d(input):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``."""
    return ShapeOnlyNode(ops.global_avg_pool2d, ops.global_avg_pool2d_backward)(input)


class UnpoolNode(Function):
    """Max-unpooling of ``(x, indices)``: the gradient flows to ``x`` only."""

    def __init__(self, ndim, **args):
        super().__init__()
        self.args = args
        self.forward_fn = ops.max_unpool2d if ndim == 2 else ops.max_unpool1d
        self.backward_fn = ops.max_unpool2d_backward if ndim == 2 else ops.max_unpool1d_backward

    def forward(self, x, indices):
        if self.recording:
            self.saved = indices
        return self.forward_fn(x, indices, **self.args)

    def backward(self, g):
        return self.backward_fn(g, self.saved), None


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The partial inverse of :func:`max_pool2d`: each value of ``(N, C, H, W)`` (or
    ``(C, H, W)``) goes to its flat index in a zero output (PyTorch's ``max_unpool2d``)."""
    return UnpoolNode(2, kernel_size=kernel_size, stride=stride, padding=padding,
                      output_size=output_size)(input, as_array(indices))


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """1-D :func:`max_unpool2d` of ``(N, C, L)`` or ``(C, L)``."""
    return UnpoolNode(1, kernel_size=kernel_size, stride=stride, padding=padding,
                      output_size=output_size)(input, as_array(indices))


# --------------------------------------------------------------------------- normalisation and dropout
def _channel_axes(ndim):
    return (0,) + tuple(range(2, ndim))


class BatchNormNode(Function):
    def __init__(self, running_mean, running_var, training, momentum, eps):
        super().__init__()
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, weight=None, bias=None):
        y, mean, invstd = ops.batch_norm(x, self.running_mean, self.running_var, weight, bias,
                                         training=self.training, momentum=self.momentum, eps=self.eps,
                                         return_stats=True)
        self.running_mean = self.running_var = None  # updated in place already; not kept alive by the graph
        if self.recording:
            self.saved = (x, mean, invstd, weight)
        return y

    def backward(self, g):
        x, mean, invstd, weight = self.saved
        needs = self.needs_input_grad
        dx, dw, db = ops.batch_norm_backward(g, x, mean, invstd, weight, training=self.training,
                                             need_input_grad=needs[0])
        if len(needs) > 2 and needs[2] and db is None:  # a bias without a weight
            db = _xp(g).sum(g, axis=_channel_axes(g.ndim))
        grads = (dx, dw if len(needs) > 1 and needs[1] else None, db if len(needs) > 2 and needs[2] else None)
        return grads[:len(needs)]


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Batch normalisation of ``(N, C, *)`` per channel, as ``torch.nn.functional.batch_norm``.

    ``training``: normalise with the batch statistics and update
    ``running_mean``/``running_var`` (arrays, changed in place) with
    ``momentum``; otherwise normalise with the running statistics.
    """
    running_mean, running_var = as_array(running_mean), as_array(running_var)
    node = BatchNormNode(running_mean, running_var, training, momentum, eps)
    return _call(node, input, weight, bias)


class _AffineNormNode(Function):
    """Layer or group normalisation: ``forward(x, weight, bias)`` through an
    ``engine.ops`` pair that returns and takes the statistics."""

    def __init__(self, forward_fn, backward_fn, arg, eps):
        super().__init__()
        self.forward_fn, self.backward_fn, self.arg, self.eps = forward_fn, backward_fn, arg, eps

    def forward(self, x, weight=None, bias=None):
        y, mean, rstd = self.forward_fn(x, self.arg, weight, bias, self.eps, return_stats=True)
        if self.recording:
            self.saved = (x, mean, rstd, weight)
        return y

    def backward(self, g):
        x, mean, rstd, weight = self.saved
        needs = self.needs_input_grad
        dx, dw, db = self.backward_fn(g, x, self.arg, mean, rstd, weight, need_input_grad=needs[0])
        return tuple(d if need else None for d, need in zip((dx, dw, db), needs))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise each sample over its last ``len(normalized_shape)`` axes (biased
    variance), then scale by ``weight`` and shift by ``bias`` (``normalized_shape``)."""
    return _call(_AffineNormNode(ops.layer_norm, ops.layer_norm_backward, normalized_shape, eps),
                 input, weight, bias)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each sample of ``(N, C, *)`` over groups of ``C / num_groups``
    channels, then scale and shift per channel (``weight``/``bias`` ``(C,)``)."""
    return _call(_AffineNormNode(ops.group_norm, ops.group_norm_backward, num_groups, eps), input, weight, bias)


class DropoutNode(Function):
    """Element or channel dropout: ``forward_fn(x, p, training, rng)`` returns
    ``(y, mask)`` and the backward is ``g * mask`` (the mask broadcasts)."""

    def __init__(self, p, training, rng, forward_fn=ops.dropout):
        super().__init__()
        self.p, self.training, self.rng, self.forward_fn = p, training, rng, forward_fn

    def forward(self, x):
        y, mask = self.forward_fn(x, self.p, self.training, self.rng)
        if self.recording:
            self.saved = mask
        return y

    def backward(self, g):
        return g if self.saved is None else g * self.saved


def dropout(input, p=0.5, training=True, inplace=False, *, rng=None):
    """Zero elements with probability ``p`` and scale the rest by ``1/(1-p)``
    when ``training``; the identity otherwise. ``rng``: a NumPy generator
    (default: the engine's, seeded by ``engine.manual_seed``)."""
    return DropoutNode(p, training, rng if rng is not None else host_rng())(input)


def dropout1d(input, p=0.5, training=True, inplace=False, *, rng=None):
    """Zero whole channels of ``(N, C, L)`` or ``(C, L)`` with probability ``p``."""
    return DropoutNode(p, training, rng if rng is not None else host_rng(), ops.dropout1d)(input)


def dropout2d(input, p=0.5, training=True, inplace=False, *, rng=None):
    """Zero whole channels of ``(N, C, H, W)`` with probability ``p`` (PyTorch's
    readings of 3-D and 2-D inputs: ``(N, C, L)`` and ``(N, C)``)."""
    return DropoutNode(p, training, rng if rng is not None else host_rng(), ops.dropout2d)(input)


def dropout3d(input, p=0.5, training=True, inplace=False, *, rng=None):
    """Zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)`` with probability ``p``."""
    return DropoutNode(p, training, rng if rng is not None else host_rng(), ops.dropout3d)(input)


# --------------------------------------------------------------------------- activations
class _ByOutput(Function):
    """An activation whose backward needs its output ``y``."""

    def __init__(self, forward_fn, backward_fn, **args):
        super().__init__()
        self.forward_fn, self.backward_fn, self.args = forward_fn, backward_fn, args

    def forward(self, x):
        y = self.forward_fn(x, **self.args)
        if self.recording:
            self.saved = y
        return y

    def backward(self, g):
        return self.backward_fn(g, self.saved, **self.args)


class _ByInput(_ByOutput):
    """An activation whose backward needs its input ``x``."""

    def forward(self, x):
        if self.recording:
            self.saved = x
        return self.forward_fn(x, **self.args)


def relu(input, inplace=False):
    """``max(x, 0)``."""
    return _ByOutput(ops.relu, ops.relu_backward)(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    return _ByInput(ops.leaky_relu, ops.leaky_relu_backward, negative_slope=negative_slope)(input)


def gelu(input, approximate="none"):
    """GELU ``x * Phi(x)`` (``approximate="none"``) or its tanh form (``"tanh"``)."""
    return _ByInput(ops.gelu, ops.gelu_backward, approximate=approximate)(input)


def silu(input, inplace=False):
    """SiLU (swish): ``x * sigmoid(x)``."""
    return _ByInput(ops.silu, ops.silu_backward)(input)


def hardswish(input, inplace=False):
    """``x * relu6(x + 3) / 6``."""
    return _ByInput(ops.hardswish, ops.hardswish_backward)(input)


def hardsigmoid(input, inplace=False):
    """``relu6(x + 3) / 6``."""
    return _ByInput(ops.hardsigmoid, ops.hardsigmoid_backward)(input)


def sigmoid(input):
    """The logistic function."""
    return _ByOutput(ops.sigmoid, ops.sigmoid_backward)(input)


def tanh(input):
    """Hyperbolic tangent."""
    return _ByOutput(ops.tanh, ops.tanh_backward)(input)


def _softmax_input(input, dim, dtype, where):
    """``(input cast to dtype, axis)``; ``dim=None`` is PyTorch's implicit choice."""
    if dtype is not None:
        input = cast(input, dtype_name(dtype, where))
    axis = ops.implicit_softmax_axis(_ndim(input, where)) if dim is None else dim
    return input, axis


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``exp(x) / sum(exp(x))`` along ``dim`` (``None``: PyTorch's implicit choice,
    0 for 0-, 1- and 3-D inputs, else 1); ``dtype`` casts the input first."""
    x, axis = _softmax_input(input, dim, dtype, "softmax")
    return _ByOutput(ops.softmax, ops.softmax_backward, axis=axis)(x)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``log(softmax(x))`` along ``dim``, computed stably; ``dtype`` as :func:`softmax`."""
    x, axis = _softmax_input(input, dim, dtype, "log_softmax")
    return _ByOutput(ops.log_softmax, ops.log_softmax_backward, axis=axis)(x)


# --------------------------------------------------------------------------- resampling and padding
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resample the spatial axes of ``(N, C, ...)``, as ``torch.nn.functional.interpolate``:
    ``mode`` ``"nearest"``, ``"nearest-exact"``, ``"linear"``, ``"bilinear"``,
    ``"bicubic"``, ``"trilinear"`` or ``"area"``; ``size`` or ``scale_factor``."""
    return ShapeOnlyNode(ops.interpolate, ops.interpolate_backward, size=size, scale_factor=scale_factor, mode=mode,
                         align_corners=align_corners, recompute_scale_factor=recompute_scale_factor,
                         antialias=antialias)(input)


class PadNode(Function):
    def __init__(self, pad, mode, value):
        super().__init__()
        self.pad, self.mode, self.value = pad, mode, value

    def forward(self, x):
        self.x_shape = tuple(x.shape)
        return ops.pad(x, self.pad, self.mode, self.value)

    def backward(self, g):
        return ops.pad_backward(g, self.x_shape, self.pad, self.mode)


def pad(input, pad, mode="constant", value=None):
    """Pad the trailing axes, ``pad = (left, right, top, bottom, ...)`` from the last
    axis back; ``mode`` ``"constant"`` (``value``, default 0; negative entries crop),
    ``"reflect"``, ``"replicate"`` or ``"circular"``."""
    return PadNode(tuple(pad), mode, value)(input)


# --------------------------------------------------------------------------- losses
class LossNode(Function):
    """A loss of ``(input, target)``. The gradient flows to the input, and to a
    target that requires one where PyTorch defines it (``target_grad``: the
    array backward then takes ``need_target_grad=True``)."""

    def __init__(self, forward_fn, backward_fn, target_grad=False, **args):
        super().__init__()
        self.forward_fn, self.backward_fn, self.target_grad, self.args = forward_fn, backward_fn, target_grad, args

    def forward(self, input, target):
        if self.recording:
            self.saved = (input, target)
        return self.forward_fn(input, target, **self.args)

    def backward(self, g):
        input, target = self.saved
        need_input, need_target = self.needs_input_grad
        if not need_target:
            return self.backward_fn(input, target, grad_out=g, **self.args), None
        if not self.target_grad:
            raise RuntimeError(f"{self.forward_fn.__name__}: the derivative for 'target' is not implemented "
                               "(as in PyTorch); detach the target")
        d_input, d_target = self.backward_fn(input, target, grad_out=g, need_target_grad=True, **self.args)
        return (d_input if need_input else None), d_target


def _reduction(size_average, reduce, reduction):
    if size_average is None and reduce is None:
        return reduction
    # PyTorch's deprecated arguments: reduce=False -> 'none', size_average=False -> 'sum'
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def _loss(forward_fn, backward_fn, input, target, target_grad, **args):
    return LossNode(forward_fn, backward_fn, target_grad, **args)(input, target)


def _is_float(a) -> bool:
    return "float" in str(as_array(a).dtype)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``(N, C)``, ``(N, C, d1, ...)`` or unbatched ``(C,)``
    against class indices (``(N,)``, ``(N, d1, ...)``, 0-d) or class probabilities
    (the logits' shape); ``weight`` ``(C,)`` per class, ``ignore_index``,
    ``label_smoothing``, as ``torch.nn.functional.cross_entropy``. Probability
    targets that require a gradient get one."""
    return _loss(ops.cross_entropy, ops.cross_entropy_backward, input, target, _is_float(target),
                 reduction=_reduction(size_average, reduce, reduction), label_smoothing=label_smoothing,
                 weight=as_array(weight), ignore_index=ignore_index)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log-likelihood of class indices given log-probabilities (shapes as
    :func:`cross_entropy`'s class-index form)."""
    return _loss(ops.nll_loss, ops.nll_loss_backward, input, target, False, weight=as_array(weight),
                 ignore_index=ignore_index, reduction=_reduction(size_average, reduce, reduction))


def _broadcast_pair(input, target, where):
    """``input`` and ``target`` expanded to one shape, as PyTorch's element-wise losses do."""
    a, b = tuple(as_array(input).shape), tuple(as_array(target).shape)
    if a == b:
        return input, target
    try:
        shape = broadcast_shapes(a, b)
    except ValueError:
        raise ValueError(f"{where}: input shape {a} and target shape {b} do not broadcast to one shape") from None
    return (input if a == shape else expand(input, shape)), (target if b == shape else expand(target, shape))


def _weighted(loss_fn, input, target, weight, reduction, mean_by_weight, **args):
    """PyTorch 2.13's ``weight=`` of ``mse_loss``, ``l1_loss`` and ``huber_loss``:
    the unreduced loss times ``weight`` (the input's shape), then summed, or
    divided by ``sum(weight)`` (``mean_by_weight``) or by the count for ``mean``."""
    if tuple(as_array(weight).shape) != tuple(as_array(input).shape):
        raise ValueError(f"{loss_fn.__name__}: weight must have the input's shape {tuple(as_array(input).shape)}, "
                         f"got {tuple(as_array(weight).shape)}")
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    losses = loss_fn(input, target, reduction="none", **args) * weight
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / weight.sum() if mean_by_weight else losses.mean()


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean (or sum, or each) of the squared differences; ``weight`` as PyTorch 2.13."""
    reduction = _reduction(size_average, reduce, reduction)
    if weight is not None:
        return _weighted(mse_loss, input, target, weight, reduction, True)
    input, target = _broadcast_pair(input, target, "mse_loss")
    return _loss(ops.mse_loss, ops.mse_loss_backward, input, target, True, reduction=reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean (or sum, or each) of the absolute differences; ``weight`` as PyTorch 2.13."""
    reduction = _reduction(size_average, reduce, reduction)
    if weight is not None:
        return _weighted(l1_loss, input, target, weight, reduction, True)
    input, target = _broadcast_pair(input, target, "l1_loss")
    return _loss(ops.l1_loss, ops.l1_loss_backward, input, target, True, reduction=reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """Smooth L1 (quadratic inside ``beta``, linear outside)."""
    input, target = _broadcast_pair(input, target, "smooth_l1_loss")
    return _loss(ops.smooth_l1_loss, ops.smooth_l1_loss_backward, input, target, True,
                 reduction=_reduction(size_average, reduce, reduction), beta=beta)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """Huber loss (quadratic inside ``delta``, ``delta``-linear outside); ``weight`` as PyTorch 2.13."""
    if weight is not None:
        return _weighted(huber_loss, input, target, weight, reduction, False, delta=delta)
    input, target = _broadcast_pair(input, target, "huber_loss")
    return _loss(ops.huber_loss, ops.huber_loss_backward, input, target, True, reduction=reduction, delta=delta)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """KL divergence with ``input`` holding log-probabilities; ``reduction``
    ``"batchmean"`` is the mathematical one (PyTorch's ``"mean"`` divides by every element)."""
    input, target = _broadcast_pair(input, target, "kl_div")
    return _loss(ops.kl_div, ops.kl_div_backward, input, target, True,
                 reduction=_reduction(size_average, reduce, reduction), log_target=log_target)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """Binary cross-entropy of probabilities (logs clamped at -100, as PyTorch);
    ``weight`` broadcasts to the input."""
    return _loss(ops.binary_cross_entropy, ops.binary_cross_entropy_backward, input, target, True,
                 weight=as_array(weight), reduction=_reduction(size_average, reduce, reduction))


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    """Binary cross-entropy of ``sigmoid(input)``, computed stably from the logits;
    ``pos_weight`` weighs the positive term of each class (broadcast along the last axis)."""
    return _loss(ops.binary_cross_entropy_with_logits, ops.binary_cross_entropy_with_logits_backward, input,
                 target, True, weight=as_array(weight), reduction=_reduction(size_average, reduce, reduction),
                 pos_weight=as_array(pos_weight))
