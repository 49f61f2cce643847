"""Where dataset files live (the user cache) and how they are downloaded:
streamed to a temporary file beside the target, size-bounded, sha256 checked,
then renamed into place; nothing partial is left under a final name."""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request

from .._io import current_umask

__all__ = ["DatasetUnavailableError", "cache_dir", "fetch"]

_CHUNK = 1 << 20


class DatasetUnavailableError(FileNotFoundError):
    """A dataset's files are not on this machine and could not be downloaded.

    The message lists every place searched and says where to put which files.
    """


def cache_dir(name: str | None = None) -> str:
    """The engine's download cache: ``$XDG_CACHE_HOME/engine`` (default
    ``~/.cache/engine``), or its sub-folder for dataset ``name``."""
    root = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(root):
        root = os.path.join(os.path.expanduser("~"), ".cache")
    base = os.path.join(root, "engine")
    return base if name is None else os.path.join(base, name)


def describe_error(url: str, exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return f"{url}: {type(exc).__name__}: {reason}"


DOWNLOAD_ERRORS = (OSError, ValueError, http.client.HTTPException)


def search_report(title, split, download, searched, partial, errors) -> list[str]:
    """The first lines of a :class:`DatasetUnavailableError`: what was looked
    for, where (``searched``: ``(directory, why)``), what was incomplete, and
    why downloads failed; the caller adds where to put which files."""
    lines = [f"{title} ({split} split) is not on this machine"
             + (" and could not be downloaded." if download else " (download=False).")]
    lines.append("Looked in:")
    lines += [f"  {d}  ({why})" for d, why in searched]
    if not os.environ.get("ENGINE_DATA"):
        lines.append("  ($ENGINE_DATA is not set)")
    if partial:
        lines.append("Incomplete:")
        lines += [f"  {p}" for p in partial]
    if errors:
        lines.append("Download failed:")
        lines += [f"  {e}" for e in errors]
    return lines


def fetch(url: str, target_dir: str, name: str, max_bytes: int, sha256: str | None = None,
          check=None) -> str:
    """Download ``url`` to ``target_dir/name``; return the path.

    The body goes to a temporary ``.part`` file in ``target_dir`` while its
    sha256 is computed; more than ``max_bytes`` bytes abort it. The file is
    kept if its sha256 equals ``sha256``, else if ``check(tmp_path)`` (when
    given) accepts it (returns without raising ``ValueError``); otherwise
    ``ValueError``. Network failures raise ``OSError`` (``URLError``) or
    ``http.client.HTTPException``. The temporary file is removed on any failure.
    """
    print(f"engine.data: downloading {url}", file=sys.stderr)
    dest = os.path.join(target_dir, name)
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix="." + name + ".", suffix=".part")
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                size += len(block)
                if size > max_bytes:
                    raise ValueError(f"more than {max_bytes} bytes: not the expected file")
                out.write(block)
                digest.update(block)
        if sha256 is None or digest.hexdigest() != sha256:
            if check is None:
                raise ValueError(f"sha256 mismatch: got {digest.hexdigest()} ({size} bytes), expected {sha256}")
            check(tmp, digest.hexdigest(), size)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
        tmp = None
        return dest
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
