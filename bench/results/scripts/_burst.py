"""The bench's timing protocol for the standalone scripts here: each timed call follows an
untimed burst of the same call (``engine.bench.harness.BURST_S``, 20 ms), as in
``python -m engine.bench``."""
import statistics
import time

from engine.bench.harness import BURST_S


def burst_time(f):
    """Seconds of one call of ``f`` made right after ``BURST_S`` of untimed calls."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < BURST_S:
        f()
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def interleaved_medians(calls, seconds, at_least):
    """Median milliseconds of each of ``calls`` (``{name: function}``), timed round-robin by
    :func:`burst_time` for ``seconds`` and at least ``at_least`` rounds."""
    times = {name: [] for name in calls}
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or min(map(len, times.values())) < at_least:
        for name, f in calls.items():
            times[name].append(burst_time(f))
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}
