"""``summary(model, input_shape)``: a per-layer table of output shapes, parameter
counts, receptive fields and FLOPs, with totals.

    >>> print(engine.models.simple_cnn().summary((1, 28, 28)))

Shapes come from a real forward pass of one zero batch in evaluation mode,
seen by forward hooks (so they are exactly what the layers produce, for any
model, however its ``forward`` is written; the model's mode, gradients and the
engine generator are left as they were). Parameter counts are each layer's own
trainable scalars, the same numbers PyTorch reports.

Receptive field: the input region (rows x columns) that one output element of
the layer sees. With ``j_L`` the product of the strides of layers ``1..L``
(pooling included) and ``k`` the effective kernel ``d·(k−1)+1`` of a dilated
window, ``R_L = R_{L−1} + (k_L − 1)·j_{L−1}``, ``R_0 = 1``. Element-wise layers
and ``Flatten`` keep it; ``Linear`` and global pooling see the whole input.

FLOPs: 2 × multiply-accumulates of ``Conv2d`` and ``Linear`` layers (also
those inside composite blocks), for the batch given (one image when
``input_shape`` has no batch axis). Bias additions, activations,
normalisation, pooling and losses are not counted (they are <1% here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _state, backends
from .autograd import no_grad

__all__ = ["LayerInfo", "Summary", "summary"]


@dataclass
class LayerInfo:
    """One row of a :class:`Summary`."""

    name: str                  # the dotted name ("0", "features.3")
    type: str                  # class name ("Conv2d")
    description: str           # short configuration ("1→32, k3, p1")
    output_shape: tuple
    params: int
    receptive_field: object         # (rows, cols); "all": the whole input; None: unknown
    jump: tuple | None              # product of strides so far
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass
class Summary:
    """The rows of :func:`summary` and their totals; ``str()`` is a readable table."""

    model_name: str
    input_shape: tuple
    rows: list
    dtype: str

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    @property
    def output_shape(self) -> tuple:
        return self.rows[-1].output_shape if self.rows else self.input_shape

    def as_dict(self) -> dict:
        return {"model": self.model_name, "input_shape": list(self.input_shape),
                "total_params": self.total_params, "total_flops": self.total_flops,
                "layers": [{"name": r.name, "type": r.type, "description": r.description,
                            "output_shape": list(r.output_shape), "params": r.params,
                            "receptive_field": None if r.receptive_field is None else list(r.receptive_field),
                            "flops": r.flops} for r in self.rows]}

    def __str__(self) -> str:
        header = ("Layer", "Output shape", "Params", "RF", "FLOPs")
        body = []
        for r in self.rows:
            layer = f"{r.name} {r.type}" + (f"({r.description})" if r.description else "")
            body.append((layer, _shape(r.output_shape), f"{r.params:,}", _rf(r.receptive_field),
                         _flops(r.flops) if r.macs else "-"))
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
                  for i, h in enumerate(header)]
        left = (True, True, False, False, False)

        def fmt(cells):
            return "  ".join(c.ljust(w) if lj else c.rjust(w) for c, w, lj in zip(cells, widths, left)).rstrip()

        rule = "-" * len(fmt(["x" * w for w in widths]))
        itemsize = np.dtype(self.dtype).itemsize if self.dtype in ("float16", "float32", "float64") else 4
        lines = [f"{self.model_name}, input {_shape(self.input_shape)}", rule, fmt(header), rule]
        lines += [fmt(row) for row in body]
        mib = self.total_params * itemsize / 2**20
        lines += [rule,
                  f"Total params: {self.total_params:,} ({mib:.2f} MiB as {self.dtype})",
                  (f"Total FLOPs:  {self.total_flops:,} ({_flops(self.total_flops)}) per forward pass "
                   f"of batch {self.input_shape[0]}"),
                  ("FLOPs = 2 x multiply-adds of conv and linear layers (bias, activations, pooling not "
                   "counted); RF = receptive field in input pixels (rows x cols).")]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Summary({self.model_name}, input={self.input_shape}, layers={len(self.rows)}, "
                f"params={self.total_params:,}, flops={self.total_flops:,})")


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _rf(rf) -> str:
    if rf is None:
        return "?"
    if rf == "all":
        return "all"
    return f"{rf[0]}x{rf[1]}"


def _flops(n) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _own_params(module) -> int:
    return sum(int(math.prod(p.shape)) for p in module.parameters())


def _is_container(m) -> bool:
    """Sequential, ModuleList, ModuleDict: modules that only hold others."""
    return type(m).__name__ in ("Sequential", "ModuleList", "ModuleDict")


def _units(model):
    """``(name, module)`` of the modules that become rows: the children of the
    model, with containers opened (a custom block is one row)."""
    def walk(module, prefix):
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if _is_container(child):
                yield from walk(child, full)
            else:
                yield full, child
    units = list(walk(model, ""))
    return units or [(type(model).__name__, model)]


def _describe(m) -> str:
    name = type(m).__name__
    if name in ("Conv2d", "Conv1d", "ConvTranspose2d", "ConvTranspose1d"):
        parts = [f"{m.in_channels}→{m.out_channels}", _kernel("k", m.kernel_size)]
        ones = (1,) * len(m.kernel_size)
        if tuple(m.stride) != ones:
            parts.append(_kernel("s", m.stride))
        if isinstance(m.padding, str):
            parts.append(f"p={m.padding}")
        elif any(m.padding):
            parts.append(_kernel("p", m.padding))
        if tuple(m.dilation) != ones:
            parts.append(_kernel("d", m.dilation))
        if m.groups != 1:
            parts.append(f"g{m.groups}")
        return ", ".join(parts)
    if name in ("MaxPool2d", "AvgPool2d", "MaxPool1d", "AvgPool1d"):
        parts = [_kernel("k", m.kernel_size)]
        if m.stride != m.kernel_size:
            parts.append(_kernel("s", m.stride))
        if any(m.padding):
            parts.append(_kernel("p", m.padding))
        return ", ".join(parts)
    if hasattr(m, "in_features") and hasattr(m, "out_features"):
        return f"{m.in_features}→{m.out_features}"
    if hasattr(m, "negative_slope"):
        return f"{m.negative_slope:g}"
    if name == "Dropout":
        return f"p={m.p:g}"
    return ""


def _kernel(letter, sizes) -> str:
    sizes = tuple(sizes)
    return f"{letter}{sizes[0]}" if len(set(sizes)) == 1 else f"{letter}{'x'.join(str(k) for k in sizes)}"


def _window(m):
    """(effective kernel, stride) of a 2-D sliding-window layer, else None."""
    name = type(m).__name__
    if name not in ("Conv2d", "MaxPool2d", "AvgPool2d"):
        return None
    dil = getattr(m, "dilation", (1, 1))
    k = tuple(d * (kk - 1) + 1 for kk, d in zip(m.kernel_size, dil))
    return k, m.stride


def _macs(m, x_shape, y_shape) -> int:
    if hasattr(m, "in_features") and hasattr(m, "out_features"):
        return int(math.prod(y_shape)) * m.in_features
    weight = getattr(m, "weight", None)
    if weight is None or len(weight.shape) < 3 or not type(m).__name__.startswith("Conv"):
        return 0  # a LayerNorm's weight may have 3 axes too
    taps = int(math.prod(weight.shape[1:]))  # per output (conv) or per input (transposed) element
    if type(m).__name__.startswith("ConvTranspose"):  # every input element scatters into weight.shape[1]*k outputs
        return int(math.prod(x_shape)) * taps
    return int(math.prod(y_shape)) * taps  # Conv1d/Conv2d: (C/groups) * k taps per output


#: Layers that keep the receptive field of their input (element-wise, reshaping, normalisation).
_KEEPS_RF = {"Flatten", "Identity", "Dropout", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
             "BatchNorm1d", "BatchNorm2d", "GELU", "SiLU", "Hardswish", "Hardsigmoid", "Dropout1d", "Dropout2d",
             "Dropout3d"}


def _main_output(output):
    """The output a row describes: the first of several (``MaxPool2d(return_indices=True)``)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _first_leaf(model):
    return next((m for _, m in model.named_modules() if not m._modules), None)


class _Recorder:
    """Forward hooks that record each unit's call (input, output, MACs inside it)."""

    def __init__(self, units):
        self.unit_names = {id(m): name for name, m in units}
        self.calls, self.stack, self.seen = [], [], set()

    def pre(self, module, args):
        self.stack.append([self.unit_names[id(module)], module, args[0] if args else None, 0])

    def post(self, module, args, output):
        name, _, x, macs = self.stack.pop()
        self.calls.append((name, module, x, _main_output(output), macs))

    def count(self, module, args, output):
        if self.stack and args:
            self.stack[-1][3] += _macs(module, tuple(args[0].shape), tuple(_main_output(output).shape))


def summary(model, input_shape, dtype: str | None = None) -> Summary:
    """Per-layer output shape, parameters, receptive field and FLOPs of ``model``.

    ``input_shape``: ``(C, H, W)`` (one image) or ``(N, C, H, W)``. ``dtype``:
    of the probe input (default: the model's). The rows are the modules the
    model calls, in call order, as forward hooks saw them on one forward pass
    of a zero batch (under ``no_grad``, in evaluation mode); a module called
    twice gives two rows. Returns a :class:`Summary` (``.rows``,
    ``.total_params``, ``.total_flops``; ``print()`` it for a table).
    """
    if not hasattr(model, "named_modules") or not callable(model):
        raise TypeError(f"summary: model must be an engine.nn.Module, got {type(model).__name__}")
    shape = tuple(int(d) for d in input_shape)
    first = _first_leaf(model)
    one_d = first is not None and type(first).__name__.endswith("1d")
    if len(shape) == (2 if one_d else 3):  # one sample: add the batch axis
        shape = (1,) + shape
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise ValueError(f"summary: input_shape must be (C, H, W) or (N, C, H, W) of positive sizes, "
                         f"got {tuple(input_shape)}")
    params = model.parameters()
    backend = backends.backend_of(params[0].data) if params else _state.current()
    if dtype is None:
        dtype = next((d for d in ("float16", "float32", "float64") if d in str(params[0].data.dtype)),
                     "float32") if params else "float32"
    x = backend.asarray(np.zeros(shape), dtype=backend.dtype(dtype))
    units = _units(model)
    recorder = _Recorder(units)
    handles = []  # the MAC counters first: a unit's own counter runs before its row is closed
    for _, m in model.named_modules():
        if getattr(m, "weight", None) is not None or hasattr(m, "in_features"):
            handles.append(m.register_forward_hook(recorder.count))
    for _, m in units:
        handles += [m.register_forward_pre_hook(recorder.pre), m.register_forward_hook(recorder.post)]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    rng_state = _state.get_rng_state()
    try:
        with no_grad():
            model(x)
    except Exception as exc:
        if recorder.stack:
            name, layer, inp, _ = recorder.stack[-1]
            raise type(exc)(f"summary: layer {name} ({type(layer).__name__}) failed on input "
                            f"{tuple(inp.shape) if inp is not None else '?'}: {exc}") from exc
        raise
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
        _state.set_rng_state(rng_state)
    return Summary(model_name=type(model).__name__ if not getattr(model, "name", None) else model.name,
                   input_shape=shape, rows=_rows(recorder.calls, x, len(shape) == 4), dtype=dtype)


def _rows(calls, probe, two_d: bool) -> list:
    """Rows with receptive fields: followed along the chain of calls while each
    layer's input is the previous layer's output; unknown once the model branches."""
    rows, seen = [], set()
    rf, jump = ((1, 1), (1, 1)) if two_d else (None, None)
    previous = probe
    for name, layer, x, y, macs in calls:
        y_shape = tuple(int(d) for d in y.shape)
        chained = x is previous or (getattr(x, "data", None) is getattr(previous, "data", object()))
        win = _window(layer)
        if not chained:
            rf, jump = None, None
        elif win is not None:
            if isinstance(rf, tuple):
                k, s = win
                rf = (rf[0] + (k[0] - 1) * jump[0], rf[1] + (k[1] - 1) * jump[1])
                jump = (jump[0] * s[0], jump[1] * s[1])
        elif hasattr(layer, "in_features") or type(layer).__name__ == "GlobalAvgPool2d" or (
                type(layer).__name__.startswith("Adaptive") and len(y_shape) == 4 and y_shape[2:] == (1, 1)):
            rf, jump = ("all", None) if two_d else (None, None)  # sees the whole image
        elif type(layer).__name__ not in _KEEPS_RF:
            rf, jump = None, None  # a layer this table does not know: receptive field unknown
        again = id(layer) in seen
        seen.add(id(layer))
        rows.append(LayerInfo(name=name, type=type(layer).__name__,
                              description=_describe(layer) + (" (again)" if again else ""),
                              output_shape=y_shape, params=0 if again else _own_params(layer),
                              receptive_field=rf, jump=jump, macs=macs))
        previous = y
    return rows
