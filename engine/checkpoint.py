"""Checkpoints: model, optimizer, scheduler, epoch, RNG state and history in one ``.npz``.

    from engine.checkpoint import save_checkpoint, load_checkpoint
    save_checkpoint("run.npz", model, optimizer, epoch=2, extra={"model": "simple_cnn"})
    ...
    ckpt = load_checkpoint("run.npz", model, optimizer)   # restores all of them
    fit(model, loss, optimizer, loader, epochs=3, initial_epoch=ckpt.epoch)

The file is a plain NumPy ``.npz`` archive, written to a temporary file in the
same folder and renamed into place (a crash never leaves half a checkpoint;
see :mod:`engine._io`), and read without pickle: every entry is a numeric
array or a string (dicts are stored as JSON strings). Keys:

==============================  ===============================================
``format``                      ``"engine-checkpoint/2"``
``manifest``                    JSON ``{"entries": {key: [dtype, shape]}}`` of
                                every other entry (format 2)
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

Loading checks everything before it changes anything (docs/security.md): the
path must be a regular file (a FIFO or device is refused without opening it
for a blocking read); the archive must hold exactly the entries its manifest
lists (format 1 files, written before the manifest existed, are still read:
they must hold every entry that format always had, but an optional entry lost
from one cannot be told from one never written); each entry's dtype and shape
are read from its ``.npy`` header and checked (against the model's and
optimizer's own arrays when they are given) before its data is read, so the
memory read is bounded by what the model needs, or, without a model, by what
the entry's compressed size can physically expand to; the optimizer's groups,
hyper-parameters (finite, in range) and per-parameter state, the scheduler's
state, the RNG state and the history are checked for structure and type. Any
failure is a :class:`CheckpointError` (a ``ValueError``) naming the file and
what is wrong; a missing file is ``FileNotFoundError``.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from numpy.lib import format as npy_format

from . import backends

from . import _state
from ._io import atomic_write, check_writable as _check_writable
from .history import History

__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "check_writable", "load_checkpoint",
           "save_checkpoint"]

FORMAT = "engine-checkpoint/2"
#: Every format :func:`load_checkpoint` reads.
READABLE_FORMATS = ("engine-checkpoint/1", FORMAT)
#: The longest JSON text entry read (characters; history of a long run is well below).
MAX_TEXT_CHARS = 4 << 20
#: deflate cannot expand data more than this (1032:1), so a compressed entry claiming more is a lie.
_MAX_DEFLATE_RATIO = 1032

_ALWAYS = ("format", "backend", "epoch", "rng_state", "extra")  # every format writes these
_TEXT = {"format", "manifest", "backend", "rng_state", "extra", "history", "scheduler",
         "optimizer/class", "optimizer/param_groups"}
# key -> the per-parameter state entries each known optimizer writes, and its hyper-parameters
_OPTIMIZER_STATE = {"SGD": ({"momentum_buffer"}, set()),
                    "Adam": ({"exp_avg", "exp_avg_sq"}, {"step"}),
                    "AdamW": ({"exp_avg", "exp_avg_sq"}, {"step"})}
_HYPER = {"SGD": {"lr", "momentum", "dampening", "weight_decay", "nesterov"},
          "Adam": {"lr", "betas", "eps", "weight_decay", "amsgrad"},
          "AdamW": {"lr", "betas", "eps", "weight_decay", "amsgrad"},
          "RMSprop": {"lr", "alpha", "eps", "weight_decay", "momentum", "centered"},
          "Adagrad": {"lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value"}}
# group keys a group may or may not have: PyTorch's switches and maximize (files written before
# the optimizers took them lack them), named parameters, and what OneCycleLR adds to each group
_OPTIONAL_HYPER = {"maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay",
                   "param_names", "max_lr", "min_lr", "max_momentum", "base_momentum"}
_AT_LEAST_ZERO = {"lr", "initial_lr", "momentum", "weight_decay", "eps", "alpha", "lr_decay",
                  "initial_accumulator_value"}
_BOOLEAN = {"nesterov", "amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused", "centered",
            "decoupled_weight_decay"}
_NULLABLE = {"foreach", "fused"}  # None: "let PyTorch choose"
_SCHEDULER_MIN = {"last_epoch": -1, "_step_count": 0, "step_size": 1, "T_max": 1}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is incomplete or inconsistent, or does not
    fit the model, optimizer or scheduler it is loaded into. The message names the
    file and what is wrong."""


def check_writable(path) -> str:
    """Check that a checkpoint can be saved at ``path`` (call it before training
    starts): ``ValueError`` naming ``path`` if it is a directory, its name is too
    long for the file system, a parent is not a directory, or its folder cannot
    be written. :func:`save_checkpoint` runs the same check. Returns ``path``."""
    return _check_writable(path)


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


# --------------------------------------------------------------------------- saving
def _host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    owner = backends.backend_of(a)
    return owner.to_numpy(a) if owner is not None else np.asarray(a)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"save_checkpoint: {type(o).__name__} value {o!r} cannot be stored in a checkpoint "
                    "(use numbers, strings, lists, dicts or NumPy arrays)")


def _dumps(obj) -> np.ndarray:
    return np.array(json.dumps(obj, default=_json_default))


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
        groups = json.loads(json.dumps(sd["param_groups"], default=_json_default))
        problem = _group_problem(type(optimizer).__name__, groups)
        if problem is not None:
            raise ValueError(f"save_checkpoint: the optimizer's {problem} (it could not be loaded back)")
        arrays["optimizer/class"] = np.array(type(optimizer).__name__)
        arrays["optimizer/param_groups"] = _dumps(sd["param_groups"])
        for index, entries in sd["state"].items():
            for name, value in entries.items():
                if "/" in str(name):
                    raise ValueError(f"save_checkpoint: optimizer state name {name!r} contains '/'")
                arrays[f"optimizer/state/{int(index)}/{name}"] = _scalar_array(
                    value, f"optimizer state {index}/{name}")
    if scheduler is not None:
        arrays["scheduler"] = _dumps(scheduler.state_dict())
    arrays["epoch"] = np.array(-1 if epoch is None else int(epoch), dtype=np.int64)
    arrays["rng_state"] = _dumps(_state.get_rng_state())
    if history is not None:
        arrays["history"] = _dumps(history.as_dict())
    plain = {}
    for key, value in (extra or {}).items():
        key = str(key)
        if isinstance(value, np.ndarray) or backends.backend_of(value) is not None:
            arrays[f"extra/{key}"] = np.array(_host(value), copy=True)
        else:
            plain[key] = value
    arrays["extra"] = _dumps(plain)
    for key, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"save_checkpoint: entry {key!r} would need pickling (dtype object)")
        if not _valid_key(key):
            raise ValueError(f"save_checkpoint: entry name {key!r} cannot be stored")
    manifest = _dumps({"entries": {k: [a.dtype.str, list(a.shape)] for k, a in arrays.items()}})
    return {"format": arrays.pop("format"), "manifest": manifest, **arrays}  # first: what a damaged file keeps


def save_checkpoint(path, model, optimizer=None, epoch: int | None = None, extra: dict | None = None,
                    scheduler=None, history=None, compress: bool = False) -> str:
    """Write ``model``'s state_dict, ``optimizer``'s state, ``scheduler``'s state,
    ``epoch``, the engine RNG state, the backend name, ``history`` and ``extra``
    (a dict of JSON-able values and NumPy arrays) to ``path`` as one ``.npz``.

    ``path`` is checked first (:func:`check_writable`). Written atomically: to a
    temporary file in the same folder, flushed, renamed, and the folder flushed;
    the temporary file is removed on any failure, and those left by killed
    saves to ``path`` are removed. ``path`` is used as given (no ``.npz`` is
    appended). Returns ``path``.
    """
    path = check_writable(path)
    arrays = _collect(model, _unwrapped(optimizer), epoch, extra, scheduler, history)
    return atomic_write(path, lambda f: (np.savez_compressed if compress else np.savez)(f, **arrays))


def _unwrapped(optimizer):
    """The optimizer itself out of a wrapper (engine.distributed.DistributedOptimizer):
    the file records, and loads into, the wrapped optimizer's class."""
    return getattr(optimizer, "wrapped_optimizer", optimizer)


# --------------------------------------------------------------------------- reading the archive
# What reading a damaged archive may raise, from zipfile, zlib, numpy's header parser or json.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
                TypeError, KeyError, IndexError, AttributeError, struct.error, UnicodeError, OverflowError,
                RecursionError, MemoryError, NotImplementedError, SyntaxError)
_MODEL_KEY = re.compile(r"model/(.+)")
_STATE_KEY = re.compile(r"optimizer/state/(0|[1-9][0-9]{0,8})/([^/]+)")
_EXTRA_KEY = re.compile(r"extra/(.+)")


def _valid_key(key: str) -> bool:
    return (key in _TEXT or key == "epoch" or _MODEL_KEY.fullmatch(key) is not None
            or _STATE_KEY.fullmatch(key) is not None or _EXTRA_KEY.fullmatch(key) is not None)


@dataclass
class _Entry:
    key: str
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple
    fortran: bool
    offset: int  # where the data starts in the uncompressed member

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class _Archive:
    """An opened checkpoint: its zip directory and every entry's .npy header."""

    def __init__(self, path: str):
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise self.error(f"cannot be opened: {getattr(exc, 'strerror', None) or exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise self.error(f"is {kind}, not a checkpoint file")
        self.size = st.st_size
        self.file = os.fdopen(fd, "rb")
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def error(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {problem}")

    def close(self) -> None:
        zf = getattr(self, "zip", None)
        if zf is not None:
            zf.close()
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open(self) -> None:
        head = self.file.read(6)
        if head.startswith(b"\x93NUMPY"):
            raise self.error("is a single .npy array, not a checkpoint (an .npz archive written by "
                             "save_checkpoint)")
        if not head:
            raise self.error("is empty")
        self.file.seek(0)
        try:
            self.zip = zipfile.ZipFile(self.file)
            infos = self.zip.infolist()
        except _READ_ERRORS as exc:
            raise self.error(f"not a readable engine checkpoint ({type(exc).__name__}: {exc})") from None
        self.entries: dict[str, _Entry] = {}
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise self.error("corrupt archive: an entry name appears twice")
        self.infos = {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.is_dir():
                raise self.error(f"unexpected archive member {info.filename!r} (a checkpoint holds "
                                 ".npy arrays only)")
            self.infos[info.filename[:-4]] = info

    def keys(self) -> set:
        return set(self.infos)

    def header(self, key: str) -> _Entry:
        """The dtype and shape of ``key`` from its header; its size checked against
        the zip directory and against what its compressed size can hold."""
        if key in self.entries:
            return self.entries[key]
        info = self.infos[key]
        where = f"entry {key!r}"
        if info.flag_bits & 0x1:
            raise self.error(f"{where} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(f"{where} uses compression method {info.compress_type} "
                             "(save_checkpoint writes stored or deflated entries only)")
        if info.compress_size > self.size or info.header_offset > self.size:
            raise self.error(f"{where} claims {info.compress_size} bytes at offset {info.header_offset} "
                             f"of a {self.size}-byte file: the file is truncated or corrupt")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise self.error(f"{where}: corrupt zip directory (stored entry of {info.compress_size} bytes "
                             f"claims {info.file_size})")
        if info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + 4096:
            raise self.error(f"{where} claims {info.file_size} bytes from {info.compress_size} compressed "
                             "bytes, more than deflate can produce")
        try:
            with self.zip.open(info) as f:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npy_format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = npy_format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} (1.0 and 2.0 are read)")
                offset = f.tell()
        except _READ_ERRORS as exc:
            raise self.error(f"{where} has no readable .npy header ({type(exc).__name__}: {exc})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
                or dtype.kind not in "biufU" or dtype.itemsize == 0:
            raise self.error(f"{where} has dtype {dtype.str!r}; checkpoints hold numbers and strings only")
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise self.error(f"{where} has the impossible shape {shape}")
        entry = _Entry(key, info, dtype, tuple(shape), bool(fortran), offset)
        if offset + entry.nbytes != info.file_size:
            raise self.error(f"{where} declares shape {entry.shape} and dtype {dtype.str!r} "
                             f"({entry.nbytes} bytes) but holds {info.file_size - offset} bytes")
        self.entries[key] = entry
        return entry

    def array(self, key: str) -> np.ndarray:
        """The data of ``key``, read into an array of its checked size, CRC verified."""
        entry = self.header(key)
        out = np.empty(math.prod(entry.shape), dtype=entry.dtype)
        view = memoryview(out).cast("B")
        try:
            with self.zip.open(entry.info) as f:
                f.read(entry.offset)
                done = 0
                while done < len(view):
                    n = f.readinto(view[done:done + (1 << 24)])
                    if not n:
                        raise EOFError(f"{len(view) - done} bytes missing")
                    done += n
                if f.read(1):  # also makes zipfile check the CRC
                    raise ValueError("data past the end of the array")
        except _READ_ERRORS as exc:
            raise self.error(f"entry {key!r} is unreadable ({type(exc).__name__}: {exc})") from None
        if entry.fortran:
            return out.reshape(entry.shape[::-1]).transpose()
        return out.reshape(entry.shape)

    def text(self, key: str) -> str:
        entry = self.header(key)
        if entry.dtype.kind != "U" or entry.shape != ():
            raise self.error(f"entry {key!r} should be a string, not an array of {entry.dtype.str!r} "
                             f"and shape {entry.shape}")
        if entry.dtype.itemsize > 4 * MAX_TEXT_CHARS:
            raise self.error(f"entry {key!r} is {entry.dtype.itemsize // 4} characters long "
                             f"(at most {MAX_TEXT_CHARS} are read)")
        value = self.array(key)
        try:
            return str(value[()])
        except (ValueError, UnicodeError) as exc:
            raise self.error(f"entry {key!r} is not valid text ({exc})") from None

    def json(self, key: str):
        try:
            return json.loads(self.text(key))
        except (ValueError, RecursionError, MemoryError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise self.error(f"entry {key!r} is not valid JSON ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None

    def integer(self, key: str) -> int:
        entry = self.header(key)
        if entry.dtype.kind not in "iu" or entry.shape != ():
            raise self.error(f"entry {key!r} should be an integer, not an array of {entry.dtype.str!r} "
                             f"and shape {entry.shape}")
        return int(self.array(key)[()])


# --------------------------------------------------------------------------- checking the content
def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _group_problem(cls: str, groups) -> str | None:
    """What is wrong with saved ``param_groups`` (JSON), or None."""
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        return "param_groups are not a list of dicts"
    expected = 0
    for i, group in enumerate(groups):
        params = group.get("params")
        if not isinstance(params, list) or params != list(range(expected, expected + len(params))) \
                or not params:
            return f"param_groups[{i}]['params'] is not the next run of parameter indices"
        expected += len(params)
        names = set(group) - {"params", "initial_lr"}
        if cls in _HYPER and names - _OPTIONAL_HYPER != _HYPER[cls]:
            return (f"param_groups[{i}] has the hyper-parameters {sorted(names)}, "
                    f"{cls} has {sorted(_HYPER[cls])}")
        for name, value in group.items():
            if name == "params":
                continue
            where = f"param_groups[{i}][{name!r}]"
            if name in _BOOLEAN:
                if not (isinstance(value, bool) or value is None and name in _NULLABLE):
                    return f"{where} is {value!r}, not true or false"
            elif name == "betas":
                if not (isinstance(value, list) and len(value) == 2
                        and all(_finite_number(b) and 0 <= b < 1 for b in value)):
                    return f"{where} is {value!r}, not two numbers in [0, 1)"
            elif name in _AT_LEAST_ZERO or name == "dampening":
                if not _finite_number(value):
                    return f"{where} is {value!r}, not a finite number"
                if name in _AT_LEAST_ZERO and value < 0:
                    return f"{where} is {value!r}, below 0"
            elif not (_json_scalar(value) or isinstance(value, list) and all(map(_json_scalar, value))):
                return f"{where} is {str(value)[:60]}, not a finite number, string or list of them"
    return None


def _json_scalar(value) -> bool:
    return value is None or isinstance(value, (str, bool)) or _finite_number(value)


def _same_structure(saved, own) -> bool:
    """``saved`` (JSON) has the types and list lengths of ``own`` (a live state_dict value);
    numbers finite."""
    if own is None:
        return _json_scalar(saved)
    if isinstance(own, bool):
        return isinstance(saved, bool)
    if isinstance(own, int):
        return isinstance(saved, int) and not isinstance(saved, bool)
    if isinstance(own, float):
        return _finite_number(saved)
    if isinstance(own, str):
        return isinstance(saved, str)
    if isinstance(own, (list, tuple)):
        return isinstance(saved, list) and len(saved) == len(own) and all(
            _same_structure(s, o) for s, o in zip(saved, own))
    if isinstance(own, dict):
        return isinstance(saved, dict) and set(saved) == set(own) and all(
            _same_structure(saved[k], own[k]) for k in own)
    return False


def _rng_problem(state) -> str | None:
    own = _state.host_rng().bit_generator
    if not isinstance(state, dict) or state.get("bit_generator") != type(own).__name__:
        return f"is not the state of a {type(own).__name__} generator"
    try:
        type(own)().state = state
    except Exception as exc:  # noqa: BLE001  (NumPy's setter raises several types)
        return f"is not a valid {type(own).__name__} state ({type(exc).__name__}: {exc})"
    return None


def _history_problem(d) -> str | None:
    if not isinstance(d, dict) or set(d) - {"history", "stop_reason", "stopped_at"}:
        return "is not a dict of 'history', 'stop_reason' and 'stopped_at'"
    columns = d.get("history", {})
    if not isinstance(columns, dict) or not all(
            isinstance(v, list) and all(x is None or isinstance(x, (int, float, str)) for x in v)
            for v in columns.values()):
        return "'history' is not a dict of lists of numbers"
    if not isinstance(d.get("stop_reason"), (str, type(None))):
        return "'stop_reason' is not a string"
    stopped = d.get("stopped_at")
    if stopped is not None and not (isinstance(stopped, list) and len(stopped) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in stopped)):
        return "'stopped_at' is not an (epoch, step) pair"
    return None


def _kind_fits(saved: np.dtype, own) -> bool:
    """A saved array's dtype may be loaded into ``own``'s (floats into floats, ints into ints)."""
    own_name = getattr(own.dtype, "name", None) or str(own.dtype).rsplit(".", 1)[-1]
    if "float" in own_name or "complex" in own_name:
        return saved.kind == "f"
    return saved.kind in "biu"


def _shape_of(a) -> tuple:
    return tuple(int(n) for n in a.shape)


def _check_entries(archive: _Archive, version: str) -> None:
    """The archive holds exactly what the writer produced."""
    keys = archive.keys()
    unknown = sorted(k for k in keys if not _valid_key(k) and k != "manifest")
    if unknown:
        raise archive.error(f"unexpected entries {unknown[:5]} (not written by save_checkpoint)")
    missing = {k for k in _ALWAYS if k not in keys}
    if version != "engine-checkpoint/1":
        if "manifest" not in keys:
            raise archive.error("incomplete: the entry 'manifest' is missing")
        manifest = archive.json("manifest")
        listed = manifest.get("entries") if isinstance(manifest, dict) else None
        if not isinstance(listed, dict) or not all(
                isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], list)
                for v in listed.values()):
            raise archive.error("the entry 'manifest' is corrupt")
        missing |= set(listed) - keys
        extra = sorted(keys - set(listed) - {"manifest"})
        if extra:
            raise archive.error(f"holds entries its manifest does not list: {extra[:5]}")
    if missing:
        missing = sorted(missing)
        raise archive.error(f"incomplete: {len(missing)} entr{'y is' if len(missing) == 1 else 'ies are'} "
                            f"missing ({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}); "
                            "the file is damaged")
    for key in keys:
        entry = archive.header(key)
        if version != "engine-checkpoint/1" and key != "manifest":
            dtype, shape = listed[key]
            if dtype != entry.dtype.str or shape != list(entry.shape):
                raise archive.error(f"entry {key!r} has dtype {entry.dtype.str!r} and shape {entry.shape}, "
                                    f"its manifest says {dtype!r} and {tuple(shape)}")
        if (key in _TEXT) != (entry.dtype.kind == "U"):
            raise archive.error(f"entry {key!r} has dtype {entry.dtype.str!r}")
    if ("optimizer/class" in keys) != ("optimizer/param_groups" in keys):
        raise archive.error("incomplete optimizer state: 'optimizer/class' and 'optimizer/param_groups' "
                            "come together")
    if "optimizer/class" not in keys and any(_STATE_KEY.fullmatch(k) for k in keys):
        raise archive.error("holds optimizer state without 'optimizer/class'")


def _read_optimizer(archive: _Archive, optimizer):
    """(class name, state_dict) read and checked; sizes checked against ``optimizer``'s
    parameters before any state array is read."""
    cls = archive.text("optimizer/class")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", cls):
        raise archive.error(f"'optimizer/class' is {cls[:100]!r}, not a class name")
    groups = archive.json("optimizer/param_groups")
    problem = _group_problem(cls, groups)
    if problem is not None:
        raise archive.error(f"optimizer {problem}")
    n_params = sum(len(g["params"]) for g in groups)
    params = None
    if optimizer is not None:
        if cls != type(optimizer).__name__:
            raise archive.error(f"the checkpoint holds {cls} state, not {type(optimizer).__name__}")
        own = optimizer.param_groups
        if len(groups) != len(own) or any(len(g["params"]) != len(o["params"]) for g, o in zip(groups, own)):
            raise archive.error(f"the optimizer state has groups of {[len(g['params']) for g in groups]} "
                                f"parameters, the optimizer {[len(o['params']) for o in own]}")
        own_names = {k for k in own[0] if k not in ("params", "initial_lr")}
        saved_names = {k for k in groups[0] if k not in ("params", "initial_lr")}
        if (own_names ^ saved_names) - _OPTIONAL_HYPER:
            raise archive.error(f"the optimizer state has the hyper-parameters {sorted(saved_names)}, "
                                f"{cls} has {sorted(own_names)}")
        params = [p for g in own for p in g["params"]]
    state: dict[int, dict] = {}
    for key in sorted(archive.keys()):
        match = _STATE_KEY.fullmatch(key)
        if match is None:
            continue
        index, name = int(match.group(1)), match.group(2)
        if index >= n_params:
            raise archive.error(f"entry {key!r}: there are only {n_params} parameters")
        state.setdefault(index, {})[name] = key
    group_of = [g for g in groups for _ in g["params"]]
    for index, names in state.items():
        if cls in _OPTIMIZER_STATE:
            arrays, scalars = _OPTIMIZER_STATE[cls]
            if group_of[index].get("amsgrad"):
                arrays = arrays | {"max_exp_avg_sq"}
            if set(names) != arrays | scalars:
                raise archive.error(f"the {cls} state of parameter {index} has {sorted(names)}, "
                                    f"expected {sorted(arrays | scalars)}")
        for name, key in names.items():
            entry = archive.header(key)
            if entry.dtype.kind == "U":
                raise archive.error(f"entry {key!r} is text, not a number or array")
            if entry.shape == ():
                continue
            if params is not None and entry.shape != _shape_of(params[index].data):
                raise archive.error(f"entry {key!r} has shape {entry.shape}, parameter {index} of the "
                                    f"optimizer has {_shape_of(params[index].data)}")
            if entry.dtype.kind != "f":
                raise archive.error(f"entry {key!r} has dtype {entry.dtype.str!r}, not a float")
    out: dict[int, dict] = {}
    for index, names in sorted(state.items()):
        values = {}
        for name, key in names.items():
            a = archive.array(key)
            if a.ndim == 0:
                value = a.item()
                if name == "step" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                    raise archive.error(f"entry {key!r} is {value!r}, not a step count")
                if isinstance(value, float) and not math.isfinite(value):
                    raise archive.error(f"entry {key!r} is {value!r}")
                values[name] = value
            else:
                values[name] = a
        out[index] = values
    return cls, {"state": out, "param_groups": [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()} for g in groups]}


def _read_model(archive: _Archive, model, strict: bool) -> OrderedDict:
    """The model entries, in the writer's order; with ``model``, their shapes and
    dtypes checked against its own before any is read."""
    keys = [k for k in archive.infos if _MODEL_KEY.fullmatch(k)]  # the archive keeps the writer's order
    if model is not None:
        own = model.state_dict()
        names = {k[len("model/"):] for k in keys}
        missing = [k for k in own if k not in names]
        unexpected = [k for k in names if k not in own]
        if strict and (missing or unexpected):
            raise archive.error(f"does not fit {type(model).__name__}: missing keys {missing[:10]}, "
                                f"unexpected keys {unexpected[:10]}")
        for name in own:
            if name not in names:
                continue
            entry = archive.header(f"model/{name}")
            if entry.shape != _shape_of(own[name]):
                raise archive.error(f"{name!r} has shape {entry.shape}, the model's {_shape_of(own[name])}")
            if not _kind_fits(entry.dtype, own[name]):
                raise archive.error(f"{name!r} has dtype {entry.dtype.str!r}, the model's is {own[name].dtype}")
    return OrderedDict((k[len("model/"):], archive.array(k)) for k in keys)


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, restore_rng: bool = True,
                    strict: bool = True) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickle).

    If given, ``model`` gets the saved weights (moved to its own backend and
    dtype), ``optimizer`` its state (same class and parameter layout required),
    ``scheduler`` its state; with ``restore_rng`` the engine generator continues
    where it was when saving (so a resumed run draws the same shuffles and
    dropout masks). Everything is checked before anything is changed. Returns a
    :class:`Checkpoint` with everything read.

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file and the
    problem for a file that is not a complete, consistent checkpoint or does
    not fit what it is loaded into; ``FileNotFoundError`` if there is no file.
    """
    path = os.fsdecode(os.fspath(path))
    optimizer = _unwrapped(optimizer)
    with _Archive(path) as archive:
        keys = archive.keys()
        if "format" not in keys:
            raise archive.error("not an engine checkpoint (no 'format' entry)")
        fmt = archive.text("format")
        if fmt not in READABLE_FORMATS:
            raise archive.error(f"not an engine checkpoint (format {fmt[:60]!r}, expected {FORMAT!r})")
        _check_entries(archive, fmt)

        ckpt = Checkpoint(path=path, model_state=OrderedDict())
        ckpt.backend = archive.text("backend")
        if len(ckpt.backend) > 100:
            raise archive.error("the entry 'backend' is not a backend name")
        epoch = archive.integer("epoch")
        if epoch < -1:
            raise archive.error(f"the entry 'epoch' is {epoch}")
        ckpt.epoch = None if epoch < 0 else epoch
        ckpt.rng_state = archive.json("rng_state")
        problem = _rng_problem(ckpt.rng_state)
        if problem is not None:
            raise archive.error(f"the entry 'rng_state' {problem}")
        extra = archive.json("extra")
        if not isinstance(extra, dict):
            raise archive.error("the entry 'extra' is not a JSON object")
        if "history" in keys:
            history = archive.json("history")
            problem = _history_problem(history)
            if problem is not None:
                raise archive.error(f"the entry 'history' {problem}")
            ckpt.history = History.from_dict(history)
        if "scheduler" in keys:
            ckpt.scheduler_state = archive.json("scheduler")
            if not isinstance(ckpt.scheduler_state, dict):
                raise archive.error("the entry 'scheduler' is not a JSON object")
        if scheduler is not None:
            if ckpt.scheduler_state is None:
                raise archive.error("the checkpoint holds no scheduler state")
            own = scheduler.state_dict()
            if not _same_structure(ckpt.scheduler_state, own):
                raise archive.error(f"the scheduler state does not fit {type(scheduler).__name__} "
                                    f"(saved keys {sorted(ckpt.scheduler_state)[:12]}, its keys {sorted(own)[:12]})")
            low = {k: ckpt.scheduler_state[k] for k, v in _SCHEDULER_MIN.items() if k in own and ckpt.scheduler_state[k] < v}
            if low:
                raise archive.error(f"the scheduler state has {low}")
        if "optimizer/class" in keys:
            ckpt.optimizer_class, ckpt.optimizer_state = _read_optimizer(archive, optimizer)
        elif optimizer is not None:
            raise archive.error("the checkpoint holds no optimizer state")
        ckpt.model_state = _read_model(archive, model, strict)
        ckpt.extra = extra
        for key in sorted(keys):
            match = _EXTRA_KEY.fullmatch(key)
            if match is not None:
                if archive.header(key).dtype.kind == "U":
                    raise archive.error(f"entry {key!r} is text, not an array")
                ckpt.extra[match.group(1)] = archive.array(key)

    # everything is read and checked: only now change the caller's objects
    try:
        if model is not None:
            model.load_state_dict(ckpt.model_state, strict=strict)
        if optimizer is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: does not fit: {exc}") from None
    if scheduler is not None:
        scheduler.load_state_dict(ckpt.scheduler_state)
    if restore_rng:
        _state.set_rng_state(ckpt.rng_state)
    return ckpt
