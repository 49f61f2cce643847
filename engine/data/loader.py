"""DataLoader: batches of any dataset on the active backend, with an optional
batched transform (augmentation) and a record of the time spent preparing data."""
from __future__ import annotations

import time

import numpy as np

from .. import _state
from .. import backends
from .dataset import ArrayDataset, Subset, check_labels, dataset_name
from .layout import looks_channels_last
from .transforms import Transform

__all__ = ["DataLoader", "as_dataset"]

_FLOAT_NAMES = ("float16", "float32", "float64")
_LAYOUTS = ("NCHW", "NHWC")


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or backends.backend_of(a) is not None


def _is_pair(data) -> bool:
    """An ``(images, labels)`` pair: images an array (or a list of arrays),
    labels an array or a list of numbers or vectors (a list of two
    ``(image, label)`` samples is a dataset, not a pair)."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return False
    images, labels = data
    if not (_is_array(images) or (isinstance(images, (list, tuple)) and images
                                  and all(_is_array(a) for a in images))):
        return False
    if not (_is_array(labels) or (isinstance(labels, (list, tuple))
                                  and all(not isinstance(v, (tuple, list)) or _is_numbers(v) for v in labels)
                                  and _is_numbers(v for v in labels if not isinstance(v, (tuple, list))))):
        return False
    return len(images) == len(labels)


def _is_numbers(values) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) for v in values)


def _host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    owner = backends.backend_of(a)
    return owner.to_numpy(a) if owner is not None else np.asarray(a)


def as_dataset(data, layout: str | None = None):
    """``data`` as a dataset: datasets (anything with ``__len__`` and
    ``__getitem__``) pass through, an ``(images, labels)`` pair of arrays
    becomes an :class:`ArrayDataset` (with ``layout``)."""
    if isinstance(data, ArrayDataset):
        return data
    if _is_pair(data):
        images, labels = data
        images = np.stack([_host(a) for a in images]) if isinstance(images, (list, tuple)) else _host(images)
        labels = np.asarray(labels) if isinstance(labels, (list, tuple)) else _host(labels)
        return ArrayDataset(images, labels, layout=layout or "NCHW")
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes)) \
            and not _is_array(data):
        return data
    raise TypeError(f"expected a dataset (an object with __len__ and __getitem__ returning (image, label)) "
                    f"or an (images, labels) pair of arrays, got {type(data).__name__}")


def _array_source(ds):
    """``(ArrayDataset, indices or None)`` when ``ds`` batches by fancy-indexing arrays."""
    if isinstance(ds, ArrayDataset):
        return ds, None
    if isinstance(ds, Subset):
        inner = _array_source(ds.dataset)
        if inner is None:
            return None
        base, idx = inner
        return base, (ds.indices if idx is None else idx[ds.indices])
    return None


def _dtype_name(dtype) -> str:
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:  # a backend's own dtype object (array_api_strict)
            name = None
            for backend_name in ("numpy", "array_api_strict", "cupy"):
                b = backends._loaded.get(backend_name)
                if b is None:
                    continue
                for candidate in _FLOAT_NAMES:
                    ours = getattr(b.xp, candidate, None)
                    if type(ours) is type(dtype) and ours == dtype:
                        name = candidate
            if name is None:
                raise TypeError(f"DataLoader: cannot interpret dtype {dtype!r}") from None
    if name not in _FLOAT_NAMES:
        raise ValueError(f"DataLoader: dtype must be a floating type "
                         f"({', '.join(_FLOAT_NAMES)}), got {name!r}")
    return name


def _channels_of(ds):
    source = _array_source(ds)
    if source is not None:
        return int(source[0].images.shape[1])
    shape = getattr(ds, "image_shape", None)
    if isinstance(shape, tuple) and len(shape) == 3:
        return int(shape[0])
    return None


class DataLoader:
    """Batches ``(x, y)`` of a dataset on the active backend.

    ``data``: any dataset — an object with ``__len__`` and ``__getitem__(i)
    -> (image, label)`` (:class:`engine.data.Dataset`, ``ImageFolder``, your
    own class) — or an ``(images, labels)`` pair of arrays. Array datasets
    (:class:`ArrayDataset`, their :class:`Subset` parts) are gathered with one
    fancy-index per batch; other datasets one ``__getitem__`` per sample, the
    samples stacked (they must share a shape).

    ``x``: ``(B, C, H, W)`` of ``dtype`` (default float32): uint8 pixels
    divided by 255 on the backend (floating images are taken as already in
    [0, 1]), then ``transform`` (e.g. ``transforms.RandomCrop(28, padding=2)``:
    it runs batched on the backend, drawing from this loader's generator),
    then normalisation: with the default ``normalize="dataset"`` (or
    ``True``), ``(x - mean) / std`` with the dataset's ``mean``/``std`` (for
    the built-in datasets those of the train split, on every split; a dataset
    without them is left in [0, 1]); ``normalize=None`` (or ``False``) stops
    at [0, 1]; ``(mean, std)``, each a number or one per channel, sets them.
    ``y``: ``(B,)`` int64 for integer class labels; float labels (targets,
    ``(B, K)`` one-hot or probability vectors) come as ``dtype``. Integer
    labels are checked: negative ones, or ones ``>= len(dataset.classes)``,
    are an error naming the dataset, the index and the value.

    ``layout``: ``"NHWC"`` for channels-last data (``(N, H, W, C)`` arrays, or
    samples ``(H, W, C)``): converted to NCHW. Data that looks channels-last
    without it is an error naming the layout, never read as NCHW.

    ``shuffle``: a new permutation every epoch (every ``iter()``), drawn from
    a generator seeded with ``seed``, or, if ``seed`` is ``None``, from the
    engine generator (:func:`engine.manual_seed` makes it reproducible); the
    transform's random parameters come from the same generator.
    ``drop_last``: leave out a final short batch. ``len(loader)`` is the
    number of batches per epoch. ``backend``: a backend name; default: the
    one active when iteration starts.

    ``shard`` (data-parallel training, :mod:`engine.distributed`): ``True``
    splits every batch over the ranks of the job (``(rank, world_size)``
    names them by hand). ``batch_size`` is then the *global* batch: each of
    the ranks gets its slice, ``batch_size / world_size`` samples (it must
    divide evenly when training), and the slices of one step make up the
    batch one process would see. Every rank draws the same permutation from
    ``(seed, epoch)`` (``seed``: the loader's, else one drawn from the engine
    generator, rank 0's winning), and ``epoch`` counts up by itself (``fit``
    sets it, so a resumed run draws what an uninterrupted one would): no
    ``set_epoch`` to forget. Training (``shuffle`` or ``drop_last``) drops
    the final short global batch; otherwise (validation) it is split as
    evenly as possible, each rank evaluates its part and ``evaluate`` sums
    the counts. At the start of each epoch the ranks compare their datasets'
    lengths and the loader's settings: a mismatch is an error, not a hang.
    The transform draws from a generator of ``(seed, epoch, rank)``.

    Timing: ``data_time`` is the host time spent producing the batches of the
    current (or last) epoch — indexing, transfer, conversion, transform,
    normalisation — and ``epoch_data_times`` one entry per finished epoch.
    On a GPU it counts the time to queue that work, not to run it.
    """

    def __init__(self, data, batch_size: int = 64, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False, normalize="dataset",
                 dtype="float32", backend: str | None = None, transform=None,
                 layout: str | None = None, shard=False):
        if layout is not None and layout not in _LAYOUTS:
            raise ValueError(f"DataLoader: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        pair = _is_pair(data) and not isinstance(data, ArrayDataset)
        self.dataset = as_dataset(data, layout)
        self._source = _array_source(self.dataset)
        if layout == "NHWC" and self._source is not None and not pair:
            raise ValueError(f"DataLoader: layout='NHWC' converts arrays or samples as they come, but "
                             f"{dataset_name(self.dataset)} already holds NCHW images "
                             f"{self._source[0].images.shape}; build it with Dataset(..., layout='NHWC')")
        self.layout = "NCHW" if pair else (layout or "NCHW")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable (e.g. transforms.Compose([...])), "
                            f"got {type(transform).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"DataLoader: seed must be an int or None, got {type(seed).__name__}")
        if seed is not None and seed < 0:
            raise ValueError(f"DataLoader: seed must be >= 0, got {seed}")
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"DataLoader: {name} must be True or False, got {flag!r}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.dtype = _dtype_name(dtype)
        self.backend = backend
        self.seed = seed
        self.transform = transform
        self._rng = np.random.default_rng(seed) if seed is not None else None
        self.data_time = 0.0
        self.epoch_data_times: list[float] = []
        self.normalize = self._normalization(normalize, _channels_of(self.dataset))
        self._setup_shards(shard, seed)

    def _normalization(self, normalize, channels):
        bad = f"DataLoader: normalize must be 'dataset', None or (mean, std), got {normalize!r}"
        if normalize is None or normalize is False:
            return None
        if normalize is True or isinstance(normalize, str):
            if normalize not in (True, "dataset"):
                raise ValueError(bad)
            mean, std = getattr(self.dataset, "mean", None), getattr(self.dataset, "std", None)
            if mean is None or std is None:
                return None  # a dataset without statistics stays in [0, 1]
        else:
            try:
                mean, std = normalize
            except (TypeError, ValueError):
                raise ValueError(bad) from None
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        for v in (mean, std):
            if v.ndim > 1 or (v.ndim == 1 and channels is not None and v.shape[0] not in (1, channels)):
                raise ValueError(f"DataLoader: normalize mean/std must be numbers or one per channel "
                                 f"({channels}), got shape {v.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise ValueError(f"DataLoader: normalize mean/std must be finite, got {mean.tolist()}, {std.tolist()}")
        if np.any(std <= 0):
            if normalize is True or isinstance(normalize, str):
                raise ValueError(f"DataLoader: the dataset's pixel std is {std.tolist()}: "
                                 f"constant images cannot be normalised; pass normalize=None")
            raise ValueError(f"DataLoader: normalize std must be positive, got {std.tolist()}")
        return (float(mean) if mean.ndim == 0 else tuple(mean.tolist()),
                float(std) if std.ndim == 0 else tuple(std.tolist()))

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.shard:
            return self._shard_len(n)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        return self._batches()

    @property
    def _generator(self) -> np.random.Generator:
        if self._shard_rng is not None:
            return self._shard_rng
        return self._rng if self._rng is not None else _state.host_rng()

    def _batches(self):
        clock = time.perf_counter
        began = clock()
        self.data_time = 0.0
        ds = self.dataset
        n = len(ds)
        if self.shard:
            selections = self._shard_selections(n)
        else:
            order = self._generator.permutation(n) if self.shuffle else None
            stop = len(self) * self.batch_size if self.drop_last else n
            selections = (slice(start, min(start + self.batch_size, n)) if order is None
                          else order[start:start + self.batch_size] for start in range(0, stop, self.batch_size))
        b = backends.get(self.backend) if self.backend is not None else _state.current()
        try:
            dt = b.dtype(self.dtype)
        except AttributeError:
            raise ValueError(f"DataLoader: backend {b.name!r} has no dtype {self.dtype}") from None
        shift = scale = None
        if self.normalize is not None:
            shift, scale = (self._channel_param(b, v, dt) for v in self.normalize)
        spent = clock() - began
        try:
            for idx in selections:
                t = clock()
                if self._source is not None:
                    x, y = self._array_batch(b, idx)
                else:
                    x, y = self._sample_batch(b, idx, n)
                x = self._finish_images(b, x, dt, shift, scale)
                y = b.asarray(y, dtype=b.dtype("int64") if y.dtype.kind in "iu" else dt)
                spent += clock() - t
                self.data_time = spent
                yield x, y
        finally:
            self.data_time = spent
            self.epoch_data_times.append(spent)

    def _array_batch(self, b, idx):
        base, indices = self._source
        if indices is not None:
            idx = indices[idx]
        return b.asarray(base.images[idx]), base.labels[idx]

    def _sample_batch(self, b, idx, n):
        ds = self.dataset
        positions = range(idx.start, idx.stop) if isinstance(idx, slice) else (int(i) for i in idx)
        images, labels, where = [], [], []
        for i in positions:
            sample = ds[i]
            if not isinstance(sample, (tuple, list)) or len(sample) != 2:
                raise TypeError(f"{dataset_name(ds)}[{i}] must return (image, label), "
                                f"got {type(sample).__name__}")
            image, label = sample
            images.append(_host(image))
            labels.append(_host(label) if _is_array(label) else label)
            where.append(i)
        first = images[0].shape
        for i, image in zip(where, images):
            if image.shape != first:
                raise ValueError(f"{dataset_name(ds)}: samples {where[0]} and {i} have image shapes {first} "
                                 f"and {image.shape}; a batch needs one shape (resize them, e.g. with the "
                                 f"dataset's size= or a transforms.Resize)")
        x = np.stack(images)
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise TypeError(f"{dataset_name(ds)}: images must be uint8 (0-255) or floating in [0, 1], "
                            f"got {x.dtype} (sample {where[0]})")
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ValueError(f"{dataset_name(ds)}: images must be (C, H, W) or (H, W), got {first} "
                             f"(sample {where[0]})")
        if self.layout == "NCHW" and looks_channels_last(x.shape):
            raise ValueError(f"{dataset_name(ds)}: samples of shape {first} look like HWC (channels last, "
                             f"{first[-1]} channel(s)) but the loader's layout is NCHW, which would read them "
                             f"as {first[0]} channels of {first[1]}x{first[2]}; pass "
                             f"DataLoader(..., layout='NHWC') or return (C, H, W) images")
        try:
            y = np.asarray(labels)
        except ValueError:
            raise ValueError(f"{dataset_name(ds)}: labels of samples {where[0]}..{where[-1]} do not stack "
                             f"into one array (mixed shapes?)") from None
        if y.dtype == np.bool_ or y.dtype.kind not in "iuf":
            raise TypeError(f"{dataset_name(ds)}: labels must be integers or floats, got {y.dtype} "
                            f"(samples {where[0]}..{where[-1]})")
        check_labels(y, getattr(ds, "classes", None) if y.dtype.kind in "iu" else None,
                     dataset_name(ds), offset_of=lambda k: where[k])
        return b.asarray(x), y

    def _finish_images(self, b, x, dt, shift, scale):
        xp = b.xp
        if self.layout == "NHWC" and self._source is None:
            x = xp.permute_dims(x, (0, 3, 1, 2))
        if "uint8" in str(x.dtype):
            x = xp.astype(x, dt) / 255.0
        elif x.dtype != dt:
            x = xp.astype(x, dt)
        if self.transform is not None:
            x = self.transform(x, rng=self._generator) if isinstance(self.transform, Transform) \
                else self.transform(x)
        if shift is not None:
            x = (x - shift) / scale
        return x

    def _channel_param(self, b, value, dt):
        if isinstance(value, float):
            return value
        values = np.asarray(value, dtype=np.float64)
        if values.size == 1:
            return float(values.reshape(()))
        return b.asarray(values.astype(self.dtype).reshape(1, -1, 1, 1), dtype=dt)

    # -- sharding over the ranks of a data-parallel job (engine.distributed) ---------------
    def _setup_shards(self, shard, seed):
        self.shard = None  # (rank, world_size) when sharded
        self.shard_seed = None
        self._shard_from_world = shard is True
        self._shard_rng = None
        self.epoch = 0
        if shard is False or shard is None:
            return
        if shard is True:
            from .. import distributed
            w = distributed.world()
            rank, size = w.rank, w.size
        else:
            try:
                rank, size = (int(v) for v in shard)
            except (TypeError, ValueError):
                raise ValueError(f"DataLoader: shard must be True, False or (rank, world_size), got {shard!r}") \
                    from None
            if size < 1 or not 0 <= rank < size:
                raise ValueError(f"DataLoader: shard=(rank, world_size) needs 0 <= rank < world_size, got {shard!r}")
        if (self.drop_last or self.shuffle) and self.batch_size % size:  # training: equal slices
            raise ValueError(f"DataLoader: batch_size {self.batch_size} is the global batch and must divide evenly "
                             f"over the {size} ranks (each takes batch_size / {size}); use a multiple of {size}")
        self.shard = (rank, size)
        if seed is not None:
            self.shard_seed = int(seed)
        elif self.shuffle or self.transform is not None:  # a seed is needed: one draw from the engine generator
            self.shard_seed = int(_state.host_rng().integers(0, 2**62))
        else:  # nothing random: leave the engine generator's stream alone
            self.shard_seed = 0

    def shard_info(self):
        """``(rank, world_size)`` of a sharded loader, ``None`` otherwise."""
        return self.shard

    @property
    def drop_last_effective(self) -> bool:
        """Whether the final short batch is left out (sharded training loaders always do)."""
        return self.drop_last or bool(self.shard and self.shuffle)

    def _shard_part(self, m):
        """``(lo, hi)``: this rank's part of a global batch of ``m`` samples."""
        rank, size = self.shard
        return rank * m // size, (rank + 1) * m // size

    def _shard_len(self, n):
        full, rest = divmod(n, self.batch_size)
        lo, hi = self._shard_part(self.batch_size)
        count = full if hi > lo else 0
        if rest and not self.drop_last_effective:
            lo, hi = self._shard_part(rest)
            count += hi > lo
        return count

    def _shard_selections(self, n):
        rank, size = self.shard
        epoch = int(self.epoch)
        seed = self.shard_seed
        if self._shard_from_world and size > 1:
            from ..distributed.loader_check import agree_on_epoch
            seed = agree_on_epoch(self, n, epoch)
        self.epoch = epoch + 1
        order = np.random.default_rng([seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        self._shard_rng = np.random.default_rng([seed, epoch, rank, 1])
        batches = n // self.batch_size if self.drop_last_effective else -(-n // self.batch_size)
        for k in range(batches):
            chunk = order[k * self.batch_size:min(n, (k + 1) * self.batch_size)]
            lo, hi = self._shard_part(len(chunk))
            if hi > lo:
                yield chunk[lo:hi]

    def __repr__(self) -> str:
        extra = f", transform={self.transform!r}" if self.transform is not None else ""
        if self.shard:
            extra += f", shard={self.shard}"
        return (f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"normalize={self.normalize}, dtype={self.dtype!r}{extra})")
