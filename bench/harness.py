"""Timing: check every path against the reference first, warm up, then time the
paths round-robin (interleaved, the machine is noisy) and quote median, min, max.

On the GPU each call is timed with CUDA events; the first call (which compiles
and caches RawKernels, builds cuBLAS/cuDNN plans) is reported apart as
``first_ms`` and never enters the statistics.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Largest error allowed, relative to the reference's largest magnitude.
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


@dataclass
class Path:
    """One way of computing a case's op, ready to be called.

    ``run()`` is what gets timed; ``outputs(result)`` turns its result into
    host float arrays keyed like the reference. ``check`` (optional) is a
    separate call whose result is compared instead of ``run()``'s (the training
    step checks one step from fresh weights while ``run`` keeps training).
    """

    name: str
    run: Callable[[], Any]
    outputs: Callable[[Any], dict] | None = None
    check: Callable[[], Any] | None = None
    role: str = "engine"          # engine | naive | gemm | peer
    timer: str = "host"           # host | cuda | torch-cuda
    workspace: int | None = None  # im2col bytes (one workspace chunk), when the path has one
    workspace_note: str = ""
    note: str = ""
    #: run untimed for :data:`BURST_S` before each timed call (:func:`_ready`); off where
    #: extra calls would change what is reported (an epoch count, the accuracy after them)
    burst: bool = True


@dataclass
class Result:
    op: str
    case: str
    shape: str
    path: str
    role: str
    status: str = "ok"            # ok | WRONG | ERROR | est. | skipped | n/a (backend lacks the path)
    times: list = field(default_factory=list)
    first_ms: float | None = None
    flops: float | None = None
    max_rel_err: float | None = None
    reference: str | None = None
    workspace_bytes: int | None = None
    note: str = ""
    estimated: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def median_ms(self):
        return statistics.median(self.times) * 1e3 if self.times else None

    @property
    def min_ms(self):
        return min(self.times) * 1e3 if self.times else None

    @property
    def max_ms(self):
        return max(self.times) * 1e3 if self.times else None


# ------------------------------------------------------------------------------- timers
class Timers:
    """``timer(path)(fn) -> seconds`` for each kind of path; ``sync()`` waits for the device."""

    def __init__(self, backend):
        self.backend = backend
        self._cp = None
        self._torch = None

    def sync(self, kind: str = "host") -> None:
        self.backend.synchronize()
        if kind in ("cuda", "torch-cuda"):  # whatever the backend does, wait for the whole device
            self._cupy().cuda.Device().synchronize() if kind == "cuda" else self._torch_mod().cuda.synchronize()

    def _cupy(self):
        if self._cp is None:
            import cupy
            self._cp = cupy
        return self._cp

    def _torch_mod(self):
        if self._torch is None:
            import torch
            self._torch = torch
        return self._torch

    def measure(self, kind: str, fn: Callable[[], Any]) -> float:
        if kind == "host":
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        if kind == "cuda":
            cp = self._cupy()
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return cp.cuda.get_elapsed_time(start, end) / 1e3
        if kind == "torch-cuda":
            torch = self._torch_mod()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        raise ValueError(f"unknown timer {kind!r}")

    def wall(self, kind: str, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Wall time of one call including the device work (for first calls)."""
        self.sync(kind)
        t0 = time.perf_counter()
        out = fn()
        self.sync(kind)
        return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------- checking
def compare(got: dict, ref: dict) -> tuple[float, str]:
    """Largest ``max|got - ref| / max|ref|`` over the reference's arrays, and where."""
    worst, where = 0.0, ""
    for key, r in ref.items():
        if key not in got:
            return math.inf, f"{key}: missing from the path's output"
        g = np.asarray(got[key], dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape:
            return math.inf, f"{key}: shape {g.shape} != reference {r.shape}"
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        diff = float(np.max(np.abs(g - r))) if r.size else 0.0
        if not np.isfinite(diff):
            return math.inf, f"{key}: non-finite values"
        err = diff / scale if scale > 0 else diff
        if err > worst or not where:
            worst, where = err, key
    return worst, where


def check_path(path: Path, ref: dict, tol: float, timers: Timers, result: Result) -> bool:
    """Run the path's check (timing it as the first call) and compare; False if WRONG/ERROR."""
    try:
        if path.check is None:
            secs, out = timers.wall(path.timer, path.run)
            result.first_ms = secs * 1e3
        else:
            out = path.check()
            secs, _ = timers.wall(path.timer, path.run)
            result.first_ms = secs * 1e3
        if path.outputs is None:  # the bare GEMM: random operands, nothing to compare
            return True
        err, where = compare(path.outputs(out), ref)
    except NotImplementedError as exc:  # the backend lacks this path (e.g. no as_strided): not a failure
        result.status = "n/a"
        result.note = f"{exc}".splitlines()[0][:300]
        return False
    except Exception as exc:  # noqa: BLE001  (any failure of a path is a row, not a crash)
        result.status = "ERROR"
        result.note = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return False
    result.max_rel_err = err
    if not err <= tol:
        result.status = "WRONG"
        result.note = f"max rel err {err:.3g} in {where} (tolerance {tol:g})"
        return False
    return True


# ------------------------------------------------------------------------------- timing
#: Before each timed call, the path runs untimed for at least this long (one call at least):
#: PyTorch's idle OpenMP workers keep spinning up to ~11 ms of CPU after a parallel region
#: (libgomp's default GOMP_SPINCOUNT; 2 threads, after a 2000x2000 matmul), so a call timed
#: right after another library's would share a core with them, and a path called once after
#: a pause starts on cold caches and idle cores. The burst gives every path, engine or
#: PyTorch, the state a loop of its own calls runs in.
BURST_S = 0.02
#: A path whose last call took longer than this gets no burst (an epoch, a naive loop):
#: at that length the state before the call is a small part of its time.
BURST_SKIP_S = 0.5


def _ready(path: Path, timers: "Timers", last_s: float | None) -> None:
    """Before timing ``path``: put the engine's C pool to sleep before a PyTorch call (its
    workers spin 200 µs after a call) and wake it before an engine call, then run ``path``
    untimed for :data:`BURST_S` unless its last call took over :data:`BURST_SKIP_S` (or the
    path opts out, ``Path.burst``).
    The same for every path; none of it is in the time."""
    from engine.backends import native_calls
    if path.role == "peer":
        native_calls.quiesce()
    else:
        native_calls.warm()
    if not path.burst or (last_s is not None and last_s > BURST_SKIP_S):
        return
    start = time.perf_counter()
    while True:
        path.run()
        timers.sync(path.timer)
        if time.perf_counter() - start >= BURST_S:
            return


def interleaved(paths: list[Path], results: list[Result], timers: Timers, warmup: int, repeat: int,
                tick: Callable[[], None] | None = None) -> None:
    """Warm up, then ``repeat`` rounds calling each path once per round (each timed call
    after its burst, :func:`_ready`); the starting path rotates every round so no path
    always runs first."""
    if not paths:
        return

    def last_s(res: Result) -> float | None:
        if res.times:
            return res.times[-1]
        return res.first_ms / 1e3 if res.first_ms is not None else None

    for _ in range(warmup):
        for p, res in zip(paths, results):
            timers.sync(p.timer)
            _ready(p, timers, last_s(res))
            timers.measure(p.timer, p.run)
    k = len(paths)
    for r in range(repeat):
        for i in range(k):
            j = (i + r) % k
            timers.sync(paths[j].timer)
            _ready(paths[j], timers, last_s(results[j]))
            results[j].times.append(timers.measure(paths[j].timer, paths[j].run))
        if tick is not None:
            tick()


# ------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One op on one shape: its reference, the paths to time, how to shrink naive."""

    op: str
    name: str                  # the layer, e.g. "core2 SimpleCNN.conv2"
    shape: str                 # e.g. "64x32x14->64 k3 s1 p1"
    flops: float
    reference: dict
    reference_name: str
    paths: list
    batch: int = 1
    #: ``make_naive(nb) -> (Path, reference thunk)`` on the first ``nb`` samples, or None.
    make_naive: Callable | None = None
    naive_workspace: int | None = None
    tol: float = 1e-4
    extra: dict = field(default_factory=dict)


@dataclass
class Policy:
    warmup: int = 1
    repeat: int = 5
    naive_real_s: float = 1.0      # run naive for real below this predicted time per call
    naive_estimate: bool = True    # above it: estimate from a smaller batch (else skip)
    naive_target_s: float = 0.5    # time per call of the smaller naive run
    naive_skip_reason: str = "this suite runs naive only on small shapes"


def naive_policy(naive_real_s: float, naive_estimate: bool, host_memory: bool) -> dict:
    """The naive settings of a :class:`Policy` for a backend: on a device
    (``host_memory`` false) naive is launch-bound, so its time does not scale
    with the batch and is never estimated from a smaller one."""
    if host_memory:
        return {"naive_real_s": naive_real_s, "naive_estimate": naive_estimate}
    return {"naive_real_s": naive_real_s, "naive_estimate": False,
            "naive_skip_reason": "on a GPU naive is launch-bound: never estimated from a smaller batch"}


def _result(case: Case, path: Path) -> Result:
    return Result(op=case.op, case=case.name, shape=case.shape, path=path.name, role=path.role,
                  flops=case.flops, reference=case.reference_name, workspace_bytes=path.workspace,
                  note=path.note, extra=dict(case.extra))


def run_case(case: Case, timers: Timers, policy: Policy, tick: Callable[[], None] | None = None) -> list[Result]:
    """Check, then time one case; returns one :class:`Result` per path (naive included)."""
    results, good, good_results = [], [], []
    for path in case.paths:
        res = _result(case, path)
        if check_path(path, case.reference, case.tol, timers, res):
            good.append(path)
            good_results.append(res)
        results.append(res)

    naive_res = None
    if case.make_naive is not None:
        naive_res, naive_path = _plan_naive(case, timers, policy)
        if naive_path is not None:  # cheap enough: timed for real, interleaved with the rest
            good.append(naive_path)
            good_results.append(naive_res)
        results.insert(0, naive_res)

    interleaved(good, good_results, timers, policy.warmup, policy.repeat, tick)
    if naive_res is not None and naive_res.status == "est.":
        _estimate_naive(case, naive_res, timers, policy)
    return results


def _plan_naive(case: Case, timers: Timers, policy: Policy):
    """Predict naive's cost from a batch-1 probe; return its Result and, when it
    is to be timed for real, its full-size Path."""
    probe_path, _ = case.make_naive(1)
    res = Result(op=case.op, case=case.name, shape=case.shape, path="naive", role="naive", flops=case.flops,
                 reference=case.reference_name, workspace_bytes=case.naive_workspace, extra=dict(case.extra))
    try:
        timers.wall(probe_path.timer, probe_path.run)  # first call: compile, allocate
        per_sample, _ = timers.wall(probe_path.timer, probe_path.run)
    except Exception as exc:  # noqa: BLE001
        res.status, res.note = "ERROR", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return res, None
    predicted = per_sample * case.batch
    res.extra["naive_predicted_s"] = predicted
    if predicted <= policy.naive_real_s or case.batch == 1:
        full_path, _ = case.make_naive(case.batch)
        if check_path(full_path, case.reference, case.tol, timers, res):
            return res, full_path
        return res, None
    if not policy.naive_estimate:
        res.status = "skipped"
        res.note = (f"skipped: ~{predicted:.1f} s per call predicted (batch-1 probe x{case.batch}); "
                    f"{policy.naive_skip_reason}")
        return res, None
    res.status = "est."
    return res, None


def _estimate_naive(case: Case, res: Result, timers: Timers, policy: Policy) -> None:
    predicted = res.extra["naive_predicted_s"]
    nb = int(case.batch * policy.naive_target_s / max(predicted, 1e-9))
    nb = max(1, min(case.batch - 1, nb))
    path, ref = case.make_naive(nb)
    if not check_path(path, ref(), case.tol, timers, res):
        res.note = f"(checked on batch {nb}) " + res.note
        return
    scale = case.batch / nb  # naive's work is linear in the batch: scale by FLOPs
    sub = Result(op=case.op, case=case.name, shape=case.shape, path="naive", role="naive",
                 first_ms=res.first_ms)  # its checked call: long calls skip the burst
    interleaved([path], [sub], timers, 0, max(1, min(policy.repeat, 3)))
    res.times = [t * scale for t in sub.times]
    res.first_ms = None
    res.estimated = True
    res.note = (f"est.: timed at batch {nb} (checked there) and scaled by FLOPs x{scale:.3g}; "
                f"not interleaved")
