"""Data-parallel training over real MPI ranks: ``mpiexec --oversubscribe -n 2
python -m mpi4py`` launches of tests/_mpi_worker.py (and of the CLI), each
under a hard timeout, with one BLAS/engine thread per rank (the CI machine
has 2 cores). The single-process references run here, from the same builders.

Skipped, with the reason, where mpi4py or mpiexec is missing
(``pip install ".[mpi]"`` installs both; .ci/run does).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import _mpi_worker as worker
import engine
from engine.data import ArrayDataset, DataLoader

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_TIMEOUT = 180  # seconds: a hang fails the test instead of the CI run


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def _skip_reason():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py is not installed (pip install ".[mpi]")'
    if _mpiexec() is None:
        return 'no mpiexec on PATH (pip install ".[mpi]" brings Open MPI\'s)'
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _env():
    env = dict(os.environ, ENGINE_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    # Open MPI refuses to start as root (CI runs as root) unless told twice
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"):
        env.pop(name, None)
    return env


def launch(args, ranks=2, timeout=LAUNCH_TIMEOUT, cwd=None):
    command = [_mpiexec(), "--oversubscribe", "-n", str(ranks), sys.executable, "-m", "mpi4py", *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=cwd)
    return done, time.perf_counter() - start


# ----------------------------------------------------------------------------- one launch, many checks
@pytest.fixture(scope="module")
def core(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi-core")
    done, _ = launch([str(ROOT / "tests" / "_mpi_worker.py"), "core", str(out)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [np.load(out / f"rank{r}.npz") for r in range(2)]
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, ranks, records, done


def _reference(kind, optimizer):
    """One process, the whole global batch of 64 per step."""
    return worker.train("bn" if kind == "syncbn" else kind, optimizer, (0, 1))


@pytest.mark.parametrize("kind, optimizer", [("plain", "sgd"), ("plain", "adam"), ("syncbn", "sgd")])
def test_two_ranks_of_32_train_as_one_process_of_64(core, kind, optimizer):
    """40 steps (2 epochs of 20): the parameters of 2 ranks x batch 32 equal those
    of 1 process x batch 64, in float64 to rounding; the epoch metrics (summed over
    the ranks, validation sharded unevenly) equal the single process's too. With
    SyncBatchNorm the reference is BatchNorm2d on the whole batch."""
    _, ranks, records, _ = core
    model, history = _reference(kind, optimizer)
    for name, expected in worker.state_arrays(model).items():
        got = ranks[0][f"{kind}-{optimizer}/{name}"]
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11, err_msg=name)
    saved = records[0][f"{kind}-{optimizer}/history"]["history"]
    assert saved["epoch"] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(saved[key], history[key], rtol=1e-9, err_msg=key)


def test_replicas_stay_bit_identical(core):
    _, ranks, records, _ = core
    for key in ranks[0].files:
        if key.split("/")[0] in ("plain-sgd", "plain-adam", "syncbn-sgd"):
            assert np.array_equal(ranks[0][key], ranks[1][key]), key
    for r in records:
        assert r["start_weights_agree"] is True  # rank 1 started from another seed: rank 0's weights won
        assert all(r[f"{k}/replicas_agree"] for k in ("plain-sgd", "plain-adam", "syncbn-sgd", "nan", "bn"))


def test_shards_are_disjoint_cover_each_global_batch_and_change_per_epoch(core):
    _, ranks, _, _ = core
    for epoch in range(2):
        a, b = ranks[0][f"shards/epoch{epoch}"], ranks[1][f"shards/epoch{epoch}"]
        assert a.shape == b.shape == (worker.N_TRAIN // 64, 32)
        assert not set(a.ravel()) & set(b.ravel())
        assert sorted(np.concatenate([a.ravel(), b.ravel()])) == list(range(worker.N_TRAIN))
        # step by step, rank 0 then rank 1 is the single process's global batch
        ids = ArrayDataset(np.zeros((worker.N_TRAIN, 1, 2, 2)), np.arange(worker.N_TRAIN, dtype=np.float64))
        single = DataLoader(ids, 64, shuffle=True, seed=worker.SEED, shard=(0, 1), normalize=None, dtype="float64")
        single.epoch = epoch
        expected = np.stack([engine.to_numpy(y) for _, y in single])
        np.testing.assert_array_equal(np.concatenate([a, b], axis=1), expected)
    assert not np.array_equal(ranks[0]["shards/epoch0"], ranks[0]["shards/epoch1"])
    val = np.concatenate([ranks[0]["shards/val"], ranks[1]["shards/val"]])
    assert sorted(val) == list(range(worker.N_VAL))


def test_collectives_and_objects(core):
    _, ranks, records, _ = core
    for r in ranks:
        np.testing.assert_array_equal(r["allreduce_sum"], [10, 12, 14, 16])
        np.testing.assert_array_equal(r["allreduce_mean"], [5, 6, 7, 8])
        np.testing.assert_array_equal(r["allreduce_max"], [10, 11, 12, 13])
        np.testing.assert_array_equal(r["broadcast"], [10, 11, 12, 13])
    assert [r["object"] for r in records] == [{"from": 0, "values": [1, 2.5]}] * 2


def test_sync_batchnorm_equals_batchnorm_on_the_whole_batch(core):
    _, ranks, _, _ = core
    x_all = np.random.default_rng(11).standard_normal((8, 3, 5, 5))
    g_all = np.random.default_rng(12).standard_normal((8, 3, 5, 5))
    bn = engine.nn.BatchNorm2d(3, momentum=0.3, dtype="float64")
    bn.weight.data = np.linspace(0.5, 1.5, 3)
    bn.bias.data = np.linspace(-0.2, 0.2, 3)
    x = engine.tensor(x_all, requires_grad=True)
    y = bn(x)
    y.backward(engine.asarray(g_all / 2))  # each rank's own loss is a mean over half the batch
    np.testing.assert_allclose(np.concatenate([r["syncbn/y"] for r in ranks]), y.numpy() if not y.requires_grad
                               else engine.to_numpy(y.data), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([r["syncbn/dx"] for r in ranks]) / 2, x.grad, rtol=1e-11, atol=1e-13)
    for name in ("dweight", "dbias"):  # the rank's own sums; DistributedOptimizer averages them
        averaged = (ranks[0][f"syncbn/{name}"] + ranks[1][f"syncbn/{name}"]) / 2
        own = bn.weight.grad if name == "dweight" else bn.bias.grad
        np.testing.assert_allclose(averaged, own, rtol=1e-11, atol=1e-13)
    for name in ("running_mean", "running_var"):
        for r in ranks:
            np.testing.assert_allclose(r[f"syncbn/{name}"], engine.to_numpy(getattr(bn, name)), rtol=1e-12)


def test_mismatches_are_errors_on_every_rank_not_hangs(core):
    _, _, records, _ = core
    for r in records:
        assert "rank 0: 1,280 samples" in r["length_mismatch"] and "rank 1: 1,216 samples" in r["length_mismatch"]
        assert "different models" in r["layout_mismatch"] and "rank 1: 3 entries, 20 values" in r["layout_mismatch"]


def test_a_nan_on_one_rank_stops_every_rank(core):
    _, _, records, _ = core
    for r in records:
        assert r["nan/steps"] == 3
        assert r["nan/stop_reason"].startswith("training stopped: the loss became nan at epoch 1, step 3")


def test_rank0_writes_the_checkpoint_with_the_run_facts(core):
    out, _, _, _ = core
    ckpt = engine.load_checkpoint(out / "ckpt-1.npz", restore_rng=False)
    assert ckpt.extra["world_size"] == 2 and ckpt.extra["global_batch"] == 64 and ckpt.extra["seed"] == worker.SEED
    assert ckpt.optimizer_class == "SGD"  # the wrapped optimizer, not the wrapper
    assert not list(out.glob("*.tmp*"))


# ----------------------------------------------------------------------------- failures end the job
def test_an_exception_on_one_rank_aborts_the_job_within_seconds(tmp_path):
    done, elapsed = launch([str(ROOT / "tests" / "_mpi_worker.py"), "abort", str(tmp_path)], timeout=60)
    assert done.returncode != 0
    assert "deliberate failure on rank 1" in done.stderr
    assert not (tmp_path / "rank0-passed-barrier").exists()
    started = float((tmp_path / "started1").read_text())
    assert time.time() - started < 20, f"the job took {elapsed:.1f} s to end"


# ----------------------------------------------------------------------------- the CLI, and resuming
def test_cli_checkpoint_of_rank0_resumes_to_the_same_result(tmp_path):
    """Two epochs straight, against one epoch, a checkpoint, and a resumed second
    epoch (rank 0 reads the file and broadcasts it): the same weights, bit for bit."""
    common = ["-m", "engine", "train", "--distributed", "--dataset", "mnist5k", "--train-samples", "768",
              "--test-samples", "64", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.05", "--seed", "5",
              "--val-fraction", "0.125", "--quiet"]
    straight, _ = launch([*common, "--epochs", "2", "--save", str(tmp_path / "straight.npz")], cwd=tmp_path)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    half, _ = launch([*common, "--epochs", "1", "--save", str(tmp_path / "half.npz")], cwd=tmp_path)
    assert half.returncode == 0, half.stdout + half.stderr
    resumed, _ = launch([*common, "--epochs", "2", "--resume", str(tmp_path / "half.npz"),
                         "--save", str(tmp_path / "resumed.npz")], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("test accuracy") == 1  # rank 0 prints, rank 1 does not
    a = engine.load_checkpoint(tmp_path / "straight.npz", restore_rng=False)
    b = engine.load_checkpoint(tmp_path / "resumed.npz", restore_rng=False)
    assert a.extra["world_size"] == b.extra["world_size"] == 2
    assert a.extra["batch_size"] == 64
    for name, value in a.model_state.items():
        np.testing.assert_array_equal(b.model_state[name], value, err_msg=name)
    assert a.history["loss"] == b.history["loss"]


# ----------------------------------------------------------------------------- the bench
def test_bench_times_a_distributed_step_per_world_size(tmp_path):
    """python -m engine.bench.distributed: one rank without mpiexec, two with it;
    every row checked (replicas bit-identical, a known allreduce right)."""
    from engine.bench import distributed as bench
    path = tmp_path / "d.json"
    code = bench.main(["--world-sizes", "1", "2", "--threads", "1", "--model", "lenet5", "--steps", "2", "--warmup",
                       "1", "--repeat", "2", "--rounds", "1", "--json", str(path)])
    report = json.loads(path.read_text())
    assert code == 0, report
    rows = {r["world_size"]: r for r in report["rows"]}
    assert set(rows) == {1, 2} and rows[2]["communicator"] == "mpi" and rows[2]["local_batch"] == 32
    for r in rows.values():
        assert r["replicas_agree"] and r["allreduce_right"]
        assert set(r["median_ms"]) == {"compute", "wait", "sync", "update", "step"}
        assert r["median_ms"]["step"] >= r["median_ms"]["compute"] > 0
    assert rows[2]["allreduce_ms"][str(rows[2]["gradient_values"])] > 0
