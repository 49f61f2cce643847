"""The sweep side of the bench (seconds): conv shapes with groups, dilation and
non-square kernels through every path, the sweep's smoke twin end to end (check
against float64, summary, JSON/CSV, %peak), the summary's arithmetic,
``--shape`` parsing, and the model-latency case (torch twins of the zoo)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.bench import harness, report
from engine.bench.__main__ import main
from engine.bench.ops import Env, build_case, engine_model, torch_twin
from engine.bench.suites import (SMOKE_SWEEP, SWEEP, ConvShape, ModelShape, get_suite, parse_shape,
                                 sweep_coverage)
from engine.kernels import native

FAST = ["--quiet", "--threads", "1", "--repeat", "1", "--warmup", "0"]


# --------------------------------------------------------------------------- shapes
def test_conv_shape_geometry_flops_and_labels():
    dw = ConvShape("dw", 2, 8, 9, 9, 8, 3, 2, 1, groups=8)
    assert (dw.oh, dw.ow) == (5, 5) and dw.depthwise and dw.label == "2x8x9->8 k3 s2 p1 dw"
    assert dw.flops == 2 * 2 * 8 * 25 * 9  # one input channel per output channel
    g2 = ConvShape("g2", 1, 6, 7, 7, 4, 3, 1, 1, groups=2)
    assert g2.gemm_mnk == (2, 49, 27) and g2.flops == 2 * 4 * 49 * 3 * 9 and g2.label.endswith(" g2")
    k17 = ConvShape("1x7", 2, 4, 9, 9, 5, 1, 1, 0, kw=7, pad_w=3)
    assert (k17.oh, k17.ow) == (9, 9) and k17.flops == 2 * 5 * 2 * 81 * 4 * 7
    assert "k1x7 s1 p0x3" in k17.label
    d2 = ConvShape("d2", 1, 3, 10, 10, 2, 3, 1, 0, dilation=2)
    assert (d2.oh, d2.ow) == (6, 6) and d2.label.endswith(" d2")
    with pytest.raises(ValueError):
        ConvShape("bad", 1, 6, 7, 7, 4, 3, groups=4)


def test_parse_shape_old_and_new_forms():
    assert parse_shape("8,3,224,64,7,2,3").label == "8x3x224->64 k7 s2 p3"
    assert parse_shape("64x32x14x64x3x1x1").label == "64x32x14->64 k3 s1 p1"  # the old all-x form
    assert parse_shape("2,3,8,9,4,3,1,1").label == "2x3x8x9->4 k3 s1 p1"
    s = parse_shape("8,128,17,128,1x7,1,0x3")
    assert (s.k, s.kw, s.pad, s.pad_w, s.oh, s.ow) == (1, 7, 0, 3, 17, 17)
    s = parse_shape("8,64,28,64,3,1,2,d=2,g=64")
    assert (s.dilation, s.groups, s.oh) == (2, 64, 28) and s.depthwise
    for bad in ("1,2,3", "8,64,28,64,3,1,1,g=3", "8,64,28,64,3,1,1,x=2", "8,64,28,64,3,1,1,d=2,d=2",
                "2,3,4,4,9,1,0", "8,64,28,64,3,1,1,g=2,5", "a,b,c,d,e,f,g"):
        with pytest.raises(ValueError):
            parse_shape(bad)


def test_sweep_is_a_designed_set_covering_every_axis_value_several_times():
    assert 40 <= len(SWEEP) <= 60 and len({s.name for s in SWEEP}) == len(SWEEP)
    cov = sweep_coverage(SWEEP)
    for axis, values in {"kernel": ("1", "3", "5", "7", "1x7", "7x1"), "stride": ("1", "2"),
                         "dilation": ("2",), "groups": ("1", "2", "C"), "batch": ("1", "8", "64", "128")}.items():
        for v in values:
            assert cov[axis].get(v, 0) >= 2, (axis, v, cov[axis])
    assert min(s.c for s in SWEEP) <= 3 and max(s.c for s in SWEEP) >= 512
    assert min(s.h for s in SWEEP) == 7 and max(s.h for s in SWEEP) == 224
    suite = get_suite("sweep")
    assert suite.ops == ("conv2d_fwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "conv2d_fwdbwd")
    assert suite.paths == ("gemm", "torch") and suite.summary and not suite.bare_gemm
    assert get_suite("scaling").conv[0].name == "scaling batch=1"


# --------------------------------------------------------------------------- every path takes groups/dilation
@pytest.mark.parametrize("shape", SMOKE_SWEEP, ids=lambda s: s.name)
def test_every_conv_path_matches_the_float64_reference(shape):
    env = Env("numpy", "float32", ["naive", "strided", "gemm", "gemm-blas", "torch"])
    policy = harness.Policy(warmup=0, repeat=1, naive_real_s=10.0)
    timers = harness.Timers(env.backend)
    for op in ("conv2d_fwd", "conv2d_bwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "conv2d_fwdbwd"):
        results = harness.run_case(build_case(env, op, shape), timers, policy)
        bad = [(r.path, r.status, r.note) for r in results if r.status != "ok"]
        assert not bad, (op, bad)
        assert {"gemm", "strided", "torch-cpu"} <= {r.path for r in results}


# --------------------------------------------------------------------------- the sweep end to end
def test_sweep_smoke_checks_times_and_summarizes(tmp_path, capsys):
    pytest.importorskip("torch")
    js, cs = tmp_path / "s.json", tmp_path / "s.csv"
    rc = main(FAST + ["--suite", "sweep-smoke", "--json", str(js), "--csv", str(cs)])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(js.read_text())
    rows, meta = data["rows"], data["meta"]
    assert {r["op"] for r in rows} == {"conv2d_fwd", "conv2d_bwd_dx", "conv2d_bwd_dw", "conv2d_fwdbwd"}
    assert {r["path"] for r in rows} == {"gemm", "torch-cpu"}  # no bare GEMM in the sweep
    gemm = [r for r in rows if r["path"] == "gemm"]
    assert len(gemm) == 4 * len(SMOKE_SWEEP)
    assert all(r["status"] == "ok" and r["max_rel_err"] < 1e-4 and r["vs_torch"] > 0 for r in gemm)
    summary = meta["summary"]
    assert summary["points"] == len(gemm) and not summary["failed"]
    for op in ("conv2d_fwd", "conv2d_fwdbwd"):
        ratios = [r["vs_torch"] for r in gemm if r["op"] == op]
        assert summary["ops"][op]["geomean"] == pytest.approx(math.exp(np.mean(np.log(ratios))), rel=1e-9)
        assert summary["ops"][op]["worst"]["ratio"] == pytest.approx(max(ratios))
    assert "summary: engine 'gemm'" in out and "geomean" in out and "roofline: float32 FMA peak" in out
    csv_text = cs.read_text()
    assert "# summary.ops.conv2d_fwd.geomean:" in csv_text and "# summary.worse_than_count:" in csv_text
    if native.library() is not None:
        assert meta["fma_peak"]["gflops_all"] > 0
        assert all(r["pct_peak"] > 0 for r in gemm)


def test_sweep_plot(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    png = tmp_path / "s.png"
    assert main(FAST + ["--suite", "sweep-smoke", "--no-peak", "--ops", "conv2d_fwd", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000


def _row(op, case, path, role, ms, status="ok"):
    return {"op": op, "case": case, "shape": case, "path": path, "role": role, "median_ms": ms,
            "status": status, "note": "", "pct_peak": None}


def test_summary_math_geomean_worst_and_count():
    rows = []
    for case, eng, peer in (("a", 1.0, 2.0), ("b", 3.0, 2.0), ("c", 8.0, 4.0)):
        rows += [_row("conv2d_fwd", case, "gemm", "engine", eng), _row("conv2d_fwd", case, "torch-cpu", "peer", peer)]
    rows += [_row("conv2d_fwdbwd", "a", "gemm", "engine", None, "WRONG"),
             _row("conv2d_fwdbwd", "a", "torch-cpu", "peer", 1.0),
             _row("conv2d_fwdbwd", "b", "gemm", "engine", 1.2), _row("conv2d_fwdbwd", "b", "torch-cpu", "peer", 1.0)]
    s = report.summarize(rows)
    fwd = s["ops"]["conv2d_fwd"]
    assert fwd["geomean"] == pytest.approx((0.5 * 1.5 * 2.0) ** (1 / 3))
    assert fwd["worst"]["case"] == "c" and fwd["worst"]["ratio"] == pytest.approx(2.0)
    assert fwd["worse_than_count"] == 2  # 1.5 and 2.0 are worse than 1.3
    fb = s["ops"]["conv2d_fwdbwd"]
    assert fb["points"] == 1 and fb["geomean"] == pytest.approx(1.2) and fb["worse_than_count"] == 0
    assert fb["missing"] == [{"case": "a", "why": "WRONG"}]
    assert s["failed"] and s["failed"][0]["status"] == "WRONG"
    assert s["points"] == 4 and s["worse_than_count"] == 2 and s["worst"]["op"] == "conv2d_fwd"
    assert s["geomean"] == pytest.approx((0.5 * 1.5 * 2.0 * 1.2) ** 0.25)
    text = report.summary_text(s)
    assert "FAILED CHECK: conv2d_fwdbwd a: WRONG" in text and "2.00x c" in text


# --------------------------------------------------------------------------- model latency
@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_torch_twin_takes_the_engine_state_dict(name):
    torch = pytest.importorskip("torch")
    ours = engine_model(name, "float64", 1 if name == "lenet5" else 3)
    theirs = torch_twin(torch, ours)
    assert list(theirs.state_dict()) == list(ours.state_dict())


def test_model_latency_case_checks_against_torch_float64():
    pytest.importorskip("torch")
    env = Env("numpy", "float32", ["gemm", "torch"])
    case = build_case(env, "model_infer", ModelShape("lenet5", 1, (1, 28, 28)))
    results = harness.run_case(case, harness.Timers(env.backend), harness.Policy(warmup=0, repeat=2))
    assert [(r.path, r.status) for r in results] == [("gemm", "ok"), ("torch-cpu", "ok")]
    assert case.flops and case.flops > 0
    rows = report.derive(results)
    assert rows[0]["vs_torch"] > 0
