"""fit / evaluate / predict, History, callbacks, schedulers (against PyTorch), plots."""
from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import pytest

from engine import backends
import engine
from engine import nn, optim
from engine import training as T
from engine.data import DataLoader, load_dataset
from engine.models import simple_cnn
from engine.schedulers import CosineAnnealingLR, StepLR, get_scheduler


def tiny_model(dropout=0.0):
    layers = [nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
              nn.Linear(8 * 7 * 7, 32), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(32, 10))
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def mnist_small():
    ds = load_dataset("mnist5k", "train")
    return ds.subset(slice(0, 320)), ds.subset(slice(320, 448))


def loaders(mnist_small, batch=32):
    train, val = mnist_small
    return DataLoader(train, batch, shuffle=True), DataLoader(val, 64)


# ----------------------------------------------------------------------------- fit
def test_fit_learns_and_records_history(mnist_small):
    engine.manual_seed(0)
    model = tiny_model()
    train_loader, val_loader = loaders(mnist_small)
    out = io.StringIO()
    h = T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2), train_loader, val_loader,
              epochs=4, file=out)
    assert isinstance(h, T.History) and len(h) == 4
    assert h.epoch == [1, 2, 3, 4] and h["epoch"] == h.epoch
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time", "samples_per_s"):
        assert len(h[key]) == 4 and all(v is not None for v in h[key]), key
    assert h.loss[-1] < h.loss[0] * 0.5, h.loss
    assert h.accuracy[-1] > h.accuracy[0] and h.val_accuracy[-1] > 0.6
    assert 0 <= min(h.accuracy) and max(h.val_accuracy) <= 1
    assert h.stop_reason is None and "val_accuracy" in h.keys() and "val_accuracy" in h  # noqa: SIM118
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("epoch 1/4") and "samples/s" in lines[0]
    assert "val_acc" in lines[-1]
    assert all(m.training for m in model.modules())
    assert "epochs=4" in repr(h)


def test_fit_quiet_prints_nothing(mnist_small, capsys):
    engine.manual_seed(0)
    model = tiny_model()
    T.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.05), loaders(mnist_small)[0],
          epochs=1, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_one_host_read_per_step(mnist_small, monkeypatch):
    engine.manual_seed(0)
    model = tiny_model()
    calls = []
    real = T._state.to_numpy
    monkeypatch.setattr(T._state, "to_numpy", lambda x: calls.append(1) or real(x))
    train_loader, val_loader = loaders(mnist_small)
    T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), train_loader, val_loader, epochs=1,
          progress=False)
    # one read per training step, then one each for the validation accuracy and loss
    assert len(calls) == len(train_loader) + 2


def test_fit_numpy_and_strict_agree(mnist_small):
    results = []
    for name in ("numpy", "array_api_strict"):
        with engine.use_backend(name):
            engine.manual_seed(3)
            model = tiny_model(dropout=0.2)
            loader = DataLoader(mnist_small[0].subset(slice(0, 96)), 32, shuffle=True)
            h = T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), loader, epochs=2,
                      progress=False, clip_grad_norm=1.0)
            assert backends.backend_of(model.parameters()[0].data).name == name
            results.append(({k: engine.to_numpy(v) for k, v in model.state_dict().items()}, h.loss))
    (a, la), (b, lb) = results
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_scheduler_steps_once_per_epoch(mnist_small):
    engine.manual_seed(0)
    model = tiny_model()
    opt = optim.SGD(model.parameters(), lr=0.1)
    h = T.fit(model, nn.CrossEntropyLoss(), opt, loaders(mnist_small)[0], epochs=3,
              scheduler=StepLR(opt, step_size=1, gamma=0.5), progress=False)
    np.testing.assert_allclose(h.lr, [0.1, 0.05, 0.025])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_initial_epoch_and_history_append(mnist_small):
    engine.manual_seed(0)
    model = tiny_model()
    opt = optim.Adam(model.parameters())
    h = T.fit(model, nn.CrossEntropyLoss(), opt, loaders(mnist_small)[0], epochs=1, progress=False)
    h = T.fit(model, nn.CrossEntropyLoss(), opt, loaders(mnist_small)[0], epochs=3, initial_epoch=1,
              history=h, progress=False)
    assert h.epoch == [1, 2, 3]


def test_fit_argument_errors(mnist_small):
    model = tiny_model()
    opt = optim.Adam(model.parameters())
    loader = loaders(mnist_small)[0]
    with pytest.raises(TypeError, match="loss must be callable"):
        T.fit(model, "cross_entropy", opt, loader)
    with pytest.raises(TypeError, match="loss must return a one-element Tensor"):
        T.fit(model, lambda a, b: 0, opt, loader, progress=False)
    with pytest.raises(TypeError, match="optimizer"):
        T.fit(model, nn.CrossEntropyLoss(), object(), loader)
    with pytest.raises(ValueError, match="epochs"):
        T.fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=-1)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        T.fit(model, nn.CrossEntropyLoss(), opt, loader, clip_grad_norm=0)


# ----------------------------------------------------------------------------- NaN / inf
class _Batches:
    """A fixed list of batches, the ``bad``-th (1-based) poisoned with NaN."""

    def __init__(self, n=4, bad=None, seed=0):
        rng = np.random.default_rng(seed)
        self.batches = []
        for i in range(n):
            x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
            if bad == i + 1:
                x[0, 0, 0, 0] = np.nan
            self.batches.append((x, rng.integers(0, 10, 8)))

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for x, y in self.batches:
            yield engine.asarray(x), engine.asarray(y)


def linear_model():
    # the smallest model whose loss a NaN pixel reaches (relu and max pooling propagate NaN too)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def _weights(model):
    return [engine.to_numpy(p.data).copy() for p in model.parameters()]


def test_nan_loss_stops_and_restores_last_good_weights():
    engine.manual_seed(0)
    ref = linear_model()
    ref_opt = optim.Adam(ref.parameters(), lr=1e-2)
    T.fit(ref, nn.CrossEntropyLoss(), ref_opt, _Batches(n=1), epochs=1, progress=False)
    after_one_step = _weights(ref)

    engine.manual_seed(0)
    model = linear_model()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    out = io.StringIO()
    with pytest.warns(T.NonFiniteLossWarning, match="loss became nan at epoch 1, step 3"):
        h = T.fit(model, nn.CrossEntropyLoss(), opt, _Batches(n=4, bad=3), epochs=5, file=out)
    # step 1 and 2 had finite losses; the weights that produced step 2's loss
    # (after one update) are the last good ones
    for got, want in zip(_weights(model), after_one_step):
        np.testing.assert_array_equal(got, want)
    assert all(np.isfinite(w).all() for w in _weights(model))
    assert len(h) == 1 and "loss became nan" in h.stop_reason and "restored" in h.stop_reason
    assert all(p.grad is None for p in model.parameters())


def test_divergence_to_inf_keeps_finite_weights():
    engine.manual_seed(0)
    model = linear_model()
    opt = optim.SGD(model.parameters(), lr=1e38)  # float32 logits overflow
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = T.fit(model, nn.CrossEntropyLoss(), opt, _Batches(n=4), epochs=50, progress=False)
    assert h.stop_reason and "training stopped" in h.stop_reason
    assert any(issubclass(w.category, T.NonFiniteLossWarning) for w in caught)
    assert len(h) < 50
    assert all(np.isfinite(w).all() for w in _weights(model))


def test_out_of_range_labels_on_a_device_backend_stop_training_naming_the_labels(monkeypatch):
    """Device backends do not check labels on the host each step; the NaN loss
    they give instead stops fit with a message about the labels."""
    from engine import backends
    monkeypatch.setattr(backends.get("numpy"), "host_memory", False)  # behave like cupy: no per-step sync
    engine.manual_seed(0)
    model = linear_model()
    batches = _Batches(n=3)
    x, y = batches.batches[1]
    batches.batches[1] = (x, np.where(np.arange(8) == 5, 12, y))
    with pytest.warns(T.NonFiniteLossWarning,
                      match=r"step 2; .* Fix the labels: the batch has labels in \[\d+, 12\] but the model has 10 "
                            r"classes \(labels must be in \[0, 9\]\)"):
        h = T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), batches, epochs=1, progress=False)
    assert "Fix the labels" in h.stop_reason


def test_nan_on_first_step_keeps_initial_weights():
    engine.manual_seed(0)
    model = linear_model()
    before = _weights(model)
    with pytest.warns(T.NonFiniteLossWarning, match="started with"):
        h = T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), _Batches(n=2, bad=1),
                  epochs=2, progress=False)
    assert len(h) == 0
    for got, want in zip(_weights(model), before):
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- callbacks
def test_early_stopping_stops_and_restores_best(mnist_small):
    engine.manual_seed(0)
    model = tiny_model()
    stopper = T.EarlyStopping("val_loss", patience=2, verbose=False)
    values = iter([1.0, 0.5, 0.7, 0.6, 0.4, 0.3])
    snapshots = {}

    class FakeVal(T.Callback):  # replaces val_loss by a scripted sequence and nudges the weights
        def on_epoch_end(self, epoch, logs, state):
            logs["val_loss"] = next(values)
            for p in state.model.parameters():
                p.data = p.data + 1.0
            snapshots[epoch] = _weights(state.model)

    h = T.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), loaders(mnist_small)[0],
              epochs=6, callbacks=[FakeVal(), stopper], progress=False)
    assert len(h) == 4 and stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    assert "has not improved for 2 epoch(s)" in h.stop_reason
    for got, want in zip(_weights(model), snapshots[2]):
        np.testing.assert_array_equal(got, want)


def test_early_stopping_real_run_with_lr_zero(mnist_small):
    engine.manual_seed(0)
    model = tiny_model()
    train_loader, val_loader = loaders(mnist_small)
    h = T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.0), train_loader, val_loader,
              epochs=10, callbacks=[T.EarlyStopping(patience=1, verbose=False)], progress=False)
    assert len(h) == 2  # val_loss cannot improve without updates


def test_early_stopping_needs_its_metric(mnist_small):
    model = tiny_model()
    with pytest.raises(KeyError, match="val_loss.*val_loader"):
        T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), loaders(mnist_small)[0],
              epochs=1, callbacks=[T.EarlyStopping()], progress=False)
    with pytest.raises(ValueError, match="mode"):
        T.EarlyStopping(mode="up")


def test_model_checkpoint_callback(mnist_small, tmp_path):
    from engine.checkpoint import load_checkpoint
    engine.manual_seed(0)
    model = tiny_model()
    train_loader, val_loader = loaders(mnist_small)
    T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), train_loader, val_loader, epochs=2,
          callbacks=[T.ModelCheckpoint(str(tmp_path / "ep{epoch}.npz"), extra={"tag": "x"})], progress=False)
    ck = load_checkpoint(tmp_path / "ep2.npz", restore_rng=False)
    assert ck.epoch == 2 and ck.extra["tag"] == "x" and len(ck.history) == 2
    assert (tmp_path / "ep1.npz").exists()


# ----------------------------------------------------------------------------- progress
class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal(mnist_small, monkeypatch):
    pytest.importorskip("tqdm")
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(T._Progress, "MININTERVAL", 0.0)  # redraw on every step, however fast
    engine.manual_seed(0)
    model = tiny_model()
    T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), loaders(mnist_small)[0], epochs=1,
          file=io.StringIO())
    text = err.getvalue()
    assert "samples/s" in text and "loss" in text and "acc" in text and "epoch 1/1" in text


def test_progress_plain_lines_without_tqdm(mnist_small, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if tqdm were missing
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    engine.manual_seed(0)
    model = tiny_model()
    T.fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters()), loaders(mnist_small)[0], epochs=1,
          file=io.StringIO())
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("epoch 1/1 step 10/10: loss")


# ----------------------------------------------------------------------------- evaluate / predict
def test_evaluate_matches_a_manual_computation(mnist_small):
    engine.manual_seed(0)
    model = tiny_model(dropout=0.5)
    val = mnist_small[1]
    loader = DataLoader(val, 50)
    r = T.evaluate(model, loader, nn.CrossEntropyLoss())
    assert r["n"] == len(val)
    model.eval()
    xs = [(engine.to_numpy(model(x)), engine.to_numpy(y)) for x, y in loader]
    model.train()
    logits = np.concatenate([a for a, _ in xs]).astype(np.float64)
    labels = np.concatenate([b for _, b in xs])
    assert r["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert r["loss"] == pytest.approx(-logp[np.arange(len(labels)), labels].mean(), rel=1e-5)
    assert T.evaluate(model, loader) == {k: v for k, v in r.items() if k != "loss"}
    assert all(m.training for m in model.modules())  # mode restored


def test_predict_arrays_and_loaders(mnist_small, backend):
    engine.manual_seed(0)
    model = tiny_model(dropout=0.5)
    loader = DataLoader(mnist_small[1], 50)
    x = np.concatenate([engine.to_numpy(b) for b, _ in loader])
    from_loader = T.predict(model, loader)
    from_array = T.predict(model, x, batch_size=40)
    from_engine = T.predict(model, engine.asarray(x), batch_size=1000)
    assert tuple(from_loader.shape) == (len(x), 10)
    assert backends.backend_of(from_loader) is backend
    np.testing.assert_allclose(engine.to_numpy(from_array), engine.to_numpy(from_loader), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(engine.to_numpy(from_engine), engine.to_numpy(from_loader), rtol=1e-5, atol=1e-6)
    classes = engine.to_numpy(T.predict(model, x, classes=True))
    np.testing.assert_array_equal(classes, engine.to_numpy(from_loader).argmax(1))
    with pytest.raises(TypeError, match="floating"):
        T.predict(model, np.zeros((2, 1, 28, 28), dtype=np.uint8))


# ----------------------------------------------------------------------------- schedulers
def _torch_lrs(make, steps, lr=0.1):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(torch.optim.lr_scheduler, opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _our_lrs(make, steps, lr=0.1):
    opt = optim.SGD([nn.Parameter(engine.asarray(np.zeros(1)))], lr=lr)
    sched = make(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert sched.get_last_lr() == [lrs[-1]]
    return lrs


@pytest.mark.parametrize("step_size,gamma", [(1, 0.5), (3, 0.1), (7, 0.9)])
def test_steplr_matches_torch(step_size, gamma):
    ours = _our_lrs(lambda o: StepLR(o, step_size, gamma), 25)
    theirs = _torch_lrs(lambda s, o: s.StepLR(o, step_size, gamma), 25)
    np.testing.assert_allclose(ours, theirs, rtol=1e-15)


@pytest.mark.parametrize("t_max,eta_min", [(10, 0.0), (4, 0.001), (1, 0.0)])
def test_cosine_matches_torch(t_max, eta_min):
    ours = _our_lrs(lambda o: CosineAnnealingLR(o, t_max, eta_min), 3 * t_max + 5)
    theirs = _torch_lrs(lambda s, o: s.CosineAnnealingLR(o, t_max, eta_min), 3 * t_max + 5)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert ours[t_max] == pytest.approx(eta_min, abs=1e-12)


def test_scheduler_state_dict_round_trip():
    opt = optim.SGD([nn.Parameter(engine.asarray(np.zeros(1)))], lr=0.1)
    a = CosineAnnealingLR(opt, 10)
    for _ in range(3):
        a.step()
    opt2 = optim.SGD([nn.Parameter(engine.asarray(np.zeros(1)))], lr=0.1)
    b = CosineAnnealingLR(opt2, 10)
    b.load_state_dict(a.state_dict())
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for _ in range(5):
        a.step()
        b.step()
    assert a.get_last_lr() == b.get_last_lr()
    assert get_scheduler("none", opt, epochs=3) is None
    assert isinstance(get_scheduler("step", opt, epochs=9), StepLR)
    with pytest.raises(ValueError, match="unknown scheduler"):
        get_scheduler("linear", opt, epochs=3)
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(opt, 0)


# ----------------------------------------------------------------------------- plots
def test_plots_write_images(tmp_path, mnist_small):
    pytest.importorskip("matplotlib")
    from engine.plots import plot_filters, plot_history
    h = T.History({"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.3], "accuracy": [0.6, 0.8, 0.9],
                   "val_loss": [0.8, 0.6, 0.5], "val_accuracy": [0.7, 0.8, 0.85]})
    fig = plot_history(h, tmp_path / "curves.png", title="t")
    assert (tmp_path / "curves.png").stat().st_size > 1000 and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2
    fig = plot_filters(simple_cnn(), tmp_path / "filters.png")
    assert (tmp_path / "filters.png").stat().st_size > 1000 and len(fig.axes) == 32
    with pytest.raises(ValueError, match="no Conv2d"):
        plot_filters(nn.Sequential(nn.Linear(2, 2)))


def test_plots_without_matplotlib_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    from engine.plots import plot_history
    with pytest.raises(ImportError, match=r'pip install "\.\[plot\]"'):
        plot_history({"epoch": [1], "loss": [1.0]})


# ----------------------------------------------------------------------------- threads
def _dropout_run(seed, results=None, key=None, barrier=None):
    """Seed, build a small model with dropout, train 20 steps: the final weights."""
    if barrier is not None:
        barrier.wait()  # both threads draw at the same time
    engine.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        x = engine.asarray(rng.standard_normal((8, 6)), dtype="float32")
        y = engine.asarray(rng.integers(0, 3, 8))
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(x), y).backward()
        opt.step()
    weights = [engine.to_numpy(p.data).copy() for p in model.parameters()]
    if results is not None:
        results[key] = weights
    return weights


def test_two_threads_training_with_dropout_each_reproduce_their_single_thread_run():
    import threading
    alone = {seed: _dropout_run(seed) for seed in (1, 2)}
    results = {}
    for _ in range(3):  # several interleavings
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=_dropout_run, args=(seed, results, seed, barrier)) for seed in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for seed in (1, 2):
            for got, want in zip(results[seed], alone[seed]):
                np.testing.assert_array_equal(got, want)


def test_callback_and_loader_arguments_are_checked(tmp_path):
    from engine.data import DataLoader, load_dataset
    data = load_dataset("mnist5k")
    with pytest.raises(ValueError, match="min_delta must be a finite number"):
        T.EarlyStopping(min_delta=float("nan"))
    with pytest.raises(TypeError, match="monitor must be a metric name"):
        T.EarlyStopping(monitor=3)
    with pytest.raises(ValueError, match="patience must be an int"):
        T.EarlyStopping(patience=1.5)
    with pytest.raises(ValueError, match="is a directory"):
        T.ModelCheckpoint(str(tmp_path))
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        DataLoader(data, 8, shuffle="yes")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        DataLoader(data, 8, seed=-1)
