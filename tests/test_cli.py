"""``python -m engine``: train, evaluate, summary, --help, resume, errors (tiny subsets)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from engine.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--train-samples", "192", "--test-samples", "100", "--batch-size", "32"]


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"], ["summary", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m engine")
    if argv[0] == "train":
        for option in ("--model", "--dataset", "--epochs", "--backend", "--batch-size", "--lr", "--seed",
                       "--save", "--optimizer", "--val-fraction", "--data-dir", "--quiet", "--plot", "--resume"):
            assert option in out, option


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_summary(capsys):
    assert main(["summary", "--model", "simple_cnn"]) == 0
    out = capsys.readouterr().out
    assert "421,642" in out and "Conv2d(1→32, k3, p1)" in out and "10x10" in out
    assert main(["summary", "--model", "course_cnn", "--input-shape", "1,28,28"]) == 0
    assert "29x29" in capsys.readouterr().out


def test_train_evaluate_round_trip(tmp_path, capsys):
    ck = tmp_path / "model.npz"
    rc = main(["train", "--model", "course_cnn", "--dataset", "mnist5k", "--epochs", "2", "--lr", "3e-3",
               "--seed", "1", "--save", str(ck), *TINY])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("course_cnn (25,162 parameters) on mnist5k: 173 train + 19 val, 100 test")
    assert lines[1].startswith("epoch 1/2") and lines[2].startswith("epoch 2/2")
    assert "test accuracy:" in out and "held-out mnist5k test images" in out
    assert ck.exists() and f"saved {ck}" in out
    acc = float(out.split("test accuracy: ")[1].split("%")[0])

    assert main(["evaluate", "--checkpoint", str(ck)]) == 0
    out = capsys.readouterr().out
    assert "course_cnn" in out and "mnist5k test split" in out and "test accuracy:" in out
    # the full 1,000-image test split this time; on the strict backend it must agree with numpy
    assert main(["evaluate", "--checkpoint", str(ck), "--backend", "array_api_strict"]) == 0
    out_strict = capsys.readouterr().out
    assert out_strict.split("test accuracy:")[1] == out.split("test accuracy:")[1]
    assert 0 <= acc <= 100


def test_threads_option_sets_the_engine_threads(capsys):
    import engine
    before = engine.get_num_threads()
    try:
        assert main(["train", "--model", "course_cnn", "--epochs", "1", "--quiet", "--threads", "1", *TINY]) == 0
        assert engine.get_num_threads() == 1
    finally:
        engine.set_num_threads(before)
        import engine.__main__ as cli
        if cli._thread_limits is not None:  # the BLAS limit too, for the tests that follow
            cli._thread_limits.restore_original_limits()
            cli._thread_limits = None


def test_quiet_prints_only_the_result(tmp_path, capsys):
    assert main(["train", "--model", "course_cnn", "--epochs", "1", "--quiet", *TINY]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[0].startswith("test accuracy:")
    assert captured.err == ""


def test_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    base = ["train", "--model", "simple_cnn", "--seed", "3", "--val-fraction", "0.1", *TINY, "--quiet",
            "--train-samples", "96"]
    assert main([*base, "--epochs", "3", "--save", str(tmp_path / "full.npz")]) == 0
    assert main([*base, "--epochs", "2", "--save", str(tmp_path / "part.npz")]) == 0
    assert main([*base, "--epochs", "3", "--resume", str(tmp_path / "part.npz"),
                 "--save", str(tmp_path / "resumed.npz")]) == 0
    capsys.readouterr()
    with np.load(tmp_path / "full.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        for k in a.files:
            if k.startswith("model/"):
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert int(a["epoch"]) == int(b["epoch"]) == 3


def test_plot_option(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    curves, filters = tmp_path / "c.png", tmp_path / "f.png"
    assert main(["train", "--model", "course_cnn", "--epochs", "1", "--quiet", *TINY, "--plot", str(curves),
                 "--plot-filters", str(filters)]) == 0
    assert curves.stat().st_size > 1000 and filters.stat().st_size > 1000


@pytest.mark.parametrize("argv,message,code", [
    (["train", "--dataset", "cifar"], "unknown dataset 'cifar'", 2),
    (["train", "--backend", "tpu"], "unknown backend 'tpu'", 2),
    (["evaluate", "--checkpoint", "/nonexistent/model.npz"], "No such file", 4),
    (["train", "--val-fraction", "0", "--patience", "2", "--epochs", "1"], "--patience needs a validation", 2),
    (["train", "--save", "/"], "names a directory", 2),
    (["train", "--save", "/tmp/" + "x" * 300 + ".npz"], "304 bytes long", 2),
])
def test_errors_are_one_line_messages(argv, message, code, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "vgg"])


def test_python_dash_m_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "engine", "summary", "--model", "lenet5"], cwd=tmp_path, check=False,
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "61,706" in r.stdout


@pytest.mark.parametrize("option,value,expected", [
    ("--lr", "nan", "a finite number > 0"), ("--lr", "-1", "a finite number > 0"), ("--lr", "0.1x", "> 0"),
    ("--momentum", "-1", ">= 0"), ("--weight-decay", "-1", ">= 0"), ("--weight-decay", "inf", ">= 0"),
    ("--clip-grad-norm", "0", "> 0"), ("--seed", "-3", "[0, 2**63)"), ("--batch-size", "0", "positive integer"),
])
def test_bad_option_values_are_refused_before_anything_runs(option, value, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and expected in err and "Traceback" not in err


def test_internal_errors_are_one_line_with_code_70_and_debug_shows_the_traceback(monkeypatch, capsys):
    import engine.__main__ as cli

    def broken(args, out):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli._COMMANDS, "summary", broken)
    assert main(["summary"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (ZeroDivisionError: a bug)" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["summary", "--debug"])


def test_checkpoint_errors_exit_3(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["evaluate", "--checkpoint", str(bad)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(bad) in err and len(err.strip().splitlines()) == 1


def _train(tmp_path, *extra, name="ck.npz"):
    return main(["train", "--model", "course_cnn", "--quiet", *TINY, "--seed", "4", *extra,
                 "--save", str(tmp_path / name)])


def test_resume_takes_the_checkpoints_settings_and_refuses_conflicting_ones(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "1", "--lr", "0.002", "--optimizer", "sgd") == 0
    ck = str(tmp_path / "ck.npz")
    for option, value in (("--lr", "0.01"), ("--seed", "5"), ("--batch-size", "16"), ("--dataset", "fashion-mnist"),
                          ("--optimizer", "adam"), ("--model", "simple_cnn"), ("--dtype", "float64")):
        capsys.readouterr()
        assert main(["train", "--resume", ck, "--epochs", "2", option, value]) == 2, option
        err = capsys.readouterr().err
        assert option in err and value in err and "drop" in err, err
    # nothing given but the total epochs: the checkpoint's settings (SGD, lr 0.002, seed 4 ...) continue
    assert main(["train", "--resume", ck, "--epochs", "2", "--test-samples", "100", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", ck, "--epochs", "1"]) == 2
    assert "trained 1 epochs already" in capsys.readouterr().err


def test_resume_of_a_cosine_schedule_keeps_its_horizon(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "3", "--scheduler", "cosine", name="cos.npz") == 0
    part = str(tmp_path / "part.npz")
    assert main(["train", "--model", "course_cnn", "--quiet", *TINY, "--seed", "4", "--epochs", "2",
                 "--scheduler", "cosine", "--save", part]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", part, "--epochs", "5"]) == 2  # planned for 2: lr would be 0 beyond
    assert "cosine schedule over 2 epochs" in capsys.readouterr().err


def test_a_run_stopped_by_a_nan_records_where_and_cannot_be_resumed(tmp_path, capsys):
    rc = _train(tmp_path, "--epochs", "3", "--lr", "1e30", "--optimizer", "sgd", "--momentum", "0", name="nan.npz")
    assert rc == 1
    from engine.checkpoint import load_checkpoint
    ckpt = load_checkpoint(tmp_path / "nan.npz", restore_rng=False)
    stopped = ckpt.extra["stopped"]
    assert stopped["epoch"] >= 1 and stopped["step"] >= 1 and "training stopped" in stopped["reason"]
    assert ckpt.epoch == stopped["epoch"] - 1  # the epoch that did not complete is not counted
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "nan.npz"), "--epochs", "4"]) == 2
    assert "non-finite loss" in capsys.readouterr().err
