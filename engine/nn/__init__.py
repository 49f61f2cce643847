"""Layers, containers and losses with PyTorch's names (``engine.nn.Conv2d`` …)."""
from . import init, utils
from .layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Identity, LeakyReLU, Linear,
                     LogSoftmax, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh)
from .losses import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "Linear", "Flatten", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
           "Dropout", "CrossEntropyLoss", "MSELoss", "init", "utils"]
