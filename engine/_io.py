"""Atomic file writes: nothing half-written is ever left under the final name."""
from __future__ import annotations

import os
import tempfile


def atomic_write(path, write) -> str:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, flush it
    to disk, then rename it over ``path``. On any error the temporary file is
    removed and ``path`` is untouched. Returns ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
