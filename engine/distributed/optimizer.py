"""Data-parallel training: every rank holds the same model, computes gradients on
its share of the batch, and the gradients are averaged before every update.

:class:`DistributedOptimizer` wraps an ``engine.optim`` optimizer: at start it
checks that every rank built the same parameters, then copies rank 0's
parameters, buffers and optimizer state to every rank; after ``backward`` its
:meth:`~DistributedOptimizer.synchronize` averages every gradient in one
collective per dtype through a preallocated fused buffer, and ``step()``
updates. Since every rank starts equal and applies the same averaged
gradient, the replicas stay equal bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import traceback

import numpy as np

from .. import backends
from .collectives import FusedBuffer
from .communicators import Communicator, communicator_for
from .runtime import World, world

__all__ = ["DistributedOptimizer", "average_buffers", "broadcast_parameters", "broadcast_optimizer_state",
           "check_same_layout", "on_root", "replicas_agree"]


def _backend_of(arrays, where):
    found = None
    for a in arrays:
        owner = backends.backend_of(a)
        if owner is None:
            raise TypeError(f"{where}: expected arrays of the engine's backends, got {type(a).__name__}")
        if found is not None and owner is not found:
            raise TypeError(f"{where}: the model's arrays live on two backends ({found.name}, {owner.name}); "
                            "move it to one with model.to(...)")
        found = owner
    return found or backends.get("numpy")


def _by_dtype(arrays):
    """``{dtype name: [indices]}`` in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(str(a.dtype), []).append(i)
    return groups


def _communicator(model_arrays, communicator, where) -> Communicator:
    if isinstance(communicator, Communicator):
        return communicator
    return communicator_for(world(), _backend_of(model_arrays, where), prefer=communicator)


def _state_arrays(model):
    """``[(name, owner, attribute, array)]`` for every parameter and buffer, once each."""
    out, seen = [], set()
    for mod_name, module in model.named_modules():
        for table, is_param in ((module._parameters, True), (module._buffers, False)):
            for name, value in table.items():
                if value is None:
                    continue
                array = value.data if is_param else value
                if id(array) in seen:
                    continue
                seen.add(id(array))
                out.append((f"{mod_name}.{name}" if mod_name else name, module, name, array))
    return out


# ----------------------------------------------------------------------------- start of training
def check_same_layout(model, optimizer=None, w: World | None = None, where="DistributedOptimizer") -> None:
    """Raise ``ValueError`` on every rank unless every rank holds the same parameter
    and buffer names, shapes and dtypes (and, with ``optimizer``, the same optimized
    parameters in the same order). Collective."""
    w = w or world()
    entries = [(name, tuple(int(d) for d in a.shape), str(a.dtype)) for name, _, _, a in _state_arrays(model)]
    values = sum(int(np.prod(shape)) for _, shape, _ in entries)
    if optimizer is not None:
        index = {id(p): name for name, p in model.named_parameters()}
        entries.append(("optimizer", [index.get(id(p), "?") for g in optimizer.param_groups for p in g["params"]]))
    digest = np.frombuffer(hashlib.sha256(json.dumps(entries).encode()).digest(), dtype=np.int64)
    mine = np.concatenate([[len(entries), values], digest]).astype(np.int64)
    every = w.allgather_host(mine)
    different = [r for r in range(w.size) if not np.array_equal(every[r], every[0])]
    if different:
        rows = "; ".join(f"rank {r}: {int(every[r][0])} entries, {int(every[r][1]):,} values"
                         for r in [0] + different[:3])
        raise ValueError(f"{where}: the ranks hold different models (names, shapes or dtypes of the parameters "
                         f"and buffers differ: {rows}); build the same model on every rank, and let only the "
                         "data differ")


def broadcast_parameters(model, root: int = 0, communicator="auto") -> None:
    """Rank ``root``'s parameters and buffers on every rank (in place, one fused
    message per dtype). Collective."""
    arrays = _state_arrays(model)
    if not arrays:
        return
    comm = _communicator([a for *_, a in arrays], communicator, "broadcast_parameters")
    if comm.size == 1:
        return
    _fused_collective(comm, [a for *_, a in arrays], lambda buf: comm.broadcast_(buf, root))


def average_buffers(model, communicator="auto") -> int:
    """Average every floating-point buffer (BatchNorm running statistics) over the
    ranks, in place; SyncBatchNorm layers, already equal, are left alone.
    Returns how many buffers were averaged. Collective."""
    from .batchnorm import SyncBatchNorm
    arrays = []
    for module in model.modules():
        if isinstance(module, SyncBatchNorm):
            continue
        arrays += [b for b in module._buffers.values() if b is not None and "float" in str(b.dtype)]
    if not arrays:
        return 0
    comm = _communicator(arrays, communicator, "average_buffers")
    if comm.size == 1:
        return len(arrays)
    _fused_collective(comm, arrays, lambda buf: comm.allreduce_(buf, "mean"))
    return len(arrays)


def _fused_collective(comm, arrays, run):
    backend = _backend_of(arrays, "engine.distributed")
    for dtype, indices in _by_dtype(arrays).items():
        buffer = FusedBuffer(backend, arrays[indices[0]].dtype, [arrays[i].shape for i in indices])
        buffer.pack([arrays[i] for i in indices])
        run(buffer.array)
        for k, i in enumerate(indices):
            arrays[i][...] = buffer.view(k)


def broadcast_optimizer_state(optimizer, root: int = 0, communicator="auto") -> None:
    """Rank ``root``'s optimizer state (hyper-parameters and per-parameter arrays such
    as Adam's moments) on every rank: the structure as JSON, the arrays through the
    communicator. Collective; used when resuming from a checkpoint read by rank 0."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    comm = _communicator([p.data for p in params], communicator, "broadcast_optimizer_state")
    w = comm.world
    if w.size == 1:
        return
    spec = None
    if w.rank == root:
        sd = optimizer.state_dict()
        spec = {"param_groups": json.loads(json.dumps(sd["param_groups"], default=_json_value)),
                "state": {str(i): {name: _describe(value) for name, value in entries.items()}
                          for i, entries in sd["state"].items()}}
    spec = w.broadcast_json(spec, root)
    state = {}
    own = optimizer.state_dict()["state"] if w.rank == root else {}
    for key in sorted(spec["state"], key=int):
        p = params[int(key)]
        xp = backends.backend_of(p.data).xp
        entries = {}
        for name, described in sorted(spec["state"][key].items()):
            if "value" in described:
                entries[name] = described["value"]
                continue
            array = own[int(key)][name] if w.rank == root else \
                xp.zeros(tuple(described["shape"]), dtype=backends.backend_of(p.data).dtype(described["dtype"]))
            flat = xp.reshape(xp.asarray(array, copy=True), (-1,))
            comm.broadcast_(flat, root)
            entries[name] = xp.reshape(flat, tuple(described["shape"]))
        state[int(key)] = entries
    if w.rank != root:
        optimizer.load_state_dict({"state": state, "param_groups": spec["param_groups"]})


def _describe(value):
    if isinstance(value, (bool, int, float)) or value is None:
        return {"value": value}
    if isinstance(value, np.generic):
        return {"value": value.item()}
    shape = tuple(int(d) for d in value.shape)
    if shape == ():
        return {"value": np.asarray(backends.backend_of(value).to_numpy(value)).item()}
    return {"dtype": str(value.dtype), "shape": list(shape)}


def _json_value(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"broadcast_optimizer_state: cannot send a {type(o).__name__} hyper-parameter")


def on_root(fn, what: str, root: int = 0):
    """Run ``fn()`` on rank ``root`` only (reading or writing a file), and tell every
    rank how it went: returns its result on ``root`` (``None`` elsewhere); if it
    raised, every rank raises a ``RuntimeError`` saying so (no rank is left waiting).
    Collective; in a world of one it just calls ``fn``."""
    w = world()
    if w.size == 1:
        return fn()
    result, failure = None, None
    if w.rank == root:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001  (reported to every rank below)
            failure = {"type": type(exc).__name__, "message": str(exc),
                       "where": traceback.format_exc(limit=3)}
    failure = w.broadcast_json(failure, root)
    if failure is not None:
        raise RuntimeError(f"{what} failed on rank {root}: {failure['type']}: {failure['message']}")
    return result


def replicas_agree(model, w: World | None = None) -> bool:
    """Whether every rank holds bit-identical parameters and buffers (a SHA-256 of
    their bytes, compared). Collective; for tests and debugging."""
    w = w or world()
    h = hashlib.sha256()
    for name, _, _, a in _state_arrays(model):
        owner = backends.backend_of(a)
        h.update(name.encode())
        h.update(np.ascontiguousarray(owner.to_numpy(a)).tobytes())
    digest = np.frombuffer(h.digest(), dtype=np.int64).copy()
    every = w.allgather_host(digest)
    return bool(all(np.array_equal(row, every[0]) for row in every))


# ----------------------------------------------------------------------------- the optimizer
class DistributedOptimizer:
    """Average the gradients over every rank before ``optimizer`` updates ``model``.

        optimizer = engine.distributed.DistributedOptimizer(engine.optim.SGD(model.parameters(), lr=0.1),
                                                            model)
        loss.backward()
        optimizer.step()            # averages the gradients, then updates

    Building it is collective: it checks that every rank has the same
    parameters (``ValueError`` naming the ranks otherwise) and, with
    ``broadcast=True``, copies rank 0's parameters, buffers and optimizer
    state to every rank. ``communicator``: ``"auto"`` (NCCL for GPU arrays
    when available, MPI otherwise), ``"nccl"``, ``"mpi"``, or a
    :class:`~engine.distributed.communicators.Communicator`.

    ``synchronize()`` averages the gradients now: call it between
    ``backward()`` and gradient clipping, so that every rank clips the same
    averaged gradient (``fit`` does); ``step()`` then does not average again.
    A parameter without a gradient on some rank counts as zeros there (every
    rank sends the same layout); one without a gradient on every rank keeps
    ``grad=None``. The sum, divided by the world size, equals the gradient of
    one process over the whole batch when the loss is a mean and every rank's
    share has the same size (the sharded ``DataLoader`` makes it so).

    Everything else (``param_groups``, ``state_dict``, schedulers) goes to the
    wrapped optimizer, available as ``optimizer.optimizer``.
    """

    def __init__(self, optimizer, model, communicator="auto", broadcast: bool = True):
        from ..nn.module import Module
        if not isinstance(model, Module):
            raise TypeError(f"DistributedOptimizer: model must be an engine.nn.Module, got {type(model).__name__}")
        if not all(hasattr(optimizer, a) for a in ("param_groups", "step", "zero_grad", "state_dict")):
            raise TypeError("DistributedOptimizer: optimizer must be an engine.optim optimizer "
                            f"(e.g. engine.optim.SGD(model.parameters(), lr=0.1)), got {type(optimizer).__name__}")
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("DistributedOptimizer: the optimizer is already a DistributedOptimizer")
        self.optimizer, self.model = optimizer, model
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        known = {id(p) for p in model.parameters()}
        strangers = sum(id(p) not in known for p in self._params)
        if strangers:
            raise ValueError(f"DistributedOptimizer: {strangers} of the optimizer's {len(self._params)} parameters "
                             "are not parameters of the model (build the optimizer from model.parameters())")
        self.backend = _backend_of([p.data for p in self._params], "DistributedOptimizer")
        self.communicator = _communicator([p.data for p in self._params], communicator, "DistributedOptimizer")
        self.world = self.communicator.world
        check_same_layout(model, optimizer, self.world)
        if broadcast:
            broadcast_parameters(model, 0, self.communicator)
            broadcast_optimizer_state(optimizer, 0, self.communicator)
        self._buffers: list[tuple[FusedBuffer, list[int]]] | None = None
        self._value_slots = 0
        self._synchronized = False

    # -- the wrapped optimizer ----------------------------------------------------
    @property
    def wrapped_optimizer(self):
        """The optimizer this one wraps (what checkpoints store)."""
        return self.optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def __getattr__(self, name):  # anything else the wrapped optimizer has
        if name.startswith("__") or name in ("optimizer", "model"):
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    # -- the step -----------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)
        self._synchronized = False

    def step(self, closure=None):
        """Average the gradients (unless :meth:`synchronize` already did since the
        last step), then update."""
        loss = closure() if closure is not None else None
        if not self._synchronized:
            self.synchronize()
        self.optimizer.step()
        self._synchronized = False
        return loss

    def _build(self, value_slots):
        groups = _by_dtype([p.data for p in self._params])
        self._buffers = []
        for k, (dtype, indices) in enumerate(groups.items()):
            extra = len(self._params) + value_slots if k == 0 else 0  # presence flags and values ride along
            buffer = FusedBuffer(self.backend, self._params[indices[0]].data.dtype,
                                 [self._params[i].data.shape for i in indices], extra)
            self._buffers.append((buffer, indices))
        self._value_slots = value_slots

    def synchronize(self, values=None):
        """Average every gradient over the ranks now (one allreduce per dtype).

        ``values``: an optional 1-D array (same backend) *summed* over the ranks
        in the same message; returned as a new array (``fit`` sends its loss and
        accuracy sums this way, so that one message per step carries all).
        """
        self._synchronized = True
        if self.world.size == 1:
            return values
        xp = self.backend.xp
        k = 0 if values is None else int(values.shape[0])
        if self._buffers is None or k > self._value_slots:
            self._build(max(k, 4))
        grads = [p.grad for p in self._params]
        first = self._buffers[0][0]
        n = len(self._params)
        flags = first.extras
        for buffer, indices in self._buffers:
            buffer.pack([grads[i] for i in indices])
        flags[:n] = self.backend.asarray(np.array([g is not None for g in grads], dtype=np.float64),
                                         dtype=first.dtype)
        if k:
            flags[n:n + k] = xp.astype(values, first.dtype)
        for buffer, _ in self._buffers:
            self.communicator.allreduce_(buffer.array, "sum")
            grads_part = buffer.array[:buffer.total]
            if self.backend.name in ("numpy", "cupy"):  # a slice is a view: divide in place, no temporary
                grads_part /= self.world.size
            else:
                buffer.array[:buffer.total] = grads_part / self.world.size
        present = None
        if any(g is None for g in grads):  # only then read the flags (a host read on a GPU)
            present = self.backend.to_numpy(flags[:n]) > 0
        for buffer, indices in self._buffers:
            for j, i in enumerate(indices):
                p = self._params[i]
                p.grad = buffer.view(j) if present is None or present[i] else None
        return None if values is None else xp.asarray(flags[n:n + k], copy=True)

    def __repr__(self) -> str:
        return (f"DistributedOptimizer({type(self.optimizer).__name__}, rank {self.world.rank} of "
                f"{self.world.size}, {self.communicator.name})")
