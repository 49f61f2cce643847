"""``History``: the per-epoch metrics :func:`engine.fit` records (its own module,
so that checkpoints and the training loop can both use it without importing
each other)."""
from __future__ import annotations

__all__ = ["History"]


class History:
    """Per-epoch metrics recorded by :func:`fit`.

    ``history["loss"]``, ``history.loss`` … are lists with one entry per epoch:
    ``epoch`` (1-based), ``loss``, ``accuracy`` (training, averaged over the
    epoch's batches, dropout active), ``val_loss``, ``val_accuracy`` (with a
    validation loader), ``lr`` (first parameter group, during the epoch),
    ``time`` (seconds of training, validation excluded), ``samples_per_s`` and
    ``data_share`` (the share of ``time`` the loader spent preparing batches,
    with an ``engine.data.DataLoader``).
    ``stop_reason`` is ``None`` or why training stopped early;
    ``stopped_at`` is ``(epoch, step)`` when a non-finite loss stopped it
    inside an epoch (that epoch's row covers the steps before it).
    """

    KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time", "samples_per_s", "data_share")

    def __init__(self, data: dict | None = None, stop_reason: str | None = None, stopped_at=None):
        self.history = {k: [] for k in self.KEYS}
        if data:
            for k, v in data.items():
                self.history[k] = list(v)
        self.stop_reason = stop_reason
        self.stopped_at = None if stopped_at is None else tuple(int(v) for v in stopped_at)

    def append(self, **values) -> None:
        n = len(self.history["epoch"])
        for k in set(self.history) | set(values):
            column = self.history.setdefault(k, [None] * n)
            column.append(values.get(k))

    def __getitem__(self, key):
        return self.history[key]

    def __getattr__(self, key):
        history = self.__dict__.get("history")
        if history is not None and key in history:
            return history[key]
        raise AttributeError(f"History has no metric {key!r}")

    def __contains__(self, key):
        return key in self.history and any(v is not None for v in self.history[key])

    def __len__(self) -> int:
        return len(self.history["epoch"])

    def keys(self):
        return [k for k in self.history if k in self]

    def as_dict(self) -> dict:
        """Plain lists (JSON-able), plus ``stop_reason`` (and ``stopped_at`` when set)."""
        out = {"history": {k: list(v) for k, v in self.history.items()}, "stop_reason": self.stop_reason}
        if self.stopped_at is not None:
            out["stopped_at"] = list(self.stopped_at)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(d.get("history", {}), d.get("stop_reason"), d.get("stopped_at"))

    def last(self, key, default=None):
        values = [v for v in self.history.get(key, []) if v is not None]
        return values[-1] if values else default

    def __repr__(self) -> str:
        parts = [f"{k}={self.last(k):.4g}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                 if self.last(k) is not None]
        stop = f", stopped: {self.stop_reason!r}" if self.stop_reason else ""
        return f"History(epochs={len(self)}, {', '.join(parts)}{stop})"
