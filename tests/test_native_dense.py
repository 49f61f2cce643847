"""The NumPy backend's C linear layers and optimizer updates (kernels/cpu_dense.c via
backends/native_dense.py).

Linear: shapes that cross every tile edge of the forward's dot-product tiles (rows of x
in fours or threes, rows of W in fours or threes, the last rows one at a time against
eight rows of W, reduction blocks of 2048 and their vector tails) and of the backward's
register tiles (8 or 6 rows, panels of 48 or 16 columns and their masked tails, reduction
blocks of 256), against a float64 reference and PyTorch; that the path is really taken; that
results do not depend on the thread count; that NumPy takes over where the kernels do not
apply. Optimizers: SGD (momentum, dampening, Nesterov, weight decay, maximize) and
Adam/AdamW (L2 or decoupled decay, amsgrad, maximize) give NumPy's update bit for bit over
several steps (NaN gradients included), and follow torch.optim.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine import backends, nn, ops, optim
from engine.backends import host_threads, native_dense
from engine.kernels import native

from _helpers import assert_rel, avx2_rerun, from_torch, run_file_under_avx2, to_torch, torch_or_skip

pytestmark = pytest.mark.skipif(native.library() is None,
                                reason=f"the C kernels are not usable here: {native.status()}")

# (M batch, N out_features, K in_features): what each case exercises
LINEAR_CASES = {
    "simplecnn_fc1": (64, 128, 3136),  # two reduction blocks, 16-wide tails of K
    "tails": (7, 13, 37),              # a partial row tile, a partial column tile, a 5-float K tail
    "two_rows": (2, 19, 300),          # only the one-row tile, against 8 rows of W, the last partial
    "deep": (5, 9, 4100),              # three reduction blocks, 4 full row tiles + one row
    "lenet_fc1": (33, 120, 400),
    "one_feature": (70, 1, 4000),
    "long_backward": (260, 300, 50),   # backward reductions over 300 and 260: two blocks of <= 256
}


def _linear_data(case, seed=0):
    m, n, k = LINEAR_CASES[case]
    r = np.random.default_rng(seed)
    x = r.standard_normal((m, k)).astype(np.float32)
    w = (r.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    b = r.standard_normal(n).astype(np.float32)
    g = r.standard_normal((m, n)).astype(np.float32)
    return x, w, b, g


@pytest.fixture
def small_products_too(monkeypatch):
    """Every product through the kernels, however small (the layers leave tiny ones to NumPy)."""
    monkeypatch.setattr(native_dense, "MIN_MACS", 0)


@pytest.mark.parametrize("case", list(LINEAR_CASES))
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward_matches_float64_and_torch(case, with_bias, small_products_too):
    torch = torch_or_skip()
    x, w, b, _ = _linear_data(case)
    b = b if with_bias else None
    y = native_dense.linear(x, w, b)
    assert y is not None and y.dtype == np.float32 and y.shape == (x.shape[0], w.shape[0])
    ref = x.astype(np.float64) @ w.astype(np.float64).T + (0 if b is None else b.astype(np.float64))
    assert_rel(y, ref, 1e-6, "vs float64")
    t = torch.nn.functional.linear(to_torch(x), to_torch(w), None if b is None else to_torch(b))
    assert_rel(y, from_torch(t), 1e-5, "vs torch")
    assert_rel(ops.linear(x, w, b), ref, 1e-6, "engine.ops.linear")


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_linear_backward_matches_float64_and_torch(case, small_products_too):
    torch = torch_or_skip()
    x, w, b, g = _linear_data(case)
    dx, dw = native_dense.linear_backward(g, x, w, True, True)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    assert_rel(dx, g64 @ w64, 1e-6, "dx")
    assert_rel(dw, g64.T @ x64, 1e-6, "dW")
    tx, tw, tb = to_torch(x, True), to_torch(w, True), to_torch(b, True)
    torch.nn.functional.linear(tx, tw, tb).backward(to_torch(g))
    got = ops.linear_backward(g, x, w)
    for mine, theirs, name in zip(got, (tx.grad, tw.grad, tb.grad), ("dx", "dW", "db")):
        assert mine.dtype == np.float32
        assert_rel(mine, from_torch(theirs), 1e-5, name)
    only_dw = native_dense.linear_backward(g, x, w, False, True)
    assert only_dw[0] is None and np.array_equal(only_dw[1], dw)
    only_dx = native_dense.linear_backward(g, x, w, True, False)
    assert only_dx[1] is None and np.array_equal(only_dx[0], dx)


def test_the_layer_takes_the_kernels_on_the_tape_and_matches_torch(monkeypatch):
    """nn.Linear of SimpleCNN through the tape: the kernels are called, values and gradients are torch's."""
    torch = torch_or_skip()
    calls = []
    for name in ("linear", "linear_backward"):
        real = getattr(native_dense, name)
        monkeypatch.setattr(native_dense, name, lambda *a, _real=real, _n=name: calls.append(_n) or _real(*a))
    x, w, b, g = _linear_data("simplecnn_fc1")
    layer = nn.Linear(3136, 128)
    layer.load_state_dict({"weight": w, "bias": b})
    xt = engine.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(engine.asarray(g))
    assert calls == ["linear", "linear_backward"]
    tl = torch.nn.Linear(3136, 128)
    tl.load_state_dict({"weight": to_torch(w), "bias": to_torch(b)})
    tx = to_torch(x, True)
    ty = tl(tx)
    ty.backward(to_torch(g))
    assert_rel(y.data, from_torch(ty), 1e-5, "y")
    assert_rel(xt.grad, from_torch(tx.grad), 1e-5, "dx")
    assert_rel(layer.weight.grad, from_torch(tl.weight.grad), 1e-5, "dW")
    assert_rel(layer.bias.grad, from_torch(tl.bias.grad), 1e-5, "db")


@pytest.mark.parametrize("case", ["simplecnn_fc1", "deep", "lenet_fc1"])
def test_linear_results_do_not_depend_on_the_thread_count(case, small_products_too):
    x, w, b, g = _linear_data(case)
    before = host_threads.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 5):
            host_threads.set_num_threads(threads)
            results.append((native_dense.linear(x, w, b), *native_dense.linear_backward(g, x, w, True, True)))
    finally:
        host_threads.set_num_threads(before)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


def test_a_batch_of_one_is_split_by_its_weights_with_the_same_bits(monkeypatch):
    """A matrix-vector product is bound by reading the weights: SimpleCNN's 3136 -> 128 at
    batch 1 (401k multiply-adds, under MIN_MACS_PER_THREAD) still goes to two threads, and
    gives one thread's bits, which are also row 0's bits inside a batch."""
    x, w, b, _ = _linear_data("simplecnn_fc1")
    parts = []
    real_run = native_dense.native_calls.run
    monkeypatch.setattr(native_dense.native_calls, "run",
                        lambda lib, name, args, extent, n: parts.append(n) or real_run(lib, name, args, extent, n))
    before = host_threads.get_num_threads()
    try:
        host_threads.set_num_threads(1)
        one = native_dense.linear(x[:1], w, b)
        host_threads.set_num_threads(2)
        two = native_dense.linear(x[:1], w, b)
    finally:
        host_threads.set_num_threads(before)
    assert parts == [1, 2]
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[0], native_dense.linear(x, w, b)[0])


def test_where_the_kernels_do_not_apply_numpy_answers(small_products_too):
    x, w, b, g = _linear_data("tails")
    ref = x.astype(np.float64) @ w.astype(np.float64).T + b
    # another dtype, a strided input, a 3-D input, an empty batch: None, and ops.linear still answers
    assert native_dense.linear(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)) is None
    assert native_dense.linear(np.asfortranarray(x), w, b) is None
    assert native_dense.linear(x[None], w, b) is None
    assert native_dense.linear(x[:0], w, b) is None
    assert native_dense.linear_backward(g.astype(np.float64), x, w, True, True) is None
    assert_rel(ops.linear(np.asfortranarray(x), w, b), ref, 1e-6, "strided x")
    assert_rel(ops.linear(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)), ref, 1e-12, "f64")
    assert ops.linear(x[:0], w, b).shape == (0, w.shape[0])
    y3 = ops.linear(np.stack([x, x]), w, b)
    assert_rel(y3, np.stack([ref, ref]), 1e-6, "3-D x")


def test_products_openblas_computes_on_one_thread_stay_with_numpy():
    """Below OpenBLAS's own threading thresholds NumPy answers (quick, on the calling thread);
    above them the kernels do (OpenBLAS's workers stalled on a busy machine)."""
    x, w, b, _ = _linear_data("tails")  # 7 * 13 * 37 multiply-adds
    assert native_dense.linear(x, w, b) is None
    x, w, b, g = _linear_data("simplecnn_fc1")
    assert native_dense.linear(x, w, b) is not None
    assert native_dense.linear(x[:1], w, b) is not None  # a batch of one: 128 * 3136 weights
    assert native_dense.linear(x[:1, :50], w[:100, :50], b[:100]) is None  # 5000 weights
    assert_rel(native_dense.linear(x[:1], w, b), x[:1].astype(np.float64) @ w.astype(np.float64).T + b, 1e-6, "m=1")
    assert native_dense.linear_backward(g[:1], x[:1], w, True, True) is None  # training on one sample


def test_turning_the_kernels_off_keeps_the_numpy_path(monkeypatch):
    backend = backends.get("numpy")
    monkeypatch.setattr(backend, "use_native_kernels", False)
    monkeypatch.setattr(native_dense, "linear", lambda *a: pytest.fail("the kernels were called"))
    monkeypatch.setattr(native_dense, "adam_update", lambda *a, **k: pytest.fail("the kernels were called"))
    x, w, b, g = _linear_data("simplecnn_fc1")
    assert_rel(ops.linear(x, w, b), x.astype(np.float64) @ w.astype(np.float64).T + b, 1e-6, "y")
    p = nn.Parameter(w.copy())
    p.grad = w
    optim.Adam([p]).step()


CHECK = ("import numpy as np, engine, engine.ops as ops; from engine import nn, optim; "
         "from engine.kernels import native; "
         "x = np.ones((64, 3136), np.float32); w = np.full((128, 3136), 0.5, np.float32); "
         "p = nn.Parameter(np.ones(5, np.float32)); p.grad = np.ones(5, np.float32); "
         "optim.Adam([p], lr=0.5).step(); "
         "print(native.status()); print(float(ops.linear(x, w).sum()), float(p.data.sum()))")


def test_engine_native_0_turns_the_kernels_off():
    env = {**os.environ, "ENGINE_NATIVE": "0"}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    status, values = done.stdout.strip().splitlines()
    assert status == "off (ENGINE_NATIVE=0)"
    total, p_sum = map(float, values.split())
    assert total == 64 * 128 * 3136 * 0.5 and abs(p_sum - 5 * 0.5) < 1e-6


# ------------------------------------------------------------------------------ optimizers
OPT_CONFIGS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_momentum": ("SGD", dict(lr=0.05, momentum=0.9)),
    "sgd_dampening_wd": ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.02)),
    "sgd_nesterov_maximize": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam_wd": ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)),
    "adam_amsgrad_maximize": ("Adam", dict(lr=0.01, amsgrad=True, maximize=True, weight_decay=0.05)),
    "adam_decoupled": ("Adam", dict(lr=0.01, weight_decay=0.2, decoupled_weight_decay=True)),
    "adamw": ("AdamW", dict(lr=0.003, weight_decay=0.3)),
    "adamw_amsgrad": ("AdamW", dict(lr=0.02, weight_decay=0.1, amsgrad=True)),
}
OPT_SHAPES = [(300, 70), (7,), (3, 5, 2, 2)]  # one big enough to be split over threads


def _opt_grads(step):
    r = np.random.default_rng(200 + step)
    gs = [(r.standard_normal(s) * (3.0 if step % 3 == 0 else 0.5)).astype(np.float32) for s in OPT_SHAPES]
    return gs


def _opt_run(name, kwargs, steps, nan_at=None):
    r = np.random.default_rng(7)
    params = [nn.Parameter(r.standard_normal(s).astype(np.float32)) for s in OPT_SHAPES]
    opt = getattr(optim, name)(params, **kwargs)
    for step in range(steps):
        for i, (p, g) in enumerate(zip(params, _opt_grads(step))):
            if nan_at == step and i == 0:
                g[0, 0], g[1, 1] = np.nan, np.inf
            p.grad = g
        opt.step()
    return params, opt


@pytest.mark.parametrize("config", list(OPT_CONFIGS))
@pytest.mark.parametrize("nan_at", [None, 2])
def test_fused_updates_are_numpys_bit_for_bit(config, nan_at, monkeypatch):
    name, kwargs = OPT_CONFIGS[config]
    calls = []
    for fn in ("adam_update", "sgd_update"):
        real = getattr(native_dense, fn)
        monkeypatch.setattr(native_dense, fn, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    fused, fused_opt = _opt_run(name, kwargs, 5, nan_at)
    assert len(calls) == 5 * len(OPT_SHAPES)
    backend = backends.get("numpy")
    monkeypatch.setattr(backend, "use_native_kernels", False)
    with np.errstate(invalid="ignore"):  # NumPy warns of the NaN, the kernels do not
        plain, plain_opt = _opt_run(name, kwargs, 5, nan_at)
    assert len(calls) == 5 * len(OPT_SHAPES)
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a.data, b.data)
    for i in plain_opt.state:
        assert fused_opt.state[i].keys() == plain_opt.state[i].keys()
        for key, value in plain_opt.state[i].items():
            np.testing.assert_array_equal(fused_opt.state[i][key], value, err_msg=key)


@pytest.mark.parametrize("config", list(OPT_CONFIGS))
def test_fused_updates_follow_torch_optim(config):
    torch = torch_or_skip()
    name, kwargs = OPT_CONFIGS[config]
    ours, _ = _opt_run(name, kwargs, 6)
    r = np.random.default_rng(7)
    theirs = [torch.nn.Parameter(torch.from_numpy(r.standard_normal(s).astype(np.float32))) for s in OPT_SHAPES]
    opt = getattr(torch.optim, name)(theirs, **kwargs)
    for step in range(6):
        for p, g in zip(theirs, _opt_grads(step)):
            p.grad = torch.from_numpy(g)
        opt.step()
    for i, (a, t) in enumerate(zip(ours, theirs)):
        assert_rel(a.data, from_torch(t), 2e-6, f"parameter {i}")


def test_fused_updates_leave_the_old_state_arrays_alone():
    """A state_dict taken before a step keeps its values (as with the NumPy update)."""
    params, opt = _opt_run("Adam", dict(lr=0.01, amsgrad=True), 2)
    sd = opt.state_dict()
    before = {k: np.array(v, copy=True) for k, v in sd["state"][0].items()}
    for p, g in zip(params, _opt_grads(5)):
        p.grad = g
    opt.step()
    for k, v in before.items():
        np.testing.assert_array_equal(sd["state"][0][k], v)


def test_fused_updates_do_not_depend_on_the_thread_count():
    before = host_threads.get_num_threads()
    out = []
    try:
        for threads in (1, 2, 3):
            host_threads.set_num_threads(threads)
            out.append([p.data for p in _opt_run("AdamW", dict(lr=0.01, amsgrad=True), 3)[0]])
    finally:
        host_threads.set_num_threads(before)
    for other in out[1:]:
        for a, b in zip(out[0], other):
            np.testing.assert_array_equal(a, b)


def test_float64_and_mixed_state_take_the_numpy_update():
    r = np.random.default_rng(0)
    p = nn.Parameter(r.standard_normal((4, 3)))
    p.grad = r.standard_normal((4, 3))
    assert native_dense.adam_update(p.data, p.grad, np.zeros_like(p.data), np.zeros_like(p.data), None, step=1,
                                    lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0,
                                    decoupled=False, amsgrad=False, maximize=False) is None
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    assert p.data.dtype == np.float64


@avx2_rerun
def test_the_avx2_build_passes_this_whole_file(tmp_path):
    """The kernels built for AVX2 (-march=haswell: 8-wide vectors, 3x3 dot-product tiles), as on
    CPUs without AVX-512, run every test of this file."""
    env = run_file_under_avx2(__file__, tmp_path)
    check = "from engine.kernels import native; print(native.status())"
    status = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env,
                            timeout=300).stdout
    assert status.startswith("on (AVX2, built by ")


# ------------------------------------------------------------------------------ cross-entropy
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_of_plain_labels_matches_the_general_path_and_torch(dtype, reduction, monkeypatch):
    """The usual case (2-D logits, labels in range, no weight or smoothing) skips the one-hot
    machinery; values and gradients stay the general path's and torch's."""
    from engine.ops import losses
    torch = torch_or_skip()
    r = np.random.default_rng(3)
    logits = (r.standard_normal((37, 10)) * 5).astype(dtype)
    target = r.integers(0, 10, 37)
    g = np.asarray(0.7, dtype=dtype)
    fast = ops.cross_entropy(logits, target, reduction), ops.cross_entropy_backward(logits, target, reduction,
                                                                                     grad_out=g)
    assert losses._plain_class_targets(logits, target, reduction, 0.0, None, -100) is not None
    monkeypatch.setattr(losses, "_plain_class_targets", lambda *a: None)
    general = ops.cross_entropy(logits, target, reduction), ops.cross_entropy_backward(logits, target, reduction,
                                                                                        grad_out=g)
    tol = 1e-12 if dtype == "float64" else 2e-6
    for a, b in zip(fast, general):
        assert np.asarray(a).dtype == np.dtype(dtype) and np.shape(a) == np.shape(b)
        assert_rel(a, b, tol, "fast vs general")
    tl = to_torch(logits, True)
    loss = torch.nn.functional.cross_entropy(tl, torch.from_numpy(target), reduction=reduction)
    (loss * 0.7).backward()
    assert_rel(fast[0], from_torch(loss), tol, "loss vs torch")
    assert_rel(fast[1], from_torch(tl.grad), tol, "grad vs torch")


def test_cross_entropy_labels_that_need_the_general_path_take_it():
    from engine.ops import losses
    logits = np.zeros((3, 4), np.float32)
    assert losses._plain_class_targets(logits, np.array([0, 1, 2]), "mean", 0.0, None, 1) is None  # ignorable
    assert losses._plain_class_targets(logits, np.array([0, 1, 9]), "mean", 0.0, None, -100) is None
    assert losses._plain_class_targets(logits, np.array([0, 1, 2]), "none", 0.0, None, -100) is None
    assert losses._plain_class_targets(logits, np.array([0, 1, 2]), "mean", 0.1, None, -100) is None
    with pytest.raises(ValueError, match="labels must be in"):
        ops.cross_entropy(logits, np.array([0, 1, 9]))
    loss = ops.cross_entropy(logits, np.array([0, 1, -100]))  # the ignored sample counts for nothing
    assert abs(float(loss) - np.log(4)) < 1e-6
