"""``Module``, ``Parameter`` and ``Sequential``: the containers layers are built from.

There is no autograd tape: each module's ``forward`` keeps what its
``backward`` needs, and ``backward(grad_out)`` returns the gradient for the
module's input while adding parameter gradients into ``param.grad``.

A module used at two places of one forward pass (shared weights, or one
``ReLU()`` reused, as PyTorch code often does) would keep only its last call's
input. ``Sequential`` and ``Residual`` handle this: after each call of a child
that holds a shared module they take :meth:`Module.backward_state` and put it
back with :meth:`Module.restore_backward_state` before that call's backward
(the ``_start_calls``/``_called``/``_restore_call``/``_finish_call`` helpers).
A custom module that calls a child twice in its ``forward`` must do the same.
Names, state_dict keys and shapes follow PyTorch, so weights move over as is.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backends

from .. import _state


class StateDictKeyError(KeyError, ValueError):
    """A state_dict whose keys do not match the module's (a ``ValueError``, and
    a ``KeyError`` for code written against PyTorch's behaviour)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class Parameter:
    """A trainable array: ``.data`` holds the values, ``.grad`` the accumulated gradient."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = None

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    def accumulate(self, grad) -> None:
        """Add ``grad`` into ``.grad`` (gradients accumulate until ``zero_grad``)."""
        if self.grad is None:
            self.grad = grad
        else:
            self.grad = self.grad + grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


_REGISTRIES = frozenset({"_parameters", "_buffers", "_modules"})


class Module:
    """Base class of every layer and container.

    Subclasses implement ``forward(x)`` and ``backward(grad_out)``; parameters,
    buffers and sub-modules assigned as attributes are registered by name.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ----------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value  # assigning a buffer keeps it registered, as in PyTorch
            object.__setattr__(self, name, value)
            return
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value) -> None:
        """Register a non-trainable array (e.g. running statistics) saved in the state_dict."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    _set_buffer = register_buffer

    # -- calling -------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_state(self):
        """What this module and its descendants kept for backward (their
        private attributes, by reference, no copies), for
        :meth:`restore_backward_state`."""
        return [(m, {k: v for k, v in m.__dict__.items() if k.startswith("_") and k not in _REGISTRIES})
                for m in self.modules()]

    @staticmethod
    def restore_backward_state(state) -> None:
        """Put back what :meth:`backward_state` took."""
        for module, attrs in state:
            module.__dict__.update(attrs)

    # -- children called more than once in one pass (shared modules) ------------------
    # A container calls ``_start_calls()`` at the top of its forward, ``_called(key,
    # child)`` after each child call, and wraps each child's backward in
    # ``_restore_call(key)`` / ``_finish_call(key, child)``. Nothing is kept unless a
    # module is reachable from the container through two paths, in training mode.
    def _start_calls(self) -> None:
        object.__setattr__(self, "_call_states", None)  # drop the last pass's before this one's
        if self.training:
            shared = self._shared_modules()
            if shared:
                object.__setattr__(self, "_call_states", {"shared": shared})

    def _called(self, key, child) -> None:
        states = self.__dict__.get("_call_states")
        if states and any(id(sub) in states["shared"] for sub in child.modules()):
            states[key] = child.backward_state()  # this call's inputs, before a later call replaces them

    def _restore_call(self, key) -> None:
        states = self.__dict__.get("_call_states")
        if states and key in states:
            Module.restore_backward_state(states[key])

    def _finish_call(self, key, child) -> None:
        states = self.__dict__.get("_call_states")
        if states and key in states:  # keep what the child still holds (freed im2col columns stay freed)
            states[key] = child.backward_state()

    def _shared_modules(self) -> set:
        """ids of the modules reachable through more than one path from here."""
        seen, shared = set(), set()
        for _, m in self._every_path():
            (shared if id(m) in seen else seen).add(id(m))
        return shared

    def _saved(self, *names):
        """The arrays forward kept for backward, or a clear error if there are none."""
        values = tuple(getattr(self, n, None) for n in names)
        if any(v is None for v in values):
            raise RuntimeError(f"{self._label()}: backward() called before forward() "
                               "(or after a forward in eval mode that kept nothing)")
        return values

    def _label(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # -- traversal ------------------------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix: str = "", _seen=None):
        """``(name, module)`` for this module and every descendant, depth first;
        a module reachable twice (shared weights) comes once, as in PyTorch."""
        _seen = set() if _seen is None else _seen
        if id(self) in _seen:
            return
        _seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, _seen)

    def _every_path(self, prefix: str = ""):
        """Like :meth:`named_modules` but a shared module comes under each of its
        names: the state_dict lists it under each, as PyTorch's does."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child._every_path(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = ""):
        """``(name, Parameter)`` pairs, with PyTorch's dotted names (``"0.weight"``);
        a shared parameter comes once."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        """Every trainable :class:`Parameter`, in registration order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        for mod_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self) -> int:
        """Total number of trainable scalars."""
        return sum(int(np.prod(p.shape)) for p in self.parameters())

    # -- modes and gradients ----------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (dropout active, batch statistics used); returns ``self``."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode; returns ``self``."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget accumulated gradients."""
        for p in self.parameters():
            p.grad = None

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> OrderedDict:
        """Parameters and buffers by dotted name, as arrays of the module's backend."""
        out = OrderedDict()
        for mod_name, module in self._every_path():
            for name, p in module._parameters.items():
                out[f"{mod_name}.{name}" if mod_name else name] = p.data
            for name, b in module._buffers.items():
                out[f"{mod_name}.{name}" if mod_name else name] = b
        return out

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Load arrays by name (NumPy, any backend, or anything NumPy can read,
        e.g. a PyTorch tensor's ``.numpy()``), keeping each entry's backend and dtype.

        With ``strict``, missing or unexpected keys are an error; a shape
        mismatch always is.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise StateDictKeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                                    f"unexpected keys {unexpected}")
        targets = {}
        for mod_name, module in self._every_path():
            for name in list(module._parameters) + list(module._buffers):
                targets[f"{mod_name}.{name}" if mod_name else name] = (module, name)
        for key, value in state_dict.items():
            if key not in own:
                continue
            current = own[key]
            array = np.array(_to_host(value), copy=True)  # never share memory with the source
            if tuple(array.shape) != tuple(current.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key!r} has shape "
                                 f"{tuple(array.shape)}, expected {tuple(current.shape)}")
            backend = backends.backend_of(current)
            new = backend.asarray(array, dtype=current.dtype)
            module, name = targets[key]
            if name in module._parameters:
                module._parameters[name].data = new
            else:
                module._set_buffer(name, new)

    def to(self, target: str):
        """Move every parameter and buffer to a backend (``"cupy"``, ``"numpy"``, …)
        or cast floating arrays to a dtype (``"float32"``, ``"float64"``); returns ``self``."""
        if target in ("float16", "float32", "float64"):
            def convert(a):
                if "float" not in str(a.dtype):
                    return a
                b = backends.backend_of(a)
                return b.xp.astype(a, b.dtype(target))
        else:
            backend = backends.get(target)

            def convert(a):
                owner = backends.backend_of(a)
                if owner is backend:
                    return a
                host = owner.to_numpy(a) if owner is not None else np.asarray(a)
                return backend.asarray(host)
        for module in self.modules():
            for p in module._parameters.values():
                p.data = convert(p.data)
                p.grad = None if p.grad is None else convert(p.grad)
            for name, b in list(module._buffers.items()):
                module._set_buffer(name, convert(b))
        return self

    def float(self):
        return self.to("float32")

    def double(self):
        return self.to("float64")

    def summary(self, input_shape, **kwargs):
        """Per-layer output shape, parameters, receptive field and FLOPs (see ``engine.summary``)."""
        from ..summary import summary
        return summary(self, input_shape, **kwargs)

    # -- printing --------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return self._label()
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Modules applied in order; ``backward`` walks them in reverse.

    Keys of its state_dict are ``"0.weight"``, ``"0.bias"``, … as in PyTorch.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            modules = list(modules[0].items())
        else:
            modules = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {name!r} must be a Module, got {type(m).__name__}")
            setattr(self, name, m)

    def forward(self, x):
        self._start_calls()
        for i, m in enumerate(self._modules.values()):
            x = m(x)
            self._called(i, m)
        return x

    def backward(self, grad_out, input_grad: bool = True):
        """Back-propagate ``grad_out`` through every layer; returns the input's
        gradient, or ``None`` with ``input_grad=False`` (saves the first layer's
        col2im when the input is data)."""
        layers = list(self._modules.values())
        if not layers:
            return grad_out
        for i in range(len(layers) - 1, -1, -1):
            self._restore_call(i)
            if i:
                grad_out = layers[i].backward(grad_out)
            else:
                grad_out = backward_of(layers[0], grad_out, input_grad)
            self._finish_call(i, layers[i])
        return grad_out

    def append(self, module: Module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def backward_of(layer: Module, grad_out, input_grad: bool):
    """``layer.backward(grad_out)``, skipping the input gradient where the layer can."""
    if input_grad or not getattr(layer, "skips_input_grad", False):
        return layer.backward(grad_out)
    return layer.backward(grad_out, input_grad=False)


def _to_host(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    return _state.to_numpy(value)
