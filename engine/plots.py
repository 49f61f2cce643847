"""Plots: training curves and the first convolution's filters (needs matplotlib).

    from engine.plots import plot_history, plot_filters
    plot_history(history, "curves.png")
    plot_filters(model, "filters.png")

matplotlib is an optional extra: ``pip install ".[plot]"``. Figures are built
with ``matplotlib.figure.Figure`` directly (no pyplot, no GUI, no global
state), so they work on headless machines; each function returns the Figure
and, given a path, saves it there (PNG, SVG, PDF … by extension).
"""
from __future__ import annotations

import math

import numpy as np

from . import _state

__all__ = ["first_conv_weight", "plot_filters", "plot_history"]

_INSTALL_HINT = ('engine.plots needs matplotlib, an optional extra: pip install ".[plot]" '
                 '(from the engine source tree) or pip install matplotlib')


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return Figure(**kwargs)


def _history_dict(history) -> dict:
    if hasattr(history, "history"):
        return history.history
    if isinstance(history, dict):
        return history.get("history", history)
    raise TypeError(f"plot_history: expected a History or a dict of lists, got {type(history).__name__}")


def plot_history(history, path=None, title: str | None = None):
    """Loss and accuracy per epoch, training and validation, side by side.

    ``history``: the :class:`engine.training.History` returned by ``fit`` (or
    its ``.history`` dict). Returns the matplotlib Figure; saves it to ``path``.
    """
    h = _history_dict(history)
    epochs = list(h.get("epoch") or range(1, len(h.get("loss", [])) + 1))
    if not epochs:
        raise ValueError("plot_history: the history has no epochs")
    fig = _figure(figsize=(10, 4), layout="constrained")
    panels = (("loss", "Loss", False), ("accuracy", "Accuracy", True))
    for i, (key, label, percent) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for prefix, name, style in (("", "train", "o-"), ("val_", "validation", "s--")):
            values = h.get(prefix + key) or []
            pts = [(e, v) for e, v in zip(epochs, values) if v is not None]
            if pts:
                xs, ys = zip(*pts)
                ys = [100 * v for v in ys] if percent else ys
                ax.plot(xs, ys, style, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label + (" (%)" if percent else ""))
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def first_conv_weight(model) -> np.ndarray:
    """The weight ``(out, in/groups, kh, kw)`` of the first ``Conv2d`` in ``model``, as NumPy."""
    from .nn.layers import Conv2d
    for _, m in model.named_modules():
        if isinstance(m, Conv2d):
            return _state.to_numpy(m.weight.data)
    raise ValueError(f"plot_filters: {type(model).__name__} has no Conv2d layer")


def plot_filters(model_or_weight, path=None, title: str | None = None, cmap: str = "gray",
                 max_filters: int = 64):
    """The first convolution's filters as small images, one per output channel.

    ``model_or_weight``: a model (its first ``Conv2d`` is used) or a weight
    array ``(out, in, kh, kw)``. Single-channel filters are drawn in ``cmap``
    (each scaled to its own range, so the pattern shows), three-channel ones
    as RGB; otherwise the input channels are averaged. At most
    ``max_filters`` are drawn. Returns the Figure; saves it to ``path``.
    """
    if hasattr(model_or_weight, "named_modules"):
        w = first_conv_weight(model_or_weight)
    else:
        w = _state.to_numpy(model_or_weight)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"plot_filters: expected a conv weight (out, in, kh, kw), got shape {w.shape}")
    w = w[:max_filters]
    n = w.shape[0]
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig = _figure(figsize=(1.2 * cols + 0.4, 1.2 * rows + 0.5), layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        f = w[i]
        if f.shape[0] == 3:
            img = np.transpose(f, (1, 2, 0))
            lo, hi = img.min(), img.max()
            ax.imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img), interpolation="nearest")
        else:
            img = f.mean(axis=0)
            ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(i), fontsize=7)
    fig.suptitle(title or f"first conv layer: {w.shape[0]} filters {w.shape[2]}x{w.shape[3]}")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
