"""Checkpoints: one .npz, atomic writes, no pickles, exact resume, cross-backend loads."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from engine import backends
import engine
from engine import nn, optim
from engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from engine.data import DataLoader, load_dataset
from engine.schedulers import StepLR
from engine.training import History, fit


def small_model():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                         nn.Linear(6 * 7 * 7, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 10))


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k", "train").subset(slice(0, 192))


def weights(model):
    return {k: engine.to_numpy(v).copy() for k, v in model.state_dict().items()}


def trained(data, epochs=1, opt_cls=optim.Adam, **opt_kwargs):
    model = small_model()
    opt = opt_cls(model.parameters(), **opt_kwargs)
    fit(model, nn.CrossEntropyLoss(), opt, DataLoader(data, 32, shuffle=True), epochs=epochs, progress=False)
    return model, opt


def test_round_trip_model_optimizer_epoch_rng(tmp_path, data):
    engine.manual_seed(0)
    model, opt = trained(data)
    sched = StepLR(opt, 2, 0.5)
    h = History({"epoch": [1], "loss": [0.5]})
    path = tmp_path / "ck.npz"
    rng_before = engine.get_rng_state()
    save_checkpoint(path, model, opt, epoch=1, extra={"model": "small", "lr": 1e-3, "arr": np.arange(3)},
                    scheduler=sched, history=h)
    draws = engine._state.host_rng().random(3)

    engine.manual_seed(123)
    model2 = small_model()
    opt2 = optim.Adam(model2.parameters())
    sched2 = StepLR(opt2, 5, 0.1)
    ck = load_checkpoint(path, model2, opt2, scheduler=sched2)
    for k, v in weights(model).items():
        np.testing.assert_array_equal(weights(model2)[k], v)
    assert engine.get_rng_state() == rng_before
    np.testing.assert_array_equal(engine._state.host_rng().random(3), draws)
    assert ck.epoch == 1 and ck.backend == "numpy" and ck.optimizer_class == "Adam"
    assert ck.extra["model"] == "small" and ck.extra["lr"] == 1e-3
    np.testing.assert_array_equal(ck.extra["arr"], np.arange(3))
    assert ck.history.loss == [0.5]
    assert sched2.step_size == 2 and sched2.gamma == 0.5
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert isinstance(s2["param_groups"][0]["betas"], tuple)
    for i in s1["state"]:
        assert s2["state"][i]["step"] == s1["state"][i]["step"] and isinstance(s2["state"][i]["step"], int)
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(s2["state"][i][name], s1["state"][i][name])
            assert s2["state"][i][name].dtype == np.float32


def test_file_is_a_plain_npz_without_pickles(tmp_path, data):
    engine.manual_seed(0)
    model, opt = trained(data, opt_cls=optim.SGD, lr=0.1, momentum=0.9)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt, epoch=3)
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        assert str(z["format"]) == FORMAT
        assert {"model/0.weight", "model/7.bias", "epoch", "rng_state", "backend", "optimizer/class",
                "optimizer/param_groups", "optimizer/state/0/momentum_buffer"} <= keys
        for k in z.files:
            assert z[k].dtype != object
        assert int(z["epoch"]) == 3
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary file left behind


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, data, monkeypatch):
    engine.manual_seed(0)
    model = small_model()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, epoch=1)
    before = path.read_bytes()

    def broken(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]
    monkeypatch.undo()
    assert load_checkpoint(path, restore_rng=False).epoch == 1


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, data):
    def setup(seed):
        engine.manual_seed(seed)
        model = small_model()
        opt = optim.Adam(model.parameters(), lr=2e-3)
        sched = StepLR(opt, 1, 0.7)
        loader = DataLoader(data, 32, shuffle=True)  # shuffles with the engine generator
        return model, opt, sched, loader

    loss = nn.CrossEntropyLoss()
    model, opt, sched, loader = setup(0)
    full = fit(model, loss, opt, loader, epochs=3, scheduler=sched, progress=False)
    uninterrupted = weights(model)

    model, opt, sched, loader = setup(0)
    h = fit(model, loss, opt, loader, epochs=2, scheduler=sched, progress=False)
    save_checkpoint(tmp_path / "ck.npz", model, opt, epoch=2, scheduler=sched, history=h)
    # a fresh process state: other seed, other weights, generator moved on
    model, opt, sched, loader = setup(99)
    engine._state.host_rng().random(1000)
    ck = load_checkpoint(tmp_path / "ck.npz", model, opt, scheduler=sched)
    resumed = fit(model, loss, opt, loader, epochs=3, initial_epoch=ck.epoch, scheduler=sched,
                  history=ck.history, progress=False)
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, uninterrupted[k], err_msg=k)
    assert resumed.epoch == [1, 2, 3]
    np.testing.assert_array_equal(resumed.loss, full.loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.7 ** 3)


@pytest.mark.parametrize("source,target", [("numpy", "array_api_strict"), ("array_api_strict", "numpy")])
def test_checkpoint_moves_between_backends(tmp_path, data, source, target):
    if backends.unavailable_reason(target) or backends.unavailable_reason(source):
        pytest.skip("backend unavailable")
    path = tmp_path / "ck.npz"
    with engine.use_backend(source):
        engine.manual_seed(0)
        model, opt = trained(data.subset(slice(0, 64)))
        save_checkpoint(path, model, opt, epoch=1)
        x = engine.asarray(np.random.default_rng(0).standard_normal((4, 1, 28, 28)), dtype="float32")
        model.eval()
        want = engine.to_numpy(model(x))
    with engine.use_backend(target):
        engine.manual_seed(5)
        model2 = small_model()
        opt2 = optim.Adam(model2.parameters())
        ck = load_checkpoint(path, model2, opt2)
        assert ck.backend == source
        for p in model2.parameters():
            assert backends.backend_of(p.data).name == target
        for state in opt2.state.values():
            assert backends.backend_of(state["exp_avg"]).name == target
        model2.eval()
        got = engine.to_numpy(model2(engine.asarray(engine.to_numpy(x))))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # and training goes on from there
        model2.train()
        fit(model2, nn.CrossEntropyLoss(), opt2, DataLoader(data.subset(slice(0, 32)), 32), epochs=1,
            progress=False)
        assert all(s["step"] == 3 for s in opt2.state.values())


def test_load_errors(tmp_path, data):
    engine.manual_seed(0)
    model, opt = trained(data.subset(slice(0, 32)))
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt)
    with pytest.raises(ValueError, match="holds Adam state, not SGD"):
        load_checkpoint(path, small_model(), optim.SGD(small_model().parameters(), lr=0.1))
    with pytest.raises(ValueError, match="no scheduler state"):
        load_checkpoint(path, scheduler=StepLR(opt, 1))
    with pytest.raises((KeyError, ValueError), match="missing keys"):
        load_checkpoint(path, nn.Sequential(nn.Linear(2, 2)))
    assert load_checkpoint(path, restore_rng=False).epoch is None

    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not an engine checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable engine checkpoint"):
        load_checkpoint(tmp_path / "junk.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError):
        load_checkpoint(truncated)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="cannot be stored"):
        save_checkpoint(tmp_path / "bad.npz", model, extra={"f": object()})
    assert not (tmp_path / "bad.npz").exists()


def test_saves_model_only_and_is_a_zip(tmp_path):
    engine.manual_seed(0)
    path = save_checkpoint(tmp_path / "sub" / "m.npz", small_model())
    assert zipfile.is_zipfile(path)
    ck = load_checkpoint(path, small_model())
    assert ck.optimizer_state is None and ck.history is None and ck.extra == {}
