"""The GPU run kit without a GPU (every CI run): bench/gpu_run.sh parses, its
stage timeouts fit the budget, its dry run (GPU_RUN_DRY=1) builds and runs
every stage's command on the CPU, and bench/gpu_bench.py's stages run in their
dry mode and report. Also the bench's GPU rules: no naive path unless asked,
never an estimate from a smaller batch."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench import gpu_bench, harness
from engine.bench.ops import default_paths

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_run.sh"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bench/gpu_run.sh needs bash")


@needs_bash
def test_script_parses():
    proc = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@needs_bash
def test_stage_timeouts_fit_seven_minutes():
    proc = subprocess.run([BASH, str(SCRIPT), "plan"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = re.findall(r"^(\w+)\s+timeout\s+(\d+)s \+ (\d+)s kill grace", proc.stdout, re.M)
    assert [s for s, _, _ in stages] == ["setup", "env", "compile", "tests", "bandwidth", "conv", "step", "nccl",
                                         "sanitizer", "report"]
    total = sum(int(t) + int(k) for _, t, k in stages)
    assert total <= 420, f"stage timeouts and kill grace add up to {total} s > 420 s"
    assert f"total {total}s" in proc.stdout


@needs_bash
def test_unknown_stage_is_refused(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_RUN_WORK=str(tmp_path / "work"))
    proc = subprocess.run([BASH, str(SCRIPT), "benchmark-everything"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "unknown stage 'benchmark-everything'" in proc.stderr


@needs_bash
def test_dry_run_builds_every_shell_stage(tmp_path):
    """setup, compile, sanitizer (the pytest selection it would run under
    compute-sanitizer) and report, on the CPU: their commands are built and
    run, and $OUT gets the three files the device tool can bring back."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, GPU_RUN_DRY="1", OUT=str(out), GPU_RUN_WORK=str(work), PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([BASH, str(SCRIPT), "setup", "compile", "sanitizer", "report"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-run-logs.tar.gz", "results.json", "summary.txt"]
    rows = [line.split("\t") for line in (work / "stages.tsv").read_text().splitlines()]
    assert [r[0] for r in rows] == ["setup", "compile", "sanitizer", "report"]
    assert all(r[1] == "0" for r in rows), rows
    commands = (work / "commands.txt").read_text()
    assert "timeout --kill-after=3 30" in commands and "gpu_bench compile" in commands
    sanitizer_log = (work / "sanitizer.log").read_text()
    selected = re.search(r"(\d+)/\d+ tests collected", sanitizer_log)
    assert selected and int(selected[1]) >= 40, sanitizer_log[-2000:]  # the -k expression selects kernel tests
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("DRY RUN on the CPU") and "PASS" not in summary and "MISS" not in summary
    assert (work / "kernel-cache").is_dir()


def test_stages_run_dry_and_report(tmp_path):
    """bandwidth, conv and step in their dry mode (numpy backend, tiny shapes,
    PyTorch CPU): the same code the GPU runs, built against today's engine and
    bench APIs; then the report merges them."""
    pytest.importorskip("torch", reason="the conv and step stages compare with PyTorch")
    data = {}
    for stage in ("env", "bandwidth", "conv", "step"):
        assert gpu_bench.main([stage, "--work", str(tmp_path), "--dry-run"]) == 0
        data[stage] = json.loads((tmp_path / f"{stage}.json").read_text())
        assert data[stage]["dry_run"] is True
    assert all(r["variants_agree"] for r in data["bandwidth"]["conv"])
    conv_rows = data["conv"]["rows"]
    assert {r["op"] for r in conv_rows} == {"fwd", "fwd+bwd"}
    for r in conv_rows:
        assert not r["errors"], r["errors"]
        assert max(r["rel_err"].values()) < 1e-4
        assert r["median_ms"]["gemm"] > 0 and r["median_ms"]["cudnn"] > 0 and r["median_ms"]["cublas-gemm"] > 0
    step = data["step"]["rows"][0]
    assert set(step["status"].values()) == {"ok"}, step["status"]
    assert {"gemm", "gemm-i64", "torch-cpu"} <= set(step["median_ms"])
    assert gpu_bench.main(["report", "--work", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "DRY RUN" in summary and "| SimpleCNN step (float32)" in summary
    assert "kernel variant, im2col" in summary


def test_pytest_log_counts_survive_a_cut_off_run():
    log = ("tests/test_a.py::test_x[cupy] PASSED [ 1%]\n"
           "tests/test_a.py::test_y[cupy-auto] FAILED [ 2%]\n"
           "tests/test_b.py::test_z SKIPPED (no) [ 3%]\n")
    counts = gpu_bench.pytest_counts(log)
    assert (counts["passed"], counts["failed"], counts["skipped"], counts["summary_line"]) == (1, 1, 1, None)
    done = log + "==== 1 failed, 1 passed, 1 skipped, 5 deselected in 12.34s ====\n"
    assert gpu_bench.pytest_counts(done)["summary_line"] == "1 failed, 1 passed, 1 skipped, 5 deselected"


def test_variant_decision_is_a_geometric_mean():
    data = {"bandwidth": {"conv": [{"median_ms": {"im2col/i64": 4.0, "im2col/auto": 1.0}},
                                   {"median_ms": {"im2col/i64": 1.0, "im2col/auto": 1.0}}], "pool": []}}
    (line,) = gpu_bench.variant_decision(data)
    assert "im2col" in line and "= 2.00 (geometric mean of 2" in line


def test_bench_on_a_gpu_skips_naive_and_never_extrapolates():
    assert "naive" not in default_paths("cupy")
    assert "naive" in default_paths("numpy")
    gpu = harness.Policy(**harness.naive_policy(1.0, True, host_memory=False))
    assert gpu.naive_estimate is False and "never estimated" in gpu.naive_skip_reason
    cpu = harness.Policy(**harness.naive_policy(1.0, True, host_memory=True))
    assert cpu.naive_estimate is True


def test_naive_over_the_limit_on_a_gpu_is_skipped_not_estimated():
    """A naive path asked for on a GPU, predicted over the suite's limit: skipped
    with the reason, never timed on a smaller batch and scaled."""
    calls = []

    def make_naive(nb):
        calls.append(nb)
        return harness.Path("naive", lambda: None, lambda r: {}), (lambda: {})
    case = harness.Case("conv2d_fwd", "c", "s", 1.0, {}, "ref", [], batch=64, make_naive=make_naive)
    policy = harness.Policy(**harness.naive_policy(0.0, True, host_memory=False))
    results = harness.run_case(case, harness.Timers(_HostBackend()), policy)
    naive = results[0]
    assert naive.status == "skipped" and "launch-bound" in naive.note and not naive.times
    assert calls == [1]  # only the batch-1 probe: no smaller-batch estimate


class _HostBackend:
    def synchronize(self):
        pass
