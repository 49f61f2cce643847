"""CIFAR-10 and CIFAR-100 from their official *binary* distributions.

The pickled "python version" is never read (unpickling runs code). Formats
(https://www.cs.toronto.edu/~kriz/cifar.html):

* ``cifar-10-binary.tar.gz`` → ``cifar-10-batches-bin/``: ``data_batch_1.bin``
  … ``data_batch_5.bin`` (train, 10,000 records each) and ``test_batch.bin``;
  a record is 1 label byte (0-9) + 3,072 pixel bytes (1,024 red, then green,
  then blue, each 32x32 row-major): 3,073 bytes.
* ``cifar-100-binary.tar.gz`` → ``cifar-100-binary/``: ``train.bin`` (50,000
  records) and ``test.bin`` (10,000); a record is 2 label bytes (coarse 0-19,
  fine 0-99) + 3,072 pixel bytes: 3,074 bytes.

Files are searched like MNIST's (``data_dir``, ``$ENGINE_DATA/<name>/``, the
user cache), as the extracted folder or as the archive; an archive found (or
downloaded into the cache) is checked against its sha256, then only the
expected members — regular files of the expected size, never arbitrary paths
— are extracted into the cache, checked against their own sha256 sums.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass

import numpy as np

from .._io import atomic_write
from ._files import open_regular
from .dataset import ArrayDataset
from .download import (DOWNLOAD_ERRORS, DatasetUnavailableError, cache_dir, describe_error, fetch,
                       search_report)

__all__ = ["CIFAR10_CLASSES", "CIFAR100_CLASSES", "CIFAR100_COARSE_CLASSES", "read_cifar_binary"]

_PIXELS = 3 * 32 * 32
_RECORDS_PER_READ = 1024

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm")


@dataclass(frozen=True)
class _CifarFile:
    name: str            # inside the archive's folder, e.g. "data_batch_1.bin"
    records: int
    sha256: str | None   # None: no published sum (then only the structure is checked)


@dataclass(frozen=True)
class _CifarSpec:
    name: str            # "cifar10", "cifar100"
    title: str
    archive: str         # "cifar-10-binary.tar.gz"
    folder: str          # the archive's top folder, "cifar-10-batches-bin"
    urls: tuple
    archive_sha256: str
    archive_size: int
    label_bytes: int     # 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine)
    files: dict          # split -> tuple of _CifarFile
    label_files: tuple   # text files naming the classes, one per label byte
    classes: tuple       # per label byte
    mean: tuple          # train-split per-channel statistics on the [0, 1] scale
    std: tuple

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + _PIXELS


# Sums: the archives' sha256 and sizes as recorded by several independent projects
# (tensorflow-datasets' url checksums, gomlx, torchvision-ruby, MLDatasets.jl); the
# publisher lists MD5s (c32a1d4ab5d03f1284b67883e8d87530 for CIFAR-10,
# 03b5dce01913d631647c71ecec9e9cb8 for CIFAR-100). The sums of the extracted .bin
# files come from one project (torchvision-ruby's CIFAR10/CIFAR100 classes) and
# could not be confirmed from a second source; an archive is checked by its own
# sum in any case. The per-channel mean/std are the widely published train-split
# values; they were not recomputed here (no copy of CIFAR is at hand).
_CIFAR10 = _CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    archive="cifar-10-binary.tar.gz",
    folder="cifar-10-batches-bin",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    archive_sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    archive_size=170052171,
    label_bytes=1,
    files={
        "train": (
            _CifarFile("data_batch_1.bin", 10000, "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
            _CifarFile("data_batch_2.bin", 10000, "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
            _CifarFile("data_batch_3.bin", 10000, "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
            _CifarFile("data_batch_4.bin", 10000, "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
            _CifarFile("data_batch_5.bin", 10000, "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
        ),
        "test": (
            _CifarFile("test_batch.bin", 10000, "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),
        ),
    },
    label_files=("batches.meta.txt",),
    classes=(CIFAR10_CLASSES,),
    mean=(0.49139968, 0.48215827, 0.44653124),
    std=(0.24703233, 0.24348505, 0.26158768),
)

_CIFAR100 = _CifarSpec(
    name="cifar100",
    title="CIFAR-100",
    archive="cifar-100-binary.tar.gz",
    folder="cifar-100-binary",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
    archive_sha256="58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    archive_size=168513733,
    label_bytes=2,
    files={
        "train": (_CifarFile("train.bin", 50000, "f31298fc616915fa142368359df1c4ca2ae984d6915ca468b998a5ec6aeebf29"),),
        "test": (_CifarFile("test.bin", 10000, "d8b1e6b7b3bee4020055f0699b111f60b1af1e262aeb93a0b659061746f8224a"),),
    },
    label_files=("coarse_label_names.txt", "fine_label_names.txt"),
    classes=(CIFAR100_COARSE_CLASSES, CIFAR100_CLASSES),
    mean=(0.50707516, 0.48654887, 0.44091784),
    std=(0.26733429, 0.25643846, 0.27615047),
)

_SPECS = {"cifar10": _CIFAR10, "cifar100": _CIFAR100}
#: dataset name -> (spec name, which label byte: 0 the first, -1 the last)
CIFAR_NAMES = {"cifar10": ("cifar10", 0), "cifar100": ("cifar100", 1), "cifar100-coarse": ("cifar100", 0)}


# ---------------------------------------------------------------------------
# reading .bin files
# ---------------------------------------------------------------------------
def _read_records(stream, name, n_records, label_bytes, class_counts, images, labels, offset, hasher):
    """Read ``n_records`` records from ``stream`` into ``images[offset:]`` and
    ``labels[offset:]`` in slices (no second copy of the file)."""
    record = label_bytes + _PIXELS
    buf = np.empty((_RECORDS_PER_READ, record), dtype=np.uint8)
    done = 0
    while done < n_records:
        k = min(_RECORDS_PER_READ, n_records - done)
        view = memoryview(buf[:k].reshape(-1))
        got = 0
        while got < k * record:
            m = stream.readinto(view[got:])
            if not m:
                break
            got += m
        if got < k * record:
            raise ValueError(f"{name}: truncated CIFAR file: expected {n_records} records of {record} bytes, "
                             f"found {done + got // record} and {got % record} byte(s) more")
        chunk = buf[:k]
        if hasher is not None:
            hasher.update(view)
        for j, count in enumerate(class_counts):
            bad = np.flatnonzero(chunk[:, j] >= count)
            if bad.size:
                i = done + int(bad[0])
                raise ValueError(f"{name}: corrupt CIFAR file: record {i} has label byte {j} = "
                                 f"{int(chunk[bad[0], j])}, expected 0-{count - 1}")
        labels[offset + done:offset + done + k] = chunk[:, :label_bytes]
        images[offset + done:offset + done + k] = chunk[:, label_bytes:].reshape(k, 3, 32, 32)
        done += k


def read_cifar_binary(path, label_bytes: int = 1, num_classes=None):
    """Read one CIFAR binary file: ``(images, labels)``.

    ``images``: ``(N, 3, 32, 32)`` uint8; ``labels``: ``(N,)`` int64 with
    ``label_bytes=1`` (CIFAR-10), ``(N, 2)`` int64 (coarse, fine) with
    ``label_bytes=2`` (CIFAR-100). ``num_classes``: the label bound (one per
    label byte; default 10, or (20, 100)). A size that is not a whole number
    of records, or a label out of range, raises ``ValueError`` naming the file.
    """
    if label_bytes not in (1, 2):
        raise ValueError(f"read_cifar_binary: label_bytes must be 1 (CIFAR-10) or 2 (CIFAR-100), got {label_bytes!r}")
    counts = tuple(np.atleast_1d(num_classes if num_classes is not None
                                 else (10 if label_bytes == 1 else (20, 100))).tolist())
    if len(counts) != label_bytes:
        raise ValueError(f"read_cifar_binary: num_classes needs {label_bytes} value(s), got {num_classes!r}")
    name = os.fspath(path)
    record = label_bytes + _PIXELS
    with open_regular(name) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0 or size % record:
            raise ValueError(f"{name}: not a CIFAR binary file of {record}-byte records: its {size} bytes are "
                             f"{size // record} record(s) and {size % record} byte(s) more (truncated or corrupt)")
        n = size // record
        images = np.empty((n, 3, 32, 32), dtype=np.uint8)
        labels = np.empty((n, label_bytes), dtype=np.uint8)
        _read_records(f, name, n, label_bytes, counts, images, labels, 0, None)
    labels = labels.astype(np.int64)
    return images, (labels[:, 0] if label_bytes == 1 else labels)


def _read_split(spec: _CifarSpec, directory: str, split: str, verify: bool):
    wanted = spec.files[split]
    total = sum(f.records for f in wanted)
    images = np.empty((total, 3, 32, 32), dtype=np.uint8)
    labels = np.empty((total, spec.label_bytes), dtype=np.uint8)
    counts = tuple(len(c) for c in spec.classes)
    offset = 0
    for f in wanted:
        path = os.path.join(directory, f.name)
        with open_regular(path) as stream:
            size = os.fstat(stream.fileno()).st_size
            expected = f.records * spec.record_bytes
            if size != expected:
                kind = "truncated" if size < expected else "over-long"
                raise ValueError(f"{path}: {kind} {spec.title} file: expected {f.records} records of "
                                 f"{spec.record_bytes} bytes = {expected} bytes, found {size}")
            hasher = hashlib.sha256() if verify and f.sha256 else None
            _read_records(stream, path, f.records, spec.label_bytes, counts, images, labels, offset, hasher)
            if hasher is not None and hasher.hexdigest() != f.sha256:
                raise ValueError(f"{path}: not the published {spec.title} file {f.name}: sha256 "
                                 f"{hasher.hexdigest()}, expected {f.sha256}. Replace it (or delete the "
                                 f"folder to download it again), or pass verify=False to load it anyway.")
        offset += f.records
    return images, labels.astype(np.int64)


def _class_names(spec: _CifarSpec, directory: str, which: int) -> tuple:
    """The class names from the archive's label file when present (and sane), else the built-in list."""
    builtin = spec.classes[which]
    path = os.path.join(directory, spec.label_files[which])
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return builtin
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    return names if len(names) == len(builtin) else builtin


# ---------------------------------------------------------------------------
# finding, extracting, downloading
# ---------------------------------------------------------------------------
def _all_files(spec):
    return [f for split in ("train", "test") for f in spec.files[split]]


def _candidate_dirs(spec: _CifarSpec, data_dir) -> list[tuple[str, str]]:
    dirs = []
    if data_dir is not None:
        d = os.path.expanduser(os.fspath(data_dir))
        dirs += [(d, "data_dir argument"), (os.path.join(d, spec.folder), "data_dir argument"),
                 (os.path.join(d, spec.name), "data_dir argument"),
                 (os.path.join(d, spec.name, spec.folder), "data_dir argument")]
    env = os.environ.get("ENGINE_DATA")
    if env:
        d = os.path.join(os.path.expanduser(env), spec.name)
        dirs += [(d, "$ENGINE_DATA"), (os.path.join(d, spec.folder), "$ENGINE_DATA")]
    cache = cache_dir(spec.name)
    dirs += [(os.path.join(cache, spec.folder), "user cache"), (cache, "user cache")]
    return dirs


def _extract(spec: _CifarSpec, archive: str, verify: bool) -> str:
    """Check ``archive`` and extract its data and label-name files into the cache; return the folder."""
    if verify:
        digest = hashlib.sha256()
        with open_regular(archive) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != spec.archive_sha256:
            raise ValueError(f"{archive}: not the published {spec.archive}: sha256 {digest.hexdigest()}, "
                             f"expected {spec.archive_sha256}. Delete it to download it again, or pass "
                             f"verify=False to use it anyway.")
    target = os.path.join(cache_dir(spec.name), spec.folder)
    os.makedirs(target, exist_ok=True)
    data = {f"{spec.folder}/{f.name}": f for f in _all_files(spec)}
    names = {f"{spec.folder}/{n}" for n in spec.label_files}
    found = set()
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:  # streams; nothing is extracted by the tar module itself
                if member.name not in data and member.name not in names:
                    continue
                if not member.isreg():
                    raise ValueError(f"{archive}: member {member.name} is not a regular file")
                f = data.get(member.name)
                if f is not None and member.size != f.records * spec.record_bytes:
                    raise ValueError(f"{archive}: member {member.name} has {member.size} bytes, expected "
                                     f"{f.records} records of {spec.record_bytes} bytes")
                if f is None and member.size > 1 << 16:
                    raise ValueError(f"{archive}: member {member.name} has {member.size} bytes, too many "
                                     f"for a list of class names")
                source = tar.extractfile(member)
                digest = hashlib.sha256()

                def copy(out, source=source, digest=digest):
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)

                dest = os.path.join(target, os.path.basename(member.name))
                atomic_write(dest, copy)
                if f is not None and verify and f.sha256 and digest.hexdigest() != f.sha256:
                    os.unlink(dest)
                    raise ValueError(f"{archive}: member {member.name} has sha256 {digest.hexdigest()}, "
                                     f"expected {f.sha256}")
                found.add(member.name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{archive}: corrupt or truncated archive ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and exc.filename == archive:
            raise
        raise ValueError(f"{archive}: cannot be read or extracted ({type(exc).__name__}: {exc})") from None
    missing = sorted(set(data) - found)
    if missing:
        raise ValueError(f"{archive}: not a {spec.title} binary archive: it lacks {', '.join(missing)}")
    return target


def _locate(spec: _CifarSpec, data_dir, split: str, download: bool, verify: bool):
    wanted = [f.name for f in spec.files[split]]
    searched, partial, errors = [], [], []
    candidates = _candidate_dirs(spec, data_dir)
    for directory, why in candidates:  # extracted files first, wherever they are
        searched.append((directory, why))
        present = [os.path.isfile(os.path.join(directory, name)) for name in wanted]
        if all(present):
            return directory
        if any(present):
            partial.append(f"{directory} lacks {', '.join(n for n, p in zip(wanted, present) if not p)}")
    for directory, why in candidates:  # then an archive, extracted into the cache
        archive = os.path.join(directory, spec.archive)
        if os.path.isfile(archive):
            return _extract(spec, archive, verify)
    if download:
        target = cache_dir(spec.name)
        try:
            os.makedirs(target, exist_ok=True)
        except OSError as exc:
            errors.append(f"cannot create the cache directory {target}: {exc}")
        else:
            for url in spec.urls:
                try:
                    archive = fetch(url, target, spec.archive, spec.archive_size + (1 << 20), spec.archive_sha256)
                except DOWNLOAD_ERRORS as exc:
                    errors.append(describe_error(url, exc))
                    continue
                return _extract(spec, archive, verify=False)  # fetch checked its sha256
    raise DatasetUnavailableError(_not_found_message(spec, split, searched, partial, download, errors))


def _not_found_message(spec, split, searched, partial, download, errors) -> str:
    target = cache_dir(spec.name)
    lines = search_report(spec.title, split, download, searched, partial, errors)
    lines.append(f"To fix it, put {spec.archive} ({spec.archive_size:,} bytes, sha256 {spec.archive_sha256}) "
                 f"into {target}{os.sep} (or into a folder passed as data_dir= / --data-dir, or "
                 f"$ENGINE_DATA{os.sep}{spec.name}{os.sep}), or its extracted {spec.folder}{os.sep} folder with "
                 + ", ".join(f.name for f in _all_files(spec)) + ".")
    lines.append("It can be downloaded from " + " or ".join(spec.urls)
                 + " (the binary version; the pickled python version is not read).")
    return "\n".join(lines)


def load_cifar(name: str, split: str, data_dir=None, download: bool = True, verify: bool = True) -> ArrayDataset:
    """``"cifar10"``, ``"cifar100"`` (fine labels) or ``"cifar100-coarse"``
    (the 20 superclasses): ``(N, 3, 32, 32)`` uint8 images, int64 labels."""
    spec_name, which = CIFAR_NAMES[name]
    spec = _SPECS[spec_name]
    directory = _locate(spec, data_dir, split, download, verify)
    images, labels = _read_split(spec, directory, split, verify)
    classes = _class_names(spec, directory, which)
    return ArrayDataset(images, labels[:, which], classes=classes, name=name, split=split,
                        mean=spec.mean, std=spec.std, source=directory)
