"""CIFAR-10/100 from the binary distribution, on small files in the same format
written here: the record layout, the search path, archives (checked,
extracted member by member), downloads, and truncated or corrupt files."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from engine.data import DataLoader, DatasetUnavailableError, cifar, load_dataset, read_cifar_binary  # noqa: F401

RECORD10, RECORD100 = 3073, 3074


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ENGINE_DATA", raising=False)
    return cache


def _offline(monkeypatch):
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def _records(n, label_bytes, seed):
    """``(raw bytes, images (n, 3, 32, 32), labels (n, label_bytes))`` in the CIFAR record format."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    bounds = (10,) if label_bytes == 1 else (20, 100)
    labels = np.stack([rng.integers(0, b, n) for b in bounds], axis=1).astype(np.uint8)
    raw = b"".join(labels[i].tobytes() + images[i].tobytes() for i in range(n))
    return raw, images, labels


def test_record_layout_red_green_blue_planes(tmp_path):
    # one record written byte by byte as the format describes: label, 1024 red, 1024 green, 1024 blue
    red, green, blue = (np.arange(1024) % 251).astype(np.uint8), np.full(1024, 7, np.uint8), np.arange(1024)[::-1] % 256
    raw = bytes([3]) + red.tobytes() + green.tobytes() + blue.astype(np.uint8).tobytes()
    (tmp_path / "one.bin").write_bytes(raw)
    images, labels = read_cifar_binary(tmp_path / "one.bin")
    assert images.shape == (1, 3, 32, 32) and images.dtype == np.uint8 and labels.tolist() == [3]
    np.testing.assert_array_equal(images[0, 0], red.reshape(32, 32))  # row-major 32x32
    np.testing.assert_array_equal(images[0, 2, 0, :3], [255, 254, 253])
    assert images[0, 1].min() == images[0, 1].max() == 7


@pytest.mark.parametrize("label_bytes", [1, 2])
def test_read_cifar_binary_round_trip(tmp_path, label_bytes):
    raw, images, labels = _records(2500, label_bytes, 0)  # more than one read slice
    (tmp_path / "x.bin").write_bytes(raw)
    got_images, got_labels = read_cifar_binary(tmp_path / "x.bin", label_bytes=label_bytes)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels[:, 0] if label_bytes == 1 else labels)


def test_read_cifar_binary_errors(tmp_path):
    raw, _, _ = _records(3, 1, 1)
    path = tmp_path / "x.bin"
    for blob, message in ((raw[:-1], r"2 record\(s\) and 3072 byte\(s\) more"),
                          (raw + b"\0", r"3 record\(s\) and 1 byte"),
                          (b"", "0 record")):
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=message) as info:
            read_cifar_binary(path)
        assert str(path) in str(info.value)
    bad = bytearray(raw)
    bad[RECORD10 * 2] = 10  # the third record's label
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="record 2 has label byte 0 = 10, expected 0-9"):
        read_cifar_binary(path)
    with pytest.raises(ValueError, match="record 2"):
        read_cifar_binary(path, num_classes=10)
    assert read_cifar_binary(path, num_classes=11)[1][2] == 10
    with pytest.raises(ValueError, match="not a regular file"):
        read_cifar_binary(tmp_path)
    with pytest.raises(ValueError, match="label_bytes"):
        read_cifar_binary(path, label_bytes=3)


# ---------------------------------------------------------------------------
# A fake CIFAR-10 / CIFAR-100 (same format, few records, our own sums)
# ---------------------------------------------------------------------------
def _fake(monkeypatch, tmp_path, which="cifar10"):
    """Write small .bin files and an archive of them; patch the spec to match.
    Returns (spec, folder with the .bin files, archive path, {file: (images, labels)})."""
    real = cifar._SPECS[which]
    label_bytes = real.label_bytes
    layout = {"train": (("data_batch_1.bin", 7), ("data_batch_2.bin", 5)), "test": (("test_batch.bin", 6),)} \
        if which == "cifar10" else {"train": (("train.bin", 9),), "test": (("test.bin", 4),)}
    src = tmp_path / "src" / real.folder
    src.mkdir(parents=True)
    files, content = {}, {}
    for seed, split in enumerate(layout):
        entries = []
        for k, (name, n) in enumerate(layout[split]):
            raw, images, labels = _records(n, label_bytes, 10 * seed + k)
            (src / name).write_bytes(raw)
            content[name] = (images, labels)
            entries.append(cifar._CifarFile(name, n, hashlib.sha256(raw).hexdigest()))
        files[split] = tuple(entries)
    names = real.classes
    for label_file, classes in zip(real.label_files, names):
        (src / label_file).write_text("\n".join(c.upper() for c in classes) + "\n\n")
    archive = tmp_path / "src" / real.archive
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=real.folder)
    blob = archive.read_bytes()
    spec = dataclasses.replace(real, files=files, archive_sha256=hashlib.sha256(blob).hexdigest(),
                               archive_size=len(blob), urls=("https://mirror.test/" + real.archive,))
    monkeypatch.setitem(cifar._SPECS, which, spec)
    return spec, src, archive, content


def _expected(spec, content, split, which=0):
    images = np.concatenate([content[f.name][0] for f in spec.files[split]])
    labels = np.concatenate([content[f.name][1][:, which] for f in spec.files[split]])
    return images, labels


def test_cifar10_from_an_extracted_folder(isolated, monkeypatch, tmp_path):
    spec, src, _, content = _fake(monkeypatch, tmp_path)
    calls = _offline(monkeypatch)
    for data_dir in (src, src.parent):  # the folder itself, or its parent holding cifar-10-batches-bin/
        train = load_dataset("cifar10", "train", data_dir=data_dir)
        images, labels = _expected(spec, content, "train")
        np.testing.assert_array_equal(train.images, images)
        np.testing.assert_array_equal(train.labels, labels)
        assert train.source == str(src) and train.name == "cifar10" and train.split == "train"
    test = load_dataset("CIFAR-10", "test", data_dir=src)
    assert len(test) == 6 and test.image_shape == (3, 32, 32)
    assert test.classes == tuple(c.upper() for c in cifar.CIFAR10_CLASSES)  # read from batches.meta.txt
    assert test.mean == pytest.approx(cifar._CIFAR10.mean) and len(test.std) == 3
    assert calls == []


def test_cifar100_fine_and_coarse(isolated, monkeypatch, tmp_path):
    spec, src, _, content = _fake(monkeypatch, tmp_path, "cifar100")
    _offline(monkeypatch)
    fine = load_dataset("cifar100", "train", data_dir=src)
    coarse = load_dataset("cifar100-coarse", "train", data_dir=src)
    np.testing.assert_array_equal(fine.labels, _expected(spec, content, "train", 1)[1])
    np.testing.assert_array_equal(coarse.labels, _expected(spec, content, "train", 0)[1])
    np.testing.assert_array_equal(fine.images, coarse.images)
    assert len(fine.classes) == 100 and len(coarse.classes) == 20
    assert fine.classes[0] == "APPLE" and coarse.classes[0] == "AQUATIC_MAMMALS"


def test_class_name_lists():
    assert len(cifar.CIFAR10_CLASSES) == 10 and len(set(cifar.CIFAR10_CLASSES)) == 10
    assert len(cifar.CIFAR100_CLASSES) == 100 and list(cifar.CIFAR100_CLASSES) == sorted(cifar.CIFAR100_CLASSES)
    assert len(cifar.CIFAR100_COARSE_CLASSES) == 20
    assert list(cifar.CIFAR100_COARSE_CLASSES) == sorted(cifar.CIFAR100_COARSE_CLASSES)


def test_cifar_loader_normalises_per_channel(isolated, monkeypatch, tmp_path):
    _, src, _, _ = _fake(monkeypatch, tmp_path)
    test = load_dataset("cifar10", "test", data_dir=src)
    x, y = next(iter(DataLoader(test, batch_size=6)))
    mean, std = np.array(cifar._CIFAR10.mean), np.array(cifar._CIFAR10.std)
    want = (test.images / 255.0 - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(x, want, atol=1e-5)
    assert y.dtype == np.int64


def test_archive_is_checked_then_extracted_into_the_cache_once(isolated, monkeypatch, tmp_path):
    spec, _, archive, content = _fake(monkeypatch, tmp_path)
    _offline(monkeypatch)
    mine = tmp_path / "mine"
    mine.mkdir()
    os.replace(archive, mine / spec.archive)
    ds = load_dataset("cifar10", "test", data_dir=mine)
    extracted = isolated / "engine" / "cifar10" / spec.folder
    assert ds.source == str(extracted)
    assert sorted(os.listdir(extracted)) == ["batches.meta.txt", "data_batch_1.bin", "data_batch_2.bin",
                                             "test_batch.bin"]
    np.testing.assert_array_equal(ds.images, _expected(spec, content, "test")[0])
    monkeypatch.setattr(cifar, "_extract", lambda *a, **k: pytest.fail("extracted twice"))
    assert len(load_dataset("cifar10", "train", data_dir=mine)) == 12
    assert len(load_dataset("cifar10", "train")) == 12  # from the cache alone


def _tar_with(tmp_path, spec, members):
    """An archive of ``members``: name -> bytes, or ("symlink", target)."""
    path = tmp_path / "made" / spec.archive
    path.parent.mkdir(exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return path


def test_hostile_and_corrupt_archives(isolated, monkeypatch, tmp_path):
    spec, src, archive, _ = _fake(monkeypatch, tmp_path)
    _offline(monkeypatch)
    good = {f"{spec.folder}/{f.name}": (src / f.name).read_bytes()
            for split in ("train", "test") for f in spec.files[split]}

    def load(path, verify=False):
        return load_dataset("cifar10", "test", data_dir=path.parent, verify=verify)

    # names outside the folder are never written anywhere
    evil = _tar_with(tmp_path, spec, {"../evil.bin": b"x", "/tmp/evil-abs.bin": b"x", **good})
    assert len(load(evil)) == 6
    assert not (isolated / "engine" / "evil.bin").exists() and not os.path.exists("/tmp/evil-abs.bin")
    assert not (tmp_path / "made" / ".." / "evil.bin").exists()
    # a data member that is a symlink
    cache = isolated / "engine" / "cifar10"
    for case, members, message in [
        ("symlink", {**good, f"{spec.folder}/test_batch.bin": ("symlink", "/etc/passwd")}, "not a regular file"),
        ("short", {**good, f"{spec.folder}/test_batch.bin": b"\0" * 100}, "has 100 bytes, expected 6 records"),
        ("missing", {k: v for k, v in good.items() if "test" not in k}, "lacks cifar-10-batches-bin/test_batch.bin"),
    ]:
        import shutil
        shutil.rmtree(cache, ignore_errors=True)
        path = _tar_with(tmp_path, spec, members)
        with pytest.raises(ValueError, match=message) as info:
            load(path)
        assert str(path) in str(info.value), case
    # with verify, an archive is checked against its sha256 before anything is extracted
    shutil.rmtree(cache, ignore_errors=True)
    other = _tar_with(tmp_path, spec, good)
    with pytest.raises(ValueError, match="not the published cifar-10-binary.tar.gz: sha256"):
        load(other, verify=True)
    assert not cache.exists() or not any(cache.rglob("*.bin"))
    # truncated and garbage archives
    blob = archive.read_bytes()
    for cut, label in ((len(blob) // 2, "truncated"), (30, "header only")):
        shutil.rmtree(cache, ignore_errors=True)
        bad = tmp_path / "made" / spec.archive
        bad.write_bytes(blob[:cut])
        with pytest.raises(ValueError, match="corrupt or truncated archive"):
            load(bad)
    bad.write_bytes(b"not a tarball at all" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated archive"):
        load(bad)


def test_truncated_and_corrupt_bin_files(isolated, monkeypatch, tmp_path):
    spec, src, _, _ = _fake(monkeypatch, tmp_path)
    _offline(monkeypatch)
    path = src / "test_batch.bin"
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=r"truncated CIFAR-10 file: expected 6 records of 3073 bytes = 18438 bytes, "
                                         r"found 18428"):
        load_dataset("cifar10", "test", data_dir=src)
    path.write_bytes(raw + b"\0")
    with pytest.raises(ValueError, match="over-long"):
        load_dataset("cifar10", "test", data_dir=src)
    flipped = bytearray(raw)
    flipped[5] ^= 0xFF  # a pixel: still well-formed, but not the published file
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"not the published CIFAR-10 file test_batch.bin: sha256 .*verify=False"):
        load_dataset("cifar10", "test", data_dir=src)
    assert load_dataset("cifar10", "test", data_dir=src, verify=False).images.reshape(6, -1)[0, 4] == \
        flipped[5]
    flipped[RECORD10] = 200  # the second record's label
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="record 1 has label byte 0 = 200, expected 0-9"):
        load_dataset("cifar10", "test", data_dir=src, verify=False)


def test_download_into_the_cache(isolated, monkeypatch, tmp_path):
    spec, _, archive, content = _fake(monkeypatch, tmp_path)
    blob = archive.read_bytes()
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(url)
        return io.BytesIO(blob)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    ds = load_dataset("cifar10", "train")
    assert calls == ["https://mirror.test/cifar-10-binary.tar.gz"]
    np.testing.assert_array_equal(ds.labels, _expected(spec, content, "train")[1])
    cache = isolated / "engine" / "cifar10"
    assert (cache / spec.archive).read_bytes() == blob and (cache / spec.folder / "test_batch.bin").exists()
    assert not [p for p in os.listdir(cache) if p.endswith(".part")]
    calls.clear()
    assert len(load_dataset("cifar10", "test")) == 6 and calls == []


def test_download_of_the_wrong_bytes_is_refused(isolated, monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, *a, **k: io.BytesIO(b"<html>moved</html>"))
    with pytest.raises(DatasetUnavailableError, match="sha256 mismatch") as info:
        load_dataset("cifar10", "test")
    assert "https://mirror.test/cifar-10-binary.tar.gz" in str(info.value)
    cache = isolated / "engine" / "cifar10"
    assert os.listdir(cache) == []  # nothing partial left


def test_offline_message_names_files_and_urls(isolated, monkeypatch, tmp_path):
    calls = _offline(monkeypatch)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "data_batch_1.bin").write_bytes(b"")
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", "train", data_dir=partial)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "CIFAR-10 (train split) is not on this machine and could not be downloaded" in msg
    assert f"{partial} lacks data_batch_2.bin" in msg
    assert "cifar-10-binary.tar.gz (170,052,171 bytes, sha256 c4a38c50" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in msg
    assert "network is unreachable" in msg and "$ENGINE_DATA is not set" in msg
    assert "data_batch_5.bin" in msg and "test_batch.bin" in msg
    assert str(isolated / "engine" / "cifar10") in msg
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    calls.clear()
    with pytest.raises(DatasetUnavailableError, match=r"download=False"):
        load_dataset("cifar100", "test", download=False)
    assert calls == []


def test_engine_data_env_var(isolated, monkeypatch, tmp_path):
    spec, src, _, _ = _fake(monkeypatch, tmp_path)
    _offline(monkeypatch)
    root = tmp_path / "env"
    (root / "cifar10").mkdir(parents=True)
    os.replace(src, root / "cifar10" / spec.folder)
    monkeypatch.setenv("ENGINE_DATA", str(root))
    assert load_dataset("cifar10", "test").source == str(root / "cifar10" / spec.folder)
