"""engine.data.transforms: each transform against a naive reference drawn from
the same generator (NumPy slicing and np.pad), PyTorch's interpolate for the
resampling ones, its statistics over many samples, determinism under a seed,
and the same results on every backend (numpy, array_api_strict, cupy under
the gpu marker)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import backends
from engine.data import DataLoader, Dataset
from engine.data import transforms as T


def _images(n=6, c=3, h=9, w=11, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


def _np(a):
    return engine.to_numpy(a)


# ---------------------------------------------------------------------------
# references drawn from the same generator
# ---------------------------------------------------------------------------
def _crop_reference(x, size, padding, seed, mode="constant", fill=0.0):
    rng = np.random.default_rng(seed)
    n, _, H, W = x.shape
    h, w = size
    left, top, right, bottom = padding
    kwargs = {"constant_values": fill} if mode == "constant" else {}
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=mode, **kwargs)
    oy = rng.integers(0, H + top + bottom - h + 1, size=n)
    ox = rng.integers(0, W + left + right - w + 1, size=n)
    return np.stack([padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)]), oy, ox


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
@pytest.mark.parametrize("size,padding", [((9, 11), (2, 2, 2, 2)), ((7, 8), (1, 3, 0, 2)), ((12, 5), (0, 2, 0, 1))])
def test_random_crop_equals_padded_slices(mode, size, padding):
    x = _images()
    fill = 0.25 if mode == "constant" else 0.0
    t = T.RandomCrop(size, padding=padding, padding_mode=mode, fill=fill)
    got = t(x, rng=np.random.default_rng(3))
    want, _, _ = _crop_reference(x, size, padding, 3, mode, fill)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # exact: a crop only moves values


def test_random_crop_padding_forms_and_pad_if_needed():
    x = _images(n=2, h=5, w=6)
    assert T.RandomCrop(4, padding=1).padding == (1, 1, 1, 1)
    assert T.RandomCrop(4, padding=(1, 2)).padding == (1, 2, 1, 2)  # (left/right, top/bottom)
    out = T.RandomCrop(8, pad_if_needed=True)(x, rng=np.random.default_rng(0))
    assert out.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="larger than the padded image"):
        T.RandomCrop(8)(x)
    with pytest.raises(ValueError, match="reflect padding"):
        T.RandomCrop(5, padding=6, padding_mode="reflect")(x)


def test_random_crop_offsets_are_uniform():
    """Every offset of the padded image is equally likely (counts over 5,000 crops)."""
    n, p = 5000, 2
    x = np.broadcast_to((np.arange(36, dtype=np.float32) + 1).reshape(1, 1, 6, 6), (n, 1, 6, 6)).copy()
    out = T.RandomCrop(6, padding=p)(x, rng=np.random.default_rng(11))
    # the pixel valued 1 (x[0, 0]) lands at (p - oy, p - ox) in the output when inside it
    first = out[:, 0].reshape(n, -1)
    centre = out[:, 0, 2, 2]  # always an image pixel for |shift| <= 2
    shift_y = (centre - 1) // 6 - 2
    shift_x = (centre - 1) % 6 - 2
    counts = np.zeros((5, 5), np.int64)
    np.add.at(counts, (shift_y.astype(int) + 2, shift_x.astype(int) + 2), 1)
    expected = n / 25
    sd = math.sqrt(n * (1 / 25) * (24 / 25))
    assert np.all(np.abs(counts - expected) < 5 * sd), counts
    assert first.min() == 0  # padding shows up


def test_center_crop_is_a_slice_and_pads_when_larger():
    x = _images(h=9, w=11)
    np.testing.assert_array_equal(T.CenterCrop((5, 6))(x), x[:, :, 2:7, 2:8])
    big = T.CenterCrop(13)(x)
    ref = np.pad(x, ((0, 0), (0, 0), (2, 2), (1, 1)))[:, :, :, :]
    np.testing.assert_array_equal(big, ref)


def test_horizontal_flip_reference_and_rate():
    x = _images(n=4000, c=1, h=2, w=5)
    got = T.RandomHorizontalFlip(p=0.3)(x, rng=np.random.default_rng(5))
    flags = np.random.default_rng(5).random(4000) < 0.3
    np.testing.assert_array_equal(got[flags], x[flags, :, :, ::-1])
    np.testing.assert_array_equal(got[~flags], x[~flags])
    assert abs(flags.mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 4000)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=0.0)(x), x)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(x), x[..., ::-1])


# ---------------------------------------------------------------------------
# resampling: PyTorch's interpolate is the oracle
# ---------------------------------------------------------------------------
def _torch_resize(x, size, antialias):
    torch = pytest.importorskip("torch", reason="PyTorch's interpolate is the oracle of the resampling tests")
    t = torch.from_numpy(np.ascontiguousarray(x))
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False,
                                           antialias=antialias).numpy()


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("size", [(4, 5), (3, 11), (18, 23), (9, 11), (20, 4)])
def test_resize_matches_torch_interpolate(size, antialias):
    x = _images(n=3, h=9, w=11, dtype=np.float64)
    got = T.Resize(size, antialias=antialias)(x)
    want = _torch_resize(x, size, antialias)
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    got32 = T.Resize(size, antialias=antialias)(x.astype(np.float32))
    np.testing.assert_allclose(got32, want, rtol=0, atol=2e-6)


def test_resize_int_sets_the_shorter_side():
    assert T.Resize(4)(_images(h=8, w=12)).shape[-2:] == (4, 6)
    assert T.Resize(4)(_images(h=13, w=8)).shape[-2:] == (6, 4)  # int(4 * 13 / 8) = 6
    x = _images(h=8, w=8)
    assert T.Resize(8)(x) is x


def test_random_resized_crop_matches_torch_on_its_boxes():
    x = _images(n=8, h=12, w=10, dtype=np.float64)
    t = T.RandomResizedCrop((7, 9), scale=(0.2, 0.9))
    top, left, hh, ww = t.boxes(np.random.default_rng(9), 8, 12, 10)
    got = t(x, rng=np.random.default_rng(9))
    for i in range(8):
        crop = x[i:i + 1, :, top[i]:top[i] + hh[i], left[i]:left[i] + ww[i]]
        np.testing.assert_allclose(got[i:i + 1], _torch_resize(crop, (7, 9), True), atol=1e-12, err_msg=str(i))


def test_random_resized_crop_box_statistics():
    t = T.RandomResizedCrop(8, scale=(0.1, 0.6), ratio=(0.5, 2.0))
    top, left, hh, ww = t.boxes(np.random.default_rng(2), 20000, 40, 40)
    assert np.all(top >= 0) and np.all(left >= 0) and np.all(top + hh <= 40) and np.all(left + ww <= 40)
    area = hh * ww / 1600
    assert 0.08 < area.min() and area.max() < 0.63  # the range, up to rounding of the sides
    ratio = ww / hh
    assert 0.45 < ratio.min() and ratio.max() < 2.2
    # area fraction uniform in [0.1, 0.6]: mean 0.35, quartiles 0.225 / 0.475 (rounding blurs them a little)
    assert abs(area.mean() - 0.35) < 0.01
    assert abs(np.quantile(area, 0.25) - 0.225) < 0.01 and abs(np.quantile(area, 0.75) - 0.475) < 0.01
    # offsets cover every position the box allows
    assert top.min() == 0 and (top + hh).max() == 40
    # an impossible ratio falls back to the central box of the nearest allowed ratio
    tall = T.RandomResizedCrop(4, scale=(1.0, 1.0), ratio=(3.0, 4.0))
    top, left, hh, ww = tall.boxes(np.random.default_rng(0), 5, 10, 10)
    assert np.all(ww == 10) and np.all(hh == 3) and np.all(top == 3) and np.all(left == 0)


# ---------------------------------------------------------------------------
# photometric
# ---------------------------------------------------------------------------
def _luma_mean(x):
    grey = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return grey.mean(axis=(1, 2)).reshape(-1, 1, 1, 1)


def test_color_jitter_reference():
    x = _images(n=50, dtype=np.float64)
    t = T.ColorJitter(brightness=0.5, contrast=(0.3, 1.7))
    got = t(x, rng=np.random.default_rng(4))
    rng = np.random.default_rng(4)
    fb = rng.uniform(0.5, 1.5, size=(50, 1, 1, 1))
    fc = rng.uniform(0.3, 1.7, size=(50, 1, 1, 1))
    y = np.clip(x * fb, 0, 1)
    y = np.clip(fc * y + (1 - fc) * _luma_mean(y), 0, 1)
    np.testing.assert_allclose(got, y, atol=1e-12)
    grey = _images(n=5, c=1)
    out = T.ColorJitter(contrast=0.5)(grey, rng=np.random.default_rng(1))
    f = np.random.default_rng(1).uniform(0.5, 1.5, size=(5, 1, 1, 1))
    np.testing.assert_allclose(out, np.clip(f * grey + (1 - f) * grey.mean(axis=(1, 2, 3), keepdims=True), 0, 1),
                               atol=1e-6)


def test_color_jitter_factor_statistics():
    """Brightness factors are uniform over [1-b, 1+b]: ratio of output to input per sample."""
    x = np.full((4000, 1, 2, 2), 0.25, np.float64)
    out = T.ColorJitter(brightness=0.8)(x, rng=np.random.default_rng(8))
    f = out[:, 0, 0, 0] / 0.25
    assert np.all(np.ptp(out.reshape(4000, -1), axis=1) == 0)  # one factor per sample
    assert 0.2 <= f.min() < 0.21 and 1.79 < f.max() <= 1.8
    assert abs(f.mean() - 1.0) < 0.02 and abs(f.std() - 1.6 / math.sqrt(12)) < 0.02
    np.testing.assert_array_equal(T.ColorJitter()(x), x)


def test_random_erasing_reference_and_statistics():
    n, H, W = 3000, 16, 20
    x = _images(n=n, c=3, h=H, w=W)
    t = T.RandomErasing(p=0.6, scale=(0.05, 0.3), value=(0.1, 0.2, 0.3))
    apply, top, left, hh, ww = t.boxes(np.random.default_rng(6), n, H, W)
    got = t(x, rng=np.random.default_rng(6))
    want = x.copy()
    for i in np.flatnonzero(apply):
        want[i, :, top[i]:top[i] + hh[i], left[i]:left[i] + ww[i]] = np.array([0.1, 0.2, 0.3], np.float32)[:, None, None]
    np.testing.assert_array_equal(got, want)
    assert abs(apply.mean() - 0.6) < 5 * math.sqrt(0.24 / n)
    area = (hh * ww / (H * W))[apply]
    assert area.min() > 0.03 and area.max() < 0.33
    assert np.all((top + hh <= H)[apply]) and np.all((left + ww <= W)[apply])
    np.testing.assert_array_equal(T.RandomErasing(p=0.0)(x), x)


def test_normalize_and_to_float():
    u8 = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    f = T.ToFloat()(u8)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, u8.astype(np.float32) / np.float32(255))
    assert T.ToFloat("float64")(u8).dtype == np.float64
    n = T.Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])(f)
    np.testing.assert_allclose(n, (f - np.array([0.1, 0.2, 0.3], np.float32).reshape(1, 3, 1, 1))
                               / np.array([0.5, 0.25, 2.0], np.float32).reshape(1, 3, 1, 1), rtol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        T.Normalize([0.1, 0.2], [1, 1])(f)
    with pytest.raises(TypeError, match="ToFloat"):
        T.RandomCrop(2)(u8)


# ---------------------------------------------------------------------------
# seeding, single images, composition, backends
# ---------------------------------------------------------------------------
RANDOM = [
    lambda: T.RandomCrop(9, padding=2),
    lambda: T.RandomHorizontalFlip(),
    lambda: T.RandomResizedCrop(7),
    lambda: T.ColorJitter(0.4, 0.4),
    lambda: T.RandomErasing(p=0.9),
    lambda: T.Compose([T.RandomCrop(9, padding=1), T.RandomHorizontalFlip(), T.Normalize(0.5, 0.25)]),
]


@pytest.mark.parametrize("make", RANDOM)
def test_manual_seed_makes_random_transforms_reproducible(make):
    x = _images(n=16, h=9, w=9)
    t = make()
    engine.manual_seed(21)
    a = t(x)
    b = t(x)  # the generator moved on: another draw
    engine.manual_seed(21)
    np.testing.assert_array_equal(t(x), a)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(t(x, rng=np.random.default_rng(1)), t(x, rng=np.random.default_rng(1)))


def test_single_image_is_a_batch_of_one():
    x = _images(n=1, h=9, w=9)
    for make in RANDOM:
        t = make()
        one = t(x[0], rng=np.random.default_rng(2))
        np.testing.assert_array_equal(one, t(x, rng=np.random.default_rng(2))[0])


@pytest.mark.parametrize("make", RANDOM + [lambda: T.Resize((5, 13)), lambda: T.CenterCrop(11)])
def test_same_images_on_every_backend(make, backend):
    x = _images(n=8, h=9, w=9)
    t = make()
    want = t(x, rng=np.random.default_rng(4))
    got = t(engine.asarray(x), rng=np.random.default_rng(4))
    assert backends.backend_of(got) is backend
    np.testing.assert_allclose(_np(got), want, rtol=0, atol=1e-6)


def test_tensors_are_read_through_their_array():
    x = _images(n=2)
    out = T.RandomHorizontalFlip(p=1.0)(engine.Tensor(engine.asarray(x)))
    np.testing.assert_array_equal(_np(out), x[..., ::-1])


def test_argument_errors():
    with pytest.raises(ValueError, match="positive"):
        T.RandomCrop(0)
    with pytest.raises(TypeError, match="padding"):
        T.RandomCrop(4, padding=1.5)
    with pytest.raises(ValueError, match="padding_mode"):
        T.RandomCrop(4, padding_mode="wrap")
    with pytest.raises(ValueError, match="probability"):
        T.RandomHorizontalFlip(p=2)
    with pytest.raises(ValueError, match="scale"):
        T.RandomResizedCrop(4, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="brightness"):
        T.ColorJitter(brightness=-1)
    with pytest.raises(ValueError, match="std must be positive"):
        T.Normalize(0.5, 0.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        T.RandomCrop(2)(np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match="image array"):
        T.RandomCrop(2)([[1.0]])
    with pytest.raises(TypeError, match="not callable"):
        T.Compose([T.RandomCrop(2), 3])


# ---------------------------------------------------------------------------
# in the DataLoader
# ---------------------------------------------------------------------------
def test_loader_transform_sees_unit_range_then_normalises():
    images = np.random.default_rng(0).integers(0, 256, (20, 1, 6, 6), dtype=np.uint8)
    ds = Dataset(images, np.arange(20) % 2)
    seen = []

    def spy(x):
        seen.append((float(np.min(x)), float(np.max(x))))
        return x

    x, _ = next(iter(DataLoader(ds, batch_size=20, transform=spy, normalize=(0.5, 0.25))))
    assert 0.0 <= seen[0][0] and seen[0][1] <= 1.0
    np.testing.assert_allclose(x, (images / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_seeded_loader_with_augmentation_is_reproducible():
    images = np.random.default_rng(0).integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    ds = Dataset(images, np.arange(50) % 5)
    aug = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip()])

    def epochs(loader):
        return [engine.to_numpy(x).copy() for _ in range(2) for x, _ in loader]

    a = epochs(DataLoader(ds, batch_size=16, shuffle=True, seed=3, transform=aug))
    b = epochs(DataLoader(ds, batch_size=16, shuffle=True, seed=3, transform=aug))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    plain = epochs(DataLoader(ds, batch_size=16, shuffle=True, seed=3))
    assert not all(np.array_equal(u, v) for u, v in zip(a, plain))
    engine.manual_seed(5)
    c = epochs(DataLoader(ds, batch_size=16, shuffle=True, transform=aug))
    engine.manual_seed(5)
    d = epochs(DataLoader(ds, batch_size=16, shuffle=True, transform=aug))
    for u, v in zip(c, d):
        np.testing.assert_array_equal(u, v)


def test_loader_augmentation_on_every_backend(backend):
    images = np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    ds = Dataset(images, np.arange(40) % 4)
    aug = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip()])
    ref = [(engine.to_numpy(x), engine.to_numpy(y))
           for x, y in DataLoader(ds, 16, shuffle=True, seed=1, transform=aug, backend="numpy")]
    got = list(DataLoader(ds, 16, shuffle=True, seed=1, transform=aug))
    for (x, y), (rx, ry) in zip(got, ref):
        assert backends.backend_of(x) is backend
        np.testing.assert_allclose(engine.to_numpy(x), rx, atol=1e-6)
        np.testing.assert_array_equal(engine.to_numpy(y), ry)
