"""Every kernel source compiles, for sm_80 and sm_90, with every entry point.

Runs without a GPU (every CI run): NVRTC, the compiler CuPy uses, is called
through ctypes from the ``nvidia-cuda-nvrtc-cu12`` wheel (or a CUDA toolkit);
``cuda_fp16.h`` comes from the ``nvidia-cuda-runtime-cu12`` wheel (or a
toolkit). nvcc, where installed, compiles the same text as well. The sources
compiled are exactly those the loader gives CuPy (``kernels.read_source``) with
the loader's options (``kernels.compile_options``), and once more with the
whole option list CuPy assembles for a ``RawModule`` (``kernels.cupy_nvrtc_options``:
``--std=c++17``, ``-ftz=true``, ``--device-as-default-execution-space``, ...).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import kernels

ARCHS = ("sm_80", "sm_90")
KERNELS_DIR = Path(kernels.__file__).resolve().parent
_CUDA_ROOTS = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]


# -- finding the compilers ------------------------------------------------------------

def _site_dirs() -> list[Path]:
    return [Path(p) for p in sys.path if p and Path(p, "nvidia").is_dir()]


def _nvrtc_candidates() -> list[str]:
    found = []
    for site in _site_dirs():  # pip wheels: nvidia/cuda_nvrtc/lib/libnvrtc.so.12, ...
        found += sorted(glob.glob(str(site / "nvidia" / "**" / "libnvrtc.so*"), recursive=True))
    name = ctypes.util.find_library("nvrtc")
    if name:
        found.append(name)
    for root in filter(None, _CUDA_ROOTS):
        found += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    return [f for f in found if "builtins" not in os.path.basename(f)
            and ".alt." not in os.path.basename(f)]


def _load_nvrtc():
    errors = []
    for path in _nvrtc_candidates():
        try:
            lib = ctypes.CDLL(path)
            major, minor = ctypes.c_int(), ctypes.c_int()
            if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) == 0:
                return lib, path, (major.value, minor.value)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    return None, "; ".join(errors) or "no libnvrtc.so found", None


NVRTC, NVRTC_PATH, NVRTC_VERSION = _load_nvrtc()


def _fp16_include() -> str | None:
    """A directory holding cuda_fp16.h (and the headers it includes)."""
    dirs = [site / "nvidia" / "cuda_runtime" / "include" for site in _site_dirs()]
    dirs += [Path(root, "include") for root in filter(None, _CUDA_ROOTS)]
    for d in dirs:
        if (d / "cuda_fp16.h").is_file():
            return str(d)
    return None


FP16_INCLUDE = _fp16_include()


def _nvcc() -> str | None:
    for cand in [shutil.which("nvcc"), *(os.path.join(r, "bin", "nvcc") for r in filter(None, _CUDA_ROOTS)),
                 "/usr/local/bin/nvcc"]:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


NVCC = _nvcc()

needs_nvrtc = pytest.mark.skipif(
    NVRTC is None, reason=f"NVRTC not found ({NVRTC_PATH}); pip install nvidia-cuda-nvrtc-cu12")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (no CUDA toolkit here)")


# -- NVRTC through ctypes ---------------------------------------------------------------

def nvrtc_compile(source_text: str, name: str, options: list[str]) -> tuple[bytes, bytes, str]:
    """Compile with NVRTC: ``(cubin, ptx, log)``; either output may be empty."""
    lib = NVRTC
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    prog = ctypes.c_void_p()

    def check(rc, what):
        if rc != 0:
            raise RuntimeError(f"{what} failed: {lib.nvrtcGetErrorString(rc).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source_text.encode(), name.encode(),
                                 0, None, None), "nvrtcCreateProgram")
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        log = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        log_text = log.value.decode(errors="replace")
        if rc != 0:
            pytest.fail(f"NVRTC ({NVRTC_PATH}) could not compile {name} with {options}: "
                        f"{lib.nvrtcGetErrorString(rc).decode()}\n{log_text}")
        outputs = []
        for kind in ("CUBIN", "PTX"):
            size = ctypes.c_size_t()
            if getattr(lib, f"nvrtcGet{kind}Size")(prog, ctypes.byref(size)) != 0 or size.value <= 1:
                outputs.append(b"")
                continue
            buf = ctypes.create_string_buffer(size.value)
            check(getattr(lib, f"nvrtcGet{kind}")(prog, buf), f"nvrtcGet{kind}")
            outputs.append(buf.raw)
        return outputs[0], outputs[1], log_text
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def assert_entries(binary: bytes, expected: list[str], absent: list[str], what: str) -> None:
    missing = [e for e in expected if e.encode() + b"\0" not in binary]
    assert not missing, f"{what}: entry points missing from the binary: {missing}"
    present = [e for e in absent if e.encode() in binary]
    assert not present, f"{what}: entry points that should be left out are present: {present}"


# -- the tests -------------------------------------------------------------------------

def test_every_cu_file_is_listed():
    """A new .cu file must be added to kernels.SOURCES, or nothing compiles it."""
    on_disk = sorted(p.name for p in KERNELS_DIR.glob("*.cu"))
    assert on_disk == sorted(kernels.source_names())


def test_entry_point_names():
    assert kernels.entry_name("im2col", "float32") == "im2col_f32"
    assert kernels.entry_name("max_pool2d_backward", "float16") == "max_pool2d_backward_f16"
    assert "col2im_f64" in kernels.entry_points("conv.cu")
    assert all(not e.endswith("_f16") for e in kernels.entry_points("pool.cu", fp16=False))
    with pytest.raises(TypeError, match="int32"):
        kernels.entry_name("im2col", "int32")
    with pytest.raises(ValueError, match="im2col"):
        kernels.source_of("conv9d")


def test_sources_are_self_contained():
    for source in kernels.source_names():
        text = kernels.read_source(source)
        assert not re.search(r'^\s*#\s*include\s*"', text, re.MULTILINE), \
            f"{source}: a local include was not inlined"
        assert "KERNELS_COMMON_CUH" in text


def test_a_compiler_is_available():
    if NVRTC is None and NVCC is None:
        pytest.skip(f"neither NVRTC ({NVRTC_PATH}) nor nvcc is available: the kernel sources "
                    "are not compiled here; pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12")


def _cupy_options(fp16: bool, arch: str, ptx: bool = False) -> list[str]:
    """CuPy's option list for the loader's module (float32/float64 or float16)."""
    if fp16 and FP16_INCLUDE is None:
        pytest.skip("cuda_fp16.h not found: pip install nvidia-cuda-runtime-cu12 "
                    "(or set CUDA_PATH to a CUDA toolkit)")
    options = kernels.cupy_nvrtc_options(kernels.compile_options("float16" if fp16 else "float32"),
                                         arch.removeprefix("sm_"), ptx=ptx,
                                         include_dirs=[FP16_INCLUDE] if fp16 else [])
    assert "-ftz=true" in options and "--device-as-default-execution-space" in options
    return options


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", kernels.source_names())
@pytest.mark.parametrize("fp16", [False, True], ids=["f32_f64_module", "f16_module"])
def test_nvrtc_compiles(source, arch, fp16):
    """The loader's two modules per source, float32/float64 only (built without
    cuda_fp16.h) and the full one the float16 kernels come from, with the whole
    option list cupy.RawModule gives NVRTC (``-ftz=true`` and all)."""
    options = _cupy_options(fp16, arch)
    cubin, _, log = nvrtc_compile(kernels.read_source(source), source, options)
    assert "warning" not in log.lower(), f"NVRTC warnings for {source} with {options}:\n{log}"
    assert cubin[:4] == b"\x7fELF", f"NVRTC gave no cubin for {source} ({arch})"
    wanted = kernels.entry_points(source, fp16=fp16)
    left_out = [e for e in kernels.entry_points(source) if e not in wanted]
    assert_entries(cubin, wanted, left_out, f"{source} ({arch})")


@needs_nvrtc
@pytest.mark.parametrize("source", kernels.source_names())
@pytest.mark.parametrize("fp16", [False, True], ids=["f32_f64_module", "f16_module"])
def test_nvrtc_ptx_entries_and_no_flush_to_zero(source, fp16):
    """CuPy's list in its PTX mode (compute_90): exactly the entry points
    kernels.SOURCES lists, and not one .ftz instruction. CuPy's -ftz=true
    flushes float32 subnormals; the kernels spell their float32 operations
    without it (common.cuh, ieee_*), so their results stay NumPy's."""
    _, ptx, _ = nvrtc_compile(kernels.read_source(source), source, _cupy_options(fp16, "90", ptx=True))
    text = ptx.decode(errors="replace")
    entries = set(re.findall(r"\.entry\s+(\w+)", text))
    assert entries == set(kernels.entry_points(source, fp16=fp16))
    flushed = sorted({line.split()[0] for line in text.splitlines() if ".ftz" in line})
    assert not flushed, f"{source}: instructions that flush subnormals under -ftz=true: {flushed}"
    assert "add.rn.f32" in text  # the float32 sums are there, spelled without .ftz


@needs_nvrtc
def test_the_flush_check_would_catch_a_plain_float32_sum():
    """The .ftz check above is not vacuous: plain float32 code under CuPy's
    options compiles to .ftz instructions."""
    src = 'extern "C" __global__ void k(const float* a, float* b) { b[0] = a[0] + a[1]; }'
    _, ptx, _ = nvrtc_compile(src, "probe.cu", kernels.cupy_nvrtc_options([], "90", ptx=True))
    assert "add.ftz.f32" in ptx.decode()


def test_cupy_option_list_order():
    """CuPy's -ftz=true comes after the caller's options, so a -ftz=false of ours
    would lose (NVRTC keeps the last one): hence the PTX spelling in common.cuh."""
    opts = kernels.cupy_nvrtc_options(["-DX", "-ftz=false"], "90", include_dirs=["/inc"])
    assert opts == ["-DX", "-ftz=false", "--std=c++17", "-I/inc", "-ftz=true", "-arch=sm_90",
                    "--device-as-default-execution-space"]
    assert kernels.cupy_nvrtc_options(["--std=c++20"], "80", ptx=True)[:3] == \
        ["--std=c++20", "-ftz=true", "-arch=compute_80"]


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_90"])  # NVRTC covers every arch; nvcc adds its own warnings
@pytest.mark.parametrize("source", kernels.source_names())
def test_nvcc_compiles(tmp_path, source, arch):
    src = tmp_path / source
    src.write_text(kernels.read_source(source))
    out = tmp_path / f"{source}.{arch}.cubin"
    cmd = [NVCC, f"-arch={arch}", "--cubin", "-Werror", "all-warnings", "-o", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
    assert_entries(out.read_bytes(), kernels.entry_points(source), [], f"nvcc {source} ({arch})")

