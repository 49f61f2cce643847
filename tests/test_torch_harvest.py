"""PyTorch's own test inputs replayed on the engine (issue 13): every case that
PyTorch 2.13's ``module_db``, ``common_nn`` lists and ``optim_db`` hold for a
class the engine has, against the engine twin, at 1e-9 relative in float64
(outputs, input and parameter gradients, buffers; optimizer trajectories over
5 steps). The machinery is ``tests/_harvest.py``; this file holds the scope:

* ``OUT_OF_SCOPE``: harvested cases the engine does not claim to run, each
  with its reason (a test checks they are still refused, so a rule that no
  longer applies is noticed);
* ``KNOWN_DIFFERENCES``: applicable cases where the engine and PyTorch
  disagree, each named with its reason (run as strict xfails);
* ``NO_TWIN``: the classes PyTorch's lists cover that the engine has no twin
  for (not counted).

Every case runs (no sampling): 974 cases; the file took 41 s wall (30 s CPU,
17 s of it importing PyTorch's lists and collecting) on 2 loaded cores. ``python tests/test_torch_harvest.py`` prints
the per-class table that README.md's "How it is checked" states (a test
keeps the two equal).
"""
from __future__ import annotations

import collections
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch", reason="PyTorch CPU (pip install torch==2.13.0) supplies the harvested cases")
pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest (pip install -e '.[test]')")

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _harvest as H  # noqa: E402

# --------------------------------------------------------------------------- scope
#: ``(label, reason, predicate)``: the first rule a case matches puts it out of scope.
OUT_OF_SCOPE = [
    ("differentiable=True", "differentiable=True: PyTorch records the optimizer update itself for gradients through the step "
     "(higher-order training); the engine's updates are in-place array arithmetic that the tape does not record, "
     "so it refuses the flag with this reason",
     lambda c: c.source == "optim_db" and bool(c.facts["kwargs"].get("differentiable"))),
    ("complex", "complex tensors: the engine computes in float32 and float64 only",
     lambda c: c.facts.get("complex", False)),
]

#: case name -> why the engine differs from PyTorch there (run as strict xfails).
KNOWN_DIFFERENCES: dict[str, str] = {}

#: Classes of PyTorch's lists with no engine twin, by reason (kept complete by a test).
NO_TWIN = {
    "3-D layers (the engine's convolutions, pooling and padding are 1-D and 2-D)": [
        "AdaptiveAvgPool3d", "AdaptiveMaxPool3d", "AvgPool3d", "BatchNorm3d", "CircularPad3d", "ConstantPad3d",
        "Conv3d", "ConvTranspose3d", "FractionalMaxPool3d", "InstanceNorm3d", "LPPool3d", "MaxPool3d",
        "ReflectionPad3d", "ReplicationPad3d", "ZeroPad3d"],
    "lazy modules (they infer in_channels/in_features at the first call; the engine's layers take them)": [
        "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d",
        "LazyConvTranspose3d"],
    "sequence models (recurrent layers, attention, transformers, embeddings): outside a CNN engine": [
        "Embedding", "GRU", "GRUCell", "LSTM", "LSTMCell", "MultiheadAttention", "RNN", "RNNCell", "Transformer",
        "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "Bilinear"],
    "layers not implemented yet": [
        "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "CELU", "ELU", "FractionalMaxPool2d", "GLU", "Hardshrink",
        "Hardtanh", "InstanceNorm1d", "InstanceNorm2d", "LPPool1d", "LPPool2d", "LocalResponseNorm", "LogSigmoid",
        "Mish", "PReLU", "RMSNorm", "ReLU6", "SELU", "Softmax2d", "Softmin", "Softplus", "Softshrink", "Softsign",
        "Tanhshrink", "Threshold"],
    "losses not implemented yet": [
        "CTCLoss", "CosineEmbeddingLoss", "GaussianNLLLoss", "HingeEmbeddingLoss", "LinearCrossEntropyLoss",
        "MarginRankingLoss", "MultiLabelMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss",
        "PoissonNLLLoss", "SoftMarginLoss"],
    "optimizers not implemented yet": [
        "ASGD", "Adadelta", "Adafactor", "Adamax", "LBFGS", "Muon", "NAdam", "RAdam", "Rprop", "SparseAdam"],
}

CASES = H.harvest()


def scope_rule(case):
    """The ``(label, reason, predicate)`` rule that puts ``case`` out of scope, or ``None``."""
    return next((rule for rule in OUT_OF_SCOPE if rule[2](case)), None)


def scope_reason(case):
    rule = scope_rule(case)
    return None if rule is None else rule[1]


APPLICABLE = [c for c in CASES if scope_reason(c) is None]
OUTSIDE = [c for c in CASES if scope_reason(c) is not None]


def _param(case):
    if case.name in KNOWN_DIFFERENCES:
        return pytest.param(case, id=case.name, marks=pytest.mark.xfail(reason=KNOWN_DIFFERENCES[case.name],
                                                                        strict=True, raises=H.Mismatch))
    return pytest.param(case, id=case.name)


@pytest.mark.parametrize("case", [_param(c) for c in APPLICABLE])
def test_harvested_case_matches_pytorch(case):
    case.build()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in OUTSIDE])
def test_out_of_scope_case_is_refused_with_a_reason(case):
    """An out-of-scope case must still be refused by the engine with an error (not
    run silently, not crash); when the engine learns it, the rule here goes."""
    with pytest.raises(H.Mismatch, match="refused|complex"):
        case.build()


# --------------------------------------------------------------------------- counts
def class_counts():
    """``{class: (applicable, passed, {out-of-scope label: count})}``; every applicable
    case not in ``KNOWN_DIFFERENCES`` passes (the parametrized test above enforces it)."""
    counts = collections.defaultdict(lambda: [0, 0, collections.Counter()])
    for case in CASES:
        row = counts[case.cls]
        rule = scope_rule(case)
        if rule is not None:
            row[2][rule[0]] += 1
            continue
        row[0] += 1
        row[1] += case.name not in KNOWN_DIFFERENCES
    return {k: (v[0], v[1], dict(v[2])) for k, v in sorted(counts.items(),
                                                           key=lambda kv: (kv[0].startswith("F."), kv[0]))}


def counts_table() -> str:
    """The markdown table README.md states."""
    counts = class_counts()
    lines = ["| class | applicable | passed | out of scope |", "|---|---|---|---|"]
    for name, (applicable, passed, outside) in counts.items():
        scope = ", ".join(f"{n} ({label})" for label, n in outside.items())
        lines.append(f"| `{name}` | {applicable} | {passed} | {scope} |")
    applicable = sum(v[0] for v in counts.values())
    passed = sum(v[1] for v in counts.values())
    outside = sum(sum(v[2].values()) for v in counts.values())
    lines.append(f"| all {len(counts)} | {applicable} | {passed} | {outside} |")
    return "\n".join(lines)


def test_every_class_passes_at_least_97_percent_of_its_applicable_cases():
    for name, (applicable, passed, _) in class_counts().items():
        assert applicable > 0, f"{name}: every harvested case is out of scope"
        assert passed >= 0.97 * applicable, f"{name}: {passed}/{applicable} pass"


def test_the_harvest_covers_every_engine_class_pytorch_tests():
    from torch.testing._internal.common_modules import module_db
    from torch.testing._internal.common_optimizers import optim_db
    tested = {m.module_cls.__name__ for m in module_db} | {o.optim_cls.__name__ for o in optim_db}
    counts = class_counts()
    for name in (H.ENGINE_CLASSES | H.ENGINE_OPTIMIZERS) & tested:
        assert counts.get(name, (0,))[0] > 0, f"{name}: PyTorch has cases, the harvest ran none"
    listed = {c for names in NO_TWIN.values() for c in names}
    assert tested - H.ENGINE_CLASSES - H.ENGINE_OPTIMIZERS == listed, "NO_TWIN is out of date"


def test_readme_states_the_current_counts():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    assert counts_table() in readme, ("README.md's harvest table is out of date; paste the output of "
                                      "`python tests/test_torch_harvest.py`")


def test_every_scope_rule_and_known_difference_is_used():
    for _, reason, applies in OUT_OF_SCOPE:
        assert any(applies(c) for c in CASES), f"no case is out of scope for: {reason}"
    names = {c.name for c in APPLICABLE}
    assert set(KNOWN_DIFFERENCES) <= names, set(KNOWN_DIFFERENCES) - names


# --------------------------------------------------------------------------- the harness bites
def _first(cls):
    return next(c for c in APPLICABLE if c.cls == cls)


def test_harness_catches_a_wrong_output(monkeypatch):
    from engine import ops
    real = ops.silu
    monkeypatch.setattr(ops, "silu", lambda x: real(x) * 1.000001)
    with pytest.raises(H.Mismatch, match="output 0"):
        _first("SiLU").build()


def test_harness_catches_a_wrong_gradient(monkeypatch):
    from engine import ops
    real = ops.gelu_backward
    monkeypatch.setattr(ops, "gelu_backward", lambda g, x, approximate="none": real(g, x, approximate) * 1.000001)
    with pytest.raises(H.Mismatch, match="gradient of input"):
        _first("GELU").build()


def test_harness_catches_a_wrong_buffer(monkeypatch):
    import engine.nn as enn
    real_init = enn.BatchNorm2d.__init__

    def faster_running_stats(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if self.momentum is not None:
            self.momentum *= 1.01

    monkeypatch.setattr(enn.BatchNorm2d, "__init__", faster_running_stats)
    case = next(c for c in APPLICABLE if c.cls == "BatchNorm2d" and c.facts["training"])
    with pytest.raises(H.Mismatch, match="running_mean|running_var"):
        case.build()


def test_harness_catches_a_wrong_optimizer_step(monkeypatch):
    from engine import optim
    real_step = optim.SGD.step

    def larger_steps(self, closure=None):
        for group in self.param_groups:
            group["lr"] *= 1.001
        return real_step(self, closure)

    monkeypatch.setattr(optim.SGD, "step", larger_steps)
    case = next(c for c in APPLICABLE if c.cls == "SGD" and c.facts["kwargs"].get("momentum"))
    with pytest.raises(H.Mismatch, match="after step"):
        case.build()


if __name__ == "__main__":
    print(counts_table())
