"""The autograd examples run end to end on mnist5k (short settings)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import engine

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _example(name):
    sys.path.insert(0, EXAMPLES)
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@pytest.mark.slow
def test_saliency_and_grad_cam_example_writes_its_figure(tmp_path):
    pytest.importorskip("matplotlib", reason="the example draws its figure with matplotlib (the plot extra)")
    out = tmp_path / "maps.png"
    with engine.use_backend("numpy"):
        result = _example("saliency_gradcam").main(["--epochs", "1", "--images", "4", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["accuracy"] > 0.85
    assert np.mean(result["predicted"] == result["labels"]) >= 0.5
    assert 0.0 < result["saliency_on_digit"] <= 1.0


@pytest.mark.slow
def test_inception_example_learns(capsys):
    with engine.use_backend("numpy"):
        accuracy = _example("train_inception").main(["--epochs", "2", "--width", "8"])
    assert accuracy > 0.3, capsys.readouterr().out  # chance is 0.1
    assert "Inception" in capsys.readouterr().out  # the summary table names the blocks
