"""GELU (exact and tanh), SiLU, hardsigmoid, hardswish, the backend's erf and
channel (feature) dropout: loop references, PyTorch CPU, finite differences,
backends."""
from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import backends, ops

import reference as ref
import reference_parity as rp
from _helpers import FD_TOL, TORCH_TOL, assert_rel, from_torch, to_torch, torch_or_skip
from conftest import assert_close

ACTIVATIONS = {
    # name: (forward, backward, torch functional call, reference)
    "gelu": (ops.gelu, ops.gelu_backward, lambda F, t: F.gelu(t), rp.gelu),
    "gelu_tanh": (lambda x: ops.gelu(x, "tanh"), lambda g, x: ops.gelu_backward(g, x, "tanh"),
                  lambda F, t: F.gelu(t, approximate="tanh"), lambda x: rp.gelu(x, "tanh")),
    "silu": (ops.silu, ops.silu_backward, lambda F, t: F.silu(t), rp.silu),
    "hardsigmoid": (ops.hardsigmoid, ops.hardsigmoid_backward, lambda F, t: F.hardsigmoid(t), rp.hardsigmoid),
    "hardswish": (ops.hardswish, ops.hardswish_backward, lambda F, t: F.hardswish(t), rp.hardswish),
}


def _inputs(dtype, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((3, 4, 5)) * 3
    x.reshape(-1)[:9] = [-3.0, 3.0, 0.0, -0.0, 40.0, -40.0, 1e-8, -6.5, 6.5]  # kinks, zeros, tails
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_matches_torch_and_reference(name, dtype):
    torch = torch_or_skip()
    forward, backward, torch_fn, reference = ACTIVATIONS[name]
    x = _inputs(dtype)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    tx = to_torch(x, requires_grad=True)
    ty = torch_fn(torch.nn.functional, tx)
    ty.backward(to_torch(g))
    y = forward(x)
    assert engine.to_numpy(y).dtype == np.dtype(dtype)
    assert_rel(y, from_torch(ty), TORCH_TOL[dtype], "y")
    assert_rel(backward(g, x), from_torch(tx.grad), TORCH_TOL[dtype], "dx")
    if dtype == "float64":
        assert_rel(y, reference(x), 1e-12, "reference")


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(name):
    forward, backward, _, _ = ACTIVATIONS[name]
    x = np.random.default_rng(2).standard_normal((4, 5)) * 2.5
    x = np.where(np.abs(np.abs(x) - 3) < 1e-3, x + 0.01, x)  # away from the kinks at +-3
    g = np.random.default_rng(3).standard_normal(x.shape)
    num = ref.numerical_grad(lambda v: float(np.sum(engine.to_numpy(forward(v)) * g)), x)
    assert_rel(backward(g, x), num, FD_TOL, "dx")


def test_backend_erf_is_within_a_few_ulps_of_math_erf():
    b = backends.get("numpy")
    x = np.concatenate([np.linspace(-7, 7, 40001), [1e-300, -1e-20, 0.4999999, 0.5, 5.999999, 6.0]])
    want = np.array([math.erf(v) for v in x])
    got = b.erf(x)
    assert got.dtype == np.float64
    assert np.max(np.abs(got - want)) <= 8 * np.finfo(np.float64).eps
    nonzero = want != 0
    assert np.max(np.abs(got[nonzero] - want[nonzero]) / np.abs(want[nonzero])) <= 4e-15
    special = b.erf(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0]))
    assert np.isnan(special[0]) and list(special[1:]) == [1.0, -1.0, 0.0, 0.0]
    assert np.signbit(special[4])
    got32 = b.erf(x.astype(np.float32))
    assert got32.dtype == np.float32 and np.max(np.abs(got32 - want)) <= 2e-7


def test_activations_on_every_backend(backend):
    x, g = _inputs("float64"), np.random.default_rng(4).standard_normal((3, 4, 5))
    for name, (forward, backward, _, reference) in ACTIVATIONS.items():
        assert_close(forward(backend.asarray(x)), reference(x), rtol=1e-12, backend=backend, err_msg=name)
        assert_close(backward(backend.asarray(g), backend.asarray(x)), engine.to_numpy(backward(g, x)),
                     rtol=1e-14, backend=backend, err_msg=name)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh', got 'erf'"):
        ops.gelu(np.zeros(2), "erf")
    with pytest.raises(TypeError, match="silu: input must be a floating-point array"):
        ops.silu(np.zeros(2, dtype=np.int64))


# --------------------------------------------------------------------------- channel dropout
@pytest.mark.filterwarnings("ignore:dropout2d. Received a:UserWarning")
@pytest.mark.parametrize("fn, shape, mask_shape", [
    (ops.dropout1d, (6, 5, 7), (6, 5, 1)), (ops.dropout1d, (5, 7), (5, 1)),
    (ops.dropout2d, (6, 5, 3, 4), (6, 5, 1, 1)), (ops.dropout2d, (6, 5, 7), (6, 5, 1)), (ops.dropout2d, (6, 5), (6, 5)),
    (ops.dropout3d, (2, 5, 2, 3, 2), (2, 5, 1, 1, 1)), (ops.dropout3d, (5, 2, 3, 2), (5, 1, 1, 1)),
])
def test_feature_dropout_drops_whole_channels_like_torch(fn, shape, mask_shape):
    """Our mask has one entry per channel of PyTorch's reading of each rank: PyTorch's
    output is constant over exactly those groups, and so is ours."""
    torch = torch_or_skip()
    lead = next((i for i, d in enumerate(mask_shape) if d == 1), len(mask_shape))
    x = np.random.default_rng(0).standard_normal(shape) + 5.0  # no zeros of its own
    y, mask = fn(x, 0.4, True, np.random.default_rng(1))
    assert tuple(mask.shape) == mask_shape
    assert set(np.unique(mask)) <= {0.0, 1 / 0.6} and 0 < np.count_nonzero(mask) < mask.size
    np.testing.assert_allclose(y, x * mask, rtol=0)
    torch.manual_seed(0)
    t_y = from_torch(getattr(torch.nn.functional, fn.__name__)(to_torch(np.ones(shape)), 0.4, True))
    groups = t_y.reshape(shape[:lead] + (-1,))
    np.testing.assert_array_equal(groups, np.broadcast_to(groups[..., :1], groups.shape))  # whole groups
    assert 0 < np.count_nonzero(groups[..., 0]) < groups[..., 0].size


def test_feature_dropout_statistics_and_reproducibility():
    x = np.ones((400, 50, 2, 2))
    y, mask = ops.dropout2d(x, 0.3, True, np.random.default_rng(5))
    kept = float(np.mean(mask > 0))
    assert abs(kept - 0.7) < 0.01  # 20,000 channels
    assert abs(float(np.mean(y)) - 1.0) < 0.02  # unbiased
    y2, _ = ops.dropout2d(x, 0.3, True, np.random.default_rng(5))
    np.testing.assert_array_equal(y, y2)
    assert ops.dropout2d(x, 0.3, False)[1] is None and ops.dropout2d(x, 0.0)[1] is None
    y1, m1 = ops.dropout2d(x[:2], 1.0, True)
    assert not np.any(y1) and tuple(m1.shape) == (2, 50, 1, 1)


@pytest.mark.parametrize("make, match", [
    (lambda: ops.dropout1d(np.zeros((2, 3, 4, 5))), "dropout1d: input must have 2 or 3 dimensions"),
    (lambda: ops.dropout2d(np.zeros(5)), r"dropout2d: input must have 2 or 3 or 4 dimensions, got shape \(5,\)"),
    (lambda: ops.dropout3d(np.zeros((2, 3, 4))), "dropout3d: input must have 4 or 5 dimensions"),
    (lambda: ops.dropout2d(np.zeros((2, 3, 4, 5)), p=1.5), r"dropout2d: p must be in \[0, 1\], got 1.5"),
    (lambda: ops.feature_dropout(np.zeros(3), 0.5), "feature_dropout: input must have a batch and a channel axis"),
])
def test_feature_dropout_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_feature_dropout_on_every_backend(backend):
    x = np.random.default_rng(0).standard_normal((4, 6, 3, 3))
    want, want_mask = ops.dropout2d(x, 0.5, True, np.random.default_rng(9))
    got, mask = ops.dropout2d(backend.asarray(x), 0.5, True, np.random.default_rng(9))
    if backend.name == "cupy":  # draws on the device: compare the structure only
        assert tuple(mask.shape) == (4, 6, 1, 1)
        return
    assert_close(mask, engine.to_numpy(want_mask), rtol=0, backend=backend)
    assert_close(got, engine.to_numpy(want), rtol=0, backend=backend)


def test_softmax_axis_is_checked_and_the_implicit_axis_is_torchs():
    torch = torch_or_skip()
    with pytest.raises(ValueError, match=r"softmax: axis must be an int in \[-2, 1\] .* got 2"):
        ops.softmax(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="log_softmax: axis must be an int"):
        ops.log_softmax(np.zeros((2, 3)), axis=None)
    for shape in [(4,), (2, 3), (2, 3, 4), (2, 3, 4, 5)]:
        x = np.random.default_rng(0).standard_normal(shape)
        with pytest.warns(UserWarning, match="Implicit dimension choice"):
            want = torch.nn.functional.softmax(to_torch(x))
        assert_rel(ops.softmax(x, axis=ops.implicit_softmax_axis(len(shape))), from_torch(want), 1e-12, str(shape))
