"""The program the MPI tests launch (``mpiexec -n 2 python -m mpi4py tests/_mpi_worker.py SCENARIO OUT``).

Each rank writes what it saw to ``OUT/rank<r>.npz`` (and rank 0 ``OUT/rank0.json``);
tests/test_distributed_mpi.py compares them with one process doing the same in pytest.
The builders (``make_data``, ``build_model``, ``train``) are shared with the tests, so the
single-process reference runs exactly the code the ranks run.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import engine
from engine import distributed as dist
from engine import nn
from engine.data import ArrayDataset, DataLoader

N_TRAIN = 1280   # 20 global batches of 64: 2 epochs = 40 steps
N_VAL = 101      # an odd count: the last validation batch splits unevenly over the ranks
GLOBAL_BATCH = 64
SEED = 3


def make_data():
    rng = np.random.default_rng(7)
    images = rng.random((N_TRAIN + N_VAL, 1, 8, 8))
    labels = (images[:, 0, :4, :4].mean(axis=(1, 2)) * 8).astype(np.int64) % 4  # learnable
    train = ArrayDataset(images[:N_TRAIN], labels[:N_TRAIN], classes=list("abcd"))
    val = ArrayDataset(images[N_TRAIN:], labels[N_TRAIN:], classes=list("abcd"))
    return train, val


def build_model(kind: str, seed: int = 0, dtype: str = "float64"):
    """``plain``: conv, ReLU, pool, linear; ``syncbn``: with a SyncBatchNorm
    (BatchNorm in a world of one); ``bn``: with a plain BatchNorm2d."""
    engine.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1, dtype=dtype)]
    if kind == "syncbn":
        layers.append(nn.SyncBatchNorm(4, dtype=dtype))
    elif kind == "bn":
        layers.append(nn.BatchNorm2d(4, dtype=dtype))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 4, dtype=dtype)]
    return nn.Sequential(*layers)


def make_optimizer(name, model):
    if name == "sgd":
        return engine.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return engine.optim.Adam(model.parameters(), lr=0.01)


def train(kind, optimizer_name, shard, epochs=2, callbacks=(), loss=None, dtype="float64"):
    """Train on the shared data; ``shard``: True (the world's ranks) or (rank, size)."""
    train_set, val_set = make_data()
    model = build_model(kind, dtype=dtype)
    optimizer = dist.DistributedOptimizer(make_optimizer(optimizer_name, model), model)
    train_loader = DataLoader(train_set, GLOBAL_BATCH, shuffle=True, seed=SEED, shard=shard, normalize=None,
                              dtype=dtype)
    val_loader = DataLoader(val_set, 32, shard=shard, normalize=None, dtype=dtype)
    history = engine.fit(model, loss or nn.CrossEntropyLoss(), optimizer, train_loader, val_loader, epochs=epochs,
                         progress=False, callbacks=callbacks)
    return model, history


def state_arrays(model):
    return {k: engine.to_numpy(v) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- scenarios
def scenario_core(out: Path):
    w = dist.init()
    record, arrays = {"rank": w.rank, "size": w.size}, {}

    # collectives on NumPy arrays
    mine = np.arange(4.0) + 10 * w.rank
    arrays["allreduce_sum"] = dist.allreduce(mine, "sum")
    arrays["allreduce_mean"] = dist.allreduce(mine, "mean")
    arrays["allreduce_max"] = dist.allreduce(mine, "max")
    arrays["broadcast"] = dist.broadcast(mine, root=1)
    record["object"] = dist.broadcast_object({"from": w.rank, "values": [1, 2.5]} if w.rank == 0 else None)

    # rank 0's weights win at start: rank 1 built its model from another seed
    model = build_model("plain", seed=w.rank)
    dist.DistributedOptimizer(engine.optim.SGD(model.parameters(), lr=0.1), model)
    record["start_weights_agree"] = dist.replicas_agree(model)

    # training: 2 ranks x 32 samples per step against one process with 64 (tests compare)
    for kind, opt in (("plain", "sgd"), ("plain", "adam"), ("syncbn", "sgd")):
        trained, history = train(kind, opt, True)
        for k, v in state_arrays(trained).items():
            arrays[f"{kind}-{opt}/{k}"] = v
        record[f"{kind}-{opt}/history"] = history.as_dict()
        record[f"{kind}-{opt}/replicas_agree"] = dist.replicas_agree(trained)

    # the shards of two epochs: which samples each rank saw, step by step
    train_set, _ = make_data()
    ids = ArrayDataset(train_set.images, np.arange(N_TRAIN, dtype=np.float64))
    loader = DataLoader(ids, GLOBAL_BATCH, shuffle=True, seed=SEED, shard=True, normalize=None, dtype="float64")
    for epoch in range(2):
        arrays[f"shards/epoch{epoch}"] = np.stack([engine.to_numpy(y) for _, y in loader])
    val_ids = ArrayDataset(np.zeros((N_VAL, 1, 2, 2)), np.arange(N_VAL, dtype=np.float64))
    val_loader = DataLoader(val_ids, 32, shard=True, normalize=None, dtype="float64")
    arrays["shards/val"] = np.concatenate([engine.to_numpy(y) for _, y in val_loader])
    record["val_batches"] = len(val_loader)

    # SyncBatchNorm forward and backward on this rank's slice of one fixed batch
    x_all = np.random.default_rng(11).standard_normal((8, 3, 5, 5))
    g_all = np.random.default_rng(12).standard_normal((8, 3, 5, 5))
    share = slice(4 * w.rank, 4 * w.rank + 4)
    bn = nn.SyncBatchNorm(3, momentum=0.3, dtype="float64")
    bn.weight.data = np.linspace(0.5, 1.5, 3)
    bn.bias.data = np.linspace(-0.2, 0.2, 3)
    x = engine.tensor(x_all[share], requires_grad=True)
    y = bn(x)
    y.backward(engine.asarray(g_all[share]))
    arrays["syncbn/y"], arrays["syncbn/dx"] = engine.to_numpy(y.data), engine.to_numpy(x.grad)
    arrays["syncbn/dweight"], arrays["syncbn/dbias"] = bn.weight.grad, bn.bias.grad
    arrays["syncbn/running_mean"], arrays["syncbn/running_var"] = bn.running_mean, bn.running_var

    # a different dataset length on one rank: an error on every rank, not a hang
    short = ArrayDataset(train_set.images[:N_TRAIN - 64 * w.rank], np.zeros(N_TRAIN - 64 * w.rank, np.int64))
    try:
        next(iter(DataLoader(short, GLOBAL_BATCH, shuffle=True, seed=SEED, shard=True)))
        record["length_mismatch"] = None
    except ValueError as exc:
        record["length_mismatch"] = str(exc)

    # different models on the ranks: refused on every rank
    odd = nn.Sequential(nn.Linear(4, 3 + w.rank, dtype="float64"))
    try:
        dist.DistributedOptimizer(engine.optim.SGD(odd.parameters(), lr=0.1), odd)
        record["layout_mismatch"] = None
    except ValueError as exc:
        record["layout_mismatch"] = str(exc)

    # a NaN loss on rank 1 only, at step 3: every rank stops there, on the same weights
    class NanOnRankOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0
            self.inner = nn.CrossEntropyLoss()

        def forward(self, output, target):
            self.calls += 1
            value = self.inner(output, target)
            return value * float("nan") if (w.rank == 1 and self.calls == 3) else value

    nan_loss = NanOnRankOne()
    import warnings
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        trained, history = train("plain", "sgd", True, epochs=2, loss=nan_loss)
    record["nan/stop_reason"] = history.stop_reason
    record["nan/steps"] = nan_loss.calls
    record["nan/replicas_agree"] = dist.replicas_agree(trained)

    # a checkpoint callback: rank 0 writes, with the run's facts
    from engine.training import ModelCheckpoint
    path = out / "ckpt-{epoch}.npz"
    trained, _ = train("bn", "sgd", True, epochs=1, callbacks=[ModelCheckpoint(str(path))])
    record["bn/replicas_agree"] = dist.replicas_agree(trained)
    np.savez(out / f"rank{w.rank}.npz", **arrays)
    if w.rank == 0:
        (out / "rank0.json").write_text(json.dumps(record))
    else:
        (out / f"rank{w.rank}.json").write_text(json.dumps(record))


def scenario_abort(out: Path):
    """Rank 1 fails while rank 0 waits in a collective: the job must end, not hang."""
    w = dist.init()
    (out / f"started{w.rank}").write_text(str(time.time()))
    if w.rank == 1:
        time.sleep(0.5)
        raise RuntimeError("deliberate failure on rank 1")
    dist.barrier()  # never completes: rank 1 is gone
    (out / "rank0-passed-barrier").write_text("should not happen")


if __name__ == "__main__":
    name, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    {"core": scenario_core, "abort": scenario_abort}[name](out)
