"""The training loop: ``fit``, ``evaluate``, ``predict``, the ``History`` they
record, and callbacks (``EarlyStopping``, ``ModelCheckpoint``).

    import engine
    from engine.data import load_dataset, DataLoader, train_val_split
    from engine.training import fit, evaluate

    engine.manual_seed(0)
    train, val = train_val_split(load_dataset("mnist5k"), 0.1, seed=0)
    model = engine.models.simple_cnn()
    loss = engine.nn.CrossEntropyLoss()
    opt = engine.optim.Adam(model.parameters(), lr=1e-3)
    history = fit(model, loss, opt, DataLoader(train, 64, shuffle=True),
                  DataLoader(val, 256), epochs=3)
    print(evaluate(model, DataLoader(load_dataset("mnist5k", "test"), 256), loss))

Synchronisation: one host read per step (the loss and the batch's correct
count, together, as a 2-element array: the progress bar and the NaN check need
them); everything else stays on the device until the end of the epoch.

A NaN or infinite training loss stops training: the update that would have
used it is skipped, the weights of the last step whose loss was finite are put
back, a message says so (``History.stop_reason``), and ``fit`` returns.

Several ranks (``mpiexec -n 4 python -m mpi4py ...``, :mod:`engine.distributed`):
the optimizer must be a ``DistributedOptimizer`` and the loaders sharded; the
step's loss and accuracy ride in the gradient average's message, so every
rank sees the whole batch's figures and stops on a NaN together; metrics are
summed over the ranks, BatchNorm running statistics averaged before
validation; early stopping and NaN stops are agreed; only rank 0 prints and
writes checkpoints. The hooks (``engine/distributed/fitting.py``) do nothing
in a world of one.
"""
from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np

from . import backends

from . import _state
from .autograd import no_grad
from .autograd.tensor import Tensor, as_array
from .history import History
from .nn.module import Module
from .nn.utils import clip_grad_norm_
from .schedulers import OneCycleLR, ReduceLROnPlateau

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitState",
    "History",
    "ModelCheckpoint",
    "NonFiniteLossWarning",
    "evaluate",
    "fit",
    "predict",
]


class NonFiniteLossWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite."""


# --------------------------------------------------------------------------- callbacks
class FitState:
    """What callbacks see: the objects being trained and a way to stop."""

    def __init__(self, model, loss, optimizer, history, scheduler, epochs):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.history, self.scheduler, self.epochs = history, scheduler, epochs
        self.epoch = 0
        self.stop_training = False
        self.stop_reason = None
        self.stopped_at = None  # (epoch, step) of a non-finite loss

    def stop(self, reason: str) -> None:
        """Ask :func:`fit` to stop after the current epoch."""
        self.stop_training = True
        self.stop_reason = reason


class Callback:
    """Hooks called by :func:`fit`; override the ones you need.

    ``logs`` of ``on_epoch_end`` hold the epoch's metrics (``loss``,
    ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``time`` …);
    ``state.stop(reason)`` ends training after the epoch.
    """

    def on_train_begin(self, state: FitState) -> None:
        pass

    def on_epoch_begin(self, epoch: int, state: FitState) -> None:
        pass

    def on_batch_end(self, step: int, logs: dict, state: FitState) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict, state: FitState) -> None:
        pass

    def on_train_end(self, state: FitState) -> None:
        pass


def _copy_state(model):
    """A detached copy of every parameter and buffer, on the model's backend."""
    out = {}
    for k, v in model.state_dict().items():
        out[k] = _copy_array(v)
    return out


def _copy_array(a):
    backend = backends.backend_of(a)
    if backend is None:
        return np.array(a, copy=True)
    return backend.xp.asarray(a, copy=True)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``mode``: ``"min"``, ``"max"`` or ``"auto"`` (``max`` for accuracies).
    With ``restore_best_weights`` the model gets back the weights of its best
    epoch when training ends (stopped early or not).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True, verbose: bool = True):
        if not isinstance(monitor, str):
            raise TypeError(f"EarlyStopping: monitor must be a metric name such as 'val_loss', got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta):
            raise ValueError(f"EarlyStopping: min_delta must be a finite number, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(float(min_delta))
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.restore_best_weights, self.verbose = restore_best_weights, verbose
        self.best = self.best_epoch = self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def _improved(self, value) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, state):
        self.best = self.best_epoch = self.best_weights = None
        self.wait = 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs, state):
        value = logs.get(self.monitor)
        if value is None:
            known = ", ".join(k for k, v in logs.items() if isinstance(v, float))
            raise KeyError(f"EarlyStopping: metric {self.monitor!r} is not recorded (have: {known}); "
                           f"'val_*' metrics need a val_loader in fit()")
        if not math.isfinite(value):
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = _copy_state(state.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            state.stop(f"early stopping: {self.monitor} has not improved for {self.wait} epoch(s) "
                       f"(best {self.best:.4f} at epoch {self.best_epoch})")

    def on_train_end(self, state):
        if self.restore_best_weights and self.best_weights is not None \
                and self.best_epoch != state.history.last("epoch"):
            state.model.load_state_dict(self.best_weights)
            if self.verbose and _is_root():
                print(f"EarlyStopping: restored the weights of epoch {self.best_epoch} "
                      f"({self.monitor} {self.best:.4f})", file=sys.stderr)


class ModelCheckpoint(Callback):
    """Save a checkpoint (:func:`engine.checkpoint.save_checkpoint`) after every epoch,
    or only when ``monitor`` improves with ``save_best_only``. ``path`` may contain
    ``{epoch}``. ``extra`` is stored alongside (JSON-able values)."""

    def __init__(self, path: str, monitor: str = "val_loss", save_best_only: bool = False,
                 extra: dict | None = None):
        if not isinstance(monitor, str):
            raise TypeError(f"ModelCheckpoint: monitor must be a metric name such as 'val_loss', got {monitor!r}")
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"ModelCheckpoint: extra must be a dict or None, got {type(extra).__name__}")
        from .checkpoint import check_writable
        check_writable(str(path).format(epoch=1))  # a bad target is an error now, not after the first epoch
        self.path, self.monitor, self.save_best_only = str(path), monitor, bool(save_best_only)
        self.extra = dict(extra or {})
        self.mode = "max" if "acc" in monitor else "min"
        self.best = None

    def on_epoch_end(self, epoch, logs, state):
        from .checkpoint import save_checkpoint
        from .distributed import fitting, on_root
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None or not math.isfinite(value):
                return
            if self.best is not None and (value >= self.best if self.mode == "min" else value <= self.best):
                return
            self.best = value
        # rank 0 writes (atomically); the others wait for it and learn whether it worked
        on_root(lambda: save_checkpoint(self.path.format(epoch=epoch), state.model, state.optimizer, epoch=epoch,
                                        extra={**self.extra, **fitting.run_record(state)},
                                        scheduler=state.scheduler, history=state.history),
                f"ModelCheckpoint: saving {self.path.format(epoch=epoch)}")


# --------------------------------------------------------------------------- progress
class _Progress:
    """A tqdm bar on a terminal; plain lines without tqdm; nothing when not a terminal."""

    MININTERVAL = 0.1  # seconds between redraws of the bar

    def __init__(self, enabled: bool, total: int, desc: str, stream):
        self.bar = None
        self.plain = False
        self.total, self.desc, self.stream = total, desc, stream
        if not enabled or not _isatty(stream):
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.plain = True
            self.every = max(1, total // 10)
            return
        self.bar = tqdm(total=total, desc=desc, unit="batch", leave=False, file=stream,
                        dynamic_ncols=True, mininterval=self.MININTERVAL)

    def update(self, step, loss, acc, rate):
        text = f"loss {loss:.4f}" + (f" acc {acc:.2%}" if acc is not None else "") + f" {rate:,.0f} samples/s"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.plain and (step % self.every == 0 or step == self.total):
            print(f"{self.desc} step {step}/{self.total}: {text}", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- helpers
def _is_classification(logits, y) -> bool:
    return logits.ndim == 2 and y.ndim == 1 and "int" in str(y.dtype)


def _correct(xp, logits, y, dtype):
    """Number of right answers in the batch, as a 0-d array of ``dtype`` (no sync)."""
    return xp.sum(xp.astype(xp.argmax(logits, axis=1) == y, dtype))


def _lr_of(optimizer):
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _check_fit_args(model, loss, optimizer, epochs, initial_epoch, clip_grad_norm):
    if not isinstance(model, Module):
        raise TypeError(f"fit: model must be an engine.nn.Module, got {type(model).__name__}")
    if not callable(loss):
        raise TypeError("fit: loss must be callable as loss(output, target), e.g. engine.nn.CrossEntropyLoss() "
                        f"or engine.nn.functional.cross_entropy; got {type(loss).__name__}")
    if not hasattr(optimizer, "step") or not hasattr(optimizer, "zero_grad"):
        raise TypeError(f"fit: optimizer must be an engine.optim optimizer, got {type(optimizer).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
        raise ValueError(f"fit: initial_epoch must be a non-negative int, got {initial_epoch!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"fit: clip_grad_norm must be positive or None, got {clip_grad_norm!r}")


# --------------------------------------------------------------------------- fit
def fit(model, loss, optimizer, train_loader, val_loader=None, epochs: int = 1, callbacks=(),
        scheduler=None, clip_grad_norm: float | None = None, progress: bool = True,
        initial_epoch: int = 0, history: History | None = None, file=None) -> History:
    """Train ``model`` and return its :class:`History`.

    ``loss``: a loss module (``engine.nn.CrossEntropyLoss()``); ``optimizer``:
    an ``engine.optim`` optimizer over ``model.parameters()``;
    ``train_loader``/``val_loader``: iterables of ``(x, y)`` batches on the
    model's backend (``engine.data.DataLoader``). Epochs run from
    ``initial_epoch + 1`` to ``epochs`` (so a run resumed from a checkpoint
    saved after epoch 2 passes ``initial_epoch=2`` and the same ``epochs``).

    ``scheduler`` (``engine.schedulers``) steps when its kind asks (see
    :func:`scheduler_step_unit`): after every epoch; after every optimizer
    step for per-batch schedules (``OneCycleLR``); after every epoch with the
    monitored loss for ``ReduceLROnPlateau`` (``val_loss`` when there is a
    ``val_loader``, else the epoch's training loss);
    ``clip_grad_norm`` rescales gradients to that global L2 norm;
    ``callbacks``: :class:`Callback` objects such as :class:`EarlyStopping`.
    ``progress``: a progress bar (tqdm, on a terminal) and one line per epoch
    on ``file`` (default ``sys.stdout``); ``False`` prints nothing.
    ``history``: an existing :class:`History` to append to (resuming).
    """
    _check_fit_args(model, loss, optimizer, epochs, initial_epoch, clip_grad_norm)
    from .distributed.fitting import FitSync
    sync = FitSync(optimizer, train_loader)  # across ranks; does nothing in a world of one
    progress = progress and sync.is_root
    out = sys.stdout if file is None else file
    callbacks = list(callbacks or ())
    history = History() if history is None else history
    state = FitState(model, loss, optimizer, history, scheduler, epochs)
    state.train_loader = train_loader
    params = model.parameters()
    step_unit = scheduler_step_unit(scheduler) if scheduler is not None else None
    good = None  # weights of the last step whose loss was finite
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        for epoch in range(initial_epoch + 1, epochs + 1):
            state.epoch = epoch
            sync.begin_epoch(train_loader, epoch)
            for cb in callbacks:
                cb.on_epoch_begin(epoch, state)
            lr = _lr_of(optimizer)
            model.train()
            try:
                n_batches = len(train_loader)
            except TypeError:
                n_batches = None
            bar = _Progress(progress, n_batches, f"epoch {epoch}/{epochs}", sys.stderr)
            seen, loss_sum, correct_sum, classify, xp = 0, 0.0, 0.0, None, None
            start = time.perf_counter()
            try:
                for step, (x, y) in enumerate(train_loader, 1):
                    if xp is None:
                        xp = backends.backend_of(x).xp
                    optimizer.zero_grad()
                    output = model(x)
                    loss_value = _as_loss(loss(output, y))
                    loss_value.backward()
                    logits = as_array(output)
                    value = backends.backend_of(loss_value.data).xp.reshape(loss_value.data, ())
                    if classify is None:
                        classify = _is_classification(logits, y)
                    correct = _correct(xp, logits, y, value.dtype) if classify else xp.zeros_like(value)
                    pair = xp.stack([value, correct])
                    # the one sync; across ranks it also averages the gradients (so clipping comes after)
                    batch_loss, batch_correct, n = sync.read_step(pair, int(x.shape[0]))
                    if clip_grad_norm is not None:
                        clip_grad_norm_(params, clip_grad_norm)
                    if not math.isfinite(batch_loss):
                        _stop_on_nonfinite(state, model, good, epoch, step, batch_loss,
                                           _label_problem(logits, y) if classify else None, warn=sync.is_root)
                        break
                    good = _snapshot(params, good)
                    optimizer.step()
                    if step_unit == "batch":
                        scheduler.step()
                    seen += n
                    loss_sum += batch_loss * n
                    correct_sum += batch_correct
                    elapsed = time.perf_counter() - start
                    logs = {"loss": batch_loss, "batch_size": n}
                    bar.update(step, loss_sum / seen, correct_sum / seen if classify else None,
                               seen / max(elapsed, 1e-9))
                    for cb in callbacks:
                        cb.on_batch_end(step, logs, state)
            finally:
                bar.close()
            elapsed = time.perf_counter() - start
            if state.stop_training and seen == 0:
                break
            sync.end_epoch(model)  # BatchNorm running statistics averaged before validation and checkpoints
            logs = {"epoch": epoch, "loss": loss_sum / max(seen, 1),
                    "accuracy": (correct_sum / max(seen, 1)) if classify else None,
                    "lr": lr, "time": elapsed, "samples_per_s": seen / max(elapsed, 1e-9)}
            data_time = getattr(train_loader, "data_time", None)  # engine.data.DataLoader measures it
            if isinstance(data_time, float) and elapsed > 0:
                logs["data_share"] = data_time / elapsed
            if val_loader is not None and not state.stop_training:
                val = evaluate(model, val_loader, loss)
                logs["val_loss"], logs["val_accuracy"] = val.get("loss"), val.get("accuracy")
            history.append(**logs)
            if progress:
                print(_epoch_line(logs, epochs), file=out, flush=True)
            if state.stop_training:  # a NaN stop: no scheduler step, no callbacks on a partial epoch
                break
            if step_unit == "epoch":
                scheduler.step()
            elif step_unit == "metric":
                scheduler.step(logs["val_loss"] if logs.get("val_loss") is not None else logs["loss"])
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs, state)
            sync.agree_to_stop(state)
            if state.stop_training:
                if progress:
                    print(state.stop_reason, file=out, flush=True)
                break
    finally:
        for cb in callbacks:
            cb.on_train_end(state)
    history.stop_reason = state.stop_reason
    history.stopped_at = state.stopped_at
    model.train()
    return history


def scheduler_step_unit(scheduler) -> str:
    """When :func:`fit` steps ``scheduler``: ``"epoch"`` (``step()`` after each epoch),
    ``"batch"`` (``step()`` after each optimizer step) or ``"metric"``
    (``step(monitored loss)`` after each epoch).

    A scheduler may say so itself with a ``step_unit`` attribute holding one of
    these; otherwise ``ReduceLROnPlateau`` is ``"metric"``, ``OneCycleLR`` (whose
    ``total_steps`` counts batches, as in PyTorch) is ``"batch"`` and every other
    scheduler ``"epoch"``.
    """
    unit = getattr(scheduler, "step_unit", None)
    if unit is None:
        unit = "metric" if isinstance(scheduler, ReduceLROnPlateau) else \
            "batch" if isinstance(scheduler, OneCycleLR) else "epoch"
    if unit not in ("epoch", "batch", "metric"):
        raise ValueError(f"fit: scheduler.step_unit must be 'epoch', 'batch' or 'metric', got {unit!r}")
    return unit


def _as_loss(value):
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise TypeError("fit: the loss must return a one-element Tensor (reduction 'mean' or 'sum'), got "
                        f"{type(value).__name__} with shape {getattr(value, 'shape', None)}")
    if not value.requires_grad:
        raise RuntimeError("fit: the loss does not depend on any parameter that requires a gradient "
                           "(are all parameters frozen with requires_grad_(False)?)")
    return value


def _snapshot(params, previous):
    """Copy the parameters (reusing the previous snapshot's buffers where possible)."""
    if previous is None or len(previous) != len(params):
        return [_copy_array(p.data) for p in params]
    out = []
    for p, old in zip(params, previous):
        if isinstance(old, np.ndarray) and isinstance(p.data, np.ndarray) and old.shape == p.data.shape \
                and old.dtype == p.data.dtype:
            np.copyto(old, p.data)
            out.append(old)
        else:
            out.append(_copy_array(p.data))
    return out


def _label_problem(logits, y) -> str | None:
    """Why a classification batch's loss is NaN if its labels are out of range:
    device backends do not check labels on the host every step (no sync), so
    cross-entropy marks such a batch with a NaN loss instead of raising."""
    labels = _state.to_numpy(y)
    n_classes = int(logits.shape[1])
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        return (f"the batch has labels in [{int(labels.min())}, {int(labels.max())}] but the model has "
                f"{n_classes} classes (labels must be in [0, {n_classes - 1}])")
    return None


def _stop_on_nonfinite(state, model, good, epoch, step, value, cause=None, warn=True):
    params = model.parameters()
    if good is not None:
        for p, saved in zip(params, good):
            p.data = _copy_array(saved)
        kept = "restored the weights of the last step with a finite loss"
    else:
        kept = "the weights are those it started with (no step had a finite loss)"
    for p in params:
        p.grad = None
    advice = (f"Fix the labels: {cause}." if cause else
              "Try a lower learning rate, gradient clipping (clip_grad_norm) or check the inputs for NaN/inf.")
    message = f"training stopped: the loss became {value} at epoch {epoch}, step {step}; {kept}. {advice}"
    state.stop(message)
    state.stopped_at = (epoch, step)
    if warn:
        warnings.warn(message, NonFiniteLossWarning, stacklevel=3)


def _epoch_line(logs, epochs) -> str:
    parts = [f"epoch {logs['epoch']}/{epochs}", f"loss {logs['loss']:.4f}"]
    if logs.get("accuracy") is not None:
        parts.append(f"acc {logs['accuracy']:.2%}")
    if logs.get("val_loss") is not None:
        parts.append(f"val_loss {logs['val_loss']:.4f}")
    if logs.get("val_accuracy") is not None:
        parts.append(f"val_acc {logs['val_accuracy']:.2%}")
    if logs.get("lr") is not None:
        parts.append(f"lr {logs['lr']:.3g}")
    parts.append(f"{logs['time']:.1f}s ({logs['samples_per_s']:,.0f} samples/s"
                 + (f", data {logs['data_share']:.0%}" if logs.get("data_share") is not None else "") + ")")
    return "  ".join(parts)


# --------------------------------------------------------------------------- evaluate / predict
class _EvalMode:
    """Evaluation mode for a block, then back to the mode each module had."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.modes:
            object.__setattr__(m, "training", mode)


def evaluate(model, loader, loss=None) -> dict:
    """Loss and accuracy of ``model`` over ``loader`` in evaluation mode (dropout off).

    Returns ``{"n": samples, "accuracy": fraction, "loss": mean loss}`` (``loss``
    only if a loss module is given; ``accuracy`` for integer class labels).
    The sums stay on the device; one host read at the end.
    """
    if not isinstance(model, Module):
        raise TypeError(f"evaluate: model must be an engine.nn.Module, got {type(model).__name__}")
    loss_total = correct_total = None
    n, classify = 0, None
    with _EvalMode(model), no_grad():
        for x, y in loader:
            xp = backends.backend_of(as_array(x)).xp
            logits = as_array(model(x))
            b = int(x.shape[0])
            n += b
            if classify is None:
                classify = _is_classification(logits, y)
            if classify:
                c = _correct(xp, logits, y, xp.float64 if _has_f64(xp) else logits.dtype)
                correct_total = c if correct_total is None else correct_total + c
            if loss is not None:
                value = as_array(loss(logits, y))
                value = xp.astype(value, xp.float64) * b if _has_f64(xp) else value * b
                loss_total = value if loss_total is None else loss_total + value
    correct = float(_state.to_numpy(correct_total)) if correct_total is not None else 0.0
    loss_sum = float(_state.to_numpy(loss_total)) if loss_total is not None else 0.0
    from .distributed.fitting import sum_evaluation
    n, correct, loss_sum, classify = sum_evaluation(loader, n, correct, loss_sum, classify)  # a sharded loader
    result = {"n": n}
    if n and classify:
        result["accuracy"] = correct / n
    if n and loss is not None:
        result["loss"] = loss_sum / n
    return result


def _is_root() -> bool:
    from .distributed import world
    return world().is_root


def _has_f64(xp) -> bool:
    return getattr(xp, "float64", None) is not None


def predict(model, data, batch_size: int = 256, classes: bool = False):
    """Outputs of ``model`` (logits) for ``data`` in evaluation mode, concatenated.

    ``data``: an array ``(N, C, H, W)`` (any backend or NumPy; moved to the
    model's backend, used as is: normalise it as in training) or a loader of
    ``(x, y)`` / ``x`` batches. ``classes=True`` returns the predicted class
    indices ``(N,)`` instead of ``(N, K)`` logits.
    """
    if not isinstance(model, Module):
        raise TypeError(f"predict: model must be an engine.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"predict: batch_size must be a positive int, got {batch_size!r}")
    if isinstance(data, (list, tuple)) and data and not isinstance(data[0], (list, tuple)) \
            and hasattr(data[0], "shape"):
        data = np.stack([_state.to_numpy(d) for d in data])  # a list of images
    data = as_array(data)
    if hasattr(data, "shape") and hasattr(data, "ndim"):
        params = model.parameters()
        target = backends.backend_of(params[0].data) if params else _state.current()
        array = data if backends.backend_of(data) is target else target.asarray(_state.to_numpy(data))
        if "float" not in str(array.dtype):
            raise TypeError(f"predict: inputs must be floating point (normalised as in training), "
                            f"got dtype {array.dtype}")
        n = int(array.shape[0])
        batches = (array[i:min(i + batch_size, n), ...] for i in range(0, n, batch_size))
    elif hasattr(data, "__iter__"):
        batches = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
    else:
        raise TypeError(f"predict: data must be an array (N, C, H, W), a Tensor, a list of images or a loader "
                        f"of batches, got {type(data).__name__}")
    outs, xp = [], None
    with _EvalMode(model), no_grad():
        for x in batches:
            x = as_array(x)
            xp = backends.backend_of(x).xp
            y = as_array(model(x))
            outs.append(xp.argmax(y, axis=1) if classes else y)
    if not outs:
        raise ValueError("predict: no inputs")
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
