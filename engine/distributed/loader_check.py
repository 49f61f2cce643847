"""The check a sharded ``DataLoader`` makes at the start of every epoch: all ranks
must agree on what they iterate, or one of them would wait forever for a
collective the others never reach."""
from __future__ import annotations

import numpy as np

from .runtime import world

_FIELDS = ("samples", "batch_size", "shuffle", "drop_last", "batches", "epoch")


def agree_on_epoch(loader, n: int, epoch: int) -> int:
    """Compare the dataset length, the loader's settings, its number of batches
    and the epoch over the ranks (one small ``Allgather``); raise ``ValueError``
    on every rank naming the ones that differ. Returns rank 0's shuffling seed
    (the one every rank uses). Collective."""
    w = world()
    mine = np.array([n, loader.batch_size, int(loader.shuffle), int(loader.drop_last_effective), len(loader),
                     epoch, loader.shard_seed], dtype=np.int64)
    every = w.allgather_host(mine)
    fields = every[:, :len(_FIELDS)]
    odd = [r for r in range(w.size) if not np.array_equal(fields[r], fields[0])]
    if odd:
        def describe(r):
            row = dict(zip(_FIELDS, (int(v) for v in fields[r])))
            return (f"rank {r}: {row['samples']:,} samples, {row['batches']} batches of global size "
                    f"{row['batch_size']} (shuffle={bool(row['shuffle'])}, drop_last={bool(row['drop_last'])}), "
                    f"epoch {row['epoch']}")
        raise ValueError("DataLoader(shard=True): the ranks disagree at the start of an epoch ("
                         + "; ".join(describe(r) for r in [0] + odd[:3])
                         + "). Every rank must load the same dataset with the same loader settings; "
                           "otherwise one rank would wait forever for the others")
    return int(every[0, -1])
