"""``engine.ops``: the array-level forward/backward pairs of every layer, written once
against the array API (plain backend arrays in and out, no tape). The differentiable
functions on Tensors that users call, as ``torch.nn.functional``, are
``engine.nn.functional``; they record nodes that call these pairs.

Each forward takes arrays of one backend and gets that backend (and its
namespace ``xp``) once per call; the backend supplies what the standard lacks
(padding, im2col/col2im, pooling windows). Backward functions take the
upstream gradient and whatever the forward needs to recompute, and return
gradients in the order of the forward's array arguments.

Shapes: images ``(N, C, H, W)``, conv weights ``(O, C/groups, kh, kw)``,
linear weights ``(out_features, in_features)`` as in PyTorch.
"""
from ._common import conv_output_size
from .activations import (dropout, dropout1d, dropout2d, dropout3d, feature_dropout, gelu, gelu_backward,
                          hardsigmoid, hardsigmoid_backward, hardswish, hardswish_backward, implicit_softmax_axis,
                          silu, silu_backward,
                          leaky_relu, leaky_relu_backward, linear, linear_backward, log_softmax,
                          log_softmax_backward, relu, relu_backward, sigmoid, sigmoid_backward, softmax,
                          softmax_backward, tanh, tanh_backward)
from .conv import CONV_METHODS, conv2d, conv2d_backward
from .losses import (binary_cross_entropy, binary_cross_entropy_backward, binary_cross_entropy_with_logits,
                     binary_cross_entropy_with_logits_backward, cross_entropy, cross_entropy_backward, huber_loss,
                     huber_loss_backward, kl_div, kl_div_backward, l1_loss, l1_loss_backward, mse_loss,
                     mse_loss_backward, nll_loss, nll_loss_backward, smooth_l1_loss, smooth_l1_loss_backward)
from .pooling import (avg_pool2d, avg_pool2d_backward, global_avg_pool2d, global_avg_pool2d_backward,
                      max_pool2d, max_pool2d_backward, max_pool2d_flat_indices, max_pool2d_window_indices)

__all__ = [
    "conv_output_size", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "global_avg_pool2d", "global_avg_pool2d_backward",
    "linear", "linear_backward", "relu", "relu_backward", "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "softmax", "softmax_backward",
    "log_softmax", "log_softmax_backward", "dropout", "cross_entropy", "cross_entropy_backward",
    "mse_loss", "mse_loss_backward", "CONV_METHODS",
    "nll_loss", "nll_loss_backward", "binary_cross_entropy", "binary_cross_entropy_backward",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward", "l1_loss", "l1_loss_backward",
    "smooth_l1_loss", "smooth_l1_loss_backward", "huber_loss", "huber_loss_backward", "kl_div", "kl_div_backward",
    "gelu", "gelu_backward", "silu", "silu_backward", "hardsigmoid", "hardsigmoid_backward", "hardswish",
    "hardswish_backward", "feature_dropout", "dropout1d", "dropout2d", "dropout3d", "implicit_softmax_axis",
]
from .adaptive import (adaptive_avg_pool1d, adaptive_avg_pool1d_backward, adaptive_avg_pool2d,  # noqa: E402
                       adaptive_avg_pool2d_backward)
from .conv_transpose import conv_transpose2d, conv_transpose2d_backward, conv_transpose_output_size  # noqa: E402
from .interpolate import (INTERPOLATE_MODES, interpolate, interpolate_backward,  # noqa: E402
                          interpolate_output_size)
from .padding import PAD_MODES, pad, pad_backward, padded_shape  # noqa: E402
from .normalization import (batch_norm, batch_norm_backward, group_norm, group_norm_backward,  # noqa: E402
                            layer_norm, layer_norm_backward)
from .ops1d import (avg_pool1d, avg_pool1d_backward, conv1d, conv1d_backward, conv_transpose1d,  # noqa: E402
                    conv_transpose1d_backward, max_pool1d, max_pool1d_backward, max_pool1d_flat_indices)
from .unpool import max_unpool1d, max_unpool1d_backward, max_unpool2d, max_unpool2d_backward  # noqa: E402

__all__ += [
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose_output_size", "conv_transpose1d",
    "conv_transpose1d_backward", "conv1d", "conv1d_backward", "max_pool1d", "max_pool1d_backward",
    "avg_pool1d", "avg_pool1d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool1d", "adaptive_avg_pool1d_backward", "batch_norm", "batch_norm_backward",
    "layer_norm", "layer_norm_backward", "group_norm", "group_norm_backward",
    "PAD_MODES", "pad", "pad_backward", "padded_shape",
    "INTERPOLATE_MODES", "interpolate", "interpolate_backward", "interpolate_output_size",
    "max_pool2d_flat_indices", "max_pool2d_window_indices", "max_pool1d_flat_indices",
    "max_unpool2d", "max_unpool2d_backward", "max_unpool1d", "max_unpool1d_backward",
]
