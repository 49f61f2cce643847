"""Data: IDX files, the built-in datasets, and a batching loader.

    from engine.data import load_dataset, DataLoader, train_val_split

    train = load_dataset("mnist5k", "train")           # shipped with the package
    train, val = train_val_split(train, 0.1, seed=0)
    for x, y in DataLoader(train, batch_size=64, shuffle=True, seed=0):
        ...   # x: (64, 1, 28, 28) float32 on the active backend, y: (64,) int64

Datasets (:func:`load_dataset`):

``"mnist5k"``
    5,000 real MNIST digits shipped inside the package
    (``engine/datasets/mnist5k.npz``), always available offline. It has no
    official test split; a fixed, seeded, stratified one is stored in the
    file: ``"train"`` 4,000 digits (400 per class), ``"test"`` 1,000 (100 per
    class). See ``engine/datasets/README.md``.
``"mnist"``, ``"fashion-mnist"``
    The full 60,000/10,000 sets, read from the standard IDX files (``.gz`` as
    published, or decompressed). Searched for, in order, in ``data_dir``
    (the folder itself, ``data_dir/<name>/`` or torchvision's
    ``data_dir/MNIST/raw/``), ``$ENGINE_DATA/<name>/``, the user cache
    (``$XDG_CACHE_HOME/engine/<name>/``, default ``~/.cache/engine/<name>/``)
    and, for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist/`` (Debian's
    ``dataset-fashion-mnist`` package). Otherwise downloaded into the cache
    (``download=True``). Every file is checked against known sha256 sums.

Arrays stay in NumPy on the host until :class:`DataLoader` hands out a batch;
only batches go to the active backend (``engine.asarray``).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.resources
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

from . import backends

from . import _state
from ._io import atomic_write, current_umask

__all__ = [
    "DATASET_NAMES",
    "DataLoader",
    "Dataset",
    "DatasetUnavailableError",
    "cache_dir",
    "load_dataset",
    "read_idx",
    "train_val_split",
    "write_idx",
]


class DatasetUnavailableError(FileNotFoundError):
    """A dataset's files are not on this machine and could not be downloaded.

    The message lists every place searched and says where to put which files.
    """


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------
# The IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type
# code, the number of dimensions, then one big-endian uint32 per dimension,
# then the data, big-endian, row-major.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("=").name if dt.itemsize > 1 else dt.name: code
              for code, dt in _IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data by more than ~1032:1, so a header promising
# more than this many bytes per compressed byte describes a truncated file.
_MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20


def _describe(path) -> str:
    return os.fspath(path)


def _read_exactly(stream, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        block = stream.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _read_idx(path, hasher=None) -> np.ndarray:
    """Parse the IDX file at ``path``; feed the decompressed bytes to ``hasher``."""
    name = _describe(path)
    with open(path, "rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        file_size = os.fstat(raw.fileno()).st_size
        compressed = name.endswith(".gz") or head == _GZIP_MAGIC
        if compressed and head != _GZIP_MAGIC:
            raise ValueError(f"{name}: not a gzip file: expected the gzip magic bytes "
                             f"1f 8b, found {head.hex(' ') or 'an empty file'}")
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            return _parse_idx(stream, name, compressed, file_size, hasher)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{name}: corrupt or truncated gzip stream "
                             f"({type(exc).__name__}: {exc or 'unexpected end of data'})") from None
        finally:
            if compressed:
                stream.close()


def _parse_idx(stream, name, compressed, file_size, hasher):
    magic = _read_exactly(stream, 4)
    if len(magic) < 4:
        raise ValueError(f"{name}: truncated IDX header: expected 4 magic bytes "
                         f"(00 00 <type> <ndim>), found {len(magic)} byte(s)")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{name}: not an IDX file: expected magic 00 00 <type> <ndim>, "
                         f"found {magic.hex(' ')}")
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} {dt.name}" for c, dt in _IDX_TYPES.items())
        raise ValueError(f"{name}: unknown IDX type code 0x{type_code:02X} "
                         f"(magic {magic.hex(' ')}); expected one of {known}")
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions "
                         f"(magic {magic.hex(' ')}); expected at least 1")
    dim_bytes = _read_exactly(stream, 4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise ValueError(f"{name}: truncated IDX header: magic declares {ndim} dimension(s) "
                         f"({4 * ndim} bytes of sizes), found {len(dim_bytes)} byte(s)")
    dims = tuple(int(d) for d in np.frombuffer(dim_bytes, dtype=">u4"))
    dtype = _IDX_TYPES[type_code]
    count = 1
    for d in dims:
        count *= d
    header = 4 + 4 * ndim
    expected = count * dtype.itemsize
    shape_txt = "x".join(map(str, dims))
    what = f"{shape_txt} {dtype.name} = {expected} payload bytes"
    if hasher is not None:
        hasher.update(magic)
        hasher.update(dim_bytes)

    if not compressed and header + expected != file_size:
        found = file_size - header
        kind = "truncated" if found < expected else "over-long"
        raise ValueError(f"{name}: {kind} IDX file: header declares {what}, "
                         f"found {found} payload bytes")
    if compressed and expected > _MAX_DEFLATE_RATIO * file_size + 4096:
        raise ValueError(f"{name}: IDX header declares {what}, more than a {file_size}-byte "
                         f"gzip file can hold: the file is truncated or its header corrupt")
    try:
        out = np.empty(count, dtype=dtype)
    except (MemoryError, ValueError):
        raise ValueError(f"{name}: IDX header declares {what}, which cannot be allocated: "
                         f"corrupt header?") from None
    buf = memoryview(out.view(np.uint8).reshape(-1))
    got = 0
    while got < expected:
        n = stream.readinto(buf[got:])
        if not n:
            break
        got += n
    if got < expected:
        raise ValueError(f"{name}: truncated IDX file: header declares {what}, "
                         f"found {got} payload bytes")
    # Reading past the payload also makes gzip check its CRC and length.
    extra = 0
    while True:
        block = stream.read(_CHUNK)
        if not block:
            break
        extra += len(block)
    if extra:
        raise ValueError(f"{name}: over-long IDX file: header declares {what}, "
                         f"found {expected + extra} payload bytes ({extra} trailing)")
    if hasher is not None:
        hasher.update(buf)
    if dtype.itemsize > 1:
        out = out.astype(dtype.newbyteorder("="))
    return out.reshape(dims)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (MNIST format), raw or gzip-compressed, into a NumPy array.

    All IDX types are understood (uint8, int8, int16, int32, float32,
    float64); multi-byte data come back in native byte order. A file is
    treated as gzip if its name ends in ``.gz`` or it starts with the gzip
    magic bytes. Anything malformed (bad magic, unknown type, truncated or
    over-long payload, corrupt gzip stream or CRC) raises ``ValueError``
    naming the file and what was expected versus found.
    """
    return _read_idx(path)


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    Written to a temporary file first and moved into place, so readers never
    see a partial file. Supported dtypes: uint8, int8, int16, int32, float32,
    float64; at most 255 dimensions, each below 2**32.
    """
    a = np.asarray(array)
    if a.dtype.name not in _IDX_CODES:
        raise TypeError(f"write_idx: IDX has no type for dtype {a.dtype}; "
                        f"supported: {', '.join(_IDX_CODES)}")
    if not 1 <= a.ndim <= 255 or any(d >= 2 ** 32 for d in a.shape):
        raise ValueError(f"write_idx: cannot store shape {a.shape} "
                         f"(1 to 255 dimensions, each below 2**32)")
    code = _IDX_CODES[a.dtype.name]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(a, dtype=_IDX_TYPES[code]).tobytes()

    def write(f):
        if os.fspath(path).endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            f.write(header)
            f.write(payload)

    atomic_write(path, write)


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------
class Dataset:
    """Images and labels held as NumPy arrays on the host.

    ``images``: ``(N, C, H, W)``, uint8 (0-255) or floating (already in
    [0, 1]); ``(N, H, W)`` is accepted and given one channel. ``labels``:
    ``(N,)`` int64. ``classes``: class names, ``classes[label]``.
    ``mean``/``std``: pixel statistics on the [0, 1] scale used by
    :class:`DataLoader`'s default normalisation; the built-in datasets carry
    those of their *train* split on every split (so train and test are
    normalised alike), a dataset built from arrays computes its own.

    ``len(ds)``; ``ds[i]`` is ``(image, label)``; ``ds[slice]`` or
    ``ds[index_array]`` is a new :class:`Dataset` (see :meth:`subset`).
    """

    def __init__(self, images, labels, *, classes=None, name: str = "custom",
                 split: str | None = None, mean: float | None = None,
                 std: float | None = None, source: str | None = None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4:
            raise ValueError(f"Dataset: images must be (N, C, H, W) or (N, H, W), "
                             f"got shape {images.shape}")
        if not (images.dtype == np.uint8 or images.dtype.kind == "f"):
            raise TypeError(f"Dataset: images must be uint8 (0-255) or floating "
                            f"(already scaled to [0, 1]), got {images.dtype}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"Dataset: labels must be (N,) with N = {len(images)} images, "
                             f"got shape {labels.shape}")
        if labels.dtype.kind not in "iu" and len(labels):
            raise TypeError(f"Dataset: labels must be integers, got {labels.dtype}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        if classes is None:
            top = int(self.labels.max()) + 1 if len(self.labels) else 0
            classes = tuple(str(i) for i in range(top))
        self.classes = tuple(classes)
        self.name = name
        self.split = split
        self.source = source
        self._mean = None if mean is None else float(mean)
        self._std = None if std is None else float(std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.images[index], int(self.labels[index])
        return self.subset(index)

    def subset(self, indices, split: str | None = None) -> Dataset:
        """The samples at ``indices`` (slice, integer or boolean array), same
        classes and normalisation statistics."""
        self._fill_stats()
        return Dataset(self.images[indices], self.labels[indices], classes=self.classes,
                       name=self.name, split=self.split if split is None else split,
                       mean=self._mean, std=self._std, source=self.source)

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])

    @property
    def mean(self) -> float:
        """Mean pixel value on the [0, 1] scale (see the class docstring)."""
        self._fill_stats()
        return self._mean

    @property
    def std(self) -> float:
        """Pixel standard deviation on the [0, 1] scale."""
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
            flat = self.images.reshape(-1)
            counts = np.zeros(256, dtype=np.int64)
            for start in range(0, flat.size, _CHUNK):
                counts += np.bincount(flat[start:start + _CHUNK], minlength=256)
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
        """Number of samples of each class, ``(len(classes),)`` int64."""
        return np.bincount(self.labels, minlength=len(self.classes))

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split is not None else ""
        return (f"Dataset(name={self.name!r}{split}, n={len(self)}, "
                f"image_shape={self.image_shape}, dtype={self.images.dtype}, "
                f"classes={len(self.classes)})")


def _as_dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return Dataset(np.asarray(data[0]), np.asarray(data[1]))
    raise TypeError(f"expected a Dataset or an (images, labels) pair of arrays, "
                    f"got {type(data).__name__}")


def train_val_split(dataset, val_fraction: float = 0.1, seed: int | None = None,
                    stratify: bool = True) -> tuple[Dataset, Dataset]:
    """Split ``dataset`` into ``(train, val)`` at random.

    ``val_fraction``: a fraction in (0, 1), or an int number of validation
    samples. ``stratify`` keeps each class's share equal in both parts (the
    per-class counts are rounded so the total is exact). ``seed``: an int for
    a fixed split; ``None`` draws from the engine generator, so
    :func:`engine.manual_seed` makes it reproducible. Both parts keep the
    parent's classes and normalisation statistics; indices inside each part
    stay in the parent's order.
    """
    ds = _as_dataset(dataset)
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
    rng = np.random.default_rng(seed) if seed is not None else _state.host_rng()
    if stratify:
        counts = np.bincount(ds.labels, minlength=len(ds.classes))
        quota = counts * (n_val / n)
        take = np.floor(quota).astype(np.int64)
        short = n_val - int(take.sum())
        if short > 0:  # largest remainders first, ties to the lower class
            order = np.lexsort((np.arange(len(quota)), -(quota - take)))
            take[order[:short]] += 1
        picked = []
        for k in np.flatnonzero(take):
            members = np.flatnonzero(ds.labels == k)
            picked.append(rng.permutation(members)[:take[k]])
        val_idx = np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)
    else:
        val_idx = np.sort(rng.permutation(n)[:n_val])
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return ds.subset(np.flatnonzero(mask)), ds.subset(val_idx, split="val")


# ---------------------------------------------------------------------------
# Built-in datasets
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _IdxFile:
    stem: str          # file name without ".gz"
    gz_sha256: str     # sha256 of the published .gz
    gz_size: int
    raw_sha256: str    # sha256 of the decompressed IDX file
    raw_size: int


@dataclass(frozen=True)
class _IdxDataset:
    name: str
    title: str
    mirrors: tuple
    files: dict        # split -> (images _IdxFile, labels _IdxFile)
    count: dict        # split -> number of samples
    classes: tuple
    mean: float        # train-split pixel statistics on the [0, 1] scale
    std: float
    torchvision_dir: str
    system_dirs: tuple = ()
    hint: str = ""


_MNIST = _IdxDataset(
    name="mnist",
    title="MNIST",
    # torchvision's mirror first, then the one tensorflow-datasets uses.
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    # .gz sha256 and sizes: tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt
    # (also torchvision's prototype MNIST _CHECKSUMS). Decompressed sha256: as recorded
    # by several independent projects that checked the .gz against those sums.
    files={
        "train": (
            _IdxFile("train-images-idx3-ubyte",
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422,
                     "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
            _IdxFile("train-labels-idx1-ubyte",
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881,
                     "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
        ),
        "test": (
            _IdxFile("t10k-images-idx3-ubyte",
                     "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877,
                     "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
            _IdxFile("t10k-labels-idx1-ubyte",
                     "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542,
                     "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
        ),
    },
    count={"train": 60000, "test": 10000},
    classes=tuple(str(i) for i in range(10)),
    # The customary MNIST train-set constants (torchvision examples); not
    # recomputed here, as no copy of MNIST is at hand.
    mean=0.1307,
    std=0.3081,
    torchvision_dir="MNIST",
)

_FASHION = _IdxDataset(
    name="fashion-mnist",
    title="Fashion-MNIST",
    # Zalando's own bucket (http only: an S3 website endpoint), then the
    # copies in the upstream git repository.
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    # .gz sha256 and sizes: tensorflow/datasets, tensorflow_datasets/url_checksums/fashion_mnist.txt
    # (upstream publishes only MD5s, in its README). Decompressed sha256: computed from
    # Debian's dataset-fashion-mnist files, equal to those recorded by independent projects
    # from .gz files that matched the upstream MD5s. Debian's .gz differ from upstream's
    # (strip-nondeterminism rewrote the gzip header: no file name, mtime 2020-06-05), so
    # they are recognised by the decompressed sums.
    files={
        "train": (
            _IdxFile("train-images-idx3-ubyte",
                     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880,
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
            _IdxFile("train-labels-idx1-ubyte",
                     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515,
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
        ),
        "test": (
            _IdxFile("t10k-images-idx3-ubyte",
                     "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102,
                     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
            _IdxFile("t10k-labels-idx1-ubyte",
                     "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148,
                     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
        ),
    },
    count={"train": 60000, "test": 10000},
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # Computed from the 60,000 training images.
    mean=0.2860405969887955,
    std=0.35302424451492254,
    torchvision_dir="FashionMNIST",
    system_dirs=(("/usr/share/datasets/fashion-mnist",
                  "Debian/Ubuntu package dataset-fashion-mnist"),),
    hint="On Debian/Ubuntu: apt-get install dataset-fashion-mnist",
)

_IDX_DATASETS = {spec.name: spec for spec in (_MNIST, _FASHION)}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "mnist_5k": "mnist5k", "mnist-5k": "mnist5k"}
#: Names accepted by :func:`load_dataset`.
DATASET_NAMES = ("mnist5k", "mnist", "fashion-mnist")
_SPLITS = ("train", "test")


def cache_dir(name: str | None = None) -> str:
    """The engine's download cache: ``$XDG_CACHE_HOME/engine`` (default
    ``~/.cache/engine``), or its sub-folder for dataset ``name``."""
    root = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(root):
        root = os.path.join(os.path.expanduser("~"), ".cache")
    base = os.path.join(root, "engine")
    return base if name is None else os.path.join(base, name)


def load_dataset(name: str = "mnist5k", split: str = "train", data_dir=None,
                 download: bool = True, verify: bool = True) -> Dataset:
    """Load split ``"train"`` or ``"test"`` of a built-in dataset.

    ``name``: ``"mnist5k"`` (shipped with the package), ``"mnist"`` or
    ``"fashion-mnist"`` (see the module docstring for where files are looked
    for). ``download``: fetch missing files into :func:`cache_dir` (``False``
    never touches the network). ``verify``: check every file against its
    known sha256 (``.gz`` as published, or the decompressed content, so
    decompressed or recompressed copies are accepted too).

    Returns a :class:`Dataset` with uint8 images ``(N, 1, 28, 28)`` and int64
    labels. Raises :class:`DatasetUnavailableError` (a ``FileNotFoundError``)
    when the files are neither found nor downloadable, and ``ValueError`` for
    a file that is corrupt or not the expected one.
    """
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r} for {key}; expected 'train' or 'test'")
    if key == "mnist5k":
        return _load_mnist5k(split)
    return _load_idx_dataset(_IDX_DATASETS[key], split, data_dir, download, verify)


def _load_mnist5k(split: str) -> Dataset:
    resource = importlib.resources.files("engine.datasets").joinpath("mnist5k.npz")
    with importlib.resources.as_file(resource) as path, np.load(path, allow_pickle=False) as z:
        images = z[f"{split}_images"]
        labels = z[f"{split}_labels"]
        mean, std = float(z["train_mean"]), float(z["train_std"])
    return Dataset(images, labels, classes=_MNIST.classes, name="mnist5k", split=split,
                   mean=mean, std=std, source=str(path))


def _candidate_dirs(spec: _IdxDataset, data_dir) -> list[tuple[str, str]]:
    """(directory, why it is searched), in search order."""
    dirs = []
    if data_dir is not None:
        d = os.path.expanduser(os.fspath(data_dir))
        dirs += [(d, "data_dir argument"),
                 (os.path.join(d, spec.name), "data_dir argument"),
                 (os.path.join(d, spec.torchvision_dir, "raw"), "data_dir argument, torchvision layout")]
    env = os.environ.get("ENGINE_DATA")
    if env:
        d = os.path.expanduser(env)
        dirs += [(os.path.join(d, spec.name), "$ENGINE_DATA"),
                 (os.path.join(d, spec.torchvision_dir, "raw"), "$ENGINE_DATA, torchvision layout")]
    dirs.append((cache_dir(spec.name), "user cache"))
    dirs += list(spec.system_dirs)
    return dirs


def _find_file(directory: str, stem: str) -> str | None:
    # Torchvision and some archives name the decompressed files with a dot
    # before "idx" ("train-images.idx3-ubyte"); accept both spellings.
    dotted = stem.replace("-idx", ".idx")
    for candidate in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _load_idx_dataset(spec: _IdxDataset, split: str, data_dir, download: bool,
                      verify: bool) -> Dataset:
    wanted = spec.files[split]
    searched, partial = [], []
    found = None
    for directory, why in _candidate_dirs(spec, data_dir):
        paths = [_find_file(directory, f.stem) for f in wanted]
        searched.append((directory, why))
        if all(paths):
            found = paths
            break
        if any(paths):
            missing = [f.stem for f, p in zip(wanted, paths) if p is None]
            partial.append(f"{directory} lacks {', '.join(missing)}")
    download_errors = []
    if found is None and download:
        found, download_errors = _download_split(spec, wanted)
    if found is None:
        raise DatasetUnavailableError(
            _not_found_message(spec, split, wanted, searched, partial, download, download_errors))
    images = _read_checked(found[0], wanted[0], spec, verify)
    labels = _read_checked(found[1], wanted[1], spec, verify)
    n = spec.count[split]
    if images.dtype != np.uint8 or images.shape != (n, 28, 28):
        raise ValueError(f"{found[0]}: expected {n}x28x28 uint8 images for {spec.title} "
                         f"{split}, found {'x'.join(map(str, images.shape))} {images.dtype}")
    if labels.dtype != np.uint8 or labels.shape != (n,):
        raise ValueError(f"{found[1]}: expected {n} uint8 labels for {spec.title} {split}, "
                         f"found {'x'.join(map(str, labels.shape))} {labels.dtype}")
    if labels.max() >= len(spec.classes):
        raise ValueError(f"{found[1]}: labels must be 0..{len(spec.classes) - 1}, "
                         f"found {int(labels.max())}")
    return Dataset(images[:, None], labels, classes=spec.classes, name=spec.name, split=split,
                   mean=spec.mean, std=spec.std, source=os.path.dirname(found[0]))


def _read_checked(path: str, f: _IdxFile, spec: _IdxDataset, verify: bool) -> np.ndarray:
    if not verify:
        return _read_idx(path)
    hasher = hashlib.sha256()
    array = _read_idx(path, hasher)
    digest = hasher.hexdigest()
    if digest != f.raw_sha256:
        raise ValueError(
            f"{path}: not the published {spec.title} file {f.stem}: its decompressed content "
            f"has sha256 {digest}, expected {f.raw_sha256}. Replace it (or delete it to "
            f"download it again), or pass verify=False to load it anyway.")
    return array


def _download_split(spec: _IdxDataset, wanted) -> tuple[list | None, list[str]]:
    target = cache_dir(spec.name)
    errors = []
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as exc:
        return None, [f"cannot create the cache directory {target}: {exc}"]
    paths = []
    for f in wanted:
        existing = _find_file(target, f.stem)
        if existing is not None:
            paths.append(existing)
            continue
        path = _download_file(spec, f, target, errors)
        if path is None:
            return None, errors
        paths.append(path)
    return paths, errors


def _download_file(spec: _IdxDataset, f: _IdxFile, target: str, errors: list) -> str | None:
    dest = os.path.join(target, f.stem + ".gz")
    for mirror in spec.mirrors:
        url = mirror + f.stem + ".gz"
        print(f"engine.data: downloading {url}", file=sys.stderr)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=target, prefix="." + f.stem + ".gz.", suffix=".part")
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    if size > 4 * f.gz_size + (1 << 20):
                        raise ValueError(f"more than {size} bytes, expected {f.gz_size}")
            if digest.hexdigest() != f.gz_sha256:
                # A mirror may recompress; what matters is the content.
                content = hashlib.sha256()
                try:
                    _read_idx(tmp, content)
                except ValueError as exc:
                    raise ValueError(f"corrupt download ({size} bytes): {exc}") from None
                if content.hexdigest() != f.raw_sha256:
                    raise ValueError(f"sha256 mismatch: got {digest.hexdigest()} ({size} bytes), "
                                     f"expected {f.gz_sha256} ({f.gz_size} bytes)")
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            errors.append(f"{url}: {type(exc).__name__}: {reason}")
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    return None


def _not_found_message(spec, split, wanted, searched, partial, download, errors) -> str:
    target = cache_dir(spec.name)
    lines = [f"{spec.title} ({split} split) is not on this machine"
             + (" and could not be downloaded." if download else " (download=False).")]
    lines.append("Looked in:")
    lines += [f"  {d}  ({why})" for d, why in searched]
    if not os.environ.get("ENGINE_DATA"):
        lines.append("  ($ENGINE_DATA is not set)")
    if partial:
        lines.append("Incomplete:")
        lines += [f"  {p}" for p in partial]
    if errors:
        lines.append("Download failed:")
        lines += [f"  {e}" for e in errors]
    lines.append(f"To fix it, put these files into {target}{os.sep} "
                 f"(or into a folder passed as data_dir=, or $ENGINE_DATA{os.sep}{spec.name}{os.sep}):")
    lines += [f"  {f.stem}.gz  (sha256 {f.gz_sha256}; decompressed copies are fine too)"
              for f in wanted]
    lines.append("They can be downloaded from " + " or ".join(spec.mirrors))
    if spec.hint:
        lines.append(spec.hint)
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------
_FLOAT_NAMES = ("float16", "float32", "float64")


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


class DataLoader:
    """Batches ``(x, y)`` of a :class:`Dataset` on the active backend.

    ``x``: ``(B, C, H, W)`` of ``dtype`` (default float32): uint8 pixels
    divided by 255 (floating images are taken as already in [0, 1]), then,
    with the default ``normalize="dataset"`` (or ``True``), standardised as
    ``(x - mean) / std`` with the dataset's ``mean``/``std`` (for the
    built-in datasets those of the train split, on every split).
    ``normalize=None`` (or ``False``) stops at [0, 1]; ``(mean, std)``, each
    a number or one per channel, sets them explicitly.
    ``y``: ``(B,)`` int64.

    ``data``: a :class:`Dataset` or an ``(images, labels)`` pair of arrays.
    ``shuffle``: a new permutation every epoch (every ``iter()``), drawn from
    a generator seeded with ``seed``, or, if ``seed`` is ``None``, from the
    engine generator (:func:`engine.manual_seed` makes it reproducible).
    ``drop_last``: leave out a final short batch. ``len(loader)`` is the
    number of batches per epoch. ``backend``: a backend name; default: the
    one active when iteration starts.

    The NumPy side is a single fancy-index per batch; pixels travel to the
    backend as uint8 and are converted there (a quarter of the bytes of
    float32 to move to a GPU).
    """

    def __init__(self, data, batch_size: int = 64, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False, normalize="dataset",
                 dtype="float32", backend: str | None = None):
        self.dataset = _as_dataset(data)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.dtype = _dtype_name(dtype)
        self.backend = backend
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None
        channels = self.dataset.images.shape[1]
        if normalize is None or normalize is False:
            self.normalize = None
        elif normalize is True or isinstance(normalize, str):
            if normalize not in (True, "dataset"):
                raise ValueError(f"DataLoader: normalize must be 'dataset', None or "
                                 f"(mean, std), got {normalize!r}")
            self.normalize = (self.dataset.mean, self.dataset.std)
        else:
            try:
                mean, std = normalize
            except (TypeError, ValueError):
                raise ValueError(f"DataLoader: normalize must be 'dataset', None or "
                                 f"(mean, std), got {normalize!r}") from None
            mean = np.asarray(mean, dtype=np.float64)
            std = np.asarray(std, dtype=np.float64)
            for v in (mean, std):
                if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, channels)):
                    raise ValueError(f"DataLoader: normalize mean/std must be numbers or one "
                                     f"per channel ({channels}), got shape {v.shape}")
            if np.any(std <= 0):
                raise ValueError(f"DataLoader: normalize std must be positive, got {std}")
            self.normalize = (float(mean) if mean.ndim == 0 else tuple(mean.tolist()),
                              float(std) if std.ndim == 0 else tuple(std.tolist()))
        if self.normalize is not None and not (np.all(np.asarray(self.normalize[1]) > 0)):
            raise ValueError(f"DataLoader: the dataset's pixel std is {self.normalize[1]}: "
                             f"constant images cannot be normalised; pass normalize=None")

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        return self._batches()

    def _batches(self):
        ds = self.dataset
        n = len(ds)
        order = None
        if self.shuffle:
            rng = self._rng if self._rng is not None else _state.host_rng()
            order = rng.permutation(n)
        b = backends.get(self.backend) if self.backend is not None else _state.current()
        xp = b.xp
        try:
            dt = b.dtype(self.dtype)
        except AttributeError:
            raise ValueError(f"DataLoader: backend {b.name!r} has no dtype {self.dtype}") from None
        int64 = b.dtype("int64")
        shift = scale = None
        if self.normalize is not None:
            shift, scale = (self._channel_param(b, v, dt) for v in self.normalize)
        integer = ds.images.dtype == np.uint8
        stop = len(self) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            idx = slice(start, min(start + self.batch_size, n)) if order is None \
                else order[start:start + self.batch_size]
            if integer:
                x = xp.astype(b.asarray(ds.images[idx]), dt) / 255.0
            else:
                x = b.asarray(ds.images[idx], dtype=dt)
            if shift is not None:
                x = (x - shift) / scale
            y = b.asarray(ds.labels[idx], dtype=int64)
            yield x, y

    def _channel_param(self, b, value, dt):
        if isinstance(value, float):
            return value
        values = np.asarray(value, dtype=np.float64)
        if values.size == 1:
            return float(values.reshape(()))
        return b.asarray(values.astype(self.dtype).reshape(1, -1, 1, 1), dtype=dt)

    def __repr__(self) -> str:
        return (f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"normalize={self.normalize}, dtype={self.dtype!r})")
