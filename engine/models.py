"""A small model zoo: each function returns a fresh :class:`engine.nn.Sequential`.

    import engine
    engine.manual_seed(0)
    model = engine.models.get_model("simple_cnn")   # or engine.models.simple_cnn()

``simple_cnn``, ``lenet5`` and ``course_cnn`` take ``(N, 1, 28, 28)`` images
(MNIST, Fashion-MNIST); ``resnet20`` and ``vgg11_bn`` take ``(N, 3, 32, 32)``
(CIFAR; ``in_channels`` changes the first layer). Every model returns
``(N, num_classes)`` logits; state_dict keys (``"0.weight"``,
``"3.conv1.weight"`` …) match the same ``torch.nn.Sequential`` (with
torchvision's ``BasicBlock`` names), so weights move over as they are. The
models only compose the layers of :mod:`engine.nn`.

``init``: ``"torch"`` (default) draws the weights as PyTorch's ``Conv2d`` and
``Linear`` do by default — uniform in ``±1/sqrt(fan_in)`` (Kaiming uniform
with ``a=sqrt(5)``) for weights and biases — so a model here and its
``torch.nn`` twin start from the same distribution; any name of
``engine.nn.init.WEIGHT_INITS`` (``"kaiming_normal"``, ``"xavier_uniform"`` …)
uses that scheme with zero biases instead. All draws come from the engine
generator (``engine.manual_seed``).
"""
from __future__ import annotations

import math

from . import nn
from .nn import init as _init

__all__ = ["MODELS", "course_cnn", "get_model", "initialize", "lenet5", "model_names", "resnet20", "simple_cnn",
           "vgg11_bn"]


def simple_cnn(num_classes: int = 10, in_channels: int = 1, dropout: float = 0.25,
               dtype: str = "float32", init: str = "torch") -> nn.Sequential:
    """Two 3x3 conv blocks and a two-layer classifier: 421,642 parameters (1x28x28, 10 classes).

    conv 1→32 k3 p1, ReLU, max-pool 2, conv 32→64 k3 p1, ReLU, max-pool 2,
    flatten, linear 3136→128, ReLU, dropout 0.25, linear 128→10.
    Parameters: 320 + 18,496 + 401,536 + 1,290 = 421,642, as ``torch.nn`` counts
    the same network (a figure of 421,066 seen elsewhere is a miscount).
    """
    return _finish(nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128, dtype=dtype),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(128, num_classes, dtype=dtype),
    ), "simple_cnn", init)


def lenet5(num_classes: int = 10, in_channels: int = 1, dtype: str = "float32",
           init: str = "torch") -> nn.Sequential:
    """LeNet-5 (LeCun et al., 1998) for 28x28 inputs, in its common modern form.

    conv 1→6 k5 p2 (keeps 28x28, as the original's 32x32 input), tanh, avg-pool 2,
    conv 6→16 k5, tanh, avg-pool 2, flatten, linear 400→120, tanh, linear 120→84,
    tanh, linear 84→10: 61,706 parameters. ``init="xavier_uniform"`` is the
    classic choice for tanh networks.
    """
    return _finish(nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, dtype=dtype),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, dtype=dtype),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, dtype=dtype),
        nn.Tanh(),
        nn.Linear(120, 84, dtype=dtype),
        nn.Tanh(),
        nn.Linear(84, num_classes, dtype=dtype),
    ), "lenet5", init)


def course_cnn(num_classes: int = 10, in_channels: int = 1, negative_slope: float = 0.01,
               dtype: str = "float32", init: str = "torch") -> nn.Sequential:
    """The three-conv network of the NumPy course: strided convolutions, no pooling.

    conv k5 1→8 s2 p2 (28→14), conv k5 8→16 s2 p2 (14→7), conv k5 16→32 s2 p0
    (7→2), each followed by LeakyReLU(0.01), flatten (32·2·2 = 128), linear
    128→64, LeakyReLU(0.01), linear 64→10: 25,258 parameters.
    """
    act = lambda: nn.LeakyReLU(negative_slope)
    return _finish(nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, stride=2, padding=2, dtype=dtype),
        act(),
        nn.Conv2d(8, 16, 5, stride=2, padding=2, dtype=dtype),
        act(),
        nn.Conv2d(16, 32, 5, stride=2, padding=0, dtype=dtype),
        act(),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64, dtype=dtype),
        act(),
        nn.Linear(64, num_classes, dtype=dtype),
    ), "course_cnn", init)


def resnet20(num_classes: int = 10, in_channels: int = 3, width: int = 16, dtype: str = "float32",
             init: str = "torch") -> nn.Sequential:
    """The CIFAR ResNet-20 of He et al. (2016, section 4.2), for 32x32 inputs: 272,474 parameters
    with ``width=16`` (10 classes). The paper's 0.27M counts its parameter-free "option A"
    shortcuts (269,722); here the two downsampling shortcuts are 1x1 convolutions (2,752 more).

    conv 3x3 3→16 (no bias), batch norm, ReLU; three stages of three
    :class:`engine.nn.BasicBlock` (16, 32, 64 channels; the second and third
    stages start with stride 2 and a projection shortcut: 1x1 conv + batch
    norm, the paper's option B); global average pooling, flatten, linear
    64→10. ``width`` scales the channels (``16·width/16``, ``32·…``, ``64·…``).
    Layer indices: 0-2 stem, 3-11 blocks, 12 pooling, 13 flatten, 14 linear.
    """
    widths = (width, 2 * width, 4 * width)
    layers = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False, dtype=dtype),
              nn.BatchNorm2d(width, dtype=dtype), nn.ReLU()]
    channels = width
    for stage, out in enumerate(widths):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(nn.BasicBlock(channels, out, stride, dtype=dtype))
            channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes, dtype=dtype)]
    return _finish(nn.Sequential(*layers), "resnet20", init)


#: VGG-11's convolution widths ("M": 2x2 max pooling), configuration "A" of Simonyan & Zisserman.
VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11_bn(num_classes: int = 10, in_channels: int = 3, width: int = 64, dtype: str = "float32",
             init: str = "torch") -> nn.Sequential:
    """VGG-11 with batch norm for 32x32 inputs (the usual CIFAR adaptation):
    9,231,114 parameters with ``width=64`` (10 classes).

    Eight 3x3 convolutions (padding 1) each followed by batch norm and ReLU,
    five 2x2 max-poolings (32→1), flatten, linear 512→10. ``width`` scales
    every convolution (``width=16`` gives a 0.58M-parameter model for quick
    runs). Inputs must be at least 32x32 (five halvings).
    """
    layers, channels = [], in_channels
    for item in VGG11_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        out = item * width // 64
        layers += [nn.Conv2d(channels, out, 3, padding=1, dtype=dtype), nn.BatchNorm2d(out, dtype=dtype), nn.ReLU()]
        channels = out
    layers += [nn.Flatten(), nn.Linear(channels, num_classes, dtype=dtype)]
    return _finish(nn.Sequential(*layers), "vgg11_bn", init)


#: Model builders by name (``get_model`` also accepts dashes: ``"simple-cnn"``).
MODELS = {
    "simple_cnn": simple_cnn,
    "lenet5": lenet5,
    "course_cnn": course_cnn,
    "resnet20": resnet20,
    "vgg11_bn": vgg11_bn,
}
#: The input ``(C, H, W)`` each model is built for (``in_channels`` changes C).
INPUT_SHAPES = {"simple_cnn": (1, 28, 28), "lenet5": (1, 28, 28), "course_cnn": (1, 28, 28),
                "resnet20": (3, 32, 32), "vgg11_bn": (3, 32, 32)}


def model_names() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return list(MODELS)


def get_model(name: str, **kwargs) -> nn.Sequential:
    """A new model by name (``"simple_cnn"``, ``"lenet5"``, ``"course_cnn"``, ``"resnet20"``, ``"vgg11_bn"``).

    Keyword arguments go to the builder (``num_classes``, ``in_channels``,
    ``dtype``, ``init``, …). Its weights are drawn from the engine generator, so
    :func:`engine.manual_seed` fixes them; they live on the active backend.
    """
    key = str(name).lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[key](**kwargs)


def _finish(model: nn.Sequential, name: str, init: str) -> nn.Sequential:
    initialize(model, init)
    object.__setattr__(model, "name", name)  # shown by summary(); not a parameter or module
    return model


def initialize(model: nn.Module, init: str = "torch") -> nn.Module:
    """(Re)draw the weights and biases of every ``Conv2d`` and ``Linear`` in ``model``.

    ``"torch"``: PyTorch's default (weights and biases uniform in
    ``±1/sqrt(fan_in)``); otherwise a name of ``engine.nn.init.WEIGHT_INITS``
    with zero biases. Returns ``model``.
    """
    if init not in _init.WEIGHT_INITS:
        raise ValueError(f"init must be one of {sorted(_init.WEIGHT_INITS)}, got {init!r}")
    for _, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _init.reset_parameters(m.weight, m.bias, init)
    return model
