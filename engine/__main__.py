"""Command line: ``python -m engine train|evaluate|predict|summary`` (also installed as ``engine``).

    python -m engine train --model simple_cnn --dataset mnist5k --epochs 3 --save model.npz
    python -m engine train --model resnet20 --dataset cifar10 --augment --epochs 30 --save cifar.npz
    mpiexec -n 4 python -m mpi4py -m engine train --distributed --batch-size 256   # docs/distributed.md
    python -m engine evaluate --checkpoint model.npz
    python -m engine predict --checkpoint model.npz digit.png
    python -m engine summary --model simple_cnn

``python -m engine <command> --help`` lists every option.

Exit status (every failure is one line on stderr, ``error: ...``; ``--debug``
or ``ENGINE_DEBUG=1`` shows the traceback instead):

====  ===========================================================================
0     success
1     training stopped on a NaN or infinite loss (the checkpoint, if saved, says
      where; such a run cannot be resumed)
2     bad usage or input: an argument, a dataset, a model that does not fit, a
      resume whose settings conflict with the checkpoint's
3     a checkpoint that cannot be read, is incomplete or does not fit
4     a file could not be read or written (missing, permissions, disk full)
5     out of memory
70    an internal error (a bug: please report it with the ``--debug`` output)
130   interrupted (Ctrl-C)
====  ===========================================================================
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

__all__ = ["EXIT_CODES", "build_parser", "main"]

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULERS = ("none", "step", "cosine")
EXIT_CODES = {"ok": 0, "nan_stop": 1, "bad_input": 2, "checkpoint": 3, "io": 4, "memory": 5, "internal": 70,
              "interrupted": 130}
_EPILOG = ("exit status: 0 success, 1 stopped on a NaN/inf loss, 2 bad usage or input, 3 unreadable or "
           "mismatched checkpoint, 4 file error, 5 out of memory, 70 internal error, 130 interrupted")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _number(text, what, ok, expected):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_float(text):
    return _number(text, "a positive number", lambda v: v > 0, "a finite number > 0")


def _non_negative_float(text):
    return _number(text, "a number >= 0", lambda v: v >= 0, "a finite number >= 0")


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), got {text!r}") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), got {text!r}")
    return value


def _shape(text):
    try:
        dims = tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,28,28, got {text!r}") from None
    if len(dims) not in (3, 4) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W or N,C,H,W positive sizes, got {text!r}")
    return dims


def _data_args(p):
    from .data import DATASET_NAMES
    p.add_argument("--dataset", default=None,
                   help=f"{', '.join(DATASET_NAMES)} (default: mnist5k, which ships with the package)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the IDX files of mnist / fashion-mnist, or CIFAR's binary archive or "
                        "its extracted folder (also searched: $ENGINE_DATA, ~/.cache/engine, /usr/share/datasets)")


def build_parser() -> argparse.ArgumentParser:
    from .models import model_names
    parser = argparse.ArgumentParser(
        prog="python -m engine", epilog=_EPILOG,
        description="Train, evaluate and inspect CNNs with the array-API engine.")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict,summary}")

    t = sub.add_parser("train", help="train a model and report its held-out (test split) accuracy", epilog=_EPILOG,
                       description="Train a model, print one line per epoch and the accuracy on the "
                                   "dataset's test split (never seen in training) at the end. With --resume, "
                                   "every setting not given is the checkpoint's; one given that differs from "
                                   "it is an error.")
    # Settings that a checkpoint records default to None here: None means "not given"
    # (then TRAIN_DEFAULTS, or the checkpoint's value when resuming).
    t.add_argument("--model", default=None, choices=model_names(), help="default: simple_cnn")
    _data_args(t)
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help="total epochs (default: 3; when resuming, the checkpoint's plan)")
    t.add_argument("--batch-size", type=_positive_int, default=None, help="default: 64")
    t.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: 0.001)")
    t.add_argument("--optimizer", default=None, choices=_OPTIMIZERS, help="default: adam")
    t.add_argument("--momentum", type=_non_negative_float, default=None, help="SGD momentum (default: 0.9)")
    t.add_argument("--weight-decay", type=_non_negative_float, default=None,
                   help="weight decay (default: 0, or 0.01 for adamw)")
    t.add_argument("--scheduler", default=None, choices=_SCHEDULERS,
                   help="learning-rate schedule over the epochs (default: none)")
    t.add_argument("--clip-grad-norm", type=_positive_float, default=None, help="clip gradients to this L2 norm")
    t.add_argument("--val-fraction", type=_fraction, default=None,
                   help="share of the training split held out for validation, 0 for none (default: 0.1)")
    t.add_argument("--patience", type=_positive_int, default=None,
                   help="early stopping: stop when val_loss has not improved for this many epochs")
    t.add_argument("--seed", type=_seed, default=None, help="seed of every random draw (default: 0)")
    t.add_argument("--backend", default="numpy", help="numpy (default), array_api_strict or cupy")
    t.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads: the engine's copy and pooling loops, and the BLAS when threadpoolctl "
                        "is installed (default: $ENGINE_NUM_THREADS, else every usable core)")
    t.add_argument("--dtype", default=None, choices=("float32", "float64"), help="default: float32")
    t.add_argument("--save", default=None, metavar="PATH",
                   help="write a checkpoint (.npz) at the end (checked before training starts)")
    t.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from a checkpoint saved by --save: settings not given are the checkpoint's, "
                        "a given one that differs is an error; --epochs is the total count")
    t.add_argument("--plot", default=None, metavar="PNG", help="save the training curves (needs matplotlib)")
    t.add_argument("--plot-filters", default=None, metavar="PNG",
                   help="save the first conv layer's filters as images (needs matplotlib)")
    t.add_argument("--train-samples", type=_positive_int, default=None,
                   help="use only the first N training samples (quick runs)")
    t.add_argument("--test-samples", type=_positive_int, default=None,
                   help="evaluate on only the first N test samples (quick runs)")
    t.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar or epoch lines; only the final result")
    t.add_argument("--augment", action="store_true", default=None,
                   help="augment the training images on the backend: random crops (padding 2 at 28x28, 4 at "
                        "32x32), plus horizontal flips for CIFAR (not for digits or clothes)")
    _distributed_args(t)

    e = sub.add_parser("evaluate", help="accuracy and loss of a saved checkpoint on a dataset split",
                       description="Load a checkpoint written by 'train --save' and evaluate it.")
    e.add_argument("--checkpoint", required=True, metavar="PATH", help="the .npz written by train --save")
    e.add_argument("--dataset", default=None,
                   help="dataset (default: the one the checkpoint was trained on)")
    e.add_argument("--data-dir", default=None, help="folder holding the IDX files (see train --help)")
    e.add_argument("--split", default="test", choices=("train", "test"), help="default: %(default)s")
    e.add_argument("--model", default=None, choices=model_names(),
                   help="architecture (default: the one recorded in the checkpoint)")
    e.add_argument("--batch-size", type=_positive_int, default=256, help="default: %(default)s")
    e.add_argument("--backend", default="numpy", help="numpy (default), array_api_strict or cupy")
    e.add_argument("--threads", type=_positive_int, default=None, help="CPU threads, as for train")

    _add_predict_parser(sub)

    s = sub.add_parser("summary", help="per-layer shapes, parameters, receptive fields and FLOPs",
                       description="Print the layer table of a model.")
    s.add_argument("--model", default="simple_cnn", choices=model_names(), help="default: %(default)s")
    s.add_argument("--input-shape", type=_shape, default=None, metavar="C,H,W",
                   help="input size without (or with) the batch axis (default: the model's, 1,28,28 or 3,32,32)")
    s.add_argument("--backend", default="numpy", help="numpy (default), array_api_strict or cupy")
    for p in (parser, t, e, sub.choices["predict"], s):
        p.add_argument("--debug", action="store_true", help="show the traceback of an error (also ENGINE_DEBUG=1)")
    return parser


#: What train uses for a setting not given (and not taken from a resumed checkpoint).
TRAIN_DEFAULTS = {"model": "simple_cnn", "dataset": "mnist5k", "epochs": 3, "batch_size": 64, "lr": 1e-3,
                  "optimizer": "adam", "momentum": 0.9, "weight_decay": None, "scheduler": "none",
                  "clip_grad_norm": None, "val_fraction": 0.1, "seed": 0, "dtype": "float32", "augment": False,
                  "train_samples": None}
#: Settings recorded in a checkpoint's extra["settings"] and compared on resume
#: (epochs apart: a resumed run may train for more epochs).
_RESUME_SETTINGS = tuple(k for k in TRAIN_DEFAULTS if k != "epochs")


class ResumeConflict(ValueError):
    """A --resume whose settings conflict with the checkpoint's."""


def _settings(args, ckpt=None) -> dict:
    """The run's settings: given on the command line, else the checkpoint's (resuming), else TRAIN_DEFAULTS.

    A given setting that differs from the checkpoint's is a :class:`ResumeConflict` naming both."""
    saved = dict((ckpt.extra.get("settings") or {}) if ckpt is not None else {})
    if ckpt is not None and not saved:  # written before settings were recorded: what extra has
        saved = {k: ckpt.extra[k] for k in ("model", "dataset", "seed", "batch_size", "lr", "optimizer", "dtype")
                 if k in ckpt.extra}
    out = {}
    for key, default in TRAIN_DEFAULTS.items():
        given = getattr(args, key)
        if ckpt is not None and key in saved and key != "epochs":
            if given is not None and given != saved[key]:
                flag = "--" + key.replace("_", "-")
                raise ResumeConflict(f"{args.resume} was trained with {flag} {saved[key]!r}, not {given!r}: a resumed "
                                     f"run keeps the checkpoint's settings; drop {flag}, or start a new run")
            out[key] = saved[key]
        else:
            out[key] = default if given is None else given
    return out


def _check_resumable(ckpt, settings, args) -> None:
    """A resume must continue a run that can go on: not stopped on a NaN, more epochs
    to go, and a schedule whose horizon is the run's."""
    stopped = ckpt.extra.get("stopped")
    if stopped:
        raise ResumeConflict(f"{args.resume} was saved when a non-finite loss stopped training at epoch "
                             f"{stopped['epoch']}, step {stopped['step']}; its weights are from inside that epoch, "
                             "so there is no epoch boundary to resume from. Start a new run (a lower --lr, or "
                             "--clip-grad-norm), or resume an earlier checkpoint")
    done = ckpt.epoch or 0
    if settings["epochs"] <= done:
        raise ResumeConflict(f"{args.resume} has trained {done} epochs already; --epochs is the total count, so "
                             f"pass more than {done} (got {settings['epochs']})")
    planned = (ckpt.extra.get("settings") or {}).get("epochs")
    if settings["scheduler"] == "cosine" and planned is not None and settings["epochs"] != planned:
        raise ResumeConflict(f"{args.resume} follows a cosine schedule over {planned} epochs; resuming with "
                             f"--epochs {settings['epochs']} would change its horizon mid-run. Resume with "
                             f"--epochs {planned}, or start a new run")


# --------------------------------------------------------------------------- commands
_thread_limits = None


def _set_threads(n):
    """Use ``n`` threads: the engine's own host loops, and the BLAS (OpenBLAS/MKL
    under NumPy) when threadpoolctl is installed."""
    global _thread_limits
    if n is None:
        return
    from ._state import set_num_threads
    set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print(f"note: --threads {n} limits the engine's own loops; the BLAS keeps its threads "
              f"(install threadpoolctl, or set OPENBLAS_NUM_THREADS={n} before starting Python)",
              file=sys.stderr)
        return
    _thread_limits = threadpool_limits(limits=n, user_api="blas")


def _optimizer(name, params, lr, momentum, weight_decay):
    from . import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay or 0.0)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=0.01 if weight_decay is None else weight_decay)
    return optim.Adam(params, lr=lr, weight_decay=weight_decay or 0.0)


def _distributed_args(parser):
    from .distributed.cli import add_arguments
    add_arguments(parser)


def _cmd_train(args, out, run=None) -> int:
    """``run``: the data-parallel side (engine.distributed.cli.DistributedRun), ``None`` without --distributed."""
    if run is None:
        from .distributed import cli as distributed_cli
        distributed_cli.check_arguments(args)
        if args.distributed:  # every rank runs this command; rank 0 prints; an error on one aborts all
            return distributed_cli.run_distributed(_cmd_train, args, out, _exit_code)
    from . import backends
    import engine

    from . import nn
    from .checkpoint import load_checkpoint, save_checkpoint
    from .data import DataLoader, load_dataset, train_val_split
    from .schedulers import get_scheduler
    from .training import EarlyStopping, NonFiniteLossWarning, evaluate, fit

    from .checkpoint import check_writable
    for path in (args.save, args.plot, args.plot_filters):
        if path is not None:
            check_writable(path)  # a bad --save is an error now, not after the training it would lose
    if args.plot or args.plot_filters:
        from .plots import _figure
        _figure()  # matplotlib is there, or the ImportError names the install command now
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(args.resume, restore_rng=False)  # the settings first; state after the model exists
    settings = _settings(args, ckpt)
    if ckpt is not None:
        _check_resumable(ckpt, settings, args)
    engine.set_backend(args.backend)
    _set_threads(args.threads)
    engine.manual_seed(settings["seed"])
    dataset, dtype = settings["dataset"], settings["dtype"]
    full = load_dataset(dataset, "train", data_dir=args.data_dir)
    test = load_dataset(dataset, "test", data_dir=args.data_dir)
    if settings["train_samples"] is not None:
        full = full.subset(slice(0, settings["train_samples"]))
    if args.test_samples is not None:
        test = test.subset(slice(0, args.test_samples))
    if settings["val_fraction"] > 0:
        train, val = train_val_split(full, settings["val_fraction"], seed=settings["seed"])
    else:
        train, val = full, None
    model = _build_model(settings["model"], full, dtype)
    lr = run.scaled_lr(settings["lr"]) if run else settings["lr"]
    optimizer = _optimizer(settings["optimizer"], model.parameters(), lr, settings["momentum"],
                           settings["weight_decay"])
    scheduler = get_scheduler(settings["scheduler"], optimizer, epochs=settings["epochs"])
    history, initial_epoch = None, 0
    if args.resume and (run is None or run.is_root):  # distributed: rank 0 reads, share_resume/wrap send
        ckpt = load_checkpoint(args.resume, model, optimizer, scheduler=scheduler)
        history, initial_epoch = ckpt.history, ckpt.epoch or 0
        print(f"resumed from {args.resume} after epoch {initial_epoch}", file=out)
    if run:
        if args.resume:
            history, initial_epoch = run.share_resume(history, initial_epoch, scheduler)
        optimizer = run.wrap(optimizer, model, settings["batch_size"])
    shard = run is not None  # each rank takes its slice of every (global) batch
    train_loader = DataLoader(train, batch_size=settings["batch_size"], shuffle=True, dtype=dtype, shard=shard,
                              seed=settings["seed"] if shard else None,  # sharded: permutations from (seed, epoch)
                              transform=_augmentation(dataset, full) if settings["augment"] else None)
    val_loader = DataLoader(val, batch_size=256, dtype=dtype, shard=shard) if val is not None else None
    test_loader = DataLoader(test, batch_size=256, dtype=dtype, shard=shard)
    callbacks = run.callbacks() if run else []
    if args.patience is not None:
        if val_loader is None:
            raise ValueError("--patience needs a validation split (--val-fraction > 0)")
        callbacks.append(EarlyStopping("val_loss", patience=args.patience, verbose=not args.quiet))
    loss = nn.CrossEntropyLoss()
    if not args.quiet:
        split = f"{len(train):,} train + {len(val):,} val" if val is not None else f"{len(train):,} train"
        print(f"{settings['model']} ({model.num_parameters():,} parameters) on {dataset}: {split}, "
              f"{len(test):,} test; backend {backends.get(engine.get_backend()).describe()}, "
              f"{settings['optimizer']} lr {settings['lr']:g}, batch {settings['batch_size']}, "
              f"{settings['epochs']} epochs, seed {settings['seed']}", file=out, flush=True)
        if run:
            print(f"distributed: {run.describe(settings['batch_size'])}", file=out, flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings():  # a NaN stop is reported below, as one line
        warnings.simplefilter("ignore", NonFiniteLossWarning)
        history = fit(model, loss, optimizer, train_loader, val_loader, epochs=settings["epochs"],
                      callbacks=callbacks, scheduler=scheduler, clip_grad_norm=settings["clip_grad_norm"],
                      progress=not args.quiet, initial_epoch=initial_epoch, history=history, file=out)
    elapsed = time.perf_counter() - start
    trained = [t for e, t in zip(history.epoch, history.time) if e is not None and e > initial_epoch]
    nan_stop = history.stop_reason is not None and history.stop_reason.startswith("training stopped")
    if history.stop_reason:
        print(history.stop_reason, file=sys.stderr if nan_stop else out)
    if trained and not args.quiet:
        print(f"training time: {elapsed:.1f} s ({sum(trained) / len(trained):.1f} s per epoch, "
              f"validation excluded)", file=out)
        print(_data_share_line(train_loader, trained), file=out)
    result = evaluate(model, test_loader, loss)
    print(f"test accuracy: {result['accuracy']:.2%} ({round(result['accuracy'] * result['n'])}/"
          f"{result['n']} held-out {dataset} test images), test loss {result['loss']:.4f}",
          file=out, flush=True)
    if args.save and (run is None or run.is_root):  # one writer; the others wait at the barrier below
        completed = history.last("epoch", initial_epoch)
        extra = {"model": settings["model"], "dataset": dataset, "seed": settings["seed"],
                 "batch_size": settings["batch_size"], "lr": settings["lr"], "optimizer": settings["optimizer"],
                 "test_accuracy": result["accuracy"], "dtype": dtype, "settings": settings,
                 **_preprocessing_record(full, train_loader, settings["augment"]),
                 **(run.record(settings["batch_size"]) if run else {})}
        if nan_stop and history.stopped_at is not None:  # the stopped epoch did not complete
            extra["stopped"] = {"epoch": history.stopped_at[0], "step": history.stopped_at[1],
                                "reason": history.stop_reason}
            completed = history.stopped_at[0] - 1
        save_checkpoint(args.save, model, optimizer, epoch=completed, extra=extra, scheduler=scheduler,
                        history=history)
        print(f"saved {args.save}", file=out)
    if args.plot and (run is None or run.is_root):
        from .plots import plot_history
        plot_history(history, args.plot, title=f"{settings['model']} on {dataset}")
        print(f"saved {args.plot}", file=out)
    if args.plot_filters and (run is None or run.is_root):
        from .plots import plot_filters
        plot_filters(model, args.plot_filters)
        print(f"saved {args.plot_filters}", file=out)
    if run:
        run.world.barrier()  # the other ranks end once rank 0's files are written
    return EXIT_CODES["nan_stop"] if nan_stop else EXIT_CODES["ok"]


def _cmd_evaluate(args, out) -> int:
    import engine

    from . import nn
    from .checkpoint import load_checkpoint
    from .data import DataLoader, load_dataset
    from .models import get_model
    from .training import evaluate

    engine.set_backend(args.backend)
    _set_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint, restore_rng=False)
    name = args.model or ckpt.extra.get("model")
    if name is None:
        raise ValueError(f"{args.checkpoint} does not record its architecture; pass --model")
    dataset = args.dataset or ckpt.extra.get("dataset") or "mnist5k"
    dtype = ckpt.extra.get("dtype", "float32")
    model = get_model(name, dtype=dtype, **_shape_kwargs(ckpt.extra))
    model.load_state_dict(ckpt.model_state)
    data = load_dataset(dataset, args.split, data_dir=args.data_dir)
    result = evaluate(model, DataLoader(data, batch_size=args.batch_size, dtype=dtype), nn.CrossEntropyLoss())
    epoch = f", epoch {ckpt.epoch}" if ckpt.epoch is not None else ""
    print(f"{name} from {args.checkpoint} (saved on {ckpt.backend}{epoch}), {dataset} {args.split} split "
          f"on {engine.get_backend()}:", file=out)
    print(f"{args.split} accuracy: {result['accuracy']:.2%} ({round(result['accuracy'] * result['n'])}/"
          f"{result['n']}), loss {result['loss']:.4f}", file=out, flush=True)
    return 0


def _cmd_summary(args, out) -> int:
    import engine

    from .models import INPUT_SHAPES, get_model
    engine.set_backend(args.backend)
    model = get_model(args.model)
    print(model.summary(args.input_shape or INPUT_SHAPES[args.model]), file=out)
    return 0


# --------------------------------------------------------------------------- data, models, predict
def _build_model(name, dataset, dtype):
    """Model ``name`` with the dataset's channels and classes; a model that
    cannot take the dataset's images is refused before training starts."""
    from .models import INPUT_SHAPES, get_model

    channels, height, width = dataset.image_shape
    model = get_model(name, dtype=dtype, in_channels=channels, num_classes=len(dataset.classes))
    try:
        model.summary((1, channels, height, width))  # shapes only: no weights change, no RNG draw
    except ValueError as exc:
        fits = [m for m, shape in INPUT_SHAPES.items() if shape[1:] == (height, width)]
        raise ValueError(f"--model {name} does not take {height}x{width} images ({dataset.name}): {exc}. "
                         f"Models built for {height}x{width}: {', '.join(fits) or 'none'}") from None
    return model


def _augmentation(name, dataset):
    """``train --augment``: random crops with padding (2 pixels at 28x28, 4 at 32x32),
    plus horizontal flips for CIFAR only (a flipped digit or shoe changes meaning or
    never occurs)."""
    from .data import transforms as T

    _, height, width = dataset.image_shape
    crop = T.RandomCrop((height, width), padding=4 if min(height, width) >= 32 else 2)
    if str(name).lower().replace("_", "").replace("-", "").startswith("cifar"):
        return T.Compose([crop, T.RandomHorizontalFlip()])
    return crop


def _data_share_line(loader, epoch_times) -> str:
    """How much of the training time went into preparing batches (DataLoader.epoch_data_times)."""
    data_times = loader.epoch_data_times[-len(epoch_times):]
    data, total = sum(data_times), sum(epoch_times)
    shares = [d / t for d, t in zip(data_times, epoch_times) if t > 0]
    per_epoch = (f"; per epoch {min(shares):.1%}-{max(shares):.1%}" if len(shares) > 1 else "")
    return (f"data preparation: {data / total if total > 0 else 0.0:.1%} of the training time ({data:.2f} s of "
            f"{total:.1f} s{per_epoch}: indexing, transfer, conversion"
            f"{', augmentation' if loader.transform is not None else ''}, normalisation)")


def _listed(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _preprocessing_record(dataset, loader, augment) -> dict:
    """What ``predict`` needs to prepare an image as in training, for the checkpoint's ``extra``."""
    mean, std = loader.normalize if loader.normalize is not None else (None, None)
    return {"input_shape": list(dataset.image_shape), "in_channels": int(dataset.image_shape[0]),
            "num_classes": len(dataset.classes), "classes": [str(c) for c in dataset.classes],
            "mean": _listed(mean), "std": _listed(std), "layout": "NCHW", "augment": bool(augment)}


def _shape_kwargs(extra) -> dict:
    """``in_channels``/``num_classes`` recorded by train (older checkpoints: the model's defaults)."""
    return {k: int(extra[k]) for k in ("in_channels", "num_classes") if k in extra}


def _add_predict_parser(sub):
    p = sub.add_parser("predict", help="classify image files with a saved checkpoint",
                       description="Print the top-k classes of each PNG/JPEG image, prepared as in training "
                                   "(grey or RGB, resized to the model's input size, normalised with the "
                                   "training statistics recorded in the checkpoint). Needs Pillow: "
                                   'pip install "engine[images]".')
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="the .npz written by train --save")
    p.add_argument("--top-k", type=_positive_int, default=3, help="classes to show per image (default: %(default)s)")
    p.add_argument("--backend", default="numpy", help="numpy (default), array_api_strict or cupy")
    return p


def _cmd_predict(args, out) -> int:
    import numpy as np

    import engine

    from .checkpoint import load_checkpoint
    from .data import load_image, transforms
    from .models import get_model
    from .training import predict

    engine.set_backend(args.backend)
    ckpt = load_checkpoint(args.checkpoint, restore_rng=False)
    extra = ckpt.extra
    missing = [k for k in ("model", "input_shape", "classes", "mean", "std") if k not in extra]
    if missing:
        raise ValueError(f"{args.checkpoint} does not record how its images were prepared "
                         f"({', '.join(missing)} missing: saved before predict existed); train and save it again")
    channels, height, width = (int(v) for v in extra["input_shape"])
    dtype = extra.get("dtype", "float32")
    model = get_model(extra["model"], dtype=dtype, **_shape_kwargs(extra))
    model.load_state_dict(ckpt.model_state)
    resize = transforms.Resize((height, width))
    batch = []
    for path in args.images:
        image = load_image(path, channels=channels).astype(np.float32) / np.float32(255)
        batch.append(resize(image))
    x = np.stack(batch)
    if extra["mean"] is not None:
        x = transforms.Normalize(extra["mean"], extra["std"])(x)
    logits = engine.to_numpy(predict(model, engine.asarray(x, dtype=dtype), batch_size=64)).astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    classes = extra["classes"]
    k = min(args.top_k, len(classes))
    for path, p in zip(args.images, probabilities):
        top = np.argsort(-p, kind="stable")[:k]
        print(f"{path}: " + ", ".join(f"{classes[i]} {p[i]:.2%}" for i in top), file=out)
    return 0


_COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "predict": _cmd_predict, "summary": _cmd_summary}


def _exit_code(exc) -> int:
    """The documented exit status of an exception (see the module docstring)."""
    from .checkpoint import CheckpointError
    from .data import DatasetUnavailableError
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_CODES["interrupted"]
    if isinstance(exc, CheckpointError):
        return EXIT_CODES["checkpoint"]
    if isinstance(exc, (DatasetUnavailableError, ValueError, TypeError, KeyError, ImportError)):
        return EXIT_CODES["bad_input"]
    if isinstance(exc, MemoryError):
        return EXIT_CODES["memory"]
    if isinstance(exc, OSError):
        return EXIT_CODES["io"]
    return EXIT_CODES["internal"]


def _one_line(exc) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    if isinstance(exc, MemoryError):
        text = f"out of memory{': ' + text if text != 'MemoryError' else ''} (try a smaller --batch-size)"
    return text


def main(argv=None) -> int:
    """Entry point of ``python -m engine`` and the ``engine`` script; returns the
    exit status listed in the module docstring (one line on stderr for every
    failure; ``--debug`` or ``ENGINE_DEBUG=1`` re-raises it with its traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CODES["bad_input"]
    debug = args.debug or os.environ.get("ENGINE_DEBUG", "").strip() not in ("", "0")
    try:
        return _COMMANDS[args.command](args, sys.stdout)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001  (every failure: one line and a documented code)
        if debug:
            raise
        code = _exit_code(exc)
        if code == EXIT_CODES["interrupted"]:
            print("interrupted", file=sys.stderr)
        elif code == EXIT_CODES["internal"]:
            print(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); please report it with the "
                  "output of the same command with --debug", file=sys.stderr)
        else:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
