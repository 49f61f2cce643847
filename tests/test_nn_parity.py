"""The layers, functions and arguments issue 13 adds, against PyTorch 2.13 and
float64 finite differences, on NumPy and array_api_strict: every new
``nn.functional`` node (unbatched inputs, return_indices, unpooling, layer and
group norm, GELU/SiLU/hard activations, resampling, padding, the losses with
weights, ignore_index, probability targets and target gradients), the modules
PyTorch's own lists do not exercise (channel dropout, Upsample*, MaxUnpool*),
PyTorch's constructor and forward signatures checked programmatically,
``device=``/``dtype=``, loss buffers, and ``fit`` with per-batch and
metric-driven schedulers. (``tests/test_torch_harvest.py`` replays PyTorch's
own test inputs on the same classes.)"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import engine
import engine.nn.functional as F
from engine import nn, optim, schedulers
from engine.training import fit, scheduler_step_unit

from _helpers import assert_raises, assert_rel
from test_autograd import _check, _inputs

torch = pytest.importorskip("torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of these tests")
tF = torch.nn.functional

BACKENDS = ["numpy", "array_api_strict", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(autouse=True)
def _skip_unusable_backend(request):
    name = getattr(request.node, "callspec", None) and request.node.callspec.params.get("backend_name")
    if name and engine.backends.unavailable_reason(name) is not None:
        pytest.skip(f"{name} backend unavailable: {engine.backends.unavailable_reason(name).splitlines()[0]}")

_IDX2 = tF.max_pool2d(torch.randn(1, 2, 6, 4, generator=torch.Generator().manual_seed(3)), 2,
                      return_indices=True)[1].numpy()
_IDX1 = tF.max_pool1d(torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(4)), 2, stride=2,
                      return_indices=True)[1].numpy()
_T_CLASSES = np.array([0, 3, -100, 1, 2])
_T_KDIM = np.random.default_rng(5).integers(0, 3, size=(2, 4, 2))
_W4 = np.array([0.5, 1.0, 2.0, 0.25])
_W34 = np.abs(np.random.default_rng(6).standard_normal((3, 4))) + 0.1


def _e(a):
    """A constant (no gradient) on the active backend, made when the function runs."""
    return engine.tensor(np.asarray(a))


def _t(a):
    return torch.tensor(np.asarray(a))


# name: (engine function, torch function, input shapes); every input gets a gradient
NEW_FUNCTIONAL = {
    "conv2d_unbatched": (lambda x, w, b: F.conv2d(x, w, b, padding=1), lambda x, w, b: tF.conv2d(x, w, b, padding=1),
                         [(2, 5, 4), (3, 2, 3, 3), (3,)]),
    "conv1d_unbatched": (lambda x, w, b: F.conv1d(x, w, b, 2, 1), lambda x, w, b: tF.conv1d(x, w, b, 2, 1),
                         [(2, 7), (3, 2, 3), (3,)]),
    "conv_transpose2d_unbatched": (lambda x, w: F.conv_transpose2d(x, w, stride=2),
                                   lambda x, w: tF.conv_transpose2d(x, w, stride=2), [(2, 3, 3), (2, 3, 3, 3)]),
    "conv_transpose1d_unbatched": (lambda x, w, b: F.conv_transpose1d(x, w, b, 2, 1, 1),
                                   lambda x, w, b: tF.conv_transpose1d(x, w, b, 2, 1, 1), [(2, 4), (2, 3, 3), (3,)]),
    "linear_1d": (F.linear, tF.linear, [(4,), (3, 4), (3,)]),
    "avg_pool2d_unbatched": (lambda x: F.avg_pool2d(x, 2, 1, 1), lambda x: tF.avg_pool2d(x, 2, 1, 1), [(2, 5, 6)]),
    "avg_pool1d_unbatched": (lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False),
                             lambda x: tF.avg_pool1d(x, 3, 2, 1, count_include_pad=False), [(2, 8)]),
    "adaptive_avg_pool2d_unbatched": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
                                      lambda x: tF.adaptive_avg_pool2d(x, (3, 2)), [(2, 5, 7)]),
    "adaptive_avg_pool1d_unbatched": (lambda x: F.adaptive_avg_pool1d(x, 4), lambda x: tF.adaptive_avg_pool1d(x, 4),
                                      [(2, 9)]),
    "max_pool2d_unbatched_return_indices": (lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)[0] * 2,
                                            lambda x: tF.max_pool2d(x, 3, 2, 1, return_indices=True)[0] * 2,
                                            [(2, 7, 6)]),
    "max_pool1d_unbatched": (lambda x: F.max_pool1d(x, 2, dilation=2), lambda x: tF.max_pool1d(x, 2, dilation=2),
                             [(3, 9)]),
    "max_unpool2d": (lambda x: F.max_unpool2d(x, _e(_IDX2), 2), lambda x: tF.max_unpool2d(x, _t(_IDX2), 2),
                     [(1, 2, 3, 2)]),
    "max_unpool1d_output_size": (lambda x: F.max_unpool1d(x, _e(_IDX1), 2, output_size=(9,)),
                                 lambda x: tF.max_unpool1d(x, _t(_IDX1), 2, output_size=(9,)), [(2, 3, 4)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4, 5), w, b, 1e-3),
                   lambda x, w, b: tF.layer_norm(x, (4, 5), w, b, 1e-3), [(3, 4, 5), (4, 5), (4, 5)]),
    "layer_norm_no_affine": (lambda x: F.layer_norm(x, (6,)), lambda x: tF.layer_norm(x, (6,)), [(3, 6)]),
    "layer_norm_bias_only": (lambda x, b: F.layer_norm(x, (6,), None, b), lambda x, b: tF.layer_norm(x, (6,), None, b),
                             [(3, 6), (6,)]),
    "group_norm": (lambda x, w, b: F.group_norm(x, 3, w, b), lambda x, w, b: tF.group_norm(x, 3, w, b),
                   [(2, 6, 3, 2), (6,), (6,)]),
    "group_norm_weight_only": (lambda x, w: F.group_norm(x, 2, w), lambda x, w: tF.group_norm(x, 2, w),
                               [(2, 4, 5), (4,)]),
    "batch_norm_bias_without_weight": (lambda x, b: F.batch_norm(x, None, None, None, b, training=True),
                                       lambda x, b: tF.batch_norm(x, None, None, None, b, training=True),
                                       [(4, 3, 2), (3,)]),
    "gelu": (F.gelu, tF.gelu, [(3, 4)]),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: tF.gelu(x, approximate="tanh"), [(3, 4)]),
    "silu": (F.silu, tF.silu, [(3, 4)]),
    "hardswish": (lambda x: F.hardswish(x * 3), lambda x: tF.hardswish(x * 3), [(3, 4)]),
    "hardsigmoid": (lambda x: F.hardsigmoid(x * 3), lambda x: tF.hardsigmoid(x * 3), [(3, 4)]),
    "relu_inplace_flag": (lambda x: F.relu(x * 1, inplace=True), lambda x: tF.relu(x * 1, inplace=True), [(3, 4)]),
    "log_softmax_dtype": (lambda x: F.log_softmax(x, 1, dtype="float64"),
                          lambda x: tF.log_softmax(x, 1, dtype=torch.float64), [(3, 4)]),
    "softmax_implicit_dim_3d": (F.softmax, lambda x: tF.softmax(x, 0), [(2, 3, 4)]),
    "interpolate_bilinear_align_corners": (lambda x: F.interpolate(x, (5, 7), mode="bilinear", align_corners=True),
                                           lambda x: tF.interpolate(x, (5, 7), mode="bilinear", align_corners=True),
                                           [(1, 2, 3, 4)]),
    "interpolate_nearest_scale": (lambda x: F.interpolate(x, scale_factor=2),
                                  lambda x: tF.interpolate(x, scale_factor=2), [(1, 2, 3, 2)]),
    "interpolate_area": (lambda x: F.interpolate(x, (3, 2), mode="area"),
                         lambda x: tF.interpolate(x, (3, 2), mode="area"), [(1, 2, 7, 5)]),
    "interpolate_trilinear": (lambda x: F.interpolate(x, scale_factor=1.5, mode="trilinear"),
                              lambda x: tF.interpolate(x, scale_factor=1.5, mode="trilinear"), [(1, 1, 2, 3, 2)]),
    "pad_reflect": (lambda x: F.pad(x, (2, 1), mode="reflect"), lambda x: tF.pad(x, (2, 1), mode="reflect"),
                    [(2, 3, 5)]),
    "pad_replicate_2d": (lambda x: F.pad(x, (1, 2, 2, 1), mode="replicate"),
                         lambda x: tF.pad(x, (1, 2, 2, 1), mode="replicate"), [(1, 2, 3, 4)]),
    "pad_circular": (lambda x: F.pad(x, (1, 1, 2, 0), mode="circular"),
                     lambda x: tF.pad(x, (1, 1, 2, 0), mode="circular"), [(1, 2, 4, 3)]),
    "pad_constant_crop": (lambda x: F.pad(x, (1, -1, 0, 2), value=0.5), lambda x: tF.pad(x, (1, -1, 0, 2), value=0.5),
                          [(2, 3, 4)]),
    "cross_entropy_weight_ignore_index": (
        lambda x: F.cross_entropy(x, _e(np.where(_T_CLASSES == -100, 2, _T_CLASSES)), weight=_e(_W4), ignore_index=2),
        lambda x: tF.cross_entropy(x, _t(np.where(_T_CLASSES == -100, 2, _T_CLASSES)), weight=_t(_W4),
                                   ignore_index=2), [(5, 4)]),
    "cross_entropy_default_ignore_index": (lambda x: F.cross_entropy(x, _e(_T_CLASSES), reduction="sum"),
                                           lambda x: tF.cross_entropy(x, _t(_T_CLASSES), reduction="sum"), [(5, 4)]),
    "cross_entropy_probability_target_gets_a_gradient": (
        lambda x, t: F.cross_entropy(x, F.softmax(t, 1), weight=_e(_W4), label_smoothing=0.1),
        lambda x, t: tF.cross_entropy(x, tF.softmax(t, 1), weight=_t(_W4), label_smoothing=0.1), [(3, 4), (3, 4)]),
    "cross_entropy_k_dim": (lambda x: F.cross_entropy(x, _e(_T_KDIM), reduction="none"),
                            lambda x: tF.cross_entropy(x, _t(_T_KDIM), reduction="none"), [(2, 3, 4, 2)]),
    "cross_entropy_unbatched": (lambda x: F.cross_entropy(x, _e(np.array(2))),
                                lambda x: tF.cross_entropy(x, _t(np.array(2))), [(5,)]),
    "nll_loss_weight_ignore_index": (
        lambda x: F.nll_loss(x, _e(np.where(_T_CLASSES == -100, 1, _T_CLASSES)), _e(_W4), ignore_index=1),
        lambda x: tF.nll_loss(x, _t(np.where(_T_CLASSES == -100, 1, _T_CLASSES)), _t(_W4), ignore_index=1),
        [(5, 4)]),
    "nll_loss_k_dim_none": (lambda x: F.nll_loss(x, _e(_T_KDIM), reduction="none"),
                            lambda x: tF.nll_loss(x, _t(_T_KDIM), reduction="none"), [(2, 3, 4, 2)]),
    "binary_cross_entropy_weight_both_sides": (
        lambda x, t: F.binary_cross_entropy(F.sigmoid(x), F.sigmoid(t), _e(_W4)),
        lambda x, t: tF.binary_cross_entropy(torch.sigmoid(x), torch.sigmoid(t), _t(_W4)), [(3, 4), (3, 4)]),
    "bce_with_logits_weight_pos_weight_both_sides": (
        lambda x, t: F.binary_cross_entropy_with_logits(x, F.sigmoid(t), _e(_W34), pos_weight=_e(_W4), reduction="sum"),
        lambda x, t: tF.binary_cross_entropy_with_logits(x, torch.sigmoid(t), _t(_W34), pos_weight=_t(_W4),
                                                         reduction="sum"), [(3, 4), (3, 4)]),
    "l1_loss_both_sides": (lambda x, t: F.l1_loss(x, t, reduction="sum"), lambda x, t: tF.l1_loss(x, t, reduction="sum"),
                           [(3, 4), (3, 4)]),
    "smooth_l1_loss_beta": (lambda x, t: F.smooth_l1_loss(x, t, beta=0.5), lambda x, t: tF.smooth_l1_loss(x, t, beta=0.5),
                            [(3, 4), (3, 4)]),
    "huber_loss_delta_none": (lambda x, t: F.huber_loss(x, t, "none", 0.7), lambda x, t: tF.huber_loss(x, t, "none", 0.7),
                              [(3, 4), (3, 4)]),
    "kl_div_batchmean": (lambda x, t: F.kl_div(F.log_softmax(x, 1), F.softmax(t, 1), reduction="batchmean"),
                         lambda x, t: tF.kl_div(tF.log_softmax(x, 1), tF.softmax(t, 1), reduction="batchmean"),
                         [(3, 4), (3, 4)]),
    "kl_div_log_target": (lambda x, t: F.kl_div(F.log_softmax(x, 1), F.log_softmax(t, 1), log_target=True),
                          lambda x, t: tF.kl_div(tF.log_softmax(x, 1), tF.log_softmax(t, 1), log_target=True),
                          [(3, 4), (3, 4)]),
    "mse_loss_weight": (lambda x, t: F.mse_loss(x, t, weight=_e(_W34)), lambda x, t: tF.mse_loss(x, t, weight=_t(_W34)),
                        [(3, 4), (3, 4)]),
    "l1_loss_weight_sum": (lambda x, t: F.l1_loss(x, t, reduction="sum", weight=_e(_W34)),
                           lambda x, t: tF.l1_loss(x, t, reduction="sum", weight=_t(_W34)), [(3, 4), (3, 4)]),
    "huber_loss_weight": (lambda x, t: F.huber_loss(x, t, weight=_e(_W34)),
                          lambda x, t: tF.huber_loss(x, t, weight=_t(_W34)), [(3, 4), (3, 4)]),
    "mse_loss_broadcast": (F.mse_loss, tF.mse_loss, [(3, 4), (4,)]),
}


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name", list(NEW_FUNCTIONAL))
def test_new_functional_node_matches_torch_and_finite_differences(name, backend_name):
    fn, tfn, specs = NEW_FUNCTIONAL[name]
    x = _inputs(specs)
    if name.startswith("max_pool"):  # keep every window's maximum clear of the others (finite differences)
        x[0] = np.random.default_rng(3).permutation(x[0].size).reshape(x[0].shape) / x[0].size
    with engine.use_backend(backend_name), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's broadcasting and implicit-dim warnings
        _check(fn, tfn, x)


def test_max_pool_indices_are_pytorchs_and_feed_unpooling():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    y, idx = nn.MaxPool2d(3, 2, 1, return_indices=True)(x)
    ty, tidx = torch.nn.MaxPool2d(3, 2, 1, return_indices=True)(torch.tensor(x))
    assert np.array_equal(engine.to_numpy(idx), tidx.numpy()) and not idx.requires_grad
    assert idx.dtype == np.int64
    out = nn.MaxUnpool2d(3, 2, 1)(y, idx, output_size=(7, 6))
    assert np.array_equal(engine.to_numpy(out), torch.nn.MaxUnpool2d(3, 2, 1)(ty, tidx, output_size=(7, 6)).numpy())
    y1, idx1 = nn.MaxPool1d(2, return_indices=True)(x[0])          # unbatched (C, L)
    ty1, tidx1 = torch.nn.MaxPool1d(2, return_indices=True)(torch.tensor(x[0]))
    assert np.array_equal(engine.to_numpy(idx1), tidx1.numpy())
    assert np.array_equal(engine.to_numpy(nn.MaxUnpool1d(2)(y1, idx1)), torch.nn.MaxUnpool1d(2)(ty1, tidx1).numpy())


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_modules_outside_pytorchs_lists_match_torch(backend_name):
    """Upsample*, MaxUnpool*, channel dropout in eval mode, Identity's arguments,
    inplace flags: outputs and input gradients equal PyTorch's."""
    x = _inputs([(2, 3, 4, 5)])[0]
    pairs = [
        (nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Upsample(scale_factor=2, mode="bilinear")),
        (nn.Upsample(size=(5, 7), mode="nearest-exact"), torch.nn.Upsample(size=(5, 7), mode="nearest-exact")),
        (nn.Upsample(scale_factor=1.5, mode="bicubic", align_corners=True),
         torch.nn.Upsample(scale_factor=1.5, mode="bicubic", align_corners=True)),
        (nn.UpsamplingNearest2d(scale_factor=3), torch.nn.UpsamplingNearest2d(scale_factor=3)),
        (nn.UpsamplingBilinear2d((6, 9)), torch.nn.UpsamplingBilinear2d((6, 9))),
        (nn.Dropout2d(0.4).eval(), torch.nn.Dropout2d(0.4).eval()),
        (nn.Dropout1d(0.4).eval(), torch.nn.Dropout1d(0.4).eval()),
        (nn.Identity(3, foo="bar"), torch.nn.Identity(3, foo="bar")),
        (nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
        (nn.LeakyReLU(0.2, True), torch.nn.LeakyReLU(0.2, True)),
        (nn.Hardswish(inplace=True), torch.nn.Hardswish(inplace=True)),
    ]
    with engine.use_backend(backend_name):
        for ours, theirs in pairs:
            shape = (3, 4, 5) if isinstance(ours, nn.Dropout1d) else x.shape
            data = x.reshape(-1)[:int(np.prod(shape))].reshape(shape)
            _check(ours, lambda t, m=theirs: m(t * 1), [data], fd=False)  # t * 1: a non-leaf for inplace


def test_channel_dropout_zeroes_whole_channels_and_its_gradient_is_the_mask():
    engine.manual_seed(0)
    x = engine.tensor(np.ones((4, 6, 3, 3)), requires_grad=True)
    y = nn.Dropout2d(0.5)(x)
    values = engine.to_numpy(y.detach())
    per_channel = values.reshape(4, 6, -1)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # a channel is all kept or all dropped
    y.backward(np.ones(y.shape))
    assert np.array_equal(engine.to_numpy(x.grad), values)
    y3 = nn.Dropout3d(0.5)(engine.tensor(np.ones((2, 3, 2, 2, 2))))
    assert set(np.unique(engine.to_numpy(y3.detach()).reshape(2, 3, -1).std(axis=2))) == {0.0}


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_conv_padding_modes_match_torch(mode, backend_name):
    torch.manual_seed(0)
    for tm, make, shape in [
            (torch.nn.Conv2d(2, 3, 3, 2, (1, 2), padding_mode=mode), nn.Conv2d, (2, 2, 5, 4)),
            (torch.nn.Conv2d(2, 3, (3, 2), padding="same", dilation=(1, 2), padding_mode=mode), nn.Conv2d, (2, 5, 6)),
            (torch.nn.Conv1d(2, 3, 4, 1, "same", padding_mode=mode), nn.Conv1d, (2, 2, 7))]:
        tm = tm.double()
        kwargs = {k: getattr(tm, k) for k in ("stride", "padding", "dilation", "padding_mode")}
        with engine.use_backend(backend_name):
            ours = make(tm.in_channels, tm.out_channels, tm.kernel_size, dtype="float64", **kwargs)
            ours.load_state_dict(tm.state_dict())
            _check(ours, tm, [_inputs([shape])[0]], fd=False)
            for name, p in ours.named_parameters():
                assert_rel(p.grad, dict(tm.named_parameters())[name].grad.numpy(), 1e-12, name)


def test_transposed_convolutions_take_only_zeros_padding():
    assert nn.ConvTranspose2d(1, 1, 3, padding_mode="zeros").padding_mode == "zeros"
    for cls in (nn.ConvTranspose2d, nn.ConvTranspose1d):
        assert_raises(ValueError, lambda c=cls: c(1, 1, 3, padding_mode="reflect"), cls.__name__,
                      "padding_mode must be one of 'zeros'", "'reflect'")
    assert_raises(ValueError, lambda: nn.Conv2d(1, 1, 3, padding_mode="mirror"), "Conv2d(1, 1)",
                  "'zeros', 'reflect', 'replicate', 'circular'", "'mirror'")


# --------------------------------------------------------------------------- constructors and signatures
def _params(fn):
    return [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def _twin_classes():
    names = [n for n in nn.__all__ if isinstance(getattr(nn, n), type) and hasattr(torch.nn, n)
             and n not in ("Module", "Parameter", "Sequential", "ModuleList", "ModuleDict")]
    return [(getattr(nn, n), getattr(torch.nn, n)) for n in names]


def _same_parameters(ours, theirs, where):
    """PyTorch's parameters in PyTorch's order, kinds and defaults; the engine may only
    add keyword-only parameters with defaults after them."""
    if theirs is torch.nn.Module.__init__:  # takes nothing (Sigmoid, Tanh)
        assert ours is nn.Module.__init__, f"{where}: PyTorch's takes no arguments"
        return
    mine, pt = _params(ours), _params(theirs)
    assert len(mine) >= len(pt), f"{where}: missing {[p.name for p in pt[len(mine):]]}"
    for a, b in zip(mine, pt):
        assert (a.name, a.kind) == (b.name, b.kind), f"{where}: {a} where PyTorch has {b}"
        assert a.default == b.default, f"{where}: {a.name} defaults to {a.default!r}, PyTorch {b.default!r}"
    for extra in mine[len(pt):]:
        assert extra.kind is extra.KEYWORD_ONLY and extra.default is not extra.empty, f"{where}: extra {extra}"


@pytest.mark.parametrize("ours, theirs", _twin_classes(), ids=lambda c: c.__name__)
def test_constructor_and_forward_signatures_are_pytorchs(ours, theirs):
    _same_parameters(ours.__init__, theirs.__init__, f"{ours.__name__}.__init__")
    _same_parameters(ours.forward, theirs.forward, f"{ours.__name__}.forward")


def test_optimizer_and_functional_signatures_are_pytorchs():
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        _same_parameters(getattr(optim, name).__init__, getattr(torch.optim, name).__init__, name)
    checked = 0
    for name in F.__all__:
        theirs = getattr(tF, name, None)
        try:
            pt = inspect.signature(theirs)
        except (TypeError, ValueError):  # C builtins (conv2d, linear, ...) carry no signature
            continue
        if any(p.kind is p.VAR_POSITIONAL for p in pt.parameters.values()):  # max_pool*'s dispatch wrappers
            continue
        _same_parameters(getattr(F, name), theirs, f"F.{name}")
        checked += 1
    assert checked >= 25


@pytest.mark.parametrize("dtype", [None, "float64", np.float64, np.dtype("float64"), torch.float64, torch.float32])
def test_dtype_argument_takes_names_numpy_and_torch_dtypes(dtype):
    expected = "float32" if dtype is None or dtype is torch.float32 else "float64"
    for layer in (nn.Conv2d(1, 2, 3, dtype=dtype), nn.Linear(2, 3, dtype=dtype), nn.BatchNorm2d(2, dtype=dtype),
                  nn.LayerNorm(4, dtype=dtype), nn.GroupNorm(1, 2, dtype=dtype), nn.Conv1d(1, 1, 2, dtype=dtype),
                  nn.ConvTranspose2d(1, 1, 2, dtype=dtype)):
        assert all(str(p.dtype) == expected for p in layer.parameters()), type(layer).__name__


def test_device_argument_names_where_the_active_backend_computes():
    for device in (None, "cpu", torch.device("cpu"), "cpu:0"):
        nn.Linear(2, 2, device=device)
    assert_raises(ValueError, lambda: nn.Conv2d(1, 1, 3, device="cuda"), "Conv2d(1, 1)", "device='cuda'",
                  "active backend 'numpy'", "engine.set_backend('cupy')")
    assert_raises(ValueError, lambda: nn.BatchNorm1d(3, device=torch.device("meta")), "BatchNorm1d(3)", "meta")
    assert_raises(ValueError, lambda: nn.Linear(2, 2, dtype=torch.int64), "Linear(2, 2)",
                  "dtype must be 'float32' or 'float64'", "torch.int64")


def test_loss_weights_are_buffers_as_in_pytorch():
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    for make in (lambda lib: lib.CrossEntropyLoss(weight=w), lambda lib: lib.NLLLoss(w),
                 lambda lib: lib.BCELoss(w), lambda lib: lib.BCEWithLogitsLoss(w, pos_weight=w * 2)):
        ours, theirs = make(nn), make(torch.nn)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for key, value in theirs.state_dict().items():
            np.testing.assert_array_equal(engine.to_numpy(ours.state_dict()[key]), value.numpy())
        assert all(str(b.dtype) == "float32" for b in ours.to("float32").state_dict().values())
    assert list(nn.CrossEntropyLoss().state_dict()) == [] == list(torch.nn.CrossEntropyLoss().state_dict())
    assert nn.BCEWithLogitsLoss().pos_weight is None


def test_batchnorm_bias_false_and_an_empty_training_batch():
    for lib in (nn, torch.nn):
        assert "bias" not in dict(lib.BatchNorm2d(3, bias=False).named_parameters())
    bn, tbn = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    y = bn(np.zeros((0, 3, 2, 2), dtype=np.float32))
    ty = tbn(torch.zeros(0, 3, 2, 2))
    assert y.shape == tuple(ty.shape) == (0, 3, 2, 2)
    for key, value in tbn.state_dict().items():
        np.testing.assert_array_equal(engine.to_numpy(bn.state_dict()[key]), value.numpy(), err_msg=key)


def test_optimizers_take_a_one_element_tensor_lr():
    p = nn.Parameter(engine.asarray(np.ones(2)))
    for lr in (torch.tensor(0.01), np.array(0.01), engine.tensor(0.01)):
        opt = optim.SGD([p], lr=lr)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01) and isinstance(opt.param_groups[0]["lr"], float)


# --------------------------------------------------------------------------- fit and schedulers
def _tiny_run(scheduler_factory, val=True, epochs=2):
    engine.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    rng = np.random.default_rng(0)
    batches = [(engine.asarray(rng.standard_normal((4, 3)), dtype="float32"), engine.asarray(rng.integers(0, 2, 4)))
               for _ in range(3)]
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = scheduler_factory(opt)
    history = fit(model, nn.CrossEntropyLoss(), opt, batches, batches[:2] if val else None, epochs=epochs,
                  scheduler=sched, progress=False)
    return sched, history, opt


def test_fit_steps_one_cycle_after_every_batch():
    sched, history, opt = _tiny_run(lambda o: schedulers.OneCycleLR(o, max_lr=0.5, total_steps=6))
    assert scheduler_step_unit(sched) == "batch" and sched.last_epoch == 6
    tw = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([tw], lr=0.1, momentum=0.9)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.5, total_steps=6)
    lrs = []
    for _ in range(2):
        lrs.append(topt.param_groups[0]["lr"])
        for _ in range(3):
            topt.step()
            tsched.step()
    assert history.lr == pytest.approx(lrs, rel=1e-12)  # the rate each epoch started with
    assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


class _Recording(schedulers.ReduceLROnPlateau):
    def step(self, metrics=None, epoch=None):
        self.seen = getattr(self, "seen", []) + [metrics]
        super().step(metrics, epoch)


@pytest.mark.parametrize("val", [True, False])
def test_fit_steps_reduce_lr_on_plateau_with_the_monitored_loss(val):
    sched, history, _ = _tiny_run(lambda o: _Recording(o, patience=0, factor=0.5), val=val, epochs=3)
    assert scheduler_step_unit(sched) == "metric"
    expected = history.val_loss if val else history.loss
    assert sched.seen == pytest.approx(expected, rel=0)


def test_fit_steps_epoch_schedulers_per_epoch_and_honours_step_unit():
    sched, history, _ = _tiny_run(lambda o: schedulers.StepLR(o, 1, gamma=0.5), epochs=3)
    assert scheduler_step_unit(sched) == "epoch" and history.lr == pytest.approx([0.1, 0.05, 0.025])

    def per_batch(o):
        s = schedulers.ExponentialLR(o, gamma=0.5)
        s.step_unit = "batch"
        return s
    sched, history, _ = _tiny_run(per_batch, epochs=2)
    assert sched.last_epoch == 6 and history.lr == pytest.approx([0.1, 0.1 * 0.5 ** 3])
    bad = schedulers.StepLR(optim.SGD([nn.Parameter(engine.asarray(np.ones(1)))]), 1)
    bad.step_unit = "sometimes"
    assert_raises(ValueError, lambda: scheduler_step_unit(bad), "step_unit", "'sometimes'")


def test_summary_reads_the_new_layers():
    """A LayerNorm weight of 3 axes is no convolution (no FLOPs), the new element-wise
    layers keep the receptive field, and a pool with indices gives its pooled shape."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.GELU(), nn.Dropout2d(),
                          nn.LayerNorm([4, 8, 8]), nn.SiLU(), nn.Conv2d(4, 2, 3, padding=1))
    rows = model.summary((1, 8, 8)).rows
    assert [r.macs for r in rows] == [8 * 8 * 4 * 9, 0, 0, 0, 0, 8 * 8 * 2 * 4 * 9]
    assert [r.receptive_field for r in rows[:3]] == [(3, 3)] * 3 and rows[3].receptive_field is None

    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            return self.pool(x)[0]
    assert Pool().summary((2, 6, 6)).rows[0].output_shape == (1, 2, 3, 3)
