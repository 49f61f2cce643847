"""The C kernel cache (kernels/native.py) under hostile and broken input.

A library is loaded only after it was verified (owner, permissions, sha256
sidecar); anything else is rebuilt, or the kernels go off with a status that
says why, and nothing raises. Every test uses its own ENGINE_CACHE_DIR; the
runs that load a library are fresh processes.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time

import pytest

from engine.kernels import native

CC = shutil.which(os.environ.get("CC") or "cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler: the kernels are never built here")

#: A convolution whose result is the same on either path, then the kernels' status.
CHECK = ("import numpy as np, engine.ops as ops; from engine.kernels import native; "
         "x = np.ones((1, 2, 5, 5), np.float32); w = np.ones((3, 2, 3, 3), np.float32); "
         "y = ops.conv2d(x, w, padding=1); print(native.status()); print(float(y.sum()))")
TOTAL = 3 * 2 * (9 * 9 + 12 * 6 + 4 * 4)
ON = re.compile(r"on \((AVX-512|AVX2), built by ")
OTHER_UID = 65534  # nobody


def _run(cache, *, umask=None, fake_euid=None, code=CHECK):
    """Run ``code`` in a fresh interpreter with ENGINE_CACHE_DIR=cache: (status, conv total)."""
    env = {**os.environ, "ENGINE_CACHE_DIR": str(cache)}
    env.pop("ENGINE_NATIVE", None)
    prefix = f"import os; os.geteuid = lambda: {fake_euid}; " if fake_euid is not None else ""
    done = subprocess.run([sys.executable, "-c", prefix + code], capture_output=True, text=True, env=env,
                          timeout=300, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    assert done.returncode == 0, done.stderr
    status, total = done.stdout.strip().splitlines()[-2:]
    assert float(total) == TOTAL
    return status


def _library(cache):
    names = [n for n in os.listdir(cache / "native") if n.endswith(".so")]
    assert len(names) == 1, names
    return cache / "native" / names[0]


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sidecar_matches(lib):
    digest, name = (lib.parent / (lib.name + ".sha256")).read_text().split()
    return name == lib.name and digest == _sha256(lib)


def _compile(tmp_path, body, name="planted"):
    src = tmp_path / f"{name}.c"
    src.write_text(body)
    out = tmp_path / f"{name}.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def _planted(tmp_path, marker):
    """A library whose constructor writes ``marker``: loading it runs code."""
    return _compile(tmp_path, f"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void)
{{
    FILE *f = fopen("{marker}", "w");
    if (f) {{ fputs("constructor ran\\n", f); fclose(f); }}
}}
int native_isa(void) {{ return 256; }}
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache built once, under umask 000 (copied by the tests that need one)."""
    cache = tmp_path_factory.mktemp("built") / "cache"
    status = _run(cache, umask=0)
    if not ON.match(status):
        pytest.skip(f"the C kernels are not usable here: {status}")
    return cache


def _copy(built, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(built, cache)
    return cache


def test_umask_000_still_gives_private_modes(built):
    lib = _library(built)
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode)
             for p in (built, built / "native", lib, lib.parent / (lib.name + ".sha256"))}
    assert modes == {"cache": 0o700, "native": 0o700, lib.name: 0o700, lib.name + ".sha256": 0o600}
    assert _sidecar_matches(lib)
    assert sorted(os.listdir(built / "native")) == [lib.name, lib.name + ".sha256"]  # no .build-* left


def test_a_planted_library_is_not_loaded_but_rebuilt(built, tmp_path):
    marker = tmp_path / "constructor-ran"
    planted = _planted(tmp_path, marker)
    # the control: loading this library does run its constructor
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(planted)!r})"], check=True)
    assert marker.exists()
    marker.unlink()

    cache = _copy(built, tmp_path)
    lib = _library(cache)
    shutil.copyfile(planted, lib)  # same name, same owner and mode; the sidecar no longer matches
    status = _run(cache)
    assert not marker.exists(), "the planted library was loaded"
    assert ON.match(status), status
    assert _sidecar_matches(lib) and _sha256(lib) != _sha256(planted)


def test_a_truncated_library_is_rebuilt_and_the_run_succeeds(built, tmp_path):
    cache = _copy(built, tmp_path)
    lib = _library(cache)
    whole = lib.read_bytes()
    lib.write_bytes(whole[:len(whole) // 3])  # loading this with dlopen crashed the process (SIGBUS)
    status = _run(cache)
    assert ON.match(status), status
    assert len(lib.read_bytes()) == len(whole) and _sidecar_matches(lib)


@pytest.mark.parametrize("case", ["no sidecar", "empty", "truncated", "group/world-writable",
                                  "other owner", "fifo", "symlink", "directory", "bad sidecar"])
def test_the_verifier_refuses_what_it_cannot_trust(built, tmp_path, case, monkeypatch):
    """Each case is refused before anything is opened for loading (in-process: nothing is loaded)."""
    cache = _copy(built, tmp_path)
    lib = _library(cache)
    sidecar = lib.parent / (lib.name + ".sha256")
    directory, name = str(lib.parent), lib.name
    fd, reason = native._verified_cached(directory, name)
    assert fd is not None and reason == ""  # the control: the copy itself is trusted
    os.close(fd)
    if case == "no sidecar":  # as every cache written before the sidecars existed
        sidecar.unlink()
    elif case == "empty":
        lib.write_bytes(b"")
    elif case == "truncated":
        lib.write_bytes(lib.read_bytes()[:-100])
    elif case == "group/world-writable":
        os.chmod(lib, 0o666)
    elif case == "other owner":
        if os.geteuid() == 0:
            os.chown(lib, OTHER_UID, OTHER_UID)
        else:
            monkeypatch.setattr(native.os, "geteuid", lambda: os.getuid() + 1)
    elif case == "fifo":
        lib.unlink()
        os.mkfifo(lib)  # opening it for a blocking read would hang
    elif case == "symlink":
        real = tmp_path / "elsewhere.so"
        shutil.move(lib, real)
        os.symlink(real, lib)
    elif case == "directory":
        lib.unlink()
        lib.mkdir()
    elif case == "bad sidecar":
        sidecar.write_text("0" * 64 + "  " + name + "\n")
    expected = {"no sidecar": "no sha256 sidecar", "empty": "is empty",
                "truncated": "does not match its sha256", "group/world-writable": "writable by others",
                "other owner": "belongs to uid", "fifo": "not a regular file", "symlink": "cannot be opened",
                "directory": "not a regular file", "bad sidecar": "does not match its sha256"}[case]
    fd, reason = native._verified_cached(directory, name)
    assert fd is None and expected in reason, reason


def test_a_library_without_an_entry_point_turns_the_kernels_off_naming_it(built, tmp_path):
    stub = _compile(tmp_path, "int native_isa(void) { return 256; }\n", name="stub")
    cache = _copy(built, tmp_path)
    lib = _library(cache)
    shutil.copyfile(stub, lib)
    (lib.parent / (lib.name + ".sha256")).write_text(f"{_sha256(lib)}  {lib.name}\n")  # trusted: ours
    status = _run(cache)
    assert status.startswith(f"off: {lib} lacks the entry points packed_weights_size, pack_weights_f32"), status
    assert "AttributeError" not in status


def test_a_world_writable_cache_of_someone_else_is_refused(built, tmp_path):
    cache = _copy(built, tmp_path)
    os.chmod(cache, 0o777)
    fake_euid = None
    if os.geteuid() == 0:
        os.chown(cache, OTHER_UID, OTHER_UID)
    else:  # no way to make another user's directory: pretend to be another user
        fake_euid = os.getuid() + 1
    status = _run(cache, fake_euid=fake_euid)
    assert status.startswith(f"off: the kernel cache {cache} ")
    assert "set ENGINE_CACHE_DIR to a directory of your own" in status
    assert "writable by others" in status or "belongs to uid" in status


def test_our_own_world_writable_cache_is_tightened(built, tmp_path):
    cache = _copy(built, tmp_path)
    lib = _library(cache)
    stamp = os.stat(lib).st_mtime_ns
    os.chmod(cache, 0o777)
    os.chmod(cache / "native", 0o777)
    status = _run(cache)
    assert ON.match(status), status
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o755  # others lose write permission
    assert stat.S_IMODE(os.stat(cache / "native").st_mode) == 0o700
    assert os.stat(lib).st_mtime_ns == stamp  # loaded, not rebuilt


def test_a_sticky_shared_parent_is_accepted_when_its_owner_is_trusted(tmp_path, monkeypatch):
    """Like /tmp (root's, or ours): others may write to it, but cannot rename or replace our
    native/ in it, and it is left as it is; a sticky directory of another user is refused (its
    owner may drop the sticky bit), as is one without the sticky bit."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    assert native._private_cache(str(shared / "native")) is None
    assert stat.S_IMODE(os.stat(shared / "native").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    if os.geteuid() == 0:
        os.chown(shared, OTHER_UID, OTHER_UID)
    else:
        monkeypatch.setattr(native.os, "geteuid", lambda: os.getuid() + 1)
    assert "belongs to uid" in native._private_cache(str(shared / "native"))
    os.chmod(shared, 0o777)
    assert "writable by others" in native._private_cache(str(shared / "native"))


def test_stale_build_directories_are_removed(built, tmp_path):
    cache = _copy(built, tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no process
    dead = cache / "native" / f".build-{gone.pid}-abc123"
    old = cache / "native" / ".build-q1w2e3r4"  # the naming of older versions: by age only
    alive = cache / "native" / f".build-{os.getpid()}-zzz999"  # a build in progress
    for d in (dead, old, alive):
        d.mkdir()
        (d / "cpu_conv.c").write_text("/* half a build */")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert ON.match(_run(cache))
    assert not dead.exists() and not old.exists() and alive.exists()


def test_library_never_raises(tmp_path):
    """Whatever goes wrong inside, library() answers None and status() says why."""
    code = ("from engine.kernels import native; native._private_cache = lambda directory: 1 / 0; "
            "print(native.library()); print(native.status())")
    env = {**os.environ, "ENGINE_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["None", "off: loading the C kernels failed: ZeroDivisionError: "
                                                "division by zero"]
