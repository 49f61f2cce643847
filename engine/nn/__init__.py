"""Layers, containers and losses with PyTorch's names (``engine.nn.Conv2d`` …);
``engine.nn.functional`` holds the differentiable functions they call."""
from . import functional, init, utils
from .layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Identity, LeakyReLU, Linear,
                     LogSoftmax, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh)
from .losses import CrossEntropyLoss, MSELoss
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Conv2d", "MaxPool2d", "AvgPool2d",
           "GlobalAvgPool2d", "Linear", "Flatten", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax",
           "LogSoftmax", "Dropout", "CrossEntropyLoss", "MSELoss", "functional", "init", "utils"]
from .conv_extra import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, Conv1d, ConvTranspose1d,  # noqa: E402
                         ConvTranspose2d, MaxPool1d)
from .normalization import BatchNorm1d, BatchNorm2d  # noqa: E402
from .residual import BasicBlock, Residual  # noqa: E402

__all__ += ["ConvTranspose2d", "ConvTranspose1d", "Conv1d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool2d",
            "AdaptiveAvgPool1d", "BatchNorm1d", "BatchNorm2d", "Residual", "BasicBlock"]
