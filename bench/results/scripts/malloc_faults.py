"""Page faults and time of SimpleCNN.conv2's forward/backward, host threads 1 and 2.

    PYTHONPATH=. python bench/results/scripts/malloc_faults.py                       # tuned malloc
    ENGINE_TUNE_MALLOC=0 PYTHONPATH=. python bench/results/scripts/malloc_faults.py  # glibc defaults
"""
import resource
import time

import engine  # noqa: F401  (first: sets OPENBLAS_THREAD_TIMEOUT)
import numpy as np

from engine import backends
import engine.ops as F
from engine.backends import host_memory, host_threads

backends.get("numpy")  # applies the malloc tuning unless ENGINE_TUNE_MALLOC=0
faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)
w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
g = rng.standard_normal((64, 64, 14, 14)).astype(np.float32)


def median_ms(f, n=30):
    f()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 2)


for _ in range(3):
    for threads in (1, 2):
        host_threads.set_num_threads(threads)
        print(threads, "threads: fwd", median_ms(lambda: F.conv2d(x, w, padding=1)),
              "ms, bwd", median_ms(lambda: F.conv2d_backward(g, x, w, padding=1)), "ms")
print("malloc tuned", host_memory.malloc_tuned(), "minor faults",
      resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
