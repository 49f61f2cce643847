"""Datasets: the protocol, arrays in memory, subsets and random splits.

A dataset is any object with ``len(ds)`` and ``ds[i] -> (image, label)``
(:class:`Dataset` is the base to subclass, as ``torch.utils.data.Dataset``).
``image``: an array ``(C, H, W)`` (or ``(H, W)``; ``(H, W, C)`` with
``layout="NHWC"`` in the loader), uint8 0-255 or floating in [0, 1].
``label``: an integer class, a float target, or a vector (one-hot or class
probabilities, or any float target vector).

:class:`ArrayDataset` (also spelt ``TensorDataset``, and what
``Dataset(images, labels)`` builds) holds all images and labels as NumPy
arrays; :class:`engine.data.DataLoader` batches it with one fancy-index per
batch. :class:`Subset`, :func:`random_split` and :func:`train_val_split` cut
any dataset into parts.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _state
from .layout import looks_channels_last

__all__ = ["ArrayDataset", "Dataset", "Subset", "TensorDataset", "dataset_name", "random_split",
           "train_val_split"]

_CHUNK = 1 << 20


class Dataset:
    """Base class of datasets: subclass it and write ``__len__`` and
    ``__getitem__(i) -> (image, label)``; :class:`engine.data.DataLoader`
    batches any such object (subclassing is optional: duck typing is enough).

    Optional attributes the loader uses when present: ``classes`` (class
    names; integer labels must be below ``len(classes)``), ``name`` (shown in
    errors), ``mean``/``std`` (the default normalisation).

    ``Dataset(images, labels, ...)`` is shorthand for
    :class:`ArrayDataset` ``(images, labels, ...)``.
    """

    def __new__(cls, *args, **kwargs):
        if cls is Dataset and (args or kwargs):
            return super().__new__(ArrayDataset)  # type() then runs ArrayDataset.__init__(args)
        return super().__new__(cls)

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


def dataset_name(ds) -> str:
    """How errors name ``ds``: its ``name`` attribute (and split), else its class."""
    name = getattr(ds, "name", None)
    if not isinstance(name, str) or not name:
        name = type(ds).__name__
    split = getattr(ds, "split", None)
    return f"{name} ({split})" if isinstance(split, str) and split else name


def check_labels(labels: np.ndarray, classes, where: str, offset_of=None) -> None:
    """Integer labels must be in ``[0, len(classes))`` (``[0, inf)`` without
    ``classes``); float labels must be finite. ``offset_of(i)`` maps a position
    in ``labels`` to the sample index shown in the error."""
    if labels.size == 0:
        return
    if labels.dtype.kind in "iu":
        bad = labels < 0
        limit = None
        if classes is not None:
            limit = len(classes)
            bad = bad | (labels >= limit)
        if np.any(bad):
            rows = np.flatnonzero(bad.reshape(len(labels), -1).any(axis=1))
            shown = rows[:5]
            where_txt = ", ".join(f"index {offset_of(int(i)) if offset_of else int(i)}: "
                                  f"{labels[i].tolist()}" for i in shown)
            more = f" and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
            allowed = f"[0, {limit - 1}] ({limit} classes)" if limit is not None else "non-negative"
            raise ValueError(f"{where}: integer labels must be {allowed}; found {where_txt}{more}")
    elif labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)):
            i = int(np.flatnonzero(~np.isfinite(labels).reshape(len(labels), -1).all(axis=1))[0])
            raise ValueError(f"{where}: float labels must be finite; index "
                             f"{offset_of(i) if offset_of else i} has {labels[i].tolist()}")
    else:
        raise TypeError(f"{where}: labels must be integers (classes) or floats (targets, one-hot or "
                        f"probability vectors), got dtype {labels.dtype}")


class ArrayDataset(Dataset):
    """Images and labels held as NumPy arrays on the host.

    ``images``: ``(N, C, H, W)``, uint8 (0-255) or floating (already in
    [0, 1]); ``(N, H, W)`` is given one channel; ``(N, H, W, C)`` with
    ``layout="NHWC"`` (kept as a transposed view, no copy). An array that
    looks channels-last (last axis 1, 3 or 4, second axis not) with the
    default ``layout="NCHW"`` is an error naming the layout: it is never
    silently read as NCHW.
    ``labels``: ``(N,)`` integer classes, ``(N,)`` float targets, or
    ``(N, K)`` float vectors (one-hot, class probabilities or any targets).
    Integer labels must be ``>= 0`` and below ``len(classes)`` when classes
    are given; float labels must be finite.
    ``classes``: class names, ``classes[label]`` (default ``"0"``, ``"1"`` …
    for integer labels). ``mean``/``std``: pixel statistics on the [0, 1]
    scale (a number, or one per channel) used by the loader's default
    normalisation; the built-in datasets carry those of their *train* split
    on every split, a dataset built from arrays computes its own (one number
    over all channels).

    ``len(ds)``; ``ds[i]`` is ``(image, label)``; ``ds[slice]`` or
    ``ds[index_array]`` is a new :class:`ArrayDataset` (see :meth:`subset`).
    """

    def __init__(self, images, labels, *, classes=None, name: str = "custom",
                 split: str | None = None, mean=None, std=None, source: str | None = None,
                 layout: str = "NCHW"):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"Dataset: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        if images.ndim == 3:
            images = images[:, None]
        elif images.ndim == 4 and layout == "NHWC":
            images = images.transpose(0, 3, 1, 2)
        elif images.ndim == 4 and looks_channels_last(images.shape):
            raise ValueError(f"Dataset {name!r}: images of shape {images.shape} look like NHWC (channels "
                             f"last, {images.shape[3]} channel(s)) but the layout is NCHW, which would read "
                             f"them as {images.shape[1]} channels of {images.shape[2]}x{images.shape[3]}; "
                             f"pass layout='NHWC' (converted without a copy) or transpose them to "
                             f"(N, C, H, W)")
        if images.ndim != 4:
            raise ValueError(f"Dataset: images must be (N, C, H, W) or (N, H, W), "
                             f"got shape {images.shape}")
        if not (images.dtype == np.uint8 or images.dtype.kind == "f"):
            raise TypeError(f"Dataset: images must be uint8 (0-255) or floating "
                            f"(already scaled to [0, 1]), got {images.dtype}")
        if labels.ndim not in (1, 2) or len(labels) != len(images):
            raise ValueError(f"Dataset: labels must be (N,) or (N, K) with N = {len(images)} images, "
                             f"got shape {labels.shape}")
        if labels.dtype == np.bool_ or (labels.dtype.kind not in "iuf" and len(labels)):
            raise TypeError(f"Dataset: labels must be integers (classes) or floats (targets, one-hot "
                            f"or probability vectors), got {labels.dtype}")
        if labels.dtype.kind in "iu":
            if labels.ndim != 1:
                raise ValueError(f"Dataset: integer class labels must be (N,), got shape {labels.shape}; "
                                 f"give one-hot or probability vectors as floats")
            labels = labels.astype(np.int64, copy=False)
        if classes is not None:
            classes = tuple(classes)
            if labels.ndim == 2 and labels.shape[1] != len(classes):
                raise ValueError(f"Dataset {name!r}: label vectors have {labels.shape[1]} entries but "
                                 f"there are {len(classes)} classes")
        check_labels(labels, classes, f"Dataset {name!r}" + (f" ({split})" if split else ""))
        if classes is None and labels.dtype.kind in "iu":
            top = int(labels.max()) + 1 if len(labels) else 0
            classes = tuple(str(i) for i in range(top))
        elif classes is None and labels.ndim == 2:
            classes = tuple(str(i) for i in range(labels.shape[1]))
        self.images = images
        self.labels = labels
        self.classes = classes
        self.name = name
        self.split = split
        self.source = source
        self._mean = _stat(mean, "mean")
        self._std = _stat(std, "std")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            label = self.labels[index]
            return self.images[index], (int(label) if label.ndim == 0 and self.labels.dtype.kind in "iu"
                                        else label.item() if label.ndim == 0 else label)
        return self.subset(index)

    def subset(self, indices, split: str | None = None) -> ArrayDataset:
        """The samples at ``indices`` (slice, integer or boolean array), same
        classes and normalisation statistics."""
        self._fill_stats()
        return ArrayDataset(self.images[indices], self.labels[indices], classes=self.classes,
                            name=self.name, split=self.split if split is None else split,
                            mean=self._mean, std=self._std, source=self.source)

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])

    @property
    def mean(self):
        """Mean pixel value on the [0, 1] scale (a float, or a tuple per channel)."""
        self._fill_stats()
        return self._mean

    @property
    def std(self):
        """Pixel standard deviation on the [0, 1] scale (a float, or a tuple per channel)."""
        self._fill_stats()
        return self._std

    def _fill_stats(self):
        if self._mean is not None and self._std is not None:
            return
        if len(self.images) == 0:
            mean, std = 0.0, 1.0
        elif self.images.dtype == np.uint8:
            # Exact and cheap: a 256-bin histogram instead of a float copy,
            # in chunks (bincount casts to intp; 60k images at once is 8x the data).
            counts = np.zeros(256, dtype=np.int64)
            for image_chunk in _chunks(self.images):
                flat = image_chunk.reshape(-1)
                counts += np.bincount(flat, minlength=256)
            counts = counts.astype(np.float64)
            values = np.arange(256, dtype=np.float64) / 255.0
            total = counts.sum()
            mean = float(counts @ values / total)
            std = float(np.sqrt(max(counts @ (values - mean) ** 2 / total, 0.0)))
        else:
            mean = float(np.mean(self.images, dtype=np.float64))
            std = float(np.std(self.images, dtype=np.float64))
        if self._mean is None:
            self._mean = mean
        if self._std is None:
            self._std = std

    def class_counts(self) -> np.ndarray:
        """Number of samples of each class, ``(len(classes),)`` int64 (integer labels only)."""
        if self.labels.dtype.kind not in "iu":
            raise TypeError(f"class_counts: the labels of {dataset_name(self)} are {self.labels.dtype} "
                            f"targets, not integer classes")
        return np.bincount(self.labels, minlength=len(self.classes))

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split is not None else ""
        labels = f"classes={len(self.classes)}" if self.classes is not None else f"targets={self.labels.dtype}"
        return (f"Dataset(name={self.name!r}{split}, n={len(self)}, "
                f"image_shape={self.image_shape}, dtype={self.images.dtype}, {labels})")


#: ``TensorDataset(images, labels)``: PyTorch's name for the same wrapper.
TensorDataset = ArrayDataset


def _chunks(images):
    per = max(1, _CHUNK // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, len(images), per):
        yield np.ascontiguousarray(images[start:start + per])


def _stat(value, what):
    if value is None:
        return None
    a = np.asarray(value, dtype=np.float64)
    if a.ndim == 0:
        return float(a)
    if a.ndim == 1:
        return tuple(float(v) for v in a)
    raise ValueError(f"Dataset: {what} must be a number or one per channel, got shape {a.shape}")


class Subset(Dataset):
    """The samples ``indices`` of ``dataset`` (any dataset), in that order.

    Keeps the parent's ``classes``, ``name``, ``mean`` and ``std``. A subset
    of an :class:`ArrayDataset` still batches with one fancy-index per batch.
    """

    def __init__(self, dataset, indices):
        n = len(dataset)
        idx = np.asarray(indices)
        if idx.dtype == np.bool_:
            if idx.shape != (n,):
                raise ValueError(f"Subset: a boolean mask must have shape ({n},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"Subset: indices must be a 1-D sequence of ints, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"Subset: indices must be in [-{n}, {n - 1}] for {dataset_name(dataset)} "
                             f"of {n} samples, got [{int(idx.min())}, {int(idx.max())}]")
        self.dataset = dataset
        self.indices = np.where(idx < 0, idx + n, idx)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.dataset[int(self.indices[index])]
        return Subset(self.dataset, self.indices[index])

    def __getattr__(self, name):
        # classes, name, split, mean, std, image_shape … come from the parent
        if name in ("dataset", "indices") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"Subset({dataset_name(self.dataset)}, n={len(self)})"


def _generator(seed):
    if seed is None:
        return _state.host_rng()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return np.random.default_rng(int(seed))


def random_split(dataset, lengths, seed: int | None = None) -> list:
    """Split ``dataset`` at random into parts of the given ``lengths``.

    ``lengths``: ints summing to ``len(dataset)``, or fractions summing to 1
    (each part gets ``floor(fraction * N)``, and the remainder goes one by one
    to the first parts). ``seed``: an int for a fixed split; ``None`` draws
    from the engine generator (:func:`engine.manual_seed`). Parts of an
    :class:`ArrayDataset` are ArrayDatasets; other datasets give
    :class:`Subset` objects.
    """
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths is empty")
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in lengths):
        counts = [int(v) for v in lengths]
        if any(v < 0 for v in counts) or sum(counts) != n:
            raise ValueError(f"random_split: lengths {counts} must be non-negative and sum to "
                             f"len(dataset) = {n}")
    elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in lengths):
        fractions = [float(v) for v in lengths]
        if any(not 0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"random_split: fractions {fractions} must be in [0, 1] and sum to 1")
        counts = [int(np.floor(f * n)) for f in fractions]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        raise TypeError(f"random_split: lengths must be ints or fractions, got {lengths!r}")
    order = _generator(seed).permutation(n)
    parts, start = [], 0
    for count in counts:
        idx = order[start:start + count]
        start += count
        parts.append(dataset.subset(idx) if isinstance(dataset, ArrayDataset) else Subset(dataset, idx))
    return parts


def _labels_of(ds):
    """All labels of ``ds`` without loading its images, or ``None``."""
    if isinstance(ds, Subset):
        parent = _labels_of(ds.dataset)
        return None if parent is None else parent[ds.indices]
    labels = getattr(ds, "labels", None)
    if labels is None:
        labels = getattr(ds, "targets", None)
    if labels is None:
        return None
    labels = np.asarray(labels)
    return labels if labels.shape[:1] == (len(ds),) else None


def train_val_split(dataset, val_fraction: float = 0.1, seed: int | None = None,
                    stratify: bool = True):
    """Split ``dataset`` into ``(train, val)`` at random.

    ``val_fraction``: a fraction in (0, 1), or an int number of validation
    samples. ``stratify`` keeps each class's share equal in both parts (the
    per-class counts are rounded so the total is exact); it applies when the
    labels are integer classes readable without loading the images (an
    :class:`ArrayDataset`, a dataset with a ``labels``/``targets`` array),
    otherwise the split is plain random. ``seed``: an int for a fixed split;
    ``None`` draws from the engine generator, so :func:`engine.manual_seed`
    makes it reproducible. Both parts keep the parent's classes and
    normalisation statistics; indices inside each part stay in the parent's
    order.
    """
    from .loader import as_dataset

    ds = as_dataset(dataset)
    n = len(ds)
    if isinstance(val_fraction, (int, np.integer)) and not isinstance(val_fraction, bool):
        n_val = int(val_fraction)
    elif isinstance(val_fraction, float) and 0.0 < val_fraction < 1.0:
        n_val = round(val_fraction * n)
    else:
        raise ValueError(f"train_val_split: val_fraction must be a float in (0, 1) or an int "
                         f"count, got {val_fraction!r}")
    if not 0 < n_val < n:
        raise ValueError(f"train_val_split: {val_fraction!r} of {n} samples gives {n_val} "
                         f"validation samples; need between 1 and {n - 1}")
    rng = _generator(seed)
    labels = _labels_of(ds) if stratify else None
    if labels is not None and labels.ndim == 1 and labels.dtype.kind in "iu":
        counts = np.bincount(labels)
        quota = counts * (n_val / n)
        take = np.floor(quota).astype(np.int64)
        short = n_val - int(take.sum())
        if short > 0:  # largest remainders first, ties to the lower class
            order = np.lexsort((np.arange(len(quota)), -(quota - take)))
            take[order[:short]] += 1
        picked = []
        for k in np.flatnonzero(take):
            members = np.flatnonzero(labels == k)
            picked.append(rng.permutation(members)[:take[k]])
        val_idx = np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)
    else:
        val_idx = np.sort(rng.permutation(n)[:n_val])
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    train_idx = np.flatnonzero(mask)
    if isinstance(ds, ArrayDataset):
        return ds.subset(train_idx), ds.subset(val_idx, split="val")
    return Subset(ds, train_idx), Subset(ds, val_idx)
