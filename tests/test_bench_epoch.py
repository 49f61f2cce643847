"""``python -m engine.bench.train_torch_fashion --layer-times``: per-layer forward
and backward (from gradient hooks) of the engine and PyTorch, every layer measured."""
from __future__ import annotations

import math

import engine

from _helpers import torch_or_skip


def test_layer_times_hooks_time_every_layer(capsys):
    torch = torch_or_skip()
    from engine.bench import train_torch_fashion
    threads = (engine.get_num_threads(), torch.get_num_threads())
    try:
        rc = train_torch_fashion.main(["--layer-times", "--dataset", "mnist5k", "--model", "lenet5",
                                       "--threads", "1"])
    finally:
        engine.set_num_threads(threads[0])
        torch.set_num_threads(threads[1])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    layers = [ln for ln in lines if ln[:2].strip().isdigit()]
    assert len(layers) == len(engine.models.get_model("lenet5"))
    for ln in layers:  # engine fwd, bwd, torch fwd, bwd, ratio: all measured (a missing hook gives nan)
        values = [float(v) for v in ln.split()[2:7]]
        assert all(math.isfinite(v) and v >= 0 for v in values), ln
    assert any("optimizer step" in ln for ln in lines)
