"""Making damaged and hand-made checkpoint files for the tests (no engine code here:
the files are built with zipfile, struct and NumPy's .npy writer, as an attacker would)."""
from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
from numpy.lib import format as npy_format


def members(path) -> dict[str, bytes]:
    """Archive member name -> its (uncompressed) bytes, in the archive's order."""
    with zipfile.ZipFile(path) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def write_members(path, entries: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)


def npy(array) -> bytes:
    """``array`` as .npy bytes (no pickle)."""
    buf = io.BytesIO()
    npy_format.write_array(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def raw_npy(header: str, data: bytes = b"") -> bytes:
    """A .npy file (version 1.0) with ``header`` (the dict text) as given, however wrong."""
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * (pad % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def text(obj) -> np.ndarray:
    """A JSON text entry as the writer stores it."""
    return np.array(json.dumps(obj))


def json_of(entries: dict[str, bytes], key: str):
    return json.loads(str(npy_format.read_array(io.BytesIO(entries[key + ".npy"]), allow_pickle=False)[()]))


def with_manifest(entries: dict[str, bytes]) -> dict[str, bytes]:
    """Rewrite the manifest so that it lists exactly the other entries, with their headers'
    dtypes and shapes (a hand-made file consistent with itself)."""
    listed = {}
    for name, data in entries.items():
        if name == "manifest.npy":
            continue
        f = io.BytesIO(data)
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read(f)
        listed[name[:-4]] = [dtype.str, list(shape)]
    out = {k: v for k, v in entries.items() if k != "manifest.npy"}
    out["manifest.npy"] = npy(text({"entries": listed}))
    return out


def edit(src, dst, changes: dict, manifest: bool = True, compression=zipfile.ZIP_STORED) -> None:
    """Copy the checkpoint ``src`` to ``dst`` with entries replaced (an array, or .npy
    bytes) or removed (``None``); the manifest is made consistent unless ``manifest=False``."""
    entries = members(src)
    for key, value in changes.items():
        if value is None:
            entries.pop(key + ".npy", None)
        else:
            entries[key + ".npy"] = value if isinstance(value, bytes) else npy(value)
    if manifest:
        entries = with_manifest(entries)
    write_members(dst, entries, compression)


def keep_in_directory(path, dst, count: int) -> list[str]:
    """Copy ``path`` to ``dst`` with a central directory that lists only the first ``count``
    members (their data and the others' all still in the file): a corrupted zip directory.
    Returns the names still listed."""
    data = bytearray(open(path, "rb").read())
    end = data.rindex(b"PK\x05\x06")
    (_, _, _, _, _, cd_size, cd_offset, _) = struct.unpack("<4s4H2LH", data[end:end + 22])
    pos, records, names = cd_offset, [], []
    for _ in range(count):
        n, m, k = struct.unpack("<3H", data[pos + 28:pos + 34])
        size = 46 + n + m + k
        records.append(bytes(data[pos:pos + size]))
        names.append(data[pos + 46:pos + 46 + n].decode())
        pos += size
    directory = b"".join(records)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), cd_offset, 0)
    with open(dst, "wb") as f:
        f.write(bytes(data[:cd_offset]) + directory + eocd)
    return names
