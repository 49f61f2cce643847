"""Backend selection API, array conversion, mixing errors, and a whole
forward + backward + optimizer step of a small CNN on every backend equal to NumPy's."""
from __future__ import annotations

import numpy as np
import pytest

from engine import backends
import engine
from engine import ops
from engine import nn, optim

from conftest import assert_close


# --------------------------------------------------------------------------- selection
def test_default_backend_is_numpy_and_always_available():
    assert engine.get_backend() == "numpy"
    assert "numpy" in engine.available_backends()
    assert set(engine.available_backends()) <= set(backends.NAMES)
    assert set(backends.NAMES) == {"numpy", "array_api_strict", "cupy"}


def test_array_api_strict_is_available_in_ci():
    pytest.importorskip("array_api_strict", reason="array-api-strict is part of the test extras")
    assert "array_api_strict" in engine.available_backends()


def test_set_and_get_backend():
    try:
        engine.set_backend("array_api_strict")
        assert engine.get_backend() == "array_api_strict"
        assert backends.backend_of(engine.asarray([1.0])) is backends.get("array_api_strict")
        engine.set_backend("numpy")
        assert engine.get_backend() == "numpy"
        assert isinstance(engine.asarray([1.0]), np.ndarray)
    finally:
        engine.set_backend("numpy")


def test_use_backend_restores_the_previous_one_even_on_error():
    with engine.use_backend("array_api_strict") as b:
        assert b is backends.get("array_api_strict")
        assert engine.get_backend() == "array_api_strict"
        with engine.use_backend("numpy"):
            assert engine.get_backend() == "numpy"
        assert engine.get_backend() == "array_api_strict"
    assert engine.get_backend() == "numpy"
    with pytest.raises(ZeroDivisionError), engine.use_backend("array_api_strict"):
        raise ZeroDivisionError
    assert engine.get_backend() == "numpy"


@pytest.mark.parametrize("call", [
    lambda: engine.set_backend("torch"),
    lambda: engine.use_backend("torch").__enter__(),
    lambda: engine.asarray([1.0], backend="torch"),
    lambda: nn.Linear(2, 2).to("torch"),
])
def test_unknown_backend_is_a_value_error_listing_the_known_ones(call):
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert "unknown backend 'torch'" in msg
    for name in ("numpy", "cupy", "array_api_strict"):
        assert name in msg
    assert "usable here: numpy" in msg
    assert engine.get_backend() == "numpy"


def test_unavailable_backend_says_why_and_how_to_install():
    reason = backends.unavailable_reason("cupy")
    if reason is None:
        pytest.skip("CuPy is usable here: nothing unavailable to test")
    assert "cupy" not in engine.available_backends()
    with pytest.raises(RuntimeError) as info:
        engine.set_backend("cupy")
    assert isinstance(info.value, backends.BackendUnavailableError)
    assert "pip install" in str(info.value) and "cupy" in str(info.value).lower()
    assert engine.get_backend() == "numpy"


# --------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32"])
def test_asarray_to_numpy_round_trip(backend, dtype):
    host = (np.arange(24).reshape(2, 3, 4) * 1.5 - 7).astype(dtype)
    for spec in (dtype, np.dtype(dtype), getattr(np, dtype), backend.dtype(dtype)):
        a = engine.asarray(host, dtype=spec)
        assert backends.backend_of(a) is backend
        back = engine.to_numpy(a)
        assert isinstance(back, np.ndarray)
        assert back.dtype == np.dtype(dtype) and back.shape == host.shape
        np.testing.assert_array_equal(back, host)
    # nested lists, casting on the way in
    a = engine.asarray([[1, 2], [3, 4]], dtype="float64")
    np.testing.assert_array_equal(engine.to_numpy(a), np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert engine.to_numpy(a).dtype == np.float64


def test_asarray_between_backends():
    host = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    strict = engine.asarray(host, backend="array_api_strict")
    assert backends.backend_of(strict).name == "array_api_strict"
    again = engine.asarray(strict, backend="numpy")
    assert isinstance(again, np.ndarray) and again.dtype == np.float32
    np.testing.assert_array_equal(again, host)
    cast = engine.asarray(strict, dtype="float64", backend="array_api_strict")
    assert engine.to_numpy(cast).dtype == np.float64
    np.testing.assert_array_equal(engine.to_numpy(cast), host.astype(np.float64))


def test_strict_arrays_are_copies_not_views():
    host = np.ones(4)
    a = engine.asarray(host, backend="array_api_strict")
    back = engine.to_numpy(a)
    back[:] = 5.0
    np.testing.assert_array_equal(engine.to_numpy(a), 1.0)


def test_to_numpy_of_a_numpy_array_is_itself():
    a = np.arange(3.0)
    assert engine.to_numpy(a) is a


# --------------------------------------------------------------------------- mixing backends
def _strict(a):
    return engine.asarray(a, backend="array_api_strict")


@pytest.mark.parametrize("call, where", [
    (lambda: ops.conv2d(np.zeros((1, 1, 4, 4)), _strict(np.zeros((1, 1, 3, 3)))), "conv2d"),
    (lambda: ops.conv2d(_strict(np.zeros((1, 1, 4, 4))), np.zeros((1, 1, 3, 3))), "conv2d"),
    (lambda: ops.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), _strict(np.zeros(1))), "conv2d"),
    (lambda: ops.linear(np.zeros((2, 3)), _strict(np.zeros((4, 3)))), "linear"),
    (lambda: ops.cross_entropy(_strict(np.zeros((2, 3))), np.array([0, 1])), "cross_entropy"),
    (lambda: ops.mse_loss(np.zeros(3), _strict(np.zeros(3))), "mse_loss"),
    (lambda: ops.relu_backward(np.zeros(3), _strict(np.zeros(3))), "relu backward"),
    (lambda: ops.max_pool2d_backward(np.zeros((1, 1, 1, 1)), _strict(np.zeros((1, 1, 1, 1), dtype=np.int64)),
                                   (1, 1, 2, 2), 2), "max_pool2d backward"),
])
def test_mixing_backends_is_a_type_error_naming_both(call, where):
    with pytest.raises(TypeError) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(where), msg
    assert "two backends" in msg and "'numpy'" in msg and "'array_api_strict'" in msg
    assert "model.to(" in msg or "engine.asarray" in msg


def test_model_on_one_backend_and_data_on_another():
    with engine.use_backend("array_api_strict"):
        model = nn.Sequential(nn.Conv2d(1, 2, 3, dtype="float64"), nn.ReLU())
    with pytest.raises(TypeError) as info:
        model(np.zeros((1, 1, 5, 5)))
    msg = str(info.value)
    assert msg.startswith("Conv2d(1, 2") and "'numpy'" in msg and "'array_api_strict'" in msg


def test_optimizer_step_with_mixed_parameter_and_gradient():
    p = nn.Parameter(_strict(np.zeros(3)))
    p.grad = np.ones(3)
    with pytest.raises(TypeError, match=r"SGD.step: arrays from two backends.*'array_api_strict'.*'numpy'"):
        optim.SGD([p], lr=0.1).step()


# --------------------------------------------------------------------------- a whole training step
def _cnn(dtype):
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=dtype),            # gemm
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, (3, 2), stride=(1, 2), padding=(1, 0), groups=2, method="naive", dtype=dtype),
        nn.ReLU(),
        nn.AvgPool2d(2, ceil_mode=True, padding=1, count_include_pad=False),
        nn.Flatten(),
        nn.Linear(4 * 3 * 2, 5, dtype=dtype),
    )


def _train_step(model, x, y, opt_name):
    crit = nn.CrossEntropyLoss(label_smoothing=0.05)
    opt = (optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3) if opt_name == "adam"
           else optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True))
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        losses.append(loss.data)
        grads = [p.grad for p in model.parameters()]
        opt.step()
    return losses, grads, [p.data for p in model.parameters()]


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_small_cnn_training_step_equals_numpy(backend, dtype, opt_name):
    engine.manual_seed(0)
    with engine.use_backend("numpy"):
        reference = _cnn(dtype)
    state = {k: engine.to_numpy(v) for k, v in reference.state_dict().items()}
    model = _cnn(dtype)  # built on the active backend (the fixture's)
    assert all(backends.backend_of(p.data) is backend for p in model.parameters())
    model.load_state_dict(state)
    r = np.random.default_rng(0)
    x = r.standard_normal((3, 2, 8, 9)).astype(dtype)
    y = np.array([0, 4, 2])
    with engine.use_backend("numpy"):
        ref_model = _cnn(dtype)
    ref_model.load_state_dict(state)
    want_losses, want_grads, want_params = _train_step(ref_model, x, y, opt_name)
    got_losses, got_grads, got_params = _train_step(model, backend.asarray(x), backend.asarray(y), opt_name)
    tol = 1e-12 if dtype == "float64" else 2e-5
    for got, want in zip(got_losses, want_losses):
        assert_close(got, engine.to_numpy(want), rtol=tol, backend=backend, err_msg="loss")
    assert float(engine.to_numpy(want_losses[1])) != float(engine.to_numpy(want_losses[0]))
    for i, (got, want) in enumerate(zip(got_grads, want_grads)):
        assert_close(got, engine.to_numpy(want), rtol=tol, backend=backend, err_msg=f"grad {i}")
    for i, (got, want) in enumerate(zip(got_params, want_params)):
        assert_close(got, engine.to_numpy(want), rtol=tol, backend=backend, err_msg=f"param {i}")


def test_same_seed_gives_the_same_initial_weights_on_every_backend(backend):
    engine.manual_seed(3)
    model = _cnn("float32")
    engine.manual_seed(3)
    with engine.use_backend("numpy"):
        ref_model = _cnn("float32")
    for (k, a), (k2, b) in zip(model.state_dict().items(), ref_model.state_dict().items()):
        assert k == k2
        assert_close(a, engine.to_numpy(b), rtol=0, backend=backend, err_msg=k)


def test_model_to_moves_parameters_between_backends():
    engine.manual_seed(0)
    model = _cnn("float64")
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 9))
    want = engine.to_numpy(model(x))
    model.to("array_api_strict")
    assert all(backends.backend_of(p.data).name == "array_api_strict" for p in model.parameters())
    assert_close(model(_strict(x)), want, rtol=1e-13, backend=backends.get("array_api_strict"))
    model.to("numpy")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    assert_close(model(x), want, rtol=0)
    model.to("float32")
    assert all(p.dtype == np.float32 for p in model.parameters())
