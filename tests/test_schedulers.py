"""Learning-rate schedulers against torch.optim.lr_scheduler: the rates (and
OneCycleLR's momentum/betas) step by step, with several parameter groups;
SequentialLR chains; ReduceLROnPlateau on a metric sequence; state_dict round
trips through JSON (as checkpoints store them); argument checks."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine import nn, optim, schedulers as S

from _helpers import assert_raises

torch = pytest.importorskip("torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of the "
                                            "scheduler tests")
TS = torch.optim.lr_scheduler


def _optimizers(kind="SGD", lrs=(0.1, 0.02), **kwargs):
    """An engine optimizer and its torch twin, one parameter group per rate."""
    ours = getattr(optim, kind)([{"params": [nn.Parameter(np.zeros(2))], "lr": lr} for lr in lrs], **kwargs)
    theirs = getattr(torch.optim, kind)([{"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))],
                                          "lr": lr} for lr in lrs], **kwargs)
    return ours, theirs


def _hyper(opt):
    """What a scheduler may write: rates, momentum and betas of every group."""
    return [(g["lr"], g.get("momentum"), tuple(g["betas"]) if "betas" in g else None) for g in opt.param_groups]


def _assert_same(ours, theirs, step):
    for (lr, mom, betas), (tlr, tmom, tbetas) in zip(_hyper(ours), _hyper(theirs)):
        assert lr == pytest.approx(tlr, rel=1e-14, abs=1e-300), f"step {step}: lr {lr} != {tlr}"
        if tmom is not None:
            assert mom == pytest.approx(tmom, rel=1e-14), f"step {step}: momentum"
        if tbetas is not None:
            assert betas == pytest.approx(tbetas, rel=1e-14), f"step {step}: betas"


def _run_both(make_ours, make_theirs, steps, kind="SGD", optimizer_kwargs=None, metrics=None):
    ours_opt, their_opt = _optimizers(kind, **(optimizer_kwargs or {}))
    ours, theirs = make_ours(ours_opt), make_theirs(their_opt)
    _assert_same(ours_opt, their_opt, 0)
    for step in range(steps):
        their_opt.step()  # torch warns when a scheduler steps before its optimizer
        if metrics is None:
            ours.step()
            theirs.step()
        else:
            ours.step(metrics[step])
            theirs.step(metrics[step])
        _assert_same(ours_opt, their_opt, step + 1)
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-14)
    return ours, theirs


CASES = {
    "step": (lambda o: S.StepLR(o, 3, 0.5), lambda o: TS.StepLR(o, 3, 0.5)),
    "multistep": (lambda o: S.MultiStepLR(o, [2, 5, 5, 9], gamma=0.3),
                  lambda o: TS.MultiStepLR(o, [2, 5, 5, 9], gamma=0.3)),
    "exponential": (lambda o: S.ExponentialLR(o, 0.9), lambda o: TS.ExponentialLR(o, 0.9)),
    "linear_warmup": (lambda o: S.LinearLR(o, start_factor=0.1, total_iters=4),
                      lambda o: TS.LinearLR(o, start_factor=0.1, total_iters=4)),
    "linear_decay": (lambda o: S.LinearLR(o, 1.0, 0.25, 6), lambda o: TS.LinearLR(o, 1.0, 0.25, 6)),
    "linear_default": (lambda o: S.LinearLR(o), lambda o: TS.LinearLR(o)),
    "cosine": (lambda o: S.CosineAnnealingLR(o, 5, 1e-3), lambda o: TS.CosineAnnealingLR(o, 5, 1e-3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_epoch_schedulers_match_torch_with_two_groups(case):
    make_ours, make_theirs = CASES[case]
    _run_both(make_ours, make_theirs, 14)


def _sequential(lib, opt, parts, milestones):
    return lib.SequentialLR(opt, [make(opt) for make in parts], milestones)


SEQUENTIAL = {
    "warmup_cosine": ([lambda o, L: L.LinearLR(o, 0.1, 1.0, 3), lambda o, L: L.CosineAnnealingLR(o, 8)], [3]),
    "warmup_exponential": ([lambda o, L: L.LinearLR(o, 0.25, total_iters=2), lambda o, L: L.ExponentialLR(o, 0.8)],
                           [2]),
    "three": ([lambda o, L: L.ExponentialLR(o, 0.9), lambda o, L: L.StepLR(o, 2, 0.5),
               lambda o, L: L.MultiStepLR(o, [1, 3], 0.1)], [4, 7]),
}


@pytest.mark.parametrize("case", list(SEQUENTIAL))
def test_sequential_lr_matches_torch(case):
    parts, milestones = SEQUENTIAL[case]
    _run_both(lambda o: S.SequentialLR(o, [p(o, S) for p in parts], milestones),
              lambda o: TS.SequentialLR(o, [p(o, TS) for p in parts], milestones), 13)


ONE_CYCLE = {
    "sgd_cos": ("SGD", dict(momentum=0.9), dict(max_lr=0.5, total_steps=20)),
    "sgd_linear_three_phase": ("SGD", dict(momentum=0.9, nesterov=True),
                               dict(max_lr=[0.5, 0.1], epochs=3, steps_per_epoch=7, anneal_strategy="linear",
                                    three_phase=True, pct_start=0.25)),
    "adam_betas": ("Adam", dict(), dict(max_lr=0.01, total_steps=15, div_factor=10.0, final_div_factor=100.0,
                                        base_momentum=0.8, max_momentum=[0.9, 0.95])),
    "adamw_no_momentum": ("AdamW", dict(), dict(max_lr=0.01, total_steps=12, cycle_momentum=False)),
    "rmsprop": ("RMSprop", dict(momentum=0.5), dict(max_lr=0.02, total_steps=10, pct_start=0.5)),
}


@pytest.mark.parametrize("case", list(ONE_CYCLE))
def test_one_cycle_matches_torch_rates_and_momentum(case):
    kind, opt_kwargs, kwargs = ONE_CYCLE[case]
    steps = kwargs.get("total_steps") or kwargs["epochs"] * kwargs["steps_per_epoch"]
    ours, _ = _run_both(lambda o: S.OneCycleLR(o, **kwargs), lambda o: TS.OneCycleLR(o, **kwargs), steps,
                        kind=kind, optimizer_kwargs=opt_kwargs)
    with pytest.raises(ValueError, match=f"past total_steps={steps}"):
        ours.step()


def test_one_cycle_drives_a_real_training_like_torch():
    """The rates and betas a OneCycleLR sets are the ones the optimizer uses."""
    r = np.random.default_rng(0)
    w0 = r.standard_normal(5)
    ours_p, their_p = nn.Parameter(w0.copy()), torch.nn.Parameter(torch.from_numpy(w0.copy()))
    ours_opt, their_opt = optim.Adam([ours_p]), torch.optim.Adam([their_p])
    ours, theirs = S.OneCycleLR(ours_opt, 0.1, total_steps=8), TS.OneCycleLR(their_opt, 0.1, total_steps=8)
    for step in range(8):
        g = r.standard_normal(5)
        ours_p.grad, their_p.grad = g, torch.from_numpy(g)
        ours_opt.step()
        their_opt.step()
        ours.step()
        theirs.step()
    np.testing.assert_allclose(ours_p.data, their_p.detach().numpy(), rtol=1e-12)


def test_reduce_on_plateau_matches_torch():
    metrics = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.8, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.5, 0.6, 0.7, 0.8, 0.9,
               1.0, 1.1]
    for kwargs in (dict(patience=2), dict(mode="max", factor=0.5, patience=1, cooldown=2),
                   dict(patience=0, threshold=0.1, threshold_mode="abs", min_lr=[0.05, 1e-3]),
                   dict(patience=1, min_lr=0.01, eps=1e-3)):
        _run_both(lambda o: S.ReduceLROnPlateau(o, **kwargs), lambda o: TS.ReduceLROnPlateau(o, **kwargs),
                  len(metrics), metrics=metrics)


def test_reduce_on_plateau_needs_a_metric():
    sched = S.ReduceLROnPlateau(_optimizers()[0])
    with pytest.raises(TypeError, match=r"step\(metrics\) needs the value it watches"):
        sched.step()
    with pytest.raises(TypeError, match="metrics must be a number"):
        sched.step("low")


def _continue(make, steps_before, steps_after, metrics=None, kind="SGD", opt_kwargs=None):
    """Run ``steps_before``, save both states through JSON, load them into fresh
    objects and check the next ``steps_after`` rates equal an uninterrupted run's."""
    def advance(sched, i):
        sched.step() if metrics is None else sched.step(metrics[i])

    opt, _ = _optimizers(kind, **(opt_kwargs or {}))
    sched = make(opt)
    for i in range(steps_before):
        advance(sched, i)
    saved_opt = json.loads(json.dumps(opt.state_dict()))
    saved = json.loads(json.dumps(sched.state_dict()))
    fresh_opt, _ = _optimizers(kind, **(opt_kwargs or {}))
    fresh = make(fresh_opt)
    fresh_opt.load_state_dict(saved_opt)
    fresh.load_state_dict(saved)
    for i in range(steps_before, steps_before + steps_after):
        advance(sched, i)
        advance(fresh, i)
        assert _hyper(fresh_opt) == _hyper(opt), f"step {i}"
        assert fresh.get_last_lr() == sched.get_last_lr()


@pytest.mark.parametrize("case", list(CASES))
def test_epoch_scheduler_state_survives_json(case):
    _continue(CASES[case][0], 4, 6)


def test_composite_scheduler_states_survive_json():
    parts, milestones = SEQUENTIAL["three"]
    _continue(lambda o: S.SequentialLR(o, [p(o, S) for p in parts], milestones), 5, 6)
    _continue(lambda o: S.OneCycleLR(o, 0.01, total_steps=12), 5, 7, kind="Adam")
    metrics = [1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    _continue(lambda o: S.ReduceLROnPlateau(o, patience=1, cooldown=1), 4, 5, metrics=metrics)


def test_torch_state_dicts_load():
    ours_opt, their_opt = _optimizers()
    theirs = TS.MultiStepLR(their_opt, [2, 4], 0.5)
    for _ in range(3):
        their_opt.step()
        theirs.step()
    ours_opt.load_state_dict(their_opt.state_dict())
    ours = S.MultiStepLR(ours_opt, [7], 0.9)
    ours.load_state_dict(theirs.state_dict())  # a Counter of milestones
    for _ in range(3):
        ours.step()
        theirs.step()
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-15)


def test_step_with_an_epoch_uses_the_closed_form_like_torch():
    for make_ours, make_theirs in CASES.values():
        ours_opt, their_opt = _optimizers()
        ours, theirs = make_ours(ours_opt), make_theirs(their_opt)
        with pytest.warns(UserWarning):
            theirs.step(7)
        ours.step(7)
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-14)


BAD = [
    (lambda o: S.StepLR(o, 0), ValueError, "StepLR: step_size must be >= 1, got 0"),
    (lambda o: S.StepLR(o, 2.5), TypeError, "StepLR: step_size must be an int, got float 2.5"),
    (lambda o: S.StepLR(o, 2, gamma=math.nan), ValueError, "StepLR: gamma must be finite, got nan"),
    (lambda o: S.MultiStepLR(o, 3), TypeError, "MultiStepLR: milestones must be a list of ints"),
    (lambda o: S.MultiStepLR(o, [2, -1]), ValueError, "MultiStepLR: milestones must be >= 0, got -1"),
    (lambda o: S.ExponentialLR(o, "0.9"), TypeError, "ExponentialLR: gamma must be a real number, got str"),
    (lambda o: S.LinearLR(o, start_factor=0.0), ValueError, "LinearLR: start_factor must be in (0, 1], got 0.0"),
    (lambda o: S.LinearLR(o, end_factor=1.5), ValueError, "LinearLR: end_factor must be in [0, 1], got 1.5"),
    (lambda o: S.LinearLR(o, total_iters=0), ValueError, "LinearLR: total_iters must be >= 1"),
    (lambda o: S.CosineAnnealingLR(o, 10, eta_min=-1.0), ValueError, "eta_min must be >= 0"),
    (lambda o: S.OneCycleLR(o, 0.1), ValueError, "give total_steps, or both epochs and steps_per_epoch"),
    (lambda o: S.OneCycleLR(o, math.inf, total_steps=5), ValueError, "OneCycleLR: max_lr must be finite"),
    (lambda o: S.OneCycleLR(o, [0.1], total_steps=5), ValueError, "expected 2 values of max_lr"),
    (lambda o: S.OneCycleLR(o, 0.1, total_steps=5, pct_start=1.5), ValueError, "pct_start must be in [0, 1]"),
    (lambda o: S.OneCycleLR(o, 0.1, total_steps=5, anneal_strategy="exp"), ValueError,
     "anneal_strategy must be one of 'cos', 'linear', got 'exp'"),
    (lambda o: S.OneCycleLR(o, 0.1, total_steps=5, div_factor=0), ValueError, "div_factor must be > 0"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, "ReduceLROnPlateau: factor must be in [0, 1)"),
    (lambda o: S.ReduceLROnPlateau(o, mode="lowest"), ValueError, "mode must be one of 'min', 'max'"),
    (lambda o: S.ReduceLROnPlateau(o, patience=-1), ValueError, "patience must be >= 0"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "expected 2 values of min_lr"),
    (lambda o: S.ReduceLROnPlateau(o, threshold=math.nan), ValueError, "threshold must be finite"),
    (lambda o: S.SequentialLR(o, [], []), ValueError, "at least one scheduler"),
    (lambda o: S.SequentialLR(o, [S.ExponentialLR(o, 0.9), S.StepLR(o, 2)], []), ValueError,
     "one milestone fewer than schedulers"),
    (lambda o: S.SequentialLR(o, [S.ExponentialLR(o, 0.9), S.ReduceLROnPlateau(o)], [2]), ValueError,
     "cannot be chained"),
    (lambda o: S.SequentialLR(o, [S.ExponentialLR(o, 0.9), S.StepLR(_optimizers()[0], 2)], [2]), ValueError,
     "drives another optimizer"),
    (lambda o: S.StepLR(object(), 2), TypeError, "StepLR: expected an engine.optim optimizer, got object"),
]


@pytest.mark.parametrize("make, exc, text", BAD, ids=[t[:40] for _, _, t in BAD])
def test_bad_scheduler_arguments(make, exc, text):
    assert_raises(exc, lambda: make(_optimizers()[0]), text)


def test_one_cycle_needs_momentum_to_cycle():
    opt = optim.Adagrad([nn.Parameter(np.zeros(2))])
    with pytest.raises(ValueError, match="cycle_momentum=True needs an optimizer with momentum or betas"):
        S.OneCycleLR(opt, 0.1, total_steps=5)
    S.OneCycleLR(opt, 0.1, total_steps=5, cycle_momentum=False)


def test_get_scheduler_names():
    opt = _optimizers()[0]
    assert isinstance(S.get_scheduler("multistep", opt, epochs=8), S.MultiStepLR)
    assert isinstance(S.get_scheduler("exponential", opt, epochs=8, gamma=0.9), S.ExponentialLR)
    assert S.get_scheduler(None, opt, epochs=3) is None


def _through_a_checkpoint(tmp_path, opt, sched, make_opt, make_sched):
    from engine.checkpoint import load_checkpoint, save_checkpoint
    path = save_checkpoint(tmp_path / "ck.npz", None, opt, scheduler=sched)
    fresh_opt = make_opt()
    fresh = make_sched(fresh_opt)
    load_checkpoint(path, optimizer=fresh_opt, scheduler=fresh)
    return fresh_opt, fresh


@pytest.mark.parametrize("case", ["plateau", "one_cycle", "sequential", "multistep", "linear"])
def test_every_scheduler_survives_a_checkpoint_file(tmp_path, case):
    """save_checkpoint/load_checkpoint (JSON, checked against the live scheduler) keep the run going."""
    kind = "Adam" if case == "one_cycle" else "SGD"
    make = {
        "plateau": lambda o: S.ReduceLROnPlateau(o, patience=1),
        "one_cycle": lambda o: S.OneCycleLR(o, 0.01, total_steps=10),
        "sequential": lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, total_iters=2), S.ExponentialLR(o, 0.9)], [2]),
        "multistep": lambda o: S.MultiStepLR(o, [1, 3, 3]),
        "linear": lambda o: S.LinearLR(o, 0.2, 1.0, 4),
    }[case]
    metrics = [1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8]
    step = (lambda s, i: s.step(metrics[i])) if case == "plateau" else (lambda s, i: s.step())
    for before in (0, 3):  # a fresh ReduceLROnPlateau has best = inf: saved as None
        opt, _ = _optimizers(kind)
        sched = make(opt)
        for i in range(before):
            step(sched, i)
        fresh_opt, fresh = _through_a_checkpoint(tmp_path, opt, sched, lambda: _optimizers(kind)[0], make)
        for i in range(before, before + 4):
            step(sched, i)
            step(fresh, i)
            assert fresh.get_last_lr() == sched.get_last_lr() and _hyper(fresh_opt) == _hyper(opt)
