"""engine.distributed in one process (no MPI needed): the world of one, the launcher
detection, the collectives' contracts, the fused buffer, DistributedOptimizer,
the sharded DataLoader's arithmetic for any (rank, world size), SyncBatchNorm
against BatchNorm, PyTorch and finite differences, the fit hooks, the warm-up,
and the CLI's option checks. Real ranks: tests/test_distributed_mpi.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import _mpi_worker as worker
import engine
from _helpers import FD_TOL, TORCH_TOL, assert_rel, from_torch, to_torch, torch_or_skip
from engine import distributed as dist
from engine import nn
from engine.data import ArrayDataset, DataLoader
from engine.distributed import communicators, runtime as world_module
from engine.distributed.collectives import FusedBuffer
from reference import numerical_grad

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not any(k == v_[0] for v_ in world_module.LAUNCH_VARIABLES)}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


# ----------------------------------------------------------------------------- the world
def test_plain_python_is_a_world_of_one_without_mpi4py():
    code = ("import sys, engine.distributed as d; w = d.init(); "
            "print(w.rank, w.size, w.local_rank, w.kind, 'mpi4py' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1", "0", "single", "False"]


def test_launched_without_mpi4py_names_the_install_command():
    blocker = ("import sys, importlib.abc\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name.split('.')[0] == 'mpi4py': raise ImportError('No module named mpi4py')\n"
               "sys.meta_path.insert(0, Block())\n"
               "import engine.distributed as d\n"
               "try:\n    d.init()\nexcept d.DistributedUnavailableError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60,
                          env=_clean_env(OMPI_COMM_WORLD_SIZE="4", OMPI_COMM_WORLD_RANK="1"))
    assert done.returncode == 0, done.stderr
    assert "started by Open MPI mpiexec as one of 4 ranks" in done.stdout
    assert 'pip install ".[mpi]"' in done.stdout


def test_a_launcher_whose_mpi_is_not_mpi4pys_is_an_error_not_lonely_training():
    """mpiexec of one MPI, mpi4py built for another: each process would see a world
    of one and train alone. Here: the launcher's variables say 2, MPI says 1."""
    pytest.importorskip("mpi4py", reason='needs mpi4py (pip install ".[mpi]")')
    code = ("import engine.distributed as d\n"
            "try:\n    d.init()\nexcept d.DistributedUnavailableError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=_clean_env(OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0",
                                         OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    assert done.returncode == 0, done.stderr
    assert "started 2 processes but MPI sees a world of 1" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("env, expected", [
    ({}, (1, None, None, None)),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0"},
     (4, 2, 0, "Open MPI mpiexec")),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "1"}, (2, 1, 1, "MPICH/Intel MPI mpiexec (Hydra)")),
    ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}, (8, 5, 1, "Slurm srun")),
    # a batch script: Slurm says 8 tasks, but no srun step started this process
    ({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, (1, None, None, None)),
])
def test_launchers_are_recognised_from_their_variables(env, expected):
    assert world_module.launch_info(env) == expected


def test_world_of_one_api():
    w = dist.init()
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_root()) == (0, 1, 0, True)
    assert dist.init() is w and dist.is_initialized()
    dist.barrier()
    assert dist.broadcast_object({"a": [1, 2.5], "b": None}) == {"a": [1, 2.5], "b": None}
    assert dist.on_root(lambda: 42, "answer") == 42
    with pytest.raises(ValueError, match="backend must be None"):
        dist.init("gloo")


def test_allreduce_and_broadcast_in_a_world_of_one(backend):
    a = backend.asarray(np.arange(6.0).reshape(2, 3))
    for op in ("sum", "mean", "max", "min"):
        out = dist.allreduce(a, op)
        assert out is not a and engine.backends.backend_of(out) is backend
        np.testing.assert_array_equal(engine.to_numpy(out), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(engine.to_numpy(dist.broadcast(a)), np.arange(6.0).reshape(2, 3))
    with pytest.raises(ValueError, match="op must be one of"):
        dist.allreduce(a, "prod")
    with pytest.raises(TypeError, match="op='mean' needs a floating array"):
        dist.allreduce(backend.asarray(np.arange(3)), "mean")
    with pytest.raises(ValueError, match=r"root must be a rank in \[0, 0\]"):
        dist.broadcast(a, root=1)
    with pytest.raises(TypeError, match="expected an array"):
        dist.allreduce([1.0, 2.0])


def test_communicator_choice_without_a_gpu():
    w = dist.init()
    numpy = engine.backends.get("numpy")
    assert isinstance(communicators.communicator_for(w, numpy), communicators.LocalCommunicator)

    class FakeCupy:
        name = "cupy"
    reason = communicators.nccl_unavailable_reason()
    if reason is not None:  # a CPU machine: asking for NCCL says why it cannot
        assert "nccl" in reason.lower() or "cupy" in reason.lower()
        with pytest.raises(RuntimeError, match="NCCL was asked for but"):
            communicators.communicator_for(w, FakeCupy(), prefer="nccl")
        assert isinstance(communicators.communicator_for(w, FakeCupy()), communicators.LocalCommunicator)


def test_nccl_communicator_passes_the_unique_id_and_buffers(monkeypatch):
    """The NCCL path's plumbing with a stand-in for cupy.cuda.nccl (the real one
    runs in the GPU script, bench/gpu_run.sh): the 128-byte id made on rank 0
    reaches NcclCommunicator as signed chars, and allReduce gets the buffer's
    pointer, count, NCCL datatype and op."""
    calls = {}

    class FakeNccl:
        NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT64, NCCL_SUM, NCCL_MAX, NCCL_MIN = 7, 8, 4, 0, 2, 3

        @staticmethod
        def get_unique_id():
            return tuple(range(-64, 64))

        class NcclCommunicator:
            def __init__(self, size, uid, rank):
                calls["init"] = (size, uid, rank)

            def allReduce(self, send, recv, count, dtype, op, stream):
                calls["allreduce"] = (send == recv, count, dtype, op, stream)

    class Pointer:
        ptr = 1234

    class DeviceBuffer:
        data, size, dtype = Pointer(), 10, np.dtype("float32")

    class FakeCupyModule:
        class cuda:
            nccl = FakeNccl

            @staticmethod
            def get_current_stream():
                return type("Stream", (), {"ptr": 99})()

    monkeypatch.setitem(sys.modules, "cupy", FakeCupyModule)
    monkeypatch.setitem(sys.modules, "cupy.cuda", FakeCupyModule.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", FakeNccl)
    comm = communicators.NcclCommunicator.create(dist.init())
    assert calls["init"] == (1, tuple(range(-64, 64)), 0)
    comm.allreduce_(DeviceBuffer(), "max")
    assert calls["allreduce"] == (True, 10, 7, 2, 99)
    with pytest.raises(TypeError, match="no datatype for complex64"):
        comm.allreduce_(type("B", (DeviceBuffer,), {"dtype": np.dtype("complex64")})(), "sum")


def test_fused_buffer_packs_missing_arrays_as_zeros(backend):
    shapes = [(2, 3), (4,), (), (1, 1, 2)]
    buffer = FusedBuffer(backend, backend.dtype("float64"), shapes, extra=3)
    arrays = [backend.asarray(np.full(s, i + 1.0)) for i, s in enumerate(shapes)]
    arrays[1] = None
    buffer.pack(arrays)
    assert buffer.total == 13 and engine.to_numpy(buffer.array).shape == (16,)
    np.testing.assert_array_equal(engine.to_numpy(buffer.view(0)), np.ones((2, 3)))
    np.testing.assert_array_equal(engine.to_numpy(buffer.view(1)), np.zeros(4))
    np.testing.assert_array_equal(engine.to_numpy(buffer.view(2)), np.array(3.0))
    assert tuple(buffer.view(3).shape) == (1, 1, 2)
    assert tuple(buffer.extras.shape) == (3,)


# ----------------------------------------------------------------------------- DistributedOptimizer
def test_distributed_optimizer_in_a_world_of_one_is_the_plain_optimizer():
    a, b = worker.build_model("plain"), worker.build_model("plain")
    plain = engine.optim.Adam(a.parameters(), lr=0.01)
    wrapped = dist.DistributedOptimizer(engine.optim.Adam(b.parameters(), lr=0.01), b)
    x = np.random.default_rng(0).random((6, 1, 8, 8))
    y = np.array([0, 1, 2, 3, 0, 1])
    for model, opt in ((a, plain), (b, wrapped)):
        for _ in range(3):
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(engine.asarray(x)), engine.asarray(y)).backward()
            opt.step()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(engine.to_numpy(va), engine.to_numpy(vb), err_msg=k)
    assert wrapped.wrapped_optimizer.__class__.__name__ == "Adam"
    assert wrapped.param_groups is wrapped.optimizer.param_groups and wrapped.defaults["lr"] == 0.01
    values = engine.asarray(np.array([1.0, 2.0]))
    assert wrapped.synchronize(values) is values  # a world of one: nothing to sum
    assert "rank 0 of 1" in repr(wrapped)


def test_distributed_optimizer_refuses_what_would_drift():
    model, other = worker.build_model("plain"), worker.build_model("plain")
    with pytest.raises(ValueError, match="are not parameters of the model"):
        dist.DistributedOptimizer(engine.optim.SGD(other.parameters(), lr=0.1), model)
    wrapped = dist.DistributedOptimizer(engine.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(TypeError, match="already a DistributedOptimizer"):
        dist.DistributedOptimizer(wrapped, model)
    with pytest.raises(TypeError, match="must be an engine.optim optimizer"):
        dist.DistributedOptimizer(object(), model)
    with pytest.raises(TypeError, match="must be an engine.nn.Module"):
        dist.DistributedOptimizer(engine.optim.SGD(model.parameters(), lr=0.1), object())


def test_checkpoints_record_the_wrapped_optimizer(tmp_path):
    model = worker.build_model("plain")
    wrapped = dist.DistributedOptimizer(engine.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model)
    engine.save_checkpoint(tmp_path / "c.npz", model, wrapped, epoch=1)
    ckpt = engine.load_checkpoint(tmp_path / "c.npz", model, wrapped)
    assert ckpt.optimizer_class == "SGD"


def test_fit_with_the_wrapper_in_a_world_of_one_matches_fit_without():
    a, _ = worker.train("bn", "sgd", (0, 1), epochs=1)
    train_set, val_set = worker.make_data()
    b = worker.build_model("bn")
    opt = engine.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(train_set, worker.GLOBAL_BATCH, shuffle=True, seed=worker.SEED, shard=(0, 1), normalize=None,
                        dtype="float64")
    engine.fit(b, nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(engine.to_numpy(va), engine.to_numpy(vb), err_msg=k)


def test_fit_on_several_ranks_needs_the_wrapper(monkeypatch):
    from engine.distributed import fitting

    class TwoRanks:
        rank, size, is_root = 0, 2, True
    monkeypatch.setattr(fitting, "world", lambda: TwoRanks())
    model = worker.build_model("plain")
    train_set, _ = worker.make_data()
    with pytest.raises(ValueError, match="wrap it in engine.distributed.DistributedOptimizer"):
        engine.fit(model, nn.CrossEntropyLoss(), engine.optim.SGD(model.parameters(), lr=0.1),
                   DataLoader(train_set, 64), progress=False)


# ----------------------------------------------------------------------------- sharding
def _ids(n):
    return ArrayDataset(np.zeros((n, 1, 2, 2)), np.arange(n, dtype=np.float64))


def _seen(loader):
    return [engine.to_numpy(y).astype(int).tolist() for _, y in loader]


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_training_shards_are_disjoint_and_cover_each_global_batch(size):
    n, batch = 100, 12
    loaders = [DataLoader(_ids(n), batch, shuffle=True, seed=9, shard=(r, size), normalize=None) for r in range(size)]
    assert all(len(lo) == n // batch for lo in loaders)
    single = DataLoader(_ids(n), batch, shuffle=True, seed=9, shard=(0, 1), normalize=None)
    for _epoch in range(2):
        per_rank = [_seen(lo) for lo in loaders]
        whole = _seen(single)
        for step in range(n // batch):
            parts = [per_rank[r][step] for r in range(size)]
            assert all(len(p) == batch // size for p in parts)
            assert sum(parts, []) == whole[step]  # rank order = the one process's global batch
        assert len(set(sum(sum(per_rank, []), []))) == (n // batch) * batch  # disjoint; the short batch dropped
    assert loaders[0].epoch == 2


def test_each_epoch_draws_a_new_permutation_from_seed_and_epoch():
    loader = DataLoader(_ids(50), 10, shuffle=True, seed=4, shard=(0, 1), normalize=None)
    first, second = _seen(loader), _seen(loader)
    assert first != second
    again = DataLoader(_ids(50), 10, shuffle=True, seed=4, shard=(0, 1), normalize=None)
    again.epoch = 1  # what fit does when it resumes at the second epoch
    assert _seen(again) == second


def test_validation_shards_split_the_last_batch_unevenly():
    n, batch, size = 23, 8, 3
    loaders = [DataLoader(_ids(n), batch, shard=(r, size), normalize=None) for r in range(size)]
    seen = [sum(_seen(lo), []) for lo in loaders]
    assert sorted(sum(seen, [])) == list(range(n))
    assert [len(s) for s in seen] == [6, 8, 9]  # batches of 8 = 2+3+3, 8 = 2+3+3, 7 = 2+2+3
    assert [len(lo) for lo in loaders] == [3, 3, 3]
    tiny = [DataLoader(_ids(2), 8, shard=(r, 3), normalize=None) for r in range(3)]
    assert [len(lo) for lo in tiny] == [0, 1, 1] and [len(_seen(lo)) for lo in tiny] == [0, 1, 1]


def test_shard_arguments_are_checked():
    with pytest.raises(ValueError, match="batch_size 10 is the global batch and must divide evenly over the 3 ranks"):
        DataLoader(_ids(30), 10, shuffle=True, shard=(0, 3), normalize=None)
    with pytest.raises(ValueError, match=r"needs 0 <= rank < world_size, got \(3, 3\)"):
        DataLoader(_ids(30), 9, shard=(3, 3), normalize=None)
    with pytest.raises(ValueError, match="shard must be True, False or"):
        DataLoader(_ids(30), 9, shard="all", normalize=None)
    assert DataLoader(_ids(30), 10, shard=(0, 3), normalize=None).shard == (0, 3)  # validation: any batch size


def test_sharded_loader_without_shuffle_leaves_the_engine_generator_alone():
    engine.manual_seed(1)
    expected = engine.get_rng_state()
    DataLoader(_ids(30), 10, shard=True, normalize=None)
    assert engine.get_rng_state() == expected
    DataLoader(_ids(30), 10, shard=True, shuffle=True, normalize=None)  # no seed given: one draw
    assert engine.get_rng_state() != expected


def test_sharded_world_of_one_is_a_plain_loader_in_order():
    loader = DataLoader(_ids(10), 4, shard=True, normalize=None)
    assert loader.shard == (0, 1) and _seen(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert "shard=(0, 1)" in repr(loader)


# ----------------------------------------------------------------------------- SyncBatchNorm
def _bn_pair(c=3, dtype="float64", **kwargs):
    ref, sync = nn.BatchNorm2d(c, dtype=dtype, **kwargs), nn.SyncBatchNorm(c, dtype=dtype, **kwargs)
    for m in (ref, sync):
        if m.weight is not None:
            m.weight.data = engine.asarray(np.linspace(0.5, 1.5, c), dtype=dtype)
        if m.bias is not None:
            m.bias.data = engine.asarray(np.linspace(-0.2, 0.2, c), dtype=dtype)
    return ref, sync


@pytest.mark.parametrize("momentum, affine, bias", [(0.1, True, True), (None, True, True), (0.3, False, True),
                                                    (0.1, True, False)])
def test_sync_batchnorm_in_a_world_of_one_equals_batchnorm(momentum, affine, bias):
    rng = np.random.default_rng(0)
    ref, sync = _bn_pair(momentum=momentum, affine=affine, bias=bias)
    for step in range(3):
        x = rng.standard_normal((4, 3, 5, 5)) * 3 + 1
        g = rng.standard_normal((4, 3, 5, 5))
        outs = []
        for m in (ref, sync):
            xt = engine.tensor(x, requires_grad=True)
            y = m(xt)
            y.backward(engine.asarray(g))
            outs.append((engine.to_numpy(y.data), engine.to_numpy(xt.grad)))
        for a, b in zip(*outs):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(engine.to_numpy(getattr(sync, name)), engine.to_numpy(getattr(ref, name)),
                                   rtol=1e-13)
    assert int(sync.num_batches_tracked) == 3
    if affine:
        np.testing.assert_allclose(sync.weight.grad, ref.weight.grad, rtol=1e-12)
    if affine and bias:
        np.testing.assert_allclose(sync.bias.grad, ref.bias.grad, rtol=1e-12)
    assert (sync.bias is None) == (ref.bias is None)
    sync.eval(), ref.eval()
    x = engine.asarray(rng.standard_normal((2, 3, 5, 5)))
    np.testing.assert_allclose(engine.to_numpy(sync(x).data), engine.to_numpy(ref(x).data), rtol=1e-13)


def test_sync_batchnorm_against_pytorch():
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((6, 4, 3, 3)), rng.standard_normal((6, 4, 3, 3))
    _, sync = _bn_pair(4, momentum=0.2)
    ref = torch.nn.BatchNorm2d(4, momentum=0.2).double()
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 1.5, 4, dtype=torch.float64))
        ref.bias.copy_(torch.linspace(-0.2, 0.2, 4, dtype=torch.float64))
    xt = engine.tensor(x, requires_grad=True)
    y = sync(xt)
    y.backward(engine.asarray(g))
    tx = to_torch(x, requires_grad=True)
    ty = ref(tx)
    ty.backward(to_torch(g))
    assert_rel(y.data, from_torch(ty), TORCH_TOL["float64"], "y")
    assert_rel(xt.grad, from_torch(tx.grad), TORCH_TOL["float64"], "dx")
    assert_rel(sync.weight.grad, from_torch(ref.weight.grad), TORCH_TOL["float64"], "dweight")
    assert_rel(sync.running_var, from_torch(ref.running_var), TORCH_TOL["float64"], "running_var")


def test_sync_batchnorm_backward_by_finite_differences():
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((3, 2, 2, 3))
    weights = rng.standard_normal((3, 2, 2, 3))
    _, sync = _bn_pair(2)

    def loss_of(x):
        return float(np.sum(engine.to_numpy(sync(engine.asarray(x)).data) * weights))
    xt = engine.tensor(x0, requires_grad=True)
    (sync(xt) * engine.asarray(weights)).sum().backward()
    assert_rel(xt.grad, numerical_grad(loss_of, x0), FD_TOL, "dx")
    w0 = engine.to_numpy(sync.weight.data).copy()

    def loss_of_weight(w):
        sync.weight.data = engine.asarray(w)
        return loss_of(x0)
    numeric = numerical_grad(loss_of_weight, w0)
    sync.weight.data = engine.asarray(w0)
    assert_rel(sync.weight.grad, numeric, FD_TOL, "dweight")


def test_convert_sync_batchnorm_keeps_parameters_and_statistics():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, dtype="float64"), nn.BatchNorm2d(2, dtype="float64"),
                          nn.Sequential(nn.BatchNorm1d(2, dtype="float64", bias=False)))
    weight, mean = model[1].weight, model[1].running_mean
    keys = list(model.state_dict())
    nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][0], nn.SyncBatchNorm)
    assert model[1].weight is weight and model[1].running_mean is mean
    assert model[2][0].bias is None and model[2][0].weight.data.dtype == np.float64
    assert list(model.state_dict()) == keys  # checkpoints load either way
    with pytest.raises(ValueError, match="process_group must be None"):
        nn.SyncBatchNorm(2, process_group="group")


def test_average_buffers_skips_sync_batchnorm_and_counts_the_rest():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.SyncBatchNorm(2), nn.BatchNorm1d(3))
    assert dist.average_buffers(model) == 4  # two running statistics each for the plain layers


# ----------------------------------------------------------------------------- warm-up and the CLI
def test_linear_warmup_ramps_each_step_and_leaves_the_scheduler_its_own_rate():
    model = worker.build_model("plain")
    opt = engine.optim.SGD(model.parameters(), lr=0.4)
    scheduler = engine.schedulers.StepLR(opt, step_size=1, gamma=0.5)
    seen = []

    class Record(engine.training.Callback):
        def on_batch_end(self, step, logs, state):
            seen.append(opt.param_groups[0]["lr"])
    train_set, _ = worker.make_data()
    loader = DataLoader(train_set.subset(slice(0, 256)), 64, shuffle=True, seed=1, shard=(0, 1), dtype="float64",
                        normalize=None)
    warm = dist.LinearWarmup(epochs=2, start_factor=0.25)
    history = engine.fit(model, nn.CrossEntropyLoss(), opt, loader, epochs=3, scheduler=scheduler,
                         callbacks=[warm, Record()], progress=False)
    # 4 steps per epoch; step s runs with 0.4 * 0.5**(epoch-1) * factor(s), factor 0.25 -> 1 over 8 steps;
    # each on_batch_end sets the next step's rate (the epoch's last puts the scheduled rate back)
    expected_factors = [0.25 + 0.75 * s / 8 for s in range(8)] + [1.0] * 4
    scheduled = [0.4] * 4 + [0.2] * 4 + [0.1] * 4
    assert history.lr == pytest.approx([0.4 * 0.25, 0.2 * (0.25 + 0.75 * 4 / 8), 0.1])
    assert [seen[3], seen[7], seen[11]] == pytest.approx([0.4, 0.2, 0.1])  # epoch ends: the scheduled rates
    np.testing.assert_allclose([s * f for s, f in zip(scheduled, expected_factors)][1:4], seen[0:3])
    with pytest.raises(ValueError, match="start_factor must be in"):
        dist.LinearWarmup(2, 0.0)


@pytest.mark.parametrize("args, message", [
    (["--sync-bn"], "--sync-bn need(s) --distributed"),
    (["--distributed", "--warmup-epochs", "2"], "--warmup-epochs ramps the rate"),
    (["--distributed", "--batch-size", "63"], None),  # a world of one: any batch
])
def test_cli_option_checks(args, message, capsys, tmp_path):
    from engine.__main__ import main
    code = main(["train", "--train-samples", "64", "--test-samples", "32", "--epochs", "1", "--quiet",
                 "--val-fraction", "0", *args])
    err = capsys.readouterr().err
    if message is None:
        assert code == 0, err
    else:
        assert code == 2 and message in err


def test_cli_distributed_in_a_world_of_one_records_the_run(tmp_path, capsys):
    from engine.__main__ import main
    path = tmp_path / "one.npz"
    code = main(["train", "--distributed", "--lr-scaling", "linear", "--train-samples", "128", "--test-samples", "32",
                 "--epochs", "1", "--val-fraction", "0", "--save", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "distributed: 1 rank(s) (not launched by mpiexec/srun)" in out
    extra = engine.load_checkpoint(path, restore_rng=False).extra
    assert extra["world_size"] == 1 and extra["global_batch"] == 64 and extra["lr_scaling"] == "linear"
    assert json.loads(json.dumps(extra))  # JSON-able


def test_bench_suite_distributed_hands_over_to_its_launcher(monkeypatch):
    from engine.bench import __main__ as bench_main, distributed as bench
    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert bench_main.main(["--suite", "distributed", "--repeat", "7", "--save", "out/d"]) == 0
    assert seen == [["--save", "out/d", "--steps", "7", "--dtype", "float32", "--backend", "numpy"]]
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--world-sizes", "x"])


def test_gpu_script_nccl_stage_runs_dry_and_reports(tmp_path):
    """bench/gpu_run.sh's nccl stage on the CPU (GPU_RUN_DRY=1): the same code with
    the local communicator; on a GPU it uses a one-rank NCCL communicator."""
    from engine.bench import gpu_bench
    assert gpu_bench.main(["nccl", "--work", str(tmp_path), "--dry-run"]) == 0
    data = json.loads((tmp_path / "nccl.json").read_text())
    assert data["dry_run"] is True and data["communicator"] == "local"
    assert all(data["checks"].values()), data["checks"]
    assert gpu_bench.main(["report", "--work", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "[dry ] engine.distributed on one GPU: local allreduce" in summary and "all checks pass" in summary
