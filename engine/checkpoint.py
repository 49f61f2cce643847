"""Checkpoints: model, optimizer, scheduler, epoch, RNG state and history in one ``.npz``.

    from engine.checkpoint import save_checkpoint, load_checkpoint
    save_checkpoint("run.npz", model, optimizer, epoch=2, extra={"model": "simple_cnn"})
    ...
    ckpt = load_checkpoint("run.npz", model, optimizer)   # restores all of them
    fit(model, loss, optimizer, loader, epochs=3, initial_epoch=ckpt.epoch)

The file is a plain NumPy ``.npz`` archive, written to a temporary file in the
same folder and renamed into place (a crash never leaves half a checkpoint),
and read with ``allow_pickle=False`` only: every entry is a numeric array or a
string (dicts are stored as JSON strings). Keys:

==============================  ===============================================
``format``                      ``"engine-checkpoint/1"``
``model/<name>``                each state_dict entry (``model/0.weight`` …)
``optimizer/class``             the optimizer's class name
``optimizer/param_groups``      JSON of the groups' hyper-parameters
``optimizer/state/<i>/<name>``  per-parameter state (``exp_avg``, ``step`` …)
``scheduler``                   JSON of the scheduler's state (if given)
``epoch``                       int64 (-1 when not given)
``rng_state``                   JSON of :func:`engine.get_rng_state`
``backend``                     the backend the model lived on when saved
``history``                     JSON of a :class:`engine.history.History`
``extra``                       JSON of ``extra`` (its NumPy arrays: ``extra/<key>``)
==============================  ===============================================

Arrays are stored as NumPy arrays whatever the backend, so a checkpoint saved
on one backend loads on any other.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from . import backends

from . import _state
from ._io import atomic_write
from .history import History

__all__ = ["FORMAT", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "engine-checkpoint/1"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read (NumPy arrays and plain Python values)."""

    path: str
    model_state: OrderedDict[str, np.ndarray]
    optimizer_state: dict | None = None
    optimizer_class: str | None = None
    scheduler_state: dict | None = None
    epoch: int | None = None
    rng_state: dict | None = None
    backend: str | None = None
    history: object = None
    extra: dict = field(default_factory=dict)


def _host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    owner = backends.backend_of(a)
    return owner.to_numpy(a) if owner is not None else np.asarray(a)


def _text(obj) -> np.ndarray:
    return np.array(json.dumps(obj))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"save_checkpoint: {type(o).__name__} value {o!r} cannot be stored in a checkpoint "
                    "(use numbers, strings, lists, dicts or NumPy arrays)")


def _scalar_array(value, where):
    if isinstance(value, bool):
        return np.array(value, dtype=np.bool_)
    if isinstance(value, int):
        return np.array(value, dtype=np.int64)
    if isinstance(value, float):
        return np.array(value, dtype=np.float64)
    if value is None:
        raise TypeError(f"save_checkpoint: {where} is None")
    return np.array(_host(value), copy=True)


def _collect(model, optimizer, epoch, extra, scheduler, history) -> dict:
    arrays = {"format": np.array(FORMAT)}
    if model is not None:
        for name, value in model.state_dict().items():
            arrays[f"model/{name}"] = np.array(_host(value), copy=True)
        first = next(iter(model.state_dict().values()), None)
        owner = backends.backend_of(first) if first is not None else None
        arrays["backend"] = np.array(owner.name if owner is not None else _state.get_backend())
    else:
        arrays["backend"] = np.array(_state.get_backend())
    if optimizer is not None:
        sd = optimizer.state_dict()
        arrays["optimizer/class"] = np.array(type(optimizer).__name__)
        arrays["optimizer/param_groups"] = np.array(json.dumps(sd["param_groups"], default=_json_default))
        for index, entries in sd["state"].items():
            for name, value in entries.items():
                if "/" in str(name):
                    raise ValueError(f"save_checkpoint: optimizer state name {name!r} contains '/'")
                arrays[f"optimizer/state/{int(index)}/{name}"] = _scalar_array(
                    value, f"optimizer state {index}/{name}")
    if scheduler is not None:
        arrays["scheduler"] = np.array(json.dumps(scheduler.state_dict(), default=_json_default))
    arrays["epoch"] = np.array(-1 if epoch is None else int(epoch), dtype=np.int64)
    arrays["rng_state"] = np.array(json.dumps(_state.get_rng_state(), default=_json_default))
    if history is not None:
        arrays["history"] = np.array(json.dumps(history.as_dict(), default=_json_default))
    plain = {}
    for key, value in (extra or {}).items():
        key = str(key)
        if isinstance(value, np.ndarray) or backends.backend_of(value) is not None:
            arrays[f"extra/{key}"] = np.array(_host(value), copy=True)
        else:
            plain[key] = value
    arrays["extra"] = np.array(json.dumps(plain, default=_json_default))
    for key, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"save_checkpoint: entry {key!r} would need pickling (dtype object)")
    return arrays


def save_checkpoint(path, model, optimizer=None, epoch: int | None = None, extra: dict | None = None,
                    scheduler=None, history=None, compress: bool = False) -> str:
    """Write ``model``'s state_dict, ``optimizer``'s state, ``scheduler``'s state,
    ``epoch``, the engine RNG state, the backend name, ``history`` and ``extra``
    (a dict of JSON-able values and NumPy arrays) to ``path`` as one ``.npz``.

    Written atomically: to a temporary file in the same folder, then renamed.
    ``path`` is used as given (no ``.npz`` is appended). Returns ``path``.
    """
    path = os.fspath(path)
    arrays = _collect(model, optimizer, epoch, extra, scheduler, history)
    return atomic_write(path, lambda f: (np.savez_compressed if compress else np.savez)(f, **arrays))


def _read(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable engine checkpoint ({type(exc).__name__}: {exc})") from None


def _loads(a, key, path):
    try:
        return json.loads(str(a[()]))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: corrupt checkpoint entry {key!r}: {exc}") from None


def _py(a):
    """0-d arrays as Python numbers, others as they are."""
    return a.item() if isinstance(a, np.ndarray) and a.ndim == 0 else a


def _tuples(group: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in group.items()}


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, restore_rng: bool = True,
                    strict: bool = True) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``allow_pickle=False``).

    If given, ``model`` gets the saved weights (moved to its own backend and
    dtype), ``optimizer`` its state (same class and parameter layout required),
    ``scheduler`` its state; with ``restore_rng`` the engine generator continues
    where it was when saving (so a resumed run draws the same shuffles and
    dropout masks). Returns a :class:`Checkpoint` with everything read.
    """
    path = os.fspath(path)
    raw = _read(path)
    fmt = str(raw["format"][()]) if "format" in raw else None
    if fmt != FORMAT:
        raise ValueError(f"{path}: not an engine checkpoint (format {fmt!r}, expected {FORMAT!r})")
    model_state = OrderedDict((k[len("model/"):], v) for k, v in raw.items() if k.startswith("model/"))
    ckpt = Checkpoint(path=path, model_state=model_state)
    ckpt.backend = str(raw["backend"][()]) if "backend" in raw else None
    epoch = int(raw["epoch"][()]) if "epoch" in raw else -1
    ckpt.epoch = None if epoch < 0 else epoch
    ckpt.rng_state = _loads(raw["rng_state"], "rng_state", path) if "rng_state" in raw else None
    if "optimizer/class" in raw:
        ckpt.optimizer_class = str(raw["optimizer/class"][()])
        groups = [_tuples(g) for g in _loads(raw["optimizer/param_groups"], "optimizer/param_groups", path)]
        state: dict[int, dict] = {}
        prefix = "optimizer/state/"
        for key, value in raw.items():
            if key.startswith(prefix):
                index, name = key[len(prefix):].split("/", 1)
                state.setdefault(int(index), {})[name] = _py(value)
        ckpt.optimizer_state = {"state": dict(sorted(state.items())), "param_groups": groups}
    if "scheduler" in raw:
        ckpt.scheduler_state = _loads(raw["scheduler"], "scheduler", path)
    if "history" in raw:
        ckpt.history = History.from_dict(_loads(raw["history"], "history", path))
    ckpt.extra = _loads(raw["extra"], "extra", path) if "extra" in raw else {}
    for key, value in raw.items():
        if key.startswith("extra/"):
            ckpt.extra[key[len("extra/"):]] = value

    if model is not None:
        model.load_state_dict(model_state, strict=strict)
    if optimizer is not None:
        if ckpt.optimizer_state is None:
            raise ValueError(f"{path}: the checkpoint holds no optimizer state")
        if ckpt.optimizer_class != type(optimizer).__name__:
            raise ValueError(f"{path}: the checkpoint holds {ckpt.optimizer_class} state, "
                             f"not {type(optimizer).__name__}")
        optimizer.load_state_dict(ckpt.optimizer_state)
    if scheduler is not None:
        if ckpt.scheduler_state is None:
            raise ValueError(f"{path}: the checkpoint holds no scheduler state")
        scheduler.load_state_dict(ckpt.scheduler_state)
    if restore_rng and ckpt.rng_state is not None:
        _state.set_rng_state(ckpt.rng_state)
    return ckpt
