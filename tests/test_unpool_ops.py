"""PyTorch's flat max-pool indices (max_pool2d_flat_indices and its inverse) and
ops.max_unpool2d / max_unpool1d with their backward: PyTorch CPU, a loop
reference, finite differences, backends."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import ops

import reference as ref
import reference_parity as rp
from _helpers import FD_TOL, TORCH_TOL, assert_raises, assert_rel, from_torch, to_torch, torch_or_skip
from conftest import assert_close

POOLS = [
    # (input shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 6, 6), 2, None, 0, 1, False),
    ((2, 3, 7, 5), 3, 2, 1, 1, False),
    ((1, 2, 7, 8), (2, 3), (2, 1), (1, 1), 1, True),
    ((2, 2, 9, 9), 3, 2, 1, 2, False),
    ((1, 1, 5, 7), 3, 1, 0, 1, True),
]


@pytest.mark.parametrize("shape, k, s, p, d, ceil", POOLS)
def test_flat_indices_are_torchs_and_invert(shape, k, s, p, d, ceil):
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal(shape)
    y, idx = ops.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    flat = ops.max_pool2d_flat_indices(idx, shape, k, s, p, d, ceil)
    ty, tidx = torch.nn.functional.max_pool2d(to_torch(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(engine.to_numpy(y), from_torch(ty))
    np.testing.assert_array_equal(engine.to_numpy(flat), from_torch(tidx))
    back = ops.max_pool2d_window_indices(flat, shape, k, s, p, d, ceil)
    np.testing.assert_array_equal(engine.to_numpy(back), engine.to_numpy(idx).astype(np.int64))
    g = np.random.default_rng(1).standard_normal(y.shape)
    np.testing.assert_array_equal(ops.max_pool2d_backward(g, back, shape, k, s, p, d, ceil),
                                  ops.max_pool2d_backward(g, idx, shape, k, s, p, d, ceil))


def test_max_pool1d_flat_indices_are_torchs():
    torch = torch_or_skip()
    x = np.random.default_rng(2).standard_normal((2, 3, 11))
    _, idx = ops.max_pool1d(x, 3, 2, 1, return_indices=True)
    _, tidx = torch.nn.functional.max_pool1d(to_torch(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(engine.to_numpy(ops.max_pool1d_flat_indices(idx, x.shape, 3, 2, 1)),
                                  from_torch(tidx))


def test_window_indices_refuse_positions_outside_the_window():
    flat = np.zeros((1, 1, 2, 2), dtype=np.int64)  # every window claims position (0, 0)
    with pytest.raises(ValueError, match="do not point inside their pooling window"):
        ops.max_pool2d_window_indices(flat, (1, 1, 4, 4), 2)


UNPOOLS = [
    # (pool input shape, kernel, stride, padding, output_size)
    ((2, 3, 6, 6), 2, None, 0, None),
    ((2, 3, 7, 5), 3, 2, 1, None),
    ((2, 3, 7, 5), 3, 2, 1, (7, 5)),
    ((1, 2, 8, 8), 3, 1, 1, None),  # overlapping windows: repeated indices
    ((3, 5, 6), 2, None, 0, None),  # unbatched
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape, k, s, p, out", UNPOOLS)
def test_max_unpool2d_matches_torch_and_reference(shape, k, s, p, out, dtype):
    torch = torch_or_skip()
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    ty, tidx = torch.nn.functional.max_pool2d(to_torch(x), k, s, p, return_indices=True)
    pooled, idx = from_torch(ty), from_torch(tidx)
    tp = to_torch(pooled, requires_grad=True)
    tu = torch.nn.functional.max_unpool2d(tp, to_torch(idx), k, s, p, out)
    g = np.random.default_rng(4).standard_normal(tuple(tu.shape)).astype(dtype)
    tu.backward(to_torch(g))
    u = ops.max_unpool2d(pooled, idx, k, s, p, out)
    assert tuple(u.shape) == tuple(tu.shape) and engine.to_numpy(u).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(engine.to_numpy(u), from_torch(tu))
    assert_rel(ops.max_unpool2d_backward(g, idx), from_torch(tp.grad), TORCH_TOL[dtype], "dx")
    if dtype == "float64":
        np.testing.assert_array_equal(engine.to_numpy(u), rp.max_unpool(pooled, idx, tuple(u.shape[-2:])))


def test_max_unpool_later_values_win_repeated_indices_like_torch_cpu():
    torch = torch_or_skip()
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    idx = np.array([[[[5, 5], [0, 5]]]])
    got = ops.max_unpool2d(x, idx, 2)
    np.testing.assert_array_equal(engine.to_numpy(got),
                                  from_torch(torch.nn.functional.max_unpool2d(to_torch(x), to_torch(idx), 2)))
    assert engine.to_numpy(got)[0, 0, 1, 1] == 4.0 and engine.to_numpy(got)[0, 0, 0, 0] == 3.0
    g = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(ops.max_unpool2d_backward(g, idx), [[[[5.0, 5.0], [0.0, 5.0]]]])


def test_max_unpool1d_matches_torch():
    torch = torch_or_skip()
    x = np.random.default_rng(5).standard_normal((2, 3, 9))
    ty, tidx = torch.nn.functional.max_pool1d(to_torch(x), 3, 2, 1, return_indices=True)
    pooled, idx = from_torch(ty), from_torch(tidx)
    for out in (None, (9,), (2, 3, 10)):
        want = torch.nn.functional.max_unpool1d(ty, tidx, 3, 2, 1, out)
        np.testing.assert_array_equal(engine.to_numpy(ops.max_unpool1d(pooled, idx, 3, 2, 1, out)), from_torch(want))
    assert tuple(ops.max_unpool1d(pooled, idx, 3, 2, 1, 9).shape) == (2, 3, 9)  # an int size too
    g = np.arange(18.0).reshape(2, 3, 3)
    np.testing.assert_array_equal(ops.max_unpool1d_backward(g, np.zeros((2, 3, 1), dtype=np.int64)), g[:, :, :1])


def test_max_unpool_backward_matches_finite_differences():
    x = np.random.default_rng(6).standard_normal((2, 2, 3, 3))
    idx = np.random.default_rng(7).permutation(36)[:9 * 4].reshape(2, 2, 3, 3) % 36
    g = np.random.default_rng(8).standard_normal((2, 2, 6, 6))
    num = ref.numerical_grad(lambda v: float(np.sum(engine.to_numpy(ops.max_unpool2d(v, idx, 2)) * g)), x)
    assert_rel(ops.max_unpool2d_backward(g, idx), num, FD_TOL, "dx")


@pytest.mark.parametrize("make, exc, words", [
    (lambda: ops.max_unpool2d(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 16), 2), ValueError,
     ["indices must be in [0, 15]", "got values in [16, 16]"]),
    (lambda: ops.max_unpool2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), 2), TypeError, ["integer"]),
    (lambda: ops.max_unpool2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 1), dtype=np.int64), 2), ValueError,
     ["indices must have the input's shape"]),
    (lambda: ops.max_unpool2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), dtype=np.int64), 2,
                              output_size=(6, 4)), ValueError, ["within one stride of the default (4, 4)"]),
    (lambda: ops.max_unpool2d(np.zeros((2, 2)), np.zeros((2, 2), dtype=np.int64), 2), ValueError,
     ["3 or 4 dimensions"]),
    (lambda: ops.max_unpool2d(np.zeros((1, 1, 2, 2), dtype=np.int64), np.zeros((1, 1, 2, 2), dtype=np.int64), 2),
     TypeError, ["floating-point"]),
])
def test_max_unpool_bad_arguments(make, exc, words):
    assert_raises(exc, make, *words)


def test_unpool_and_flat_indices_on_every_backend(backend):
    shape, k, s, p, d, ceil = POOLS[1]
    x = np.random.default_rng(9).standard_normal(shape)
    y, idx = ops.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    flat = engine.to_numpy(ops.max_pool2d_flat_indices(idx, shape, k, s, p, d, ceil))
    got = ops.max_pool2d_flat_indices(backend.asarray(engine.to_numpy(idx).astype(np.int64)), shape, k, s, p, d, ceil)
    assert_close(got, flat, rtol=0, backend=backend)
    assert_close(ops.max_pool2d_window_indices(backend.asarray(flat), shape, k, s, p, d, ceil),
                 engine.to_numpy(idx).astype(np.int64), rtol=0, backend=backend)
    u = ops.max_unpool2d(backend.asarray(engine.to_numpy(y)), backend.asarray(flat), k, s, p, shape[2:])
    assert_close(u, engine.to_numpy(ops.max_unpool2d(y, flat, k, s, p, shape[2:])), rtol=0, backend=backend)
    g = np.random.default_rng(10).standard_normal(shape)
    assert_close(ops.max_unpool2d_backward(backend.asarray(g), backend.asarray(flat)),
                 engine.to_numpy(ops.max_unpool2d_backward(g, flat)), rtol=0, backend=backend)
