"""PyTorch twin of ``python -m engine train --model simple_cnn --dataset fashion-mnist``.

Same network (conv 1→32 k3 p1, ReLU, max-pool 2, conv 32→64 k3 p1, ReLU,
max-pool 2, flatten, linear 3136→128, ReLU, dropout 0.25, linear 128→10),
same data (the IDX files found by ``engine.data``, scaled to [0, 1] and
standardised with the train split's mean/std), same hyper-parameters (Adam
lr 1e-3, batch 64, 3 epochs, a fresh shuffle every epoch), CPU with
``torch.set_num_threads(2)``. Prints the per-epoch training time (validation
and test excluded, as the engine's CLI reports it) and the test accuracy.

    python -m engine.bench.train_torch_fashion                      # PyTorch's default initialisation
    python -m engine.bench.train_torch_fashion --init engine        # start from the engine's initial weights

Compare with:

    python -m engine train --model simple_cnn --dataset fashion-mnist --epochs 3 --backend numpy \\
        --batch-size 64 --lr 1e-3 --seed 0 --val-fraction 0

or time both in one process, an epoch of each in turn, from the same weights:
``python -m engine.bench --suite epoch`` (it uses :func:`train_epoch` below).
``--layer-times`` shows where a step goes, layer by layer, in both.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(torch, model: str = "simple_cnn"):
    """The PyTorch network: SimpleCNN written out, or the twin of another
    ``engine.models`` model (``lenet5``, ``course_cnn``) built by ``bench.ops.torch_twin``."""
    if model != "simple_cnn":
        import engine
        from engine.bench.ops import torch_twin
        return torch_twin(torch, engine.models.get_model(model))
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))


def to_tensor(torch, ds):
    x = ds.images.astype(np.float32) / 255.0
    x = (x - np.float32(ds.mean)) / np.float32(ds.std)
    return torch.from_numpy(x), torch.from_numpy(ds.labels.astype(np.int64))


def train_epoch(torch, model, opt, xtr, ytr, batch_size: int, gen) -> dict:
    """One training epoch of ``model`` over the standardised tensors ``xtr``, ``ytr``
    in a fresh random order from ``gen``: per batch zero_grad, forward,
    cross-entropy, backward, ``opt.step()``, one host read of the loss and the
    correct count (as ``engine.fit`` reads both once per step). Returns the
    epoch's mean training ``loss``, ``accuracy`` and ``seen`` samples."""
    model.train()
    order = torch.randperm(len(xtr), generator=gen)
    seen, loss_sum, correct = 0, 0.0, 0
    for i in range(0, len(xtr), batch_size):
        idx = order[i:i + batch_size]
        x, y = xtr[idx], ytr[idx]
        opt.zero_grad()
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()
        n = len(y)
        seen += n
        loss_sum += loss.item() * n
        correct += int((out.argmax(1) == y).sum())
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "seen": seen}


def accuracy(torch, model, x, y, batch=256):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch])
            loss += float(torch.nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum"))
            correct += int((out.argmax(1) == y[i:i + batch]).sum())
    model.train()
    return correct / len(x), loss / len(x)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="simple_cnn", choices=("simple_cnn", "lenet5", "course_cnn"),
                   help="the network (default simple_cnn); lenet5: the LeNet-5 epoch comparison "
                        "(python -m engine train --model lenet5 ...; or --compare-steps)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init", choices=("torch", "engine"), default="torch",
                   help="torch: PyTorch's default initialisation; engine: the engine's simple_cnn "
                        "initial weights for the same --seed")
    p.add_argument("--train-samples", type=int, default=None, help="first N training images only")
    p.add_argument("--compare-steps", type=int, default=None, metavar="N",
                   help="instead of training: time N-step blocks of the engine (numpy backend) and of "
                        "PyTorch alternately in this one process, on the same batches, and print the medians")
    p.add_argument("--rounds", type=int, default=5, help="blocks per side with --compare-steps")
    p.add_argument("--layer-times", action="store_true",
                   help="instead of training: median forward and backward time of each layer, the loss and "
                        "the optimizer step, engine and PyTorch one step each in turn (backward from gradient "
                        "hooks on the layers' outputs)")
    p.add_argument("--engine-threads", default="2",
                   help="BLAS thread counts to time the engine with, e.g. 1,2 (needs threadpoolctl)")
    args = p.parse_args(argv)
    if (args.compare_steps or args.layer_times) and "torch" not in sys.modules:
        # engine and PyTorch alternate block by block here, with no burst between them (unlike
        # python -m engine.bench): PyTorch's OpenMP workers must not spin into the engine's
        # block; libgomp reads this when torch loads
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    if args.compare_steps:
        return compare_steps(args)
    if args.layer_times:
        return layer_times(args)

    import torch

    from engine.data import load_dataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    if args.train_samples:
        train = train.subset(slice(0, args.train_samples))
    xtr, ytr = to_tensor(torch, train)
    xte, yte = to_tensor(torch, test)

    model = build(torch, args.model)
    if args.init == "engine":
        import engine
        engine.manual_seed(args.seed)
        state = {k: torch.from_numpy(engine.to_numpy(v).copy())
                 for k, v in engine.models.get_model(args.model).state_dict().items()}
        model.load_state_dict(state)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}")
    print(f"{args.model} ({sum(q.numel() for q in model.parameters()):,} parameters, {args.init} init) on "
          f"{args.dataset}: {len(xtr):,} train, {len(xte):,} test; Adam lr {args.lr:g}, batch {args.batch_size}, "
          f"{args.epochs} epochs, seed {args.seed}", flush=True)
    times = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        logs = train_epoch(torch, model, opt, xtr, ytr, args.batch_size, gen)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        print(f"epoch {epoch}/{args.epochs}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.2%}  "
              f"{elapsed:.1f}s ({logs['seen'] / elapsed:,.0f} samples/s)", flush=True)
    acc, loss = accuracy(torch, model, xte, yte)
    print(f"training time: {sum(times):.1f} s ({sum(times) / len(times):.1f} s per epoch)")
    print(f"test accuracy: {acc:.2%} ({round(acc * len(xte))}/{len(xte)} held-out {args.dataset} test images), "
          f"test loss {loss:.4f}", flush=True)
    return 0


def layer_times(args, steps=20):
    """Where a training step goes, layer by layer, for the engine and for PyTorch,
    one step of each in turn on the same batches (the same initial weights).

    Forward: each layer's call, timed around it. Backward: from gradient hooks
    on the layers' outputs (``Tensor.register_hook`` in both libraries). Both
    autograd engines run a hook on a tensor's gradient just before the backward
    of the node that made the tensor, so layer ``i``'s backward lasts from its
    output's hook to the hook of layer ``i - 1``'s output (for the first
    layer: to the end of ``backward()``); "loss backward" is from the call of
    ``backward()`` to the last layer's hook. A layer made of several tape nodes
    (or none) is measured as a whole. Medians over ``steps`` steps after as
    many warm-up steps."""
    import statistics

    import torch

    import engine
    from engine import nn as enn
    from engine import optim as eoptim
    from engine.data import DataLoader, load_dataset

    torch.set_num_threads(args.threads)
    engine.set_num_threads(args.threads)
    engine.manual_seed(args.seed)
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir).subset(slice(0, args.batch_size * steps))
    batches = list(DataLoader(train, args.batch_size, shuffle=True))
    model, loss = engine.models.get_model(args.model), enn.CrossEntropyLoss()
    tmodel = build(torch, args.model)
    tmodel.load_state_dict({k: torch.from_numpy(engine.to_numpy(v).copy()) for k, v in model.state_dict().items()})
    opt = eoptim.Adam(model.parameters(), lr=args.lr)
    topt = torch.optim.Adam(tmodel.parameters(), lr=args.lr)
    tbatches = [(torch.from_numpy(engine.to_numpy(x).copy()), torch.from_numpy(engine.to_numpy(y).copy()))
                for x, y in batches]
    layers, tlayers = list(model), list(tmodel)
    names = [type(layer).__name__ for layer in layers]
    keys = ["loss forward", "loss backward", "optimizer step", "step total"]
    times = {side: {"fwd": [[] for _ in layers], "bwd": [[] for _ in layers], **{k: [] for k in keys}}
             for side in ("engine", "torch")}

    def step(side, mods, optimizer, x, y, criterion, record):
        clock = time.perf_counter
        t_step = clock()
        stamps = [None] * len(mods)
        fwd = []
        optimizer.zero_grad()
        h = x
        for i, layer in enumerate(mods):
            t = clock()
            h = layer(h)
            fwd.append(clock() - t)
            if h.requires_grad:
                h.register_hook(lambda g, i=i: stamps.__setitem__(i, clock()))
        t = clock()
        value = criterion(h, y)
        t_loss = clock() - t
        t_bwd = clock()
        value.backward()
        t_end = clock()
        float(value.detach())
        t = clock()
        optimizer.step()
        t_opt = clock() - t
        total = clock() - t_step
        if not record:
            return
        rec = times[side]
        for i in range(len(mods)):
            rec["fwd"][i].append(fwd[i])
            later = t_end if i == 0 else stamps[i - 1]
            rec["bwd"][i].append(later - stamps[i] if stamps[i] is not None and later is not None else float("nan"))
        rec["loss forward"].append(t_loss)
        rec["loss backward"].append((stamps[-1] if stamps[-1] is not None else t_end) - t_bwd)
        rec["optimizer step"].append(t_opt)
        rec["step total"].append(total)

    tloss = torch.nn.CrossEntropyLoss()
    for record in (False, True):
        for (x, y), (tx, ty) in zip(batches, tbatches):
            step("engine", layers, opt, x, y, loss, record)
            step("torch", tlayers, topt, tx, ty, tloss, record)
    med = lambda v: statistics.median(v) * 1e3
    print(f"{args.model}, batch {args.batch_size}, engine numpy backend vs torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), one step of each in turn, medians of {steps} steps; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'layer':22s} {'engine fwd':>10s} {'bwd':>8s} {'torch fwd':>10s} {'bwd':>8s} {'engine/torch':>12s}")
    e, t = times["engine"], times["torch"]
    for i, name in enumerate(names):
        ef, eb, tf, tb = med(e["fwd"][i]), med(e["bwd"][i]), med(t["fwd"][i]), med(t["bwd"][i])
        ratio = (ef + eb) / (tf + tb) if tf + tb > 0 else float("nan")
        print(f"{i:2d} {name:19s} {ef:10.3f} {eb:8.3f} {tf:10.3f} {tb:8.3f} {ratio:12.2f}")
    for key in keys:
        em, tm = med(e[key]), med(t[key])
        print(f"   {key:19s} {em:10.3f} {'':8s} {tm:10.3f} {'':8s} {em / tm if tm else float('nan'):12.2f}")
    print("(ms; a layer's bwd runs from the gradient of its output to that of its input, from hooks; "
          "step total is timed around the whole step, hooks included)")
    return 0


def compare_steps(args):
    """Median time per training step (forward, backward, Adam) of both, interleaved."""
    import statistics

    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    import engine
    from engine import nn as enn
    from engine import optim as eoptim
    from engine.data import DataLoader, load_dataset
    from engine.models import simple_cnn

    torch.set_num_threads(args.threads)
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir).subset(slice(0, 64 * args.compare_steps))
    engine.manual_seed(args.seed)
    batches = list(DataLoader(train, args.batch_size, shuffle=True))
    tbatches = [(torch.from_numpy(engine.to_numpy(x)), torch.from_numpy(engine.to_numpy(y))) for x, y in batches]
    model, loss = engine.models.get_model(args.model), enn.CrossEntropyLoss()
    opt = eoptim.Adam(model.parameters(), lr=args.lr)
    tmodel = build(torch, args.model)
    topt = torch.optim.Adam(tmodel.parameters(), lr=args.lr)

    def engine_block():
        start = time.perf_counter()
        for x, y in batches:
            opt.zero_grad()
            value = loss(model(x), y)
            value.backward()
            opt.step()
            float(value)
        return (time.perf_counter() - start) / len(batches)

    def torch_block():
        start = time.perf_counter()
        for x, y in tbatches:
            topt.zero_grad()
            value = torch.nn.functional.cross_entropy(tmodel(x), y)
            value.backward()
            topt.step()
            value.item()
        return (time.perf_counter() - start) / len(tbatches)

    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); numpy {np.__version__}, "
          f"BLAS {', '.join(blas)}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    threads = [int(t) for t in str(args.engine_threads).split(",")]
    times = {f"engine({t} BLAS threads)": [] for t in threads}
    times["torch"] = []
    engine_block()
    torch_block()  # warm-up
    for _ in range(args.rounds):
        for t in threads:
            with threadpool_limits(limits=t, user_api="blas"):
                times[f"engine({t} BLAS threads)"].append(engine_block())
        times["torch"].append(torch_block())
    ref = statistics.median(times["torch"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:26s} median {med * 1e3:7.1f} ms/step  (rounds: "
              f"{', '.join(f'{v * 1e3:.0f}' for v in values)})  {med / ref:.2f}x torch  "
              f"-> {med * 60000 / args.batch_size:.0f} s per 60k-image epoch")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
