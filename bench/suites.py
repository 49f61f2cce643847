"""Shape suites: which layers each ``--suite`` times, and with which ops.

Conv shapes are ``(N, C, H=W -> O, k, s, p)``; every shape carries the name of
the layer it comes from, so a row of the report says where it matters.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ConvShape:
    name: str          # e.g. "core2 SimpleCNN.conv2"
    n: int
    c: int
    h: int
    w: int
    o: int
    k: int
    stride: int = 1
    pad: int = 0

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.k) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad - self.k) // self.stride + 1

    @property
    def label(self) -> str:
        hw = f"{self.h}" if self.h == self.w else f"{self.h}x{self.w}"
        return f"{self.n}x{self.c}x{hw}->{self.o} k{self.k} s{self.stride} p{self.pad}"

    @property
    def gemm_mnk(self) -> tuple[int, int, int]:
        """``(M, N, K)`` of the forward GEMM ``W (O, C*k*k) @ col (C*k*k, N*OH*OW)``."""
        return self.o, self.n * self.oh * self.ow, self.c * self.k * self.k

    @property
    def flops(self) -> float:
        """Multiply-adds of one forward pass, counted as 2 FLOPs."""
        m, n, k = self.gemm_mnk
        return 2.0 * m * n * k

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

SWEEP_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SWEEP_SIZES = (8, 16, 32, 64, 96, 128)


def sweep_shapes() -> list[ConvShape]:
    """Batch grown step by step on SimpleCNN.conv2 (32->64, 14x14), then image
    size grown step by step on a 16->32 3x3 layer at batch 8."""
    out = [ConvShape(f"sweep batch={n}", n, 32, 14, 14, 64, 3, 1, 1) for n in SWEEP_BATCHES]
    out += [ConvShape(f"sweep size={s}", 8, 16, s, s, 32, 3, 1, 1) for s in SWEEP_SIZES]
    return out


def sweep_point(shape) -> tuple[str, int] | None:
    """``("batch", 16)`` for a sweep shape, else ``None``."""
    name = getattr(shape, "name", "")
    if name.startswith("sweep "):
        axis, value = name[len("sweep "):].split("=")
        return axis, int(value)
    return None


# ----------------------------------------------------------------------------- suites
CONV_OPS = ("conv2d_fwd", "conv2d_bwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "conv2d_fwdbwd")
POOL_OPS = ("maxpool_fwd", "maxpool_bwd")
TRAIN_OPS = ("train_step",)
ALL_OPS = CONV_OPS + POOL_OPS + TRAIN_OPS

OP_HELP = {
    "conv2d_fwd": "conv2d forward (with bias)",
    "conv2d_bwd": "conv2d backward, dx + dW + db in one call",
    "conv2d_bwd_dx": "conv2d input gradient alone (see bench/README.md for how)",
    "conv2d_bwd_dw": "conv2d weight gradient alone (need_input_grad=False, no bias)",
    "conv2d_fwdbwd": "conv2d forward then full backward (the core issue's 'forward+backward')",
    "maxpool_fwd": "max_pool2d forward (values and argmax indices)",
    "maxpool_bwd": "max_pool2d backward (scatter to the argmax)",
    "train_step": "SimpleCNN training step: forward, cross-entropy, backward, Adam step",
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
    #: paths this suite times by default (None: every path of the backend)
    paths: tuple | None = None


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
    if name == "sweep":
        return Suite(
            "sweep", "batch size grown step by step, then image size: how cost grows with work",
            conv=sweep_shapes(), ops=("conv2d_fwd",), repeat=5, naive_real_s=0.5, naive_estimate=True)
    if name == "core":
        return Suite(
            "core", "the core issue's table: conv forward and forward+backward vs PyTorch on the same threads",
            conv=list(CORE), ops=("conv2d_fwd", "conv2d_fwdbwd"), repeat=7, naive_real_s=0.0,
            naive_estimate=False, paths=("gemm", "gemm-blas", "torch"))
    if name == "smoke":
        return Suite(
            "smoke", "tiny shapes, every op, for tests (seconds)",
            conv=SMOKE_CONV, pool=SMOKE_POOL, train=[TrainShape("SimpleCNN", 4)],
            ops=ALL_OPS, repeat=2, naive_real_s=1.0, naive_estimate=True)
    raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")


SUITES = ("quick", "full", "sweep", "core", "smoke", "distributed")  # distributed: bench/distributed.py


def parse_shape(text: str) -> ConvShape:
    """``"N,C,H,O,k,s,p"`` (or ``N,C,H,W,O,k,s,p``) from ``--shape``."""
    try:
        parts = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 7:
        n, c, h, o, k, s, p = parts
        w = h
    elif len(parts) == 8:
        n, c, h, w, o, k, s, p = parts
    else:
        raise ValueError(f"--shape wants N,C,H,O,k,s,p or N,C,H,W,O,k,s,p (integers), got {text!r}")
    if min(n, c, h, w, o, k, s) < 1 or p < 0 or k > h + 2 * p or k > w + 2 * p:
        raise ValueError(f"--shape {text!r}: sizes must be positive and the kernel must fit the padded image")
    return ConvShape(f"custom {text}", n, c, h, w, o, k, s, p)
