"""tanh and sigmoid, forward and backward, at LeNet-5's shapes: the C kernels
(kernels/cpu_activations.c) on 1 and 2 threads and as the engine dispatches them, and the
NumPy expressions they replace, interleaved in one process (medians), then PyTorch CPU on the
same arrays in the same process; then the LeNet-5 training step (batch 64, Adam) with the
kernels and with the NumPy expressions, interleaved, and PyTorch's after them. (Interleaved
with torch call by call, the engine's spinning pool workers and torch's slowed each other
several-fold on a loaded 2-core machine.)

    PYTHONPATH=. python bench/results/scripts/activations_bench.py [--rounds 31] [--steps 41]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import types

import numpy as np

#: LeNet-5's (batch 64), then sizes around the kernels' MIN_ELEMENTS
SHAPES = [(64, 6, 28, 28), (64, 16, 10, 10), (64, 120), (64, 84), (4096,), (16384,), (32768,), (65536,)]


def _time(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def micro(rounds: int) -> None:
    import torch
    from engine import ops
    from engine.backends import host_threads, native_cpu
    from engine.backends.base import Backend
    b = _numpy_backend()
    threads_default = host_threads.get_num_threads()
    r = np.random.default_rng(0)
    cols = ("C 1thr", "C 2thr", "engine", "NumPy", "torch", "torch 1t")
    print(f"{'op':18s} {'shape':17s}" + "".join(f"{k:>9s}" for k in cols)
          + "  NumPy/eng torch/eng t1t/eng")
    print("(us, medians; C 1thr / C 2thr: the kernel at every size on one thread / split in two; engine: ops.* as "
          "dispatched, on the default threads)")
    for shape in SHAPES:
        x = (r.standard_normal(shape) * 2).astype(np.float32)
        g = r.standard_normal(shape).astype(np.float32)
        xt, gt = torch.from_numpy(x), torch.from_numpy(g)
        y_t, y_s = np.tanh(x), Backend.sigmoid(b, x)
        yt_t, yt_s = torch.from_numpy(y_t), torch.from_numpy(y_s)
        cases = {
            "tanh": (lambda: native_cpu.tanh(x), lambda: ops.tanh(x), lambda: Backend.tanh(b, x),
                     lambda: torch.tanh(xt)),
            "tanh_backward": (lambda: native_cpu.tanh_backward(g, y_t), lambda: ops.tanh_backward(g, y_t),
                              lambda: Backend.tanh_backward(b, g, y_t),
                              lambda: torch.ops.aten.tanh_backward(gt, yt_t)),
            "sigmoid": (lambda: native_cpu.sigmoid(x), lambda: ops.sigmoid(x), lambda: Backend.sigmoid(b, x),
                        lambda: torch.sigmoid(xt)),
            "sigmoid_backward": (lambda: native_cpu.sigmoid_backward(g, y_s), lambda: ops.sigmoid_backward(g, y_s),
                                 lambda: Backend.sigmoid_backward(b, g, y_s),
                                 lambda: torch.ops.aten.sigmoid_backward(gt, yt_s)),
        }
        inner = max(1, 200_000 // x.size)  # each sample >= ~50 us
        for name, (kernel, ours, numpy_expr, theirs) in cases.items():
            samples = {k: [] for k in cols}
            for _ in range(rounds):
                real = native_cpu.MIN_ELEMENTS
                native_cpu.MIN_ELEMENTS = dict.fromkeys(real, 1)
                split = native_cpu.MIN_ELEMENTS_PER_THREAD
                native_cpu.MIN_ELEMENTS_PER_THREAD = 1  # "C 2thr": always split in two
                for threads in (1, 2):
                    host_threads.set_num_threads(threads)
                    samples[f"C {threads}thr"].append(_time(kernel, inner))
                native_cpu.MIN_ELEMENTS, native_cpu.MIN_ELEMENTS_PER_THREAD = real, split
                host_threads.set_num_threads(threads_default)
                samples["engine"].append(_time(ours, inner))
                samples["NumPy"].append(_time(numpy_expr, inner))
            time.sleep(0.01)  # the pool's workers go to sleep: their spinning slows torch's threads badly
            for key, threads in (("torch", 2), ("torch 1t", 1)):
                torch.set_num_threads(threads)
                for _ in range(rounds):
                    samples[key].append(_time(theirs, inner))
            torch.set_num_threads(2)
            med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
            print(f"{name:18s} {str(shape):17s}" + "".join(f"{med[k]:9.1f}" for k in cols)
                  + f"  {med['NumPy'] / med['engine']:8.2f}  {med['torch'] / med['engine']:8.2f}"
                  + f"  {med['torch 1t'] / med['engine']:6.2f}")


def _numpy_backend():
    from engine import backends
    return backends.get("numpy")


def lenet_step(steps: int) -> None:
    import engine
    from engine import nn, optim
    from engine.backends.base import Backend
    b = _numpy_backend()
    engine.manual_seed(0)
    model = engine.models.lenet5()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    r = np.random.default_rng(1)
    x = r.standard_normal((64, 1, 28, 28)).astype(np.float32)
    t = r.integers(0, 10, 64).astype(np.int64)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(engine.Tensor(x)), t)
        loss.backward()
        opt.step()
        return loss

    import torch
    tnn = torch.nn
    tmodel = tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.Tanh(), tnn.AvgPool2d(2), tnn.Conv2d(6, 16, 5),
                            tnn.Tanh(), tnn.AvgPool2d(2), tnn.Flatten(), tnn.Linear(400, 120), tnn.Tanh(),
                            tnn.Linear(120, 84), tnn.Tanh(), tnn.Linear(84, 10))
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)

    def torch_step():
        topt.zero_grad()
        loss = tnn.functional.cross_entropy(tmodel(tx), tt)
        loss.backward()
        topt.step()

    names = ("tanh", "tanh_backward", "sigmoid", "sigmoid_backward")

    def use_numpy(on):
        for n in names:
            if on:
                setattr(b, n, types.MethodType(getattr(Backend, n), b))
            else:
                b.__dict__.pop(n, None)
    for _ in range(5):
        step()
        torch_step()
    samples = {"C kernels": [], "NumPy activations": [], "PyTorch": [], "PyTorch 1 thread": []}
    for _ in range(steps):
        for key, on in (("C kernels", False), ("NumPy activations", True)):
            use_numpy(on)
            t0 = time.perf_counter()
            step()
            samples[key].append(time.perf_counter() - t0)
    use_numpy(False)
    time.sleep(0.01)
    for key, threads in (("PyTorch", 2), ("PyTorch 1 thread", 1)):
        torch.set_num_threads(threads)
        for _ in range(steps):  # apart: torch's and the pool's spinning threads slow each other down
            t0 = time.perf_counter()
            torch_step()
            samples[key].append(time.perf_counter() - t0)
    torch.set_num_threads(2)
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    p10 = {k: float(np.percentile(v, 10)) * 1e3 for k, v in samples.items()}
    for k in samples:
        print(f"LeNet-5 step, batch 64, Adam, {k:18s} median {med[k]:6.2f} ms  (10th pct {p10[k]:6.2f} ms)")
    for k in ("NumPy activations", "PyTorch", "PyTorch 1 thread"):
        print(f"  {k} / C kernels: {med[k] / med['C kernels']:.3f} (medians), "
              f"{p10[k] / p10['C kernels']:.3f} (10th percentiles)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--steps", type=int, default=41)
    args = p.parse_args(argv)
    import torch
    from engine.kernels import native
    torch.set_num_threads(2)
    print("kernels:", native.status(), "| torch", torch.__version__, "threads", torch.get_num_threads(),
          "| load", open("/proc/loadavg").read().split()[:3], "| cores", os.cpu_count())
    micro(args.rounds)
    lenet_step(args.steps)
    print("load after:", open("/proc/loadavg").read().split()[:3])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
