"""Reports: the stdout table, JSON, CSV, the plot, and the core issue's verdicts."""
from __future__ import annotations

import csv
import json
import math
import os

from .harness import Result
from .suites import OP_HELP

ROW_FIELDS = ["op", "case", "shape", "path", "role", "status", "median_ms", "min_ms", "max_ms", "first_ms",
              "repeats", "gflops", "pct_peak", "vs_gemm", "vs_torch", "speedup_vs_naive", "naive_estimated",
              "workspace_bytes", "max_rel_err", "reference", "flops", "note"]
EXTRA_FIELDS = ["N", "C", "H", "W", "O", "k", "kw", "stride", "pad", "pad_w", "dilation", "groups", "gemm_M",
                "gemm_N", "gemm_K", "scaling_axis", "scaling_value", "naive_predicted_s"]

#: Targets of the core issue.
TARGET_VS_TORCH = 1.25
TARGET_VS_GEMM = 1.3
#: The sweep's bar: a point slower than this many times PyTorch's time counts as bad.
SWEEP_WORSE_THAN = 1.3


def derive(results: list[Result], peak_gflops: float | None = None) -> list[dict]:
    """One dict per result, with the ratios computed inside its case; ``pct_peak``
    (conv rows, when ``peak_gflops`` is given) is GFLOP/s as a percentage of the
    machine's measured FMA peak on the bench's threads."""
    rows = []
    timed = [r for r in results if r.times]
    gemm = next((r.median_ms for r in timed if r.role == "gemm"), None)
    peer = next((r.median_ms for r in timed if r.role == "peer"), None)
    naive = next((r for r in timed if r.role == "naive"), None)
    for r in results:
        med = r.median_ms
        row = {
            "op": r.op, "case": r.case, "shape": r.shape, "path": r.path, "role": r.role, "status": r.status,
            "median_ms": med, "min_ms": r.min_ms, "max_ms": r.max_ms, "first_ms": r.first_ms,
            "repeats": len(r.times), "flops": r.flops,
            "gflops": (r.flops / (med / 1e3) / 1e9) if med and r.flops else None,
            "pct_peak": (100.0 * r.flops / (med / 1e3) / 1e9 / peak_gflops
                         if med and r.flops and peak_gflops and r.op.startswith("conv2d") else None),
            "vs_gemm": (med / gemm) if med and gemm and r.role != "gemm" else None,
            "vs_torch": (med / peer) if med and peer and r.role != "peer" else None,
            "speedup_vs_naive": (naive.median_ms / med) if med and naive and r is not naive else None,
            "naive_estimated": bool(naive.estimated) if naive is not None and r is not naive else r.estimated,
            "workspace_bytes": r.workspace_bytes, "max_rel_err": r.max_rel_err, "reference": r.reference,
            "note": r.note,
        }
        for k in EXTRA_FIELDS:
            row[k] = r.extra.get(k)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- table
COLUMNS = [("case", "layer", 26, "<"), ("shape", "shape", 29, "<"), ("path", "path", 13, "<"),
           ("median_ms", "median ms", 10, ">"), ("min_ms", "min", 9, ">"), ("max_ms", "max", 9, ">"),
           ("first_ms", "1st ms", 8, ">"), ("gflops", "GFLOP/s", 8, ">"), ("pct_peak", "%peak", 5, ">"), ("vs_gemm", "/GEMM", 6, ">"), ("vs_torch", "/torch", 6, ">"),
           ("workspace_bytes", "im2col MiB", 10, ">"), ("speedup_vs_naive", "x naive", 10, ">"),
           ("note", "note", 0, "<")]


def _fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}" if v < 1e5 else f"{v:.3g}"


def _cell(row, key):
    v = row.get(key)
    if key == "first_ms":
        return _fmt_ms(v)
    if key in ("median_ms", "min_ms", "max_ms"):
        if row["status"] not in ("ok", "est.") and key == "median_ms":
            return row["status"]
        s = _fmt_ms(v)
        return (s + "~") if (row["status"] == "est." and v is not None) else s
    if key == "gflops":
        return "-" if v is None else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
    if key in ("vs_gemm", "vs_torch"):
        return "-" if v is None else f"{v:.2f}"
    if key == "pct_peak":
        return "-" if v is None else f"{v:.0f}"
    if key == "workspace_bytes":
        return "-" if v is None else f"{v / 2 ** 20:.2f}"
    if key == "speedup_vs_naive":
        if v is None:
            return "-"
        s = f"{v:.0f}x" if v >= 10 else f"{v:.1f}x"
        return s + (" est." if row.get("naive_estimated") else "")
    if key == "case":
        return str(v)[:26]
    return "" if v is None else str(v)


def table_header(op: str | None = None) -> str:
    head = "  ".join(f"{title:{align}{width}}" if width else title for _, title, width, align in COLUMNS)
    lines = []
    if op is not None:
        lines += ["", f"== {op}: {OP_HELP.get(op, '')}"]
    lines += [head, "-" * min(len(head) + 20, 160)]
    return "\n".join(lines)


def table_rows(rows: list[dict]) -> str:
    out = []
    for row in rows:
        cells = []
        for key, _, width, align in COLUMNS:
            text = _cell(row, key)
            cells.append(f"{text:{align}{width}}" if width else text)
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def legend() -> str:
    return ("median/min/max over interleaved repeats; 1st ms = the first (checked) call, apart: on a GPU it "
            "includes kernel compilation; '~' = estimated from a smaller batch (est.); "
            "%peak = GFLOP/s / the measured FMA peak on the bench's threads (header); "
            "/GEMM = time / bare GEMM of the same M.N.K in this run; /torch = time / PyTorch; "
            "im2col MiB = workspace of one chunk; x naive = speed-up over naive; "
            "WRONG/ERROR paths were not timed (see note).")


# ----------------------------------------------------------------------------- files
def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(path: str, meta: dict, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"meta": meta, "rows": [{k: _clean(v) for k, v in r.items()} for r in rows]}, fh, indent=1,
                  default=str)
        fh.write("\n")


def _flat(prefix, value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for i, v in enumerate(value):
            _flat(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, value))


def write_csv(path: str, meta: dict, rows: list[dict]) -> None:
    """Rows as CSV, preceded by ``# key: value`` lines with the machine facts
    (read with ``pandas.read_csv(path, comment='#')`` or skip lines starting with '#')."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    facts = []
    _flat("", meta, facts)
    fields = ROW_FIELDS + EXTRA_FIELDS
    with open(path, "w", newline="") as fh:
        fh.writelines(f"# {k}: {str(v).replace(chr(10), ' ')}\n" for k, v in facts)
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if _clean(r.get(k)) is None else r.get(k)) for k in fields})


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


# ----------------------------------------------------------------------------- plot
def plot_available() -> str | None:
    """None if matplotlib can be imported, else the message to show."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return (f"--plot needs matplotlib, which is not installed ({exc}); install it with "
                "`pip install matplotlib` or `pip install -e .[bench]`, or leave out --plot")
    return None


def write_plot(path: str, meta: dict, rows: list[dict]) -> None:
    """Speed-ups (over naive, and time relative to PyTorch) per layer and, for
    scaling shapes, time against work for each path; for a run with a summary
    (sweep, layers) the engine/PyTorch ratio per point (:func:`write_ratio_plot`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r["median_ms"] is not None]
    if meta.get("summary"):  # sweep, layers: engine/PyTorch per point
        return write_ratio_plot(path, meta, rows)
    sweep = [r for r in timed if r.get("scaling_axis")]
    other = [r for r in timed if not r.get("scaling_axis")]
    panels = []
    if any(r["speedup_vs_naive"] for r in other):
        panels.append("naive")
    if any(r["vs_torch"] for r in other):
        panels.append("torch")
    axes_names = sorted({r["scaling_axis"] for r in sweep})
    panels += [f"sweep:{a}" for a in axes_names]
    if not panels:
        panels = ["gflops"]
    n_cases = max(len({(r["op"], r["case"]) for r in other if r.get(k)})
                  for k in ("speedup_vs_naive", "vs_torch", "gflops"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(13.0, 0.32 * n_cases), 4.6 * len(panels)),
                             squeeze=False)
    threads = (meta.get("threads") or {}).get("requested")
    gpu = (meta.get("cupy") or {}).get("gpu") if meta.get("backend") == "cupy" else None
    title = (f"{meta.get('command', 'python -m engine.bench')}\n{meta.get('dtype')}, "
             f"{gpu or meta.get('cpu_model') or ''}, {threads} threads, {meta.get('date_utc', '')[:10]}")
    fig.suptitle(title, fontsize=10)

    all_paths = list(dict.fromkeys(r["path"] for r in timed))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {p: palette[i % len(palette)] for i, p in enumerate(all_paths)}

    def grouped(ax, key, ylabel, log, reference_line=None):
        data = [r for r in other if r.get(key)]
        cases = list(dict.fromkeys((r["op"], r["case"]) for r in data))
        width = 0.8 / max(1, max((sum(1 for r in data if (r["op"], r["case"]) == c) for c in cases), default=1))
        seen = set()
        for i, c in enumerate(cases):
            mine = [r for r in data if (r["op"], r["case"]) == c]
            for j, r in enumerate(mine):
                x = i + (j - (len(mine) - 1) / 2) * width
                hatch = "//" if r.get("naive_estimated") and key == "speedup_vs_naive" else None
                ax.bar(x, r[key], width, color=color[r["path"]], hatch=hatch,
                       label=None if r["path"] in seen else r["path"])
                seen.add(r["path"])
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"{op.replace('conv2d_', '')}\n{c[:22]}" for op, c in cases], fontsize=7,
                           rotation=60, ha="right")
        if log:
            ax.set_yscale("log")
        if reference_line:
            ax.axhline(reference_line, color="k", lw=0.8, ls="--")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, ncol=6)
        ax.grid(axis="y", alpha=0.3)

    for ax, panel in zip(axes[:, 0], panels):
        if panel == "naive":
            grouped(ax, "speedup_vs_naive", "speed-up over naive (x, log; hatched: naive est.)", True, 1)
        elif panel == "torch":
            grouped(ax, "vs_torch", "time / PyTorch (lower is better)", True, 1)
        elif panel == "gflops":
            grouped(ax, "gflops", "GFLOP/s", False)
        else:
            axis = panel.split(":", 1)[1]
            pts = [r for r in sweep if r["scaling_axis"] == axis]
            for op in dict.fromkeys(r["op"] for r in pts):
                for p in dict.fromkeys(r["path"] for r in pts if r["op"] == op):
                    sel = sorted((r for r in pts if r["path"] == p and r["op"] == op),
                                 key=lambda r: r["scaling_value"])
                    ax.plot([r["flops"] for r in sel], [r["median_ms"] for r in sel], marker="o",
                            label=f"{op} {p}", ls="--" if any(r["status"] == "est." for r in sel) else "-")
                    for r in sel[:: max(1, len(sel) // 5)]:
                        ax.annotate(f"{axis}={r['scaling_value']}", (r["flops"], r["median_ms"]), fontsize=6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("FLOPs per call (log)")
            ax.set_ylabel("median ms (log)")
            ax.set_title(f"scaling over {axis}: cost against work", fontsize=9)
            ax.legend(fontsize=7, ncol=3)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- core verdicts
def core_verdicts(rows: list[dict], engine_path: str = "gemm") -> tuple[str, int, int]:
    """The core issue's checks: engine median <= 1.25x PyTorch's for each op and
    shape; conv forward <= 1.3x the bare GEMM. Returns (text, passes, misses)."""
    lines = [f"core targets: engine {engine_path!r} median <= {TARGET_VS_TORCH}x PyTorch median; "
             f"conv forward <= {TARGET_VS_GEMM}x bare GEMM",
             "(verdicts on medians; the ratios of the minima follow in brackets, for a noisy machine)",
             f"{'op':<14} {'layer':<26} {'engine ms':>10} {'torch ms':>9} {'/torch':>7} {'':<5} "
             f"{'GEMM ms':>8} {'/GEMM':>6} {'':<5} {'[min /torch, /GEMM]'}"]
    passes = misses = 0
    cases = list(dict.fromkeys((r["op"], r["case"]) for r in rows))
    for op, case in cases:
        mine = [r for r in rows if (r["op"], r["case"]) == (op, case)]
        eng = next((r for r in mine if r["path"] == engine_path), None)
        peer = next((r for r in mine if r["role"] == "peer"), None)
        gemm = next((r for r in mine if r["role"] == "gemm"), None)
        if eng is None:
            continue
        if eng["median_ms"] is None:
            lines.append(f"{op:<14} {case[:26]:<26} {eng['status']:>10}  MISS ({eng['note']})")
            misses += 1
            continue
        t_txt, t_verdict = "-", "n/a"
        if peer is not None and peer["median_ms"] is not None:
            ratio = eng["median_ms"] / peer["median_ms"]
            t_verdict = "PASS" if ratio <= TARGET_VS_TORCH else "MISS"
            passes, misses = passes + (t_verdict == "PASS"), misses + (t_verdict == "MISS")
            t_txt = f"{peer['median_ms']:9.2f} {ratio:7.2f}"
        else:
            t_txt = f"{'-':>9} {'-':>7}"
            t_verdict = "n/a (no PyTorch)"
        g_txt, g_verdict = f"{'-':>8} {'-':>6}", ""
        if op == "conv2d_fwd" and gemm is not None and gemm["median_ms"] is not None:
            ratio = eng["median_ms"] / gemm["median_ms"]
            g_verdict = "PASS" if ratio <= TARGET_VS_GEMM else "MISS"
            passes, misses = passes + (g_verdict == "PASS"), misses + (g_verdict == "MISS")
            g_txt = f"{gemm['median_ms']:8.2f} {ratio:6.2f}"
        mins = []
        for other in (peer, gemm if op == "conv2d_fwd" else None):
            ok = other is not None and other.get("min_ms") and eng.get("min_ms")
            mins.append(f"{eng['min_ms'] / other['min_ms']:.2f}" if ok else "-")
        lines.append(f"{op:<14} {case[:26]:<26} {eng['median_ms']:10.2f} {t_txt} {t_verdict:<5} {g_txt} "
                     f"{g_verdict:<5} [{mins[0]}, {mins[1]}]")
    lines.append(f"core: {passes} PASS, {misses} MISS")
    return "\n".join(lines), passes, misses


# ----------------------------------------------------------------------------- engine vs PyTorch summary
def _geomean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(rows: list[dict], engine_path: str = "gemm", worse_than: float = SWEEP_WORSE_THAN) -> dict:
    """Engine time / PyTorch time over the run's points (one point = one op on
    one shape): per op the geometric mean, the worst point and how many are
    worse than ``worse_than``; overall the same across ops, and the points that
    could not be compared (engine WRONG/ERROR, no peer). Medians throughout."""
    per_op: dict[str, dict] = {}
    failed = []
    for op, case in dict.fromkeys((r["op"], r["case"]) for r in rows):
        mine = [r for r in rows if (r["op"], r["case"]) == (op, case)]
        eng = next((r for r in mine if r["path"] == engine_path), None)
        peer = next((r for r in mine if r["role"] == "peer"), None)
        d = per_op.setdefault(op, {"points": [], "missing": []})
        if eng is None or eng["median_ms"] is None or peer is None or peer["median_ms"] is None:
            why = (eng["status"] if eng is not None and eng["median_ms"] is None
                   else "no engine row" if eng is None else "no PyTorch time")
            d["missing"].append({"case": case, "why": why})
            if eng is not None and eng["status"] in ("WRONG", "ERROR"):
                failed.append({"op": op, "case": case, "status": eng["status"], "note": eng.get("note")})
            continue
        d["points"].append({"case": case, "shape": eng["shape"], "ratio": eng["median_ms"] / peer["median_ms"],
                            "engine_ms": eng["median_ms"], "torch_ms": peer["median_ms"],
                            "pct_peak": eng.get("pct_peak")})
    out = {"engine_path": engine_path, "worse_than": worse_than, "ops": {}, "failed": failed}
    every = []
    for op, d in per_op.items():
        pts = d["points"]
        every += [dict(p, op=op) for p in pts]
        worst = max(pts, key=lambda p: p["ratio"]) if pts else None
        out["ops"][op] = {"points": len(pts), "geomean": _geomean(p["ratio"] for p in pts),
                          "worst": worst, "worse_than_count": sum(p["ratio"] > worse_than for p in pts),
                          "missing": d["missing"]}
    worst = max(every, key=lambda p: p["ratio"]) if every else None
    out.update(points=len(every), geomean=_geomean(p["ratio"] for p in every), worst=worst,
               worse_than_count=sum(p["ratio"] > worse_than for p in every))
    return out


def summary_text(summary: dict) -> str:
    """The summary as lines for the report."""
    t = summary["worse_than"]
    lines = [f"summary: engine {summary['engine_path']!r} median / PyTorch median, over the points of each op "
             f"(geometric mean; worst; points worse than {t}x)",
             f"{'op':<16} {'points':>6} {'geomean':>8} {'>' + str(t) + 'x':>6}  worst"]

    def fmt(v):
        return "-" if v is None else f"{v:.2f}"
    for op, d in summary["ops"].items():
        w = d["worst"]
        wtxt = f"{w['ratio']:.2f}x {w['case']} ({w['shape']})" if w else "-"
        miss = f"; {len(d['missing'])} not compared" if d["missing"] else ""
        lines.append(f"{op:<16} {d['points']:>6} {fmt(d['geomean']):>8} {d['worse_than_count']:>6}  {wtxt}{miss}")
    w = summary["worst"]
    lines.append(f"{'all':<16} {summary['points']:>6} {fmt(summary['geomean']):>8} "
                 f"{summary['worse_than_count']:>6}  "
                 + (f"{w['ratio']:.2f}x {w['op']} {w['case']}" if w else "-"))
    for f in summary["failed"]:
        lines.append(f"FAILED CHECK: {f['op']} {f['case']}: {f['status']} {f.get('note') or ''}")
    return "\n".join(lines)


def write_ratio_plot(path: str, meta: dict, rows: list[dict], engine_path: str = "gemm") -> None:
    """Engine time / PyTorch time per point (x: the run's shapes in order; one
    marker series per op), log y, lines at 1.0 and the sweep's bar."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(rows, engine_path)
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(12.0, 0.28 * len(cases)), 6.5))
    markers = "osD^v<>"
    for i, (op, d) in enumerate(summary["ops"].items()):
        mine = {}
        for r in rows:
            if r["op"] == op and r["path"] == engine_path and r.get("vs_torch"):
                mine[r["case"]] = r["vs_torch"]
        xs = [cases.index(c) for c in mine]
        gm = d["geomean"]
        ax.plot(xs, list(mine.values()), markers[i % len(markers)], ls="none", ms=5, alpha=0.8,
                label=f"{op.replace('conv2d_', '')} (geomean {gm:.2f})" if gm else op)
    ax.axhline(1.0, color="k", lw=0.9)
    ax.axhline(summary["worse_than"], color="r", lw=0.9, ls="--", label=f"{summary['worse_than']}x")
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c[:30] for c in cases], fontsize=6, rotation=70, ha="right")
    ax.set_ylabel("engine time / PyTorch time (log; lower is better)")
    threads = (meta.get("threads") or {}).get("requested")
    ax.set_title(f"{meta.get('command', 'python -m engine.bench')}\n{meta.get('dtype')}, {meta.get('cpu_model') or ''}, "
                 f"{threads} threads, {meta.get('date_utc', '')[:10]}, load {meta.get('load_average_start')}",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=5)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(json_path: str, png_path: str) -> None:
    """Redraw the plot of a saved run: ``python -m engine.bench.report RUN.json OUT.png``."""
    with open(json_path) as fh:
        data = json.load(fh)
    write_plot(png_path, data["meta"], data["rows"])


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 3:
        sys.exit("usage: python -m engine.bench.report RUN.json OUT.png  (redraws the plot of a saved run)")
    missing = plot_available()
    if missing:
        sys.exit(missing)
    replot(sys.argv[1], sys.argv[2])
