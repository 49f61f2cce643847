"""Atomic file writes: nothing half-written is ever left under the final name.

:func:`atomic_write` writes to a temporary file beside the target, named
``.<name>.<tag>-<host>-<pid>-<random>.part`` (``<name>`` shortened so that the
whole name fits the file system's limit, ``<tag>`` a hash of the full name),
fsyncs it, renames it over the target and fsyncs the directory. A failure
removes the temporary file; one left by a killed process is removed by the
next write to the same target (:func:`remove_stale_parts`).
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import time

#: A temporary file of a write to the same target this old (seconds) is a leftover,
#: whatever its process; one whose process is gone (same host) is a leftover at once.
STALE_PART_SECONDS = 10 * 60

# "." name "." tag "-" host "-" pid "-" random ".part": the name gets what is left of NAME_MAX.
_PART = re.compile(rb"\.(.*)\.([0-9a-f]{8})-([0-9a-f]{4})-(\d{1,10})-([0-9a-f]{6})\.part", re.DOTALL)
_PART_OVERHEAD = len(b"..") + 8 + 1 + 4 + 1 + 10 + 1 + 6 + len(b".part")


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _host_tag() -> bytes:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:4].encode()


def _tag(name: bytes) -> bytes:
    return hashlib.sha256(name).hexdigest()[:8].encode()


def _existing_ancestor(directory: str) -> str:
    while not os.path.lexists(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return directory


def check_writable(path) -> str:
    """Check, before any work is done, that a file can be written at ``path`` by
    :func:`atomic_write`; returns ``path`` as a string.

    Raises ``ValueError`` naming ``path`` and the reason when ``path`` is empty,
    ends in a separator or names a directory (or something else that is not a
    regular file), when its name is longer than the file system allows, when a
    parent is not a directory, or when its directory cannot be written (a
    temporary file is created there and removed to find out). Missing parent
    directories are not created; the nearest existing one must be writable.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise ValueError("cannot write to an empty path")

    def fail(reason):
        raise ValueError(f"cannot write {path}: {reason}")

    name = os.path.basename(path)
    if not name or name in (".", ".."):
        fail("the path names a directory; add a file name")
    if os.path.isdir(path):
        fail("it is a directory; name a file inside it")
    if os.path.lexists(path) and os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        fail("it exists and is not a regular file")
    directory = os.path.dirname(os.path.abspath(path))
    ancestor = _existing_ancestor(directory)
    if not os.path.isdir(ancestor):
        fail(f"{ancestor} is not a directory")
    limit = _name_max(ancestor)
    if len(os.fsencode(name)) > limit:
        fail(f"the file name is {len(os.fsencode(name))} bytes long; this file system allows {limit}")
    if ancestor != directory:
        if not os.access(ancestor, os.W_OK | os.X_OK):
            fail(f"the directory {ancestor} is not writable")
        return path
    try:
        fd, probe = _create_part(path)
    except OSError as exc:
        fail(f"cannot create a file in {directory}: {exc.strerror or exc}")
    os.close(fd)
    os.unlink(probe)
    return path


def _create_part(path: str) -> tuple[int, str]:
    """Create a new temporary file (mode 0600) for a write to ``path``: (fd, its path)."""
    directory, name = os.path.split(os.path.abspath(path))
    name_b = os.fsencode(name)
    room = max(0, _name_max(directory) - _PART_OVERHEAD)
    stem = name_b[:room]
    for _ in range(100):
        part = b".%s.%s-%s-%d-%s.part" % (stem, _tag(name_b), _host_tag(), os.getpid(), os.urandom(3).hex().encode())
        tmp = os.path.join(directory, os.fsdecode(part))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's)
    return False


def remove_stale_parts(path) -> list[str]:
    """Remove the temporary files of earlier writes to ``path`` whose process is gone
    (on this host) or that are older than :data:`STALE_PART_SECONDS`, including those
    of the engine's older naming (``.<name>.<8 chars>.part``, by age only). Returns
    the paths removed; errors are ignored (another process may clean up too)."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    name_b = os.fsencode(name)
    tag, host, now, removed = _tag(name_b), _host_tag(), time.time(), []
    legacy = re.compile(rb"\." + re.escape(name_b) + rb"\.[a-z0-9_]{8}\.part")
    try:
        entries = os.listdir(os.fsencode(directory))
    except OSError:
        return removed
    for entry in entries:
        if not entry.endswith(b".part"):
            continue
        match = _PART.fullmatch(entry)
        ours = match is not None and match.group(2) == tag and name_b.startswith(match.group(1))
        if not ours and legacy.fullmatch(entry) is None:
            continue
        full = os.path.join(os.fsencode(directory), entry)
        try:
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                continue
            gone = (ours and match.group(3) == host and int(match.group(4)) != os.getpid()
                    and _process_gone(int(match.group(4))))
            if gone or now - st.st_mtime > STALE_PART_SECONDS:
                os.unlink(full)
                removed.append(os.fsdecode(full))
        except OSError:
            continue
    return removed


def fsync_directory(directory: str) -> None:
    """Flush a directory's entries (a rename in it) to disk where the system allows."""
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


def atomic_write(path, write) -> str:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, flush it
    to disk, rename it over ``path`` and flush the directory. The target is
    checked first (:func:`check_writable`: ``ValueError`` for a directory, a
    name too long, an unwritable folder); missing parent folders are created.
    On any error the temporary file is removed and ``path`` is untouched.
    Leftovers of killed writes to ``path`` are removed. Returns ``path``."""
    path = check_writable(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_parts(path)
    fd, tmp = _create_part(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # the permissions an ordinary new file gets
        os.replace(tmp, path)
        tmp = None
        fsync_directory(directory)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return path


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it
    (``/proc/self/status``), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask
