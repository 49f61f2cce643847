"""A small CNN and its PyTorch twin with the same weights: same loss, same
gradients, same parameters after 5 Adam steps; same state_dict keys."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import nn, optim

from _helpers import assert_rel, from_torch

torch = pytest.importorskip("torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of the "
                                            "model parity tests")

N_CLASSES = 5


def _torch_cnn(dtype):
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(3, 6, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 8, (3, 2), stride=1, padding=(1, 0)), tnn.ReLU(), tnn.MaxPool2d(2, ceil_mode=True),
        tnn.Flatten(), tnn.Linear(8 * 3 * 2, N_CLASSES),
    ).to(getattr(torch, dtype))


def _engine_cnn(dtype, method="gemm"):
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, method=method, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, (3, 2), stride=1, padding=(1, 0), method=method, dtype=dtype), nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(8 * 3 * 2, N_CLASSES, dtype=dtype),
    )


def _twins(dtype, method="gemm", seed=0):
    torch.manual_seed(seed)
    theirs = _torch_cnn(dtype)
    ours = _engine_cnn(dtype, method)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def _batch(dtype, n=4, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 3, 12, 11)).astype(dtype), r.integers(0, N_CLASSES, n)


TOL = {"float64": 1e-10, "float32": 1e-5}


def test_state_dict_keys_and_shapes_equal_torch():
    ours, theirs = _twins("float32")
    tsd = theirs.state_dict()
    assert list(ours.state_dict()) == list(tsd) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight",
                                                    "7.bias"]
    for k, v in ours.state_dict().items():
        assert tuple(v.shape) == tuple(tsd[k].shape), k
        np.testing.assert_array_equal(engine.to_numpy(v), tsd[k].numpy())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())


def test_torch_tensors_load_directly():
    torch.manual_seed(1)
    theirs = _torch_cnn("float64")
    ours = _engine_cnn("float64")
    ours.load_state_dict(theirs.state_dict())  # tensors, no .numpy()
    for k, v in ours.state_dict().items():
        assert isinstance(v, np.ndarray) and v.dtype == np.float64
        np.testing.assert_array_equal(v, theirs.state_dict()[k].numpy())


def test_engine_weights_load_into_torch():
    engine.manual_seed(0)
    ours = _engine_cnn("float64")
    theirs = _torch_cnn("float64")
    theirs.load_state_dict({k: torch.from_numpy(np.array(engine.to_numpy(v))) for k, v in ours.state_dict().items()})
    x, _ = _batch("float64")
    assert_rel(ours(x), from_torch(theirs(torch.from_numpy(x))), 1e-12, "logits")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["gemm", "strided", "naive"])
def test_loss_and_gradients_equal_torch(method, dtype):
    ours, theirs = _twins(dtype, method)
    x, y = _batch(dtype)
    tx = torch.from_numpy(x).requires_grad_(True)
    t_loss = torch.nn.functional.cross_entropy(theirs(tx), torch.from_numpy(y))
    t_loss.backward()
    crit = nn.CrossEntropyLoss()
    x_t = engine.tensor(x, requires_grad=True)
    loss = crit(ours(x_t), y)
    loss.backward()
    dx = x_t.grad
    tol = TOL[dtype]
    assert_rel(loss, from_torch(t_loss), tol, "loss")
    assert_rel(dx, from_torch(tx.grad), tol, "input gradient")
    for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == tname
        assert engine.to_numpy(p.grad).dtype == np.dtype(dtype)
        assert_rel(p.grad, from_torch(tp.grad), tol, f"{name}.grad")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", ["adam", "sgd_momentum"])
def test_parameters_after_5_steps_equal_torch(opt, dtype):
    ours, theirs = _twins(dtype)
    if opt == "adam":
        o, to = optim.Adam(ours.parameters(), lr=1e-2), torch.optim.Adam(theirs.parameters(), lr=1e-2)
    else:
        o = optim.SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        to = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    crit = nn.CrossEntropyLoss()
    losses, t_losses = [], []
    for step in range(5):
        x, y = _batch(dtype, seed=step)
        o.zero_grad()
        loss = crit(ours(x), y)
        loss.backward()
        losses.append(float(loss))
        o.step()
        to.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        t_loss.backward()
        to.step()
        t_losses.append(float(t_loss.detach()))
    tol = TOL[dtype]
    np.testing.assert_allclose(losses, t_losses, rtol=tol)
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        assert_rel(p.data, from_torch(tp), tol, name)
    first = dict(theirs.named_parameters())["0.weight"]
    assert not np.allclose(from_torch(first), _twins(dtype)[1][0].weight.detach().numpy())  # it trained


def test_eval_mode_outputs_equal_torch():
    ours, theirs = _twins("float64")
    ours.eval()
    theirs.eval()
    x, _ = _batch("float64", n=1)
    assert_rel(ours(x), from_torch(theirs(torch.from_numpy(x))), 1e-12, "logits")
