"""ImageFolder and load_image on PNG/JPEG files generated here (Pillow)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import engine
from engine.data import DataLoader, ImageFolder, load_image, train_val_split
from engine.data import transforms as T

Image = pytest.importorskip("PIL.Image", reason='Pillow is an optional extra: pip install ".[images]"')


def _png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return array


def _rgb(seed, h=6, w=8):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    want = {}
    for cls, k in (("dog", 3), ("cat", 2)):
        for i in range(k):
            want[f"{cls}/{i}.png"] = _png(str(root / cls / f"{i}.png"), _rgb(10 * len(cls) + i))
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored
    nested = root / "dog" / "puppies"
    want["dog/puppies/p.PNG"] = _png(str(nested / "p.PNG"), _rgb(99))
    return root, want


def test_classes_labels_and_pixels(folder):
    root, want = folder
    ds = ImageFolder(root)
    assert ds.classes == ("cat", "dog") and len(ds) == 6 and ds.name == "pets"
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 1]
    assert ds.image_shape == (3, 6, 8)
    for (path, label), i in zip(ds.samples, range(len(ds))):
        image, got_label = ds[i]
        assert got_label == label and image.dtype == np.uint8 and image.shape == (3, 6, 8)
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        np.testing.assert_array_equal(image, want[rel].transpose(2, 0, 1))


def test_loader_batches_an_image_folder(folder, backend):
    root, want = folder
    ds = ImageFolder(root)
    x, y = next(iter(DataLoader(ds, batch_size=6, normalize=None)))
    assert tuple(x.shape) == (6, 3, 6, 8) and engine.to_numpy(y).tolist() == [0, 0, 1, 1, 1, 1]
    first = want["cat/0.png"].transpose(2, 0, 1) / np.float32(255)
    np.testing.assert_allclose(engine.to_numpy(x)[0], first, atol=1e-6)
    tr, va = train_val_split(ds, 2, seed=0)  # stratified through ds.labels: one of each class
    assert sorted(ds.labels[va.indices].tolist()) == [0, 1]


def test_per_sample_transform_and_grey(folder):
    root, _ = folder
    ds = ImageFolder(root, transform=T.Compose([T.RandomCrop(5, padding=1), T.RandomHorizontalFlip()]))
    engine.manual_seed(0)
    a = ds[0][0]
    engine.manual_seed(0)
    np.testing.assert_array_equal(ds[0][0], a)
    assert a.shape == (3, 5, 5) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    grey = ImageFolder(root, channels=1)
    g, _ = grey[0]
    rgb = ImageFolder(root)[0][0].astype(np.float64)
    assert g.shape == (1, 6, 8)
    # Pillow's L conversion: ITU-R 601 luma, rounded
    np.testing.assert_allclose(g[0], (rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000, atol=1)


def test_jpeg_rgba_palette_and_sizes(tmp_path):
    root = tmp_path / "mixed"
    _png(str(root / "a" / "rgba.png"), np.random.default_rng(0).integers(0, 256, (10, 10, 4), dtype=np.uint8))
    p = Image.fromarray(_rgb(1, 10, 10)).convert("P")
    p.save(root / "a" / "palette.png")
    (root / "b").mkdir()
    Image.fromarray(_rgb(2, 10, 10)).save(root / "b" / "photo.jpg")
    ds = ImageFolder(root)
    assert [ds[i][0].shape for i in range(3)] == [(3, 10, 10)] * 3
    assert ds.classes == ("a", "b")
    # different sizes: refused without size=, resized with it
    _png(str(root / "b" / "big.png"), _rgb(3, 20, 30))
    with pytest.raises(ValueError, match=r"big.png: 30x20 pixels, but most images are 10x10 \(pass size="):
        ImageFolder(root)
    ds = ImageFolder(root, size=(8, 12))
    assert {ds[i][0].shape for i in range(len(ds))} == {(3, 8, 12)} and ds.image_shape == (3, 8, 12)
    x, _ = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 8, 12)


def test_bad_files_each_get_a_line(tmp_path):
    root = tmp_path / "bad"
    good = _rgb(0)
    _png(str(root / "ok" / "fine.png"), good)
    (root / "ok" / "text.png").write_text("hello")
    (root / "ok" / "empty.jpg").write_bytes(b"")
    Image.fromarray(good).save(root / "ok" / "really_a.gif.png", format="GIF")
    (root / "nothing").mkdir()
    with pytest.raises(ValueError) as info:
        ImageFolder(root)
    msg = str(info.value)
    assert "4 problem(s)" in msg
    for name in ("text.png", "empty.jpg", "really_a.gif.png"):
        line = next(line for line in msg.splitlines() if name in line)
        assert "not a readable PNG or JPEG image" in line, line
    assert "class folder 'nothing' holds no .png/.jpg/.jpeg files" in msg


def test_truncated_pixel_data_is_reported_on_access(tmp_path):
    root = tmp_path / "trunc"
    _png(str(root / "a" / "x.png"), _rgb(0, 64, 64))
    blob = (root / "a" / "x.png").read_bytes()
    (root / "a" / "x.png").write_bytes(blob[:len(blob) // 2])
    ds = ImageFolder(root)  # the header is fine
    with pytest.raises(ValueError, match=r"x.png: corrupt PNG image data"):
        ds[0]


def test_size_limit_and_arguments(tmp_path):
    root = tmp_path / "big"
    _png(str(root / "a" / "x.png"), _rgb(0, 40, 50))
    with pytest.raises(ValueError, match=r"x.png: PNG image of 50x40 pixels is outside the accepted size"):
        ImageFolder(root, max_pixels=1000)
    with pytest.raises(ValueError, match="outside the accepted size"):
        load_image(root / "a" / "x.png", max_pixels=1999)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolder(root / "a")
    with pytest.raises(ValueError, match="channels must be 1"):
        ImageFolder(root, channels=4)


def test_load_image_resizes_like_the_resize_transform(tmp_path):
    a = _png(str(tmp_path / "x.png"), _rgb(5, 16, 24))
    small = load_image(tmp_path / "x.png", size=(8, 12))
    ref = T.Resize((8, 12))(a.transpose(2, 0, 1).astype(np.float32) / 255)
    np.testing.assert_array_equal(small, np.clip(np.rint(ref * 255), 0, 255).astype(np.uint8))
    assert load_image(tmp_path / "x.png", channels=1, size=4).shape == (1, 4, 6)


def test_missing_pillow_names_the_install_command(folder, monkeypatch):
    root, _ = folder
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r'pip install "engine\[images\]".*pip install "\.\[images\]"'):
        ImageFolder(root)
    with pytest.raises(ImportError, match="Pillow"):
        load_image(root / "cat" / "0.png")
