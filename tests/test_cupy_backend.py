"""The CuPy backend: parity with the NumPy backend on a GPU (``gpu`` marker), and
the errors it gives where CuPy or a CUDA device is missing (every CI run)."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from engine import backends
import engine
from engine.backends.base import Window

DTYPES = ("float64", "float32", "float16")
#: CupyBackend.kernel_variant values: 32-bit kernels where they fit / 64-bit always.
VARIANTS = ("auto", "i64")


def _cupy_reason() -> str | None:
    return backends.unavailable_reason("cupy")


@pytest.fixture(scope="module")
def gpu():
    reason = _cupy_reason()
    if reason is not None:
        pytest.skip(f"CuPy test requires a CUDA device ({reason.splitlines()[0]})")
    if os.environ.get("ENGINE_CUPY_NO_POOL") == "1":
        # bench/gpu_run.sh's compute-sanitizer stage: one cudaMalloc per array, so
        # memcheck sees every out-of-bounds access (a pool block would hide it)
        import cupy
        cupy.cuda.set_allocator(None)
    return backends.get("cupy")


@pytest.fixture(scope="module")
def ref():
    return backends.get("numpy")


# -- without CuPy (or without a device): runs in every CI run ---------------------------

def test_module_imports_without_cupy():
    module = importlib.import_module("engine.backends.cupy_backend")
    assert module.BACKEND_CLASS.name == "cupy"
    names = backends.available()
    assert "numpy" in names
    assert ("cupy" in names) == (_cupy_reason() is None)


def test_set_backend_cupy_without_cupy_says_how_to_install():
    reason = _cupy_reason()
    if reason is None:
        pytest.skip("CuPy and a CUDA device are usable here")
    before = engine.get_backend()
    with pytest.raises(RuntimeError, match=r'pip install "\.\[cuda12\]"') as info:
        engine.set_backend("cupy")
    assert '".[cuda13]"' in str(info.value)
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert "could not be imported" in str(info.value)  # says which of the two is missing
    else:
        assert "CUDA device" in str(info.value)
    assert engine.get_backend() == before  # a failed switch changes nothing
    assert isinstance(info.value, backends.BackendUnavailableError)


# -- geometry -----------------------------------------------------------------------------

def _out(size, k, s, d, p0, p1, ceil_mode):
    span = size + p0 + p1 - (d * (k - 1) + 1)
    if not ceil_mode:
        return span // s + 1
    o = -(-span // s) + 1
    return o - 1 if (o - 1) * s >= size + p0 else o


def _case(n, c, h, w, k, s, d, pads, ceil_mode=False):
    (kh, kw), (sh, sw), (dh, dw), (pt, pb, pl, pr) = k, s, d, pads
    return (n, c, h, w), Window(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr,
                                _out(h, kh, sh, dh, pt, pb, ceil_mode),
                                _out(w, kw, sw, dw, pl, pr, ceil_mode))


CASES = [
    _case(2, 3, 7, 5, (3, 2), (1, 1), (1, 1), (1, 1, 0, 0)),
    _case(1, 1, 5, 5, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), ceil_mode=True),
    _case(2, 2, 9, 6, (2, 3), (2, 3), (2, 1), (0, 1, 1, 0), ceil_mode=True),
    _case(3, 2, 6, 11, (1, 1), (2, 2), (1, 1), (0, 0, 0, 0)),
    _case(1, 4, 8, 8, (3, 3), (1, 1), (2, 2), (2, 2, 2, 2)),
    _case(2, 1, 4, 9, (4, 3), (3, 2), (1, 1), (2, 1, 1, 1), ceil_mode=True),
    _case(4, 16, 32, 32, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    _case(2, 8, 33, 17, (5, 3), (2, 1), (1, 2), (2, 2, 1, 2), ceil_mode=True),
]
IDS = [f"x{'x'.join(map(str, s))}-k{w.kh}{w.kw}-s{w.sh}{w.sw}-d{w.dh}{w.dw}-o{w.oh}x{w.ow}"
       for s, w in CASES]


def _rand(seed, shape, dtype, integers=False):
    rng = np.random.default_rng(seed)
    if integers:
        return rng.integers(-4, 5, size=shape).astype(dtype)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def _close(gpu, actual, expected, dtype, exact=None):
    """Bit for bit in float64 and float32 unless ``exact=False`` (the kernels add
    and divide in the numpy backend's order, IEEE float32 included: common.cuh);
    float16 close unless ``exact=True`` (the kernels accumulate in float32)."""
    assert gpu.owns(actual), f"expected a CuPy array, got {type(actual).__name__}"
    a = gpu.to_numpy(actual)
    assert a.dtype == expected.dtype and a.shape == expected.shape
    if exact is None:
        exact = dtype != "float16"
    if dtype == "float64" or exact:
        np.testing.assert_array_equal(a, expected)
    elif dtype == "float32":
        np.testing.assert_allclose(a, expected, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_allclose(a.astype(np.float32), expected.astype(np.float32),
                                   rtol=1e-2, atol=1e-2)


@contextlib.contextmanager
def _variant(backend, variant):
    """``backend.kernel_variant = variant`` for the block."""
    before = backend.kernel_variant
    backend.kernel_variant = variant
    try:
        yield
    finally:
        backend.kernel_variant = before


# -- parity with the NumPy backend (GPU) ----------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_im2col_col2im_parity(gpu, ref, case, dtype, variant):
    x_shape, win = CASES[case]
    x = _rand(case, x_shape, dtype)
    col = _rand(case + 100, (x_shape[1] * win.kh * win.kw, x_shape[0] * win.oh * win.ow), dtype)
    with _variant(gpu, variant):
        _close(gpu, gpu.im2col(gpu.asarray(x), win), ref.im2col(x, win), dtype, exact=True)
        _close(gpu, gpu.col2im(gpu.asarray(col), x_shape, win), ref.col2im(col, x_shape, win), dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
@pytest.mark.parametrize("data", ["uniform", "ties", "nan"])
def test_max_pool2d_parity(gpu, ref, case, dtype, data, variant):
    x_shape, win = CASES[case]
    x = _rand(case, x_shape, dtype, integers=data != "uniform")
    if data == "nan":
        x[np.random.default_rng(case).random(x_shape) < 0.1] = np.nan
    y_ref, idx_ref = ref.max_pool2d(x, win)
    g = _rand(case + 1, y_ref.shape, dtype)
    with _variant(gpu, variant):
        y, idx = gpu.max_pool2d(gpu.asarray(x), win)
        _close(gpu, y, y_ref, dtype, exact=True)
        _close(gpu, idx, idx_ref.astype(np.int64), "int64", exact=True)  # the kernels keep int64
        # not bit for bit in float32: the numpy backend's C kernel (uint8 indices)
        # adds overlapping windows' gradients in output order, the kernels in tap order
        _close(gpu, gpu.max_pool2d_backward(gpu.asarray(g), idx, x_shape, win),
               ref.max_pool2d_backward(g, idx_ref, x_shape, win), dtype, exact=False)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
def test_avg_pool2d_parity(gpu, ref, case, dtype, count_include_pad, variant):
    x_shape, win = CASES[case]
    x = _rand(case, x_shape, dtype)
    d_ref = ref.avg_pool_divisor(x_shape, win, count_include_pad, dtype)
    d = gpu.avg_pool_divisor(x_shape, win, count_include_pad, dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        y_ref = ref.avg_pool2d(x, win, d_ref)
        g = _rand(case + 1, y_ref.shape, dtype)
        gx_ref = ref.avg_pool2d_backward(g, x_shape, win, d_ref)
    with _variant(gpu, variant):
        _close(gpu, gpu.avg_pool2d(gpu.asarray(x), win, d), y_ref, dtype)
        _close(gpu, gpu.avg_pool2d_backward(gpu.asarray(g), x_shape, win, d), gx_ref, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", [0, 2, 7], ids=[IDS[i] for i in (0, 2, 7)])
def test_float32_subnormals_survive_cupys_ftz(gpu, ref, case, variant):
    """CuPy compiles RawModules with -ftz=true; the kernels' float32 sums,
    divisions and max comparisons are spelled without .ftz, so subnormal data
    gives NumPy's bits (a flush would zero the sums and move argmax to zeros)."""
    x_shape, win = CASES[case]
    tiny = float(np.finfo(np.float32).smallest_normal)
    rng = np.random.default_rng(case)
    x = (rng.uniform(-1, 1, x_shape) * 1.5 * tiny).astype(np.float32)
    x[rng.random(x_shape) < 0.2] = 0
    col = (rng.uniform(-1, 1, (x_shape[1] * win.kh * win.kw, x_shape[0] * win.oh * win.ow))
           * tiny).astype(np.float32)
    d = ref.avg_pool_divisor(x_shape, win, True, "float32")
    with _variant(gpu, variant):
        back = gpu.col2im(gpu.asarray(col), x_shape, win)
        _close(gpu, back, ref.col2im(col, x_shape, win), "float32")
        assert np.any((gpu.to_numpy(back) != 0) & (np.abs(gpu.to_numpy(back)) < tiny))
        y, idx = gpu.max_pool2d(gpu.asarray(x), win)
        y_ref, idx_ref = ref.max_pool2d(x, win)
        _close(gpu, y, y_ref, "float32")
        _close(gpu, idx, idx_ref.astype(np.int64), "int64")
        _close(gpu, gpu.avg_pool2d(gpu.asarray(x), win, d), ref.avg_pool2d(x, win, d), "float32")


@pytest.mark.gpu
def test_kernel_variant_choice_on_the_device(gpu):
    """'auto' picks the 32-bit kernels where every index fits, else the 64-bit ones."""
    x_shape, win = CASES[6]
    assert gpu.kernel_variant in VARIANTS
    with _variant(gpu, "auto"):
        assert gpu._narrow(x_shape, win, 10)
        assert not gpu._narrow((1, 1, 16384, 16384), win._replace(oh=16384, ow=16384), 9 * 2**28)
    with _variant(gpu, "i64"):
        assert not gpu._narrow(x_shape, win, 10)
    with pytest.raises(ValueError, match="kernel_variant"):
        gpu.kernel_variant = "i16"


@pytest.mark.gpu
def test_conv_keeps_large_columns_on_the_device(gpu):
    """A layer whose columns pass the CPU's 32 MiB keeps them on the GPU (budget:
    a share of free device memory), and the backward with them equals the one without."""
    from engine import ops
    assert gpu.keep_columns_bytes > 32 << 20, "less than 128 MiB of free device memory"
    x = gpu.asarray(_rand(1, (16, 64, 32, 32), "float32"))  # columns: 576 x 16384 x 4 = 36 MiB
    w = gpu.asarray(_rand(2, (32, 64, 3, 3), "float32"))
    g = gpu.asarray(_rand(3, (16, 32, 32, 32), "float32"))
    y, columns = ops.conv2d(x, w, None, padding=1, keep_columns=True)
    assert columns is not None
    with_cols = ops.conv2d_backward(g, x, w, padding=1, has_bias=False, columns=columns)
    without = ops.conv2d_backward(g, x, w, padding=1, has_bias=False)
    for a, b in zip(with_cols[:2], without[:2]):
        np.testing.assert_array_equal(gpu.to_numpy(a), gpu.to_numpy(b))
    try:
        gpu.keep_columns_bytes = 1 << 20
        assert ops.conv2d(x, w, None, padding=1, keep_columns=True)[1] is None
    finally:
        gpu.keep_columns_bytes = None  # back to the share of free memory


@pytest.mark.gpu
def test_avg_pool2d_scalar_divisor(gpu, ref):
    x_shape, win = CASES[0]
    x = _rand(0, x_shape, "float64")
    _close(gpu, gpu.avg_pool2d(gpu.asarray(x), win, 6), ref.avg_pool2d(x, win, 6.0), "float64")


@pytest.mark.gpu
def test_non_contiguous_inputs(gpu, ref):
    x_shape, win = CASES[0]
    n, c, h, w = x_shape
    base = _rand(7, (n, c, w, h), "float32")
    x = base.transpose(0, 1, 3, 2)  # a strided view with shape (n, c, h, w)
    xg = gpu.asarray(base).transpose(0, 1, 3, 2)
    assert not xg.flags.c_contiguous
    _close(gpu, gpu.im2col(xg, win), ref.im2col(np.ascontiguousarray(x), win), "float32", exact=True)
    y, _ = gpu.max_pool2d(xg, win)
    _close(gpu, y, ref.max_pool2d(np.ascontiguousarray(x), win)[0], "float32", exact=True)


@pytest.mark.gpu
def test_sliding_windows_parity(gpu, ref):
    x_shape, win = CASES[2]
    x = _rand(3, x_shape, "float64")
    xp_ref = ref.pad2d(x, win)
    _close(gpu, gpu.sliding_windows(gpu.asarray(xp_ref), win),
           np.ascontiguousarray(ref.sliding_windows(xp_ref, win)), "float64")


@pytest.mark.gpu
def test_arrays_dtypes_and_transfers(gpu):
    a = gpu.asarray([[1, 2], [3, 4]], dtype="float32")
    assert gpu.owns(a) and a.dtype == np.float32 and a.shape == (2, 2)
    b = gpu.asarray(np.arange(6, dtype=np.float64).reshape(2, 3), dtype=gpu.dtype("float16"))
    assert b.dtype == np.float16
    np.testing.assert_array_equal(gpu.to_numpy(b), np.arange(6).reshape(2, 3))
    assert isinstance(gpu.to_numpy(a), np.ndarray)
    assert not gpu.owns(np.zeros(3))
    gpu.synchronize()


@pytest.mark.gpu
def test_uniform_reseed_is_reproducible(gpu):
    host = np.random.default_rng(0)
    gpu.reseed(1234)
    a = gpu.to_numpy(gpu.uniform((1000,), "float32", host))
    gpu.reseed(1234)
    b = gpu.to_numpy(gpu.uniform((1000,), "float32", host))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and 0 <= a.min() and a.max() < 1 and a.std() > 0.2
    assert gpu.uniform((3, 4), "float16", host).dtype == np.float16
    engine.manual_seed(5)  # reseeds every loaded backend, this one included
    c = gpu.to_numpy(gpu.uniform((10,), "float64", host))
    engine.manual_seed(5)
    np.testing.assert_array_equal(c, gpu.to_numpy(gpu.uniform((10,), "float64", host)))


@pytest.mark.gpu
def test_workspace(gpu):
    assert isinstance(gpu.default_workspace_bytes, int) and gpu.default_workspace_bytes >= 8 << 20
    old = gpu.workspace_limit
    try:
        gpu.workspace_limit = 12345
        assert gpu.workspace_bytes() == 12345
    finally:
        gpu.workspace_limit = old


@pytest.mark.gpu
def test_launch_checks_give_the_actual_values(gpu):
    x_shape, win = CASES[0]
    with pytest.raises(TypeError, match="int32"):
        gpu.im2col(gpu.asarray(np.zeros(x_shape, np.int32)), win)
    with pytest.raises(TypeError, match="CuPy array"):
        gpu.im2col(np.zeros(x_shape, np.float32), win)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        gpu.col2im(gpu.asarray(np.zeros((3, 4), np.float32)), x_shape, win)
    with pytest.raises(ValueError, match="sh=0"):
        gpu.im2col(gpu.asarray(np.zeros(x_shape, np.float32)), win._replace(sh=0))
    with pytest.raises(ValueError, match="divisor"):
        gpu.avg_pool2d(gpu.asarray(np.zeros(x_shape, np.float32)), win,
                       gpu.asarray(np.ones((win.oh + 1, 2), np.float32)))


@pytest.mark.gpu
def test_im2col_out_of_memory_says_what_to_lower(gpu):
    win = Window(1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 10**6, 10**6)  # a 4 TB column buffer
    with pytest.raises(MemoryError, match=r"backend\.workspace_limit = .*batch size"):
        gpu.im2col(gpu.asarray(np.zeros((1, 1, 1, 1), np.float32)), win)


@pytest.mark.gpu
def test_engine_uses_the_cupy_backend(gpu):
    before = engine.get_backend()
    with engine.use_backend("cupy") as b:
        assert b is gpu and engine.get_backend() == "cupy"
        assert gpu.owns(engine.asarray([1.0, 2.0], dtype="float32"))
    assert engine.get_backend() == before


@pytest.mark.gpu
@pytest.mark.slow
def test_im2col_and_col2im_past_2_31_elements(gpu):
    """64-bit indexing: a column buffer of 2.4e9 elements (> 2**31), checked at sampled entries."""
    import cupy

    n, c, h, w = 1, 1, 16384, 16384
    win = Window(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, h, w)
    rows, cols = c * 9, n * h * w
    need = (rows * cols + 2 * n * c * h * w) * 4
    free, _ = cupy.cuda.runtime.memGetInfo()
    if free + cupy.get_default_memory_pool().free_bytes() < need * 1.1:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    assert rows * cols > 2**31
    x = (cupy.arange(n * c * h * w, dtype=cupy.int64) % 2039).astype(cupy.float32).reshape(n, c, h, w)
    col = gpu.im2col(x, win)
    assert col.shape == (rows, cols)
    rng = np.random.default_rng(0)
    flat = np.concatenate([rng.integers(2**31, rows * cols, size=40),
                           rng.integers(0, rows * cols, size=20), [rows * cols - 1, 2**31]])
    for f in flat.tolist():
        r, q = divmod(f, cols)
        ch, ij = divmod(r, 9)
        i, j = divmod(ij, 3)
        b, rest = divmod(q, h * w)
        oy, ox = divmod(rest, w)
        yy, xx = oy + i - 1, ox + j - 1
        inside = 0 <= yy < h and 0 <= xx < w
        expected = float((((b * c + ch) * h + yy) * w + xx) % 2039) if inside else 0.0
        assert float(col[r, q].item()) == expected, (f, r, q)
    back = gpu.col2im(col, (n, c, h, w), win)  # each pixel, times the windows that read it
    for f in [0, h * w - 1, w - 1, (h // 2) * w + w // 2, (h - 1) * w + 5]:
        yy, xx = divmod(f, w)
        count = (3 - (yy in (0, h - 1))) * (3 - (xx in (0, w - 1)))
        assert float(back[0, 0, yy, xx].item()) == float(f % 2039) * count, f
    del col, back
    cupy.get_default_memory_pool().free_all_blocks()


# -- the wrappers' Python code without a GPU: a stand-in cupy (every CI run) ----------------
#
# NumPy arrays play device arrays, and RawModule compiles the source it is given
# with g++ and kernels/host_shim.h, so every launch of CupyBackend runs the real
# kernel text on the CPU, with its arguments checked against the C signature.

class _StandInArray(np.ndarray):
    @property
    def data(self):  # cupy: ndarray.data is a MemoryPointer with a device_id
        return types.SimpleNamespace(device_id=0)


def _stand_in_cupy(tmp_path):
    def dev(a):
        return np.asarray(a).view(_StandInArray)

    class Device:
        def __init__(self, id=None):
            self.id = 0 if id is None else id

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

    class OutOfMemoryError(Exception):
        pass

    launched = []  # entry points in launch order

    class RawModule:
        def __init__(self, code, options=()):
            self.code, self.options, self.lib = code, tuple(options), None

        def get_function(self, name):
            if self.lib is None:
                from engine import kernels
                entries = [e for s in kernels.source_names() for e in kernels.entry_points(s)
                           if kernels.read_source(s) == self.code]
                body = [f'#include "{Path(kernels.__file__).parent / "host_shim.h"}"', self.code]
                for e in entries:
                    fp16 = e.endswith("_f16")
                    body += ["#ifndef KERNELS_NO_FP16"] * fp16 + [f"SHIM_EXPORT({e})"] + ["#endif"] * fp16
                stem = tmp_path / f"module{len(list(tmp_path.glob('*.so')))}"
                Path(f"{stem}.cpp").write_text("\n".join(body) + "\n")
                subprocess.run([shutil.which("g++"), "-std=c++17", "-O1", "-shared", "-fPIC",
                                *self.options, "-o", f"{stem}.so", f"{stem}.cpp"], check=True)
                self.lib = ctypes.CDLL(f"{stem}.so")
            launch = getattr(self.lib, f"launch_{name}")
            launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
            signature = getattr(self.lib, f"signature_{name}")
            signature.restype = ctypes.c_char_p

            def kernel(grid, block, args):
                launched.append(name)
                codes, held = "", []
                for a in args:
                    if isinstance(a, _StandInArray):
                        assert a.flags.c_contiguous, f"{name}: a RawKernel reads raw memory"
                        codes, held = codes + "p", held + [ctypes.c_void_p(a.ctypes.data)]
                    elif type(a) is np.int64:
                        codes, held = codes + "q", held + [ctypes.c_longlong(int(a))]
                    elif type(a) is np.int32:
                        codes, held = codes + "i", held + [ctypes.c_int(int(a))]
                    else:
                        raise TypeError(f"{name}: argument {a!r} is not a device array, np.int64 "
                                        "or np.int32")
                assert codes == signature().decode(), (name, codes, signature().decode())
                argv = (ctypes.c_void_p * len(held))(*(ctypes.addressof(h) for h in held))
                launch(grid[0], block[0], argv)
            return kernel

    def memoize(for_each_device=False):
        return lambda f: functools.lru_cache(maxsize=None)(f)

    class Generator:
        def __init__(self, seed):
            self.rng = np.random.default_rng(seed)

        def random(self, size=None, dtype=np.float64):
            assert np.dtype(dtype).name in ("float32", "float64")
            return dev(self.rng.random(size, dtype=dtype))

    cupy = types.ModuleType("cupy")
    cupy.__version__ = "stand-in"
    cupy.launched = launched
    cupy.ndarray = _StandInArray
    cupy.asarray = lambda a, dtype=None: dev(np.asarray(a, dtype=dtype))
    cupy.empty = lambda shape, dtype=float: dev(np.empty(shape, dtype=dtype))
    cupy.ascontiguousarray = lambda a: dev(np.ascontiguousarray(a))
    cupy.broadcast_to = lambda a, shape: dev(np.broadcast_to(a, shape))
    cupy.asnumpy = lambda a: np.array(a).view(np.ndarray)
    cupy.from_dlpack = lambda a: dev(np.from_dlpack(a))
    cupy.memoize = memoize
    cupy.RawModule = RawModule
    cupy.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0)
    cupy.random = types.SimpleNamespace(default_rng=Generator)
    cupy.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
        as_strided=lambda x, shape, strides: dev(np.lib.stride_tricks.as_strided(x, shape, strides))))
    cupy.cuda = types.SimpleNamespace(
        Device=Device,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=lambda: (1 << 30, 2 << 30),
                                      getDeviceProperties=lambda i: {"multiProcessorCount": 1}),
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        compiler=types.SimpleNamespace(CompileException=type("CompileException", (Exception,), {})))
    xp = types.ModuleType("array_api_compat.cupy")
    for name in ("float16", "float32", "float64", "int64"):
        setattr(xp, name, getattr(np, name))
    return cupy, xp


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A CupyBackend built on the stand-in cupy; the real modules come back afterwards."""
    if shutil.which("g++") is None:
        pytest.skip("the stand-in cupy runs kernels through g++, which is not installed")
    import array_api_compat

    from engine import kernels
    cupy, xp = _stand_in_cupy(tmp_path)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", xp)
    monkeypatch.setattr(array_api_compat, "cupy", xp, raising=False)
    monkeypatch.delitem(sys.modules, "engine.backends.cupy_backend", raising=False)
    kernels._loader.cache_clear()
    module = importlib.import_module("engine.backends.cupy_backend")
    yield module.CupyBackend()
    kernels._loader.cache_clear()
    sys.modules.pop("engine.backends.cupy_backend", None)  # the next import sees the real cupy again


def test_wrappers_run_the_kernels_through_a_stand_in_cupy(stand_in, ref):
    for variant in VARIANTS:
        for case in (0, 1, 2, 5):
            for dtype in ("float64", "float32"):
                test_im2col_col2im_parity(stand_in, ref, case, dtype, variant)
                test_max_pool2d_parity(stand_in, ref, case, dtype, "nan", variant)
                test_avg_pool2d_parity(stand_in, ref, case, dtype, case % 2 == 0, variant)
        test_im2col_col2im_parity(stand_in, ref, 2, "float16", variant)
        test_float32_subnormals_survive_cupys_ftz(stand_in, ref, 2, variant)
    test_avg_pool2d_scalar_divisor(stand_in, ref)
    test_non_contiguous_inputs(stand_in, ref)
    test_sliding_windows_parity(stand_in, ref)
    test_launch_checks_give_the_actual_values(stand_in)
    stand_in.reseed(3)
    a = stand_in.uniform((5,), "float16", np.random.default_rng(0))
    assert stand_in.owns(a) and a.dtype == np.float16


def test_stand_in_out_of_memory_becomes_memory_error(stand_in, monkeypatch):
    cupy = sys.modules["cupy"]

    def out_of_memory(*args, **kwargs):
        raise cupy.cuda.memory.OutOfMemoryError("out of memory allocating 4,000,000,000,000 bytes")

    monkeypatch.setattr(cupy, "empty", out_of_memory)
    x = stand_in.asarray(np.zeros((1, 1, 1, 1), np.float32))
    with pytest.raises(MemoryError, match=r"backend\.workspace_limit = .*batch size"):
        stand_in.im2col(x, Window(1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 10**6, 10**6))


def test_stand_in_without_a_device(stand_in, monkeypatch):
    cupy = sys.modules["cupy"]
    module = sys.modules["engine.backends.cupy_backend"]
    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    with pytest.raises(backends.BackendUnavailableError, match=r"no CUDA device.*\.\[cuda12\]"):
        module.CupyBackend()

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", no_driver)
    with pytest.raises(backends.BackendUnavailableError, match=r"InsufficientDriver.*\.\[cuda13\]"):
        module.CupyBackend()


def test_stand_in_kernel_variant_choice(stand_in, monkeypatch):
    """'auto' launches the 32-bit kernels where every index fits, 'i64' the
    64-bit ones; ENGINE_CUDA_KERNELS sets it when the backend is made."""
    cupy = sys.modules["cupy"]
    module = sys.modules["engine.backends.cupy_backend"]
    x_shape, win = CASES[1]
    x = stand_in.asarray(_rand(0, x_shape, "float32"))
    assert stand_in.kernel_variant == "auto"
    cupy.launched.clear()
    col = stand_in.im2col(x, win)
    stand_in.col2im(col, x_shape, win)
    y, idx = stand_in.max_pool2d(x, win)
    stand_in.max_pool2d_backward(y, idx, x_shape, win)
    stand_in.avg_pool2d_backward(stand_in.avg_pool2d(x, win, 4.0), x_shape, win, 4.0)
    assert cupy.launched == ["im2col_i32_f32", "col2im_i32_f32", "max_pool2d_forward_i32_f32",
                             "max_pool2d_backward_i32_f32", "avg_pool2d_forward_i32_f32",
                             "avg_pool2d_backward_i32_f32"]
    with _variant(stand_in, "i64"):
        cupy.launched.clear()
        stand_in.col2im(stand_in.im2col(x, win), x_shape, win)
        assert cupy.launched == ["im2col_f32", "col2im_f32"]
    # past 2**31 elements of the column matrix, 'auto' falls back to the 64-bit kernels
    big = (1, 1, 16384, 16384)
    big_win = Window(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16384, 16384)
    assert not stand_in._narrow(big, big_win, 9 * 16384 * 16384)
    assert stand_in._narrow(big, big_win, 16384 * 16384)  # pooling-sized output: fits
    monkeypatch.setenv("ENGINE_CUDA_KERNELS", "i64")
    assert module.CupyBackend().kernel_variant == "i64"
    monkeypatch.setenv("ENGINE_CUDA_KERNELS", "fast")
    with pytest.raises(ValueError, match=r"kernel_variant must be one of 'auto', 'i64'.*'fast'"):
        module.CupyBackend()


def test_stand_in_keep_columns_bytes(stand_in, monkeypatch):
    """The conv layers' keep-columns budget on a device: a share of free device
    memory (pool cache included), not the CPU backends' 32 MiB; settable."""
    cupy = sys.modules["cupy"]
    assert stand_in.keep_columns_bytes == (1 << 30) // 4  # the stand-in reports 1 GiB free
    monkeypatch.setattr(cupy.cuda.runtime, "memGetInfo", lambda: (60 << 30, 80 << 30))
    monkeypatch.setattr(cupy, "get_default_memory_pool",
                        lambda: types.SimpleNamespace(free_bytes=lambda: 4 << 30))
    assert stand_in.keep_columns_bytes == 16 << 30  # a quarter of 60 + 4 GiB
    stand_in.keep_columns_fraction = 0.5
    assert stand_in.keep_columns_bytes == 32 << 30
    stand_in.keep_columns_bytes = 12345
    assert stand_in.keep_columns_bytes == 12345
    stand_in.keep_columns_bytes = 0  # keep nothing
    assert stand_in.keep_columns_bytes == 0
    stand_in.keep_columns_bytes = None
    assert stand_in.keep_columns_bytes == 32 << 30
    for bad in (-1, 1.5, True, "1GB"):
        with pytest.raises(ValueError, match=r"keep_columns_bytes must be a number of bytes >= 0"):
            stand_in.keep_columns_bytes = bad
