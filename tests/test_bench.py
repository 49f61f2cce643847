"""The benchmark harness end to end on tiny shapes (seconds): the CLI, the
check-before-timing (an injected broken path must be WRONG, not timed), the
JSON/CSV files, the naive estimate, the generic-method binding."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import backends
from engine.bench import harness, report
from engine.kernels import native
from engine.bench.__main__ import main
from engine.bench.ops import IM2COL_METHODS, Env, build_case, generic_methods
from engine.bench.suites import SMOKE_CONV, get_suite, parse_shape

FAST = ["--suite", "smoke", "--quiet", "--threads", "1", "--repeat", "1", "--warmup", "0"]


def _run(tmp_path, *extra):
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    rc = main(FAST + ["--json", str(js), "--csv", str(cs), *extra])
    data = json.loads(js.read_text())
    return rc, data, report.read_csv(str(cs))


@pytest.mark.parametrize("module, cwd", [("engine.bench", "elsewhere"), ("bench", "checkout")],
                         ids=["installed-name", "checkout-shim"])
def test_help_explains_every_option(module, cwd, tmp_path):
    """``python -m engine.bench`` from anywhere; ``python -m bench`` from the repository root."""
    folder = tmp_path if cwd == "elsewhere" else Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60,
                         check=False, cwd=folder)
    assert out.returncode == 0, out.stderr
    for opt in ("--backend", "--suite", "--ops", "--paths", "--repeat", "--dtype", "--threads", "--json", "--csv",
                "--plot", "quick", "full", "sweep", "scaling", "core", "layers", "sweep-smoke"):
        assert opt in out.stdout


def test_smoke_end_to_end_writes_parseable_json_and_csv(tmp_path):
    rc, data, rows_csv = _run(tmp_path, "--ops", "conv2d_fwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "maxpool_bwd",
                              "train_step")
    assert rc == 0, [r for r in data["rows"] if r["status"] not in ("ok", "est.")]
    meta, rows = data["meta"], data["rows"]
    assert meta["complete"] and meta["backend"] == "numpy" and meta["dtype"] == "float32"
    for key in ("cpu_model", "cpu_usable", "blas", "threads", "load_average_start", "reference"):
        assert key in meta
    assert meta["threads"]["requested"] == 1
    assert len(rows_csv) == len(rows)
    assert {r["op"] for r in rows} == {"conv2d_fwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "maxpool_bwd", "train_step"}
    fwd = [r for r in rows if r["op"] == "conv2d_fwd"]
    for case in {r["case"] for r in fwd}:
        mine = {r["path"]: r for r in fwd if r["case"] == case}
        assert {"naive", "strided", "gemm", "GEMM"} <= set(mine)
        for name in ("naive", "strided", "gemm"):
            r = mine[name]
            assert r["status"] == "ok" and r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
            assert r["vs_gemm"] > 0 and r["gflops"] > 0
            assert r["max_rel_err"] < 1e-4
        assert mine["gemm"]["speedup_vs_naive"] > 0
        if native.library() is not None:  # the C kernels build no column matrix; the BLAS path does
            assert mine["gemm"]["workspace_bytes"] is None and mine["gemm-blas"]["workspace_bytes"] > 0
            assert mine["gemm-blas"]["status"] == "ok" and "GEMM-blas" in mine
        else:
            assert mine["gemm"]["workspace_bytes"] > 0
    csv_fwd = [r for r in rows_csv if r["op"] == "conv2d_fwd" and r["path"] == "gemm"]
    assert csv_fwd and all(float(r["median_ms"]) > 0 for r in csv_fwd)


def test_broken_path_is_reported_wrong_and_not_timed(tmp_path, capsys):
    rc, data, rows_csv = _run(tmp_path, "--inject-broken", "--ops", "conv2d_fwd", "maxpool_fwd")
    assert rc == 3  # some path was WRONG
    broken = [r for r in data["rows"] if r["path"] == "broken"]
    assert len(broken) == 3  # two conv shapes and one pool
    for r in broken:
        assert r["status"] == "WRONG" and r["median_ms"] is None and r["repeats"] == 0
        assert "max rel err" in r["note"]
    good = [r for r in data["rows"] if r["path"] == "gemm"]
    assert good and all(r["status"] == "ok" for r in good)
    assert "WRONG" in capsys.readouterr().out
    assert [r["status"] for r in rows_csv if r["path"] == "broken"] == ["WRONG"] * 3


def test_without_torch_reference_is_the_engine_in_float64(tmp_path):
    rc, data, _ = _run(tmp_path, "--no-torch", "--ops", "conv2d_bwd")
    assert rc == 0
    assert data["meta"]["reference"].startswith("engine gemm float64")
    assert not [r for r in data["rows"] if r["role"] == "peer"]


def test_generic_slicing_im2col_binding_is_scoped():
    b = backends.get("numpy")
    assert type(b).im2col is not backends.Backend.im2col  # numpy overrides it
    with generic_methods(b, IM2COL_METHODS) as bound:
        assert set(bound) >= {"im2col", "col2im"}
        assert b.im2col.__func__ is backends.Backend.im2col
    assert "im2col" not in b.__dict__ and b.im2col.__func__ is type(b).im2col


def test_gemm_slicing_path_checks_and_times(tmp_path):
    rc, data, _ = _run(tmp_path, "--ops", "conv2d_bwd", "--paths", "gemm", "gemm-slicing")
    assert rc == 0
    sl = [r for r in data["rows"] if r["path"] == "gemm-slicing"]
    assert len(sl) == len(SMOKE_CONV) and all(r["status"] == "ok" and r["median_ms"] > 0 for r in sl)


@pytest.mark.parametrize("estimate", [True, False])
def test_naive_is_estimated_or_skipped_when_too_slow(estimate):
    env = Env("numpy", "float32", ["naive", "gemm"], use_torch=False)
    case = build_case(env, "conv2d_fwd", SMOKE_CONV[0])
    policy = harness.Policy(warmup=0, repeat=1, naive_real_s=0.0, naive_estimate=estimate)
    results = harness.run_case(case, harness.Timers(env.backend), policy)
    naive = next(r for r in results if r.path == "naive")
    rows = report.derive(results)
    gemm_row = next(r for r in rows if r["path"] == "gemm")
    if estimate:
        assert naive.status == "est." and naive.estimated and naive.times and "est." in naive.note
        assert gemm_row["speedup_vs_naive"] > 0 and gemm_row["naive_estimated"]
        assert "est." in report.table_rows([gemm_row])
    else:
        assert naive.status == "skipped" and not naive.times and "skipped" in naive.note
        assert gemm_row["speedup_vs_naive"] is None


def test_compare_flags_shape_and_value_errors():
    ref = {"y": np.ones((2, 3))}
    assert harness.compare({"y": np.ones((2, 3))}, ref)[0] == 0
    assert harness.compare({"y": np.ones((3, 2))}, ref)[0] == np.inf
    assert harness.compare({"y": np.full((2, 3), np.nan)}, ref)[0] == np.inf
    assert harness.compare({"y": np.ones((2, 3)) * 1.1}, ref)[0] == pytest.approx(0.1)


def test_core_verdicts_pass_and_miss():
    def row(path, role, ms, op="conv2d_fwd"):
        return {"op": op, "case": "c1", "path": path, "role": role, "median_ms": ms, "status": "ok", "note": ""}
    text, passes, misses = report.core_verdicts([row("gemm", "engine", 10), row("torch-cpu", "peer", 9),
                                                 row("GEMM", "gemm", 7)])
    assert (passes, misses) == (1, 1)  # 1.11x torch passes, 1.43x GEMM misses
    assert "PASS" in text and "MISS" in text


def test_suites_and_shape_parsing():
    assert len(get_suite("full").conv) == 11 and len(get_suite("core").conv) == 5
    s = parse_shape("8,3,224,64,7,2,3")
    assert (s.oh, s.ow) == (112, 112) and s.gemm_mnk == (64, 8 * 112 * 112, 147)
    with pytest.raises(ValueError):
        parse_shape("1,2,3")


def test_plot_needs_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as exc:
        main(FAST + ["--plot", str(tmp_path / "p.png")])
    assert exc.value.code == 2


def test_plot_written_when_matplotlib_installed(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    main(FAST + ["--ops", "conv2d_fwd", "--paths", "naive", "gemm", "--plot", str(png)])
    assert png.stat().st_size > 1000


def test_every_timed_call_follows_a_burst_of_its_own_calls():
    """The harness runs each path untimed for BURST_S before each timed call (so no path is
    timed on idle cores or beside the other library's spinning workers), not for long calls
    (last one over BURST_SKIP_S) nor for a path that opts out."""
    calls = {"a": 0, "b": 0, "c": 0}

    def runner(key):
        def run():
            calls[key] += 1
        return run

    paths = [harness.Path("a", runner("a"), role="engine"),
             harness.Path("b", runner("b"), role="peer"),
             harness.Path("c", runner("c"), role="engine", burst=False)]
    results = [harness.Result(op="x", case="x", shape="x", path=p.name, role=p.role) for p in paths]
    harness.interleaved(paths, results, harness.Timers(backends.get("numpy")), warmup=0, repeat=2)
    # a zero-time call repeats until the burst has lasted BURST_S: far more than 2 timed calls
    assert calls["a"] > 10 and calls["b"] > 10
    assert calls["c"] == 2 and len(results[2].times) == 2

    slow = {"n": 0}

    def slow_run():
        slow["n"] += 1
    res = harness.Result(op="x", case="x", shape="x", path="s", role="engine", first_ms=2e3 * harness.BURST_SKIP_S)
    harness.interleaved([harness.Path("s", slow_run)], [res], harness.Timers(backends.get("numpy")), warmup=0, repeat=1)
    assert slow["n"] == 1  # its last call (the checked one) was long: timed with no burst first
