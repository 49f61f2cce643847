"""Data: datasets, a batching loader, augmentation, and the built-in datasets.

    from engine.data import load_dataset, DataLoader, train_val_split, transforms as T

    train = load_dataset("mnist5k", "train")           # shipped with the package
    train, val = train_val_split(train, 0.1, seed=0)
    augment = T.RandomCrop(28, padding=2)
    for x, y in DataLoader(train, batch_size=64, shuffle=True, seed=0, transform=augment):
        ...   # x: (64, 1, 28, 28) float32 on the active backend, y: (64,) int64

Datasets: anything with ``len(ds)`` and ``ds[i] -> (image, label)``
(:class:`Dataset` to subclass, :class:`ArrayDataset`/``TensorDataset`` for
arrays in memory, :class:`ImageFolder` for a folder of PNG/JPEG files,
:class:`Subset`, :func:`random_split`, :func:`train_val_split`). Labels are
integer classes, float targets, or one-hot/probability vectors.
:mod:`engine.data.transforms`: batched augmentation on the backend
(``RandomCrop``, ``RandomHorizontalFlip``, ``RandomResizedCrop``,
``ColorJitter``, ``RandomErasing``, ``CenterCrop``, ``Resize``,
``Normalize``, ``ToFloat``, ``Compose``). The engine computes in NCHW:
channels-last data is converted with ``layout="NHWC"``, never silently
reinterpreted (:func:`check_layout`, :func:`to_nchw`).

Built-in datasets (:func:`load_dataset`):

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
``"cifar10"``, ``"cifar100"``, ``"cifar100-coarse"``
    50,000/10,000 RGB 32x32 images from the official *binary* archives
    (never the pickled version): the extracted folder or the archive, found
    in the same places (``data_dir``, ``$ENGINE_DATA/<name>/``, the cache), or
    downloaded into the cache, sha256-checked, members extracted one by one
    (see :mod:`engine.data.cifar`).

Arrays stay in NumPy on the host until :class:`DataLoader` hands out a batch;
only batches go to the active backend (``engine.asarray``).
"""
from __future__ import annotations

from . import transforms
from .builtin import DATASET_NAMES, _IDX_DATASETS, _MNIST, _IdxDataset, _IdxFile, load_dataset  # noqa: F401
from .cifar import read_cifar_binary
from .dataset import ArrayDataset, Dataset, Subset, TensorDataset, random_split, train_val_split
from .download import DatasetUnavailableError, cache_dir
from .folder import IMAGE_EXTENSIONS, ImageFolder, load_image
from .idx import read_idx, write_idx
from .layout import check_layout, to_nchw
from .loader import DataLoader

__all__ = [
    "DATASET_NAMES",
    "ArrayDataset",
    "DataLoader",
    "Dataset",
    "DatasetUnavailableError",
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "Subset",
    "TensorDataset",
    "cache_dir",
    "check_layout",
    "load_dataset",
    "load_image",
    "random_split",
    "read_cifar_binary",
    "read_idx",
    "to_nchw",
    "train_val_split",
    "transforms",
    "write_idx",
]
