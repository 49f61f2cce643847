"""Median conv2d forward and backward of one shape, for comparing two commits:

    git worktree add /tmp/old 72b30a1
    (cd /tmp/old && OPENBLAS_THREAD_TIMEOUT=4 PYTHONPATH=/tmp/old python $PWD/bench/results/scripts/conv_old_vs_new.py 64,32,14,64,3,1,1 21 old)
    OPENBLAS_THREAD_TIMEOUT=4 PYTHONPATH=. python bench/results/scripts/conv_old_vs_new.py 64,32,14,64,3,1,1 21 new

Arguments: N,C,H,O,k,s,p, repetitions, a label.
"""
import sys
import time

# PYTHONPATH's checkout must win over an editable install's import hook, which maps
# engine.backends and engine.kernels to the installed checkout whatever engine resolves to
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
import engine  # noqa: E402, F401
import numpy as np

import engine.ops as F

n, c, h, o, k, s, p = (int(v) for v in sys.argv[1].split(","))
rng = np.random.default_rng(0)
x = rng.standard_normal((n, c, h, h)).astype(np.float32)
w = rng.standard_normal((o, c, k, k)).astype(np.float32)
g = np.ones_like(F.conv2d(x, w, stride=s, padding=p))
F.conv2d_backward(g, x, w, stride=s, padding=p)
forward, backward = [], []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    F.conv2d(x, w, stride=s, padding=p)
    t1 = time.perf_counter()
    F.conv2d_backward(g, x, w, stride=s, padding=p)
    forward.append(t1 - t0)
    backward.append(time.perf_counter() - t1)
print(sys.argv[3], "fwd", round(float(np.median(forward)) * 1e3, 1), "ms, bwd",
      round(float(np.median(backward)) * 1e3, 1), "ms")
