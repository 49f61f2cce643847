"""SimpleCNN training step with Conv2d keeping its im2col columns (on) or not
(off), alternated in blocks of 5 steps in one process; medians.

    PYTHONPATH=. python bench/results/scripts/keep_columns_ab.py
"""
import time

import engine
import numpy as np

from engine import backends
from engine import nn, optim

engine.manual_seed(0)
model = engine.models.simple_cnn()
loss_fn = nn.CrossEntropyLoss()
opt = optim.Adam(model.parameters(), lr=1e-3)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
y = rng.integers(0, 10, 64)
numpy_backend = backends.get("numpy")


def step():
    loss_fn(model(x), y)
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()


for _ in range(10):
    step()
times = {"on": [], "off": []}
for _ in range(30):
    for mode, limit in (("on", 32 << 20), ("off", 0)):
        numpy_backend.keep_columns_bytes = limit
        start = time.perf_counter()
        for _ in range(5):
            step()
        times[mode].append((time.perf_counter() - start) / 5)
print({mode: round(float(np.median(t)) * 1e3, 2) for mode, t in times.items()}, "ms per step")
