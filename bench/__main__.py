"""``python -m engine.bench``: time the engine's conv2d paths, max pooling and a whole
training step against PyTorch and the bare GEMM; see ``--help``.

In a source checkout, ``python -m bench`` from the repository root runs the same."""
from __future__ import annotations

import sys

if __package__ != "engine.bench":  # `python -m bench` from the repository root: the package's real name runs
    import runpy
    runpy.run_module("engine.bench", run_name="__main__", alter_sys=True)
    sys.exit(0)  # not reached: the bench exits with its own status

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from . import machine  # noqa: E402
from .suites import ALL_OPS, OP_HELP, SUITES

EXIT_BAD_PATH = 3
EXIT_NO_DATA = 4  # the epoch suite's dataset is not installed

DESCRIPTION = """\
Time the engine's conv2d paths (naive, strided, gemm, and on CuPy the generic
slicing im2col against the RawKernel one), max pooling, and a whole SimpleCNN
training step, beside PyTorch (when installed) and the bare GEMM of the same
M.N.K, on one backend.

Every path's output is checked against a float64 reference (PyTorch on the CPU,
else the engine's gemm path in float64) before it is timed; a wrong path is
reported as WRONG with its error and not timed. Paths are timed round-robin
(interleaved) after a warm-up; rows give median, min and max. On CuPy, calls are
timed with CUDA events and the first call (kernel compilation) is reported apart.
"""

EPILOG = """\
suites:
  quick   about a minute on 2 CPU cores: SimpleCNN's convs, LeNet C3, NumPy-course
          conv2, one pool, the training step; naive only where it is cheap
  full    the five core shapes, LeNet-5 C1/C3/C5, the NumPy-course 3-conv net,
          pools, the training step; naive estimated from a smaller batch where
          it would take too long (rows marked est., times marked ~; on CPU
          backends only: on a GPU naive runs only with --paths naive, for real)
  sweep   53 layers of real networks (LeNet, VGG, ResNet, MobileNet, EfficientNet,
          ConvNeXt, AlexNet, Inception, DeepLab): kernel 1, 3, 5, 7, 1x7, 7x1; stride 1,
          2; dilation 2; groups 1, 2, C (depthwise); channels 1..1024; spatial 7..224;
          batch 1, 8, 64, 128. Forward, dx, dW, forward+backward, engine gemm vs
          PyTorch, each point checked against float64 first; then a summary
          (geometric mean of engine/PyTorch, worst point, points worse than 1.3x),
          also in the JSON (meta.summary) and CSV ('# summary.*' lines). Under 10 min
          on 2 cores (236 s measured, most of it the depthwise backward)
  scaling batch size 1..256 on SimpleCNN.conv2, then image size 8..128 at batch 8
  epoch   one Fashion-MNIST training epoch (60k images, batch 64, Adam lr 1e-3) of
          LeNet-5 and SimpleCNN: engine.fit with the engine's DataLoader against the
          PyTorch twin (same initial weights) in its own loop, one epoch each in turn,
          3 timed rounds after each side's first epoch; median seconds, engine/PyTorch
          and the test accuracy of both after. Minutes; --epoch-samples N for a quick
          look. Needs the dataset installed (never downloads)
  core    the core issue: conv forward and forward+backward vs PyTorch on the same
          threads for the five core shapes, with PASS/MISS against the targets
          (engine <= 1.25x PyTorch; conv forward <= 1.3x the bare GEMM)
  layers  batch-1 inference latency of the zoo models (simple_cnn, lenet5,
          course_cnn on 1x28x28; resnet20, vgg11_bn on 3x32x32) and a ResNet-18 on
          one 3x224x224 image, eval mode under no_grad, against the same model in
          PyTorch (weights loaded from the engine's state_dict); the SimpleCNN
          training step (batch 64); with the same summary as sweep
  smoke   tiny shapes, every op: for tests
  sweep-smoke  the sweep's ops and summary on tiny shapes (groups, depthwise,
          dilation, 1x7/7x1): for tests
  distributed  a data-parallel training step per world size (mpiexec): compute,
          gradient allreduce and update times; python -m engine.bench.distributed
          --help for its own options (--save/--json/--repeat/--dtype pass through)

ops: """ + "; ".join(f"{k} = {v}" for k, v in OP_HELP.items()) + """

every run on numpy measures the float32 FMA peak first (kernels/cpu_peak.c) and
prints it as a roofline line; conv rows give %peak against it (--no-peak skips).

exit status: 0, or 3 when some path was WRONG or raised (the run still completes
and writes every file), 2 for a usage error or an unusable backend, 4 when the
epoch suite's dataset is not installed.

examples:
  python -m engine.bench --suite quick
  python -m engine.bench --suite core --json bench/results/core.json
  python -m engine.bench --suite full --save bench/results/cpu-full
  python -m engine.bench --backend cupy --suite full --save $OUT/gpu-full
  python -m engine.bench --suite quick --ops conv2d_fwd --paths gemm torch --shape 32,64,32,128,3,1,1
  python -m engine.bench --suite epoch --save /tmp/epoch/epoch1
  python -m engine.bench --suite epoch --epoch-models lenet5 --epoch-samples 6400 --repeat 3
"""


def _list(values):
    out = []
    for v in values or []:
        out += [p for p in v.replace(",", " ").split() if p]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.bench", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "array_api_strict"],
                   help="array backend whose paths are timed (default: numpy). The peer is PyTorch on the CPU "
                        "for numpy, PyTorch CUDA/cuDNN (TF32 off) for cupy.")
    p.add_argument("--suite", default="quick", choices=SUITES,
                   help="which shapes and ops (default: quick; see below)")
    p.add_argument("--ops", nargs="+", metavar="OP",
                   help=f"ops to run, space or comma separated (default: the suite's). Choices: {', '.join(ALL_OPS)}")
    p.add_argument("--paths", nargs="+", metavar="PATH",
                   help="paths to time (default: naive strided gemm pairs gemm-blas generic torch; on cupy strided "
                        "gemm pairs gemm-slicing generic torch: naive only when named, and never estimated). "
                        "Choices: naive, strided, gemm, gemm-slicing (the generic slicing im2col/col2im of "
                        "backends.base bound onto the backend), generic (the same for max pooling), torch "
                        "(the PyTorch peer). The bare GEMM and max pooling's 'engine' path are always timed.")
    p.add_argument("--shape", action="append", metavar="N,C,H,O,k,s,p",
                   help="replace the suite's conv shapes by this one (repeatable); also N,C,H,W,O,k,s,p; "
                        "k and p may be AxB (height x width: 1x7, 0x3), then optional d=DILATION, g=GROUPS: "
                        "8,128,17,128,1x7,1,0x3 or 8,64,56,64,3,1,1,g=64")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="timed rounds per case after the warm-up (default: the suite's, 5; core 7)")
    p.add_argument("--warmup", type=int, metavar="N",
                   help="untimed rounds first (default 1; epoch: 0, each side's first epoch is its checked first "
                        "call and is reported apart)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="dtype of every path (default float32); the reference is always float64")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for NumPy's BLAS, the engine's own loops and PyTorch alike (default: the "
                        "usable CPU cores). Set through the *_NUM_THREADS variables before NumPy loads, "
                        "threadpoolctl (if installed), engine.set_num_threads and torch.set_num_threads; "
                        "the report says which took effect.")
    p.add_argument("--json", metavar="FILE", help="write rows and machine facts as JSON")
    p.add_argument("--csv", metavar="FILE", help="write rows as CSV, machine facts as leading '# key: value' lines")
    p.add_argument("--plot", metavar="FILE.png",
                   help="plot speed-ups (and sweep curves) to a PNG; needs matplotlib")
    p.add_argument("--save", metavar="PREFIX",
                   help="shorthand: PREFIX.json, PREFIX.csv, PREFIX.txt (this table) and, when matplotlib is "
                        "installed, PREFIX.png")
    p.add_argument("--epoch-samples", type=int, metavar="N",
                   help="epoch suite: train on the first N training images only (default: the whole split)")
    p.add_argument("--epoch-models", nargs="+", metavar="MODEL",
                   help="epoch suite: which models (default: lenet5 simple_cnn); any engine.models model with "
                        "1x28x28 input (lenet5, simple_cnn, course_cnn)")
    p.add_argument("--epoch-dataset", metavar="NAME",
                   help="epoch suite: the built-in dataset (default fashion-mnist; mnist, mnist5k)")
    p.add_argument("--epoch-data-dir", metavar="DIR",
                   help="epoch suite: a folder holding the dataset's files (as engine.data.load_dataset's data_dir)")
    p.add_argument("--no-torch", action="store_true",
                   help="act as if PyTorch were not installed (no peer; reference = engine gemm float64)")
    p.add_argument("--no-peak", action="store_true",
                   help="skip the FMA-peak measurement (the roofline line and the %%peak column, ~1-2 s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.add_argument("--inject-broken", action="store_true", help=argparse.SUPPRESS)  # tests: a WRONG path
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.suite == "distributed":  # its own launcher: bench/distributed.py
        return _distributed(args)
    threads = args.threads if args.threads else machine.usable_cores()
    env_before = {}
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        env_before = machine.set_thread_env(args.threads)  # effective only if NumPy is not loaded yet
    env_before.update(machine.set_spin_limits(threads, peer=not args.no_torch))
    try:
        return _main(parser, args, argv, threads)
    finally:
        machine.restore_env(env_before)


def _distributed(args) -> int:
    from . import distributed
    passed = [*(["--save", args.save] if args.save else []), *(["--json", args.json] if args.json else []),
              *(["--steps", str(args.repeat)] if args.repeat else []), "--dtype", args.dtype, "--backend", args.backend]
    return distributed.main(passed)


def _sigterm(signum, frame):  # `timeout` sends SIGTERM: still write what was measured
    raise KeyboardInterrupt


def _blas_kernels(facts) -> str:
    """' (Haswell kernels, forced by OPENBLAS_CORETYPE=Haswell)': which kernels the BLAS
    runs and whether the environment forced them (it changes GEMM speed ~2x)."""
    archs = [p.get("architecture") for p in (facts.get("threadpools") or [])
             if p.get("user_api") == "blas" and p.get("architecture")]
    if not archs:
        return ""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f" ({archs[0]} kernels, " + (f"forced by OPENBLAS_CORETYPE={forced})" if forced else "detected)")


def _main(parser, args, argv, threads) -> int:
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    ops = _list(args.ops)
    bad = [o for o in ops if o not in ALL_OPS]
    if bad:
        parser.error(f"unknown op(s) {', '.join(bad)}; choose from {', '.join(ALL_OPS)}")
    from .report import plot_available
    want_plot = bool(args.plot)
    if want_plot and plot_available():
        parser.error(plot_available())

    # heavy imports only now, after the thread variables
    from . import suites
    from .ops import PATH_CHOICES, default_paths

    suite = suites.get_suite(args.suite)
    paths = _list(args.paths) or list(suite.paths or default_paths(args.backend))
    bad = [p for p in paths if p not in PATH_CHOICES]
    if bad:
        parser.error(f"unknown path(s) {', '.join(bad)}; choose from {', '.join(PATH_CHOICES)}")
    try:
        shapes_override = [suites.parse_shape(s) for s in args.shape or []]
    except ValueError as exc:
        parser.error(str(exc))
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be >= 0")
    _epoch_options(parser, args, suite)
    if suite.epochs and any(op in suites.EPOCH_OPS for op in (ops or suite.ops)):
        from .ops import epoch_data_problem
        problem = epoch_data_problem(suite.epochs)
        if problem:
            print(f"python -m engine.bench --suite {suite.name}: {problem}", file=sys.stderr)
            return EXIT_NO_DATA

    settings = machine.ThreadSettings(threads).apply()
    try:
        return _run(args, argv, settings, suite, paths, shapes_override, ops)
    finally:
        settings.restore()


def _epoch_options(parser, args, suite) -> None:
    """Apply --epoch-samples/--epoch-models/--epoch-dataset/--epoch-data-dir to the suite's epochs."""
    from dataclasses import replace

    from . import suites
    given = [args.epoch_samples is not None, args.epoch_models, args.epoch_dataset, args.epoch_data_dir]
    if not any(given):
        return
    if args.epoch_samples is not None and args.epoch_samples < 1:
        parser.error("--epoch-samples must be >= 1")
    epochs = list(suite.epochs or suites.EPOCH_MODELS)
    if args.epoch_models:
        from engine.models import INPUT_SHAPES
        by_model = {s.model: s for s in epochs}
        chosen = []
        for name in _list(args.epoch_models):
            if INPUT_SHAPES.get(name) != (1, 28, 28):
                parser.error(f"--epoch-models: {name!r} is not an engine.models model with 1x28x28 input; "
                             f"choose from {', '.join(m for m, shp in INPUT_SHAPES.items() if shp == (1, 28, 28))}")
            chosen.append(by_model.get(name) or suites.EpochShape(f"{name} Fashion-MNIST", name))
        epochs = chosen
    changes = {}
    if args.epoch_samples is not None:
        changes["samples"] = args.epoch_samples
    if args.epoch_dataset:
        changes["dataset"] = args.epoch_dataset
    if args.epoch_data_dir:
        changes["data_dir"] = args.epoch_data_dir
    epochs = [replace(s, **changes) for s in epochs]
    if args.epoch_dataset and args.epoch_dataset != "fashion-mnist":
        epochs = [replace(s, name=s.name.replace("Fashion-MNIST", args.epoch_dataset)) for s in epochs]
    suite.epochs = epochs


def _run(args, argv, settings, suite, paths, shapes_override, ops) -> int:
    from . import harness, report, suites
    from .ops import Env, build_case
    try:
        env = Env(args.backend, args.dtype, paths, inject_broken=args.inject_broken, use_torch=not args.no_torch)
    except RuntimeError as exc:  # BackendUnavailableError: says why and how to fix it
        print(f"python -m engine.bench: backend {args.backend!r} is not usable here: {exc}", file=sys.stderr)
        return 2

    if shapes_override:
        suite.conv = shapes_override
    ops = ops or list(suite.ops)
    policy = harness.Policy(warmup=suite.warmup if args.warmup is None else args.warmup,
                            repeat=args.repeat or suite.repeat,
                            **harness.naive_policy(suite.naive_real_s, suite.naive_estimate,
                                                   env.backend.host_memory))
    env.bare_gemm = suite.bare_gemm
    work = []
    for op in ops:
        work += [(op, s) for s in suite.shapes_for(op)]

    meta = machine.collect(args.backend, settings, argv)
    if args.backend == "numpy":
        from ..kernels import native
        meta["native_kernels"] = native.status()
    meta.update(
        suite=suite.name, suite_description=suite.description, ops=ops, paths=paths, dtype=args.dtype,
        repeat=policy.repeat, warmup=policy.warmup, threads=meta["threads"],
        timing=("CUDA events per call (cupy.cuda.Event; torch.cuda.Event for the torch peer), interleaved"
                if args.backend == "cupy" else "time.perf_counter per call, interleaved round-robin"),
        reference=env.reference_name, tolerance=env.tol, peer=env.peer_name or env.torch_note,
        conv_dx_method=("dx alone = conv2d_backward(..., need_weight_grad=False, has_bias=False), the "
                        "engine's own dx path (strided: col2im of tensordot(W, g) per group); checked against "
                        "the reference dx"),
        workspace_bytes_default=env.backend.workspace_bytes(), complete=False)

    text = []

    def emit(s=""):
        print(s, flush=True)
        text.append(s)

    emit(f"python -m engine.bench {' '.join(argv)}")
    emit(f"backend {args.backend} {args.dtype}; suite {suite.name}: {suite.description}")
    emit(f"CPU {meta['cpu_model']}" + (f" ({meta['cpu_family_model']})" if meta.get("cpu_family_model") else "")
         + f" ({meta['cpu_usable']} usable cores); BLAS "
         f"{(meta['blas'].get('blas') or {}).get('name') if isinstance(meta['blas'].get('blas'), dict) else '?'} "
         f"threads={settings.facts().get('blas_threads', 'unverified')}{_blas_kernels(settings.facts())}; torch threads "
         f"{settings.facts().get('torch_threads')}; engine host threads "
         f"{settings.facts().get('engine_host_threads')}, malloc tuned {settings.facts().get('malloc_tuned')}; "
         f"load average {meta['load_average_start']}"
         + "".join(f"; {v}={os.environ[v]}" for v in machine.SPIN_LIMITS if os.environ.get(v)))
    if args.backend == "numpy":
        from engine.backends import native_calls
        emit(f"engine C kernels (kernels/cpu_*.c): {meta.get('native_kernels')}; their thread pool "
             f"({'C, kernels/cpu_pool.c' if native_calls.USE_POOL else 'Python host threads, ENGINE_NATIVE_POOL=0'}) "
             f"is put to sleep before each PyTorch call; every timed call follows an untimed "
             f"{harness.BURST_S * 1e3:.0f} ms burst of the same call (none if it takes > {harness.BURST_SKIP_S:g} s)")
    peak_gflops = None
    if args.backend == "numpy" and not args.no_peak:
        peak = machine.fma_peak(settings.n, suite.peak_ms)
        meta["fma_peak"] = peak
        if peak is None:
            emit("roofline: no FMA peak (the C kernels are off)")
        else:
            peak_gflops = peak["gflops_all"] if args.dtype == "float32" else None
            on_all = (f", {peak['gflops_all']:.0f} GFLOP/s on {peak['threads']} threads" if peak["threads"] > 1
                      else "")
            emit(f"roofline: float32 FMA peak {peak['gflops_1']:.0f} GFLOP/s on 1 thread{on_all} (kernels/cpu_peak.c: 12 "
                 f"independent FMA chains in registers, ~{peak['target_ms']:.0f} ms a call, best of "
                 f"{peak['best_of']}); %peak = a conv row's GFLOP/s / the {peak['threads']}-thread figure"
                 + ("" if peak_gflops else " (float32 only: no %peak for float64)"))
    if args.backend == "cupy" and meta.get("cupy"):
        c = meta["cupy"]
        emit(f"GPU {c.get('gpu')} (cc {c.get('compute_capability')}), CUDA runtime {c.get('cuda_runtime')}, "
             f"driver {c.get('cuda_driver')}, CuPy {c.get('cupy')}")
    emit(f"reference {env.reference_name}; peer {env.peer_name or env.torch_note}; repeat {policy.repeat} "
         f"after {policy.warmup} warm-up round(s)")
    warning = machine.busy_warning(meta["load_average_start"], meta["cpu_usable"])
    if warning and args.backend != "cupy":
        emit(warning)
        meta["warning"] = warning
    emit(report.legend())

    progress = _progress(len(work), args.quiet)
    timers = harness.Timers(env.backend)
    all_rows, bad_paths, t_start = [], 0, time.time()
    epoch_entries = []
    current_op = None
    import signal

    import engine
    try:
        previous_handler = signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread
        previous_handler = None
    try:
        with engine.use_backend(env.backend.name):
            for op, shape in work:
                progress.set(f"{op} {shape.name}")
                try:
                    case = build_case(env, op, shape)
                    results = harness.run_case(case, timers, policy)
                    if getattr(case, "finish", None) is not None:  # train_epoch: test accuracy after the rounds
                        epoch_entries.append(case.finish(results))
                except Exception as exc:  # noqa: BLE001  (a case that cannot be built is a row)
                    results = [harness.Result(op=op, case=shape.name, shape=shape.label, path="(case)",
                                              role="engine", status="ERROR",
                                              note=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])]
                rows = report.derive(results, peak_gflops)
                if op != current_op:
                    emit(report.table_header(op))
                    current_op = op
                emit(report.table_rows(rows))
                bad_paths += sum(r["status"] in ("WRONG", "ERROR") for r in rows)
                all_rows += rows
                progress.update()
                del results
        meta["complete"] = True
    except KeyboardInterrupt:
        emit("interrupted: writing what was measured so far")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        progress.close()
        meta["elapsed_s"] = round(time.time() - t_start, 1)
        meta["load_average_end"] = machine.load_average()
        if suite.summary and all_rows:
            summary = report.summarize(all_rows)
            emit("")
            emit(report.summary_text(summary))
            meta["summary"] = summary
        if epoch_entries:
            from .ops import epoch_summary
            emit("")
            emit(epoch_summary(epoch_entries))
            meta["epoch"] = epoch_entries
        if suite.name == "core":
            verdict, _, _ = report.core_verdicts(all_rows)
            emit("")
            emit(verdict)
            meta["core_verdicts"] = verdict.splitlines()
        emit(f"\n{len(all_rows)} rows, {bad_paths} WRONG/ERROR, {meta['elapsed_s']} s; "
             f"load average now {meta['load_average_end']}")
        _write(args, meta, all_rows, text)
    return EXIT_BAD_PATH if bad_paths else 0


def _write(args, meta, rows, text):
    from . import report
    json_path, csv_path, plot_path = args.json, args.csv, args.plot
    if args.save:
        json_path = json_path or args.save + ".json"
        csv_path = csv_path or args.save + ".csv"
        if not plot_path and report.plot_available() is None:
            plot_path = args.save + ".png"
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        with open(args.save + ".txt", "w") as fh:
            fh.write("\n".join(text) + "\n")
    if json_path:
        report.write_json(json_path, meta, rows)
    if csv_path:
        report.write_csv(csv_path, meta, rows)
    if plot_path:
        try:
            report.write_plot(plot_path, meta, rows)
        except Exception as exc:  # noqa: BLE001  (a plot failure must not lose the numbers)
            print(f"python -m engine.bench: could not write the plot {plot_path}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)


class _progress:
    """tqdm on stderr when installed and stderr is a terminal (and not --quiet);
    plain '[i/n] case' lines on a terminal without tqdm; nothing otherwise."""

    def __init__(self, total, quiet):
        self.total, self.i, self.bar = total, 0, None
        self.on = not quiet and sys.stderr.isatty()
        if self.on:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, file=sys.stderr, unit="case", leave=False)

    def set(self, label):
        if self.bar is not None:
            self.bar.set_description(label[:40])
        elif self.on:
            print(f"[{self.i + 1}/{self.total}] {label}", file=sys.stderr, flush=True)

    def update(self):
        self.i += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
