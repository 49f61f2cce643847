"""Shape suites: which layers each ``--suite`` times, and with which ops.

Conv shapes are ``(N, C, H=W -> O, k, s, p)``; every shape carries the name of
the layer it comes from, so a row of the report says where it matters.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ConvShape:
    """One convolution layer: ``(N, C, H, W) -> O`` channels, kernel ``k`` (height;
    also the width unless ``kw`` is given), ``stride``, ``pad`` (rows; also columns
    unless ``pad_w`` is given), ``dilation`` and ``groups`` (``groups == C``:
    depthwise). After construction ``kw`` and ``pad_w`` are always ints."""

    name: str          # e.g. "core2 SimpleCNN.conv2"
    n: int
    c: int
    h: int
    w: int
    o: int
    k: int
    stride: int = 1
    pad: int = 0
    kw: int | None = None
    pad_w: int | None = None
    dilation: int = 1
    groups: int = 1

    def __post_init__(self):
        if self.kw is None:
            object.__setattr__(self, "kw", self.k)
        if self.pad_w is None:
            object.__setattr__(self, "pad_w", self.pad)
        if self.groups < 1 or self.c % self.groups or self.o % self.groups:
            raise ValueError(f"{self.name}: groups={self.groups} must divide C={self.c} and O={self.o}")

    @property
    def kh(self) -> int:
        return self.k

    @property
    def padding(self) -> tuple[int, int]:
        """``(rows, columns)`` of zero padding, as ``conv2d(padding=...)`` takes it."""
        return self.pad, self.pad_w

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.dilation * (self.k - 1) - 1) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad_w - self.dilation * (self.kw - 1) - 1) // self.stride + 1

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.c

    @property
    def label(self) -> str:
        """``64x32x14->64 k3 s1 p1``; non-square kernels/pads as ``k1x7 p0x3``, then
        ``d2`` (dilation), ``g2`` (groups) or ``dw`` (groups = C, depthwise)."""
        hw = f"{self.h}" if self.h == self.w else f"{self.h}x{self.w}"
        k = f"{self.k}" if self.k == self.kw else f"{self.k}x{self.kw}"
        p = f"{self.pad}" if self.pad == self.pad_w else f"{self.pad}x{self.pad_w}"
        out = f"{self.n}x{self.c}x{hw}->{self.o} k{k} s{self.stride} p{p}"
        if self.dilation != 1:
            out += f" d{self.dilation}"
        if self.depthwise:
            out += " dw"
        elif self.groups > 1:
            out += f" g{self.groups}"
        return out

    @property
    def gemm_mnk(self) -> tuple[int, int, int]:
        """``(M, N, K)`` of the forward GEMM of one group:
        ``W_g (O/g, C/g*kh*kw) @ col_g (C/g*kh*kw, N*OH*OW)``; ``groups`` of them."""
        return self.o // self.groups, self.n * self.oh * self.ow, (self.c // self.groups) * self.k * self.kw

    @property
    def flops(self) -> float:
        """Multiply-adds of one forward pass, counted as 2 FLOPs (all groups)."""
        m, n, k = self.gemm_mnk
        return 2.0 * self.groups * m * n * k

    def with_batch(self, n: int) -> ConvShape:
        return replace(self, n=n)


@dataclass(frozen=True)
class PoolShape:
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    stride: int
    pad: int = 0

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.k) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad - self.k) // self.stride + 1

    @property
    def label(self) -> str:
        return f"{self.n}x{self.c}x{self.h} k{self.k} s{self.stride} p{self.pad}"

    @property
    def flops(self) -> float:
        """Window elements read (one comparison each), the pooling 'op count'."""
        return float(self.n * self.c * self.oh * self.ow * self.k * self.k)


@dataclass(frozen=True)
class TrainShape:
    name: str   # the model, "SimpleCNN"
    n: int      # batch size

    @property
    def label(self) -> str:
        return f"{self.n}x1x28 -> 10 classes"

    @property
    def flops(self) -> float:
        """Forward (convs + linears), weight gradients, and input gradients of
        every layer but the first (the data needs none)."""
        conv1 = 2.0 * self.n * 32 * 28 * 28 * 1 * 9
        conv2 = 2.0 * self.n * 64 * 14 * 14 * 32 * 9
        fc1 = 2.0 * self.n * 3136 * 128
        fc2 = 2.0 * self.n * 128 * 10
        fwd = conv1 + conv2 + fc1 + fc2
        return fwd + fwd + (fwd - conv1)


# ----------------------------------------------------------------------------- shapes
#: The five shapes of the core issue, (N, C, H=W -> O, k, s, p).
CORE = [
    ConvShape("core1 SimpleCNN.conv1", 64, 1, 28, 28, 32, 3, 1, 1),
    ConvShape("core2 SimpleCNN.conv2", 64, 32, 14, 14, 64, 3, 1, 1),
    ConvShape("core3 CIFAR 64->128", 32, 64, 32, 32, 128, 3, 1, 1),
    ConvShape("core4 ResNet stem 7x7/2", 8, 3, 224, 224, 64, 7, 2, 3),
    ConvShape("core5 ResNet layer1 3x3", 128, 64, 56, 56, 64, 3, 1, 1),
]

#: LeNet-5 (LeCun et al. 1998): C1, C3 (full connection table), C5, batch 64.
LENET = [
    ConvShape("LeNet-5 C1", 64, 1, 32, 32, 6, 5, 1, 0),
    ConvShape("LeNet-5 C3", 64, 6, 14, 14, 16, 5, 1, 0),
    ConvShape("LeNet-5 C5", 64, 16, 5, 5, 120, 5, 1, 0),
]

#: The NumPy-course 3-conv net on 28x28 MNIST: k5, 1->8 s2 p2, 8->16 s2 p2, 16->32 s2 p0.
NUMPY_COURSE = [
    ConvShape("NumPy-course conv1", 64, 1, 28, 28, 8, 5, 2, 2),
    ConvShape("NumPy-course conv2", 64, 8, 14, 14, 16, 5, 2, 2),
    ConvShape("NumPy-course conv3", 64, 16, 7, 7, 32, 5, 2, 0),
]

#: SimpleCNN's two convs are core1 and core2; its pools:
SIMPLECNN_POOLS = [
    PoolShape("SimpleCNN.pool1", 64, 32, 28, 28, 2, 2),
    PoolShape("SimpleCNN.pool2", 64, 64, 14, 14, 2, 2),
]
LENET_POOLS = [PoolShape("LeNet-5 S2 (as max)", 64, 6, 28, 28, 2, 2)]
BIG_POOLS = [
    PoolShape("ResNet stem pool 3x3/2", 8, 64, 112, 112, 3, 2, 1),
    PoolShape("core5-sized pool 2x2", 128, 64, 56, 56, 2, 2),
]

SMOKE_CONV = [
    ConvShape("smoke conv 3x3", 2, 3, 8, 8, 4, 3, 1, 1),
    ConvShape("smoke conv 5x5/2", 2, 2, 9, 9, 3, 5, 2, 2),
]
SMOKE_POOL = [PoolShape("smoke pool", 2, 3, 8, 8, 2, 2)]

SCALING_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SCALING_SIZES = (8, 16, 32, 64, 96, 128)


def scaling_shapes() -> list[ConvShape]:
    """Batch grown step by step on SimpleCNN.conv2 (32->64, 14x14), then image
    size grown step by step on a 16->32 3x3 layer at batch 8."""
    out = [ConvShape(f"scaling batch={n}", n, 32, 14, 14, 64, 3, 1, 1) for n in SCALING_BATCHES]
    out += [ConvShape(f"scaling size={s}", 8, 16, s, s, 32, 3, 1, 1) for s in SCALING_SIZES]
    return out


def scaling_point(shape) -> tuple[str, int] | None:
    """``("batch", 16)`` for a scaling shape, else ``None``."""
    name = getattr(shape, "name", "")
    if name.startswith("scaling "):
        axis, value = name[len("scaling "):].split("=")
        return axis, int(value)
    return None


def _sq(name, n, c, hw, o, k, s=1, p=0, d=1, g=1, kw=None, pw=None) -> ConvShape:
    return ConvShape(name, n, c, hw, hw, o, k, s, p, kw=kw, pad_w=pw, dilation=d, groups=g)


#: The ``sweep`` suite: layers of real networks at batch 1, 8, 64 and 128, chosen so
#: that every value of every axis appears several times (see :func:`sweep_coverage`):
#: kernel 1, 3, 5, 7, 1x7, 7x1; stride 1, 2; dilation 1, 2; groups 1, 2, C;
#: channels 3..1024; spatial 7..224. Each is a layer of the named network
#: (ImageNet layers at 224x224 input unless the name says CIFAR/MNIST).
SWEEP = [
    # LeNet-5 / MNIST
    _sq("LeNet-5 C1", 64, 1, 28, 6, 5, p=2),
    _sq("LeNet-5 C3", 128, 6, 14, 16, 5),
    _sq("LeNet-5 C1 b1", 1, 1, 28, 6, 5, p=2),
    _sq("SimpleCNN conv1", 128, 1, 28, 32, 3, p=1),
    _sq("SimpleCNN conv2 b8", 8, 32, 14, 64, 3, p=1),
    _sq("NumPy-course conv2 5x5/2", 64, 8, 14, 16, 5, s=2, p=2),
    # VGG (CIFAR and ImageNet)
    _sq("VGG CIFAR conv1", 64, 3, 32, 64, 3, p=1),
    _sq("VGG CIFAR 128->256 8x8", 128, 128, 8, 256, 3, p=1),
    _sq("VGG-16 conv1_1 b1", 1, 3, 224, 64, 3, p=1),
    _sq("VGG-16 conv2_1 b1", 1, 64, 112, 128, 3, p=1),
    _sq("VGG-16 conv4_2 b1", 1, 512, 28, 512, 3, p=1),
    _sq("VGG-16 conv5_1 b1", 1, 512, 14, 512, 3, p=1),
    # ResNet-18/34 (ImageNet)
    _sq("ResNet stem 7x7/2", 8, 3, 224, 64, 7, s=2, p=3),
    _sq("ResNet stem 7x7/2 b1", 1, 3, 224, 64, 7, s=2, p=3),
    _sq("ResNet layer1 3x3", 8, 64, 56, 64, 3, p=1),
    _sq("ResNet layer2 3x3/2", 8, 64, 56, 128, 3, s=2, p=1),
    _sq("ResNet layer2 down 1x1/2", 8, 64, 56, 128, 1, s=2),
    _sq("ResNet layer3 3x3", 8, 256, 14, 256, 3, p=1),
    _sq("ResNet layer4 3x3", 8, 512, 7, 512, 3, p=1),
    _sq("ResNet layer4 3x3 b1", 1, 512, 7, 512, 3, p=1),
    # ResNet-20 (CIFAR)
    _sq("ResNet-20 stage1 3x3", 128, 16, 32, 16, 3, p=1),
    _sq("ResNet-20 stage2 3x3", 128, 32, 16, 32, 3, p=1),
    _sq("ResNet-20 stage3 3x3/2", 128, 32, 16, 64, 3, s=2, p=1),
    _sq("ResNet-20 stage3 down 1x1/2", 128, 32, 16, 64, 1, s=2),
    # ResNet-50 bottleneck 1x1s
    _sq("ResNet-50 1x1 256->64", 8, 256, 56, 64, 1),
    _sq("ResNet-50 1x1 64->256", 8, 64, 56, 256, 1),
    _sq("ResNet-50 1x1 1024->256", 64, 1024, 14, 256, 1),
    _sq("ResNet-50 1x1 512->2048 b1", 1, 512, 7, 2048, 1),
    # MobileNet v1/v2, EfficientNet, ConvNeXt (depthwise = groups C)
    _sq("MobileNet dw 3x3 32@112", 8, 32, 112, 32, 3, p=1, g=32),
    _sq("MobileNet dw 3x3/2 64@112", 8, 64, 112, 64, 3, s=2, p=1, g=64),
    _sq("MobileNet dw 3x3 128@56", 64, 128, 56, 128, 3, p=1, g=128),
    _sq("MobileNet dw 3x3 512@14", 64, 512, 14, 512, 3, p=1, g=512),
    _sq("MobileNet dw 3x3 512@14 b1", 1, 512, 14, 512, 3, p=1, g=512),
    _sq("MobileNet dw 3x3 1024@7", 128, 1024, 7, 1024, 3, p=1, g=1024),
    _sq("MobileNet pw 1x1 32->64@112", 8, 32, 112, 64, 1),
    _sq("MobileNet pw 1x1 512->512@14", 64, 512, 14, 512, 1),
    _sq("EfficientNet dw 5x5 240@14", 8, 240, 14, 240, 5, p=2, g=240),
    _sq("EfficientNet dw 5x5/2 144@56", 8, 144, 56, 144, 5, s=2, p=2, g=144),
    _sq("ConvNeXt dw 7x7 96@56", 8, 96, 56, 96, 7, p=3, g=96),
    # grouped (AlexNet's two towers, ResNeXt-style)
    _sq("AlexNet conv2 5x5 g2", 8, 96, 27, 256, 5, p=2, g=2),
    _sq("AlexNet conv2 5x5 g2 b1", 1, 96, 27, 256, 5, p=2, g=2),
    _sq("AlexNet conv4 3x3 g2", 8, 384, 13, 384, 3, p=1, g=2),
    _sq("grouped 3x3 g2 128@28", 8, 128, 28, 128, 3, p=1, g=2),
    # Inception-v3: factorised 1x7 / 7x1 on the 17x17 grid, 5x5 and 1x1 on 35x35
    _sq("Inception 1x7 128@17", 8, 128, 17, 128, 1, kw=7, p=0, pw=3),
    _sq("Inception 7x1 128->192@17", 8, 128, 17, 192, 7, kw=1, p=3, pw=0),
    _sq("Inception 1x7 160@17 b64", 64, 160, 17, 160, 1, kw=7, p=0, pw=3),
    _sq("Inception 7x1 192@17 b1", 1, 192, 17, 192, 7, kw=1, p=3, pw=0),
    _sq("Inception 5x5 48->64@35", 8, 48, 35, 64, 5, p=2),
    _sq("Inception 1x1 192->64@35", 8, 192, 35, 64, 1),
    # dilated (DeepLab, dilated ResNet, CIFAR)
    _sq("DeepLab 3x3 d2 512@14 b1", 1, 512, 14, 512, 3, p=2, d=2),
    _sq("dilated ResNet 3x3 d2 128@28", 8, 128, 28, 128, 3, p=2, d=2),
    _sq("CIFAR 3x3 d2 32@32", 64, 32, 32, 32, 3, p=2, d=2),
    _sq("DeepLab-v3 dw 3x3 d2 320@28", 8, 320, 28, 320, 3, p=2, d=2, g=320),
]

#: The sweep's smoke-sized twin, for tests: groups, depthwise, dilation, 1x7/7x1, stride 2.
SMOKE_SWEEP = [
    _sq("smoke 3x3", 2, 3, 8, 4, 3, p=1),
    _sq("smoke 1x1/2", 2, 4, 7, 6, 1, s=2),
    _sq("smoke 1x7", 2, 4, 9, 4, 1, kw=7, p=0, pw=3),
    _sq("smoke 7x1 g2", 1, 4, 9, 6, 7, kw=1, p=3, pw=0, g=2),
    _sq("smoke dw 3x3/2", 2, 6, 9, 6, 3, s=2, p=1, g=6),
    _sq("smoke 3x3 d2", 2, 4, 9, 5, 3, p=2, d=2),
]


def sweep_coverage(shapes) -> dict[str, dict]:
    """How often each value of each axis appears: ``{"kernel": {"3": 20, "1x7": 2, ...}, ...}``."""
    cov: dict[str, dict] = {"kernel": {}, "stride": {}, "dilation": {}, "groups": {}, "batch": {}}

    def add(axis, value):
        cov[axis][value] = cov[axis].get(value, 0) + 1
    for s in shapes:
        add("kernel", f"{s.k}" if s.k == s.kw else f"{s.k}x{s.kw}")
        add("stride", str(s.stride))
        add("dilation", str(s.dilation))
        add("groups", "C" if s.depthwise else str(s.groups))
        add("batch", str(s.n))
    return cov


@dataclass(frozen=True)
class ModelShape:
    """A zoo model (or ResNet-18) on ``n`` images of ``(C, H, W)``, eval mode, no grad."""

    name: str     # "resnet18", or a name of engine.models.MODELS
    n: int
    chw: tuple

    @property
    def label(self) -> str:
        c, h, w = self.chw
        return f"{self.n}x{c}x{h}" + ("" if h == w else f"x{w}") + " eval"

    @property
    def flops(self) -> float | None:
        return None  # filled in by the case (engine.summary counts them), when it can


@dataclass(frozen=True)
class EpochShape:
    """One training epoch of a zoo model (``engine.models``) on a built-in dataset:
    the first ``samples`` training images (``None``: the whole train split), batch
    ``n``, Adam ``lr``, shuffled from ``seed``. ``target``: the largest engine/PyTorch
    epoch-time ratio the issue asks for (``None``: reported, not judged)."""

    name: str                   # e.g. "LeNet-5 Fashion-MNIST"
    model: str                  # a name of engine.models.MODELS with 1x28x28 input
    dataset: str = "fashion-mnist"
    n: int = 64
    samples: int | None = None
    lr: float = 1e-3
    seed: int = 0
    data_dir: str | None = None
    target: float | None = None

    @property
    def label(self) -> str:
        images = "all" if self.samples is None else f"{self.samples}"
        return f"{self.dataset} {images} imgs b{self.n} Adam"

    @property
    def flops(self) -> float | None:
        return None


#: The ``epoch`` suite: one full Fashion-MNIST epoch of LeNet-5 (issue 18: <= 0.8x
#: PyTorch's) and of SimpleCNN, batch 64, Adam lr 1e-3.
EPOCH_MODELS = [
    EpochShape("LeNet-5 Fashion-MNIST", "lenet5", target=0.8),
    EpochShape("SimpleCNN Fashion-MNIST", "simple_cnn"),
]


# ----------------------------------------------------------------------------- suites
CONV_OPS = ("conv2d_fwd", "conv2d_bwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "conv2d_fwdbwd")
POOL_OPS = ("maxpool_fwd", "maxpool_bwd")
TRAIN_OPS = ("train_step",)
MODEL_OPS = ("model_infer",)
EPOCH_OPS = ("train_epoch",)
ALL_OPS = CONV_OPS + POOL_OPS + TRAIN_OPS + MODEL_OPS + EPOCH_OPS
#: The sweep's ops: forward, each half of the backward alone, forward+backward.
SWEEP_OPS = ("conv2d_fwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "conv2d_fwdbwd")

OP_HELP = {
    "conv2d_fwd": "conv2d forward (with bias)",
    "conv2d_bwd": "conv2d backward, dx + dW + db in one call",
    "conv2d_bwd_dx": "conv2d input gradient alone (see bench/README.md for how)",
    "conv2d_bwd_dw": "conv2d weight gradient alone (need_input_grad=False, no bias)",
    "conv2d_fwdbwd": "conv2d forward then full backward (the core issue's 'forward+backward')",
    "maxpool_fwd": "max_pool2d forward (values and argmax indices)",
    "maxpool_bwd": "max_pool2d backward (scatter to the argmax)",
    "train_step": "SimpleCNN training step: forward, cross-entropy, backward, Adam step",
    "model_infer": "a whole model's forward in eval mode under no_grad (inference latency at batch 1)",
    "train_epoch": "one training epoch (engine.fit with the engine's DataLoader vs the PyTorch twin's loop, "
                   "same initial weights, Adam, batch 64); rows in ms, the epoch summary in seconds",
}


@dataclass
class Suite:
    name: str
    description: str
    conv: list = field(default_factory=list)
    pool: list = field(default_factory=list)
    train: list = field(default_factory=list)
    ops: tuple = ALL_OPS
    repeat: int = 5
    #: naive runs for real when one call is predicted to take at most this long;
    naive_real_s: float = 1.0
    #: above that it is estimated from a smaller batch (True) or skipped (False).
    naive_estimate: bool = True
    models: list = field(default_factory=list)
    #: paths this suite times by default (None: every path of the backend)
    paths: tuple | None = None
    #: time the bare GEMM of every conv case (the sweep leaves it out: grouped and
    #: depthwise layers have no one GEMM to compare with, and it costs time)
    bare_gemm: bool = True
    #: print and save the engine/PyTorch summary (geometric means, worst point)
    summary: bool = False
    #: milliseconds each FMA-peak measurement is calibrated to (the roofline line)
    peak_ms: float = 50.0
    #: training epochs (``train_epoch``)
    epochs: list = field(default_factory=list)
    #: untimed rounds before the timed ones when ``--warmup`` is not given
    warmup: int = 1

    def shapes_for(self, op: str) -> list:
        if op in CONV_OPS:
            return self.conv
        if op in POOL_OPS:
            return self.pool
        if op in MODEL_OPS:
            return self.models
        if op in EPOCH_OPS:
            return self.epochs
        return self.train


#: The ``layers`` suite's models: batch-1 inference of the zoo (28x28 MNIST models,
#: 32x32 CIFAR ones) and a ResNet-18 on one 224x224 image.
LAYER_MODELS = [
    ModelShape("simple_cnn", 1, (1, 28, 28)),
    ModelShape("lenet5", 1, (1, 28, 28)),
    ModelShape("course_cnn", 1, (1, 28, 28)),
    ModelShape("resnet20", 1, (3, 32, 32)),
    ModelShape("vgg11_bn", 1, (3, 32, 32)),
    ModelShape("resnet18", 1, (3, 224, 224)),
]


def get_suite(name: str) -> Suite:
    if name == "quick":
        return Suite(
            "quick", "a minute on 2 CPU cores: SimpleCNN layers, LeNet C3, one pool, the training step",
            conv=[CORE[0], CORE[1], LENET[1], NUMPY_COURSE[1]], pool=[SIMPLECNN_POOLS[0]],
            train=[TrainShape("SimpleCNN", 64)],
            ops=("conv2d_fwd", "conv2d_bwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "maxpool_fwd", "maxpool_bwd",
                 "train_step"),
            repeat=5, naive_real_s=0.3, naive_estimate=False)
    if name == "full":
        return Suite(
            "full", "the five core shapes, LeNet-5, the NumPy-course net, SimpleCNN's pools and training step",
            conv=CORE + LENET + NUMPY_COURSE, pool=SIMPLECNN_POOLS + LENET_POOLS + BIG_POOLS,
            train=[TrainShape("SimpleCNN", 64)],
            ops=("conv2d_fwd", "conv2d_bwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "maxpool_fwd", "maxpool_bwd",
                 "train_step"),
            repeat=5, naive_real_s=1.0, naive_estimate=True)
    if name == "scaling":
        return Suite(
            "scaling", "batch size grown step by step, then image size: how cost grows with work",
            conv=scaling_shapes(), ops=("conv2d_fwd",), repeat=5, naive_real_s=0.5, naive_estimate=True)
    if name == "sweep":
        return Suite(
            "sweep", f"{len(SWEEP)} layers of real networks (kernel 1-7, 1x7/7x1, stride 2, dilation 2, "
                     "groups 2 and depthwise, batch 1-128): engine gemm vs PyTorch, with a summary",
            conv=list(SWEEP), ops=SWEEP_OPS, repeat=5, naive_real_s=0.0, naive_estimate=False,
            paths=("gemm", "torch"), bare_gemm=False, summary=True)
    if name == "sweep-smoke":
        return Suite(
            "sweep-smoke", "the sweep on tiny shapes (groups, depthwise, dilation, 1x7/7x1), for tests",
            conv=list(SMOKE_SWEEP), ops=SWEEP_OPS, repeat=2, naive_real_s=0.0, naive_estimate=False,
            paths=("gemm", "torch"), bare_gemm=False, summary=True, peak_ms=5.0)
    if name == "layers":
        return Suite(
            "layers", "batch-1 inference latency of the zoo models and ResNet-18 (224x224), eval mode, "
                      "no_grad, vs the same model in PyTorch; the SimpleCNN training step",
            models=list(LAYER_MODELS), train=[TrainShape("SimpleCNN", 64)], ops=("model_infer", "train_step"),
            repeat=9, naive_real_s=0.0, naive_estimate=False, paths=("gemm", "torch"), summary=True)
    if name == "epoch":
        return Suite(
            "epoch", "one Fashion-MNIST training epoch of LeNet-5 and SimpleCNN (60k images, batch 64, Adam), "
                     "engine and PyTorch alternately from the same weights; test accuracy after",
            epochs=list(EPOCH_MODELS), ops=EPOCH_OPS, repeat=3, warmup=0, naive_real_s=0.0,
            naive_estimate=False, paths=("gemm", "torch"), bare_gemm=False)
    if name == "core":
        return Suite(
            "core", "the core issue's table: conv forward and forward+backward vs PyTorch on the same threads",
            conv=list(CORE), ops=("conv2d_fwd", "conv2d_fwdbwd"), repeat=7, naive_real_s=0.0,
            naive_estimate=False, paths=("gemm", "gemm-blas", "torch"))
    if name == "smoke":
        return Suite(
            "smoke", "tiny shapes, every op, for tests (seconds)",
            conv=SMOKE_CONV, pool=SMOKE_POOL, train=[TrainShape("SimpleCNN", 4)],
            ops=CONV_OPS + POOL_OPS + TRAIN_OPS, repeat=2, naive_real_s=1.0, naive_estimate=True, peak_ms=5.0)
    raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")


SUITES = ("quick", "full", "sweep", "scaling", "core", "layers", "epoch", "smoke", "sweep-smoke",
          "distributed")  # distributed: bench/distributed.py


SHAPE_FORMS = "N,C,H,O,k,s,p or N,C,H,W,O,k,s,p, then optional d=DILATION and g=GROUPS; k and p may be AxB"


def _pair(text: str, what: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) not in (1, 2):
        raise ValueError(f"{what} must be an integer or AxB, got {text!r}")
    vals = [int(v) for v in parts]
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


def parse_shape(text: str) -> ConvShape:
    """A :class:`ConvShape` from ``--shape``: ``N,C,H,O,k,s,p`` or ``N,C,H,W,O,k,s,p``
    (the old ``64x32x14x64x3x1x1`` form too), where ``k`` and ``p`` may be ``AxB``
    (``1x7``, ``0x3``: height x width), followed by optional ``d=2`` (dilation) and
    ``g=32`` (groups) fields: ``8,128,17,128,1x7,1,0x3`` or ``8,64,56,64,3,1,1,g=64``."""
    form = f"--shape wants {SHAPE_FORMS}, got {text!r}"
    raw = text.strip()
    tokens = raw.split(",") if "," in raw else raw.lower().split("x")  # the old all-x form: square only
    named, positional = {}, []
    for tok in (t.strip() for t in tokens):
        if "=" in tok:
            key, _, value = tok.partition("=")
            key = key.strip().lower()
            if key not in ("d", "g") or key in named:
                raise ValueError(form + f" (unknown or repeated field {key!r}: use d= and g=)")
            named[key] = value.strip()
        elif named:
            raise ValueError(form + " (d= and g= come last)")
        else:
            positional.append(tok)
    try:
        if len(positional) == 7:
            n, c, h, o = (int(v) for v in positional[:4])
            w = h
            k, s, p = positional[4:]
        elif len(positional) == 8:
            n, c, h, w, o = (int(v) for v in positional[:5])
            k, s, p = positional[5:]
        else:
            raise ValueError(form)
        (kh, kw), (ph, pw), s = _pair(k, "k"), _pair(p, "p"), int(s)
        d, g = int(named.get("d", 1)), int(named.get("g", 1))
    except ValueError as exc:
        raise ValueError(form if str(exc) == form else f"{form} ({exc})") from None
    if min(n, c, h, w, o, kh, kw, s, d, g) < 1 or min(ph, pw) < 0:
        raise ValueError(f"--shape {text!r}: sizes must be positive and padding non-negative")
    if d * (kh - 1) + 1 > h + 2 * ph or d * (kw - 1) + 1 > w + 2 * pw:
        raise ValueError(f"--shape {text!r}: the (dilated) kernel must fit the padded image")
    if c % g or o % g:
        raise ValueError(f"--shape {text!r}: groups g={g} must divide C={c} and O={o}")
    return ConvShape(f"custom {text}", n, c, h, w, o, kh, s, ph, kw=kw, pad_w=pw, dilation=d, groups=g)
