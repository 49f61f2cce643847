"""The bench's timing protocol for the standalone scripts here: each timed call follows an
untimed burst of the same call (``engine.bench.harness.BURST_S``, 20 ms), as in
``python -m engine.bench``."""
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
