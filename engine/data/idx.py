"""IDX files (the MNIST format): reading and writing, raw or gzip-compressed.

The format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code,
the number of dimensions, then one big-endian uint32 per dimension, then the
data, big-endian, row-major.

Reading is bounded: the payload goes straight into one preallocated array of
the size the header declares (gzip is decompressed into it in 1 MiB slices, so
no second copy of the payload is ever made), a header declaring more than
``max_bytes`` or more than the file can hold is refused before anything is
allocated, and every failure is a ``ValueError`` naming the file.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from .._io import atomic_write
from ._files import open_regular

__all__ = ["DEFAULT_MAX_BYTES", "read_idx", "write_idx"]

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("=").name if dt.itemsize > 1 else dt.name: code
              for code, dt in _IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data by more than ~1032:1, so a header promising
# more than this many bytes per compressed byte describes a truncated file.
_MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20
#: Largest payload :func:`read_idx` reads unless told otherwise (4 GiB; the
#: biggest MNIST-family file, EMNIST's, is about 0.55 GB).
DEFAULT_MAX_BYTES = 1 << 32


def _read_exactly(stream, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        block = stream.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _read_idx(path, hasher=None, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Parse the IDX file at ``path``; feed the decompressed bytes to ``hasher``."""
    name = os.fspath(path)
    with open_regular(name) as raw:
        try:
            file_size = os.fstat(raw.fileno()).st_size
            head = raw.read(2)
            raw.seek(0)
        except OSError as exc:
            raise ValueError(f"{name}: cannot be read ({type(exc).__name__}: {exc})") from None
        compressed = name.endswith(".gz") or head == _GZIP_MAGIC
        if compressed and head != _GZIP_MAGIC:
            raise ValueError(f"{name}: not a gzip file: expected the gzip magic bytes "
                             f"1f 8b, found {head.hex(' ') or 'an empty file'}")
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            return _parse_idx(stream, name, compressed, file_size, hasher, max_bytes)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{name}: corrupt or truncated gzip stream "
                             f"({type(exc).__name__}: {exc or 'unexpected end of data'})") from None
        except OSError as exc:  # an I/O error under the gzip reader
            raise ValueError(f"{name}: cannot be read ({type(exc).__name__}: {exc})") from None
        finally:
            if compressed:
                stream.close()


def _parse_idx(stream, name, compressed, file_size, hasher, max_bytes):
    magic = _read_exactly(stream, 4)
    if len(magic) < 4:
        raise ValueError(f"{name}: truncated IDX header: expected 4 magic bytes "
                         f"(00 00 <type> <ndim>), found {len(magic)} byte(s)")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{name}: not an IDX file: expected magic 00 00 <type> <ndim>, "
                         f"found {magic.hex(' ')}")
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X} {dt.name}" for c, dt in _IDX_TYPES.items())
        raise ValueError(f"{name}: unknown IDX type code 0x{type_code:02X} "
                         f"(magic {magic.hex(' ')}); expected one of {known}")
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions "
                         f"(magic {magic.hex(' ')}); expected at least 1")
    dim_bytes = _read_exactly(stream, 4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise ValueError(f"{name}: truncated IDX header: magic declares {ndim} dimension(s) "
                         f"({4 * ndim} bytes of sizes), found {len(dim_bytes)} byte(s)")
    dims = tuple(int(d) for d in np.frombuffer(dim_bytes, dtype=">u4"))
    dtype = _IDX_TYPES[type_code]
    count = 1
    for d in dims:
        count *= d  # Python ints: no overflow, however large the header's sizes
    header = 4 + 4 * ndim
    expected = count * dtype.itemsize
    shape_txt = "x".join(map(str, dims))
    what = f"{shape_txt} {dtype.name} = {expected} payload bytes"
    if hasher is not None:
        hasher.update(magic)
        hasher.update(dim_bytes)

    if not compressed and header + expected != file_size:
        found = file_size - header
        kind = "truncated" if found < expected else "over-long"
        raise ValueError(f"{name}: {kind} IDX file: header declares {what}, "
                         f"found {found} payload bytes")
    if compressed and expected > _MAX_DEFLATE_RATIO * file_size + 4096:
        raise ValueError(f"{name}: IDX header declares {what}, more than a {file_size}-byte "
                         f"gzip file can hold: the file is truncated or its header corrupt")
    if expected > max_bytes:
        raise ValueError(f"{name}: IDX header declares {what}, more than the limit of "
                         f"{max_bytes} bytes (read_idx(..., max_bytes=...) raises it)")
    try:
        out = np.empty(count, dtype=dtype)
    except (MemoryError, ValueError):
        raise ValueError(f"{name}: IDX header declares {what}, which cannot be allocated: "
                         f"corrupt header?") from None
    buf = memoryview(out.view(np.uint8).reshape(-1))
    got = 0
    while got < expected:
        # Bounded slices: GzipFile.readinto(b) decompresses len(b) bytes into a
        # temporary before copying, so one call over the whole buffer would
        # hold the payload twice.
        n = stream.readinto(buf[got:min(got + _CHUNK, expected)])
        if not n:
            break
        got += n
    if got < expected:
        raise ValueError(f"{name}: truncated IDX file: header declares {what}, "
                         f"found {got} payload bytes")
    # Reading past the payload also makes gzip check its CRC and length.
    extra = 0
    while True:
        block = stream.read(_CHUNK)
        if not block:
            break
        extra += len(block)
    if extra:
        raise ValueError(f"{name}: over-long IDX file: header declares {what}, "
                         f"found {expected + extra} payload bytes ({extra} trailing)")
    if hasher is not None:
        hasher.update(buf)
    del buf
    if dtype.itemsize > 1:
        out = out.byteswap(inplace=True).view(dtype.newbyteorder("="))  # in place: no second copy
    return out.reshape(dims)


def read_idx(path, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file (MNIST format), raw or gzip-compressed, into a NumPy array.

    All IDX types are understood (uint8, int8, int16, int32, float32,
    float64); multi-byte data come back in native byte order. A file is
    treated as gzip if its name ends in ``.gz`` or it starts with the gzip
    magic bytes. The payload is read straight into the returned array (peak
    memory: the array plus 1 MiB). Anything malformed (bad magic, unknown
    type, truncated or over-long payload, corrupt gzip stream or CRC, a
    header declaring more than ``max_bytes`` bytes or more than the file can
    hold, a path that is not a regular file) raises ``ValueError`` naming the
    file and what was expected versus found; a missing file raises
    ``FileNotFoundError``.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
        raise ValueError(f"read_idx: max_bytes must be a non-negative int, got {max_bytes!r}")
    return _read_idx(path, max_bytes=int(max_bytes))


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    Written to a temporary file first and moved into place, so readers never
    see a partial file. Supported dtypes: uint8, int8, int16, int32, float32,
    float64; at most 255 dimensions, each below 2**32.
    """
    a = np.asarray(array)
    if a.dtype.name not in _IDX_CODES:
        raise TypeError(f"write_idx: IDX has no type for dtype {a.dtype}; "
                        f"supported: {', '.join(_IDX_CODES)}")
    if not 1 <= a.ndim <= 255 or any(d >= 2 ** 32 for d in a.shape):
        raise ValueError(f"write_idx: cannot store shape {a.shape} "
                         f"(1 to 255 dimensions, each below 2**32)")
    code = _IDX_CODES[a.dtype.name]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(a, dtype=_IDX_TYPES[code]).tobytes()

    def write(f):
        if os.fspath(path).endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            f.write(header)
            f.write(payload)

    atomic_write(path, write)
