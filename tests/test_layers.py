"""Activations, linear, flatten, dropout, softmax/log_softmax: loop reference,
PyTorch CPU, finite differences, numerical stability, layers, backends."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import engine
from engine import backends, ops
from engine import nn

import reference as ref
from _helpers import FD_TOL, REF_TOL, TORCH_TOL, assert_rel, backward_through, from_torch, to_torch, torch_or_skip
from conftest import assert_close

# name -> (engine forward, engine backward taking (grad, x, y), reference, torch function)
ACTIVATIONS = {
    "relu": (ops.relu, lambda g, x, y: ops.relu_backward(g, y), ref.relu, "relu"),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.1), lambda g, x, y: ops.leaky_relu_backward(g, x, 0.1),
                   lambda x: ref.leaky_relu(x, 0.1), "leaky_relu"),
    "sigmoid": (ops.sigmoid, lambda g, x, y: ops.sigmoid_backward(g, y), ref.sigmoid, "sigmoid"),
    "tanh": (ops.tanh, lambda g, x, y: ops.tanh_backward(g, y), ref.tanh, "tanh"),
    "softmax": (ops.softmax, lambda g, x, y: ops.softmax_backward(g, y), lambda x: ref.softmax(x, 1), "softmax"),
    "log_softmax": (ops.log_softmax, lambda g, x, y: ops.log_softmax_backward(g, y),
                    lambda x: ref.log_softmax(x, 1), "log_softmax"),
}
LAYERS = {
    "relu": lambda: nn.ReLU(), "leaky_relu": lambda: nn.LeakyReLU(0.1), "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(), "softmax": lambda: nn.Softmax(dim=1), "log_softmax": lambda: nn.LogSoftmax(dim=1),
}


def _torch_fn(torch, name):
    tf = torch.nn.functional
    return {"relu": tf.relu, "leaky_relu": lambda t: tf.leaky_relu(t, 0.1), "sigmoid": torch.sigmoid,
            "tanh": torch.tanh, "softmax": lambda t: tf.softmax(t, dim=1),
            "log_softmax": lambda t: tf.log_softmax(t, dim=1)}[name]


def _x(shape=(3, 5, 2, 3), dtype="float64", seed=0, zeros=False):
    x = np.random.default_rng(seed).standard_normal(shape) * 2
    if zeros:
        x.reshape(-1)[::7] = 0.0  # exact kinks of relu / leaky_relu
    return x.astype(dtype)


# --------------------------------------------------------------------------- element-wise and softmax
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_matches_loop_reference(name):
    fwd, _, reference, _ = ACTIVATIONS[name]
    x = _x(zeros=True)
    assert_close(fwd(x), reference(x), rtol=REF_TOL["float64"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_matches_torch(name, dtype):
    torch = torch_or_skip()
    fwd, bwd, _, _ = ACTIVATIONS[name]
    x = _x(dtype=dtype, zeros=True)
    gy = _x(dtype=dtype, seed=1)
    tx = to_torch(x, requires_grad=True)
    ty = _torch_fn(torch, name)(tx)
    ty.backward(to_torch(gy))
    y = fwd(x)
    assert engine.to_numpy(y).dtype == np.dtype(dtype)
    assert_rel(y, from_torch(ty), TORCH_TOL[dtype], "y")
    assert_rel(bwd(gy, x, y), from_torch(tx.grad), TORCH_TOL[dtype], "dx")


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(name):
    fwd, bwd, _, _ = ACTIVATIONS[name]
    x = _x((2, 4, 2, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks
    gy = _x((2, 4, 2, 2), seed=1)
    num = ref.numerical_grad(lambda v: np.sum(engine.to_numpy(fwd(v)) * gy), x)
    assert_rel(bwd(gy, x, fwd(x)), num, FD_TOL, name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_activation_layers_match_torch(name, dtype):
    torch = torch_or_skip()
    layer = LAYERS[name]()
    x = _x((4, 6), dtype, zeros=True)
    gy = _x((4, 6), dtype, seed=1)
    tx = to_torch(x, requires_grad=True)
    ty = _torch_fn(torch, name)(tx)
    ty.backward(to_torch(gy))
    assert_rel(layer(x), from_torch(ty), TORCH_TOL[dtype], "y")
    assert_rel(backward_through(layer, x, gy), from_torch(tx.grad), TORCH_TOL[dtype], "dx")
    assert layer.parameters() == []


@pytest.mark.parametrize("dim", [0, 1, -1, 3])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_along_any_axis(dim, log):
    torch = torch_or_skip()
    x = _x((2, 3, 4, 5))
    gy = _x((2, 3, 4, 5), seed=1)
    layer = nn.LogSoftmax(dim=dim) if log else nn.Softmax(dim=dim)
    tx = to_torch(x, requires_grad=True)
    ty = (torch.log_softmax if log else torch.softmax)(tx, dim=dim)
    ty.backward(to_torch(gy))
    assert_rel(layer(x), from_torch(ty), 1e-12, "y")
    assert_rel(backward_through(layer, x, gy), from_torch(tx.grad), 1e-12, "dx")
    assert_rel(layer(x), (ref.log_softmax if log else ref.softmax)(x, dim), 1e-12, "reference")


# --------------------------------------------------------------------------- numerical stability
BIG = np.array([[1000.0, -1000.0, 0.0, 999.0],
                [-1000.0, -1000.0, -1000.0, -1000.0],
                [1000.0, 1000.0, 1000.0, 1000.0],
                [-1000.0, 1000.0, 5.0, -5.0]])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_and_log_softmax_stable_at_plus_minus_1000(dtype):
    torch = torch_or_skip()
    x = BIG.astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = engine.to_numpy(ops.softmax(x))
        lp = engine.to_numpy(ops.log_softmax(x))
        dp = engine.to_numpy(ops.softmax_backward(np.ones_like(x), ops.softmax(x)))
        dlp = engine.to_numpy(ops.log_softmax_backward(np.ones_like(x), ops.log_softmax(x)))
    for a in (p, lp, dp, dlp):
        assert np.all(np.isfinite(a))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p, from_torch(torch.softmax(to_torch(x), 1)), rtol=1e-6, atol=0)
    np.testing.assert_allclose(lp, from_torch(torch.log_softmax(to_torch(x), 1)), rtol=1e-6, atol=0)
    assert lp[0, 1] == pytest.approx(-2000.0 - np.log1p(np.exp(-1.0)), rel=1e-6)  # not -inf
    assert lp[1, 0] == pytest.approx(-np.log(4.0), rel=1e-6)
    np.testing.assert_allclose(lp, ref.log_softmax(BIG, 1), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_stable_at_plus_minus_1000(dtype):
    torch = torch_or_skip()
    x = np.array([-1000.0, -750.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 750.0, 1000.0]).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        y = engine.to_numpy(ops.sigmoid(x))
        dy = engine.to_numpy(ops.sigmoid_backward(np.ones_like(x), ops.sigmoid(x)))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dy))
    assert y[0] == 0.0 and y[-1] == 1.0 and y[5] == 0.5
    assert np.all(np.diff(y) >= 0)
    # element-wise relative accuracy, also for the tiny values of the negative tail
    # (atol: PyTorch flushes float32 subnormals such as sigmoid(-100) = 3.8e-44 to zero)
    rtol, atol = (1e-6, 1e-37) if dtype == "float32" else (1e-14, 0.0)
    np.testing.assert_allclose(y, from_torch(torch.sigmoid(to_torch(x))), rtol=rtol, atol=atol)
    np.testing.assert_allclose(y, ref.sigmoid(x.astype(np.float64)).astype(dtype), rtol=rtol, atol=atol)


def test_tanh_saturates_at_plus_minus_1000():
    y = engine.to_numpy(ops.tanh(np.array([-1000.0, 1000.0])))
    np.testing.assert_array_equal(y, [-1.0, 1.0])
    np.testing.assert_array_equal(engine.to_numpy(ops.tanh_backward(np.ones(2), y)), [0.0, 0.0])


# --------------------------------------------------------------------------- linear
LINEAR_CASES = {"basic": (3, 5, 4), "batch1": (1, 7, 2), "one_feature": (4, 1, 3), "one_output": (2, 6, 1)}


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_linear_matches_reference_and_finite_differences(case):
    n, f_in, f_out = LINEAR_CASES[case]
    r = np.random.default_rng(0)
    x, w, b, gy = r.standard_normal((n, f_in)), r.standard_normal((f_out, f_in)), r.standard_normal(f_out), \
        r.standard_normal((n, f_out))
    assert_close(ops.linear(x, w, b), ref.linear(x, w, b), rtol=REF_TOL["float64"])
    assert_close(ops.linear(x, w), ref.linear(x, w), rtol=REF_TOL["float64"])
    dx, dw, db = ops.linear_backward(gy, x, w)
    for got, want in zip((dx, dw, db), ref.linear_backward(gy, x, w)):
        assert_close(got, want, rtol=REF_TOL["float64"])
    loss = lambda x_, w_, b_: np.sum(engine.to_numpy(ops.linear(x_, w_, b_)) * gy)  # noqa: E731
    assert_rel(dx, ref.numerical_grad(lambda v: loss(v, w, b), x), FD_TOL, "dx")
    assert_rel(dw, ref.numerical_grad(lambda v: loss(x, v, b), w), FD_TOL, "dw")
    assert_rel(db, ref.numerical_grad(lambda v: loss(x, w, v), b), FD_TOL, "db")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_linear_layer_matches_torch(dtype, bias):
    torch = torch_or_skip()
    torch.manual_seed(0)
    tl = torch.nn.Linear(6, 3, bias=bias).to(getattr(torch, dtype))
    layer = nn.Linear(6, 3, bias=bias, dtype=dtype)
    assert list(layer.state_dict()) == list(tl.state_dict())
    layer.load_state_dict(tl.state_dict())
    x = np.random.default_rng(1).standard_normal((6, 5)).astype(dtype).T  # non-contiguous (5, 6)
    gy = np.random.default_rng(2).standard_normal((5, 3)).astype(dtype)
    tx = to_torch(x, requires_grad=True)
    ty = tl(tx)
    ty.backward(to_torch(gy))
    tol = TORCH_TOL[dtype]
    assert_rel(layer(x), from_torch(ty), tol, "y")
    assert_rel(backward_through(layer, x, gy), from_torch(tx.grad), tol, "dx")
    assert_rel(layer.weight.grad, from_torch(tl.weight.grad), tol, "weight.grad")
    if bias:
        assert_rel(layer.bias.grad, from_torch(tl.bias.grad), tol, "bias.grad")
    else:
        assert layer.bias is None
    layer(x).backward(engine.asarray(gy))  # data input: no dx, the weight gradient accumulates
    assert_rel(layer.weight.grad, 2 * from_torch(tl.weight.grad), tol, "accumulated weight.grad")


def test_functional_linear_on_extra_leading_dims_matches_torch():
    torch = torch_or_skip()
    r = np.random.default_rng(0)
    x, w, b = r.standard_normal((2, 3, 5)), r.standard_normal((4, 5)), r.standard_normal(4)
    ty = torch.nn.functional.linear(to_torch(x), to_torch(w), to_torch(b))
    assert_rel(ops.linear(x, w, b), from_torch(ty), 1e-12, "y")


def test_linear_init_shapes_and_scale():
    engine.manual_seed(0)
    layer = nn.Linear(400, 300)
    assert layer.weight.shape == (300, 400) and layer.bias.shape == (300,)
    w, b = engine.to_numpy(layer.weight.data), engine.to_numpy(layer.bias.data)
    bound = 1 / np.sqrt(400)  # PyTorch's default: uniform in +-1/sqrt(fan_in), weights and biases
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.02 and abs(w.mean()) < 0.01
    assert np.abs(b).max() <= bound and b.std() > 0
    engine.manual_seed(0)
    np.testing.assert_array_equal(engine.to_numpy(nn.Linear(400, 300).weight.data), w)
    kaiming = engine.to_numpy(nn.Linear(400, 300, init="kaiming_normal").weight.data)
    assert abs(kaiming.std() / np.sqrt(2 / 400) - 1) < 0.02  # another scheme on request


# --------------------------------------------------------------------------- flatten
@pytest.mark.parametrize("start,end", [(1, -1), (0, -1), (2, -1), (1, 2), (2, 3), (-2, -1)])
def test_flatten_matches_torch(start, end):
    torch = torch_or_skip()
    x = _x((2, 3, 4, 5))
    layer = nn.Flatten(start, end)
    y = layer(x)
    ty = torch.flatten(to_torch(x), start, end)
    assert tuple(y.shape) == tuple(ty.shape)
    assert_close(y, from_torch(ty), rtol=0)
    gy = _x(tuple(ty.shape), seed=1)
    dx = backward_through(layer, x, gy)
    assert tuple(dx.shape) == x.shape
    assert_close(dx, gy.reshape(x.shape), rtol=0)


def test_flatten_of_a_non_contiguous_view_keeps_values():
    x = _x((2, 5, 4, 3)).transpose(0, 3, 2, 1)  # (2, 3, 4, 5), not contiguous
    y = engine.to_numpy(nn.Flatten()(x))
    np.testing.assert_array_equal(y, np.ascontiguousarray(x).reshape(2, -1))


# --------------------------------------------------------------------------- dropout
def test_dropout_eval_mode_is_identity():
    layer = nn.Dropout(0.5).eval()
    x = _x((4, 5))
    np.testing.assert_array_equal(engine.to_numpy(layer(x)), x)
    gy = _x((4, 5), seed=1)
    np.testing.assert_array_equal(engine.to_numpy(backward_through(layer, x, gy)), gy)
    y, mask = ops.dropout(x, 0.5, training=False)
    assert mask is None and y is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_train_drops_fraction_p_and_scales_the_rest(p):
    engine.manual_seed(123)
    layer = nn.Dropout(p)
    x = np.random.default_rng(0).uniform(1.0, 2.0, (200, 500))  # never 0
    x_t = engine.tensor(x, requires_grad=True)
    y_t = layer(x_t)
    y = engine.to_numpy(y_t.detach())
    dropped = y == 0
    n = dropped.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)  # five standard deviations
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), rtol=1e-15)
    assert abs(y.mean() / x.mean() - 1) < 0.02  # the expectation is preserved
    gy = np.random.default_rng(1).standard_normal(x.shape)
    y_t.backward(gy)
    dx = engine.to_numpy(x_t.grad)
    np.testing.assert_array_equal(dx[dropped], 0.0)
    np.testing.assert_allclose(dx[~dropped], gy[~dropped] / (1 - p), rtol=1e-15)


def test_dropout_is_seeded_by_manual_seed():
    x = np.ones((50, 40))
    engine.manual_seed(7)
    a = engine.to_numpy(nn.Dropout(0.5)(x))
    b = engine.to_numpy(nn.Dropout(0.5)(x))
    engine.manual_seed(7)
    a2 = engine.to_numpy(nn.Dropout(0.5)(x))
    engine.manual_seed(8)
    c = engine.to_numpy(nn.Dropout(0.5)(x))
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)  # consecutive draws differ
    assert not np.array_equal(a, c)  # another seed differs


def test_dropout_with_explicit_generator_and_rng_state():
    x = np.ones((30, 30))
    y1, m1 = ops.dropout(x, 0.3, rng=np.random.default_rng(5))
    y2, m2 = ops.dropout(x, 0.3, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(engine.to_numpy(y1), engine.to_numpy(y2))
    np.testing.assert_array_equal(engine.to_numpy(m1), engine.to_numpy(y1))  # x is ones: y == mask
    state = engine.get_rng_state()
    a = engine.to_numpy(ops.dropout(x, 0.3)[0])
    engine.set_rng_state(state)
    np.testing.assert_array_equal(engine.to_numpy(ops.dropout(x, 0.3)[0]), a)


def test_dropout_p0_and_p1():
    x = _x((3, 4))
    y, mask = ops.dropout(x, 0.0)
    np.testing.assert_array_equal(engine.to_numpy(y), x)
    y, mask = ops.dropout(x, 1.0)
    np.testing.assert_array_equal(engine.to_numpy(y), 0.0)
    layer = nn.Dropout(1.0)
    np.testing.assert_array_equal(engine.to_numpy(backward_through(layer, x, np.ones((3, 4)))), 0.0)
    assert engine.to_numpy(y).dtype == x.dtype


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\]"):
        nn.Dropout(p)
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\]"):
        ops.dropout(np.ones(3), p)


def test_dropout_same_mask_on_every_backend(backend):
    """Host backends draw from the engine's host generator: the mask is NumPy's,
    bit for bit. A device backend draws on the device with its own generator
    (by design), so there the promise is: the same seed gives the same mask,
    another seed another one, and the mask has dropout's statistics."""
    p = 0.4
    x = np.ones((200, 300), dtype=np.float32)
    engine.manual_seed(11)
    y, mask = ops.dropout(backend.asarray(x), p)
    if backend.host_memory:
        engine.manual_seed(11)
        want = engine.to_numpy(ops.dropout(engine.asarray(x, backend="numpy"), p)[0])
        assert_close(y, want, rtol=0, backend=backend)
        return
    got, m = engine.to_numpy(y), engine.to_numpy(mask)
    assert backends.backend_of(y) is backend and got.dtype == np.float32
    engine.manual_seed(11)
    again = engine.to_numpy(ops.dropout(backend.asarray(x), p)[0])
    np.testing.assert_array_equal(again, got)  # same seed, same mask
    engine.manual_seed(12)
    assert not np.array_equal(engine.to_numpy(ops.dropout(backend.asarray(x), p)[0]), got)
    scale = np.float32(1.0 / (1.0 - p))
    assert set(np.unique(m).tolist()) <= {0.0, float(scale)}  # dropped, or kept and scaled
    np.testing.assert_array_equal(got, x * m)
    kept = float(np.mean(m != 0))  # 60000 draws: the standard deviation is 0.002
    assert abs(kept - (1 - p)) < 0.01, f"kept {kept:.4f} of the elements, expected {1 - p}"
    rows = np.mean(m != 0, axis=1)  # no structure: every row keeps about 1 - p
    assert rows.min() > 0.4 and rows.max() < 0.8


def test_sequential_train_eval_toggles_dropout():
    model = nn.Sequential(nn.Dropout(0.9), nn.ReLU())
    x = np.ones((10, 10))
    model.eval()
    assert not model[0].training
    np.testing.assert_array_equal(engine.to_numpy(model(x)), x)
    model.train()
    assert model[0].training and model[1].training
    engine.manual_seed(0)
    assert (engine.to_numpy(model(x)) == 0).mean() > 0.5


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activations_on_every_backend(backend, name):
    fwd, bwd, reference, _ = ACTIVATIONS[name]
    x = _x((2, 3, 2, 2), zeros=True)
    gy = _x((2, 3, 2, 2), seed=1)
    y = fwd(backend.asarray(x))
    assert_close(y, reference(x), rtol=1e-12, backend=backend)
    dx = bwd(backend.asarray(gy), backend.asarray(x), y)
    assert_close(dx, bwd(gy, x, fwd(x)), rtol=1e-14, backend=backend)


def test_linear_and_flatten_on_every_backend(backend):
    r = np.random.default_rng(0)
    x, w, b, gy = r.standard_normal((3, 2, 2, 2)), r.standard_normal((4, 8)), r.standard_normal(4), \
        r.standard_normal((3, 4))
    flat = nn.Flatten()
    xf = flat(backend.asarray(x)).data
    y = ops.linear(xf, backend.asarray(w), backend.asarray(b))
    assert_close(y, ref.linear(x.reshape(3, 8), w, b), rtol=1e-12, backend=backend)
    dx, dw, db = ops.linear_backward(backend.asarray(gy), xf, backend.asarray(w))
    rdx, rdw, rdb = ref.linear_backward(gy, x.reshape(3, 8), w)
    x_t = engine.Tensor(backend.asarray(x), requires_grad=True)
    flat(x_t).backward(dx)
    assert_close(x_t.grad, rdx.reshape(x.shape), rtol=1e-12, backend=backend)
    assert_close(dw, rdw, rtol=1e-12, backend=backend)
    assert_close(db, rdb, rtol=1e-12, backend=backend)


def test_stability_on_every_backend(backend):
    x = backend.asarray(BIG)
    for a in (ops.softmax(x), ops.log_softmax(x), ops.sigmoid(x)):
        assert np.all(np.isfinite(engine.to_numpy(a)))
    assert_close(ops.log_softmax(x), ref.log_softmax(BIG, 1), rtol=1e-12, backend=backend)
