"""Worker threads for the host backends' own loops (im2col, col2im, pooling).

NumPy runs each copy or element-wise loop on one core, while the BLAS and
PyTorch use them all. NumPy releases the GIL inside those loops, so splitting a
large copy over a few Python threads runs the parts at once. On this
repository's 2-core machine: col2im of SimpleCNN's second convolution 2.2 ->
1.4 ms, its first max pooling 1.4 -> 0.9 ms; im2col, bound by memory
bandwidth, gains little.

The count defaults to ``$ENGINE_NUM_THREADS``, else the cores this process may
use; ``engine.set_num_threads`` changes it. Work too small to pay for a thread
hand-off (~20 us) runs inline.
"""
from __future__ import annotations

import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

#: Elements of work each thread must get before the work is split (below
#: ~1 MiB of float32 a thread, splitting measured slower: SimpleCNN.conv1).
MIN_ITEMS_PER_THREAD = 1 << 18

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_num_threads: int | None = None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_threads() -> int:
    value = os.environ.get("ENGINE_NUM_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"ENGINE_NUM_THREADS must be a positive integer, got {value!r}") from None
        if n < 1:
            raise ValueError(f"ENGINE_NUM_THREADS must be a positive integer, got {value!r}")
        return n
    return _usable_cores()


def get_num_threads() -> int:
    """Threads the host backends split their data-movement loops over."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (``n >= 1``) for the host backends' loops; 1 runs
    everything on the calling thread. The BLAS keeps its own setting."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _num_threads = int(n)


def _executor(n: int) -> ThreadPoolExecutor:
    """A pool with at least ``n`` workers. A smaller pool is replaced but never
    shut down here: another thread may be submitting to it (its idle workers
    exit when it is garbage-collected)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            _pool_size = max(n, get_num_threads())
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="engine-host")
        return _pool


def _forget_pool_after_fork() -> None:
    """In a forked child the parent's workers do not exist and the lock may be held."""
    global _lock, _pool, _pool_size
    _lock, _pool, _pool_size = threading.Lock(), None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def split(extent: int, parts: int) -> list[slice]:
    """``range(extent)`` cut into ``parts`` contiguous slices, sizes differing by at most one."""
    parts = max(1, min(parts, extent))
    base, extra = divmod(extent, parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + base + (p < extra)
        out.append(slice(start, stop))
        start = stop
    return out


def parallel_for(fn, extent: int, items: int) -> None:
    """Call ``fn(part)`` for contiguous slices ``part`` covering ``range(extent)``,
    on up to :func:`get_num_threads` threads; ``items`` (the elements the whole
    call reads or writes, whichever is more) decides how many are worth it. The parts must write disjoint
    memory. Exceptions from a part are re-raised here."""
    threads = min(get_num_threads(), extent, max(1, items // MIN_ITEMS_PER_THREAD))
    if threads <= 1 or getattr(_inside, "worker", False):  # no nesting: a part runs its inner loops inline
        fn(slice(0, extent))
        return
    parts = split(extent, threads)
    pool = _executor(threads - 1)  # the calling thread runs the first part itself
    futures = [pool.submit(_as_worker, fn, part) for part in parts[1:]]
    try:
        _as_worker(fn, parts[0])  # the calling thread takes a share too
    finally:
        wait(futures)  # no part may still write after we return or raise
    for f in futures:
        f.result()


_inside = threading.local()


def _as_worker(fn, part):
    _inside.worker = True
    try:
        fn(part)
    finally:
        _inside.worker = False
