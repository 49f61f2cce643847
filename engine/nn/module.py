"""``Module``, ``Parameter`` and the containers (``Sequential``, ``ModuleList``,
``ModuleDict``) that layers are built from.

A module writes ``forward`` only: the operations it runs on Tensors are
recorded on the autograd tape, so reuse of a child, branches and several
inputs or outputs need no code of their own, and ``loss.backward()`` fills
every parameter's ``.grad``. Names, state_dict keys and shapes follow
PyTorch, so weights move over as they are.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np

from .. import backends

from .. import _state
from ..autograd import Tensor


class StateDictKeyError(KeyError, ValueError):
    """A state_dict whose keys do not match the module's (a ``ValueError``, and
    a ``KeyError`` for code written against PyTorch's behaviour)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class Parameter(Tensor):
    """A trainable Tensor: ``requires_grad=True`` by default, registered by the
    module it is assigned to. ``.data`` holds the values (a backend array),
    ``.grad`` the accumulated gradient (an array, or ``None``)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter containing:\n{super().__repr__()}"


class Module:
    """Base class of every layer and container.

    Subclasses implement ``forward(...)``; parameters, buffers and
    sub-modules assigned as attributes are registered by name. Calling a
    module runs its forward pre-hooks, ``forward`` and its forward hooks, and
    wraps the call for full backward hooks when any are registered.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())

    # -- registration ----------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value  # assigning a buffer keeps it registered, as in PyTorch
            object.__setattr__(self, name, value)
            return
        target = self._parameters if isinstance(value, Parameter) else self._modules if isinstance(value, Module) \
            else None
        for table in (self._parameters, self._modules, self._buffers):
            if table is not target:
                table.pop(name, None)
        if target is not None:
            target[name] = value  # a replaced entry keeps its place (state_dict order, Sequential order)
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value) -> None:
        """Register a non-trainable array (e.g. running statistics) saved in the state_dict;
        a ``None`` buffer is registered but, as in PyTorch, left out of the state_dict."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    _set_buffer = register_buffer

    # -- calling -------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if not (self._forward_pre_hooks or self._backward_hooks or self._forward_hooks):
            return self.forward(*args, **kwargs)  # no hooks (the common case): 0.5 us less a layer
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        if self._backward_hooks:
            from .hooks import call_with_backward_hooks
            out = call_with_backward_hooks(self, args, kwargs)
        else:
            out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, out)
            if result is not None:
                out = result
        return out

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    # -- hooks -------------------------------------------------------------------------
    def register_forward_pre_hook(self, hook):
        """``hook(module, args)`` before each forward; a returned value replaces the args."""
        return _add_hook(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook):
        """``hook(module, args, output)`` after each forward; a returned value replaces the output."""
        return _add_hook(self._forward_hooks, hook)

    def register_full_backward_hook(self, hook):
        """``hook(module, grad_input, grad_output)`` when the gradients of this
        module's inputs have been computed (tuples of Tensors, ``None`` for
        inputs that need none); a returned tuple replaces ``grad_input``."""
        return _add_hook(self._backward_hooks, hook)

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
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self) -> int:
        """Total number of trainable scalars."""
        return sum(int(np.prod(p.shape)) for p in self.parameters())

    # -- modes and gradients ----------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (dropout active, batch statistics used) or, with
        ``False``, evaluation mode; returns ``self``. Gradients work in both."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode; returns ``self``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        """Freeze (``False``) or unfreeze every parameter; returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget accumulated gradients (``None``, or zeros with ``set_to_none=False``)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = backends.backend_of(p.grad).xp.zeros_like(p.grad)

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> OrderedDict:
        """Parameters and buffers by dotted name, as arrays of the module's backend."""
        out = OrderedDict()
        for mod_name, module in self._every_path():
            for name, p in module._parameters.items():
                out[f"{mod_name}.{name}" if mod_name else name] = p.data
            for name, b in module._buffers.items():
                if b is not None:
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
                if b is not None:
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
    """Modules applied in order. Keys of its state_dict are ``"0.weight"``,
    ``"0.bias"``, ... as in PyTorch; ``Sequential(OrderedDict(name=module))``
    names them. Supports ``len``, iteration, indexing, slicing (a new
    Sequential sharing the modules), item assignment, ``del``, ``append``,
    ``insert`` and ``extend``."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            _check_module(m, f"Sequential: item {name!r}")
            setattr(self, name, m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def _key(self, index: int) -> str:
        keys = list(self._modules)
        if not -len(keys) <= index < len(keys):
            raise IndexError(f"Sequential index {index} is out of range for {len(keys)} modules")
        return keys[index]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return self._modules[self._key(index)]

    def __setitem__(self, index, module):
        _check_module(module, "Sequential item assignment")
        setattr(self, self._key(index), module)

    def __delitem__(self, index):
        keys = [self._key(index)] if not isinstance(index, slice) else list(self._modules)[index]
        for key in keys:
            del self._modules[key]
            object.__delattr__(self, key)
        _renumber(self)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module):
        _check_module(module, "Sequential.append")
        setattr(self, str(len(self._modules)), module)
        return self

    def insert(self, index: int, module: Module):
        _check_module(module, "Sequential.insert")
        items = list(self._modules.values())
        items.insert(index if index >= 0 else len(items) + index, module)
        _replace_all(self, items)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self


class ModuleList(Module):
    """A list of modules, registered so their parameters are found
    (``torch.nn.ModuleList``): index, iterate, ``append``, ``extend``, ``insert``."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[_list_key(self, index)]

    def __setitem__(self, index, module):
        _check_module(module, "ModuleList item assignment")
        setattr(self, _list_key(self, index), module)

    def __delitem__(self, index):
        items = list(self._modules.values())
        del items[index]
        _replace_all(self, items)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module):
        _check_module(module, "ModuleList.append")
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module):
        _check_module(module, "ModuleList.insert")
        items = list(self._modules.values())
        items.insert(index, module)
        _replace_all(self, items)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward: iterate over it in your module's forward")


class ModuleDict(Module):
    """A dict of modules by name, registered so their parameters are found
    (``torch.nn.ModuleDict``)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        _check_module(module, f"ModuleDict[{key!r}]")
        setattr(self, key, module)

    def __delitem__(self, key):
        del self._modules[key]
        object.__delattr__(self, key)

    def __contains__(self, key):
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module

    def pop(self, key):
        module = self._modules[key]
        del self[key]
        return module

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward: look modules up in your module's forward")


def _check_module(m, where):
    if not isinstance(m, Module):
        raise TypeError(f"{where} must be a Module, got {type(m).__name__}")


def _list_key(container, index: int) -> str:
    n = len(container._modules)
    if not -n <= index < n:
        raise IndexError(f"{type(container).__name__} index {index} is out of range for {n} modules")
    return str(index % n)


def _replace_all(container, modules) -> None:
    """Register ``modules`` as ``"0"``, ``"1"``, ... in place of the current children."""
    for key in list(container._modules):
        del container._modules[key]
        object.__delattr__(container, key)
    for i, m in enumerate(modules):
        setattr(container, str(i), m)


def _renumber(container) -> None:
    if all(k.isdigit() for k in container._modules):
        _replace_all(container, list(container._modules.values()))


class _HookHandle:
    """What ``register_*_hook`` returns: ``handle.remove()`` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, table: OrderedDict):
        self.table, self.id = table, next(self._ids)

    def remove(self) -> None:
        self.table.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _add_hook(table: OrderedDict, hook) -> _HookHandle:
    if not callable(hook):
        raise TypeError(f"hooks must be callable, got {type(hook).__name__}")
    handle = _HookHandle(table)
    table[handle.id] = hook
    return handle


def _to_host(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    return _state.to_numpy(value)
