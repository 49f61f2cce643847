"""Machine facts written next to every result, and the thread settings.

Everything here degrades gracefully: a fact that cannot be read is recorded as
``None`` (or with the reason), never an exception.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
REPORTED_ENV_VARS = THREAD_ENV_VARS + ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_CORETYPE")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_thread_env(n: int) -> dict:
    """Thread-count environment variables; effective only before NumPy (its
    BLAS) is imported, which is why ``python -m engine.bench`` calls this first.
    Returns the previous values, for :func:`restore_env`."""
    before = {var: os.environ.get(var) for var in THREAD_ENV_VARS}
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    return before


#: Spin limits set when two threading runtimes are interleaved (unless set already):
#: OpenBLAS workers spin 2**4 cycles after a call. PyTorch's libgomp keeps its default.
SPIN_LIMITS = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def set_spin_limits(threads: int, peer: bool) -> dict:
    """Let idle OpenBLAS workers sleep almost at once when NumPy's and PyTorch's calls are
    interleaved on several threads (by default OpenBLAS spins ~2**28 cycles, ~0.1 s, after
    every call, and on a 2-core machine steals the core PyTorch needs: its SimpleCNN.conv1
    forward 0.23 -> 4.5 ms interleaved; with the limit 0.22 -> 0.21). The engine sets the
    same limit for itself on import.

    PyTorch's OpenMP workers keep libgomp's default spinning (a few ms after each parallel
    region): ``GOMP_SPINCOUNT=1000`` slowed PyTorch itself (its SimpleCNN training step
    alone 27.5 -> 33.6 and 35.2 -> 37.2 ms in two runs here,
    bench/results/torch-spincount-20261207.txt). Instead every timed call, engine or PyTorch,
    comes after an untimed burst of the same call (``harness._ready``), which outlasts the
    other library's spinning.

    Only when >1 thread, PyTorch installed and the peer wanted, before NumPy and PyTorch
    load; a variable already set is left alone. Returns what to restore."""
    import importlib.util
    if threads <= 1 or not peer or "numpy" in sys.modules or "torch" in sys.modules:
        return {}
    if importlib.util.find_spec("torch") is None:
        return {}
    before = {}
    for var, value in SPIN_LIMITS.items():
        if var not in os.environ:
            os.environ[var] = value
            before[var] = None
    return before


def restore_env(before: dict) -> None:
    for var, value in before.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def busy_warning(load, cores: int) -> str | None:
    """A warning when other processes compete for the CPU (load above the cores)."""
    if not load or load[0] <= cores - 0.5:
        return None
    return (f"WARNING: load average {load[0]:.1f} on {cores} usable cores: other processes compete for the CPU. "
            "Multi-threaded timings (PyTorch's spinning OpenMP threads most) are inflated, often by whole "
            "scheduler slices; prefer a quiet machine, or --threads 1 for a comparison that survives it.")


class ThreadSettings:
    """Applies one thread count to NumPy's BLAS and to PyTorch, and says how.

    With threadpoolctl installed the BLAS limit is set (and read back) at run
    time; without it, the environment variables set before NumPy's import are
    the only lever, and the report says the count is unverified.
    """

    def __init__(self, n: int):
        self.n = int(n)
        self.method = None
        self._limiter = None
        self._torch_before = None
        self._host_before = None

    def apply(self) -> ThreadSettings:
        from ..backends import host_threads
        self._host_before = host_threads.get_num_threads()
        host_threads.set_num_threads(self.n)  # the engine's own copy/pooling loops
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self.method = "environment variables (threadpoolctl not installed: count not verified)"
        else:
            self._limiter = threadpool_limits(limits=self.n, user_api="blas")
            self.method = "threadpoolctl.threadpool_limits(user_api='blas')"
        try:
            import torch
        except ImportError:
            pass
        else:
            self._torch_before = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def restore(self) -> None:
        """Put the thread counts back (``main`` may run inside a test process)."""
        if self._host_before is not None:
            from ..backends import host_threads
            host_threads.set_num_threads(self._host_before)
            self._host_before = None
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None
        if self._torch_before is not None:
            import torch
            torch.set_num_threads(self._torch_before)
            self._torch_before = None

    def facts(self) -> dict:
        from ..backends import host_memory, host_threads
        out = {"requested": self.n, "method": self.method, "engine_host_threads": host_threads.get_num_threads(),
               "malloc_tuned": host_memory.malloc_tuned(),
               "env": {v: os.environ.get(v) for v in REPORTED_ENV_VARS if os.environ.get(v) is not None}}
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            out["threadpools"] = None
        else:
            out["threadpools"] = [
                {k: info.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads",
                                          "threading_layer", "architecture", "filepath")}
                for info in threadpool_info()]
            blas = [p for p in out["threadpools"] if p["user_api"] == "blas"]
            numpy_blas = [p for p in blas if "numpy" in str(p.get("filepath"))] or blas
            out["blas_threads"] = numpy_blas[0]["num_threads"] if numpy_blas else None
        try:
            import torch
            out["torch_threads"] = torch.get_num_threads()
        except ImportError:
            out["torch_threads"] = None
        return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_family_model() -> str | None:
    """``"family 25 model 17"`` (x86 /proc/cpuinfo): "AMD EPYC" alone does not say
    whether the FMA units are 256 or 512 bits wide (Zen 4: family 25; Zen 5: 26)."""
    found = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("cpu family", "model") and key not in found:
                    found[key] = line.split(":", 1)[1].strip()
                if len(found) == 2:
                    return f"family {found['cpu family']} model {found['model']}"
    except OSError:
        pass
    return None


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError):
        pass
    return None


def _git(*args) -> str | None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def blas_facts() -> dict:
    import numpy as np
    out = {"numpy": np.__version__}
    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        for key in ("blas", "lapack"):
            d = deps.get(key, {})
            out[key] = {k: d.get(k) for k in ("name", "version", "openblas configuration") if d.get(k)}
    except Exception as exc:  # noqa: BLE001  (old NumPy: no mode="dicts")
        out["blas"] = f"unavailable ({type(exc).__name__}: {exc})"
    return out


def torch_facts(cuda: bool = False) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    out = {"version": torch.__version__, "threads": torch.get_num_threads(),
           "mkldnn": bool(torch.backends.mkldnn.is_available())}
    if cuda:
        out["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            out.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                       device=torch.cuda.get_device_name(0),
                       allow_tf32_cudnn=torch.backends.cudnn.allow_tf32,
                       allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                       cudnn_benchmark=torch.backends.cudnn.benchmark)
    return out


def cupy_facts() -> dict | None:
    try:
        import cupy
    except ImportError as exc:
        return {"error": f"CuPy not importable: {exc}"}
    out = {"cupy": cupy.__version__}
    try:
        rt = cupy.cuda.runtime
        dev = cupy.cuda.Device()
        props = rt.getDeviceProperties(dev.id)
        name = props.get("name", b"")
        out.update(
            gpu=name.decode() if isinstance(name, bytes) else str(name),
            compute_capability=dev.compute_capability,
            gpu_memory_gib=round(props.get("totalGlobalMem", 0) / 2 ** 30, 1),
            cuda_runtime=rt.runtimeGetVersion(), cuda_driver=rt.driverGetVersion(),
            device_count=rt.getDeviceCount(),
        )
        try:
            out["nvrtc"] = ".".join(map(str, cupy.cuda.nvrtc.getVersion()))
        except Exception:  # noqa: BLE001
            out["nvrtc"] = None
        out["cupy_cache_dir"] = os.environ.get("CUPY_CACHE_DIR", "~/.cupy/kernel_cache (default)")
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def collect(backend: str, threads: ThreadSettings | None, argv: list[str]) -> dict:
    """Every fact about the machine and the run that a result needs beside it."""
    facts = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m engine.bench " + " ".join(argv),
        "backend": backend,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_family_model": _cpu_family_model(),
        "cpu_logical": os.cpu_count(),
        "cpu_usable": usable_cores(),
        "mem_total_gib": _mem_total_gib(),
        "load_average_start": load_average(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty_engine": bool(_git("status", "--porcelain", "engine", "backends", "kernels")),
        "blas": blas_facts(),
        "threads": threads.facts() if threads is not None else None,
        "torch": torch_facts(cuda=backend == "cupy"),
    }
    try:
        import array_api_compat
        facts["array_api_compat"] = array_api_compat.__version__
    except ImportError:
        pass
    if backend == "cupy":
        facts["cupy"] = cupy_facts()
    return facts


# ----------------------------------------------------------------------------- FMA peak
def fma_peak(threads: int, target_ms: float = 50.0, best_of: int = 5) -> dict | None:
    """The machine's measured float32 FMA peak in GFLOP/s, on 1 thread and on
    ``threads`` threads, from ``peak_fma_f32`` of ``kernels/cpu_peak.c`` (12
    independent vector FMA chains in registers, no memory traffic).

    The iteration count is calibrated so one call takes about ``target_ms`` on
    one thread; the best of ``best_of`` runs is kept (noise only slows a run
    down). The multi-thread figure runs one call per thread at once through
    the engine's host thread pool (``backends/host_threads.py``), timed from
    the first start to the last end. ``None`` without the C kernels.
    Returns ``{"gflops_1": .., "gflops_all": .., "threads": n, "iters": .., "isa": ..}``.
    """
    import ctypes
    import time

    from ..backends import host_threads
    from ..kernels import native
    lib = native.library()
    if lib is None:
        return None
    sink = ctypes.c_float()

    def one(iters):
        return lib.peak_fma_f32(iters, ctypes.byref(sink))

    iters = 1 << 12
    while True:  # calibrate on one thread
        t0 = time.perf_counter()
        one(iters)
        dt = time.perf_counter() - t0
        if dt >= target_ms / 1e3 / 8 or iters >= 1 << 40:
            break
        iters *= 4
    iters = max(1, int(iters * (target_ms / 1e3) / max(dt, 1e-9)))

    def best_rate(n):
        flops = [0] * n

        def part(sl):
            for i in range(sl.start, sl.stop):
                flops[i] = one(iters)
        best = 0.0
        saved = host_threads.get_num_threads()
        host_threads.set_num_threads(n)
        try:
            for _ in range(best_of):
                t0 = time.perf_counter()
                host_threads.parallel_for(part, n, n * host_threads.MIN_ITEMS_PER_THREAD)
                dt = time.perf_counter() - t0
                best = max(best, sum(flops) / dt / 1e9)
        finally:
            host_threads.set_num_threads(saved)
        return best

    out = {"gflops_1": best_rate(1), "threads": threads, "iters": iters, "target_ms": target_ms,
           "best_of": best_of, "flops_per_call": iters * 12 * 2 * _vl(lib),
           "isa": native.status()}
    out["gflops_all"] = best_rate(threads) if threads > 1 else out["gflops_1"]
    return out


def _vl(lib) -> int:
    """floats per vector of the build: 16 (AVX-512) or 8 (AVX2)."""
    return 16 if lib.native_isa() == 512 else 8
