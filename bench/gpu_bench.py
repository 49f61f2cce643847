"""The measurements of the one-call GPU run (``bench/gpu_run.sh``), one stage per call.

    python -m engine.bench.gpu_bench STAGE --work DIR [--out DIR] [--dry-run]

Stages (each writes ``DIR/STAGE.json`` and prints a short table):

``env``        GPU, driver, CUDA runtime, NVRTC, CuPy, PyTorch/cuDNN, NumPy and
               array-API package versions; the source fingerprint and commit.
``compile``    every kernel module compiled cold (empty ``CUPY_CACHE_DIR``), then
               loaded again from that cache; registers and local memory per entry
               point; the option list CuPy really handed NVRTC, against the one
               the CPU-side compile test assumes (``kernels.cupy_nvrtc_options``).
``bandwidth``  device-to-device copy against im2col, col2im and max pooling
               (forward, backward) in both kernel variants, on the core shapes;
               bytes counted once each (inputs read, outputs written).
``conv``       the core conv shapes, forward and forward+backward: the engine
               (32-bit kernels where they fit, the 64-bit ones, and keeping the
               forward's columns as ``nn.Conv2d`` does) against cuDNN (TF32 off,
               ``cudnn.benchmark`` on) and the bare cuBLAS GEMMs of the same sizes.
``step``       the SimpleCNN training step (``engine.bench``'s ``train_step``
               case) in both kernel variants against PyTorch CUDA.
``nccl``       engine.distributed on one GPU: a one-rank NCCL communicator, its
               allreduce and a DistributedOptimizer step (bench/distributed.py).
``report``     merges every stage's JSON, the pytest and compute-sanitizer logs
               into ``OUT/results.json`` and ``OUT/summary.txt``, with PASS/MISS
               for the issue's targets and the kernel-variant decision.

``--dry-run`` runs the same code on the CPU (numpy backend, tiny shapes,
PyTorch CPU as the peer, host timers), so every stage's construction is
exercised without a GPU; its numbers mean nothing and say so.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path as FsPath

import numpy as np

STAGES = ("env", "compile", "bandwidth", "conv", "step", "nccl", "report")
#: The issue's targets.
COPY_FRACTION_TARGET = 0.70   # im2col bandwidth / device copy bandwidth
CUDNN_RATIO_TARGET = 2.0      # engine conv forward+backward / cuDNN
REL_TOL = {"float32": 1e-4, "float64": 1e-9}
ROOT = FsPath(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- the rig
class Rig:
    """Backend, array module, timers and the PyTorch peer of one stage: CuPy and
    CUDA on a GPU; NumPy, host timers and PyTorch CPU in a dry run."""

    def __init__(self, dry: bool):
        from .. import backends
        from . import harness
        self.dry = dry
        self.backend = backends.get("numpy" if dry else "cupy")
        if dry:
            self.xp = np
        else:
            import cupy
            self.xp = cupy
        self.timer = "host" if dry else "cuda"
        self.timers = harness.Timers(self.backend)
        try:
            import torch
        except ImportError:
            torch = None
        self.torch = torch
        self.tdev = "cpu" if dry else "cuda"
        if torch is not None and dry:
            torch.set_num_threads(1)  # a dry run only checks construction: no thread contention
        if torch is not None and not dry:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.benchmark = True  # cuDNN's best algorithm, tuned in the warm-up

    def dev(self, a: np.ndarray):
        return self.backend.asarray(np.ascontiguousarray(a))

    def host(self, a) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(a), dtype=np.float64)

    def sync(self) -> None:
        self.backend.synchronize()

    def free(self) -> None:
        if not self.dry:
            self.xp.get_default_memory_pool().free_all_blocks()
        if self.torch is not None and not self.dry:
            self.torch.cuda.empty_cache()

    def variant(self, name: str):
        """Run with ``kernel_variant = name`` (a no-op on backends without variants)."""
        return _Variant(self.backend, name)

    def batch_seconds(self, fn, reps: int) -> float:
        """Seconds per call of ``fn`` over ``reps`` back-to-back calls between
        two events: launch overheads overlap the device work, as in a layer."""
        self.sync()
        if self.dry:
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - t0) / reps
        start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return self.xp.cuda.get_elapsed_time(start, end) / 1e3 / reps


class _Variant:
    def __init__(self, backend, name):
        self.backend, self.name, self.before = backend, name, None

    def __enter__(self):
        if hasattr(self.backend, "kernel_variant"):
            self.before = self.backend.kernel_variant
            self.backend.kernel_variant = self.name
        return self

    def __exit__(self, *exc):
        if self.before is not None:
            self.backend.kernel_variant = self.before
        return False


def in_variant(rig: Rig, name: str, fn):
    def run():
        with rig.variant(name):
            return fn()
    return run


def _window(shape):
    """``(x_shape, Window)`` of a suites.ConvShape or PoolShape."""
    from ..backends.base import Window
    p, kw, pw = shape.pad, getattr(shape, "kw", shape.k), getattr(shape, "pad_w", shape.pad)
    d = getattr(shape, "dilation", 1)
    return ((shape.n, shape.c, shape.h, shape.w),
            Window(shape.k, kw, shape.stride, shape.stride, d, d, p, p, pw, pw, shape.oh, shape.ow))


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not math.isfinite(diff):
        return math.inf
    return diff / scale if scale > 0 else diff


def _median_ms(times) -> float | None:
    return round(statistics.median(times) * 1e3, 5) if times else None


def _dump(work: FsPath, stage: str, data: dict) -> None:
    data = dict(data, stage=stage, dry_run=data.get("dry_run", False))
    path = work / f"{stage}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)  # atomic: a stage killed mid-write leaves the old file or none


def _print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [["-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r]
                        for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for r in cells:
        print("  " + "  ".join(v.rjust(wd) if i else v.ljust(wd) for i, (v, wd) in enumerate(zip(r, widths))))


# ----------------------------------------------------------------------------- env
def stage_env(work: FsPath, dry: bool) -> dict:
    from .. import backends, kernels
    from . import machine
    facts = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu_model": machine._cpu_model(), "cpu_logical": os.cpu_count(),
        "numpy": np.__version__,
        "commit": os.environ.get("GPU_RUN_COMMIT") or machine._git("rev-parse", "HEAD") or "unknown",
        "source_sha256": source_fingerprint(),
        "backends_usable": backends.available(),
        "cupy_unavailable_reason": backends.unavailable_reason("cupy"),
        "cupy": machine.cupy_facts(),
        "torch": machine.torch_facts(cuda=not dry),
        "env": {k: os.environ.get(k) for k in ("CUPY_CACHE_DIR", "CUPY_TF32", "ENGINE_CUDA_KERNELS",
                                               "CUDA_VISIBLE_DEVICES", "CUPY_COMPILE_WITH_PTX")},
        "kernel_sources": kernels.source_names(),
    }
    for mod in ("array_api_compat", "array_api_strict", "pytest", "hypothesis"):
        try:
            facts[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            facts[mod] = f"missing ({type(exc).__name__})"
    cupy_facts = facts["cupy"] or {}
    if not dry and "error" not in cupy_facts:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        facts["gpu"] = {k: props.get(k) for k in ("multiProcessorCount", "l2CacheSize", "totalGlobalMem",
                                                  "clockRate", "memoryClockRate", "memoryBusWidth",
                                                  "major", "minor")}
        facts["gpu"]["name"] = cupy_facts.get("gpu")
    print(json.dumps(facts, indent=1, default=str))
    return facts


def source_fingerprint() -> str:
    """sha256 over the kernel sources and the CuPy backend: says which code ran
    even where the run's tree carries no git history."""
    h = hashlib.sha256()
    files = sorted((ROOT / "kernels").glob("*.cu*")) + [ROOT / "kernels" / "__init__.py",
                                                        ROOT / "backends" / "cupy_backend.py"]
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- compile
def stage_compile(work: FsPath, dry: bool) -> dict:
    from .. import kernels
    modules = [(s, fp16) for s in kernels.source_names() for fp16 in (False, True)]
    out = {"modules": [], "attributes": [], "options": {}}
    if dry:
        for source, fp16 in modules:
            dtype = "float16" if fp16 else "float32"
            out["modules"].append({"source": source, "module": dtype if fp16 else "float32/float64",
                                   "entries": len(kernels.entry_points(source, fp16)),
                                   "chars": len(kernels.read_source(source)),
                                   "expected_options": kernels.cupy_nvrtc_options(
                                       kernels.compile_options(dtype), "90"),
                                   "note": "dry run: not compiled"})
        _print_table("compile (dry run: nothing compiled)", ["source", "module", "entries", "chars"],
                     [[m["source"], m["module"], m["entries"], m["chars"]] for m in out["modules"]])
        return out

    import cupy
    captured = []
    program = getattr(cupy.cuda.compiler, "_NVRTCProgram", None)
    original = getattr(program, "compile", None)
    if original is not None:
        def spy(self, options=(), *args, **kwargs):  # what CuPy really passes to NVRTC
            if getattr(self, "src", ""):
                captured.append(list(options))
            return original(self, options, *args, **kwargs)
        program.compile = spy
    cache = os.environ.get("CUPY_CACHE_DIR")
    out["cache_dir"] = cache
    out["cache_files_before"] = len(os.listdir(cache)) if cache and os.path.isdir(cache) else 0
    arch = str(cupy.cuda.Device().compute_capability)

    def load_all(kind: str) -> None:
        for source, fp16 in modules:
            dtype = "float16" if fp16 else "float32"
            first = kernels.SOURCES[source][0]
            row = {"source": source, "module": dtype if fp16 else "float32/float64", "load": kind}
            n_before = len(captured)
            t0 = time.perf_counter()
            try:
                kernels.get_kernel(first, dtype)
                row["seconds"] = round(time.perf_counter() - t0, 3)
            except Exception as exc:  # noqa: BLE001  (a module that does not compile is a row)
                row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            row["nvrtc_calls"] = len(captured) - n_before
            out["modules"].append(row)

    load_all("cold (NVRTC, empty cache)")
    out["cache_files_after"] = len(os.listdir(cache)) if cache and os.path.isdir(cache) else None
    cupy.clear_memo()  # forget the loaded modules: the next loads read the disk cache
    load_all("warm (disk cache)")
    if original is not None:
        program.compile = original

    for source in kernels.source_names():
        for entry_kernel in kernels.SOURCES[source]:
            for dtype in ("float32", "float64", "float16"):
                row = {"kernel": kernels.entry_name(entry_kernel, dtype)}
                try:
                    attrs = kernels.get_kernel(entry_kernel, dtype).attributes
                    row.update({k: attrs.get(k) for k in ("num_regs", "local_size_bytes",
                                                          "max_threads_per_block", "shared_size_bytes")})
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                out["attributes"].append(row)

    strip = lambda opts: [o for o in opts if not o.startswith("-I")]  # noqa: E731
    for fp16 in (False, True):
        dtype = "float16" if fp16 else "float32"
        expected = strip(kernels.cupy_nvrtc_options(kernels.compile_options(dtype), arch))
        seen = [strip(c) for c in captured if ("-DKERNELS_NO_FP16" in c) != fp16]
        out["options"][dtype] = {"expected": expected, "seen": seen[0] if seen else None,
                                 "match": bool(seen) and seen[0] == expected}
    _print_table("compile", ["source", "module", "load", "seconds", "NVRTC calls"],
                 [[m["source"], m["module"], m["load"], m.get("seconds", m.get("error", "")[:40]),
                   m["nvrtc_calls"]] for m in out["modules"]])
    _print_table("registers (float32 entry points)", ["kernel", "regs", "local bytes"],
                 [[a["kernel"], a.get("num_regs"), a.get("local_size_bytes")]
                  for a in out["attributes"] if a["kernel"].endswith("_f32")])
    for dtype, o in out["options"].items():
        print(f"NVRTC options ({dtype} module) as CuPy passed them {'match' if o['match'] else 'DIFFER FROM'} "
              f"the CPU test's list:\n  seen     {o['seen']}\n  expected {o['expected']}")
    return out


# ----------------------------------------------------------------------------- bandwidth
def conv_shapes(dry: bool):
    """The core issue's five conv shapes (``engine.bench.suites.CORE``); tiny ones in a dry run."""
    from .suites import CORE, SMOKE_CONV
    return SMOKE_CONV if dry else CORE


def pool_shapes(dry: bool):
    """SimpleCNN's first pool, the ResNet stem pool and a core5-sized one."""
    from .suites import BIG_POOLS, SIMPLECNN_POOLS, SMOKE_POOL
    return SMOKE_POOL if dry else [SIMPLECNN_POOLS[0], *BIG_POOLS]


VARIANTS = ("auto", "i64")


def _interleave(rig: Rig, fns: dict, reps: int, rounds: int) -> dict:
    """``{name: [seconds per call, one per round]}``, rounds rotating the start."""
    names = list(fns)
    times = {k: [] for k in names}
    for k in names:  # warm-up: compile, allocate, tune
        rig.batch_seconds(fns[k], 1)
    for r in range(rounds):
        for i in range(len(names)):
            k = names[(i + r) % len(names)]
            times[k].append(rig.batch_seconds(fns[k], reps))
    return times


def stage_bandwidth(work: FsPath, dry: bool) -> dict:
    rig = Rig(dry)
    xp, be = rig.xp, rig.backend
    rng = np.random.default_rng(0)
    reps, rounds = (2, 2) if dry else (10, 5)
    l2 = 0
    if not dry:
        l2 = int(xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id).get("l2CacheSize", 0))
    rows, pool_rows = [], []
    for shape in conv_shapes(dry):
        name = shape.name
        x_shape, win = _window(shape)
        n, c = x_shape[:2]
        x = rig.dev(rng.standard_normal(x_shape, dtype=np.float32))
        col_shape = (c * win.kh * win.kw, n * win.oh * win.ow)
        g = rig.dev(rng.standard_normal(col_shape, dtype=np.float32))
        outs = {}
        for v in VARIANTS:  # the two variants must agree bit for bit before they are timed
            with rig.variant(v):
                outs[v] = (be.im2col(x, win), be.col2im(g, x_shape, win))
        same = all(bool(xp.array_equal(a, b)) for a, b in zip(outs["auto"], outs["i64"]))
        del outs
        src = xp.empty(col_shape, dtype=np.float32)
        src[...] = 1.0
        dst = xp.empty_like(src)
        nbytes = src.nbytes
        if dry:
            copy = lambda: np.copyto(dst, src)  # noqa: E731
        else:
            copy = lambda: dst.data.copy_from_device_async(src.data, nbytes)  # noqa: E731
        fns = {"copy": copy}
        for v in VARIANTS:
            fns[f"im2col/{v}"] = in_variant(rig, v, lambda: be.im2col(x, win))
            fns[f"col2im/{v}"] = in_variant(rig, v, lambda: be.col2im(g, x_shape, win))
        times = _interleave(rig, fns, reps, rounds)
        med = {k: statistics.median(t) for k, t in times.items()}
        x_bytes = x.nbytes
        row = {"shape": name, "x_shape": list(x_shape), "col_bytes": nbytes, "l2_bytes": l2,
               "variants_agree": same, "median_ms": {k: round(v * 1e3, 5) for k, v in med.items()},
               "copy_GBps": 2 * nbytes / med["copy"] / 1e9}
        for v in VARIANTS:
            row[f"im2col_GBps/{v}"] = (x_bytes + nbytes) / med[f"im2col/{v}"] / 1e9
            row[f"col2im_GBps/{v}"] = (x_bytes + nbytes) / med[f"col2im/{v}"] / 1e9
            row[f"im2col_of_copy/{v}"] = row[f"im2col_GBps/{v}"] / row["copy_GBps"]
            row[f"col2im_of_copy/{v}"] = row[f"col2im_GBps/{v}"] / row["copy_GBps"]
        row["larger_than_l2"] = nbytes > l2 > 0
        rows.append(row)
        del x, g, src, dst, fns
        rig.free()

    for shape in pool_shapes(dry):
        name = shape.name
        x_shape, win = _window(shape)
        n, c = x_shape[:2]
        x = rig.dev(rng.standard_normal(x_shape, dtype=np.float32))
        gy = rig.dev(rng.standard_normal((n, c, win.oh, win.ow), dtype=np.float32))
        _, idx = be.max_pool2d(x, win)
        fns = {}
        for v in VARIANTS:
            fns[f"maxpool_fwd/{v}"] = in_variant(rig, v, lambda: be.max_pool2d(x, win))
            fns[f"maxpool_bwd/{v}"] = in_variant(rig, v, lambda: be.max_pool2d_backward(gy, idx, x_shape, win))
        times = _interleave(rig, fns, reps, rounds)
        med = {k: statistics.median(t) for k, t in times.items()}
        y_elems = n * c * win.oh * win.ow
        fwd_bytes = x.nbytes + y_elems * (4 + 8)         # x read; y and int64 argmax written
        bwd_bytes = y_elems * (4 + 8) + x.nbytes          # grad_out and argmax read; grad_in written
        row = {"shape": name, "x_shape": list(x_shape), "median_ms": {k: round(v * 1e3, 5) for k, v in med.items()}}
        for v in VARIANTS:
            row[f"fwd_GBps/{v}"] = fwd_bytes / med[f"maxpool_fwd/{v}"] / 1e9
            row[f"bwd_GBps/{v}"] = bwd_bytes / med[f"maxpool_bwd/{v}"] / 1e9
        pool_rows.append(row)
        del x, gy, idx, fns
        rig.free()

    _print_table("bandwidth, float32 (GB/s: bytes read + written once; copy = device-to-device memcpy)"
                 + (" [DRY RUN: meaningless]" if dry else ""),
                 ["shape", "copy", "im2col", "im2col i64", "im2col/copy", "col2im", "col2im i64", "agree"],
                 [[r["shape"], r["copy_GBps"], r["im2col_GBps/auto"], r["im2col_GBps/i64"],
                   r["im2col_of_copy/auto"], r["col2im_GBps/auto"], r["col2im_GBps/i64"], r["variants_agree"]]
                  for r in rows])
    _print_table("max pooling, float32 (GB/s)", ["shape", "fwd", "fwd i64", "bwd", "bwd i64"],
                 [[r["shape"], r["fwd_GBps/auto"], r["fwd_GBps/i64"], r["bwd_GBps/auto"], r["bwd_GBps/i64"]]
                  for r in pool_rows])
    return {"conv": rows, "pool": pool_rows, "reps": reps, "rounds": rounds}


# ----------------------------------------------------------------------------- conv
def stage_conv(work: FsPath, dry: bool) -> dict:
    from engine import ops as F
    from . import harness
    rig = Rig(dry)
    xp, torch = rig.xp, rig.torch
    rng = np.random.default_rng(1)
    repeat = 2 if dry else 9
    out = []
    for shape in conv_shapes(dry):
        name, o, k, s, p = shape.name, shape.o, shape.k, shape.stride, shape.pad
        x_shape, win = _window(shape)
        n, c = x_shape[:2]
        x64 = rng.standard_normal(x_shape).astype(np.float32).astype(np.float64)
        w64 = (rng.standard_normal((o, c, k, k)) / math.sqrt(c * k * k)).astype(np.float32).astype(np.float64)
        b64 = (0.1 * rng.standard_normal(o)).astype(np.float32).astype(np.float64)
        g64 = rng.standard_normal((n, o, win.oh, win.ow)).astype(np.float32).astype(np.float64)
        ref = _torch_conv_reference(torch, rig.tdev, x64, w64, b64, g64, s, p)
        x, w, b, g = (rig.dev(a.astype(np.float32)) for a in (x64, w64, b64, g64))
        host = rig.host

        def fwd():
            return F.conv2d(x, w, b, s, p)

        def fwdbwd():
            y = F.conv2d(x, w, b, s, p)
            return (y,) + tuple(F.conv2d_backward(g, x, w, s, p))

        def fwdbwd_keep():  # as nn.Conv2d runs it: the forward's columns go to the backward
            y, cols = F.conv2d(x, w, b, s, p, keep_columns=True)
            return (y,) + tuple(F.conv2d_backward(g, x, w, s, p, columns=cols))

        tx, tw, tb, tg = (torch.from_numpy(a.astype(np.float32)).to(rig.tdev) for a in (x64, w64, b64, g64))
        xr, wr, br = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

        def t_fwd():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, s, p)

        def t_fwdbwd():
            y = torch.nn.functional.conv2d(xr, wr, br, s, p)
            return (y,) + tuple(torch.autograd.grad(y, (xr, wr, br), tg))

        m_, kk, pp = o, c * k * k, n * win.oh * win.ow  # the forward GEMM: (O, K) @ (K, P)
        a_m, col_m, g_m = (rig.dev(rng.standard_normal(sh).astype(np.float32)) for sh in ((m_, kk), (kk, pp), (m_, pp)))
        mm = xp.matmul
        gemm_fwd = lambda: mm(a_m, col_m)  # noqa: E731
        gemm_fwdbwd = lambda: (mm(a_m, col_m), mm(g_m, col_m.T), mm(a_m.T, g_m))  # noqa: E731

        eng = lambda r: [host(v) for v in (r if isinstance(r, tuple) else (r,))]  # noqa: E731
        th = lambda r: [t.detach().double().cpu().numpy() for t in (r if isinstance(r, tuple) else (r,))]  # noqa: E731
        tkind = "host" if dry else "torch-cuda"
        for op, paths in (
            ("fwd", [("gemm", fwd, eng, "auto"), ("gemm-i64", fwd, eng, "i64"),
                     ("cudnn", t_fwd, th, None), ("cublas-gemm", gemm_fwd, None, None)]),
            ("fwd+bwd", [("gemm", fwdbwd, eng, "auto"), ("gemm-i64", fwdbwd, eng, "i64"),
                         ("gemm-keep", fwdbwd_keep, eng, "auto"), ("cudnn", t_fwdbwd, th, None),
                         ("cublas-gemm", gemm_fwdbwd, None, None)]),
        ):
            want = ref[:1] if op == "fwd" else ref
            runs, results, row = [], [], {"shape": name, "op": op, "x_shape": list(x_shape), "O": o,
                                          "gemm_MNK": [m_, pp, kk], "errors": {}, "rel_err": {}}
            for pname, fn, to_host, variant in paths:
                run = in_variant(rig, variant, fn) if variant else fn
                if to_host is not None:
                    try:
                        err = max(_rel_err(gv, rv) for gv, rv in zip(to_host(run()), want))
                    except Exception as exc:  # noqa: BLE001
                        row["errors"][pname] = f"{type(exc).__name__}: {exc}"[:300]
                        continue
                    row["rel_err"][pname] = err
                    if not err <= REL_TOL["float32"]:
                        row["errors"][pname] = f"WRONG: max rel err {err:.3g}"
                        continue
                timer = tkind if pname == "cudnn" else rig.timer
                runs.append(harness.Path(pname, run, timer=timer))
                results.append(harness.Result(op=op, case=name, shape=str(x_shape), path=pname, role="engine"))
            harness.interleaved(runs, results, rig.timers, warmup=2, repeat=repeat)
            row["median_ms"] = {r.path: _median_ms(r.times) for r in results}
            row["min_ms"] = {r.path: round(min(r.times) * 1e3, 5) for r in results if r.times}
            med = row["median_ms"]
            if med.get("cudnn"):
                for pname in ("gemm", "gemm-i64", "gemm-keep"):
                    if med.get(pname):
                        row[f"{pname}/cudnn"] = med[pname] / med["cudnn"]
            if med.get("cublas-gemm") and med.get("gemm"):
                row["gemm/cublas-gemm"] = med["gemm"] / med["cublas-gemm"]
            out.append(row)
        del x, w, b, g, tx, tw, tb, tg, xr, wr, br, a_m, col_m, g_m
        rig.free()
    _print_table("conv2d float32, median ms" + (" [DRY RUN: meaningless]" if dry else "")
                 + " (cudnn: TF32 off, benchmark on; cublas-gemm: the bare GEMMs of the same sizes)",
                 ["shape", "op", "gemm", "gemm-i64", "gemm-keep", "cudnn", "cublas", "gemm/cudnn", "keep/cudnn"],
                 [[r["shape"], r["op"], r["median_ms"].get("gemm"), r["median_ms"].get("gemm-i64"),
                   r["median_ms"].get("gemm-keep"), r["median_ms"].get("cudnn"), r["median_ms"].get("cublas-gemm"),
                   r.get("gemm/cudnn"), r.get("gemm-keep/cudnn")] for r in out])
    for r in out:
        for pname, e in r["errors"].items():
            print(f"  {r['shape']} {r['op']} {pname}: {e}")
    return {"rows": out, "repeat": repeat}


def _torch_conv_reference(torch, dev, x, w, b, g, s, p) -> list[np.ndarray]:
    """y, dx, dw, db in float64 (PyTorch on the run's device)."""
    tx, tw, tb, tg = (torch.from_numpy(a).to(dev) for a in (x, w, b, g))
    tx.requires_grad_(True)
    tw.requires_grad_(True)
    tb.requires_grad_(True)
    y = torch.nn.functional.conv2d(tx, tw, tb, s, p)
    grads = torch.autograd.grad(y, (tx, tw, tb), tg)
    return [t.detach().cpu().numpy() for t in (y, *grads)]


# ----------------------------------------------------------------------------- step
def stage_step(work: FsPath, dry: bool) -> dict:
    """The bench's own SimpleCNN training-step case (bench/ops.py ``train_case``:
    checked against PyTorch float64 first), its engine path timed in both
    kernel variants beside PyTorch."""
    import engine
    from . import harness
    from .ops import Env, build_case
    from .suites import TrainShape
    rows = []
    rig = Rig(dry)
    env = Env("numpy" if dry else "cupy", "float32", ["gemm", "torch"])
    timers = harness.Timers(env.backend)
    for batch in ((4,) if dry else (64, 256)):
        case = build_case(env, "train_step", TrainShape("SimpleCNN", batch))
        extra = []
        for path in case.paths:
            if path.name == "gemm":
                extra.append(dataclasses.replace(
                    path, name="gemm-i64", run=in_variant(rig, "i64", path.run),
                    check=in_variant(rig, "i64", path.check) if path.check else None))
        case.paths += extra
        policy = harness.Policy(warmup=1 if dry else 3, repeat=2 if dry else 15)
        with engine.use_backend(env.backend.name):
            results = harness.run_case(case, timers, policy)
        row = {"batch": batch, "median_ms": {}, "first_ms": {}, "status": {}, "rel_err": {}}
        for r in results:
            row["median_ms"][r.path] = _median_ms(r.times)
            row["first_ms"][r.path] = r.first_ms
            row["status"][r.path] = r.status if r.status == "ok" else f"{r.status}: {r.note}"
            row["rel_err"][r.path] = r.max_rel_err
        peer = env.peer_name
        med = row["median_ms"]
        row["peer"] = peer
        if peer and med.get(peer):
            for pname in ("gemm", "gemm-i64"):
                if med.get(pname):
                    row[f"{pname}/{peer}"] = med[pname] / med[peer]
        rows.append(row)
        rig.free()
    _print_table("SimpleCNN training step (forward, loss, backward, Adam), float32, median ms"
                 + (" [DRY RUN: meaningless]" if dry else ""),
                 ["batch", "gemm", "gemm-i64", "peer", "gemm/peer", "status"],
                 [[r["batch"], r["median_ms"].get("gemm"), r["median_ms"].get("gemm-i64"),
                   r["median_ms"].get(r["peer"]) if r["peer"] else None, r.get(f"gemm/{r['peer']}"),
                   "; ".join(f"{k}: {v}" for k, v in r["status"].items() if v != "ok") or "ok"]
                  for r in rows])
    return {"rows": rows, "peer": env.peer_name}


def _stage_nccl(work: FsPath, dry: bool) -> dict:
    from .distributed import gpu_stage
    return gpu_stage(dry)


# ----------------------------------------------------------------------------- report
def _load(work: FsPath, stage: str) -> dict | None:
    try:
        return json.loads((work / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return None


def pytest_counts(log_text: str) -> dict:
    """Outcome counts from a ``pytest -v`` log; complete or not (a run cut off by
    its timeout still has one line per finished test)."""
    counts = {}
    for outcome in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"):
        counts[outcome.lower()] = len(re.findall(rf"::\S+ {outcome}\b", log_text))
    final = re.findall(r"^=+ (.*\d+ (?:passed|failed|error|skipped|deselected).*?) in [\d.]+s", log_text, re.M)
    counts["summary_line"] = final[-1] if final else None
    return counts


def _verdict(ok: bool | None, dry: bool = False) -> str:
    if dry:
        return "dry "  # a dry run measures nothing: no verdict
    return "n/a " if ok is None else ("PASS" if ok else "MISS")


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3g} ms"


def stage_report(work: FsPath, out_dir: FsPath, dry: bool) -> dict:
    data = {s: _load(work, s) for s in STAGES if s != "report"}
    stages = []
    stages_file = work / "stages.tsv"
    if stages_file.is_file():
        for line in stages_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                stages.append({"stage": parts[0], "rc": parts[1], "seconds": parts[2], "timeout": parts[3]})
    data["stages"] = stages
    tests_log = work / "tests.log"
    data["pytest_gpu"] = pytest_counts(tests_log.read_text(errors="replace")) if tests_log.is_file() else None
    san_log = work / "sanitizer.log"
    if san_log.is_file():
        text = san_log.read_text(errors="replace")
        m = re.search(r"ERROR SUMMARY: (\d+) error", text)
        data["sanitizer"] = {"error_summary": int(m[1]) if m else None,
                             "skipped": "compute-sanitizer not found" in text,
                             "pytest": pytest_counts(text)}
    else:
        data["sanitizer"] = None
    lines = []
    env = data.get("env") or {}
    cup = env.get("cupy") or {}
    tor = env.get("torch") or {}
    any_dry = dry or any((d or {}).get("dry_run") for d in data.values() if isinstance(d, dict))
    verdict = lambda ok: _verdict(ok, any_dry)  # noqa: E731
    if any_dry:
        lines.append("DRY RUN on the CPU: the numbers below are NOT GPU measurements.")
    lines.append(f"GPU run {env.get('date_utc')}: {cup.get('gpu', cup.get('error'))} (cc {cup.get('compute_capability')}), "
                 f"driver {cup.get('cuda_driver')}, CUDA runtime {cup.get('cuda_runtime')}, NVRTC {cup.get('nvrtc')}, "
                 f"CuPy {cup.get('cupy')}; torch {tor.get('version')} (CUDA {tor.get('cuda')}, cuDNN {tor.get('cudnn')}); "
                 f"numpy {env.get('numpy')}, array-api-compat {env.get('array_api_compat')}, "
                 f"array-api-strict {env.get('array_api_strict')}; commit {env.get('commit')}, "
                 f"sources {env.get('source_sha256')}")
    lines.append("stages: " + ", ".join(f"{s['stage']} rc={s['rc']} {s['seconds']}s/{s['timeout']}s" for s in stages))

    pt = data["pytest_gpu"]
    if pt:
        ok = pt["failed"] == 0 and pt["error"] == 0 and pt["passed"] > 0 and pt["summary_line"] is not None
        lines.append(f"[{verdict(ok)}] every gpu test passes: {pt['passed']} passed, {pt['failed']} failed, "
                     f"{pt['error']} errors, {pt['skipped']} skipped ({pt['summary_line'] or 'no final summary: cut off?'})")
    else:
        lines.append("[n/a ] pytest -m gpu: no log")

    bw = data.get("bandwidth")
    if bw:
        for r in bw["conv"]:
            frac = r["im2col_of_copy/auto"]
            judged = r.get("larger_than_l2")
            lines.append(f"[{verdict(frac >= COPY_FRACTION_TARGET) if judged else 'info'}] im2col at "
                         f"{frac:.0%} of copy bandwidth ({r['im2col_GBps/auto']:.0f} vs {r['copy_GBps']:.0f} GB/s), "
                         f"col2im {r['col2im_of_copy/auto']:.0%}: {r['shape']}"
                         + ("" if judged else " (columns fit in L2: not judged)")
                         + ("" if r["variants_agree"] else "  VARIANTS DISAGREE"))
    conv = data.get("conv")
    if conv:
        for r in conv["rows"]:
            if r["op"] != "fwd+bwd":
                continue
            for key, what in (("gemm-keep/cudnn", "as nn.Conv2d (columns kept)"), ("gemm/cudnn", "ops pair")):
                ratio = r.get(key)
                lines.append(f"[{verdict(None if ratio is None else ratio <= CUDNN_RATIO_TARGET)}] conv fwd+bwd "
                             f"{what} {'-' if ratio is None else f'{ratio:.2f}x'} cuDNN: {r['shape']}")
            for pname, e in r["errors"].items():
                lines.append(f"[MISS] conv {r['shape']} {r['op']} {pname}: {e}")
    nccl = data.get("nccl")
    if nccl:
        failed = [k for k, v in nccl["checks"].items() if not v]
        usable = nccl["nccl_reason"] is None
        ok = (not failed and nccl["communicator"] == "nccl") if usable else None
        lines.append(f"[{verdict(ok)}] engine.distributed on one GPU: {nccl['communicator']} allreduce of 421,642 "
                     f"float32 {_ms(nccl['allreduce_ms'])} (host-staged {_ms(nccl['staged_allreduce_ms'])}), "
                     f"DistributedOptimizer step {_ms(nccl['step_ms']['distributed'])} vs plain "
                     f"{_ms(nccl['step_ms']['plain'])}; "
                     + (f"failed checks: {', '.join(failed)}" if failed else "all checks pass")
                     + ("" if usable else f"; NCCL unusable: {nccl['nccl_reason']}"))
    step = data.get("step")
    if step:
        for r in step["rows"]:
            peer = r.get("peer")
            lines.append(f"[info] SimpleCNN step batch {r['batch']}: engine {_ms(r['median_ms'].get('gemm'))}, "
                         f"i64 kernels {_ms(r['median_ms'].get('gemm-i64'))}, {peer} {_ms(r['median_ms'].get(peer))}"
                         + (f" ({r[f'gemm/{peer}']:.2f}x)" if r.get(f"gemm/{peer}") else "")
                         + "".join(f"; {k} {v}" for k, v in r["status"].items() if v != "ok"))
    san = data.get("sanitizer")
    if san:
        if san["skipped"]:
            lines.append("[n/a ] compute-sanitizer memcheck: tool not found")
        else:
            sp = san["pytest"]
            lines.append(f"[{verdict(san['error_summary'] == 0 if san['error_summary'] is not None else None)}] "
                         f"compute-sanitizer memcheck: {san['error_summary']} errors over {sp['passed']} passed "
                         f"tests ({sp['failed']} failed)")
    comp = data.get("compile")
    if comp:
        for m in comp["modules"]:
            took = f"{m['seconds']} s" if "seconds" in m else m.get("error", m.get("note"))
            lines.append(f"[info] compile {m['source']} {m['module']} {m.get('load', '')}: {took}")
        for dtype, o in (comp.get("options") or {}).items():
            lines.append(f"[{verdict(o['match'])}] CuPy's NVRTC options ({dtype} module) match the CPU test's list")
    lines += variant_decision(data)
    summary = "\n".join(lines) + "\n\n" + markdown_tables(data, any_dry)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.txt").write_text(summary)
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, out_dir / "results.json")
    print(summary)
    return {"lines": lines}


def _md(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def markdown_tables(data: dict, dry: bool) -> str:
    """The tables of docs/gpu.md, filled from this run (paste them there)."""
    parts = ["# Tables for docs/gpu.md" + (" (DRY RUN: not GPU measurements)" if dry else "") + "\n"]
    env = data.get("env") or {}
    cup, tor = env.get("cupy") or {}, env.get("torch") or {}
    parts.append(_md(["GPU", "cc", "driver", "CUDA runtime", "NVRTC", "CuPy", "PyTorch", "cuDNN", "NumPy",
                      "array-api-compat", "array-api-strict", "commit", "sources"],
                     [[cup.get("gpu"), cup.get("compute_capability"), cup.get("cuda_driver"), cup.get("cuda_runtime"),
                       cup.get("nvrtc"), cup.get("cupy"), tor.get("version"), tor.get("cudnn"), env.get("numpy"),
                       env.get("array_api_compat"), env.get("array_api_strict"), (env.get("commit") or "")[:12],
                       env.get("source_sha256")]]))
    pt = data.get("pytest_gpu")
    if pt:
        parts.append(_md(["pytest -m gpu", "passed", "failed", "errors", "skipped"],
                         [["tests/", pt["passed"], pt["failed"], pt["error"], pt["skipped"]]]))
    bw = data.get("bandwidth") or {}
    if bw.get("conv"):
        parts.append(_md(["shape (float32)", "columns MB", "copy GB/s", "im2col GB/s", "im2col i64 GB/s",
                          "im2col / copy", "col2im GB/s", "col2im i64 GB/s", "col2im / copy"],
                         [[r["shape"], r["col_bytes"] / 1e6, r["copy_GBps"], r["im2col_GBps/auto"],
                           r["im2col_GBps/i64"], r["im2col_of_copy/auto"], r["col2im_GBps/auto"],
                           r["col2im_GBps/i64"], r["col2im_of_copy/auto"]] for r in bw["conv"]]))
    if bw.get("pool"):
        parts.append(_md(["max pool (float32)", "fwd GB/s", "fwd i64 GB/s", "bwd GB/s", "bwd i64 GB/s"],
                         [[r["shape"], r["fwd_GBps/auto"], r["fwd_GBps/i64"], r["bwd_GBps/auto"], r["bwd_GBps/i64"]]
                          for r in bw["pool"]]))
    conv = data.get("conv") or {}
    if conv.get("rows"):
        parts.append(_md(["shape (float32)", "op", "engine ms", "engine i64 ms", "engine, columns kept ms",
                          "cuDNN ms", "cuBLAS GEMMs ms", "engine / cuDNN", "kept / cuDNN", "engine / GEMMs"],
                         [[r["shape"], r["op"], r["median_ms"].get("gemm"), r["median_ms"].get("gemm-i64"),
                           r["median_ms"].get("gemm-keep"), r["median_ms"].get("cudnn"),
                           r["median_ms"].get("cublas-gemm"), r.get("gemm/cudnn"), r.get("gemm-keep/cudnn"),
                           r.get("gemm/cublas-gemm")] for r in conv["rows"]]))
    step = data.get("step") or {}
    if step.get("rows"):
        peer = step.get("peer")
        parts.append(_md(["SimpleCNN step (float32)", "engine ms", "engine i64 ms", f"{peer} ms", "engine / peer"],
                         [[f"batch {r['batch']}", r["median_ms"].get("gemm"), r["median_ms"].get("gemm-i64"),
                           r["median_ms"].get(peer), r.get(f"gemm/{peer}")] for r in step["rows"]]))
    return "\n".join(parts)


def variant_decision(data: dict) -> list[str]:
    """Which kernel variant the measured shapes favour, per kernel family:
    the geometric mean of time(i64) / time(auto) (> 1: the 32-bit kernels win)."""
    ratios: dict[str, list[float]] = {}

    def add(key, slow, fast):
        if slow and fast:
            ratios.setdefault(key, []).append(slow / fast)
    bw = data.get("bandwidth") or {}
    for r in bw.get("conv", []):
        m = r["median_ms"]
        add("im2col", m.get("im2col/i64"), m.get("im2col/auto"))
        add("col2im", m.get("col2im/i64"), m.get("col2im/auto"))
    for r in bw.get("pool", []):
        m = r["median_ms"]
        add("max pool fwd", m.get("maxpool_fwd/i64"), m.get("maxpool_fwd/auto"))
        add("max pool bwd", m.get("maxpool_bwd/i64"), m.get("maxpool_bwd/auto"))
    for r in (data.get("conv") or {}).get("rows", []):
        add(f"conv {r['op']}", r["median_ms"].get("gemm-i64"), r["median_ms"].get("gemm"))
    for r in (data.get("step") or {}).get("rows", []):
        add("SimpleCNN step", r["median_ms"].get("gemm-i64"), r["median_ms"].get("gemm"))
    out = []
    for key, vals in ratios.items():
        gm = math.exp(sum(math.log(v) for v in vals) / len(vals))
        out.append(f"[info] kernel variant, {key}: 64-bit time / 32-bit time = {gm:.2f} (geometric mean of "
                   f"{len(vals)}; > 1 keeps kernel_variant='auto', < 1 argues for 'i64')")
    return out


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.bench.gpu_bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=STAGES)
    ap.add_argument("--work", required=True, help="folder of the stages' JSON files and logs")
    ap.add_argument("--out", help="folder of summary.txt and results.json (report stage; default: --work)")
    ap.add_argument("--dry-run", action="store_true",
                    help="run on the CPU (numpy backend, tiny shapes): checks the stage's construction only")
    args = ap.parse_args(argv)
    work = FsPath(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.stage == "report":
        stage_report(work, FsPath(args.out or args.work), args.dry_run)
        return 0
    fn = {"env": stage_env, "compile": stage_compile, "bandwidth": stage_bandwidth,
          "conv": stage_conv, "step": stage_step, "nccl": _stage_nccl}[args.stage]
    data = fn(work, args.dry_run)
    data["dry_run"] = args.dry_run
    data["seconds"] = round(time.perf_counter() - t0, 2)
    _dump(work, args.stage, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
