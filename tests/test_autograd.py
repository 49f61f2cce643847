"""The tape: every Tensor operation and every nn.functional node against PyTorch
and finite differences (float64), and the graph rules (branches, reuse,
retain_graph, no_grad keeps nothing, freeing, hooks, grad mode per thread)."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import engine
import engine.nn.functional as F
from engine import autograd, nn
from engine import ops

import reference as ref
from _helpers import FD_TOL, assert_rel

torch = pytest.importorskip("torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of these tests")
tF = torch.nn.functional


def _r(*shape, seed=0, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


# --------------------------------------------------------------------------- a generic check
def _check(fn_engine, fn_torch, inputs, tol=1e-12, fd=True, seed=7):
    """Run ``fn`` on engine and torch leaves made from ``inputs`` (float64 NumPy
    arrays; ``None`` entries are passed as is), compare the output, the input
    gradients against torch, and (``fd``) against central finite differences."""
    ours = [None if a is None else engine.tensor(a, requires_grad=True) for a in inputs]
    theirs = [None if a is None else torch.tensor(a, requires_grad=True) for a in inputs]
    y = fn_engine(*ours)
    ty = fn_torch(*theirs)
    assert isinstance(y, engine.Tensor)
    assert y.shape == tuple(ty.shape), f"shape {y.shape} != {tuple(ty.shape)}"
    assert_rel(y.detach(), ty.detach().numpy(), tol, "output")
    g = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    for i, (a, t) in enumerate(zip(ours, theirs)):
        if a is not None:
            assert a.grad is not None, f"input {i} got no gradient"
            assert_rel(a.grad, t.grad.numpy(), tol, f"grad of input {i}")
    if fd:
        _finite_differences(fn_engine, inputs, g, [None if a is None else engine.to_numpy(a.grad) for a in ours])


def _finite_differences(fn, inputs, g, analytic):
    """Each input's gradient of ``sum(fn(*inputs) * g)`` by central differences."""
    def value(i, v):
        args = [None if a is None else engine.tensor(v if j == i else a) for j, a in enumerate(inputs)]
        return np.sum(engine.to_numpy(fn(*args)) * g)

    with engine.no_grad():
        for i, a in enumerate(inputs):
            if a is not None:
                num = ref.numerical_grad(lambda v, i=i: value(i, v), a)
                assert_rel(analytic[i], num, FD_TOL, f"finite differences of input {i}")


# --------------------------------------------------------------------------- Tensor operations
TENSOR_OPS = {
    "add_broadcast": (lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (4,)]),
    "sub_broadcast_left": (lambda a, b: a - b, lambda a, b: a - b, [(1, 4), (3, 1)]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [(2, 3, 4), (3, 1)]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [(3, 4), "pos(3, 4)"]),
    "scalar_arith": (lambda a: 2.0 - a * 3 + 1 / (a * a + 1), lambda a: 2.0 - a * 3 + 1 / (a * a + 1), [(3, 4)]),
    "matmul_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 5)]),
    "matmul_batched_broadcast": (lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4, 2)]),
    "matmul_vec_mat": (lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 5)]),
    "matmul_mat_vec": (lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4,)]),
    "matmul_vec_vec": (lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)]),
    "pow_scalar": (lambda a: a ** 3, lambda a: a ** 3, [(3, 4)]),
    "pow_half": (lambda a: a ** 0.5, lambda a: a ** 0.5, ["pos(3, 4)"]),
    "rpow": (lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(3, 4)]),
    "pow_tensor": (lambda a, b: a ** b, lambda a, b: a ** b, ["pos(3, 4)", (3, 4)]),
    "neg_abs": (lambda a: abs(-a), lambda a: abs(-a), [(3, 4)]),
    "exp_log_sqrt": (lambda a: a.exp().log() + a.sqrt(), lambda a: a.exp().log() + a.sqrt(), ["pos(3, 4)"]),
    "clamp": (lambda a: a.clamp(-0.5, 0.7), lambda a: a.clamp(-0.5, 0.7), [(4, 5)]),
    "clamp_min": (lambda a: a.clamp(min=0.1), lambda a: a.clamp(min=0.1), [(4, 5)]),
    "reshape_view": (lambda a: a.reshape(4, 3).view(-1, 6), lambda a: a.reshape(4, 3).view(-1, 6), [(3, 4)]),
    "flatten": (lambda a: a.flatten(1), lambda a: a.flatten(1), [(2, 3, 4)]),
    "engine_flatten": (lambda a: engine.flatten(a, 1, 2), lambda a: torch.flatten(a, 1, 2), [(2, 3, 4, 2)]),
    "permute": (lambda a: a.permute(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    "transpose_T": (lambda a: a.transpose(0, 2).T, lambda a: a.transpose(0, 2).permute(2, 1, 0), [(2, 3, 4)]),
    "squeeze_unsqueeze": (lambda a: a.unsqueeze(1).squeeze(0).unsqueeze(-1),
                          lambda a: a.unsqueeze(1).squeeze(0).unsqueeze(-1), [(1, 3)]),
    "squeeze_dim": (lambda a: a.squeeze(1), lambda a: a.squeeze(1), [(2, 1, 3)]),
    "expand": (lambda a: a.expand(2, 3, 4), lambda a: a.expand(2, 3, 4), [(3, 1)]),
    "getitem_basic": (lambda a: a[1:, ::2, 0], lambda a: a[1:, ::2, 0], [(3, 4, 2)]),
    "getitem_int_array_repeats": (lambda a: a[engine.tensor(np.array([0, 2, 0, 0]))],
                                  lambda a: a[torch.tensor([0, 2, 0, 0])], [(3, 4)]),
    "getitem_bool_mask": (lambda a: a[engine.tensor(np.array([True, False, True]))],
                          lambda a: a[torch.tensor([True, False, True])], [(3, 4)]),
    "sum_all_dims": (lambda a: a.sum() + a.sum(1).sum() + a.sum((0, 2), keepdim=True).sum(),
                     lambda a: a.sum() + a.sum(1).sum() + a.sum((0, 2), keepdim=True).sum(), [(2, 3, 4)]),
    "mean": (lambda a: a.mean(-1) * a.mean(), lambda a: a.mean(-1) * a.mean(), [(3, 4)]),
    "var_std": (lambda a: a.var(1) + a.std(0, keepdim=True).sum(), lambda a: a.var(1) + a.std(0, keepdim=True).sum(),
                [(3, 4)]),
    "max_min_all": (lambda a: a.max() - a.min(), lambda a: a.max() - a.min(), [(3, 4)]),
    "max_dim_values": (lambda a: a.max(1).values + a.min(dim=0, keepdim=True)[0].sum(),
                       lambda a: a.max(1).values + a.min(dim=0, keepdim=True)[0].sum(), [(3, 4)]),
    "amax": (lambda a: a.amax(dim=(0, 1)), lambda a: a.amax(dim=(0, 1)), [(2, 3, 4)]),
    "maximum": (lambda a, b: a.max(b), lambda a, b: torch.maximum(a, b), [(3, 4), (3, 4)]),
    "cat": (lambda a, b: engine.cat([a, b * 2, a], dim=1), lambda a, b: torch.cat([a, b * 2, a], dim=1),
            [(2, 3), (2, 2)]),
    "stack": (lambda a, b: engine.stack([a, b], dim=-1), lambda a, b: torch.stack([a, b], dim=-1), [(2, 3), (2, 3)]),
    "split": (lambda a: engine.cat([p * (i + 1) for i, p in enumerate(engine.split(a, [1, 3], dim=1))], 1),
              lambda a: torch.cat([p * (i + 1) for i, p in enumerate(torch.split(a, [1, 3], dim=1))], 1), [(2, 4)]),
    "split_unused_piece": (lambda a: engine.split(a, 2)[1] * 3, lambda a: torch.split(a, 2)[1] * 3, [(5, 2)]),
    "chunk": (lambda a: engine.chunk(a, 3, 0)[2], lambda a: torch.chunk(a, 3, 0)[2], [(7, 2)]),
    "where": (lambda a, b: engine.where(a > b, a * a, b), lambda a, b: torch.where(a > b, a * a, b), [(3, 4), (4,)]),
    "where_scalar": (lambda a: engine.where(a > 0, a, 0.0), lambda a: torch.where(a > 0, a, 0.0), [(3, 4)]),
    "clone_cast": (lambda a: a.clone().float().double() * 2, lambda a: a.clone().float().double() * 2, [(3, 4)]),
}


def _inputs(specs, seed=0):
    out = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str) and spec.startswith("pos"):
            out.append(_r(*eval(spec[3:]), seed=seed + i, positive=True))
        else:
            out.append(_r(*spec, seed=seed + i))
    return out


@pytest.mark.parametrize("name", list(TENSOR_OPS))
def test_tensor_op_matches_torch_and_finite_differences(name):
    fn, tfn, specs = TENSOR_OPS[name]
    tol = 1e-6 if name == "clone_cast" else 1e-12  # the float32 round trip
    _check(fn, tfn, _inputs(specs), tol=tol, fd=name != "clone_cast")


def test_max_shares_the_gradient_among_ties_as_torch():
    a = np.array([[1.0, 3.0, 3.0], [3.0, 0.0, 2.0]])
    _check(lambda t: t.max() * 2, lambda t: t.max() * 2, [a], fd=False)
    _check(lambda t: t.amax(1), lambda t: t.amax(1), [a], fd=False)
    _check(lambda t, u: t.max(u), lambda t, u: torch.maximum(t, u), [a, np.full((2, 3), 3.0)], fd=False)


def test_comparisons_and_argmax_are_not_differentiable():
    a = engine.tensor(_r(3, 4), requires_grad=True)
    for c in (a > 0, a == a, a <= 0.5, a.argmax(1), a.max(1).indices):
        assert not c.requires_grad and c.grad_fn is None
    assert a.max(1).indices.dtype == np.int64


# --------------------------------------------------------------------------- nn.functional nodes
FUNCTIONAL = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)),
               lambda x, w, b: tF.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)),
               [(2, 2, 6, 7), (3, 2, 3, 2), (3,)]),
    "conv2d_groups_same_no_bias": (lambda x, w: F.conv2d(x, w, None, padding="same", groups=2),
                                   lambda x, w: tF.conv2d(x, w, None, padding="same", groups=2),
                                   [(1, 4, 5, 5), (4, 2, 3, 3)]),
    "conv2d_strided_method": (lambda x, w, b: F.conv2d(x, w, b, padding=1, method="strided"),
                              lambda x, w, b: tF.conv2d(x, w, b, padding=1), [(1, 2, 4, 4), (2, 2, 3, 3), (2,)]),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), lambda x, w, b: tF.conv1d(x, w, b, 2, 1),
               [(2, 2, 9), (3, 2, 3), (3,)]),
    "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
                         lambda x, w, b: tF.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
                         [(1, 2, 3, 3), (2, 3, 3, 3), (3,)]),
    "conv_transpose1d": (lambda x, w: F.conv_transpose1d(x, w, stride=2), lambda x, w: tF.conv_transpose1d(x, w, stride=2),
                         [(2, 2, 4), (2, 3, 3)]),
    "linear_3d_input": (lambda x, w, b: F.linear(x, w, b), lambda x, w, b: tF.linear(x, w, b),
                        [(2, 3, 4), (5, 4), (5,)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), lambda x: tF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
                   [(2, 2, 7, 6)]),
    "max_pool1d": (lambda x: F.max_pool1d(x, 2, dilation=2), lambda x: tF.max_pool1d(x, 2, dilation=2), [(2, 2, 9)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, (2, 3), 1, 1, count_include_pad=False),
                   lambda x: tF.avg_pool2d(x, (2, 3), 1, 1, count_include_pad=False), [(1, 2, 5, 6)]),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, 2), lambda x: tF.avg_pool1d(x, 3, 2), [(2, 2, 9)]),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)), lambda x: tF.adaptive_avg_pool2d(x, (3, 2)),
                            [(1, 2, 7, 5)]),
    "adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 4), lambda x: tF.adaptive_avg_pool1d(x, 4),
                            [(2, 3, 9)]),
    "global_avg_pool2d": (lambda x: F.global_avg_pool2d(x), lambda x: x.mean((2, 3)), [(2, 3, 4, 5)]),
    "batch_norm_train": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                         lambda x, w, b: tF.batch_norm(x, None, None, w, b, training=True), [(4, 3, 2, 2), (3,), (3,)]),
    "batch_norm_eval": (lambda x, w, b: F.batch_norm(x, np.full(3, 0.2), np.full(3, 1.5), w, b),
                        lambda x, w, b: tF.batch_norm(x, torch.full((3,), 0.2, dtype=torch.float64),
                                                      torch.full((3,), 1.5, dtype=torch.float64), w, b),
                        [(4, 3, 5), (3,), (3,)]),
    "relu": (F.relu, tF.relu, [(3, 4)]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: tF.leaky_relu(x, 0.2), [(3, 4)]),
    "sigmoid": (F.sigmoid, torch.sigmoid, [(3, 4)]),
    "tanh": (F.tanh, torch.tanh, [(3, 4)]),
    "softmax": (lambda x: F.softmax(x, dim=0), lambda x: tF.softmax(x, dim=0), [(3, 4)]),
    "log_softmax": (lambda x: F.log_softmax(x, -1), lambda x: tF.log_softmax(x, -1), [(3, 4)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, engine.tensor(np.array([0, 3, 1])), label_smoothing=0.1),
                      lambda x: tF.cross_entropy(x, torch.tensor([0, 3, 1]), label_smoothing=0.1), [(3, 4)]),
    "cross_entropy_none": (lambda x: F.cross_entropy(x, engine.tensor(np.array([2, 0])), reduction="none"),
                           lambda x: tF.cross_entropy(x, torch.tensor([2, 0]), reduction="none"), [(2, 3)]),
    "mse_loss_both_sides": (lambda x, t: F.mse_loss(x, t, reduction="sum"), lambda x, t: tF.mse_loss(x, t, reduction="sum"),
                            [(3, 4), (3, 4)]),
}


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_functional_node_matches_torch_and_finite_differences(name):
    fn, tfn, specs = FUNCTIONAL[name]
    x = _inputs(specs)
    if name.startswith("max_pool"):  # keep every window's maximum clear of the others (finite differences)
        x[0] = np.random.default_rng(3).permutation(x[0].size).reshape(x[0].shape) / x[0].size
    _check(fn, tfn, x)


def test_dropout_node_is_its_mask():
    x = _r(20, 30)
    t = engine.tensor(x, requires_grad=True)
    y = F.dropout(t, 0.3, rng=np.random.default_rng(0))
    mask = engine.to_numpy(y.detach()) / x
    y.backward(np.ones(x.shape))
    np.testing.assert_allclose(engine.to_numpy(t.grad), mask, rtol=1e-12)
    assert set(np.round(np.unique(mask), 12)) <= {0.0, round(1 / 0.7, 12)}
    assert F.dropout(t, 0.3, training=False) is not t and np.array_equal(engine.to_numpy(F.dropout(t, 0.3, False).detach()), x)


# --------------------------------------------------------------------------- graph rules
def test_branches_meet_and_gradients_add():
    a = engine.tensor(_r(3), requires_grad=True)
    b = a * 2
    c = (b + b.exp() + a).sum()
    c.backward()
    ta = torch.tensor(_r(3), requires_grad=True)
    tb = ta * 2
    (tb + tb.exp() + ta).sum().backward()
    assert_rel(a.grad, ta.grad.numpy(), 1e-14, "grad")


def test_a_module_reused_in_forward_gets_the_sum_of_its_calls():
    """The issue's case: ``self.act(self.c2(self.act(self.c1(x))))`` (analytic 0.598
    against numeric 0.208 before the tape)."""
    def make(base, lib):
        class Net(base):
            def __init__(self):
                super().__init__()
                self.c1, self.c2, self.act = lib.Linear(3, 3), lib.Linear(3, 2), lib.Tanh()

            def forward(self, x):
                return self.act(self.c2(self.act(self.c1(x))))
        return Net()

    ours, theirs = make(nn.Module, nn).to("float64"), make(torch.nn.Module, torch.nn).double()
    ours.load_state_dict(theirs.state_dict())
    x = _r(4, 3)
    _check(lambda t: ours(t), lambda t: theirs(t), [x])
    for name, p in ours.named_parameters():
        assert_rel(p.grad, dict(theirs.named_parameters())[name].grad.numpy(), 1e-12, name)


def test_retain_graph_then_a_second_backward_accumulates():
    w = engine.tensor(_r(3, 3), requires_grad=True)
    x = engine.tensor(_r(2, 3))
    loss = (F.tanh(x @ w) ** 2).sum()
    loss.backward(retain_graph=True)
    first = engine.to_numpy(w.grad).copy()
    loss.backward()
    np.testing.assert_allclose(engine.to_numpy(w.grad), 2 * first, rtol=1e-15)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_gradient_accumulation_over_two_batches_equals_torch():
    engine.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).to("float64")
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).double()
    ours.load_state_dict(theirs.state_dict())
    for seed in (1, 2):
        x, y = _r(5, 4, seed=seed), np.array([0, 1, 1, 0, 1])
        F.cross_entropy(ours(x), y).backward()
        tF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
    for name, p in ours.named_parameters():
        assert_rel(p.grad, dict(theirs.named_parameters())[name].grad.numpy(), 1e-12, name)
    ours.zero_grad(set_to_none=False)
    assert all(float(abs(engine.tensor(p.grad)).sum()) == 0 for p in ours.parameters())
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def test_graph_and_saved_arrays_are_freed_by_backward_without_a_garbage_collector():
    gc.collect()
    gc.disable()  # no reference cycles: reference counting alone must free everything
    try:
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
        hidden = model[0](x)
        saved = weakref.ref(hidden.data)  # the conv output, saved by nothing but the graph downstream
        loss = F.cross_entropy(model[3](model[2](model[1](hidden))), np.array([0, 2]))
        node = weakref.ref(loss.grad_fn)
        del hidden
        loss.backward()
        assert node() is not None and node().saved is None  # freed by the backward itself
        del loss
        assert node() is None and saved() is None
    finally:
        gc.enable()


def test_no_grad_forward_keeps_nothing():
    gc.collect()
    gc.disable()
    try:
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
        x = engine.tensor(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32),
                          requires_grad=True)
        with engine.no_grad():
            h = model[0](x)
            inner = weakref.ref(h.data)
            y = model[2](model[1](h))
        assert y.grad_fn is None and not y.requires_grad and h.grad_fn is None
        del h
        assert inner() is None  # no node holds the intermediate array
    finally:
        gc.enable()
    assert engine.is_grad_enabled()


def test_grad_mode_is_thread_local_and_no_grad_is_a_decorator():
    seen = {}

    def worker():
        seen["enabled"] = engine.is_grad_enabled()

    with engine.no_grad():
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert not engine.is_grad_enabled()
        with engine.enable_grad():
            assert engine.is_grad_enabled()
    assert seen["enabled"] is True

    @engine.no_grad()
    def predict(w):
        return w * 2

    w = engine.tensor(np.ones(2), requires_grad=True)
    assert predict(w).grad_fn is None and (w * 2).grad_fn is not None
    with engine.set_grad_enabled(False):
        assert not engine.is_grad_enabled()
    assert engine.is_grad_enabled()


def test_autograd_grad_of_inputs_and_intermediates_touches_no_grad():
    x = engine.tensor(_r(3), requires_grad=True)
    w = engine.tensor(_r(3, seed=1), requires_grad=True)
    h = x * w
    y = (h.exp()).sum()
    gx, gh = autograd.grad(y, [x, h], retain_graph=True)
    np.testing.assert_allclose(engine.to_numpy(gh), np.exp(_r(3) * _r(3, seed=1)), rtol=1e-14)
    np.testing.assert_allclose(engine.to_numpy(gx), engine.to_numpy(gh) * _r(3, seed=1), rtol=1e-14)
    assert x.grad is None and w.grad is None
    unused = engine.tensor(_r(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused"):
        autograd.grad(y, [unused], retain_graph=True)
    assert autograd.grad(y, [unused], allow_unused=True) == (None,)


def test_retain_grad_and_tensor_hooks():
    x = engine.tensor(_r(2, 3), requires_grad=True)
    h = x * 3
    h.retain_grad()
    seen = []
    handle = h.register_hook(lambda g: seen.append(engine.to_numpy(g).copy()))
    x.register_hook(lambda g: g * 0.5)  # a hook's return value replaces the gradient
    (h * h).sum().backward()
    np.testing.assert_allclose(engine.to_numpy(h.grad), 2 * 3 * _r(2, 3), rtol=1e-14)
    np.testing.assert_allclose(seen[0], engine.to_numpy(h.grad), rtol=0)
    np.testing.assert_allclose(engine.to_numpy(x.grad), 0.5 * 18 * _r(2, 3), rtol=1e-14)
    handle.remove()


def test_backward_inputs_argument_limits_accumulation():
    a = engine.tensor(_r(2), requires_grad=True)
    b = engine.tensor(_r(2, seed=1), requires_grad=True)
    (a * b).sum().backward(inputs=[a])
    assert a.grad is not None and b.grad is None


def test_frozen_layer_gets_no_grad_and_no_weight_gradient_work(monkeypatch):
    calls = []
    real = ops.conv2d_backward

    def spy(*args, **kwargs):
        calls.append((kwargs["need_input_grad"], kwargs["need_weight_grad"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "conv2d_backward", spy)
    engine.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    model[0].requires_grad_(False)
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    F.cross_entropy(model(x), np.array([0, 1])).backward()
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[2].weight.grad is not None
    # second conv: dx (for nobody, since conv 1 is frozen and x is data) skipped, dW computed;
    # first conv: not run at all
    assert calls == [(False, True)]


def test_data_input_gets_no_gradient_work(monkeypatch):
    calls = []
    real = ops.conv2d_backward
    monkeypatch.setattr(ops, "conv2d_backward", lambda *a, **k: calls.append(k["need_input_grad"]) or real(*a, **k))
    conv = nn.Conv2d(1, 2, 3)
    conv(np.ones((1, 1, 4, 4), dtype=np.float32)).sum().backward()
    assert calls == [False]


def test_modules_accept_arrays_and_tensors_and_return_tensors(backend):
    engine.manual_seed(0)
    lin = nn.Linear(3, 2)
    a = backend.asarray(np.ones((1, 3), dtype=np.float32))
    for x in (a, engine.Tensor(a), engine.tensor(a, requires_grad=True)):
        y = lin(x)
        assert isinstance(y, engine.Tensor) and engine.backends.backend_of(y.data) is backend
    assert np.array_equal(engine.to_numpy(lin(a)), engine.to_numpy(engine.asarray(lin(a))))


def test_tensor_conveniences():
    t = engine.tensor([[1.5, 2.0], [3.0, 4.0]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and t.ndim == 2 and len(t) == 2 and t.numel() == 4
    assert t.size() == (2, 2) and t.size(1) == 2 and t.dim() == 2
    assert float(t[0, 0]) == 1.5 and t.sum().item() == 10.5 and f"{t.mean():.2f}" == "2.62"
    assert [r.tolist() for r in t] == [[1.5, 2.0], [3.0, 4.0]]
    w = engine.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        w.numpy()
    assert w.detach().numpy().tolist() == [1.0, 1.0]
    assert "grad_fn=<MulNode>" in repr(w * 2) and "requires_grad=True" in repr(w)
    assert engine.tensor(np.arange(3)).dtype == np.int64
    assert engine.zeros(2, 3).shape == (2, 3) and engine.ones_like(w).dtype == w.dtype
    engine.manual_seed(1)
    a = engine.randn(3, 2)
    engine.manual_seed(1)
    assert np.array_equal(a.numpy(), engine.randn(3, 2).numpy()) and a.dtype == np.float32
    assert np.array_equal(np.asarray(engine.arange(4)), np.arange(4))


def test_module_hooks_see_outputs_and_gradients_as_torch():
    engine.manual_seed(0)
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to("float64")
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    ours.load_state_dict(theirs.state_dict())
    record, trecord = {}, {}
    ours[1].register_forward_hook(lambda m, args, out: record.update(out=engine.to_numpy(out.detach())))
    ours[1].register_full_backward_hook(lambda m, gi, go: record.update(gi=gi, go=go))
    theirs[1].register_forward_hook(lambda m, args, out: trecord.update(out=out.detach().numpy()))
    theirs[1].register_full_backward_hook(lambda m, gi, go: trecord.update(gi=gi, go=go))
    pre = ours[0].register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    tpre = theirs[0].register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    x = _r(5, 3)
    ours(x).sum().backward()
    theirs(torch.tensor(x)).sum().backward()
    assert_rel(record["out"], trecord["out"], 1e-12, "forward hook output")
    assert_rel(record["go"][0], trecord["go"][0].numpy(), 1e-12, "grad_output")
    assert_rel(record["gi"][0], trecord["gi"][0].numpy(), 1e-12, "grad_input")
    pre.remove()
    tpre.remove()
    assert_rel(ours(x).detach(), theirs(torch.tensor(x)).detach().numpy(), 1e-12, "after removing the pre-hook")


def test_backward_hook_on_the_first_layer_sees_no_input_gradient():
    conv = nn.Conv2d(1, 1, 3)
    got = {}
    conv.register_full_backward_hook(lambda m, gi, go: got.update(gi=gi, go=go))
    conv(np.ones((1, 1, 4, 4), dtype=np.float32)).sum().backward()
    assert got["gi"] == (None,) and got["go"][0].shape == (1, 1, 2, 2)


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert isinstance(seq[0:2], nn.Sequential) and len(seq[0:2]) == 2 and seq[-1] is seq[2]
    seq[1] = nn.Tanh()
    seq.append(nn.Sigmoid())
    seq.insert(0, nn.Identity())
    assert [type(m).__name__ for m in seq] == ["Identity", "Linear", "Tanh", "Linear", "Sigmoid"]
    del seq[0]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 4)})

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks, self.heads = blocks, heads

        def forward(self, x):
            for b in self.blocks:
                x = F.relu(b(x))
            return self.heads["a"](x), self.heads["b"](x)

    net = Net()
    assert len(net.parameters()) == 3 * 2 + 4
    assert "blocks.2.bias" in net.state_dict() and "heads.b.weight" in net.state_dict()
    a, b = net(np.ones((1, 2), dtype=np.float32))
    assert a.shape == (1, 1) and b.shape == (1, 4)
    with pytest.raises(TypeError, match="must be a Module"):
        blocks.append(lambda x: x)
