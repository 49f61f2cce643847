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


def run(shim, kernel: str, dtype: str, args: tuple, total: int, variant: int) -> None:
    lib = shim[kernels.source_of(kernel)]
    if dtype == "float16" and not lib.has_fp16:
        pytest.skip("this C++ compiler has no _Float16, so the host shim leaves float16 out")
    cfg = _LAUNCHES[variant % len(_LAUNCHES)] or kernels.launch_config(total, 64, block=16)
    lib.launch(kernels.entry_name(kernel, dtype), args, *cfg)


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
    ]
    rng = np.random.default_rng(20240611)
    while len(cases) < 18:
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
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if exact or dtype == "float64":
        np.testing.assert_array_equal(actual, expected)
    elif dtype == "float32":
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    else:  # float16 storage: the kernels accumulate in float32, NumPy in float16
        np.testing.assert_allclose(actual.astype(np.float32), expected.astype(np.float32),
                                   rtol=1e-2, atol=1e-2)


# -- the tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_im2col(shim, ref, case, dtype):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    x = rand(np.random.default_rng(case), x_shape, dtype)
    col = np.full((c * win.kh * win.kw, n * win.oh * win.ow), np.nan, dtype=dtype)
    run(shim, "im2col", dtype, kernels.im2col_args(x, col, x_shape, win), col.size, case)
    assert_matches(col, ref.im2col(x, win), dtype, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_col2im(shim, ref, case, dtype):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    col = rand(np.random.default_rng(case), (c * win.kh * win.kw, n * win.oh * win.ow), dtype)
    x = np.full(x_shape, np.nan, dtype=dtype)
    run(shim, "col2im", dtype, kernels.col2im_args(col, x, x_shape, win), x.size, case)
    assert_matches(x, ref.col2im(col, x_shape, win), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
@pytest.mark.parametrize("data", ["uniform", "ties", "nan"])
def test_max_pool2d(shim, ref, case, dtype, data):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    rng = np.random.default_rng(case)
    x = rand(rng, x_shape, dtype, integers=data != "uniform")
    if data == "nan":
        x[rng.random(x_shape) < 0.1] = np.nan
    y = np.full((n, c, win.oh, win.ow), 7, dtype=dtype)
    idx = np.full((n, c, win.oh, win.ow), -1, dtype=np.int64)
    run(shim, "max_pool2d_forward", dtype,
        kernels.max_pool2d_forward_args(x, y, idx, x_shape, win), y.size, case)
    y_ref, idx_ref = ref.max_pool2d(x, win)
    idx_ref = idx_ref.astype(np.int64)  # the kernels keep int64 indices; the numpy backend may use uint8
    assert_matches(y, y_ref, dtype, exact=True)
    assert_matches(idx, idx_ref, "int64", exact=True)

    grad = rand(rng, y.shape, dtype)
    gx = np.full(x_shape, np.nan, dtype=dtype)
    run(shim, "max_pool2d_backward", dtype,
        kernels.max_pool2d_backward_args(grad, idx_ref, gx, x_shape, win), gx.size, case + 1)
    assert_matches(gx, ref.max_pool2d_backward(grad, idx_ref, x_shape, win), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
def test_avg_pool2d(shim, ref, case, dtype, count_include_pad):
    x_shape, win = CASES[case]
    n, c, _, _ = x_shape
    rng = np.random.default_rng(case)
    x = rand(rng, x_shape, dtype)
    divisor = np.ascontiguousarray(ref.avg_pool_divisor(x_shape, win, count_include_pad, dtype))
    assert divisor.shape == (win.oh, win.ow)
    y = np.full((n, c, win.oh, win.ow), 7, dtype=dtype)
    with np.errstate(divide="ignore", invalid="ignore"):  # a window may lie in the padding only
        run(shim, "avg_pool2d_forward", dtype,
            kernels.avg_pool2d_forward_args(x, divisor, y, x_shape, win), y.size, case)
        assert_matches(y, ref.avg_pool2d(x, win, divisor), dtype)

        grad = rand(rng, y.shape, dtype)
        gx = np.full(x_shape, np.nan, dtype=dtype)
        run(shim, "avg_pool2d_backward", dtype,
            kernels.avg_pool2d_backward_args(grad, divisor, gx, x_shape, win), gx.size, case + 1)
        assert_matches(gx, ref.avg_pool2d_backward(grad, x_shape, win, divisor), dtype)


def test_every_entry_point_is_exported_with_the_packed_signature(shim):
    """The argument packers (which the CuPy backend uses) match every C signature."""
    win, a = CASES[0][1], np.zeros(1)
    packed = {
        "im2col": kernels.im2col_args(a, a, (1, 1, 1, 1), win),
        "col2im": kernels.col2im_args(a, a, (1, 1, 1, 1), win),
        "max_pool2d_forward": kernels.max_pool2d_forward_args(a, a, a, (1, 1, 1, 1), win),
        "max_pool2d_backward": kernels.max_pool2d_backward_args(a, a, a, (1, 1, 1, 1), win),
        "avg_pool2d_forward": kernels.avg_pool2d_forward_args(a, a, a, (1, 1, 1, 1), win),
        "avg_pool2d_backward": kernels.avg_pool2d_backward_args(a, a, a, (1, 1, 1, 1), win),
    }
    codes = {np.ndarray: "p", np.int64: "q", np.int32: "i"}
    for source, lib in shim.items():
        for entry in kernels.entry_points(source, fp16=lib.has_fp16):
            kernel = entry.rsplit("_", 1)[0]
            assert "".join(codes.get(type(v), "?") for v in packed[kernel]) == lib.signature(entry), entry
