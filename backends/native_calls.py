"""Calling a C kernel over a range of work items, split over the C thread pool.

Every threaded entry point of ``kernels/cpu_*.c`` takes ``(..., start, stop, ...)``: a
range of its work items (elements, planes, panels, shares of the batch). :func:`run` cuts
``[0, extent)`` into contiguous parts, as :func:`host_threads.split` does, and has
``pool_run`` of ``kernels/cpu_pool.c`` call the entry point once per part, on the calling
thread and the pool's spinning workers. A hand-off there costs about a microsecond,
against 30-60 us through a Python thread pool, so layers of a few hundred microseconds
(LeNet-5, batch-1 inference) use both cores too. The kernels never let the split change
their results, so neither does the thread count.

Only entry points whose arguments are all pointers or integers can go through the pool
(``pool_run`` passes int64s); :func:`run` checks that against ``native.SIGNATURES``.
"""
from __future__ import annotations

import ctypes
import os

from ..kernels import native
from . import host_threads


class _Slot:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Placeholders in :func:`run`'s ``args`` for a part's first item and one past its last.
START, STOP = _Slot("START"), _Slot("STOP")

#: Whether :func:`run` uses the C pool; ``False`` (or ``$ENGINE_NATIVE_POOL=0``) splits the
#: same parts over the Python host threads instead (the bench compares the two).
USE_POOL = os.environ.get("ENGINE_NATIVE_POOL", "1") != "0"
#: Arguments ``pool_run`` can pass (kernels/cpu_pool.c, POOL_MAX_ARGS).
MAX_ARGS = 16
_INTEGER_CLASS = (ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int)
_entries: dict = {}


def address(a) -> int:
    """The address of ``a``'s first element: through the buffer protocol where ``a`` is
    writable and C-contiguous (a third of the time of ``a.ctypes.data``, which builds an
    object per call; a layer makes dozens of these calls), else ``a.ctypes.data``."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError):  # read-only, not C-contiguous, or empty
        return a.ctypes.data


def address_or_none(a) -> int | None:
    """:func:`address` of ``a``, or ``None`` (NULL to the kernels: an optional operand) where
    ``a`` is ``None``."""
    return None if a is None else address(a)


def _entry(lib, name: str):
    """``(address, returns_int)`` of entry point ``name``, checked to suit ``pool_run``."""
    key = (id(lib), name)
    found = _entries.get(key)
    if found is None:
        restype, argtypes = native.SIGNATURES[name]
        if len(argtypes) > MAX_ARGS or any(t not in _INTEGER_CLASS for t in argtypes) \
                or restype not in (None, ctypes.c_int):
            raise TypeError(f"{name}: pool_run passes up to {MAX_ARGS} integer or pointer arguments and "
                            f"returns an int or nothing; the signature is {restype} {argtypes}")
        found = (ctypes.cast(getattr(lib, name), ctypes.c_void_p).value, restype is not None)
        _entries[key] = found
    return found


def threads_for(extent: int, work: int, work_per_thread: int) -> int:
    """How many parts to cut ``extent`` items into: one per ``work_per_thread`` of ``work``,
    at most :func:`host_threads.get_num_threads` and ``extent``; 1 inside a host worker
    thread (no nesting)."""
    if getattr(host_threads._inside, "worker", False):
        return 1
    return max(1, min(host_threads.get_num_threads(), extent, work // work_per_thread))


def run(lib, name: str, args, extent: int, parts: int) -> int:
    """Call entry point ``name`` of ``lib`` with ``args`` (pointers as ints, ints, ``None``
    for a null pointer; :data:`START` and :data:`STOP` where the range goes) once per part of
    ``[0, extent)`` cut into ``parts``, on up to ``parts`` threads. Returns the first nonzero
    result of a part (0 for entry points that return nothing)."""
    if extent <= 0:
        return 0
    address, returns_int = _entry(lib, name)
    if parts <= 1:  # one part: a plain ctypes call, no job to publish
        r = getattr(lib, name)(*[0 if a is START else extent if a is STOP else a for a in args])
        return (r or 0) if returns_int else 0
    values = (ctypes.c_longlong * MAX_ARGS)()
    start = stop = -1
    for i, a in enumerate(args):
        if a is START:
            start = i
        elif a is STOP:
            stop = i
        elif a is not None:
            values[i] = int(a)
    if start < 0 or stop < 0:
        raise ValueError(f"{name}: args must hold START and STOP, got {args!r}")
    if USE_POOL:
        return lib.pool_run(address, values, len(args), start, stop, int(returns_int), extent, parts)
    return _run_on_host_threads(getattr(lib, name), list(values)[:len(args)], start, stop, extent, parts)


def _run_on_host_threads(fn, values, start: int, stop: int, extent: int, parts: int) -> int:
    """The same parts on the Python host threads (:func:`host_threads.parallel_for`)."""
    results = []

    def part(p):
        a = list(values)
        a[start], a[stop] = p.start, p.stop
        results.append(fn(*a) or 0)
    host_threads.parallel_for(part, extent, parts * host_threads.MIN_ITEMS_PER_THREAD)
    return next((r for r in results if r), 0)


def quiesce() -> None:
    """Send the C pool's spinning workers to sleep now. The bench calls it before it times
    another library's call, which should not share a core with them."""
    lib = native.library()
    if lib is not None:
        lib.pool_quiesce()


def warm() -> None:
    """Wake the C pool's workers and wait (at most 2 ms) until they spin, the state a run of
    kernel calls keeps them in. The bench calls it before it times an engine call."""
    lib = native.library()
    if lib is not None:
        lib.pool_warm()
