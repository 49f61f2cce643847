"""core1 (SimpleCNN.conv1 forward, 64x1x28x28 -> 32, 3x3, pad 1) on 1 and 2 threads,
engine and PyTorch: does a second thread help a 9-deep convolution that writes 6.4 MB?

Each timed call follows a 20 ms untimed burst of the same call (as ``python -m engine.bench``);
medians of 30. Cycles a 16-wide output vector assume 3.6 GHz (the FMA probe's 116 GFLOP/s on
one thread at one 512-bit FMA a cycle).
Run: python bench/results/scripts/core1_threads.py
"""
import numpy as np
import torch

import engine
from engine import ops

from _burst import burst_time

rng = np.random.default_rng(0)
w = rng.standard_normal((32, 1, 3, 3)).astype("float32")
b = np.zeros(32, "float32")
for threads in (1, 2):
    torch.set_num_threads(threads)
    engine.set_num_threads(threads)
    for n in (16, 64):
        x = rng.standard_normal((n, 1, 28, 28)).astype("float32")
        tx, tw, tb = map(torch.from_numpy, (x, w, b))
        eng, tor = [], []
        for _ in range(30):
            eng.append(burst_time(lambda: ops.conv2d(x, w, b, padding=1)))
            tor.append(burst_time(lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1)))
        vectors = n * 32 * 28 * 28 / 16 / threads
        for name, ts in (("engine", eng), ("torch", tor)):
            t = float(np.median(ts))
            print(f"threads {threads} batch {n:2d} {name:6s} {t * 1e3:6.3f} ms  "
                  f"{t * 3.6e9 / vectors:5.1f} cycles per output vector per thread")
