"""Layers, containers and losses with PyTorch's names (``engine.nn.Conv2d`` …);
``engine.nn.functional`` holds the differentiable functions they call."""
from . import functional, init, utils
from .conv_extra import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, Conv1d, ConvTranspose1d,
                         ConvTranspose2d, MaxPool1d, MaxUnpool1d, MaxUnpool2d)
from .layers import (GELU, AvgPool2d, Conv2d, Dropout, Dropout1d, Dropout2d, Dropout3d, Flatten, GlobalAvgPool2d,
                     Hardsigmoid, Hardswish, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d, ReLU, Sigmoid, SiLU,
                     Softmax, Tanh)
from .losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                     SmoothL1Loss)
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from .residual import BasicBlock, Residual
from .sampling import (CircularPad1d, CircularPad2d, ConstantPad1d, ConstantPad2d, ReflectionPad1d, ReflectionPad2d,
                       ReplicationPad1d, ReplicationPad2d, Upsample, UpsamplingBilinear2d, UpsamplingNearest2d,
                       ZeroPad1d, ZeroPad2d)

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
    # convolution, pooling, linear
    "Conv2d", "Conv1d", "ConvTranspose2d", "ConvTranspose1d", "Linear", "MaxPool2d", "MaxPool1d", "AvgPool2d",
    "AvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool1d", "GlobalAvgPool2d", "MaxUnpool2d", "MaxUnpool1d",
    # normalisation, dropout
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
    # activations, shapes
    "ReLU", "LeakyReLU", "GELU", "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
    "Flatten", "Identity",
    # padding, resampling
    "ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d", "ReflectionPad2d",
    "ReplicationPad1d", "ReplicationPad2d", "CircularPad1d", "CircularPad2d", "Upsample", "UpsamplingNearest2d",
    "UpsamplingBilinear2d",
    # losses
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss", "BCELoss",
    "BCEWithLogitsLoss",
    # blocks and submodules
    "Residual", "BasicBlock", "functional", "init", "utils",
]

from ..distributed.batchnorm import SyncBatchNorm  # noqa: E402  (data-parallel; code in engine/distributed/)

__all__ += ["SyncBatchNorm"]
