"""SGD, Adam, AdamW, RMSprop, Adagrad and clip_grad_norm_ against torch.optim on
the same parameters and gradients (float64 trajectories, several groups,
maximize); PyTorch's signatures and defaults; state_dict round trips; argument
checks; backends."""
from __future__ import annotations

import copy
import inspect
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import engine
from engine import nn, optim

from _helpers import assert_raises, assert_rel, from_torch
from conftest import assert_close

torch = pytest.importorskip("torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of the "
                                            "optimizer tests")

SHAPES = [(4, 3), (5,), (2, 3, 2, 2)]
STEPS = 6

CONFIGS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_momentum": ("SGD", dict(lr=0.05, momentum=0.9)),
    "sgd_dampening": ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    "sgd_nesterov": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": ("SGD", dict(lr=0.1, weight_decay=0.01)),
    "sgd_all": ("SGD", dict(lr=0.03, momentum=0.7, weight_decay=0.05, nesterov=True)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam_betas_eps": ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    "adam_weight_decay": ("Adam", dict(lr=0.01, weight_decay=0.1)),
    "adam_amsgrad": ("Adam", dict(lr=0.01, amsgrad=True)),
    "adam_amsgrad_wd": ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    "adamw": ("AdamW", dict(lr=0.01)),
    "adamw_wd": ("AdamW", dict(lr=0.01, weight_decay=0.3)),
    "adamw_amsgrad": ("AdamW", dict(lr=0.02, weight_decay=0.1, amsgrad=True)),
    "sgd_maximize": ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01, maximize=True)),
    "adam_maximize": ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    "adam_decoupled": ("Adam", dict(lr=0.01, weight_decay=0.2, decoupled_weight_decay=True)),
    "adamw_maximize": ("AdamW", dict(lr=0.01, weight_decay=0.3, maximize=True)),
    "rmsprop": ("RMSprop", dict(lr=0.01)),
    "rmsprop_alpha_eps_wd": ("RMSprop", dict(lr=0.02, alpha=0.9, eps=1e-6, weight_decay=0.1)),
    "rmsprop_momentum": ("RMSprop", dict(lr=0.01, momentum=0.9)),
    "rmsprop_centered": ("RMSprop", dict(lr=0.01, centered=True)),
    "rmsprop_all": ("RMSprop", dict(lr=0.01, alpha=0.95, momentum=0.5, centered=True, weight_decay=0.05,
                                    maximize=True)),
    "adagrad": ("Adagrad", dict(lr=0.1)),
    "adagrad_decay_init": ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.3, eps=1e-6)),
    "adagrad_wd_maximize": ("Adagrad", dict(lr=0.1, weight_decay=0.1, maximize=True)),
    "sgd_flags": ("SGD", dict(lr=0.05, momentum=0.9, foreach=False, fused=False)),
    "adam_flags": ("Adam", dict(lr=0.01, foreach=True, capturable=False)),
}


def _values(dtype="float64", seed=0):
    r = np.random.default_rng(seed)
    return [r.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(step, dtype="float64"):
    """Gradients of step ``step``; the second parameter has none on step 2 (skipped by both)."""
    r = np.random.default_rng(100 + step)
    # Vary the scale over steps so that amsgrad's running max matters.
    gs = [(r.standard_normal(s) * (3.0 if step % 3 == 0 else 0.5)).astype(dtype) for s in SHAPES]
    if step == 2:
        gs[1] = None
    return gs


def _run_engine(name, kwargs, values, steps, backend="numpy", dtype="float64"):
    params = [nn.Parameter(engine.asarray(v.copy(), backend=backend)) for v in values]
    opt = getattr(optim, name)(params, **kwargs)
    for step in range(steps):
        for p, g in zip(params, _grads(step, dtype)):
            p.grad = None if g is None else engine.asarray(g, backend=backend)
        opt.step()
    return params, opt


def _run_torch(name, kwargs, values, steps, dtype="float64"):
    params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    opt = getattr(torch.optim, name)(params, **kwargs)
    for step in range(steps):
        for p, g in zip(params, _grads(step, dtype)):
            p.grad = None if g is None else torch.from_numpy(g)
        opt.step()
    return params, opt


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_steps_match_torch_optim(config, dtype):
    name, kwargs = CONFIGS[config]
    values = _values(dtype)
    ours, _ = _run_engine(name, kwargs, values, STEPS, dtype=dtype)
    theirs, _ = _run_torch(name, kwargs, values, STEPS, dtype=dtype)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for i, (p, t) in enumerate(zip(ours, theirs)):
        assert engine.to_numpy(p.data).dtype == np.dtype(dtype)
        assert_rel(p.data, from_torch(t), tol, f"parameter {i}")
        assert not np.array_equal(engine.to_numpy(p.data), values[i])  # it did move


@pytest.mark.parametrize("config", ["sgd_momentum", "sgd_nesterov", "adam", "adam_amsgrad", "adamw_wd",
                                    "rmsprop_all", "rmsprop_momentum", "adagrad_decay_init"])
def test_state_names_match_torch(config):
    name, kwargs = CONFIGS[config]
    _, ours = _run_engine(name, kwargs, _values(), 2)
    _, theirs = _run_torch(name, kwargs, _values(), 2)
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert sorted(sd["state"]) == sorted(tsd["state"]) == [0, 1, 2]
    for i in range(3):
        assert sorted(sd["state"][i]) == sorted(tsd["state"][i])
        for key, value in tsd["state"][i].items():
            if key == "step":
                assert int(sd["state"][i][key]) == int(value)
            else:
                assert_rel(sd["state"][i][key], from_torch(value), 1e-12, f"state {i} {key}")
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
    assert sd["param_groups"][0]["lr"] == kwargs["lr"]


@pytest.mark.parametrize("config", ["sgd_all", "adam_amsgrad", "adamw_wd", "rmsprop_all", "adagrad_decay_init"])
def test_state_dict_round_trip_continues_identically(config):
    name, kwargs = CONFIGS[config]
    params, opt = _run_engine(name, kwargs, _values(), 3)
    saved_params = [engine.to_numpy(p.data).copy() for p in params]
    saved = copy.deepcopy(opt.state_dict())
    # Continue the original 3 more steps.
    for step in range(3, 6):
        for p, g in zip(params, _grads(step)):
            p.grad = None if g is None else engine.asarray(g)
        opt.step()
    # A fresh optimizer on fresh parameters restored from the snapshot.
    fresh = [nn.Parameter(engine.asarray(v.copy())) for v in saved_params]
    opt2 = getattr(optim, name)(fresh, **{**kwargs, "lr": 123.0})  # lr comes back from the state_dict
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]
    for step in range(3, 6):
        for p, g in zip(fresh, _grads(step)):
            p.grad = None if g is None else engine.asarray(g)
        opt2.step()
    for a, b in zip(params, fresh):
        np.testing.assert_array_equal(engine.to_numpy(b.data), engine.to_numpy(a.data))
    # and the whole run equals torch's 6 steps
    theirs, _ = _run_torch(name, kwargs, _values(), 6)
    for a, t in zip(fresh, theirs):
        assert_rel(a.data, from_torch(t), 1e-12, "vs torch")


def test_state_dict_snapshot_is_not_changed_by_later_steps():
    params, opt = _run_engine("Adam", dict(lr=0.01), _values(), 2)
    sd = opt.state_dict()
    before = engine.to_numpy(sd["state"][0]["exp_avg"]).copy()
    step_before = sd["state"][0]["step"]
    for p, g in zip(params, _grads(5)):
        p.grad = engine.asarray(g)
    opt.step()
    np.testing.assert_array_equal(engine.to_numpy(sd["state"][0]["exp_avg"]), before)
    assert sd["state"][0]["step"] == step_before


@pytest.mark.parametrize("config", ["sgd_nesterov", "adam_amsgrad", "adamw_wd", "rmsprop_all",
                                    "adagrad_decay_init"])
def test_torch_optimizer_state_dict_loads_and_continues_identically(config):
    name, kwargs = CONFIGS[config]
    theirs, topt = _run_torch(name, kwargs, _values(), 3)
    ours = [nn.Parameter(from_torch(t).copy()) for t in theirs]
    opt = getattr(optim, name)(ours, **kwargs)
    opt.load_state_dict(topt.state_dict())  # tensors, a tensor "step", torch's extra group keys
    for step in range(3, 6):
        for p, t, g in zip(ours, theirs, _grads(step)):
            p.grad, t.grad = (None, None) if g is None else (g, torch.from_numpy(g))
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        assert_rel(p.data, from_torch(t), 1e-12, "param")


def test_optimizer_load_state_dict_in_a_fresh_process():
    code = textwrap.dedent("""
        import numpy as np
        from engine import nn, optim
        p = nn.Parameter(np.zeros(3))
        opt = optim.SGD([p], lr=0.1, momentum=0.9)
        opt.load_state_dict({"state": {0: {"momentum_buffer": np.ones(3)}},
                             "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0.0,
                                               "weight_decay": 0.0, "nesterov": False, "params": [0]}]})
        p.grad = np.ones(3)
        opt.step()
        assert np.allclose(p.data, -0.1 * 1.9), p.data
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_load_state_dict_rejects_other_groups():
    _, opt = _run_engine("SGD", dict(lr=0.1, momentum=0.9), _values(), 1)
    other = optim.SGD([nn.Parameter(np.zeros(3))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameter groups do not match"):
        other.load_state_dict(opt.state_dict())


def test_parameter_groups_with_their_own_lr_match_torch():
    values = _values()
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    opt = optim.SGD([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.5}], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.5}], lr=0.1, momentum=0.9)
    for step in range(4):
        for p, t, g in zip(ours, theirs, _grads(step)):
            p.grad, t.grad = (None, None) if g is None else (g, torch.from_numpy(g))
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        assert_rel(p.data, from_torch(t), 1e-12, "param")


GROUP_CONFIGS = {
    "SGD": (dict(lr=0.1, momentum=0.9), dict(lr=0.02, momentum=0.5, dampening=0.2, weight_decay=0.1,
                                             maximize=True)),
    "Adam": (dict(lr=0.01), dict(lr=0.03, betas=(0.8, 0.9), amsgrad=True, weight_decay=0.1)),
    "AdamW": (dict(lr=0.01, weight_decay=0.1), dict(lr=0.02, eps=1e-4, maximize=True)),
    "RMSprop": (dict(lr=0.01, centered=True), dict(lr=0.005, momentum=0.8, alpha=0.9)),
    "Adagrad": (dict(lr=0.1, lr_decay=0.1), dict(lr=0.3, initial_accumulator_value=0.5, weight_decay=0.2)),
}


@pytest.mark.parametrize("name", list(GROUP_CONFIGS))
def test_several_parameter_groups_follow_torch_over_six_steps(name):
    defaults, second = GROUP_CONFIGS[name]
    values = _values()
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    opt = getattr(optim, name)([{"params": ours[:1]}, {"params": ours[1:], **second}], **defaults)
    topt = getattr(torch.optim, name)([{"params": theirs[:1]}, {"params": theirs[1:], **second}], **defaults)
    for step in range(STEPS):
        for p, t, g in zip(ours, theirs, _grads(step)):
            p.grad, t.grad = (None, None) if g is None else (g, torch.from_numpy(g))
        opt.step()
        topt.step()
    for i, (p, t) in enumerate(zip(ours, theirs)):
        assert_rel(p.data, from_torch(t), 1e-12, f"param {i}")
    ours_groups, their_groups = opt.state_dict()["param_groups"], topt.state_dict()["param_groups"]
    for mine, its in zip(ours_groups, their_groups):
        assert sorted(mine) == sorted(its)  # the same keys, foreach/fused/... included
        assert mine == its


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_signatures_and_defaults_are_pytorchs(name):
    ours = inspect.signature(getattr(optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    assert list(ours) == list(theirs)
    for key, param in theirs.items():
        assert ours[key].kind == param.kind, key
        if param.default is not inspect.Parameter.empty:
            assert ours[key].default == param.default, key
    # and the groups hold the same defaults
    p = [nn.Parameter(np.zeros(2))]
    mine = getattr(optim, name)(p).param_groups[0]
    its = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))]).param_groups[0]
    assert {k: v for k, v in mine.items() if k != "params"} == {k: v for k, v in its.items() if k != "params"}


def test_sgd_default_lr_is_pytorchs_1e_3():
    p = nn.Parameter(np.ones(2))
    p.grad = np.ones(2)
    optim.SGD([p]).step()
    np.testing.assert_array_equal(p.data, np.ones(2) - 1e-3)


def test_named_parameters_keep_their_names_like_torch():
    values = _values()
    ours = optim.SGD([(f"w{i}", nn.Parameter(v)) for i, v in enumerate(values)], lr=0.1)
    theirs = torch.optim.SGD([(f"w{i}", torch.nn.Parameter(torch.from_numpy(v))) for i, v in enumerate(values)],
                             lr=0.1)
    assert ours.state_dict()["param_groups"][0]["param_names"] == ["w0", "w1", "w2"]
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


def test_step_returns_the_closures_value_and_add_param_group():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))
    opt = optim.Adagrad([a], lr=0.5)
    opt.add_param_group({"params": [b], "lr": 0.1})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["eps"] == 1e-10
    assert sorted(opt.state) == [0, 1]  # Adagrad's accumulators exist before the first step, as in torch
    a.grad, b.grad = np.ones(2), np.ones(3)
    assert opt.step(lambda: 3.5) == 3.5
    np.testing.assert_allclose(b.data, 1 - 0.1 / (1 + 1e-10))
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([a, a])


def test_zero_grad_set_to_none_false_keeps_zero_arrays():
    p = nn.Parameter(np.ones(3))
    p.grad = np.ones(3)
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


def test_zero_grad_clears_every_gradient():
    params, opt = _run_engine("SGD", dict(lr=0.1), _values(), 1)
    for p, g in zip(params, _grads(0)):
        p.grad = g
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    opt.step()  # nothing to do, nothing moves
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("make, match", [
    (lambda ps: optim.SGD(ps, lr=-0.1), "lr must be >= 0"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening = 0"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), r"betas must be in \[0, 1\)"),
    (lambda ps: optim.AdamW(ps, betas=(0.9, -0.1)), r"AdamW: betas"),
    (lambda ps: optim.Adam(ps, eps=-1.0), "eps must be >= 0"),
    (lambda ps: optim.Adam([], lr=0.1), "empty parameter list"),
])
def test_bad_optimizer_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make([nn.Parameter(np.zeros(2))])


NAN, INF = float("nan"), float("inf")
BAD_ARGUMENTS = [
    # (class, kwargs, exception, words the message must contain)
    ("Adam", dict(lr=NAN), ValueError, ["Adam", "lr must be finite", "nan"]),
    ("AdamW", dict(lr=INF), ValueError, ["AdamW", "lr must be finite", "inf"]),
    ("SGD", dict(lr="0.1"), TypeError, ["SGD", "lr must be a real number", "str", "'0.1'"]),
    ("SGD", dict(lr=None), TypeError, ["SGD", "lr must be a real number", "None"]),
    ("SGD", dict(lr=True), TypeError, ["SGD", "lr must be a real number", "bool"]),
    ("SGD", dict(momentum=-1), ValueError, ["SGD", "momentum must be >= 0", "-1"]),
    ("SGD", dict(momentum=NAN), ValueError, ["SGD", "momentum must be finite"]),
    ("SGD", dict(weight_decay=-0.1), ValueError, ["SGD", "weight_decay must be >= 0", "-0.1"]),
    ("SGD", dict(dampening="x"), TypeError, ["SGD", "dampening must be a real number"]),
    ("SGD", dict(nesterov=True), ValueError, ["SGD", "nesterov", "momentum > 0", "momentum=0"]),
    ("SGD", dict(momentum=0.9, dampening=0.5, nesterov=True), ValueError, ["dampening = 0", "dampening=0.5"]),
    ("SGD", dict(nesterov="yes"), TypeError, ["SGD", "nesterov must be True or False", "'yes'"]),
    ("SGD", dict(maximize=1), TypeError, ["SGD", "maximize must be True or False", "int"]),
    ("Adam", dict(betas=(0.9,)), TypeError, ["Adam", "betas must be a pair"]),
    ("Adam", dict(betas=0.9), TypeError, ["Adam", "betas must be a pair"]),
    ("Adam", dict(betas=(0.9, NAN)), ValueError, ["Adam", "betas must be in [0, 1)", "betas[1]=nan"]),
    ("Adam", dict(eps=NAN), ValueError, ["Adam", "eps must be finite"]),
    ("Adam", dict(weight_decay=-1.0), ValueError, ["Adam", "weight_decay must be >= 0"]),
    ("Adam", dict(amsgrad=None), TypeError, ["Adam", "amsgrad must be True or False"]),
    ("AdamW", dict(weight_decay=INF), ValueError, ["AdamW", "weight_decay must be finite"]),
    ("RMSprop", dict(alpha=-0.5), ValueError, ["RMSprop", "alpha must be >= 0", "-0.5"]),
    ("RMSprop", dict(momentum=-0.1), ValueError, ["RMSprop", "momentum must be >= 0"]),
    ("RMSprop", dict(eps=-1e-8), ValueError, ["RMSprop", "eps must be >= 0"]),
    ("RMSprop", dict(centered="no"), TypeError, ["RMSprop", "centered must be True or False"]),
    ("Adagrad", dict(lr_decay=-1), ValueError, ["Adagrad", "lr_decay must be >= 0"]),
    ("Adagrad", dict(initial_accumulator_value=-1), ValueError, ["Adagrad", "initial_accumulator_value"]),
    ("Adagrad", dict(eps=NAN), ValueError, ["Adagrad", "eps must be finite"]),
    ("Adam", dict(differentiable=True), ValueError, ["Adam", "differentiable=True", "does not do"]),
    ("SGD", dict(fused=True, foreach=True), ValueError, ["SGD", "fused=True and foreach=True"]),
    ("Adam", dict(foreach="fast"), TypeError, ["Adam", "foreach must be True or False"]),
]


@pytest.mark.parametrize("name, kwargs, exc, words", BAD_ARGUMENTS,
                         ids=[f"{n}-{'-'.join(k)}" for n, k, _, _ in BAD_ARGUMENTS])
def test_bad_arguments_raise_clear_errors_naming_the_argument(name, kwargs, exc, words):
    assert_raises(exc, lambda: getattr(optim, name)([nn.Parameter(np.zeros(2))], **kwargs), *words)


def test_bad_group_hyper_parameters_are_checked_too():
    with pytest.raises(ValueError, match=r"Adam: lr must be finite, got nan"):
        optim.Adam([{"params": [nn.Parameter(np.zeros(2))], "lr": math.nan}])
    opt = optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    sd["param_groups"][0]["momentum"] = -1.0
    with pytest.raises(ValueError, match="SGD: momentum must be >= 0"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["momentum"] == 0.9  # nothing changed
    with pytest.raises(TypeError, match="single ndarray|single Parameter"):
        optim.SGD(nn.Parameter(np.zeros(2)), lr=0.1)


def test_load_state_dict_refuses_state_of_the_wrong_shape():
    opt = optim.Adam([nn.Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match=r"state 'exp_avg' of parameter 0 has shape \(2,\), the parameter \(3,\)"):
        opt.load_state_dict({"state": {0: {"step": 1, "exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(3)}},
                             "param_groups": opt.state_dict()["param_groups"]})


def test_implementation_flags_are_accepted_and_change_nothing():
    runs = []
    for flags in (dict(), dict(foreach=True), dict(fused=True), dict(capturable=True)):
        params, _ = _run_engine("Adam", dict(lr=0.01, **flags), _values(), 3)
        runs.append([engine.to_numpy(p.data) for p in params])
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)


def test_optimizer_rejects_raw_arrays():
    with pytest.raises(TypeError, match=r"SGD: expected engine.nn.Parameter objects.*got ndarray"):
        optim.SGD([np.zeros(3)], lr=0.1)


# --------------------------------------------------------------------------- clip_grad_norm_
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm, dtype):
    values = _values(dtype)
    grads = _grads(0, dtype)
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
    ours.append(nn.Parameter(np.zeros(2, dtype=dtype)))  # a parameter without gradient is ignored
    total = optim.clip_grad_norm_(ours, max_norm)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    tol = 1e-12 if dtype == "float64" else 1e-6
    assert_rel(np.asarray(engine.to_numpy(total)), from_torch(t_total), tol, "total norm")
    for p, t in zip(ours, theirs):
        assert_rel(p.grad, from_torch(t.grad), tol, "clipped grad")
        assert engine.to_numpy(p.grad).dtype == np.dtype(dtype)
    assert ours[-1].grad is None
    norm_after = np.sqrt(sum(float(np.sum(engine.to_numpy(p.grad).astype(np.float64) ** 2)) for p in ours[:-1]))
    assert norm_after <= max_norm * (1 + 1e-6)
    if max_norm > float(total):
        for p, g in zip(ours, grads):
            np.testing.assert_array_equal(engine.to_numpy(p.grad), g)  # scale 1: untouched


def test_clip_grad_norm_is_exported_from_nn_utils_and_rejects_bad_max_norm():
    assert optim.clip_grad_norm_ is nn.utils.clip_grad_norm_
    p = nn.Parameter(np.ones(3))
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match="max_norm must be positive"):
        optim.clip_grad_norm_([p], 0.0)


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("config", ["sgd_all", "adam_amsgrad", "adamw_wd", "rmsprop_all", "adagrad_decay_init"])
def test_optimizers_on_every_backend(backend, config):
    name, kwargs = CONFIGS[config]
    want, _ = _run_engine(name, kwargs, _values(), 4, backend="numpy")
    got, opt = _run_engine(name, kwargs, _values(), 4, backend=backend.name)
    for a, b in zip(got, want):
        assert_close(a.data, engine.to_numpy(b.data), rtol=1e-14, backend=backend)
    params = got
    for p, g in zip(params, _grads(0)):
        p.grad = backend.asarray(g)
    total = optim.clip_grad_norm_(params, 1.0)
    assert_close(total, np.sqrt(sum(np.sum(g ** 2) for g in _grads(0))), rtol=1e-13, backend=backend)


@pytest.mark.parametrize("config", ["sgd_maximize", "adam_maximize", "adam_decoupled", "adamw_maximize",
                                    "rmsprop_all", "rmsprop_momentum", "adagrad_decay_init", "adam_flags"])
def test_every_optimizer_survives_a_checkpoint_file(tmp_path, config):
    """save_checkpoint/load_checkpoint keep the new optimizers and flags; the run continues identically."""
    from engine.checkpoint import load_checkpoint, save_checkpoint
    name, kwargs = CONFIGS[config]
    params, opt = _run_engine(name, kwargs, _values(), 3)
    path = save_checkpoint(tmp_path / "ck.npz", None, opt)
    fresh = [nn.Parameter(engine.to_numpy(p.data).copy()) for p in params]
    opt2 = getattr(optim, name)(fresh, **kwargs)
    load_checkpoint(path, optimizer=opt2)
    for step in range(3, 6):
        for a, b, g in zip(params, fresh, _grads(step)):
            a.grad = b.grad = None if g is None else engine.asarray(g)
        opt.step()
        opt2.step()
    for a, b in zip(params, fresh):
        np.testing.assert_array_equal(engine.to_numpy(b.data), engine.to_numpy(a.data))


def test_a_checkpoint_without_the_new_group_keys_still_loads(tmp_path):
    """Files written before maximize/foreach/... were group keys load into today's optimizers,
    which keep their own values of the missing keys."""
    import json

    import _checkpoint_files as files
    from engine.checkpoint import load_checkpoint, save_checkpoint
    params, opt = _run_engine("Adam", dict(lr=0.01, amsgrad=True), _values(), 2)
    path = save_checkpoint(tmp_path / "new.npz", None, opt)
    groups = files.json_of(files.members(path), "optimizer/param_groups")
    old_groups = [{k: v for k, v in g.items() if k in ("params", "lr", "betas", "eps", "weight_decay", "amsgrad")}
                  for g in groups]
    files.edit(path, tmp_path / "old.npz", {"optimizer/param_groups": files.text(old_groups)})
    opt2 = optim.Adam([nn.Parameter(engine.to_numpy(p.data).copy()) for p in params], lr=0.5, maximize=True)
    load_checkpoint(tmp_path / "old.npz", optimizer=opt2)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["amsgrad"] is True
    assert opt2.param_groups[0]["maximize"] is True  # not in the file: the optimizer's own
    assert json.dumps(opt2.state_dict()["param_groups"][0]["betas"]) == "[0.9, 0.999]"
