"""The C kernels of the NumPy backend: compiled with the system C compiler on
first use, cached, verified, loaded with :mod:`ctypes`.

The sources of :data:`SOURCES` (``kernels/cpu_conv.c`` first: it holds the
vector layer the others use) are built as one translation unit with ``$CC`` (else ``cc``) and
``-O3 -march=native``, so it uses the vector unit of the machine it runs on
(AVX-512, else AVX2 with FMA) whatever the BLAS was told (``OPENBLAS_CORETYPE``). The shared library is kept
under ``$ENGINE_CACHE_DIR`` (else ``$XDG_CACHE_HOME/engine``, else
``~/.cache/engine``) in ``native/``, named by a hash of the source, the
compiler's version, the flags and the CPU's feature flags, so a stale or
foreign build is never loaded.

The cache trusts nothing it did not just verify (docs/security.md):

* ``native/`` is created ``0700`` whatever the umask, must be owned by the
  current user (a looser mode on our own directory is tightened to ``0700``),
  and its parent must be owned by the user or root and not writable by others
  unless sticky (like ``/tmp``); our own parent that others may write to has
  that write permission removed. Anything else turns the kernels off, with
  :func:`status` saying why.
* A library is loaded only if it is a regular file owned by the user, not
  group- or world-writable, and its sha256 matches the sidecar
  ``cpu_conv-<key>.so.sha256`` (``sha256sum`` format) that the build which
  produced it wrote, by rename, after the library. The hash is computed from
  the opened file, which is then loaded through ``/proc/self/fd``, so the
  bytes checked are the bytes mapped and a corrupt or truncated file never
  reaches ``dlopen``.
* Anything else (a missing, empty, truncated, planted or foreign file, no
  sidecar) is rebuilt in a fresh private temporary directory
  (``.build-<pid>-*``) and renamed into place. Build directories left by a
  killed build are removed once their process is gone or they are older than
  :data:`STALE_BUILD_SECONDS`.

:func:`library` returns the loaded library, or ``None`` when there is none to
have: ``ENGINE_NATIVE=0``, no compiler, a failed build, an unsafe cache
directory, a library lacking an entry point of :data:`SIGNATURES`, or a CPU
with neither AVX-512 nor AVX2 and FMA. :func:`status` says which, in words;
nothing here raises, since the NumPy path always works without the library.
A build that a compiler was found for and that failed also gives one
``RuntimeWarning``: the process then runs several times slower than it
would, and nothing else would say so.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from importlib import resources

#: The C sources, compiled as one translation unit in this order (each file after the
#: first may use the vector layer and helpers of those before it).
SOURCES = ("cpu_conv.c", "cpu_dense.c", "cpu_depthwise.c", "cpu_direct.c", "cpu_dw_rows.c", "cpu_winograd.c",
           "cpu_norm.c", "cpu_peak.c", "cpu_pool.c", "cpu_activations.c")
SOURCE = "cpu_*.c"  # how messages name them
FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-pthread", "-fno-math-errno")
#: What ``native_isa()`` of a build may answer, named; 0 (neither) turns the kernels off.
ISAS = {512: "AVX-512", 256: "AVX2"}
#: A ``.build-*`` directory older than this (seconds) is a leftover of a killed build.
STALE_BUILD_SECONDS = 15 * 60

_i64 = ctypes.c_longlong
_ptr = ctypes.c_void_p
#: entry point -> (result type, argument types); mirrors kernels/cpu_*.c.
SIGNATURES = {
    "native_isa": (ctypes.c_int, ()),
    "packed_weights_size": (_i64, (_ptr,)),
    "pack_weights_f32": (None, (_ptr, _ptr, _ptr)),
    "weight_panels": (_i64, (_ptr,)),
    "pack_weights_part_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64)),
    "pack_weights_t_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _ptr, _i64, _ptr, _i64, _i64)),
    "fwd_items": (_i64, (_ptr,)),
    "conv2d_fwd_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "native_nr": (_i64, ()),
    "conv2d_fwd_split_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _i64)),
    "conv2d_fwd_split_inline_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _i64, _ptr, _ptr, _i64,
                                                   _ptr, _i64)),
    "fwd_batched_items": (_i64, (_ptr, _i64)),
    "conv2d_fwd_batched_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _i64, _i64)),
    "conv2d_dw_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _i64, _ptr)),
    "conv2d_dw_pixels_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _ptr)),
    "conv2d_dw_shares_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _ptr)),
    "dw_col_items": (_i64, (_ptr,)),
    "conv2d_dw_cols_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _i64, _ptr)),
    "gemm_panels": (_i64, (_i64,)),
    "gemm_f32": (ctypes.c_int, (_ptr, _i64, _i64, _ptr, _i64, _i64, _ptr, _i64, _i64, _i64, _i64, _i64, _i64)),
    "relu_f32": (None, (_ptr, _ptr, _i64, _i64)),
    "relu_backward_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64)),
    "place_phase_f32": (None, (_ptr, _ptr, _i64, _i64, _ptr)),
    "place_phases2_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "max_pool2d_fwd_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "max_pool2d_bwd_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "avg_pool2d_k2s2_ok": (ctypes.c_int, (_ptr,)),
    "avg_pool2d_k2s2_fwd_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "avg_pool2d_k2s2_bwd_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "peak_fma_f32": (_i64, (_i64, _ptr)),
    # kernels/cpu_dense.c
    "linear_tiles": (_i64, (_i64,)),
    "linear_fwd_f32": (None, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _i64)),
    "gemm_nn_f32": (None, (_ptr, _i64, _i64, _ptr, _i64, _ptr, _i64, _i64, _i64, _i64, _i64, _i64)),
    "adam_f32": (None, (_ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, ctypes.c_int, _i64, _i64)),
    "sgd_f32": (None, (_ptr, _ptr, _ptr, _ptr, _ptr, ctypes.c_int, _i64, _i64)),
    # kernels/cpu_depthwise.c
    "dw_items": (_i64, (_ptr,)),
    "dw_conv_fwd_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _i64)),
    "dw_forward_kind": (ctypes.c_int, (_ptr,)),
    "dw_conv_dx_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "dw_conv_dw_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _i64, _ptr)),
    # kernels/cpu_direct.c
    "direct_serves": (ctypes.c_int, (_ptr,)),
    "direct_wins": (ctypes.c_int, (_ptr,)),
    "direct_items": (_i64, (_ptr,)),
    "conv2d_fwd_direct_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    "cv_serves": (ctypes.c_int, (_ptr,)),
    "cv_wins": (ctypes.c_int, (_ptr,)),
    "cv_items": (_i64, (_ptr,)),
    "conv2d_fwd_cv_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    # kernels/cpu_dw_rows.c
    "dw_rows_serves": (ctypes.c_int, (_ptr,)),
    "dw_rows_items": (_i64, (_ptr,)),
    "conv2d_dw_rows_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _i64, _i64, _ptr)),
    # kernels/cpu_winograd.c
    "wino_serves": (ctypes.c_int, (_ptr,)),
    "wino_wins": (ctypes.c_int, (_ptr,)),
    "wino_items": (_i64, (_ptr, _i64)),
    "wino_blocks": (_i64, (_ptr,)),
    "wino_packed_size": (_i64, (_ptr,)),
    "wino_pack_weights_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64)),
    "wino_pack_weights_t_f32": (None, (_ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64)),
    "conv2d_fwd_wino_f32": (ctypes.c_int, (_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _i64)),
    # kernels/cpu_norm.c
    "bn_apply_f32": (None, (_ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64)),
    "channel_sum_f32": (None, (_ptr, _ptr, _i64, _i64, _i64, _i64, _i64)),
    # kernels/cpu_pool.c
    "pool_run": (_i64, (_ptr, _ptr, _i64, _i64, _i64, _i64, _i64, _i64)),
    "pool_workers": (_i64, ()),
    "pool_spinning": (_i64, ()),
    "pool_quiesce": (None, ()),
    "pool_warm": (None, ()),
    # kernels/cpu_activations.c
    "tanh_f32": (None, (_ptr, _ptr, _i64, _i64)),
    "tanh_backward_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64)),
    "sigmoid_f32": (None, (_ptr, _ptr, _i64, _i64)),
    "sigmoid_backward_f32": (None, (_ptr, _ptr, _ptr, _i64, _i64)),
}

_status = "not loaded yet"
_lock = threading.Lock()
_SIDECAR = re.compile(r"([0-9a-f]{64})  (\S+)\n?")
_BUILD_DIR = re.compile(r"\.build-(?:(\d+)-)?")


def cache_dir() -> str:
    """Where the built libraries live: ``$ENGINE_CACHE_DIR/native`` (else
    ``$XDG_CACHE_HOME/engine/native``, else ``~/.cache/engine/native``)."""
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


def library_name(version: str, source: str) -> str:
    """The cache's file name for ``source`` built by the compiler ``version`` with
    :func:`flags` on this CPU: ``cpu_conv-<20 hex digits>.so``."""
    key = hashlib.sha256("\0".join((source, version, " ".join(flags()), platform.machine(),
                                    _cpu_flags())).encode()).hexdigest()[:20]
    return f"cpu_conv-{key}.so"


# --------------------------------------------------------------------------- the cache directory
def _others_may_write(st) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _make_private_dirs(path: str) -> None:
    """Create ``path`` and any missing parents with mode 0700, whatever the umask."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue  # another process made it: checked below like any existing one
        os.chmod(directory, 0o700)


def _private_cache(directory: str) -> str | None:
    """Make ``directory`` (``.../native``) safe to load code from; a reason when it cannot be."""
    uid = os.geteuid()
    root = os.path.dirname(directory)
    try:
        _make_private_dirs(root)
        st = os.stat(root)
        if not stat.S_ISDIR(st.st_mode):
            return f"the kernel cache {root} is not a directory"
        if _others_may_write(st) and not st.st_mode & stat.S_ISVTX:
            if st.st_uid != uid:
                return (f"the kernel cache {root} is writable by others (mode {stat.filemode(st.st_mode)}, "
                        f"owner uid {st.st_uid}); set ENGINE_CACHE_DIR to a directory of your own")
            os.chmod(root, stat.S_IMODE(st.st_mode) & ~0o022)  # ours: others lose write permission
        if st.st_uid not in (uid, 0):  # its owner could make it writable, or replace native/
            return (f"the kernel cache {root} belongs to uid {st.st_uid}, not to you (uid {uid}); "
                    "set ENGINE_CACHE_DIR to a directory of your own")
        _make_private_dirs(directory)
        st = os.stat(directory)
        if not stat.S_ISDIR(st.st_mode):
            return f"the kernel cache {directory} is not a directory"
        if st.st_uid != uid:
            return (f"the kernel cache {directory} belongs to uid {st.st_uid}, not to you (uid {uid}); "
                    "set ENGINE_CACHE_DIR to a directory of your own")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(directory, 0o700)
    except OSError as exc:
        return f"the kernel cache {directory} cannot be made private: {exc}"
    return None


# _process_gone and _fsync_directory have twins in engine/_io.py: kernels/ does not import engine/.
def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (someone else's)
    return False


def _remove_stale_builds(directory: str) -> None:
    """Remove ``.build-*`` directories whose build process is gone or that are old."""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _BUILD_DIR.match(entry.name)
        if match is None:
            continue
        try:
            pid = int(match.group(1)) if match.group(1) else None
            if pid == os.getpid():
                continue
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_BUILD_SECONDS
            if old or (pid is not None and _process_gone(pid)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        except (OSError, ValueError):
            continue  # another process removed it first, or it is not ours to remove


# --------------------------------------------------------------------------- verified files
def _open_trusted(path: str, what: str) -> tuple[int | None, str]:
    """Open ``path`` read-only without following a symlink or blocking; the fd if it is
    a non-empty regular file owned by us and not writable by others, else a reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, f"no {what}"
    except OSError as exc:
        return None, f"the {what} cannot be opened ({exc.strerror or exc})"
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"the {what} is not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"the {what} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    elif _others_may_write(st):
        problem = f"the {what} is writable by others (mode {stat.filemode(st.st_mode)})"
    elif st.st_size == 0:
        problem = f"the {what} is empty"
    if problem is not None:
        os.close(fd)
        return None, problem
    return fd, ""


def _sha256_of(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def _sidecar_digest(directory: str, name: str) -> tuple[str | None, str]:
    fd, problem = _open_trusted(os.path.join(directory, name + ".sha256"), "sha256 sidecar")
    if fd is None:
        return None, problem
    try:
        text = os.read(fd, 4096).decode("ascii", "replace")
    finally:
        os.close(fd)
    match = _SIDECAR.fullmatch(text)
    if match is None or match.group(2) != name:
        return None, "the sha256 sidecar is malformed"
    return match.group(1), ""


def _verified_cached(directory: str, name: str) -> tuple[int | None, str]:
    """An fd of the cached library if it passes every check, else why it does not."""
    digest, problem = _sidecar_digest(directory, name)
    if digest is None:
        return None, problem
    fd, problem = _open_trusted(os.path.join(directory, name), "cached library")
    if fd is None:
        return None, problem
    if _sha256_of(fd) != digest:
        os.close(fd)
        return None, "the cached library does not match its sha256 sidecar"
    return fd, ""


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(fd)


def _build(directory: str, name: str, cc: str, source: str) -> int:
    """Compile ``source`` in a fresh private directory, rename the library to ``name``
    and then its sha256 sidecar; return an fd of the library just built (the very file
    that was hashed, whatever happens to ``name`` since)."""
    tmp = tempfile.mkdtemp(dir=directory, prefix=f".build-{os.getpid()}-")  # mode 0700
    try:
        src = os.path.join(tmp, "kernels.c")
        with open(os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
            f.write(source)
        out = os.path.join(tmp, "lib.so")
        done = subprocess.run([cc, *flags(), "-o", out, src], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed on kernels/{SOURCE}:\n{done.stderr.strip()}")
        os.chmod(out, 0o700)
        fd = os.open(out, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        try:
            sidecar = os.path.join(tmp, "lib.sha256")
            with open(os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="ascii") as f:
                f.write(f"{_sha256_of(fd)}  {name}\n")
                f.flush()
                os.fsync(f.fileno())
            os.fsync(fd)
            os.replace(out, os.path.join(directory, name))
            os.replace(sidecar, os.path.join(directory, name + ".sha256"))
            _fsync_directory(directory)
        except BaseException:
            os.close(fd)
            raise
        return fd
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_sources() -> str:
    """The text of :data:`SOURCES`, joined, each file's lines numbered as its own
    (``#line``), so that compiler messages name the file and line to fix."""
    parts = []
    for name in SOURCES:
        text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
        parts.append(f'#line 1 "kernels/{name}"\n{text}\n')
    return "".join(parts)


def _dlopen(fd: int, path: str):
    """Load the library open as ``fd`` (the bytes that were verified), falling back to
    ``path`` where there is no ``/proc/self/fd``."""
    proc = f"/proc/self/fd/{fd}"
    return ctypes.CDLL(proc if os.path.exists(proc) else path)


# --------------------------------------------------------------------------- loading
def _load():
    """(library or None, status)."""
    if os.environ.get("ENGINE_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        return None, "off (ENGINE_NATIVE=0)"
    cc, version = _compiler()
    if cc is None:
        return None, f"off: {version}"
    try:
        source = _read_sources()
    except OSError as exc:
        return None, f"off: kernels/{SOURCE} cannot be read: {exc}"
    directory = cache_dir()
    problem = _private_cache(directory)
    if problem is not None:
        return None, f"off: {problem}"
    _remove_stale_builds(directory)
    name = library_name(version, source)
    path = os.path.join(directory, name)
    fd, _why_rebuilt = _verified_cached(directory, name)
    if fd is None:
        try:
            fd = _build(directory, name, cc, source)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            return None, f"off: building kernels/{SOURCE} failed: {exc}"
    try:
        lib = _dlopen(fd, path)
    except OSError as exc:
        return None, f"off: {path} does not load: {exc}"
    finally:
        os.close(fd)
    try:
        isa_of = lib.native_isa
    except AttributeError:
        return None, f"off: {path} lacks the entry point native_isa"
    isa_of.restype, isa_of.argtypes = ctypes.c_int, []
    isa = isa_of()
    if isa not in ISAS:  # such a build defines native_isa alone
        return None, ("off: this CPU has neither AVX-512 nor AVX2 with FMA (the C kernels need one); "
                      "NumPy's path is used")
    missing = [entry for entry in SIGNATURES if not hasattr(lib, entry)]
    if missing:
        return None, (f"off: {path} lacks the entry point{'s' if len(missing) > 1 else ''} "
                      f"{', '.join(missing)} (kernels/{SOURCE} and SIGNATURES in kernels/native.py disagree)")
    for entry, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, entry)
        fn.restype, fn.argtypes = restype, list(argtypes)
    return lib, f"on ({ISAS[isa]}, built by {version})"


@functools.lru_cache(maxsize=None)
def library():
    """The loaded ``cpu_conv`` library, or ``None`` (see :func:`status` for why)."""
    global _status
    with _lock:
        try:
            lib, _status = _load()
        except Exception as exc:  # noqa: BLE001  (the NumPy path must keep working, whatever broke)
            lib, _status = None, f"off: loading the C kernels failed: {type(exc).__name__}: {exc}"
    if _status.startswith(f"off: building kernels/{SOURCE} failed"):
        first = next((line for line in _status.splitlines()[1:] if "error" in line), "")
        warnings.warn(f"engine: the C kernels did not build, so the slower NumPy path runs"
                      f"{': ' + first.strip() if first else ''} (engine.kernels.native.status() has the "
                      f"compiler's output)", RuntimeWarning, stacklevel=2)
    return lib


def status() -> str:
    """Whether the C kernels are in use, and if not, why (loads them first)."""
    library()
    return _status
