"""The built-in datasets: ``load_dataset`` and the MNIST family's IDX files.

See :mod:`engine.data` for the names, where files are looked for and how they
are checked; CIFAR lives in :mod:`engine.data.cifar`.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
from dataclasses import dataclass

import numpy as np

from .dataset import ArrayDataset as Dataset
from .download import (DOWNLOAD_ERRORS, DatasetUnavailableError, cache_dir, describe_error, fetch,
                       search_report)
from .cifar import CIFAR_NAMES, load_cifar
from .idx import _read_idx

__all__ = ["DATASET_NAMES", "load_dataset"]


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
            "mnist_5k": "mnist5k", "mnist-5k": "mnist5k", "cifar-10": "cifar10", "cifar_10": "cifar10",
            "cifar-100": "cifar100", "cifar_100": "cifar100", "cifar100_coarse": "cifar100-coarse",
            "cifar-100-coarse": "cifar100-coarse"}
#: Names accepted by :func:`load_dataset`.
DATASET_NAMES = ("mnist5k", "mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")
_SPLITS = ("train", "test")


def load_dataset(name: str = "mnist5k", split: str = "train", data_dir=None,
                 download: bool = True, verify: bool = True) -> Dataset:
    """Load split ``"train"`` or ``"test"`` of a built-in dataset.

    ``name``: ``"mnist5k"`` (shipped with the package), ``"mnist"``,
    ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"`` (100 fine classes) or
    ``"cifar100-coarse"`` (its 20 superclasses); see :mod:`engine.data` for
    where files are looked for. ``download``: fetch missing files into
    :func:`cache_dir` (``False`` never touches the network). ``verify``:
    check every file against its known sha256 (MNIST's ``.gz`` as published,
    or the decompressed content, so decompressed or recompressed copies are
    accepted too; CIFAR's archive and extracted files).

    Returns an :class:`ArrayDataset` with uint8 images ``(N, 1, 28, 28)``
    (MNIST family) or ``(N, 3, 32, 32)`` (CIFAR) and int64 labels. Raises :class:`DatasetUnavailableError` (a ``FileNotFoundError``)
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
    if key in CIFAR_NAMES:
        return load_cifar(key, split, data_dir, download, verify)
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
    for mirror in spec.mirrors:
        url = mirror + f.stem + ".gz"

        def same_content(tmp, digest, size):
            # A mirror may recompress; what matters is the content.
            content = hashlib.sha256()
            try:
                _read_idx(tmp, content)
            except ValueError as exc:
                raise ValueError(f"corrupt download ({size} bytes): {exc}") from None
            if content.hexdigest() != f.raw_sha256:
                raise ValueError(f"sha256 mismatch: got {digest} ({size} bytes), "
                                 f"expected {f.gz_sha256} ({f.gz_size} bytes)")

        try:
            return fetch(url, target, f.stem + ".gz", 4 * f.gz_size + (1 << 20), f.gz_sha256, same_content)
        except DOWNLOAD_ERRORS as exc:
            errors.append(describe_error(url, exc))
    return None


def _not_found_message(spec, split, wanted, searched, partial, download, errors) -> str:
    target = cache_dir(spec.name)
    lines = search_report(spec.title, split, download, searched, partial, errors)
    lines.append(f"To fix it, put these files into {target}{os.sep} "
                 f"(or into a folder passed as data_dir=, or $ENGINE_DATA{os.sep}{spec.name}{os.sep}):")
    lines += [f"  {f.stem}.gz  (sha256 {f.gz_sha256}; decompressed copies are fine too)"
              for f in wanted]
    lines.append("They can be downloaded from " + " or ".join(spec.mirrors))
    if spec.hint:
        lines.append(spec.hint)
    return "\n".join(lines)
