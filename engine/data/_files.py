"""Opening data files: regular files only, without blocking on FIFOs or devices."""
from __future__ import annotations

import os
import stat

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path):
    """``path`` opened for binary reading; ``ValueError`` naming it unless it is
    a regular file (``FileNotFoundError`` if it does not exist). Opened
    non-blocking first, so a FIFO is refused instead of waiting for a writer."""
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ValueError(f"{name}: not a regular file (a directory)") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((what for test, what in _KINDS if test(mode)), "not a plain file")
            raise ValueError(f"{name}: not a regular file ({kind})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
