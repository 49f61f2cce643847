"""Keep freed host memory for reuse instead of handing it back to the OS at once.

A training step allocates and frees the same large temporaries (im2col
columns, activations, gradients: megabytes each) every step. glibc's malloc
returns such blocks to the kernel when they are freed (``mmap``/``munmap``, or
trimming the heap top), so the next step takes a page fault for every 4 KiB
it touches again. SimpleCNN's second convolution on 2 threads: a backward
took 13.3-14.0 ms untuned and 8.4-8.7 ms tuned, with 1.29 million against
4,700 page faults over the run (``bench/results/scripts/malloc_faults.py``).

:func:`tune_malloc` raises two glibc thresholds, once per process, when the
NumPy backend is first used: blocks up to 32 MiB come from the heap
(``M_MMAP_THRESHOLD``), and the heap keeps up to 256 MiB of free memory
instead of trimming it (``M_TRIM_THRESHOLD``). The price is a resident size up
to 256 MiB above what is in use after a peak. Nothing happens on other C
libraries, when ``ENGINE_TUNE_MALLOC=0``, or when the process was started with
glibc's own ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` (those win).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 256 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_applied: bool | None = None  # None: not tried yet


def tune_malloc() -> bool:
    """Apply the thresholds once; True if they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("ENGINE_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied


def malloc_tuned() -> bool:
    """Whether :func:`tune_malloc` took effect in this process."""
    return bool(_applied)
