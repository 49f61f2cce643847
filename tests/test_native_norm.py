"""Batch normalisation's per-channel map in C (kernels/cpu_norm.c): the NumPy expression's
bits, with and without a bias, any plane size (vector tails), 1-3 threads, the AVX2 build;
and the layer still agrees with PyTorch in training and eval."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import backends, ops
from engine.backends import native_cpu
from engine.kernels import native

from _helpers import avx2_rerun, count_native_calls, run_file_under_avx2

lib = native.library()
pytestmark = pytest.mark.skipif(lib is None, reason=f"C kernels unavailable: {native.status()}")


def _numpy_map(x, mean, scale, bias):
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) * scale.reshape(shape)
    return y if bias is None else y + bias.reshape(shape)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (4, 16, 16, 16), (3, 5, 17), (6, 4), (1, 8, 1, 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_the_c_map_gives_numpys_bits(shape, with_bias, monkeypatch):
    r = np.random.default_rng(0)
    x = r.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = np.inf
    x.reshape(-1)[3::11] = np.nan
    x.reshape(-1)[5::13] = -0.0
    c = shape[1]
    mean, scale = r.standard_normal(c).astype(np.float32), r.standard_normal(c).astype(np.float32)
    bias = r.standard_normal(c).astype(np.float32) if with_bias else None
    want = _numpy_map(x, mean, scale, bias)
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS_PER_THREAD", 1)
    before = engine.get_num_threads()
    try:
        for threads in (1, 2, 3):
            engine.set_num_threads(threads)
            got = native_cpu.batch_norm_apply(x, mean, scale, bias)
            assert got.tobytes() == want.tobytes(), threads
    finally:
        engine.set_num_threads(before)


def test_batch_norm_takes_the_c_map_and_keeps_its_bits(monkeypatch):
    r = np.random.default_rng(1)
    x = r.standard_normal((8, 6, 9, 9)).astype(np.float32)
    w, b = r.standard_normal(6).astype(np.float32), r.standard_normal(6).astype(np.float32)
    rm, rv = r.standard_normal(6).astype(np.float32), r.random(6).astype(np.float32) + 0.5
    counts = count_native_calls(monkeypatch)
    train = ops.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True)
    evaluated = ops.batch_norm(x, rm, rv, w, b, training=False)
    assert counts.get("bn_apply_f32") == 2, counts
    monkeypatch.setattr(backends.get("numpy"), "use_native_kernels", False)
    assert ops.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True).tobytes() == train.tobytes()
    assert ops.batch_norm(x, rm, rv, w, b, training=False).tobytes() == evaluated.tobytes()


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(training):
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(2)
    x = r.standard_normal((5, 4, 6, 7)).astype(np.float32)
    w, b = r.standard_normal(4).astype(np.float32), r.standard_normal(4).astype(np.float32)
    rm, rv = r.standard_normal(4).astype(np.float32), r.random(4).astype(np.float32) + 0.5
    got = ops.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)
    want = torch.nn.functional.batch_norm(torch.from_numpy(x).double(), torch.from_numpy(rm).double(),
                                          torch.from_numpy(rv).double(), torch.from_numpy(w).double(),
                                          torch.from_numpy(b).double(), training=training).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_other_dtypes_and_shapes_keep_the_array_api_path():
    x = np.ones((2, 3, 4), np.float64)
    assert native_cpu.batch_norm_apply(x, np.zeros(3), np.ones(3), None) is None
    x32 = np.ones((2, 3, 4), np.float32)
    assert native_cpu.batch_norm_apply(x32, np.zeros(4, np.float32), np.ones(4, np.float32), None) is None


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    run_file_under_avx2(__file__, tmp_path)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (64, 32, 28, 28), (3, 5, 17), (1, 4, 1, 1), (7, 9)])
def test_channel_sum_is_the_float64_sum_rounded_once(shape, monkeypatch):
    """A bias gradient: each channel summed in float64 (so the float64 sum rounded to float32,
    to within the order of the float64 additions), the same bits on 1-3 threads."""
    r = np.random.default_rng(5)
    x = (r.standard_normal(shape) * 10).astype(np.float32)
    want = x.astype(np.float64).sum(axis=(0,) + tuple(range(2, x.ndim)))
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS_PER_THREAD", 1)
    before, outs = engine.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            engine.set_num_threads(threads)
            outs.append(native_cpu.channel_sum(x))
    finally:
        engine.set_num_threads(before)
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    np.testing.assert_allclose(outs[0], want, rtol=1e-6, atol=1e-6 * np.abs(x).sum() / x.shape[1])
    # inf and NaN come through as in a plain sum
    x.reshape(-1)[0] = np.inf
    assert np.isinf(native_cpu.channel_sum(x)[0])
    x.reshape(-1)[0] = np.nan
    assert np.isnan(native_cpu.channel_sum(x)[0])


def test_conv_bias_gradient_takes_the_channel_sum(monkeypatch):
    r = np.random.default_rng(6)
    x, w = r.standard_normal((4, 3, 9, 9)).astype(np.float32), r.standard_normal((5, 3, 3, 3)).astype(np.float32)
    g = r.standard_normal((4, 5, 9, 9)).astype(np.float32)
    counts = count_native_calls(monkeypatch)
    _, _, db = ops.conv2d_backward(g, x, w, padding=1)
    assert counts.get("channel_sum_f32") == 1, counts
    np.testing.assert_allclose(db, g.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-6, atol=1e-5)
    assert native_cpu.channel_sum(np.ones((0, 3, 2, 2), np.float32)) is None  # empty: the array-API path
