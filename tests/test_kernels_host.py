"""Run the CUDA kernel sources on the CPU and compare them with the NumPy backend.

kernels/host_shim.h defines the CUDA keywords and built-ins and a launcher that
runs every thread of the grid one after the other; g++ compiles the same
``.cu`` text the GPU gets (``kernels.read_source``) into a shared library,
loaded with ctypes. Arguments are packed by the same ``kernels.*_args``
functions the CuPy backend uses, and checked against each entry point's C
signature, so index bugs and argument mix-ups fail here, on any CI machine.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine import backends
from engine import kernels
from engine.backends.base import Window

CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="the host-shim tests need a C++ compiler (g++)")

KERNELS_DIR = Path(kernels.__file__).resolve().parent
DTYPES = ("float64", "float32", "float16")


# -- building and launching ---------------------------------------------------------

class ShimLibrary:
    def __init__(self, path: Path, source: str):
        self.lib = ctypes.CDLL(str(path))
        self.source = source
        self.has_fp16 = bool(self.lib.shim_has_fp16())

    def signature(self, entry: str) -> str:
        fn = getattr(self.lib, f"signature_{entry}")
        fn.restype = ctypes.c_char_p
        return fn().decode()

    def launch(self, entry: str, args: tuple, grid: int, block: int) -> None:
        codes, holders = [], []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, "kernels read raw memory: pass contiguous arrays"
                codes.append("p")
                holders.append(ctypes.c_void_p(a.ctypes.data))
            elif type(a) is np.int64:
                codes.append("q")
                holders.append(ctypes.c_longlong(int(a)))
            elif type(a) is np.int32:
                codes.append("i")
                holders.append(ctypes.c_int(int(a)))
            else:
                raise TypeError(f"{entry}: argument {a!r} of type {type(a).__name__} is neither "
                                "an array, np.int64 nor np.int32")
        expected = self.signature(entry)
        assert "".join(codes) == expected, (
            f"{entry}: packed argument types {''.join(codes)!r} != C signature {expected!r}")
        argv = (ctypes.c_void_p * len(holders))(*(ctypes.addressof(h) for h in holders))
        fn = getattr(self.lib, f"launch_{entry}")
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        fn.restype = None
        fn(grid, block, argv)


@pytest.fixture(scope="session")
def shim(tmp_path_factory) -> dict[str, ShimLibrary]:
    """One shared library per kernel source, built once per test session."""
    out = tmp_path_factory.mktemp("kernel_shim")
    libs = {}
    for source in kernels.source_names():
        stem = source.rsplit(".", 1)[0]
        lines = [f'#include "{KERNELS_DIR / "host_shim.h"}"', kernels.read_source(source)]
        lines += [f"SHIM_EXPORT({e})" for e in kernels.entry_points(source, fp16=False)]
        lines += ["#ifndef KERNELS_NO_FP16"]
        lines += [f"SHIM_EXPORT({e})" for e in kernels.entry_points(source)
                  if e not in kernels.entry_points(source, fp16=False)]
        lines += ["#endif", ""]
        cpp = out / f"{stem}_shim.cpp"
        cpp.write_text("\n".join(lines))
        so = out / f"lib{stem}_shim.so"
        cmd = [CXX, "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
               "-o", str(so), str(cpp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"building the host shim for {source} failed:\n{' '.join(cmd)}\n"
                        f"{proc.stdout}{proc.stderr}")
        libs[source] = ShimLibrary(so, source)
    return libs


_LAUNCHES = [(1, 1), (2, 3), (3, 32), None]  # None: kernels.launch_config with small blocks
#: The two variants of every kernel: 64-bit per-element ("i64"), 32-bit taps ("i32").
VARIANTS = ("i64", "i32")


def run(shim, kernel: str, dtype: str, pack, x_shape, win, variant: str, case: int) -> None:
    """Launch ``kernel`` in ``variant`` with the arguments ``pack(narrow)`` gives."""
    narrow = variant == "i32"
    name = kernels.variant_name(kernel, narrow)
    lib = shim[kernels.source_of(name)]
    if dtype == "float16" and not lib.has_fp16:
        pytest.skip("this C++ compiler has no _Float16, so the host shim leaves float16 out")
    total = kernels.loop_extent(name, x_shape, win)
    cfg = _LAUNCHES[case % len(_LAUNCHES)] or kernels.launch_config(total, 64, block=16)
    lib.launch(kernels.entry_name(name, dtype), pack(narrow), *cfg)


# -- window geometry ------------------------------------------------------------------

def out_size(size, k, s, d, p0, p1, ceil_mode):
    span = size + p0 + p1 - (d * (k - 1) + 1)
    assert span >= 0
    if not ceil_mode:
        return span // s + 1
    o = -(-span // s) + 1
    if (o - 1) * s >= size + p0:  # the last window must start inside the image or left pad
        o -= 1
    return o


def make_case(n, c, h, w, k, s, d, pads, ceil_mode=False):
    kh, kw = k
    sh, sw = s
    dh, dw = d
    pt, pb, pl, pr = pads
    oh = out_size(h, kh, sh, dh, pt, pb, ceil_mode)
    ow = out_size(w, kw, sw, dw, pl, pr, ceil_mode)
    return (n, c, h, w), Window(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, oh, ow)


def _cases():
    cases = [
        make_case(2, 3, 7, 5, (3, 2), (1, 1), (1, 1), (1, 1, 0, 0)),
        make_case(1, 1, 5, 5, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), ceil_mode=True),
        make_case(2, 2, 9, 6, (2, 3), (2, 3), (2, 1), (0, 1, 1, 0), ceil_mode=True),
        make_case(3, 2, 6, 11, (1, 1), (2, 2), (1, 1), (0, 0, 0, 0)),
        make_case(1, 4, 8, 8, (3, 3), (1, 1), (2, 2), (2, 2, 2, 2)),
        make_case(2, 1, 4, 9, (4, 3), (3, 2), (1, 1), (2, 1, 1, 1), ceil_mode=True),
        make_case(1, 2, 3, 3, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0)),
        make_case(1, 1, 2, 3, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
        make_case(1, 2, 10, 7, (3, 2), (3, 2), (1, 2), (1, 0, 1, 0), ceil_mode=True),
        # stride and dilation with a common factor: the taps reading a pixel are
        # gcd-spaced (the 32-bit gathers' progression), and strides past the kernel
        make_case(2, 2, 13, 12, (3, 3), (2, 2), (2, 2), (2, 1, 2, 2), ceil_mode=True),
        make_case(1, 1, 23, 19, (4, 3), (4, 6), (6, 4), (3, 3, 4, 0)),
        make_case(2, 1, 9, 11, (2, 2), (5, 4), (1, 1), (0, 0, 1, 1), ceil_mode=True),
    ]
    rng = np.random.default_rng(20240611)
    while len(cases) < 21:
        kh, kw = rng.integers(1, 5, size=2)
        sh, sw = rng.integers(1, 4, size=2)
        dh, dw = rng.integers(1, 4, size=2)
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        pt, pb = rng.integers(0, eh // 2 + 1, size=2)
        pl, pr = rng.integers(0, ew // 2 + 1, size=2)
        h = int(rng.integers(max(1, eh - pt - pb), eh + 9))
        w = int(rng.integers(max(1, ew - pl - pr), ew + 9))
        cases.append(make_case(int(rng.integers(1, 4)), int(rng.integers(1, 4)), h, w,
                               (int(kh), int(kw)), (int(sh), int(sw)), (int(dh), int(dw)),
                               (int(pt), int(pb), int(pl), int(pr)), bool(rng.integers(2))))
    return cases


CASES = _cases()
CASE_IDS = [f"x{'x'.join(map(str, s))}-k{w.kh}x{w.kw}-s{w.sh}x{w.sw}-d{w.dh}x{w.dw}"
            f"-p{w.pad_top}{w.pad_bottom}{w.pad_left}{w.pad_right}-o{w.oh}x{w.ow}"
            for s, w in CASES]


def test_cases_cover_the_interesting_geometry():
    overhang = [w.padded_size(s[2], s[3]) != (s[2] + w.pad_top + w.pad_bottom,
                                              s[3] + w.pad_left + w.pad_right)
                for s, w in CASES]
    assert any(overhang), "no case has a ceil_mode overhang"
    assert any(s[0] == 1 for s, _ in CASES), "no case with batch 1"
    assert any(w.kh != w.kw for _, w in CASES) and any(s[2] != s[3] for s, _ in CASES)
    assert any(w.pad_top != w.pad_bottom or w.pad_left != w.pad_right for _, w in CASES)
    assert any(w.dh > 1 or w.dw > 1 for _, w in CASES)


# -- helpers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ref():
    return backends.get("numpy")


def rand(rng, shape, dtype, integers=False):
    if integers:  # small integers: many ties, exact sums in every dtype
        return rng.integers(-4, 5, size=shape).astype(dtype)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def assert_matches(actual, expected, dtype, *, exact=False):
    """Bit for bit in float32 and float64 (same operations in the same order as
    the numpy backend); float16 close (the kernels accumulate in float32)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if exact or dtype in ("float64", "float32"):
        np.testing.assert_array_equal(actual, expected)
    else:  # float16 storage: the kernels accumulate in float32, NumPy in float16
        np.testing.assert_allclose(actual.astype(np.float32), expected.astype(np.float32),
                                   rtol=1e-2, atol=1e-2)


# -- the tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_im2col(shim, ref, case, dtype, variant):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    x = rand(np.random.default_rng(case), x_shape, dtype)
    col = np.full((c * win.kh * win.kw, n * win.oh * win.ow), np.nan, dtype=dtype)
    run(shim, "im2col", dtype, lambda narrow: kernels.im2col_args(x, col, x_shape, win, narrow),
        x_shape, win, variant, case)
    assert_matches(col, ref.im2col(x, win), dtype, exact=True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_col2im(shim, ref, case, dtype, variant):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    col = rand(np.random.default_rng(case), (c * win.kh * win.kw, n * win.oh * win.ow), dtype)
    x = np.full(x_shape, np.nan, dtype=dtype)
    run(shim, "col2im", dtype, lambda narrow: kernels.col2im_args(col, x, x_shape, win, narrow),
        x_shape, win, variant, case)
    assert_matches(x, ref.col2im(col, x_shape, win), dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
@pytest.mark.parametrize("data", ["uniform", "ties", "nan"])
def test_max_pool2d(shim, ref, case, dtype, data, variant):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    rng = np.random.default_rng(case)
    x = rand(rng, x_shape, dtype, integers=data != "uniform")
    if data == "nan":
        x[rng.random(x_shape) < 0.1] = np.nan
    y = np.full((n, c, win.oh, win.ow), 7, dtype=dtype)
    idx = np.full((n, c, win.oh, win.ow), -1, dtype=np.int64)
    run(shim, "max_pool2d_forward", dtype,
        lambda narrow: kernels.max_pool2d_forward_args(x, y, idx, x_shape, win, narrow),
        x_shape, win, variant, case)
    y_ref, idx_ref = ref.max_pool2d(x, win)
    idx_ref = idx_ref.astype(np.int64)  # the kernels keep int64 indices; the numpy backend may use uint8
    assert_matches(y, y_ref, dtype, exact=True)
    assert_matches(idx, idx_ref, "int64", exact=True)

    grad = rand(rng, y.shape, dtype)
    gx = np.full(x_shape, np.nan, dtype=dtype)
    run(shim, "max_pool2d_backward", dtype,
        lambda narrow: kernels.max_pool2d_backward_args(grad, idx_ref, gx, x_shape, win, narrow),
        x_shape, win, variant, case + 1)
    assert_matches(gx, ref.max_pool2d_backward(grad, idx_ref, x_shape, win), dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
def test_avg_pool2d(shim, ref, case, dtype, count_include_pad, variant):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    rng = np.random.default_rng(case)
    x = rand(rng, x_shape, dtype)
    divisor = np.ascontiguousarray(ref.avg_pool_divisor(x_shape, win, count_include_pad, dtype))
    assert divisor.shape == (win.oh, win.ow)
    y = np.full((n, c, win.oh, win.ow), 7, dtype=dtype)
    with np.errstate(divide="ignore", invalid="ignore"):  # a window may lie in the padding only
        run(shim, "avg_pool2d_forward", dtype,
            lambda narrow: kernels.avg_pool2d_forward_args(x, divisor, y, x_shape, win, narrow),
            x_shape, win, variant, case)
        assert_matches(y, ref.avg_pool2d(x, win, divisor), dtype)

        grad = rand(rng, y.shape, dtype)
        gx = np.full(x_shape, np.nan, dtype=dtype)
        run(shim, "avg_pool2d_backward", dtype,
            lambda narrow: kernels.avg_pool2d_backward_args(grad, divisor, gx, x_shape, win, narrow),
            x_shape, win, variant, case + 1)
        assert_matches(gx, ref.avg_pool2d_backward(grad, x_shape, win, divisor), dtype)


SUBNORMAL = float(np.finfo(np.float32).smallest_normal)  # 1.18e-38: values below it are subnormal


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", [0, 2, 9, 10], ids=[CASE_IDS[i] for i in (0, 2, 9, 10)])
def test_float32_subnormals_are_kept(shim, ref, case, variant):
    """float32 subnormal data: sums, the average's division and max pooling's
    comparisons keep IEEE results (CuPy's -ftz=true would flush them; the
    kernels spell those operations without .ftz, see common.cuh)."""
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    rng = np.random.default_rng(100 + case)
    x = (rng.uniform(-1, 1, x_shape) * 1.5 * SUBNORMAL).astype(np.float32)  # mostly subnormal
    x[rng.random(x_shape) < 0.2] = 0  # zeros beside subnormals: a flush would change the argmax
    assert np.mean((x != 0) & (np.abs(x) < SUBNORMAL)) > 0.4
    col = (rng.uniform(-1, 1, (c * win.kh * win.kw, n * win.oh * win.ow)) * SUBNORMAL).astype(np.float32)
    out = np.full(x_shape, np.nan, dtype=np.float32)
    run(shim, "col2im", "float32", lambda narrow: kernels.col2im_args(col, out, x_shape, win, narrow),
        x_shape, win, variant, case)
    assert_matches(out, ref.col2im(col, x_shape, win), "float32", exact=True)
    assert np.any((out != 0) & (np.abs(out) < SUBNORMAL))

    y = np.full((n, c, win.oh, win.ow), 7, dtype=np.float32)
    idx = np.full(y.shape, -1, dtype=np.int64)
    run(shim, "max_pool2d_forward", "float32",
        lambda narrow: kernels.max_pool2d_forward_args(x, y, idx, x_shape, win, narrow),
        x_shape, win, variant, case)
    y_ref, idx_ref = ref.max_pool2d(x, win)
    assert_matches(y, y_ref, "float32", exact=True)
    assert_matches(idx, idx_ref.astype(np.int64), "int64", exact=True)

    divisor = np.ascontiguousarray(ref.avg_pool_divisor(x_shape, win, True, "float32"))
    ya = np.full(y.shape, 7, dtype=np.float32)
    run(shim, "avg_pool2d_forward", "float32",
        lambda narrow: kernels.avg_pool2d_forward_args(x, divisor, ya, x_shape, win, narrow),
        x_shape, win, variant, case)
    assert_matches(ya, ref.avg_pool2d(x, win, divisor), "float32", exact=True)


def test_every_entry_point_is_exported_with_the_packed_signature(shim):
    """The argument packers (which the CuPy backend uses) match every C signature."""
    win, a = CASES[0][1], np.zeros(1)
    packers = {
        "im2col": lambda nw: kernels.im2col_args(a, a, (1, 1, 1, 1), win, nw),
        "col2im": lambda nw: kernels.col2im_args(a, a, (1, 1, 1, 1), win, nw),
        "max_pool2d_forward": lambda nw: kernels.max_pool2d_forward_args(a, a, a, (1, 1, 1, 1), win, nw),
        "max_pool2d_backward": lambda nw: kernels.max_pool2d_backward_args(a, a, a, (1, 1, 1, 1), win, nw),
        "avg_pool2d_forward": lambda nw: kernels.avg_pool2d_forward_args(a, a, a, (1, 1, 1, 1), win, nw),
        "avg_pool2d_backward": lambda nw: kernels.avg_pool2d_backward_args(a, a, a, (1, 1, 1, 1), win, nw),
    }
    codes = {np.ndarray: "p", np.int64: "q", np.int32: "i"}
    checked = 0
    for source, lib in shim.items():
        for entry in kernels.entry_points(source, fp16=lib.has_fp16):
            kernel = entry.rsplit("_", 1)[0]
            narrow = kernel.endswith(kernels.I32)
            packed = packers[kernels.variant_name(kernel, False)](narrow)
            assert "".join(codes.get(type(v), "?") for v in packed) == lib.signature(entry), entry
            assert lib.signature(entry).count("q") == (0 if narrow else 6), entry
            checked += 1
    assert checked >= 2 * 2 * 6  # every kernel, both variants, float32 and float64 at least


def test_fits_int32_and_variant_names():
    _, win = make_case(1, 1, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    assert kernels.variant_name("im2col", True) == "im2col_i32"
    assert kernels.variant_name("col2im_i32", False) == "col2im"
    assert kernels.entry_name("max_pool2d_backward_i32", "float32") == "max_pool2d_backward_i32_f32"
    assert kernels.fits_int32((1, 1, 8, 8), win, 9 * 64)
    assert kernels.fits_int32((1, 1, 8, 8), win, kernels.INT32_MAX)
    assert not kernels.fits_int32((1, 1, 8, 8), win, kernels.INT32_MAX + 1)  # the column matrix
    assert not kernels.fits_int32((2**16, 2**15, 1, 1), win, 1)  # the image: 2**31 elements
    big = win._replace(pad_top=2**31 - 20)  # the padded coordinates
    assert not kernels.fits_int32((1, 1, 8, 8), big, 1)
    assert kernels.loop_extent("im2col", (2, 3, 8, 8), win) == 3 * 9 * 2 * 64
    assert kernels.loop_extent("im2col_i32", (2, 3, 8, 8), win) == 3 * 2 * 64
    assert kernels.loop_extent("col2im_i32", (2, 3, 8, 8), win) == 2 * 3 * 64
    with pytest.raises(ValueError, match="32-bit"):
        kernels.im2col_args(None, None, (2**31, 1, 1, 1), win, narrow=True)
