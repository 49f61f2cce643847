"""Full backward hooks (``Module.register_full_backward_hook``).

A module call with backward hooks is wrapped between two identity nodes: one
on its inputs (recorded before the module's own nodes, so it runs after them
in backward: it sees ``grad_input``) and one on its outputs (recorded after
them, so it runs first: it sees ``grad_output``). When no input needs a
gradient (data going into the first layer), the hooks run from the output
node with ``grad_input`` all ``None``, as in PyTorch.
"""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..autograd.grad_mode import is_grad_enabled


class _CallState:
    def __init__(self, module, n_inputs):
        self.module = module
        self.n_inputs = n_inputs
        self.grad_output = None
        self.inputs_wrapped = False

    def run_hooks(self, grad_input):
        as_tensors = tuple(None if g is None else Tensor._wrap(g) for g in grad_input)
        for hook in list(self.module._backward_hooks.values()):
            result = hook(self.module, as_tensors, self.grad_output)
            if result is not None:
                as_tensors = tuple(result)
        return tuple(None if g is None else (g.data if isinstance(g, Tensor) else g) for g in as_tensors)


class _InputHookNode(Function):
    def __init__(self, state, positions):
        super().__init__()
        self.state, self.positions = state, positions

    def forward(self, *arrays):
        return arrays if len(arrays) > 1 else arrays[0]

    def backward(self, *grads):
        grad_input = [None] * self.state.n_inputs
        for position, g in zip(self.positions, grads):
            grad_input[position] = g
        replaced = self.state.run_hooks(grad_input)
        out = tuple(replaced[p] for p in self.positions)
        return out if len(out) > 1 else out[0]


class _OutputHookNode(Function):
    def __init__(self, state):
        super().__init__()
        self.state = state

    def forward(self, *arrays):
        return arrays if len(arrays) > 1 else arrays[0]

    def backward(self, *grads):
        self.state.grad_output = tuple(None if g is None else Tensor._wrap(g) for g in grads)
        if not self.state.inputs_wrapped:
            self.state.run_hooks([None] * self.state.n_inputs)
        return grads if len(grads) > 1 else grads[0]


def call_with_backward_hooks(module, args, kwargs):
    """``module.forward(*args, **kwargs)`` with its full backward hooks attached."""
    if not is_grad_enabled():
        return module.forward(*args, **kwargs)
    state = _CallState(module, len(args))
    positions = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if positions:
        wrapped = _InputHookNode(state, positions)(*(args[i] for i in positions))
        wrapped = wrapped if isinstance(wrapped, tuple) else (wrapped,)
        args = list(args)
        for i, t in zip(positions, wrapped):
            args[i] = t
        state.inputs_wrapped = True
    out = module.forward(*args, **kwargs)
    outputs = out if isinstance(out, tuple) else (out,)
    if not any(isinstance(o, Tensor) and o.requires_grad for o in outputs):
        return out
    wrapped = _OutputHookNode(state)(*outputs)
    if isinstance(out, tuple):
        return wrapped if isinstance(wrapped, tuple) else (wrapped,)
    return wrapped
