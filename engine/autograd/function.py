"""The tape: ``Function`` (one recorded operation, a node of the graph) and the
backward pass that walks the nodes.

A node's ``forward`` takes plain backend arrays and returns arrays; its
``backward`` takes the gradients of its outputs (arrays) and returns one
gradient per input (an array, or ``None`` where ``needs_input_grad`` says none
is wanted). Layer nodes call the array-level pairs of :mod:`engine.ops`, so
the C and CUDA fast paths serve the tape unchanged.

What a node keeps:

* the *edges* to where its inputs came from: ``(producer node, output index)``
  for computed tensors, the leaf tensor itself for leaves (parameters, inputs
  created with ``requires_grad=True``), ``None`` for inputs that need no
  gradient. Never its outputs, so no reference cycle forms;
* the arrays its backward needs (``self.saved``), and only while recording:
  under :class:`~engine.no_grad`, or when no input requires a gradient, nothing
  is saved and the node is dropped at once;
* a creation number ``seq``. Creation order is a topological order (a node is
  made after the nodes of its inputs), so the backward pass pops nodes from a
  max-heap on ``seq`` and each node runs once, after every consumer has sent
  its gradient.

Which inputs need a gradient is decided again at backward time, from the
roots: inputs that lead to no leaf wanting a gradient (data, frozen
parameters) are skipped, and the node's backward is told so through
``needs_input_grad`` (a convolution then skips ``dx`` or ``dW``). After its
backward a node frees what it saved unless ``retain_graph=True``; running
backward through it again raises ``RuntimeError``, as in PyTorch.
"""
from __future__ import annotations

import heapq
import itertools
import weakref

from ..backends import backend_of
from .grad_mode import is_grad_enabled
from .tensor import Tensor, _as_grad_array

__all__ = ["Function", "backward", "grad"]

_sequence = itertools.count()
_FREED_MESSAGE = ("Trying to backward through the graph a second time (or directly access saved arrays after "
                  "they have already been freed). Saved intermediate values of the graph are freed when you "
                  "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
                  "through the graph a second time.")


class Function:
    """One differentiable operation: subclass it, write ``forward`` and ``backward``
    on arrays, call an instance on Tensors (or arrays).

    ``forward(*arrays)`` returns an array or a tuple of arrays; it may keep what
    the backward needs in ``self.saved`` (any object) when ``self.recording``
    is true, and should keep nothing otherwise. ``backward(*grad_outputs)``
    gets one gradient per output (``None`` for an output that received none,
    only possible with several outputs) and returns one gradient per input,
    ``None`` where ``self.needs_input_grad[i]`` is false. Outputs listed in
    ``non_differentiable`` (indices, masks) never carry gradients.
    """

    non_differentiable: tuple = ()

    def __init__(self):
        self.saved = None
        self.recording = False
        self.needs_input_grad = ()

    # -- to override -----------------------------------------------------------
    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, *grad_outputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    # -- recording ---------------------------------------------------------------
    def __call__(self, *inputs):
        # This runs once per operation: plain loops, no generators (the tape's overhead).
        arrays, needs, any_need = [], [], False
        for a in inputs:
            if isinstance(a, Tensor):
                arrays.append(a.data)
                need = a._requires_grad
                any_need = any_need or need
                needs.append(need)
            else:
                arrays.append(a)
                needs.append(False)
        self.recording = recording = any_need and is_grad_enabled()
        self.needs_input_grad = tuple(needs) if recording else (False,) * len(inputs)
        out = self.forward(*arrays)
        several = isinstance(out, tuple)
        if not recording:
            self.saved = None
            return tuple(Tensor._wrap(o) for o in out) if several else Tensor._wrap(out)
        self._edges = tuple(_edge(a) if need else None for a, need in zip(inputs, needs))
        self._freed = False
        self.seq = next(_sequence)
        if not several:
            self._n_outputs = 1
            return Tensor._wrap(out, self, 0)
        self._n_outputs = len(out)
        skip = self.non_differentiable
        return tuple(Tensor._wrap(o) if i in skip else Tensor._wrap(o, self, i) for i, o in enumerate(out))

    def release(self) -> None:
        """Drop what was saved for backward (done after the node's backward ran)."""
        self.saved = None
        self._freed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    @property
    def next_functions(self):
        """``((node or leaf tensor or None, output index), ...)`` per input, as PyTorch's."""
        out = []
        for edge in getattr(self, "_edges", ()):
            if edge is None:
                out.append((None, 0))
            elif isinstance(edge, tuple):
                out.append(edge)
            else:
                out.append((edge, 0))
        return tuple(out)


def _edge(tensor):
    """Where the gradient of an input goes: its producer ``(node, index)``, or the leaf."""
    if tensor.grad_fn is not None:
        return (tensor.grad_fn, tensor._output_nr)
    return tensor


# --------------------------------------------------------------------------- backward pass
def _roots(tensors, grad_tensors, where):
    if isinstance(tensors, Tensor):
        tensors = (tensors,)
    tensors = tuple(tensors)
    if grad_tensors is None or isinstance(grad_tensors, Tensor) or hasattr(grad_tensors, "shape"):
        grad_tensors = (grad_tensors,) * len(tensors) if grad_tensors is None else (grad_tensors,)
    grad_tensors = tuple(grad_tensors)
    if len(grad_tensors) != len(tensors):
        raise ValueError(f"{where}: got {len(tensors)} tensors and {len(grad_tensors)} gradients")
    roots = []
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: expected Tensors, got {type(t).__name__} at position {i}")
        if not t.requires_grad:
            raise RuntimeError(f"{where}: element {i} of tensors does not require grad and does not have a "
                               "grad_fn (was it computed under no_grad, or from inputs that need no gradient?)")
        roots.append((t, _as_grad_array(t, g, where)))
    return roots


def _needed_nodes(roots, targets):
    """Ids of the nodes whose backward must run: every node reachable from the
    roots, or, with ``targets`` (``autograd.grad``), those with a path to one."""
    start = [t.grad_fn for t, _ in roots if t.grad_fn is not None]
    reachable, order, stack = set(), [], list(start)
    while stack:
        node = stack.pop()
        if id(node) in reachable:
            continue
        reachable.add(id(node))
        order.append(node)
        if node._freed:
            raise RuntimeError(_FREED_MESSAGE)
        stack.extend(e[0] for e in node._edges if isinstance(e, tuple))
    if targets is None:
        return reachable
    needed = set()
    for node in sorted(order, key=lambda n: n.seq):  # producers before their consumers
        if any(_edge_needed(e, needed, targets) for e in node._edges):
            needed.add(id(node))
    return needed


def _edge_needed(edge, needed, targets):
    """Whether a gradient sent along ``edge`` is wanted."""
    if edge is None:
        return False
    if isinstance(edge, tuple):
        node, index = edge
        return id(node) in needed or (targets is not None and index in targets[1].get(id(node), ()))
    return targets is None or id(edge) in targets[0]


def _run(roots, retain_graph, targets=None):
    """The backward pass. Without ``targets``: accumulate into leaves' ``.grad``
    (and retained non-leaves); every recorded edge is wanted, so each node uses
    the ``needs_input_grad`` of its forward. With ``targets`` (leaf ids, {node id:
    indices}): return ``{key: gradient}`` for them, run only the nodes on a path
    to one, and touch no ``.grad``."""
    needed = None if targets is None else _needed_nodes(roots, targets)
    pending: dict[int, list] = {}
    heap, leaves, captured = [], {}, {}
    root_arrays = {id(g) for _, g in roots}
    heappush, heappop = heapq.heappush, heapq.heappop

    def send(edge, g):
        if edge.__class__ is tuple:
            node, index = edge
            buffer = pending.get(id(node))
            if buffer is None:
                buffer = pending[id(node)] = [None] * node._n_outputs
                heappush(heap, (-node.seq, id(node), node))
            previous = buffer[index]
            buffer[index] = g if previous is None else previous + g
        else:
            entry = leaves.get(id(edge))
            leaves[id(edge)] = (edge, g if entry is None else entry[1] + g)

    for t, g in roots:
        send(_edge(t), g)
    while heap:
        _, _, node = heappop(heap)
        grads = pending.pop(id(node))
        if targets is not None or "_tensor_hooks" in node.__dict__ or "_retained" in node.__dict__:
            _observe(node, grads, targets, captured, root_arrays)
        needs = node.needs_input_grad
        if needed is not None:
            if id(node) not in needed:
                continue
            needs = tuple(_edge_needed(e, needed, targets) for e in node._edges)
            if not any(needs):
                continue
            node.needs_input_grad = needs
        if node._freed:
            raise RuntimeError(_FREED_MESSAGE)
        input_grads = node.backward(*grads)
        if input_grads.__class__ is not tuple:
            input_grads = (input_grads,)
        edges = node._edges
        if len(input_grads) != len(edges):
            raise RuntimeError(f"{type(node).__name__}.backward returned {len(input_grads)} gradients for "
                               f"{len(edges)} inputs")
        if not retain_graph:
            node.release()
        for edge, need, g in zip(edges, needs, input_grads):
            if need and g is not None:
                send(edge, g)
    if targets is not None:
        for key, (tensor, g) in leaves.items():
            captured[key] = _apply_leaf_hooks(tensor, g)
        return captured
    for tensor, g in leaves.values():
        g = _apply_leaf_hooks(tensor, g)
        tensor.grad = _copy_if(g, root_arrays) if tensor.grad is None else tensor.grad + g
    return None


def _observe(node, grads, targets, captured, root_arrays):
    """Tensor hooks on the node's outputs (which may replace a gradient, in
    ``grads``), then ``retain_grad`` outputs' ``.grad``, or the gradients
    ``autograd.grad`` asked for."""
    hooks = node.__dict__.get("_tensor_hooks") or {}
    retained = node.__dict__.get("_retained") or {}
    for index, g in enumerate(grads):
        if g is None:
            continue
        for hook in hooks.get(index, ()):
            replaced = hook_result(hook, g)
            if replaced is not None:
                g = grads[index] = replaced
        if targets is None:
            ref = retained.get(index)
            tensor = ref() if ref is not None else None
            if tensor is not None:
                tensor.grad = _copy_if(g, root_arrays) if tensor.grad is None else tensor.grad + g
        elif index in targets[1].get(id(node), ()):
            captured[(id(node), index)] = g


def hook_result(hook, g):
    out = hook(Tensor._wrap(g))
    if out is None:
        return None
    return out.data if isinstance(out, Tensor) else out


def _apply_leaf_hooks(tensor, g):
    for hook in tensor._hooks or ():
        replaced = hook_result(hook, g)
        if replaced is not None:
            g = replaced
    return g


def _copy_if(g, root_arrays):
    """A leaf's ``.grad`` must not be the very array the caller passed as the
    gradient (they may change it afterwards); gradients made inside the pass are
    new arrays and are stored as they are."""
    if id(g) in root_arrays:
        return backend_of(g).xp.asarray(g, copy=True)
    return g


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate the gradients of ``tensors`` into the ``.grad`` of the leaves
    they depend on (``engine.autograd.backward``, ``Tensor.backward``).

    ``grad_tensors``: the gradient of each of ``tensors`` (``None`` for a
    scalar, meaning 1). ``retain_graph``: keep the saved arrays for another
    backward. ``inputs``: accumulate only into these leaves.
    """
    _refuse_create_graph(create_graph)
    roots = _roots(tensors, grad_tensors, "backward")
    if inputs is not None:
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        grads = grad([t for t, _ in roots], inputs, [g for _, g in roots], retain_graph=retain_graph,
                     allow_unused=True)
        for t, g in zip(inputs, grads):
            if g is not None:
                g = g.data
                t.grad = g if t.grad is None else t.grad + g
        return
    _run(roots, bool(retain_graph))


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, returned as a
    tuple of Tensors (``engine.autograd.grad``); no ``.grad`` is changed.

    An input that ``outputs`` do not depend on is an error unless
    ``allow_unused=True`` (its gradient is then ``None``).
    """
    _refuse_create_graph(create_graph)
    roots = _roots(outputs, grad_outputs, "autograd.grad")
    single = isinstance(inputs, Tensor)
    inputs = (inputs,) if single else tuple(inputs)
    leaf_ids, node_targets, keys = set(), {}, []
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError(f"autograd.grad: input {i} does not require grad")
        if t.grad_fn is None:
            leaf_ids.add(id(t))
            keys.append(id(t))
        else:
            node_targets.setdefault(id(t.grad_fn), set()).add(t._output_nr)
            keys.append((id(t.grad_fn), t._output_nr))
    captured = _run(roots, bool(retain_graph), (leaf_ids, node_targets))
    result = []
    for i, key in enumerate(keys):
        g = captured.get(key)
        if g is None and not allow_unused:
            raise RuntimeError(f"autograd.grad: input {i} was not used in the graph of the outputs; "
                               "pass allow_unused=True if this is expected")
        result.append(None if g is None else Tensor._wrap(g))
    return tuple(result)


def _refuse_create_graph(create_graph):
    if create_graph:
        raise NotImplementedError("create_graph=True (double backward) is not supported: backward passes run "
                                  "on plain arrays through the engine.ops pairs, so they are not recorded")


def register_tensor_hook(node, index, hook):
    """Run ``hook(grad)`` on the gradient of output ``index`` of ``node``."""
    hooks = node.__dict__.setdefault("_tensor_hooks", {})
    hooks.setdefault(index, []).append(hook)
    return _HookHandle(hooks[index], hook)


def retain(node, index, tensor) -> None:
    node.__dict__.setdefault("_retained", {})[index] = weakref.ref(tensor)


class _HookHandle:
    """What ``register_hook`` returns: ``handle.remove()`` unregisters."""

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)
