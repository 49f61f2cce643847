"""The C kernels of the NumPy backend: compiled with the system C compiler on
first use, cached, loaded with :mod:`ctypes`.

``kernels/cpu_conv.c`` is built with ``$CC`` (else ``cc``) and
``-O3 -march=native``, so it uses the vector unit of the machine it runs on
(AVX-512, else AVX2 with FMA) whatever the BLAS was told (``OPENBLAS_CORETYPE``). The shared library is kept
under ``$ENGINE_CACHE_DIR`` (else ``$XDG_CACHE_HOME/engine``, else
``~/.cache/engine``) in ``native/``, named by a hash of the source, the
compiler's version, the flags and the CPU's feature flags, so a stale or
foreign build is never loaded. It is written to a temporary name and renamed.

:func:`library` returns the loaded library, or ``None`` when there is none to
have: ``ENGINE_NATIVE=0``, no compiler, a failed build, or a CPU with neither
AVX-512 nor AVX2 and FMA. :func:`status` says which, in words; nothing
here raises, since the NumPy path always works without the library.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources

SOURCE = "cpu_conv.c"
FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-fno-math-errno")
#: What ``native_isa()`` of a build may answer, named; 0 (neither) turns the kernels off.
ISAS = {512: "AVX-512", 256: "AVX2"}

_i64 = ctypes.c_longlong
_ptr = ctypes.c_void_p
#: entry point -> (result type, argument types); mirrors kernels/cpu_conv.c.
SIGNATURES = {
    "native_isa": (ctypes.c_int, ()),
    "packed_weights_size": (_i64, (_ptr,)),
    "pack_weights_f32": (None, (_ptr, _ptr, _ptr)),
    "fwd_items": (_i64, (_ptr,)),
    "conv2d_fwd_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "conv2d_dw_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "gemm_panels": (_i64, (_i64,)),
    "gemm_f32": (ctypes.c_int, (_ptr, _i64, _i64, _ptr, _i64, _i64, _ptr, _i64, _i64, _i64, _i64, _i64, _i64)),
    "relu_f32": (None, (_ptr, _ptr, _i64, _i64)),
    "relu_backward_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64)),
    "max_pool2d_fwd_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "max_pool2d_bwd_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
}

_status = "not loaded yet"


def cache_dir() -> str:
    root = os.environ.get("ENGINE_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "engine")
    return os.path.join(root, "native")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _compiler() -> tuple[str | None, str]:
    cc = os.environ.get("CC") or "cc"
    path = shutil.which(cc)
    if path is None:
        return None, f"no C compiler ({cc!r} is not on PATH; set CC or install gcc)"
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"the C compiler {path} does not run: {exc}"
    return path, version.splitlines()[0] if version else path


def flags() -> tuple[str, ...]:
    """The compiler flags: ``-march=native`` unless ``$ENGINE_NATIVE_MARCH`` names another
    target (``haswell`` builds the AVX2 kernels on an AVX-512 machine, which the tests use)."""
    return (*FLAGS, f"-march={os.environ.get('ENGINE_NATIVE_MARCH') or 'native'}")


def _build(cc: str, version: str, source: str) -> str:
    key = hashlib.sha256("\0".join((source, version, " ".join(flags()), platform.machine(),
                                    _cpu_flags())).encode()).hexdigest()[:20]
    directory = cache_dir()
    target = os.path.join(directory, f"cpu_conv-{key}.so")
    if os.path.exists(target):
        return target
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        src = os.path.join(tmp, SOURCE)
        with open(src, "w", encoding="utf-8") as f:
            f.write(source)
        out = os.path.join(tmp, "lib.so")
        done = subprocess.run([cc, *flags(), "-o", out, src], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed on kernels/{SOURCE}:\n{done.stderr.strip()}")
        os.replace(out, target)
    return target


@functools.lru_cache(maxsize=None)
def library():
    """The loaded ``cpu_conv`` library, or ``None`` (see :func:`status` for why)."""
    global _status
    if os.environ.get("ENGINE_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        _status = "off (ENGINE_NATIVE=0)"
        return None
    cc, version = _compiler()
    if cc is None:
        _status = f"off: {version}"
        return None
    try:
        source = resources.files(__package__).joinpath(SOURCE).read_text(encoding="utf-8")
        lib = ctypes.CDLL(_build(cc, version, source))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _status = f"off: building kernels/{SOURCE} failed: {exc}"
        return None
    lib.native_isa.restype, lib.native_isa.argtypes = ctypes.c_int, []
    isa = lib.native_isa()
    if isa not in ISAS:  # such a build defines native_isa alone
        _status = "off: this CPU has neither AVX-512 nor AVX2 with FMA (the C kernels need one); NumPy's path is used"
        return None
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, list(argtypes)
    _status = f"on ({ISAS[isa]}, built by {version})"
    return lib


def status() -> str:
    """Whether the C kernels are in use, and if not, why (loads them first)."""
    library()
    return _status
