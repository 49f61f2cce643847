"""``python -m engine.bench.distributed`` (or ``python -m engine.bench --suite distributed``):
what one data-parallel training step costs per world size, and how much of it is
communication.

For each configuration (world size x threads per rank) the bench launches
``mpiexec -n W python -m mpi4py -m engine.bench.distributed --worker`` (a world
of one runs without mpiexec). Every rank builds the same model, wraps its
optimizer in ``DistributedOptimizer`` and times ``--steps`` training steps on
synthetic data with ``global batch / W`` samples each:

* ``compute``: zero_grad, forward, loss, backward (this rank's share);
* ``wait``: a barrier: how long this rank waits for the slowest one's compute
  (load imbalance; in training it is paid inside the allreduce);
* ``sync``: ``DistributedOptimizer.synchronize()``: pack the gradients into the
  fused buffer, one allreduce, divide, unpack: the communication itself;
* ``update``: the optimizer step.

A step's time is the slowest rank's; rows give medians over steps. Before
the steps, the bare allreduce of the fused buffer (the model's gradient count,
float32) and of a few other sizes is timed alone (median of ``--repeat``
calls), to separate latency from bandwidth. Configurations run in alternating
rounds (``--rounds``), so that a noisy machine hurts each alike. Each run
checks that the replicas are bit-identical after its steps and that an
allreduce of known values sums right; a failed check is marked WRONG.

    python -m engine.bench.distributed --world-sizes 1 2 --save bench/results/distributed-cpu
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALLREDUCE_SIZES = (1_024, 16_384, 131_072, 1_048_576)


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.bench.distributed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2], metavar="W",
                   help="ranks per configuration (default: 1 2)")
    p.add_argument("--threads", type=int, nargs="+", default=None, metavar="T",
                   help="threads per rank (BLAS and the engine's loops) for each world size; default: the usable "
                        "cores divided by W, plus a 1-rank run on one thread when W=1 would use more")
    p.add_argument("--model", default="simple_cnn", help="a model of engine.models (default: simple_cnn)")
    p.add_argument("--global-batch", type=int, default=64, help="samples per step over all ranks (default 64)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--repeat", type=int, default=30, help="calls per bare allreduce size (default 30)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the configurations (default 2)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--backend", default="numpy", help="numpy (default) or cupy (one rank per GPU)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per launch before it is killed")
    p.add_argument("--save", metavar="PREFIX", help="write PREFIX.json and PREFIX.txt")
    p.add_argument("--json", metavar="FILE", help="write the rows and machine facts as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


# ----------------------------------------------------------------------------- one rank
def _median(values):
    values = sorted(values)
    n = len(values)
    return 0.5 * (values[(n - 1) // 2] + values[n // 2]) if n else float("nan")


def worker(args) -> int:
    import numpy as np

    import engine
    from engine import distributed as dist

    w = dist.init()
    engine.set_backend(args.backend)
    if args.backend == "cupy":
        dist.use_local_device()
    backend = engine.backends.get(args.backend)
    xp = backend.xp
    engine.manual_seed(0)
    model = engine.models.get_model(args.model, dtype=args.dtype)
    shape = engine.models.INPUT_SHAPES[args.model]
    local = args.global_batch // w.size
    optimizer = dist.DistributedOptimizer(engine.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), model)
    comm = optimizer.communicator
    n_grad = sum(int(np.prod(p.shape)) for p in model.parameters())

    def bare_allreduce(size):
        buf = xp.ones((size,), dtype=backend.dtype(args.dtype))
        times = []
        for i in range(args.repeat + 3):
            w.barrier()
            backend.synchronize()
            t = time.perf_counter()
            comm.allreduce_(buf, "sum")
            backend.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - t)
        return _median(times), min(times)

    sizes = sorted(set(ALLREDUCE_SIZES) | {n_grad})
    bare_allreduce(sizes[-1])  # connections and buffers set up before anything is timed
    bare = {str(s): bare_allreduce(s) for s in sizes}
    allreduce_ms = {k: 1e3 * v[0] for k, v in bare.items()}
    allreduce_min_ms = {k: 1e3 * v[1] for k, v in bare.items()}
    check = dist.allreduce(np.full(3, float(w.rank + 1)), "sum")
    allreduce_right = bool(np.all(check == w.size * (w.size + 1) / 2))

    rng = np.random.default_rng(100 + w.rank)
    x = backend.asarray(rng.random((local,) + tuple(shape)), dtype=backend.dtype(args.dtype))
    classes = 10
    y = backend.asarray(rng.integers(0, classes, local), dtype=backend.dtype("int64"))
    loss_fn = engine.nn.CrossEntropyLoss()
    phases = {"compute": [], "wait": [], "sync": [], "update": [], "step": []}
    for i in range(args.warmup + args.steps):
        w.barrier()
        backend.synchronize()
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        backend.synchronize()
        t1 = time.perf_counter()
        w.barrier()
        t1b = time.perf_counter()
        optimizer.synchronize()
        backend.synchronize()
        t2 = time.perf_counter()
        optimizer.step()
        backend.synchronize()
        t3 = time.perf_counter()
        if i >= args.warmup:
            for key, value in (("compute", t1 - t0), ("wait", t1b - t1), ("sync", t2 - t1b), ("update", t3 - t2),
                               ("step", t3 - t0)):
                phases[key].append(value)
    # the slowest rank sets each step's pace
    slowest = {k: w.allreduce_host(np.array(v, dtype=np.float64), "max") for k, v in phases.items()}
    agree = dist.replicas_agree(model)
    if w.rank == 0:
        from engine.bench import machine
        row = {"world_size": w.size, "threads_per_rank": int(os.environ.get("ENGINE_NUM_THREADS", "0") or 0),
               "local_batch": local, "global_batch": args.global_batch, "model": args.model, "dtype": args.dtype,
               "backend": args.backend, "communicator": comm.name, "gradient_values": n_grad,
               "launcher": w.launcher, "steps": args.steps,
               "median_ms": {k: 1e3 * _median(v.tolist()) for k, v in slowest.items()},
               "allreduce_ms": allreduce_ms, "allreduce_min_ms": allreduce_min_ms, "replicas_agree": agree,
               "allreduce_right": allreduce_right,
               "load_average": machine.load_average()}
        Path(args.out).write_text(json.dumps(row))
    return 0


# ----------------------------------------------------------------------------- the GPU script's stage
def gpu_stage(dry: bool) -> dict:
    """The ``nccl`` stage of bench/gpu_run.sh (one GPU: a world of one rank).

    On the GPU: NCCL made for one rank (the unique id path, no MPI needed), its
    allreduce (sum, mean, max) and broadcast on a buffer the size of
    SimpleCNN's gradients, timed with CUDA events; the host-staged path on the
    same buffer; five SGD steps of SimpleCNN through a DistributedOptimizer on
    that NCCL communicator against the same steps with the plain optimizer
    (bit-identical: a one-rank sum is the identity); SyncBatchNorm against
    BatchNorm2d on CuPy. ``dry``: the same code on NumPy with the local
    communicator (construction only: no NCCL, numbers meaningless).
    """
    import numpy as np

    import engine
    from engine import distributed as dist
    from engine.distributed import communicators

    backend = engine.backends.get("numpy" if dry else "cupy")
    w = dist.init()
    out = {"nccl_reason": "dry run: no GPU" if dry else communicators.nccl_unavailable_reason()}
    if dry or out["nccl_reason"] is not None:
        comm = communicators.LocalCommunicator(w)
    else:
        comm = communicators.communicator_for(w, backend, prefer="nccl")
    out["communicator"] = comm.name
    if not dry:
        import cupy
        out["nccl_version"] = getattr(cupy.cuda.nccl, "get_version", lambda: None)() if comm.name == "nccl" else None
    engine.manual_seed(0)
    size = 421_642
    host = np.random.default_rng(1).standard_normal(size).astype(np.float32)
    checks = {}
    for op, expected in (("sum", host), ("mean", host), ("max", host)):
        buf = backend.asarray(host)
        comm.allreduce_(buf, op)
        checks[f"allreduce_{op}"] = bool(np.array_equal(backend.to_numpy(buf), expected))
    buf = backend.asarray(host)
    comm.broadcast_(buf, 0)
    checks["broadcast"] = bool(np.array_equal(backend.to_numpy(buf), host))
    staged = communicators.StagedCommunicator(w, backend)
    buf = backend.asarray(host)
    staged.allreduce_(buf, "sum")
    checks["staged_allreduce"] = bool(np.array_equal(backend.to_numpy(buf), host))

    def timed(fn, reps=20):
        for _ in range(3):
            fn()
        backend.synchronize()
        if dry:
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            return 1e3 * (time.perf_counter() - t) / reps
        import cupy
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / reps
    buf = backend.asarray(host)
    out["allreduce_ms"] = timed(lambda: comm.allreduce_(buf, "sum"))
    out["staged_allreduce_ms"] = timed(lambda: staged.allreduce_(buf, "sum"), reps=5)

    with engine.use_backend(backend.name):
        rng = np.random.default_rng(2)
        x = backend.asarray(rng.random((32, 1, 28, 28)), dtype=backend.dtype("float32"))
        y = backend.asarray(rng.integers(0, 10, 32), dtype=backend.dtype("int64"))
        finals, step_ms = [], []
        for wrapped in (False, True):
            engine.manual_seed(0)
            model = engine.models.simple_cnn()
            model.eval()  # no dropout: the two runs must take the same steps
            optimizer = engine.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            if wrapped:
                optimizer = dist.DistributedOptimizer(optimizer, model, communicator=comm)

            def step():
                optimizer.zero_grad()
                engine.nn.CrossEntropyLoss()(model(x), y).backward()
                optimizer.step()
            step_ms.append(timed(step, reps=5))
            finals.append([backend.to_numpy(p.data) for p in model.parameters()])
        checks["optimizer_matches_plain"] = all(np.array_equal(a, b) for a, b in zip(*finals))
        out["step_ms"] = {"plain": step_ms[0], "distributed": step_ms[1]}
        ref, sync = engine.nn.BatchNorm2d(8), engine.nn.SyncBatchNorm(8)
        xb = rng.standard_normal((16, 8, 6, 6)).astype(np.float32)
        outputs = []
        for m in (ref, sync):
            xt = engine.Tensor(backend.asarray(xb), requires_grad=True)
            yt = m(xt)
            yt.backward(backend.asarray(np.ones_like(xb)))
            outputs.append((backend.to_numpy(yt.data), backend.to_numpy(xt.grad)))
        checks["sync_batchnorm_matches"] = all(np.allclose(a, b, rtol=1e-5, atol=1e-5)
                                               for a, b in zip(*outputs))
    out["checks"] = checks
    print(f"nccl stage: communicator {comm.name}"
          + (f" (NCCL unusable: {out['nccl_reason']})" if out["nccl_reason"] else "")
          + f"; allreduce of {size:,} float32 {out['allreduce_ms']:.3f} ms, host-staged "
          f"{out['staged_allreduce_ms']:.3f} ms; SimpleCNN batch-32 step plain {step_ms[0]:.2f} ms, "
          f"DistributedOptimizer {step_ms[1]:.2f} ms; checks {checks}" + (" [DRY RUN: meaningless]" if dry else ""))
    return out


# ----------------------------------------------------------------------------- the launcher
def _configurations(args, cores):
    configs = []
    for size in args.world_sizes:
        if args.threads:
            configs += [(size, t) for t in args.threads]
        else:
            configs.append((size, max(1, cores // size)))
            if size == 1 and cores > 1:
                configs.append((1, 1))
    return sorted(set(configs), key=lambda c: (c[0], -c[1]))


def _launch(args, size, threads, out):
    env = dict(os.environ, ENGINE_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    worker_args = ["--worker", "--out", str(out), "--model", args.model, "--global-batch", str(args.global_batch),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--repeat", str(args.repeat),
                   "--dtype", args.dtype, "--backend", args.backend]
    module = [sys.executable, "-m", "engine.bench.distributed", *worker_args]
    if size == 1:
        command = module
    else:
        mpiexec = _mpiexec()
        if mpiexec is None:
            return 'no mpiexec on PATH (pip install ".[mpi]")'
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root unless told twice
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        oversubscribe = ["--oversubscribe"] if "Open MPI" in _mpi_flavour(mpiexec) else []
        command = [mpiexec, *oversubscribe, "-n", str(size), sys.executable, "-m", "mpi4py", *module[1:]]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"timed out after {args.timeout:.0f} s"
    if done.returncode != 0:
        return f"exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return None


def _mpi_flavour(mpiexec) -> str:
    try:
        return subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _table(rows, emit):
    base = next((r for r in rows if r["world_size"] == 1 and not r.get("error")), None)
    versus = f"vs 1x{base['threads_per_rank']}" if base else "vs 1 rank"
    emit(f"{'ranks':>5} {'thr/rank':>8} {'batch/rank':>10} {'step ms':>8} {'compute':>8} {'wait':>7} {'sync':>7} "
         f"{'update':>7} {'sync %':>6} {'allreduce ms':>12} {'samples/s':>9} {versus:>9}  check")
    for r in rows:
        if r.get("error"):
            emit(f"{r['world_size']:>5} {r['threads_per_rank']:>8}  ERROR {r['error']}")
            continue
        m = r["median_ms"]
        bare = r["allreduce_ms"][str(r["gradient_values"])]
        rate = r["global_batch"] / (m["step"] / 1e3)
        speedup = (base["median_ms"]["step"] / m["step"]) if base else float("nan")
        ok = "ok" if r["replicas_agree"] and r["allreduce_right"] else "WRONG"
        emit(f"{r['world_size']:>5} {r['threads_per_rank']:>8} {r['local_batch']:>10} {m['step']:>8.2f} "
             f"{m['compute']:>8.2f} {m['wait']:>7.3f} {m['sync']:>7.3f} {m['update']:>7.2f} "
             f"{100 * m['sync'] / m['step']:>5.1f}% "
             f"{bare:>12.3f} {rate:>9.0f} {speedup:>8.2f}x  {ok}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    from . import machine
    bad = [w for w in args.world_sizes if w < 1 or args.global_batch % w]
    if bad:
        print(f"python -m engine.bench.distributed: --global-batch {args.global_batch} must divide evenly over "
              f"every world size (not {bad})", file=sys.stderr)
        return 2
    cores = machine.usable_cores()
    configs = _configurations(args, cores)
    text = []

    def emit(s=""):
        print(s, flush=True)
        text.append(s)

    facts = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_model": machine._cpu_model(),
             "cpu_usable": cores, "load_average_start": machine.load_average(), "python": sys.version.split()[0],
             "command": "python -m engine.bench.distributed " + " ".join(argv if argv is not None else sys.argv[1:]),
             "mpiexec": _mpiexec(), "mpi_version": (_mpi_flavour(_mpiexec()) or "").splitlines()[:1] if _mpiexec()
             else None, "git_commit": machine._git("rev-parse", "--short", "HEAD")}
    emit(facts["command"])
    emit(f"{args.model} {args.dtype} on {args.backend}, global batch {args.global_batch}; {args.steps} steps after "
         f"{args.warmup} warm-up, {args.rounds} round(s) over {len(configs)} configuration(s); CPU "
         f"{facts['cpu_model']} ({cores} usable cores); load average {facts['load_average_start']}; "
         f"MPI {facts['mpi_version']}")
    runs: dict = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for size, threads in (configs if round_ % 2 == 0 else configs[::-1]):
                out = Path(tmp) / f"w{size}-t{threads}-r{round_}.json"
                error = _launch(args, size, threads, out)
                runs[(size, threads)].append({"error": error} if error else json.loads(out.read_text()))
    rows = []
    for (size, threads), results in runs.items():
        good = [r for r in results if not r.get("error")]
        if not good:
            rows.append({"world_size": size, "threads_per_rank": threads, "error": results[0]["error"]})
            continue
        row = dict(good[0])
        row["threads_per_rank"] = threads
        row["median_ms"] = {k: _median([r["median_ms"][k] for r in good]) for k in good[0]["median_ms"]}
        row["allreduce_ms"] = {k: _median([r["allreduce_ms"][k] for r in good]) for k in good[0]["allreduce_ms"]}
        row["allreduce_min_ms"] = {k: min(r["allreduce_min_ms"][k] for r in good) for k in good[0]["allreduce_min_ms"]}
        row["replicas_agree"] = all(r["replicas_agree"] for r in good)
        row["allreduce_right"] = all(r["allreduce_right"] for r in good)
        row["rounds"] = [r["median_ms"]["step"] for r in good]
        rows.append(row)
    emit("")
    _table(rows, emit)
    emit("")
    emit(f"bare allreduce of {args.dtype} buffers, sum in place (median ms / fastest call ms):")
    for r in rows:
        if not r.get("error") and r["world_size"] > 1:
            emit(f"  {r['world_size']} ranks x {r['threads_per_rank']} thread(s), {r['communicator']}: "
                 + ", ".join(f"{int(k):,} values {v:.3f} / {r['allreduce_min_ms'][k]:.3f}"
                             for k, v in sorted(r["allreduce_ms"].items(), key=lambda kv: int(kv[0]))))
    facts["load_average_end"] = machine.load_average()
    emit(f"load average at the end {facts['load_average_end']}")
    wrong = sum(1 for r in rows if r.get("error") or not (r["replicas_agree"] and r["allreduce_right"]))
    json_path = args.json or (args.save + ".json" if args.save else None)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save + ".txt").write_text("\n".join(text) + "\n")
    if json_path:
        Path(json_path).write_text(json.dumps({"facts": facts, "rows": rows}, indent=1) + "\n")
    return 3 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
