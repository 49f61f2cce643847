"""The epoch suite of the bench (seconds): one training epoch of a zoo model with
``engine.fit`` against its PyTorch twin, on the shipped mnist5k subset
(``--epoch-samples 256``), the summary and its JSON, the accuracy check, the
one-line answer when the dataset is absent, and ``train_torch_fashion
--layer-times`` (per-layer forward and backward from gradient hooks)."""
from __future__ import annotations

import json
import math

import pytest

import engine
from engine.bench import ops
from engine.bench.__main__ import EXIT_BAD_PATH, EXIT_NO_DATA, main
from engine.bench.suites import EPOCH_MODELS, get_suite

from _helpers import torch_or_skip

SMOKE = ["--suite", "epoch", "--epoch-models", "lenet5", "--epoch-samples", "256", "--epoch-dataset", "mnist5k",
         "--repeat", "1", "--threads", "1", "--no-peak", "--quiet"]


def _run(tmp_path, *extra):
    out = tmp_path / "epoch.json"
    rc = main(SMOKE + ["--json", str(out), *extra])
    return rc, json.loads(out.read_text())


def test_epoch_suite_defaults():
    suite = get_suite("epoch")
    assert suite.ops == ("train_epoch",) and suite.repeat == 3 and suite.warmup == 0
    assert [s.model for s in suite.epochs] == ["lenet5", "simple_cnn"]
    lenet = EPOCH_MODELS[0]
    assert (lenet.dataset, lenet.n, lenet.lr, lenet.samples, lenet.target) == ("fashion-mnist", 64, 1e-3, None, 0.8)


def test_epoch_smoke_engine_against_torch(tmp_path, capsys):
    torch_or_skip()
    rc, data = _run(tmp_path)
    assert rc == 0
    rows = {r["path"]: r for r in data["rows"]}
    assert set(rows) == {"gemm", "torch-cpu"}
    for r in rows.values():
        assert r["op"] == "train_epoch" and r["status"] == "ok" and r["repeats"] == 1
        assert r["median_ms"] > 0 and r["first_ms"] > 0
        # both start from the same weights: their initial logits agree with one float64 forward
        assert r["max_rel_err"] < 1e-4
        assert "test acc" in r["note"]
    assert rows["gemm"]["vs_torch"] == pytest.approx(rows["gemm"]["median_ms"] / rows["torch-cpu"]["median_ms"])
    (entry,) = data["meta"]["epoch"]
    assert entry["train_images"] == 256 and entry["model"] == "lenet5" and not entry["whole_split"]
    for side in ("engine", "torch"):
        assert entry[f"{side}_epochs_trained"] == 2  # the checked first epoch, then one timed round
        assert 0.0 <= entry[f"{side}_test_accuracy"] <= 1.0
        assert math.isfinite(entry[f"{side}_last_train_loss"])
        assert len(entry[f"{side}_epochs_s"]) == 1
    assert entry["ratio"] == pytest.approx(entry["engine_median_s"] / entry["torch_median_s"])
    text = capsys.readouterr().out
    assert "epoch summary" in text and "(subset)" in text  # no PASS/MISS on a subset


def test_epoch_without_torch_times_the_engine_alone(tmp_path):
    rc, data = _run(tmp_path, "--no-torch")
    assert rc == 0
    (row,) = data["rows"]
    assert row["path"] == "gemm" and row["status"] == "ok" and row["max_rel_err"] < 1e-4
    assert data["meta"]["epoch"][0]["ratio"] is None


def test_epoch_side_that_does_not_learn_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setattr(ops, "EPOCH_CHECK_SAMPLES", 100)
    monkeypatch.setattr(ops, "EPOCH_MIN_ACCURACY", 0.999)
    rc, data = _run(tmp_path, "--no-torch")
    assert rc == EXIT_BAD_PATH
    (row,) = data["rows"]
    assert row["status"] == "WRONG" and "did not learn" in row["note"]


def test_epoch_dataset_absent_is_one_line_and_status_4(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ENGINE_DATA", str(tmp_path / "data"))
    rc = main(["--suite", "epoch", "--epoch-dataset", "mnist", "--epoch-data-dir", str(tmp_path / "none"),
               "--quiet", "--no-peak"])
    assert rc == EXIT_NO_DATA == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "mnist dataset is not installed" in err and "--epoch-data-dir" in err


def test_epoch_options_are_checked(capsys):
    for bad in (["--epoch-models", "resnet20"], ["--epoch-samples", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["--suite", "epoch", "--quiet", *bad])
        assert exc.value.code == 2
    assert "1x28x28" in capsys.readouterr().err


def test_epoch_summary_verdicts():
    base = {"case": "LeNet-5 Fashion-MNIST", "train_images": 60000, "target": 0.8, "accuracy_checked": True,
            "whole_split": True, "engine_median_s": 8.0, "torch_median_s": 12.0, "ratio": 8 / 12,
            "engine_test_accuracy": 0.84, "torch_test_accuracy": 0.85}
    assert "<= 0.8: PASS" in ops.epoch_summary([base])
    assert "<= 0.8: MISS" in ops.epoch_summary([dict(base, ratio=0.9)])
    assert "(subset)" in ops.epoch_summary([dict(base, whole_split=False)])


def test_layer_times_hooks_time_every_layer(capsys):
    torch = torch_or_skip()
    from engine.bench import train_torch_fashion
    threads = (engine.get_num_threads(), torch.get_num_threads())
    try:
        rc = train_torch_fashion.main(["--layer-times", "--dataset", "mnist5k", "--model", "lenet5",
                                       "--threads", "1"])
    finally:
        engine.set_num_threads(threads[0])
        torch.set_num_threads(threads[1])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    layers = [ln for ln in lines if ln[:2].strip().isdigit()]
    assert len(layers) == len(engine.models.get_model("lenet5"))
    for ln in layers:  # engine fwd, bwd, torch fwd, bwd, ratio: all measured (a missing hook gives nan)
        values = [float(v) for v in ln.split()[2:7]]
        assert all(math.isfinite(v) and v >= 0 for v in values), ln
    assert any("optimizer step" in ln for ln in lines)
