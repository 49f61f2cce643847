"""Checkpoints: one .npz, atomic writes, no pickles, exact resume, cross-backend loads."""
from __future__ import annotations

import os
import stat
import struct
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


# --------------------------------------------------------------------------- hostile and broken files
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

from engine.checkpoint import CheckpointError, check_writable  # noqa: E402
from engine.schedulers import CosineAnnealingLR  # noqa: E402

import _checkpoint_files as files  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    """A checkpoint of a trained model with Adam state, a StepLR scheduler and history."""
    engine.manual_seed(0)
    model, opt = trained(data.subset(slice(0, 64)))
    sched = StepLR(opt, 2, 0.5)
    path = tmp_path_factory.mktemp("saved") / "ck.npz"
    save_checkpoint(path, model, opt, epoch=2, scheduler=sched, history=History({"epoch": [1, 2], "loss": [1.0, 0.5]}),
                    extra={"model": "small"})
    return path


def fresh():
    """A model, optimizer and scheduler to load into, and a snapshot of the model's weights."""
    engine.manual_seed(7)
    model = small_model()
    opt = optim.Adam(model.parameters())
    return model, opt, StepLR(opt, 5, 0.1), weights(model)


def assert_refused(path, match, **kwargs):
    """Loading ``path`` into a fresh model, optimizer and scheduler raises CheckpointError
    naming the file and matching ``match``, and leaves all of them untouched."""
    model, opt, sched, before = fresh()
    rng_before = engine.get_rng_state()
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, model, opt, scheduler=sched, **kwargs)
    assert str(path) in str(info.value)
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, before[k])
    assert opt.state == {} and sched.step_size == 5 and engine.get_rng_state() == rng_before
    return info.value


def test_checkpoint_error_is_one_value_error_exported_everywhere():
    assert engine.CheckpointError is CheckpointError and issubclass(CheckpointError, ValueError)
    assert "CheckpointError" in engine.checkpoint.__all__ and "CheckpointError" in dir(engine)


def test_a_zip_directory_listing_8_of_its_entries_is_refused(saved, tmp_path):
    """The audit's case: a corrupted central directory listed 8 of 24 entries, and the load
    returned normally without epoch, RNG or optimizer state."""
    bad = tmp_path / "bad.npz"
    listed = files.keep_in_directory(saved, bad, 8)
    assert listed[:2] == ["format.npy", "manifest.npy"] and len(files.members(bad)) == 8
    assert_refused(bad, r"incomplete: \d+ entries are missing \(")
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(bad, restore_rng=False)  # nothing to compare with: the file says what it lost


@pytest.mark.parametrize("key", ["epoch", "rng_state", "backend", "extra", "optimizer/param_groups",
                                 "optimizer/state/0/exp_avg", "optimizer/state/3/step", "model/0.weight",
                                 "scheduler", "history", "manifest"])
def test_a_missing_entry_is_refused(saved, tmp_path, key):
    bad = tmp_path / "bad.npz"
    files.edit(saved, bad, {key: None}, manifest=False)  # the manifest still lists it
    assert_refused(bad, "entry is missing" if key != "manifest" else "the entry 'manifest' is missing")


def test_an_entry_the_manifest_does_not_list_is_refused(saved, tmp_path):
    bad = tmp_path / "bad.npz"
    files.edit(saved, bad, {"extra/planted": np.zeros(3)}, manifest=False)
    assert_refused(bad, "does not list")
    files.edit(saved, bad, {"optimizer/state/0/planted": np.zeros(3)})  # listed, yet not Adam's
    assert_refused(bad, r"Adam state of parameter 0 has \['exp_avg', 'exp_avg_sq', 'planted', 'step'\]")
    files.edit(saved, bad, {"somewhere/else": np.zeros(3)})
    assert_refused(bad, "unexpected entries")


def _groups(path, **changes):
    groups = files.json_of(files.members(path), "optimizer/param_groups")
    groups[0].update(changes)
    return files.text(groups)


@pytest.mark.parametrize("change,match", [
    ({"lr": float("nan")}, r"\['lr'\] is nan, not a finite number"),
    ({"lr": float("inf")}, r"\['lr'\] is inf"),
    ({"lr": -0.1}, r"\['lr'\] is -0.1, below 0"),
    ({"lr": "0.1"}, r"\['lr'\] is '0.1', not a finite number"),
    ({"eps": None}, r"\['eps'\] is None"),
    ({"betas": [0.9, 1.5]}, r"\['betas'\] is \[0.9, 1.5\], not two numbers in \[0, 1\)"),
    ({"amsgrad": 1}, r"\['amsgrad'\] is 1, not true or false"),
    ({"momentum": 0.9}, r"has the hyper-parameters \[.*'momentum'.*\], Adam has"),
    ({"params": [1, 2, 3, 4, 5, 6]}, r"'params'\] is not the next run"),
])
def test_bad_optimizer_hyper_parameters_are_refused(saved, tmp_path, change, match):
    bad = tmp_path / "bad.npz"
    files.edit(saved, bad, {"optimizer/param_groups": _groups(saved, **change)})
    assert_refused(bad, match)


@pytest.mark.parametrize("key,value,match", [
    ("optimizer/state/0/exp_avg", np.zeros((6, 1, 3, 2), np.float32), r"has shape \(6, 1, 3, 2\), parameter 0"),
    ("optimizer/state/0/exp_avg", np.zeros((6, 1, 3, 3), np.int64), "not a float"),
    ("optimizer/state/0/exp_avg", np.array("text"), "has dtype '<U4'"),
    ("optimizer/state/1/step", np.array(-3), "is -3, not a step count"),
    ("optimizer/state/1/step", np.array(2.5), "is 2.5, not a step count"),
    ("optimizer/state/9/step", np.array(1), "there are only 6 parameters"),
    ("model/0.weight", np.zeros((6, 1, 3, 2), np.float32), r"'0.weight' has shape \(6, 1, 3, 2\), the model's"),
    ("model/0.weight", np.zeros((6, 1, 3, 3), np.int32), r"'0.weight' has dtype '<i4'"),
    ("model/0.weight", np.array("x"), "has dtype '<U1'"),
    ("epoch", np.array(-5), "'epoch' is -5"),
    ("epoch", np.array(2.0), "should be an integer"),
    ("format", np.array(["engine-checkpoint/2"]), "should be a string"),
    ("rng_state", files.text({"bit_generator": "MT19937", "state": {}}), "not the state of a PCG64"),
    ("rng_state", files.text({"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}),
     "not a valid PCG64 state"),
    ("extra", files.text([1, 2]), "'extra' is not a JSON object"),
    ("extra", np.array("[" * 100_000 + "]" * 100_000), r"'extra' is not valid JSON \(RecursionError"),
    ("extra", np.array('{"a": ' + "9" * 5000 + "}"), "'extra' is not valid JSON"),
    ("history", files.text({"history": {"loss": [[1]]}}), "not a dict of lists of numbers"),
    ("scheduler", files.text({"step_size": 0, "gamma": 0.5, "base_lrs": [1e-3], "last_epoch": 0,
                              "_step_count": 1, "_is_initial": False, "_last_lr": [1e-3]}),
     r"the scheduler state has \{'step_size': 0\}"),
    ("scheduler", files.text({"T_max": 3}), "does not fit StepLR"),
])
def test_wrong_shapes_types_and_values_are_refused(saved, tmp_path, key, value, match):
    bad = tmp_path / "bad.npz"
    files.edit(saved, bad, {key: value})
    assert_refused(bad, match)


def test_a_header_claiming_gigabytes_is_refused_before_any_allocation(saved, tmp_path):
    """A small file whose headers declare huge arrays: refused from the header, without
    allocating what they declare (the audit saw 2.1 GB for a 1 MB file)."""
    bad = tmp_path / "bad.npz"
    huge = files.raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (6, 1, 3, 100000000), }",
                         b"\0" * 4096)
    files.edit(saved, bad, {"model/0.weight": huge})
    # a deflated entry that really expands to 64 MiB of zeros (a zip bomb) where the model needs 216 bytes
    bomb = tmp_path / "bomb.npz"
    entries = files.with_manifest({**files.members(saved), "model/0.weight.npy":
                                   files.npy(np.zeros((6, 1, 3, 3), np.float32))})
    entries["model/0.weight.npy"] = files.raw_npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (16777216,), }") + bytes(64 << 20)
    entries = files.with_manifest(entries)
    files.write_members(bomb, entries, zipfile.ZIP_DEFLATED)
    assert os.path.getsize(bomb) < 1 << 20
    tracemalloc.start()
    try:
        assert_refused(bad, r"holds 4096 bytes|shape")
        with pytest.raises(CheckpointError, match=r"holds 4096 bytes"):
            load_checkpoint(bad)  # without a model: the zip directory gives the size away
        assert_refused(bomb, r"'0.weight' has shape \(16777216,\), the model's \(6, 1, 3, 3\)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB allocated"


@pytest.mark.parametrize("header,match", [
    ("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "no readable .npy header|dtype '\\|O'"),
    ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", "numbers and strings only"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", r"impossible shape \(-2,\)"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (10**30, 10**30), }", "no readable .npy header|holds"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 3000 + ")" * 3000 + ", }",
     "no readable .npy header"),
    ("not a dict at all", "no readable .npy header"),
])
def test_edited_npy_headers_are_refused(saved, tmp_path, header, match):
    bad = tmp_path / "bad.npz"
    entries = files.members(saved)
    entries["model/0.bias.npy"] = files.raw_npy(header, b"\0" * 16)
    files.write_members(bad, entries)
    assert_refused(bad, match)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(bad)


def _patch_central_directory(src, dst, offset, value_format, value):
    """Copy ``src`` with the first central-directory record changed at ``offset``."""
    data = bytearray(src.read_bytes())
    start = data.index(b"PK\x01\x02")
    struct.pack_into(value_format, data, start + offset, value)
    dst.write_bytes(bytes(data))


def test_library_level_errors_become_checkpoint_errors(saved, tmp_path):
    """What used to escape as zlib.error, NotImplementedError, KeyError, AttributeError …"""
    bad = tmp_path / "bad.npz"
    _patch_central_directory(saved, bad, 10, "<H", 99)  # compression method 99
    assert_refused(bad, "compression method 99")
    _patch_central_directory(saved, bad, 8, "<H", 1)  # the encrypted flag
    assert_refused(bad, "encrypted")
    _patch_central_directory(saved, bad, 24, "<L", 10**9)  # a size of 1 GB
    assert_refused(bad, "corrupt zip directory|truncated or corrupt")
    compressed = tmp_path / "compressed.npz"
    engine.manual_seed(0)
    save_checkpoint(compressed, small_model(), compress=True)
    data = bytearray(compressed.read_bytes())
    info = zipfile.ZipFile(compressed).getinfo("model/4.weight.npy")  # deflate data of a big entry
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 10, start + 60):
        data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"entry 'model/4.weight' (is unreadable|has no readable)"):
        load_checkpoint(bad)


def test_files_that_are_not_checkpoints_are_refused_without_blocking(saved, tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy array, not a checkpoint"):
        load_checkpoint(tmp_path / "plain.npy")
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_checkpoint(tmp_path / "empty.npz")
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)  # opening it for reading used to block forever
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(load_checkpoint, fifo)), daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # unblock it before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("load_checkpoint blocked on a FIFO")
    assert isinstance(outcome[0], CheckpointError) and "is a FIFO" in str(outcome[0])


def _error_of(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_version_1_files_still_load_and_are_checked(saved, tmp_path):
    """Files written before the manifest existed (format 1) load as before; the entries
    every format-1 file has are still required."""
    old = tmp_path / "old.npz"
    files.edit(saved, old, {"manifest": None, "format": np.array("engine-checkpoint/1")}, manifest=False)
    model, opt, sched, _ = fresh()
    ck = load_checkpoint(old, model, opt, scheduler=sched)
    assert ck.epoch == 2 and sched.step_size == 2 and all(s["step"] == 2 for s in opt.state.values())
    reference = small_model()
    load_checkpoint(saved, reference, restore_rng=False)
    for k, v in weights(reference).items():
        np.testing.assert_array_equal(weights(model)[k], v)
    files.edit(old, tmp_path / "old_bad.npz", {"rng_state": None}, manifest=False)
    assert_refused(tmp_path / "old_bad.npz", r"incomplete: 1 entry is missing \(rng_state\)")
    files.edit(saved, tmp_path / "future.npz", {"format": np.array("engine-checkpoint/3")})
    assert_refused(tmp_path / "future.npz", "format 'engine-checkpoint/3'")


def test_the_scheduler_state_must_fit_the_scheduler(saved):
    model, opt, _, _ = fresh()
    with pytest.raises(CheckpointError, match="does not fit CosineAnnealingLR"):
        load_checkpoint(saved, model, opt, scheduler=CosineAnnealingLR(opt, 3))


# --------------------------------------------------------------------------- saving
def test_a_directory_as_the_target_is_a_clear_error_before_anything_is_written(tmp_path):
    target = tmp_path / "runs"
    target.mkdir()
    for fn in (lambda: check_writable(target), lambda: save_checkpoint(target, small_model())):
        with pytest.raises(ValueError, match=f"cannot write {re.escape(str(target))}: it is a directory"):
            fn()
    assert os.listdir(tmp_path) == ["runs"] and os.listdir(target) == []
    with pytest.raises(ValueError, match="names a directory"):
        check_writable(str(tmp_path) + os.sep)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        check_writable(tmp_path / "file" / "ck.npz")
    assert check_writable(tmp_path / "new" / "deeper" / "ck.npz") == str(tmp_path / "new" / "deeper" / "ck.npz")
    assert sorted(os.listdir(tmp_path)) == ["file", "runs"]  # checking creates nothing


def test_names_up_to_the_file_system_limit_save_and_longer_ones_are_clear_errors(tmp_path):
    engine.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2))
    for length in (242, 255):  # the temporary name used to add 14 bytes: 242 failed
        path = tmp_path / ("c" * (length - 4) + ".npz")
        save_checkpoint(path, model)
        assert load_checkpoint(path, restore_rng=False).model_state.keys() == {"0.weight", "0.bias"}
    too_long = tmp_path / ("c" * 252 + ".npz")
    with pytest.raises(ValueError, match="the file name is 256 bytes long; this file system allows 255"):
        save_checkpoint(too_long, model)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    from engine import _io
    path = tmp_path / "ck.npz"
    name = path.name.encode()
    tag, host = _io._tag(name).decode(), _io._host_tag().decode()
    dead = tmp_path / f".ck.npz.{tag}-{host}-{_dead_pid()}-abcdef.part"
    legacy = tmp_path / ".ck.npz.x1y2z3w4.part"  # named by older versions: removed when old
    live = tmp_path / f".ck.npz.{tag}-{host}-1-fedcba.part"  # pid 1 is alive: a save in progress
    other = tmp_path / f".other.npz.{_io._tag(b'other.npz').decode()}-{host}-{_dead_pid()}-abcdef.part"
    for p in (dead, legacy, live, other):
        p.write_bytes(b"half a checkpoint")
    hour_ago = time.time() - 3600
    os.utime(legacy, (hour_ago, hour_ago))
    save_checkpoint(path, small_model())
    assert sorted(os.listdir(tmp_path)) == sorted(["ck.npz", live.name, other.name])
    os.utime(live, (hour_ago, hour_ago))  # an old one is a leftover whatever its pid
    save_checkpoint(path, small_model())
    assert sorted(os.listdir(tmp_path)) == sorted(["ck.npz", other.name])


def test_the_temporary_file_goes_whatever_interrupts_the_write(tmp_path, monkeypatch):
    def interrupted(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck.npz", small_model())
    assert os.listdir(tmp_path) == []


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    from engine import _io
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(_io.os, "fsync", lambda fd: (events.append(
        "fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file"), real_fsync(fd))[1])
    monkeypatch.setattr(_io.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    save_checkpoint(tmp_path / "ck.npz", small_model())
    assert events == ["fsync file", "rename", "fsync dir"]


KILLED_SAVER = """
import sys
import engine
from engine import nn
from engine.checkpoint import save_checkpoint
engine.manual_seed(0)
model = nn.Sequential(nn.Linear(1024, 2048))  # 8 MiB of weights: a save takes a while
for epoch in range(10**6):
    save_checkpoint(sys.argv[1], model, epoch=epoch)
    if epoch == 0:
        print("saved", flush=True)
"""


def test_kill_9_during_saves_never_leaves_a_corrupt_file_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "ck.npz"
    draw = random.Random(14)
    leftovers = 0
    for attempt in range(12):
        child = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(path)], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline().strip() == "saved"  # its first save is complete
            parts = [n for n in os.listdir(tmp_path) if n.endswith(".part")]
            assert len(parts) <= 1, f"the leftovers of earlier kills are still there: {parts}"
            time.sleep(draw.uniform(0.0, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        assert isinstance(load_checkpoint(path, restore_rng=False).epoch, int)  # never corrupt
        leftovers += any(n.endswith(".part") for n in os.listdir(tmp_path))
        if attempt >= 2 and leftovers >= 1:
            break
    assert leftovers >= 1, "no kill landed inside a save: the test did not test anything"
    save_checkpoint(path, nn.Sequential(nn.Linear(2, 2)))
    assert os.listdir(tmp_path) == ["ck.npz"]
