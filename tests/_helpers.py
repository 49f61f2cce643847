"""Small helpers shared by the op and model test files (not fixtures: plain functions)."""
from __future__ import annotations

import numpy as np
import pytest

import engine

#: Largest relative error (max |got - expected| / max |expected|) accepted against PyTorch.
TORCH_TOL = {"float64": 1e-10, "float32": 1e-5}
#: Against the float64 naive-loop references (same arithmetic, different summation order).
REF_TOL = {"float64": 1e-12, "float32": 1e-5}
#: Finite differences (eps=1e-6, central) against analytic float64 gradients.
FD_TOL = 1e-6


def torch_or_skip():
    """The ``torch`` module, or skip the test: PyTorch is the outside oracle."""
    return pytest.importorskip(
        "torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of the parity tests")


def rel_err(got, expected) -> float:
    """``max |got - expected| / max |expected|`` in float64 (0 for two empty arrays)."""
    got = np.asarray(engine.to_numpy(got) if not isinstance(got, np.ndarray) else got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    if expected.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    return float(np.max(np.abs(got - expected))) / scale


def assert_rel(got, expected, tol, what=""):
    err = rel_err(got, expected)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"


def to_torch(a, requires_grad=False):
    torch = torch_or_skip()
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_(requires_grad) if requires_grad else t


def from_torch(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def on(backend_name, a, dtype=None):
    """``a`` (NumPy) as an array of backend ``backend_name``."""
    return engine.asarray(a, dtype=dtype, backend=backend_name)


def forward_backward(module, x, grad_out, **kwargs):
    """One forward of ``module`` on ``x`` as a leaf Tensor that requires grad,
    then ``y.backward(grad_out)``. Parameter gradients accumulate into ``.grad``
    as in training. Returns ``(y, dx)``: the output Tensor and the input's
    gradient (an array of ``x``'s backend)."""
    x_t = engine.Tensor(engine.asarray(x) if isinstance(x, np.ndarray) else x, requires_grad=True)
    y = module(x_t, **kwargs)
    y.backward(engine.asarray(grad_out, dtype=y.dtype) if isinstance(grad_out, np.ndarray) else grad_out)
    return y, x_t.grad


def backward_through(module, x, grad_out, **kwargs):
    """The input gradient of :func:`forward_backward`."""
    return forward_backward(module, x, grad_out, **kwargs)[1]


def assert_raises(exc, call, *words):
    """``call()`` raises ``exc`` whose message contains every one of ``words``."""
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def cpu_has(*features) -> bool:
    """True if ``/proc/cpuinfo`` lists every one of ``features`` (e.g. ``"avx2", "fma"``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return all(feature in flags for feature in features)


def avx2_rerun(test):
    """Mark ``test`` (which reruns its own file under the AVX2 build) to skip inside that
    rerun and on CPUs without AVX2 and FMA."""
    import os
    test = pytest.mark.skipif(not cpu_has("avx2", "fma"), reason="the AVX2 kernels need a CPU with AVX2 and FMA")(test)
    return pytest.mark.skipif(os.environ.get("ENGINE_NATIVE_MARCH") is not None,
                              reason="already running under a forced -march (this is the inner run)")(test)


def run_file_under_avx2(test_file: str, cache_dir) -> dict:
    """Run every test of ``test_file`` in a fresh pytest with the C kernels built for AVX2
    (``ENGINE_NATIVE_MARCH=haswell``, cached in ``cache_dir``); assert they all pass and
    return the environment used."""
    import os
    import re
    import subprocess
    import sys
    env = {**os.environ, "ENGINE_NATIVE_MARCH": "haswell", "ENGINE_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
                          capture_output=True, text=True, env=env, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(test_file))))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout) and " failed" not in done.stdout
    return env


def count_native_calls(monkeypatch) -> dict:
    """Count the C entry points that ``engine.backends.native_cpu`` calls, directly or
    through the C thread pool (``native_calls.run``): ``{name: calls}``, filled as the test
    runs. Dispatch is unchanged: the wrapper stands in only where ``native_cpu._lib`` would
    have given the library, and the pool is handed the real one."""
    from engine.backends import native_calls, native_cpu
    real_lib, real_run, counts = native_cpu._lib, native_calls.run, {}

    class Counting:
        def __init__(self, lib):
            self._lib = lib

        def __getattr__(self, name):
            fn = getattr(self._lib, name)

            def call(*args):
                counts[name] = counts.get(name, 0) + 1
                return fn(*args)
            return call

    def counting_lib(*arrays):
        lib = real_lib(*arrays)
        return Counting(lib) if lib is not None else None

    def counting_run(lib, name, *args):
        if isinstance(lib, Counting):
            counts[name] = counts.get(name, 0) + 1
            lib = lib._lib
        return real_run(lib, name, *args)
    monkeypatch.setattr(native_calls, "run", counting_run)
    monkeypatch.setattr(native_cpu, "_lib", counting_lib)
    return counts


def assert_conv2d_matches_torch_float64(x, w, b, **kwargs):
    """``ops.conv2d`` in float32 against PyTorch's float64 convolution of the same arrays."""
    from engine import ops
    torch = torch_or_skip()
    got = ops.conv2d(x, w, b, **kwargs)
    want = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                      torch.from_numpy(b).double(), **kwargs).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def torch_conv2d_input_grad_float64(x, w, g, **kwargs):
    """PyTorch's float64 input gradient of ``conv2d(x, w, **kwargs)`` for the output gradient ``g``."""
    torch = torch_or_skip()
    xt = torch.from_numpy(x).double().requires_grad_(True)
    torch.nn.functional.conv2d(xt, torch.from_numpy(w).double(), **kwargs).backward(torch.from_numpy(g).double())
    return xt.grad.numpy()


def bits_over_threads(monkeypatch, call, threads=(1, 2, 3)) -> list:
    """The bytes of ``call()``'s result on each thread count, every C call split (a threshold
    of 1)."""
    import engine
    from engine.backends import native_cpu
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    before = engine.get_num_threads()
    try:
        outs = []
        for n in threads:
            engine.set_num_threads(n)
            outs.append(call().tobytes())
    finally:
        engine.set_num_threads(before)
    return outs


def conv2d_bits_over_threads(monkeypatch, x, w, b, threads=(1, 2, 3), **kwargs) -> list:
    """``ops.conv2d``'s output bytes on each thread count, every call split (a threshold of 1)."""
    from engine import ops
    return bits_over_threads(monkeypatch, lambda: ops.conv2d(x, w, b, **kwargs), threads)
