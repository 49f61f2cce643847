"""Reports: the stdout table, JSON, CSV, the plot, and the core issue's verdicts."""
from __future__ import annotations

import csv
import json
import math
import os

from .harness import Result
from .suites import OP_HELP

ROW_FIELDS = ["op", "case", "shape", "path", "role", "status", "median_ms", "min_ms", "max_ms", "first_ms",
              "repeats", "gflops", "vs_gemm", "vs_torch", "speedup_vs_naive", "naive_estimated",
              "workspace_bytes", "max_rel_err", "reference", "flops", "note"]
EXTRA_FIELDS = ["N", "C", "H", "W", "O", "k", "stride", "pad", "gemm_M", "gemm_N", "gemm_K", "sweep_axis",
                "sweep_value", "naive_predicted_s"]

#: Targets of the core issue.
TARGET_VS_TORCH = 1.25
TARGET_VS_GEMM = 1.3


def derive(results: list[Result]) -> list[dict]:
    """One dict per result, with the ratios computed inside its case."""
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
COLUMNS = [("case", "layer", 26, "<"), ("shape", "shape", 25, "<"), ("path", "path", 13, "<"),
           ("median_ms", "median ms", 10, ">"), ("min_ms", "min", 9, ">"), ("max_ms", "max", 9, ">"),
           ("first_ms", "1st ms", 8, ">"), ("gflops", "GFLOP/s", 8, ">"), ("vs_gemm", "/GEMM", 6, ">"), ("vs_torch", "/torch", 6, ">"),
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
    sweep shapes, time against work for each path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r["median_ms"] is not None]
    sweep = [r for r in timed if r.get("sweep_axis")]
    other = [r for r in timed if not r.get("sweep_axis")]
    panels = []
    if any(r["speedup_vs_naive"] for r in other):
        panels.append("naive")
    if any(r["vs_torch"] for r in other):
        panels.append("torch")
    axes_names = sorted({r["sweep_axis"] for r in sweep})
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
            pts = [r for r in sweep if r["sweep_axis"] == axis]
            for op in dict.fromkeys(r["op"] for r in pts):
                for p in dict.fromkeys(r["path"] for r in pts if r["op"] == op):
                    sel = sorted((r for r in pts if r["path"] == p and r["op"] == op),
                                 key=lambda r: r["sweep_value"])
                    ax.plot([r["flops"] for r in sel], [r["median_ms"] for r in sel], marker="o",
                            label=f"{op} {p}", ls="--" if any(r["status"] == "est." for r in sel) else "-")
                    for r in sel[:: max(1, len(sel) // 5)]:
                        ax.annotate(f"{axis}={r['sweep_value']}", (r["flops"], r["median_ms"]), fontsize=6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("FLOPs per call (log)")
            ax.set_ylabel("median ms (log)")
            ax.set_title(f"sweep over {axis}: cost against work", fontsize=9)
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
