"""The IDX reader under hostile input: a seeded, bounded fuzz run in a child
process with an address-space limit (a few hundred mutated raw and gzip files:
bit flips, truncations, trailing bytes, huge declared sizes, random types and
ranks), asserting every failure is a ValueError and nothing crashes or hangs;
and the memory the reader needs for a gzip payload (no second copy)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from engine.data import read_idx, write_idx

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = 400
LIMIT_MB = 512  # address space the child may add to what it has after importing NumPy


def _header(type_code, dims):
    return bytes([0, 0, type_code, len(dims)]) + np.asarray(dims, ">u4").tobytes()


def _seeds(rng):
    """Valid IDX files (raw bytes) of each type, small and medium."""
    out = [
        _header(0x08, (3, 5, 7)) + rng.integers(0, 256, 105, dtype=np.uint8).tobytes(),
        _header(0x09, (11,)) + rng.integers(-128, 128, 11, dtype=np.int8).tobytes(),
        _header(0x0B, (4, 6)) + rng.integers(-999, 999, 24).astype(">i2").tobytes(),
        _header(0x0C, (2, 2, 2, 2)) + rng.integers(-2**31, 2**31 - 1, 16).astype(">i4").tobytes(),
        _header(0x0D, (5, 3)) + rng.standard_normal(15).astype(">f4").tobytes(),
        _header(0x0E, (2, 3, 4)) + rng.standard_normal(24).astype(">f8").tobytes(),
        _header(0x08, (64, 28, 28)) + rng.integers(0, 256, 64 * 784, dtype=np.uint8).tobytes(),
    ]
    return out


def _mutate(rng, blob):
    """One hostile variant of a valid IDX file (before optional compression)."""
    kind = int(rng.integers(0, 7))
    b = bytearray(blob)
    if kind == 0:  # flip a few bits anywhere
        for pos in rng.integers(0, len(b), size=int(rng.integers(1, 9))):
            b[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # flip bits in the header only
        head = 4 + 4 * b[3]
        for pos in rng.integers(0, min(head, len(b)), size=int(rng.integers(1, 4))):
            b[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == 2:  # truncate
        b = b[:int(rng.integers(0, len(b)))]
    elif kind == 3:  # trailing bytes
        b += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == 4:  # huge declared sizes
        ndim = b[3]
        dim = int(rng.integers(0, ndim))
        value = int(rng.choice([2**32 - 1, 2**31, 2**30, 10**9, int(rng.integers(1, 2**32))]))
        b[4 + 4 * dim:8 + 4 * dim] = value.to_bytes(4, "big")
    elif kind == 5:  # random rank
        b[3] = int(rng.integers(0, 256))
    else:  # random type code
        b[2] = int(rng.integers(0, 256))
    return bytes(b), kind


def run_fuzz(directory, seed=1234, cases=CASES):
    """Write ``cases`` mutated files into ``directory`` and read each; return
    counts by outcome. Raises on any exception that is not a ValueError, or on
    an array inconsistent with its header."""
    rng = np.random.default_rng(seed)
    seeds = _seeds(rng)
    counts = {"ok": 0, "value_error": 0, "by_kind": [0] * 7, "gz": 0}
    for case in range(cases):
        blob, kind = _mutate(rng, seeds[int(rng.integers(0, len(seeds)))])
        compressed = bool(rng.integers(0, 2))
        if compressed:
            counts["gz"] += 1
            payload = gzip.compress(blob, compresslevel=1, mtime=0)
            if rng.random() < 0.3:  # damage the compressed stream too
                p = bytearray(payload)
                p[int(rng.integers(0, len(p)))] ^= 0xFF
                payload = bytes(p)
        path = os.path.join(directory, f"case{case}" + (".gz" if compressed else ""))
        with open(path, "wb") as f:
            f.write(blob if not compressed else payload)
        counts["by_kind"][kind] += 1
        try:
            a = read_idx(path)
        except ValueError as exc:
            assert path in str(exc), str(exc)
            counts["value_error"] += 1
        else:
            ndim = blob[3]
            dims = tuple(int(d) for d in np.frombuffer(blob[4:4 + 4 * ndim], ">u4"))
            assert a.shape == dims and a.dtype.isnative, (path, a.shape, dims)
            counts["ok"] += 1
        finally:
            os.unlink(path)
    # A small gzip file whose header declares 1 GiB: more than the child may allocate.
    huge = os.path.join(directory, "huge.gz")
    payload = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    with open(huge, "wb") as f:
        f.write(gzip.compress(_header(0x08, (1024, 1024, 1024)) + payload, compresslevel=1))
    try:
        read_idx(huge)
    except ValueError as exc:
        counts["huge"] = str(exc).split(": ", 1)[1]
    else:
        raise AssertionError("a 1 GiB header over 1 MiB of data was read")
    return counts


def _limit_address_space(extra_mb):
    import resource
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    limit = vm + extra_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the address-space limit uses Linux's /proc")
def test_fuzzed_idx_files_raise_only_value_errors(tmp_path):
    code = (f"import sys, json; sys.path.insert(0, {HERE!r}); import test_idx_fuzz as t; "
            f"t._limit_address_space({LIMIT_MB}); print(json.dumps(t.run_fuzz({str(tmp_path)!r})))")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"rc {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["ok"] + counts["value_error"] == CASES
    assert counts["value_error"] > CASES // 2 and counts["ok"] > 0
    assert min(counts["by_kind"]) > 20 and counts["gz"] > CASES // 3
    assert "cannot be allocated" in counts["huge"] or "limit" in counts["huge"], counts["huge"]


def test_fuzz_runs_in_process_too(tmp_path):
    """The same cases without the limit (so a failure shows its traceback here)."""
    counts = run_fuzz(str(tmp_path), seed=99, cases=150)
    assert counts["ok"] + counts["value_error"] == 150


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_gzip_payload_is_read_without_a_second_copy(tmp_path, dtype):
    """Peak traced memory of reading a 24 MiB gzip payload stays near 24 MiB
    (the array), not twice that (a temporary of the whole payload)."""
    n = 24 << 20
    a = np.zeros(n // np.dtype(dtype).itemsize, dtype=dtype)
    a[::4096] = 7
    path = tmp_path / "big.gz"
    write_idx(path, a)
    del a
    tracemalloc.start()
    try:
        out = read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes == n and out.dtype.isnative and int(out[4096 // out.itemsize * 0 + 0]) == 7
    assert peak < n + (4 << 20), f"peak {peak / 2**20:.1f} MiB for a {n / 2**20:.0f} MiB payload"


def test_max_bytes_limit(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.zeros((10, 10), np.uint8))
    assert read_idx(path, max_bytes=100).shape == (10, 10)
    with pytest.raises(ValueError, match="more than the limit of 99 bytes"):
        read_idx(path, max_bytes=99)
    with pytest.raises(ValueError, match="max_bytes"):
        read_idx(path, max_bytes=-1)


def test_not_a_regular_file(tmp_path):
    with pytest.raises(ValueError, match=r"not a regular file \(a directory\)"):
        read_idx(tmp_path)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        # a plain open() would wait for a writer forever
        with pytest.raises(ValueError, match=r"not a regular file \(a FIFO\)"):
            read_idx(fifo)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")
