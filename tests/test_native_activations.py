"""The NumPy backend's float32 tanh and sigmoid kernels (kernels/cpu_activations.c via
backends/native_cpu.py).

The backward kernels must be NumPy's expressions bit for bit (NaN payloads, zero signs,
denormals, infinities); the forward kernels are their own approximations, held to an ulp bound
against float64 over a dense sweep of all float32 values (the exhaustive sweep is
bench/results/scripts/activation_ulps.py) and to PyTorch. Results must not depend on the thread
count, and the AVX2 build must pass the whole file.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import engine
from engine import backends, nn, ops
from engine.backends import native_calls, native_cpu
from engine.kernels import native

from _helpers import TORCH_TOL, assert_rel, avx2_rerun, count_native_calls, from_torch, run_file_under_avx2, to_torch, \
    torch_or_skip

pytestmark = pytest.mark.skipif(native.library() is None,
                                reason=f"the C kernels are not usable here: {native.status()}")

#: Largest errors measured over all 2^32 float32 inputs against float64 (docs/cpu-kernels.md);
#: 2.57 and 2.41 (NumPy's own float32 np.tanh measured 1.37 there, the array-API sigmoid 3.64).
TANH_ULPS = 2.6
SIGMOID_ULPS = 2.5
#: Odd lengths: shorter than one vector, a vector and a tail, several vectors and a tail.
LENGTHS = [1, 7, 15, 16, 17, 33, 1000, 4099]
SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1e-45, -1e-45, 1.0, -1.0, 0.5,
                     2.0, 3.4e38, -3.4e38, 1.17549435e-38], np.float32)


#: The sizes from which the NumPy backend takes the kernels (the tests below lower them to 1).
REAL_MIN_ELEMENTS = dict(native_cpu.MIN_ELEMENTS)


@pytest.fixture(autouse=True)
def _kernels_for_every_size(monkeypatch):
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS", dict.fromkeys(REAL_MIN_ELEMENTS, 1))


def _mixed(n, seed):
    """Normal numbers, random bit patterns (NaN payloads, denormals, huge values) and specials."""
    r = np.random.default_rng(seed)
    a = r.standard_normal(n).astype(np.float32)
    bits = r.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    a = np.where(r.random(n) < 0.3, bits, a)
    at = r.integers(0, n, max(1, n // 5))
    a[at] = SPECIALS[r.integers(0, len(SPECIALS), len(at))]
    return a


def _numpy_path(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setattr(backends.get("numpy"), "use_native_kernels", False)
        with np.errstate(all="ignore"):
            return fn(*args)


def _ulps(got, exact):
    """``|got - exact|`` in float32 ulps of ``exact`` (float64, finite)."""
    _, e = np.frexp(exact)
    return np.abs(got.astype(np.float64) - exact) / np.ldexp(1.0, np.maximum(e - 1, -126) - 23)


def _sweep(step=251):
    """Every ``step``-th float32 bit pattern (both signs, denormals, infinities and NaNs), and
    every float32 where the largest errors were found, where tanh's reduction steps (|x| =
    ln(2)/4) and where the results round to 0 and 1."""
    every = np.arange(0, 1 << 32, step, dtype=np.uint64).astype(np.uint32).view(np.float32)
    dense = [np.arange(np.float32(lo).view(np.uint32), np.float32(hi).view(np.uint32), dtype=np.uint32)
             .view(np.float32) for lo, hi in ((0.0620, 0.0628), (0.170, 0.176), (8.9, 9.3), (103.0, 104.5))]
    x = np.concatenate([every] + dense + [-d for d in dense])
    return x[~np.isnan(x)]


# ------------------------------------------------------------------------------ backward: NumPy's bits
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_backward_kernels_equal_numpys_expressions_bit_for_bit(name, n, monkeypatch):
    g, y = _mixed(n, 1), _mixed(n, 2)
    backward = getattr(ops, f"{name}_backward")
    counts = count_native_calls(monkeypatch)
    got = backward(g, y)
    assert counts.get(f"{name}_backward_f32") == 1, counts
    with np.errstate(all="ignore"):
        want = g * (1 - y * y) if name == "tanh" else g * y * (1 - y)
    assert got.dtype == np.float32 and got.shape == (n,)
    assert got.tobytes() == want.tobytes()  # NaN payloads and zero signs too
    assert got.tobytes() == _numpy_path(monkeypatch, backward, g, y).tobytes()


# ------------------------------------------------------------------------------ forward: ulps and specials
@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_forward_kernels_are_within_their_ulp_bound_of_float64(name, monkeypatch):
    x = _sweep()
    counts = count_native_calls(monkeypatch)
    got = getattr(ops, name)(x)
    assert counts.get(f"{name}_f32"), counts
    with np.errstate(over="ignore"):
        exact = np.tanh(x.astype(np.float64)) if name == "tanh" else 1 / (1 + np.exp(-x.astype(np.float64)))
    err = _ulps(got, exact)
    worst = int(np.argmax(err))
    bound = TANH_ULPS if name == "tanh" else SIGMOID_ULPS
    assert err[worst] <= bound, f"{name}({x[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}: {err[worst]:.2f} ulp"
    assert err.mean() < 0.3  # and mostly correctly rounded, not merely within the bound


def test_tanh_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-40, 1e-20, -3e-4, 52.0, -1e4, 3.4e38],
                 np.float32)
    y = ops.tanh(x)
    np.testing.assert_array_equal(np.signbit(y[:2]), [False, True])  # tanh(-0) = -0
    np.testing.assert_array_equal(y[2:4], [1.0, -1.0])
    assert np.isnan(y[4:6]).all() and y[4:6].tobytes() == x[4:6].tobytes()  # the same NaN out
    np.testing.assert_array_equal(y[6:9], x[6:9])  # tanh(x) = x for tiny x, denormals included
    assert y[9] == np.float32(np.tanh(np.float64(x[9])))
    np.testing.assert_array_equal(y[10:], [1.0, -1.0, 1.0])


def test_sigmoid_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, 1000.0, -1000.0, 17.0, -100.0, -103.0, -104.5],
                 np.float32)
    s = ops.sigmoid(x)
    np.testing.assert_array_equal(s[:4], [0.5, 0.5, 1.0, 0.0])
    assert np.isnan(s[4:6]).all() and s[4:6].tobytes() == x[4:6].tobytes()
    np.testing.assert_array_equal(s[6:9], [0.5, 1.0, 0.0])
    assert s[9] in (1.0, np.float32(1 / (1 + np.exp(-17.0))))  # 1 + e rounds to 1: 0.7 ulp
    # the denormal tail, as the float64 value rounds (sigmoid(-100) = 3.7e-44 = 27 * 2^-149)
    exact = 1 / (1 + np.exp(-x[10:].astype(np.float64)))
    assert np.all(np.abs(s[10:] - exact) <= 2 * 2.0 ** -149) and s[10] > 0 and s[-1] == 0.0


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_forward_kernels_match_numpys_values_closely(name, monkeypatch):
    """Not NumPy's bits (np.tanh is NumPy's own approximation), but within a few ulp of them."""
    x = (np.random.default_rng(4).standard_normal((64, 6, 28, 28)) * 3).astype(np.float32)
    got, want = getattr(ops, name)(x), _numpy_path(monkeypatch, getattr(ops, name), x)
    assert np.max(np.abs(got - want) / np.spacing(np.abs(want))) <= 4


# ------------------------------------------------------------------------------ threads, dispatch, PyTorch
@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_results_do_not_depend_on_the_thread_count(name, monkeypatch):
    """1, 2 and 3 parts, on the C pool and on the host threads: the same bits."""
    n = 3 * 4099 + 13
    x, g = _mixed(n, 5), _mixed(n, 6)
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS_PER_THREAD", 1)  # split every call
    real_run, parts = native_calls.run, []
    monkeypatch.setattr(native_calls, "run", lambda lib, entry, args, extent, k: parts.append(k) or
                        real_run(lib, entry, args, extent, k))
    before, results = engine.get_num_threads(), []
    try:
        for pool in (True, False):
            monkeypatch.setattr(native_calls, "USE_POOL", pool)
            for threads in (1, 2, 3):
                engine.set_num_threads(threads)
                y = getattr(ops, name)(x)
                results.append((y.tobytes(), getattr(ops, f"{name}_backward")(g, y).tobytes()))
    finally:
        engine.set_num_threads(before)
    assert parts == [1, 1, 2, 2, 3, 3] * 2  # really split
    assert all(r == results[0] for r in results)


def test_the_numpy_path_is_kept_where_the_kernels_do_not_apply(monkeypatch):
    r = np.random.default_rng(7)
    x64 = r.standard_normal((3, 4))
    counts = count_native_calls(monkeypatch)
    assert ops.tanh(x64).dtype == np.float64 and ops.sigmoid(x64).dtype == np.float64
    np.testing.assert_array_equal(ops.tanh(x64), np.tanh(x64))
    x = x64.astype(np.float32)
    g_row = r.standard_normal((1, 4)).astype(np.float32)  # broadcast gradient: NumPy's expression
    np.testing.assert_array_equal(ops.tanh_backward(g_row, x), g_row * (1 - x * x))
    np.testing.assert_array_equal(ops.sigmoid_backward(g_row, x), g_row * x * (1 - x))
    assert not counts, counts
    empty = np.zeros((0, 5), np.float32)
    assert ops.tanh(empty).shape == (0, 5) and ops.sigmoid_backward(empty, empty).shape == (0, 5)
    assert not counts, counts


def test_small_arrays_stay_with_numpy(monkeypatch):
    """Below MIN_ELEMENTS a call through ctypes costs more than NumPy's loop: NumPy's results."""
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS", REAL_MIN_ELEMENTS)
    counts = count_native_calls(monkeypatch)
    x = np.random.default_rng(10).standard_normal((64, 120)).astype(np.float32)  # LeNet-5's fc1 output
    assert REAL_MIN_ELEMENTS["sigmoid_f32"] <= x.size < min(REAL_MIN_ELEMENTS[k] for k in (
        "tanh_f32", "tanh_backward_f32", "sigmoid_backward_f32"))
    np.testing.assert_array_equal(ops.tanh(x), np.tanh(x))
    np.testing.assert_array_equal(ops.tanh_backward(x, x), x * (1 - x * x))
    ops.sigmoid_backward(x, x)
    assert not counts, counts
    ops.sigmoid(x)  # NumPy's five passes cost more than a call, even here
    assert counts == {"sigmoid_f32": 1}, counts
    big = np.ones((64, 6, 28, 28), np.float32)
    ops.tanh(big), ops.tanh_backward(big, big), ops.sigmoid_backward(big, big)
    assert {"tanh_f32", "tanh_backward_f32", "sigmoid_backward_f32"} <= set(counts), counts


def test_non_contiguous_inputs(monkeypatch):
    r = np.random.default_rng(8)
    base = r.standard_normal((6, 10, 9)).astype(np.float32)
    x, g = base[:, ::2, 1:], np.flip(base, 2)[:, 1::2, :8]
    counts = count_native_calls(monkeypatch)
    y = ops.tanh(x)
    assert y.shape == x.shape and counts.get("tanh_f32") == 1 and not g.flags.c_contiguous
    np.testing.assert_array_equal(y, ops.tanh(np.ascontiguousarray(x)))
    np.testing.assert_array_equal(ops.tanh_backward(g, x), g * (1 - x * x))
    np.testing.assert_array_equal(ops.sigmoid_backward(g, x), g * x * (1 - x))


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_layers_through_autograd_match_torch(name, monkeypatch):
    """nn.Tanh / nn.Sigmoid in float32 (forward and backward through the tape) take the kernels
    and agree with PyTorch CPU element by element."""
    torch = torch_or_skip()
    r = np.random.default_rng(9)
    x = (r.standard_normal((64, 6, 28, 28)) * 3).astype(np.float32)
    gy = r.standard_normal(x.shape).astype(np.float32)
    counts = count_native_calls(monkeypatch)
    xt = engine.Tensor(x, requires_grad=True)
    y = (nn.Tanh() if name == "tanh" else nn.Sigmoid())(xt)
    y.backward(gy)
    assert counts.get(f"{name}_f32") and counts.get(f"{name}_backward_f32"), counts
    tx = to_torch(x, requires_grad=True)
    ty = getattr(torch, name)(tx)
    ty.backward(to_torch(gy))
    ours_y, theirs_y = engine.to_numpy(y.data), from_torch(ty)
    np.testing.assert_allclose(ours_y, theirs_y, rtol=4 * 2.0 ** -23, atol=2.0 ** -126)
    assert_rel(xt.grad, from_torch(tx.grad), TORCH_TOL["float32"], "dx")
    # given torch's own output, the backward kernels agree with torch's (which rounds 1 - y*y
    # differently where y is near +-1: absolute differences of an ulp of 1 times g)
    dx = getattr(ops, f"{name}_backward")(gy, theirs_y)
    want = from_torch(getattr(torch.ops.aten, f"{name}_backward")(to_torch(gy), ty.detach()))
    assert np.all(np.abs(dx - want) <= 2 * 2.0 ** -23 * np.abs(gy) + 2.0 ** -126)


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    """The kernels built for AVX2 (-march=haswell: 8-wide vectors, two-step ldexp), as on CPUs
    without AVX-512, run every test of this file, and give the AVX-512 build's bits (the same
    operations in the same order, the ldexp rounding once either way)."""
    env = run_file_under_avx2(__file__, tmp_path)
    x = _sweep(step=4093)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np; from engine.kernels import native; from engine.backends import native_cpu\n"
              "print(native.status()); x = np.load(sys.argv[1])\n"
              "np.save(sys.argv[2], np.stack([native_cpu.tanh(x), native_cpu.sigmoid(x)]))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("on (AVX2, built by "), done.stdout
    avx2 = np.load(tmp_path / "y.npy")
    assert avx2[0].tobytes() == ops.tanh(x).tobytes() and avx2[1].tobytes() == ops.sigmoid(x).tobytes()
