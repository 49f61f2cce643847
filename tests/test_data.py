"""Tests of engine.data: IDX files, built-in datasets, DataLoader."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

import engine
from engine import data
from engine.data import (
    DataLoader,
    Dataset,
    DatasetUnavailableError,
    load_dataset,
    read_idx,
    write_idx,
)

FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"
MNIST5K_SOURCE = "/work/shared/data/mnist_5k.csv.gz"
IDX_DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty user cache and no $ENGINE_DATA."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ENGINE_DATA", raising=False)
    return cache


def _no_network(monkeypatch):
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


# ---------------------------------------------------------------------------
# IDX round trip
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (2, 1, 3, 2)])
def test_idx_round_trip(tmp_path, dtype, suffix, shape):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / f"a-idx{len(shape)}{suffix}"
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.shape == shape
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_idx_bytes_match_the_format(tmp_path):
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    write_idx(tmp_path / "x", a)
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0B, 2])
    assert raw[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert raw[12:] == a.astype(">i2").tobytes()
    write_idx(tmp_path / "x.gz", a)
    assert gzip.decompress((tmp_path / "x.gz").read_bytes()) == raw


def test_idx_gzip_detected_by_content(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", a)
    os.rename(tmp_path / "x.gz", tmp_path / "renamed")
    np.testing.assert_array_equal(read_idx(tmp_path / "renamed"), a)


def test_write_idx_rejects_unsupported(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "x", np.float32(1.0))


# ---------------------------------------------------------------------------
# Corrupt IDX files
# ---------------------------------------------------------------------------
def _good_idx_bytes():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    return bytes([0, 0, 8, 3]) + np.array(a.shape, ">u4").tobytes() + a.tobytes()


def _expect_value_error(path, *fragments):
    with pytest.raises(ValueError) as info:
        read_idx(path)
    msg = str(info.value)
    assert os.fspath(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


CORRUPTIONS = {
    "empty": (lambda b: b"", ["truncated IDX header"]),
    "short magic": (lambda b: b[:3], ["truncated IDX header", "found 3 byte"]),
    "wrong magic": (lambda b: b"\x01\x00" + b[2:], ["not an IDX file", "01 00 08 03"]),
    "text file": (lambda b: b"hello, world\n" * 4, ["not an IDX file"]),
    "unknown type": (lambda b: b[:2] + b"\x07" + b[3:], ["unknown IDX type code 0x07"]),
    "zero ndim": (lambda b: b[:3] + b"\x00" + b[4:], ["0 dimensions"]),
    "truncated dims": (lambda b: b[:9], ["3 dimension(s)", "found 5 byte(s)"]),
    "ndim too small": (lambda b: b[:3] + b"\x02" + b[4:], ["over-long", "header declares"]),
    "ndim too large": (lambda b: b[:3] + b"\x04" + b[4:], ["header declares"]),
    "truncated payload": (lambda b: b[:-1], ["truncated IDX file", "2x3x4 uint8 = 24 payload bytes", "found 23"]),
    "trailing bytes": (lambda b: b + b"\x00\x00", ["over-long IDX file", "found 26"]),
    "wrong type size": (lambda b: b[:2] + b"\x0c" + b[3:], ["2x3x4 int32 = 96 payload bytes", "found 24"]),
    "huge dims": (lambda b: b[:4] + b"\xff\xff\xff\xff" * 3, ["header declares"]),
}


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_idx_corrupt_files_raise_value_error(tmp_path, case, suffix):
    corrupt, fragments = CORRUPTIONS[case]
    payload = corrupt(_good_idx_bytes())
    path = tmp_path / f"bad-{case.replace(' ', '_')}{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix else payload)
    _expect_value_error(path, *fragments)


def test_idx_gz_name_without_gzip_content(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(_good_idx_bytes())
    _expect_value_error(path, "not a gzip file", "1f 8b", "00 00")


def test_idx_truncated_gzip_stream(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    good = tmp_path / "good.gz"
    write_idx(good, a)
    blob = good.read_bytes()
    cuts = sorted(set(rng.integers(1, len(blob), size=40).tolist()) | {1, 2, 10, len(blob) - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.gz"
        path.write_bytes(blob[:cut])
        _expect_value_error(path)


def test_idx_gzip_with_trailing_garbage(tmp_path):
    path = tmp_path / "garbage.gz"
    path.write_bytes(gzip.compress(_good_idx_bytes()) + b"garbage!")
    _expect_value_error(path, "gzip")


def test_idx_gzip_bad_crc(tmp_path):
    blob = bytearray(gzip.compress(_good_idx_bytes()))
    blob[-8] ^= 0xFF  # the CRC32 in the trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(blob))
    _expect_value_error(path, "CRC")


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_fuzzed_byte_flips(tmp_path, compressed):
    """Random byte flips anywhere in the header (raw) or the whole stream (gz):
    either a ValueError naming the file, or an array consistent with the
    header that was read. Never another exception."""
    rng = np.random.default_rng(2024)
    good = _good_idx_bytes()
    blob = gzip.compress(good, mtime=0) if compressed else good
    region = len(blob) if compressed else 16
    errors = 0
    for trial in range(300):
        corrupt = bytearray(blob)
        for pos in rng.choice(region, size=rng.integers(1, 4), replace=False):
            corrupt[pos] ^= int(rng.integers(1, 256))
        path = tmp_path / (f"flip{trial}.gz" if compressed else f"flip{trial}")
        path.write_bytes(bytes(corrupt))
        try:
            arr = read_idx(path)
        except ValueError as exc:
            assert os.fspath(path) in str(exc)
            errors += 1
            continue
        # A flip can yield another valid file (e.g. uint8 <-> int8, or a
        # gzip header byte nobody checks): it must then be self-consistent.
        header = gzip.decompress(bytes(corrupt)) if compressed else bytes(corrupt)
        assert arr.nbytes == len(header) - 4 - 4 * header[3]
        assert arr.shape == tuple(int(d) for d in np.frombuffer(header[4:4 + 4 * header[3]], ">u4"))
    assert errors > 200


# ---------------------------------------------------------------------------
# mnist5k
# ---------------------------------------------------------------------------
def test_mnist5k_splits():
    train = load_dataset("mnist5k", "train")
    test = load_dataset("mnist5k", split="test")
    assert len(train) == 4000 and len(test) == 1000
    for ds, per_class in ((train, 400), (test, 100)):
        assert ds.images.shape == (len(ds), 1, 28, 28) and ds.images.dtype == np.uint8
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds),)
        np.testing.assert_array_equal(ds.class_counts(), np.full(10, per_class))
        assert ds.classes == tuple("0123456789")
        assert ds.name == "mnist5k"
        assert ds.images.max() == 255 and ds.images.min() == 0
        # The stored order is shuffled, not sorted by class.
        assert len(set(ds.labels[:50].tolist())) > 5
    # Both splits carry the train split's statistics.
    assert train.mean == test.mean and train.std == test.std
    assert abs(train.mean - 0.1313) < 1e-3 and abs(train.std - 0.3085) < 1e-3
    assert abs(Dataset(train.images, train.labels).mean - train.mean) < 1e-12


def test_mnist5k_split_is_fixed_and_disjoint():
    resource = os.path.join(os.path.dirname(engine.__file__), "datasets", "mnist5k.npz")
    with np.load(resource, allow_pickle=False) as z:
        train_rows, test_rows = z["train_rows"], z["test_rows"]
        assert str(z["source_sha256"]) == \
            "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
    assert len(np.intersect1d(train_rows, test_rows)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_rows, test_rows])), np.arange(5000))
    a, b = load_dataset("mnist5k", "test"), load_dataset("mnist5k", "test")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.skipif(not os.path.exists(MNIST5K_SOURCE),
                    reason=f"the mnist5k source {MNIST5K_SOURCE} is not on this machine")
def test_mnist5k_rebuilds_from_source(tmp_path):
    from engine.datasets import make_mnist5k

    out = tmp_path / "m.npz"
    make_mnist5k.write_npz(make_mnist5k.build(MNIST5K_SOURCE), str(out))
    shipped = os.path.join(os.path.dirname(engine.__file__), "datasets", "mnist5k.npz")
    with np.load(out) as new, np.load(shipped) as old:
        assert sorted(new.files) == sorted(old.files)
        for key in new.files:
            np.testing.assert_array_equal(new[key], old[key], err_msg=key)
    # The images are the CSV's rows.
    with gzip.open(MNIST5K_SOURCE, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    with np.load(shipped) as z:
        np.testing.assert_array_equal(z["test_images"].reshape(1000, 784), table[z["test_rows"], :784])
        np.testing.assert_array_equal(z["test_labels"], table[z["test_rows"], 784])


def test_load_dataset_bad_arguments():
    with pytest.raises(ValueError, match="fashion-mnist.*cifar10"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_dataset("mnist5k", "validation")
    assert load_dataset("MNIST_5K", "test").name == "mnist5k"


# ---------------------------------------------------------------------------
# Dataset and train_val_split
# ---------------------------------------------------------------------------
def _toy(n=10, classes=3):
    images = (np.arange(n * 4 * 4) % 256).astype(np.uint8).reshape(n, 4, 4)
    labels = np.arange(n) % classes
    return Dataset(images, labels)


def test_dataset_basics():
    ds = _toy()
    assert len(ds) == 10 and ds.image_shape == (1, 4, 4) and ds.classes == ("0", "1", "2")
    img, label = ds[4]
    assert img.shape == (1, 4, 4) and label == 1
    sub = ds[2:5]
    assert isinstance(sub, Dataset) and len(sub) == 3 and sub.mean == ds.mean
    with pytest.raises(TypeError, match="uint8"):
        Dataset(np.zeros((2, 4, 4), np.int32), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        Dataset(np.zeros((2, 4, 4), np.uint8), [0, 1, 2])


def test_train_val_split_stratified_and_seeded():
    ds = load_dataset("mnist5k", "train")
    tr, va = data.train_val_split(ds, 0.1, seed=3)
    assert len(tr) == 3600 and len(va) == 400
    np.testing.assert_array_equal(va.class_counts(), np.full(10, 40))
    assert va.split == "val" and tr.split == "train"
    assert tr.mean == ds.mean and va.std == ds.std
    _tr2, va2 = data.train_val_split(ds, 0.1, seed=3)
    np.testing.assert_array_equal(va.images, va2.images)
    _, va3 = data.train_val_split(ds, 0.1, seed=4)
    assert not np.array_equal(va.labels, va3.labels) or not np.array_equal(va.images, va3.images)
    # Disjoint and complete: count each source image once.
    keys = lambda d: {img.tobytes() + bytes([lab]) for img, lab in zip(d.images, d.labels)}
    assert len(keys(tr) | keys(va)) == len(keys(ds))
    assert not keys(tr) & keys(va)


def test_train_val_split_rounding_and_errors():
    ds = _toy(n=10, classes=3)  # class sizes 4, 3, 3
    tr, va = data.train_val_split(ds, 0.25, seed=0)  # 2.5 -> 2 (banker's) validation samples
    assert len(va) == round(2.5) and len(tr) + len(va) == 10
    tr, va = data.train_val_split(ds, 5, seed=0, stratify=False)
    assert len(va) == 5
    engine.manual_seed(7)
    a = data.train_val_split(ds, 3)[1].images
    engine.manual_seed(7)
    np.testing.assert_array_equal(a, data.train_val_split(ds, 3)[1].images)
    for bad in (0.0, 1.0, 0, 10, "half"):
        with pytest.raises(ValueError):
            data.train_val_split(ds, bad)


# ---------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,bs,drop_last,expected", [
    (10, 3, False, [3, 3, 3, 1]), (10, 3, True, [3, 3, 3]), (9, 3, True, [3, 3, 3]),
    (2, 5, False, [2]), (2, 5, True, []), (10, 10, False, [10])])
def test_loader_batch_counts(n, bs, drop_last, expected):
    loader = DataLoader(_toy(n), batch_size=bs, drop_last=drop_last)
    assert len(loader) == len(expected)
    sizes = [x.shape[0] for x, _ in loader]
    assert sizes == expected
    assert [y.shape[0] for _, y in loader] == expected


def test_loader_values_and_dtypes():
    ds = _toy(10)
    x, y = next(iter(DataLoader(ds, batch_size=10, normalize=None)))
    assert x.dtype == np.float32 and x.shape == (10, 1, 4, 4)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, ds.labels)
    np.testing.assert_array_equal(x, ds.images.astype(np.float32) / np.float32(255))
    full = np.full((3, 2, 2), 255, np.uint8)
    x, _ = next(iter(DataLoader((full, [0, 1, 2]), normalize=None)))
    assert float(x.max()) == 1.0
    x64, _ = next(iter(DataLoader(ds, batch_size=4, normalize=None, dtype="float64")))
    assert x64.dtype == np.float64
    with pytest.raises(ValueError, match="floating"):
        DataLoader(ds, dtype="int32")


def test_loader_normalization():
    ds = load_dataset("mnist5k", "train")
    xs = np.concatenate([x for x, _ in DataLoader(ds, batch_size=1000)])
    assert abs(xs.mean()) < 1e-4 and abs(xs.std() - 1) < 1e-4
    test_x = np.concatenate([x for x, _ in DataLoader(load_dataset("mnist5k", "test"), 500)])
    # Test is normalised with the train statistics.
    expected = (load_dataset("mnist5k", "test").images / 255.0 - ds.mean) / ds.std
    np.testing.assert_allclose(test_x, expected, atol=1e-5)
    x, _ = next(iter(DataLoader(ds, batch_size=8, normalize=(0.5, 0.25))))
    np.testing.assert_allclose(x, (ds.images[:8] / 255.0 - 0.5) / 0.25, atol=1e-5)
    rgb = Dataset(np.zeros((4, 3, 2, 2), np.uint8), [0, 1, 0, 1])
    x, _ = next(iter(DataLoader(rgb, normalize=([0.0, 0.5, 1.0], [1.0, 0.5, 0.25]))))
    np.testing.assert_allclose(x[0, :, 0, 0], [0.0, -1.0, -4.0])
    for bad in ("imagenet", (0.5,), ([0.1, 0.2], [1, 1]), (0.5, 0.0)):
        with pytest.raises(ValueError):
            DataLoader(rgb, normalize=bad)


def _epoch(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_loader_shuffle_seeded_reproducible_and_new_each_epoch():
    ds = _toy(50, classes=5)
    a = DataLoader(ds, batch_size=8, shuffle=True, seed=123)
    b = DataLoader(ds, batch_size=8, shuffle=True, seed=123)
    a1, a2 = _epoch(a), _epoch(a)
    b1, b2 = _epoch(b), _epoch(b)
    for (xa, ya), (xb, yb) in zip(a1 + a2, b1 + b2):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    order1 = np.concatenate([x.reshape(len(x), -1)[:, 0] for x, _ in a1])
    order2 = np.concatenate([x.reshape(len(x), -1)[:, 0] for x, _ in a2])
    assert not np.array_equal(order1, order2)
    # Each epoch is a permutation: every sample exactly once.
    ref = np.sort(np.concatenate([x.reshape(len(x), -1)[:, 0] for x, _ in _epoch(DataLoader(ds, 50))]))
    np.testing.assert_array_equal(np.sort(order1), ref)
    np.testing.assert_array_equal(np.sort(np.concatenate([y for _, y in a1])), np.sort(ds.labels))
    c = _epoch(DataLoader(ds, batch_size=8, shuffle=True, seed=124))
    assert not all(np.array_equal(x, z) for (x, _), (z, _) in zip(a1, c))
    # Without shuffle the order is the dataset's.
    y = np.concatenate([y for _, y in DataLoader(ds, batch_size=7)])
    np.testing.assert_array_equal(y, ds.labels)


def test_loader_shuffle_follows_manual_seed():
    ds = _toy(40, classes=4)
    loader = DataLoader(ds, batch_size=16, shuffle=True)
    engine.manual_seed(11)
    first = _epoch(loader)
    engine.manual_seed(11)
    again = _epoch(DataLoader(ds, batch_size=16, shuffle=True))
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_loader_on_array_api_strict_backend():
    xps = pytest.importorskip("array_api_strict")
    ds = load_dataset("mnist5k", "test")
    ref = _epoch(DataLoader(ds, batch_size=300, shuffle=True, seed=5))
    loader = DataLoader(ds, batch_size=300, shuffle=True, seed=5)
    with engine.use_backend("array_api_strict"):
        batches = list(loader)
    assert len(batches) == 4
    for (x, y), (rx, ry) in zip(batches, ref):
        assert isinstance(x, xps._array_object.Array) and isinstance(y, xps._array_object.Array)
        assert x.dtype == xps.float32 and y.dtype == xps.int64
        assert x.shape == rx.shape
        np.testing.assert_allclose(engine.to_numpy(x), rx, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(engine.to_numpy(y), ry)
    # The backend is the one active when iteration starts.
    x, _ = next(iter(loader))
    assert isinstance(x, np.ndarray)
    x, _ = next(iter(DataLoader(ds, batch_size=4, backend="array_api_strict",
                                dtype=xps.float64)))
    assert x.dtype == xps.float64


# ---------------------------------------------------------------------------
# Full datasets: search path, Debian's Fashion-MNIST, downloads, offline
# ---------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir(FASHION_DEBIAN),
                    reason=f"{FASHION_DEBIAN} is absent (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian(isolated, monkeypatch):
    calls = _no_network(monkeypatch)
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion_mnist", "test", download=False)
    assert calls == []
    assert train.source == FASHION_DEBIAN
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(train.class_counts(), np.full(10, 6000))
    np.testing.assert_array_equal(test.class_counts(), np.full(10, 1000))
    assert train.labels[:6].tolist() == [9, 0, 0, 3, 0, 2]
    assert train.classes[9] == "Ankle boot"
    assert abs(Dataset(train.images, train.labels).mean - train.mean) < 1e-12


def _fake_mnist(monkeypatch, tmp_path, n_train=20, n_test=10):
    """Replace the MNIST spec by one describing small synthetic files; return
    {stem: gz bytes} as a server would publish them."""
    rng = np.random.default_rng(0)
    (tmp_path / "src").mkdir()
    published, files = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        pair = []
        for kind, arr in (("images", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels", (np.arange(n) % 10).astype(np.uint8))):
            stem = f"{'t10k' if split == 'test' else 'train'}-{kind}-idx{arr.ndim}-ubyte"
            write_idx(tmp_path / "src" / (stem + ".gz"), arr)
            gz = (tmp_path / "src" / (stem + ".gz")).read_bytes()
            raw = gzip.decompress(gz)
            published[stem] = gz
            pair.append(data._IdxFile(stem, hashlib.sha256(gz).hexdigest(), len(gz),
                                      hashlib.sha256(raw).hexdigest(), len(raw)))
        files[split] = tuple(pair)
    spec = data._IdxDataset(
        name="mnist", title="MNIST", mirrors=("https://mirror-a.test/mnist/", "https://mirror-b.test/mnist/"),
        files=files, count={"train": n_train, "test": n_test}, classes=data._MNIST.classes,
        mean=0.5, std=0.29, torchvision_dir="MNIST")
    monkeypatch.setitem(data._IDX_DATASETS, "mnist", spec)
    return published


def _serve(monkeypatch, published, bad_mirror=None, recompress=False):
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(url)
        if bad_mirror and url.startswith(bad_mirror):
            return io.BytesIO(b"<html>not found</html>")
        stem = url.rsplit("/", 1)[1][:-3]
        blob = published[stem]
        if recompress:
            blob = gzip.compress(gzip.decompress(blob), compresslevel=1, mtime=12345)
        return io.BytesIO(blob)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_download_into_cache(isolated, monkeypatch, tmp_path):
    published = _fake_mnist(monkeypatch, tmp_path)
    calls = _serve(monkeypatch, published, bad_mirror="https://mirror-a.test/")
    ds = load_dataset("mnist", "train")
    assert len(ds) == 20 and ds.mean == 0.5
    cache = isolated / "engine" / "mnist"
    assert sorted(os.listdir(cache)) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # The first mirror served garbage (sha256 mismatch), the second the real file.
    assert calls == ["https://mirror-a.test/mnist/train-images-idx3-ubyte.gz",
                     "https://mirror-b.test/mnist/train-images-idx3-ubyte.gz",
                     "https://mirror-a.test/mnist/train-labels-idx1-ubyte.gz",
                     "https://mirror-b.test/mnist/train-labels-idx1-ubyte.gz"]
    # Second load: from the cache, no network.
    calls.clear()
    assert len(load_dataset("mnist", "train")) == 20 and calls == []


def test_download_accepts_recompressed_content(isolated, monkeypatch, tmp_path):
    published = _fake_mnist(monkeypatch, tmp_path)
    _serve(monkeypatch, published, recompress=True)
    assert len(load_dataset("mnist", "test")) == 10


def test_download_all_mirrors_bad(isolated, monkeypatch, tmp_path):
    published = _fake_mnist(monkeypatch, tmp_path)
    _serve(monkeypatch, {k: b"\x1f\x8b" + b"x" * 20 for k in published})
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("mnist", "test")
    msg = str(info.value)
    assert "mirror-a.test" in msg and "mirror-b.test" in msg and "corrupt download" in msg
    cache = isolated / "engine" / "mnist"
    assert os.listdir(cache) == []  # no partial files left behind


def test_offline_error_lists_directories_and_files(isolated, monkeypatch, tmp_path):
    calls = _no_network(monkeypatch)
    data_dir = tmp_path / "mine"
    data_dir.mkdir()
    (data_dir / "t10k-images-idx3-ubyte.gz").write_bytes(b"")  # a half-filled folder
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("mnist", "test", data_dir=data_dir)
    msg = str(info.value)
    cache = str(isolated / "engine" / "mnist")
    assert isinstance(info.value, FileNotFoundError)
    assert f"put these files into {cache}{os.sep}" in msg
    assert str(data_dir) in msg and "lacks t10k-labels-idx1-ubyte" in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "URLError" in msg and "network is unreachable" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in msg
    assert "$ENGINE_DATA is not set" in msg
    assert len(calls) == 2  # both mirrors tried for the first file, then gave up
    calls.clear()
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_dataset("mnist", "test", download=False)
    assert calls == []


def test_offline_fashion_error_mentions_debian(isolated, monkeypatch):
    _no_network(monkeypatch)
    spec = dataclasses.replace(data._IDX_DATASETS["fashion-mnist"],
                               system_dirs=(("/nonexistent/fashion-mnist", "Debian package"),))
    monkeypatch.setitem(data._IDX_DATASETS, "fashion-mnist", spec)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("fashion-mnist", "train")
    msg = str(info.value)
    assert "/nonexistent/fashion-mnist" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert str(isolated / "engine" / "fashion-mnist") in msg


def test_search_order_and_layouts(isolated, monkeypatch, tmp_path):
    published = _fake_mnist(monkeypatch, tmp_path)
    _no_network(monkeypatch)
    stems = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

    def place(directory, decompress=False, dotted=False):
        directory.mkdir(parents=True, exist_ok=True)
        for stem in stems:
            blob = published[stem]
            name = stem.replace("-idx", ".idx") if dotted else stem
            if decompress:
                (directory / name).write_bytes(gzip.decompress(blob))
            else:
                (directory / (name + ".gz")).write_bytes(blob)
        return str(directory)

    env_root = tmp_path / "env"
    monkeypatch.setenv("ENGINE_DATA", str(env_root))
    place(isolated / "engine" / "mnist")
    assert load_dataset("mnist", "test").source == str(isolated / "engine" / "mnist")
    assert load_dataset("mnist", "test").source == str(isolated / "engine" / "mnist")
    env = place(env_root / "mnist", decompress=True)
    assert load_dataset("mnist", "test").source == env
    mine = place(tmp_path / "mine", dotted=True)
    assert load_dataset("mnist", "test", data_dir=mine).source == mine
    tv = place(tmp_path / "tv" / "MNIST" / "raw", decompress=True, dotted=True)
    assert load_dataset("mnist", "test", data_dir=tmp_path / "tv").source == tv


def test_wrong_file_is_reported_not_skipped(isolated, monkeypatch, tmp_path):
    published = _fake_mnist(monkeypatch, tmp_path)
    _no_network(monkeypatch)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "t10k-labels-idx1-ubyte.gz").write_bytes(published["t10k-labels-idx1-ubyte"])
    other = np.zeros((10, 28, 28), np.uint8)
    write_idx(mine / "t10k-images-idx3-ubyte", other)
    with pytest.raises(ValueError, match="sha256.*verify=False"):
        load_dataset("mnist", "test", data_dir=mine)
    ds = load_dataset("mnist", "test", data_dir=mine, verify=False)
    assert ds.images.max() == 0
    write_idx(mine / "t10k-images-idx3-ubyte", np.zeros((9, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="expected 10x28x28 uint8 images"):
        load_dataset("mnist", "test", data_dir=mine, verify=False)
    (mine / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03junk")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", "test", data_dir=mine)


def test_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir("mnist") == os.path.join(str(tmp_path), "engine", "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == os.path.join(str(tmp_path), "home", ".cache", "engine")


def test_loader_batches_live_on_each_backend(backend):
    """Every backend (cupy with the gpu marker, skipped without a device) gets
    the same batches as NumPy, as uint8 converted on the backend."""
    from engine import backends

    ds = load_dataset("mnist5k", "test")
    ref = _epoch(DataLoader(ds, batch_size=256, shuffle=True, seed=9, backend="numpy"))
    batches = list(DataLoader(ds, batch_size=256, shuffle=True, seed=9))
    assert len(batches) == len(ref) == 4
    for (x, y), (rx, ry) in zip(batches, ref):
        assert backends.backend_of(x) is backend and backends.backend_of(y) is backend
        assert tuple(x.shape) == rx.shape and tuple(y.shape) == ry.shape
        np.testing.assert_allclose(engine.to_numpy(x), rx, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(engine.to_numpy(y), ry)
        assert engine.to_numpy(x).dtype == np.float32 and engine.to_numpy(y).dtype == np.int64


# ---------------------------------------------------------------------------
# The Dataset protocol: any __len__/__getitem__ object, subsets, splits, labels
# ---------------------------------------------------------------------------
class Squares(data.Dataset):
    """A user's dataset: (C, H, W) float images, integer or float labels, computed on access."""

    def __init__(self, n=10, label="int", channels=1, hwc=False):
        self.n, self.label, self.channels, self.hwc = n, label, channels, hwc
        self.accessed = []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.accessed.append(i)
        image = np.full((self.channels, 6, 7), i / 100, np.float32)
        if self.hwc:
            image = image.transpose(1, 2, 0)
        label = {"int": i % 3, "float": i / 10, "vector": np.eye(3, dtype=np.float64)[i % 3],
                 "negative": i - 5}[self.label]
        return image, label


class Plain:
    """Duck typing: no base class at all."""

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return np.full((2, 2), i, np.uint8), i


def test_loader_takes_any_dataset_object():
    ds = Squares(10)
    batches = list(DataLoader(ds, batch_size=4, normalize=None))
    assert [x.shape for x, _ in batches] == [(4, 1, 6, 7), (4, 1, 6, 7), (2, 1, 6, 7)]
    x = np.concatenate([x for x, _ in batches])
    np.testing.assert_allclose(x[:, 0, 0, 0], np.arange(10) / 100, rtol=1e-6)
    y = np.concatenate([y for _, y in batches])
    assert y.dtype == np.int64 and y.tolist() == [i % 3 for i in range(10)]
    x, y = next(iter(DataLoader(Plain(), batch_size=3)))
    assert x.shape == (3, 1, 2, 2) and x.dtype == np.float32 and float(x.max()) == pytest.approx(2 / 255)
    assert y.tolist() == [0, 1, 2]
    # no mean/std on the dataset: the default normalisation leaves [0, 1] alone
    assert DataLoader(Plain()).normalize is None
    # a list of (image, label) samples is a dataset too
    samples = [(np.zeros((1, 2, 2), np.float32), 1), (np.ones((1, 2, 2), np.float32), 0)]
    x, y = next(iter(DataLoader(samples, batch_size=2)))
    assert x.shape == (2, 1, 2, 2) and y.tolist() == [1, 0]
    # ... and a list of image arrays with a list of labels is an (images, labels) pair
    images = [np.full((1, 2, 2), i, np.uint8) for i in range(3)]
    x, y = next(iter(DataLoader((images, [2, 0, 1]), normalize=None)))
    assert x.shape == (3, 1, 2, 2) and y.tolist() == [2, 0, 1] and float(x[2].max()) == pytest.approx(2 / 255)
    assert "targets=float64" in repr(Dataset(np.zeros((2, 1, 2, 2), np.uint8), [0.5, 1.0]))
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        DataLoader(42)


def test_loader_shuffles_generic_datasets_with_the_seed():
    a = [y.tolist() for _, y in DataLoader(Squares(12, "float"), batch_size=5, shuffle=True, seed=4)]
    b = [y.tolist() for _, y in DataLoader(Squares(12, "float"), batch_size=5, shuffle=True, seed=4)]
    assert a == b and sorted(sum(a, [])) == pytest.approx([i / 10 for i in range(12)])
    assert sum(a, []) != sorted(sum(a, []))


def test_float_and_vector_labels():
    _, y = next(iter(DataLoader(Squares(6, "float"), batch_size=6)))
    assert y.dtype == np.float32 and y.tolist() == pytest.approx([i / 10 for i in range(6)])
    _, y = next(iter(DataLoader(Squares(6, "vector"), batch_size=6, dtype="float64")))
    assert y.shape == (6, 3) and y.dtype == np.float64
    np.testing.assert_array_equal(y, np.eye(3)[np.arange(6) % 3])
    soft = np.random.default_rng(0).dirichlet(np.ones(4), size=8)
    ds = Dataset(np.zeros((8, 1, 2, 2), np.uint8), soft, classes="abcd")
    assert ds.classes == tuple("abcd")
    _, y = next(iter(DataLoader(ds, batch_size=8, normalize=None)))
    np.testing.assert_allclose(y, soft.astype(np.float32))
    with pytest.raises(ValueError, match="4 entries but there are 3 classes"):
        Dataset(np.zeros((8, 1, 2, 2), np.uint8), soft, classes="abc")
    with pytest.raises(ValueError, match="finite"):
        Dataset(np.zeros((2, 1, 2, 2), np.uint8), [0.5, np.nan])
    with pytest.raises(TypeError, match="labels must be integers"):
        Dataset(np.zeros((2, 1, 2, 2), np.uint8), [True, False])


def test_negative_and_out_of_range_labels_name_the_dataset_and_values():
    with pytest.raises(ValueError, match=r"Dataset 'digits'.*non-negative.*index 1: -1"):
        Dataset(np.zeros((3, 2, 2), np.uint8), [0, -1, 2], name="digits")
    with pytest.raises(ValueError, match=r"\[0, 1\] \(2 classes\).*index 2: 5"):
        Dataset(np.zeros((3, 2, 2), np.uint8), [0, 1, 5], classes=["a", "b"])
    loader = DataLoader(Squares(10, "negative"), batch_size=4, shuffle=True, seed=0)
    with pytest.raises(ValueError, match=r"Squares: integer labels must be non-negative; found index \d: -\d"):
        list(loader)

    class Bounded(Squares):
        classes = ("a", "b")

    with pytest.raises(ValueError, match=r"Squares|Bounded"):
        list(DataLoader(Bounded(10, "int"), batch_size=10))


def test_dataset_subclass_and_the_array_shorthand():
    assert isinstance(Dataset(np.zeros((2, 2, 2), np.uint8), [0, 1]), data.ArrayDataset)
    assert data.TensorDataset is data.ArrayDataset
    assert isinstance(Squares(), data.Dataset) and type(Squares()) is Squares
    with pytest.raises(NotImplementedError, match="__len__"):
        len(data.Dataset())


def test_subset_and_random_split():
    ds = Squares(10)
    sub = data.Subset(ds, [7, 2, -1])
    assert len(sub) == 3 and sub[0][1] == 7 % 3 and sub[2][1] == 9 % 3
    assert sub.label == "int"  # attributes come from the parent
    x, _ = next(iter(DataLoader(sub, batch_size=3, normalize=None)))
    np.testing.assert_allclose(x[:, 0, 0, 0], [0.07, 0.02, 0.09], rtol=1e-6)
    with pytest.raises(IndexError, match=r"\[-10, 9\]"):
        data.Subset(ds, [10])
    parts = data.random_split(ds, [6, 4], seed=1)
    assert [len(p) for p in parts] == [6, 4] and all(isinstance(p, data.Subset) for p in parts)
    assert sorted(np.concatenate([p.indices for p in parts]).tolist()) == list(range(10))
    again = data.random_split(ds, [6, 4], seed=1)
    assert parts[0].indices.tolist() == again[0].indices.tolist()
    assert [len(p) for p in data.random_split(ds, [0.5, 0.3, 0.2])] == [5, 3, 2]
    assert [len(p) for p in data.random_split(Squares(7), [0.5, 0.5])] == [4, 3]
    engine.manual_seed(3)
    a = data.random_split(ds, [5, 5])[0].indices
    engine.manual_seed(3)
    assert a.tolist() == data.random_split(ds, [5, 5])[0].indices.tolist()
    for bad in ([5, 4], [0.5, 0.6], [-1, 11]):
        with pytest.raises(ValueError):
            data.random_split(ds, bad)
    arrays = _toy(10)
    tr, va = data.random_split(arrays, [8, 2], seed=0)
    assert isinstance(tr, data.ArrayDataset) and len(va) == 2 and va.mean == arrays.mean


def test_subset_of_array_dataset_batches_by_fancy_index():
    ds = _toy(20, classes=4)
    sub = data.Subset(data.Subset(ds, np.arange(20)[::-1]), [0, 5, 7])
    x, y = next(iter(DataLoader(sub, batch_size=3, normalize=None)))
    idx = np.arange(20)[::-1][[0, 5, 7]]
    np.testing.assert_array_equal(y, ds.labels[idx])
    np.testing.assert_array_equal(x, ds.images[idx] / np.float32(255))


def test_train_val_split_of_generic_datasets():
    tr, va = data.train_val_split(Squares(30), 0.2, seed=0)
    assert isinstance(tr, data.Subset) and len(tr) == 24 and len(va) == 6
    assert not set(tr.indices) & set(va.indices)


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------
def test_nhwc_arrays_are_refused_then_converted():
    nhwc = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(5) % 2
    with pytest.raises(ValueError, match=r"look like NHWC.*layout='NHWC'"):
        Dataset(nhwc, labels)
    with pytest.raises(ValueError, match="NHWC"):
        DataLoader((nhwc, labels))
    x, _ = next(iter(DataLoader((nhwc, labels), layout="NHWC", normalize=None)))
    assert x.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(x, nhwc.transpose(0, 3, 1, 2) / np.float32(255))
    ds = Dataset(nhwc, labels, layout="NHWC")
    assert ds.image_shape == (3, 32, 32) and np.shares_memory(ds.images, nhwc)
    with pytest.raises(ValueError, match="already holds NCHW"):
        DataLoader(ds, layout="NHWC")
    with pytest.raises(ValueError, match="layout must be"):
        DataLoader(ds, layout="CHW")
    # grey NHWC (N, 28, 28, 1) too
    with pytest.raises(ValueError, match="NHWC"):
        Dataset(np.zeros((4, 28, 28, 1), np.uint8), [0, 1, 2, 3])


def test_hwc_samples_are_refused_then_converted(backend):
    with pytest.raises(ValueError, match=r"look like HWC.*layout='NHWC'"):
        list(DataLoader(Squares(4, channels=3, hwc=True), batch_size=4))
    x, _ = next(iter(DataLoader(Squares(4, channels=3, hwc=True), batch_size=4, layout="NHWC", normalize=None)))
    assert tuple(x.shape) == (4, 3, 6, 7)
    np.testing.assert_allclose(engine.to_numpy(x)[:, :, 0, 0], np.repeat(np.arange(4)[:, None] / 100, 3, 1),
                               rtol=1e-6)


def test_check_layout_and_to_nchw(backend):
    x = engine.asarray(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d\(3→16\): input of shape \(2, 32, 32, 3\) looks like NHWC"):
        data.check_layout(x, 3, "Conv2d(3→16)")
    data.check_layout(data.to_nchw(x), 3)
    assert tuple(data.to_nchw(x).shape) == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="expected 1 channel"):
        data.check_layout(engine.asarray(np.zeros((2, 3, 8, 8), np.float32)), 1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        data.check_layout(engine.asarray(np.zeros((8, 8), np.float32)), 1)


def test_mixed_sample_shapes_are_a_clear_error():
    class Ragged(Squares):
        def __getitem__(self, i):
            return np.zeros((1, 4 + i % 2, 4), np.float32), 0

    with pytest.raises(ValueError, match=r"samples 0 and 1 have image shapes \(1, 4, 4\) and \(1, 5, 4\)"):
        list(DataLoader(Ragged(4), batch_size=4))


# ---------------------------------------------------------------------------
# Time spent preparing data
# ---------------------------------------------------------------------------
def test_loader_records_data_time_per_epoch():
    import time

    class Slow(Squares):
        def __getitem__(self, i):
            time.sleep(0.002)
            return super().__getitem__(i)

    loader = DataLoader(Slow(10), batch_size=5)
    start = time.perf_counter()
    for _ in loader:
        time.sleep(0.1)  # the consumer's time is not counted
    wall = time.perf_counter() - start
    assert len(loader.epoch_data_times) == 1 and loader.data_time == loader.epoch_data_times[0]
    assert 0.02 <= loader.data_time <= wall - 0.2
    it = iter(loader)
    start = time.perf_counter()
    next(it)
    it.close()  # an epoch cut short is recorded too
    assert len(loader.epoch_data_times) == 2 and 0.01 <= loader.epoch_data_times[1] <= time.perf_counter() - start
