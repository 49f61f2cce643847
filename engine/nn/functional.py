"""``engine.nn.functional`` (import as ``F``): differentiable functions on Tensors,
with ``torch.nn.functional``'s names and arguments.

Each function records one node whose forward calls the array-level forward of
:mod:`engine.ops` and whose backward calls the matching array-level backward
(the explicit pairs learners read, and the C/CUDA fast paths, are the same
code either way). They accept Tensors or plain backend arrays and return
Tensors. Under :class:`engine.no_grad`, or when no input requires a gradient,
nothing is kept for a backward: no input, no im2col columns, no pooling
indices.
"""
from __future__ import annotations

from .. import ops
from .._state import host_rng
from ..autograd import Function
from ..autograd.basic import flatten
from ..autograd.tensor import as_array

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "linear", "max_pool1d", "max_pool2d",
           "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "global_avg_pool2d",
           "batch_norm", "dropout", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax",
           "cross_entropy", "mse_loss", "flatten"]


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


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, method="gemm"):
    """2-D convolution (cross-correlation) of ``(N, C, H, W)`` with weight
    ``(O, C/groups, kh, kw)``; ``padding`` an int, a pair, ``"valid"`` or ``"same"``.
    ``method``: ``"gemm"`` (im2col + GEMM, or the C kernels), ``"strided"``, ``"naive"``."""
    return _call(Conv2dNode(stride=stride, padding=padding, dilation=dilation, groups=groups, method=method),
                 input, weight, bias)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, method="gemm"):
    """1-D convolution of ``(N, C, L)`` with weight ``(O, C/groups, k)``."""
    return _call(Conv1dNode(stride=stride, padding=padding, dilation=dilation, groups=groups, method=method),
                 input, weight, bias)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution, weight ``(C_in, C_out/groups, kh, kw)``."""
    return _call(ConvTransposeNode(2, stride=stride, padding=padding, output_padding=output_padding,
                                   groups=groups, dilation=dilation), input, weight, bias)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 1-D convolution, weight ``(C_in, C_out/groups, k)``."""
    return _call(ConvTransposeNode(1, stride=stride, padding=padding, output_padding=output_padding,
                                   groups=groups, dilation=dilation), input, weight, bias)


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``: ``(..., in_features) -> (..., out_features)``."""
    return _call(LinearNode(), input, weight, bias)


# --------------------------------------------------------------------------- pooling
class MaxPoolNode(Function):
    def __init__(self, ndim, **args):
        super().__init__()
        self.args = args
        self.forward_fn = ops.max_pool2d if ndim == 2 else ops.max_pool1d
        self.backward_fn = ops.max_pool2d_backward if ndim == 2 else ops.max_pool1d_backward

    def forward(self, x):
        y, idx = self.forward_fn(x, return_indices=True, **self.args)
        if self.recording:
            self.saved = (idx, tuple(x.shape))
        return y

    def backward(self, g):
        idx, x_shape = self.saved
        return self.backward_fn(g, idx, x_shape, **self.args)


class ShapeOnlyNode(Function):
    """A linear op whose backward needs only the input's shape (average pooling)."""

    def __init__(self, forward_fn, backward_fn, **args):
        super().__init__()
        self.forward_fn, self.backward_fn, self.args = forward_fn, backward_fn, args

    def forward(self, x):
        self.x_shape = tuple(x.shape)
        return self.forward_fn(x, **self.args)

    def backward(self, g):
        return self.backward_fn(g, self.x_shape, **self.args)


def _no_indices(return_indices, where):
    if return_indices:
        raise ValueError(f"{where}: return_indices=True is not supported yet (the engine's pooling indices are "
                         "positions inside each window, not PyTorch's flat indices)")


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows of ``(N, C, H, W)``; ``stride`` defaults to ``kernel_size``."""
    _no_indices(return_indices, "max_pool2d")
    return MaxPoolNode(2, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                       ceil_mode=ceil_mode)(input)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over sliding windows of ``(N, C, L)``."""
    _no_indices(return_indices, "max_pool1d")
    return MaxPoolNode(1, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                       ceil_mode=ceil_mode)(input)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over sliding windows of ``(N, C, H, W)``, PyTorch's divisor rules."""
    return ShapeOnlyNode(ops.avg_pool2d, ops.avg_pool2d_backward, kernel_size=kernel_size, stride=stride,
                         padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                         divisor_override=divisor_override)(input)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over sliding windows of ``(N, C, L)``."""
    return ShapeOnlyNode(ops.avg_pool1d, ops.avg_pool1d_backward, kernel_size=kernel_size, stride=stride,
                         padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)(input)


def adaptive_avg_pool2d(input, output_size):
    """Average pooling of ``(N, C, H, W)`` to ``output_size`` (PyTorch's bins)."""
    return ShapeOnlyNode(ops.adaptive_avg_pool2d, ops.adaptive_avg_pool2d_backward, output_size=output_size)(input)


def adaptive_avg_pool1d(input, output_size):
    """Average pooling of ``(N, C, L)`` to ``(N, C, output_size)``."""
    return ShapeOnlyNode(ops.adaptive_avg_pool1d, ops.adaptive_avg_pool1d_backward, output_size=output_size)(input)


def global_avg_pool2d(input):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``."""
    return ShapeOnlyNode(ops.global_avg_pool2d, ops.global_avg_pool2d_backward)(input)


# --------------------------------------------------------------------------- normalisation and dropout
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
        dx, dw, db = ops.batch_norm_backward(g, x, mean, invstd, weight, training=self.training,
                                             need_input_grad=self.needs_input_grad[0])
        needs = self.needs_input_grad
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
    if weight is None and bias is not None:
        raise ValueError("batch_norm: a bias without a weight is not supported; pass weight=ones")
    return _call(node, input, weight, bias)


class DropoutNode(Function):
    def __init__(self, p, training, rng):
        super().__init__()
        self.p, self.training, self.rng = p, training, rng

    def forward(self, x):
        y, mask = ops.dropout(x, self.p, self.training, self.rng)
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


def sigmoid(input):
    """The logistic function."""
    return _ByOutput(ops.sigmoid, ops.sigmoid_backward)(input)


def tanh(input):
    """Hyperbolic tangent."""
    return _ByOutput(ops.tanh, ops.tanh_backward)(input)


def _softmax_dim(input, dim, where):
    if dim is None:
        ndim = as_array(input).ndim
        # PyTorch's legacy rule for an implicit dim (it warns): 0 for 0-, 1- and 3-D inputs, else 1
        return 0 if ndim in (0, 1, 3) else 1
    return dim


def softmax(input, dim=None):
    """``exp(x) / sum(exp(x))`` along ``dim``."""
    return _ByOutput(ops.softmax, ops.softmax_backward, axis=_softmax_dim(input, dim, "softmax"))(input)


def log_softmax(input, dim=None):
    """``log(softmax(x))`` along ``dim``, computed stably."""
    return _ByOutput(ops.log_softmax, ops.log_softmax_backward,
                     axis=_softmax_dim(input, dim, "log_softmax"))(input)


# --------------------------------------------------------------------------- losses
class LossNode(Function):
    """A loss of ``(input, target)``; the gradient flows to the input (and to a
    target that requires one, where the loss defines it)."""

    def __init__(self, forward_fn, backward_fn, target_grad=None, **args):
        super().__init__()
        self.forward_fn, self.backward_fn, self.target_grad, self.args = forward_fn, backward_fn, target_grad, args

    def forward(self, input, target):
        if self.recording:
            self.saved = (input, target)
        return self.forward_fn(input, target, **self.args)

    def backward(self, g):
        input, target = self.saved
        grad = self.backward_fn(input, target, grad_out=g, **self.args)
        grad_target = None
        if self.needs_input_grad[1]:
            if self.target_grad is None:
                raise RuntimeError(f"{self.forward_fn.__name__}: the gradient for the target is not defined")
            grad_target = self.target_grad(grad)
        return (grad if self.needs_input_grad[0] else None), grad_target


def _reduction(size_average, reduce, reduction):
    if size_average is None and reduce is None:
        return reduction
    # PyTorch's deprecated arguments: reduce=False -> 'none', size_average=False -> 'sum'
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits ``(N, K)`` against integer labels ``(N,)``."""
    if weight is not None or ignore_index != -100:
        raise ValueError("cross_entropy: weight= and ignore_index= are not supported yet")
    return LossNode(ops.cross_entropy, ops.cross_entropy_backward,
                    reduction=_reduction(size_average, reduce, reduction),
                    label_smoothing=label_smoothing)(input, target)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean (or sum) of squared differences of two tensors of one shape."""
    return LossNode(ops.mse_loss, ops.mse_loss_backward, target_grad=lambda g: -g,
                    reduction=_reduction(size_average, reduce, reduction))(input, target)
