"""Edge cases found in review: shared modules, dtype mismatches, 0-d losses,
backward argument checks, writable gradients."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import ops
from engine import nn

from _helpers import forward_backward, from_torch, to_torch, torch_or_skip


def test_a_shared_layer_is_one_set_of_parameters_but_keeps_every_state_dict_key():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(model.parameters()) == 2 and model.num_parameters() == 6
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # as torch lists them


def _shared_models(torch):
    """(engine model, torch twin) pairs in which one module object is used twice."""
    engine.manual_seed(0)
    lin, tlin = nn.Linear(4, 4), torch.nn.Linear(4, 4)
    act, tact = nn.Tanh(), torch.nn.Tanh()
    block = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid())
    tblock = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sigmoid())
    conv_act, tconv_act = nn.ReLU(), torch.nn.ReLU()
    return {
        "shared_linear": (nn.Sequential(lin, act, lin), torch.nn.Sequential(tlin, tact, tlin), (5, 4)),
        "shared_block": (nn.Sequential(block, nn.Tanh(), block), torch.nn.Sequential(tblock, torch.nn.Tanh(), tblock),
                         (5, 4)),
        "reused_activation": (
            nn.Sequential(nn.Conv2d(1, 2, 3), conv_act, nn.Conv2d(2, 3, 3), conv_act, nn.Flatten(), nn.Linear(48, 2)),
            torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), tconv_act, torch.nn.Conv2d(2, 3, 3), tconv_act,
                                torch.nn.Flatten(), torch.nn.Linear(48, 2)),
            (3, 1, 8, 8)),
        "nested_reuse": (nn.Sequential(nn.Sequential(lin, act), lin), torch.nn.Sequential(torch.nn.Sequential(tlin, tact),
                                                                                         tlin), (5, 4)),
        "residual_shares_its_activation": (  # one ReLU inside the body and after the sum
            nn.Residual(nn.Sequential(nn.Linear(4, 4), conv_act, nn.Linear(4, 4)), activation=conv_act),
            _TorchResidual(torch, torch.nn.Sequential(torch.nn.Linear(4, 4), tconv_act, torch.nn.Linear(4, 4)),
                           tconv_act),
            (5, 4)),
    }


def _TorchResidual(torch, body, activation):
    class Residual(torch.nn.Module):  # activation(body(x) + x), with the engine's state_dict keys
        def __init__(self):
            super().__init__()
            self.body, self.activation = body, activation

        def forward(self, x):
            return self.activation(self.body(x) + x)
    return Residual()


@pytest.mark.parametrize("case", ["shared_linear", "shared_block", "reused_activation", "nested_reuse",
                                  "residual_shares_its_activation"])
def test_a_module_used_twice_in_one_forward_gets_both_calls_gradients(case):
    """Each call's backward uses that call's input (PyTorch's autograd does the
    same); the shared parameters' gradients are the sum over the calls."""
    torch = torch_or_skip()
    model, twin, x_shape = _shared_models(torch)[case]
    model.to("float64")
    model.load_state_dict({k: from_torch(v) for k, v in twin.double().state_dict().items()})
    x = np.random.default_rng(1).standard_normal(x_shape)
    tx = to_torch(x, requires_grad=True)
    ty = twin(tx)
    gy = np.random.default_rng(2).standard_normal(tuple(ty.shape))
    ty.backward(to_torch(gy))
    y, dx = forward_backward(model, x, gy)
    np.testing.assert_allclose(engine.to_numpy(y), from_torch(ty), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, from_torch(tx.grad), rtol=1e-10, atol=1e-14)
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name, tp in twin.named_parameters():
        np.testing.assert_allclose(grads[name], from_torch(tp.grad), rtol=1e-10, atol=1e-14, err_msg=name)


def test_a_shared_conv_frees_what_both_calls_saved_after_backward():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    y = model(x)
    second = y.grad_fn
    first = second.next_functions[0][0].next_functions[0][0]  # conv <- relu <- conv
    assert type(first).__name__ == type(second).__name__ == "Conv2dNode" and first is not second
    assert first.saved is not None and second.saved is not None
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert first.saved is None and second.saved is None


@pytest.mark.parametrize("weight_dtype, bias_dtype", [(np.float32, None), (np.float64, np.float32)])
def test_linear_refuses_mixed_dtypes(weight_dtype, bias_dtype):
    x = np.ones((2, 3))
    w = np.ones((4, 3), dtype=weight_dtype)
    b = None if bias_dtype is None else np.ones(4, dtype=bias_dtype)
    with pytest.raises(TypeError, match="linear: input dtype float64 differs from (weight|bias) dtype float32"):
        ops.linear(x, w, b)


def test_conv2d_refuses_a_bias_of_another_dtype_and_bool_groups():
    x, w = np.ones((1, 2, 3, 3)), np.ones((2, 2, 1, 1))
    with pytest.raises(TypeError, match="bias dtype float32"):
        ops.conv2d(x, w, np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match="groups must be a positive int, got True"):
        ops.conv2d(x, w, groups=True)


def test_conv2d_checks_every_call_that_differs_from_a_checked_one():
    """conv2d keeps the checked geometry of each call (engine.ops.conv._SETUPS); arguments that
    compare equal to a checked call's but would not pass (1.0 or True for 1, another dtype, a
    Tensor) are still refused, and a kept entry still gives the right window."""
    import array_api_strict as strict
    from engine.ops import conv as conv_ops
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((2, 2, 3, 3), np.float32)
    y = ops.conv2d(x, w, stride=1, padding=1, groups=1)
    assert y.shape == (1, 2, 5, 5) and any(k[8:12] == (1, 1, 1, 1) for k in conv_ops._SETUPS)
    np.testing.assert_array_equal(ops.conv2d(x, w, stride=1, padding=1, groups=1), y)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints, got 1.0"):
        ops.conv2d(x, w, stride=1.0, padding=1)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints, got True"):
        ops.conv2d(x, w, stride=True, padding=1)
    with pytest.raises(ValueError, match="groups must be a positive int, got True"):
        ops.conv2d(x, w, padding=1, groups=True)
    with pytest.raises(TypeError, match="differs from weight dtype float32"):
        ops.conv2d(x.astype(np.float64), w, padding=1)
    with pytest.raises(TypeError, match="got an engine.Tensor"):
        ops.conv2d(engine.Tensor(x), w, padding=1)
    with pytest.raises(TypeError, match="array_api_strict"):  # not a NumPy array, whether that backend is loaded or not
        ops.conv2d(strict.asarray(x), w, padding=1)
    assert ops.conv2d(x, w, stride=2, padding=1).shape == (1, 2, 3, 3)
    assert ops.conv2d(x, w, stride=(2, 1), padding=[1, 0]).shape == (1, 2, 3, 3)  # a list: checked, not kept


def test_pooling_checks_every_call_that_differs_from_a_checked_one():
    """max_pool2d and avg_pool2d keep their checked windows too (engine.ops.pooling._SETUPS):
    arguments equal to a kept call's that would not pass, and other shapes or dtypes, are still
    checked; a kept entry gives the right window, under the op's own name."""
    from engine.ops import pooling
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    y = ops.max_pool2d(x, 2, stride=None, padding=0, dilation=1, ceil_mode=False)
    assert any(k[3:9] == (2, None, 0, 1, False, "max_pool2d") for k in pooling._SETUPS)
    np.testing.assert_array_equal(ops.max_pool2d(x, 2), y)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    with pytest.raises(TypeError, match="max_pool2d: kernel_size must be an int or a pair of ints, got True"):
        ops.max_pool2d(x, True)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints, got 2.0"):
        ops.max_pool2d(x, 2.0)
    with pytest.raises(ValueError, match="max_pool2d: input must have 4 dimensions"):
        ops.max_pool2d(x[0], 2)
    with pytest.raises(TypeError, match="max_pool2d: input must be a floating-point array"):
        ops.max_pool2d(x.astype(np.int32), 2)
    with pytest.raises(TypeError, match="got an engine.Tensor"):
        ops.max_pool2d(engine.Tensor(x), 2)
    with pytest.raises(ValueError, match="avg_pool2d: padding"):
        ops.avg_pool2d(x, 2, padding=2)
    assert ops.max_pool2d(x, 2, ceil_mode=1).shape == (1, 2, 2, 2)  # an int for a bool: checked, not kept
    np.testing.assert_array_equal(ops.avg_pool2d(x, 2)[0, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_linear_checks_every_call_that_differs_from_a_checked_one():
    """linear keeps the backend of each checked call (engine.ops.activations._SETUPS) by the
    arrays' types, shapes and dtypes: any of them changed is checked again."""
    x, w, b = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(4, np.float32)
    np.testing.assert_array_equal(ops.linear(x, w, b), np.full((2, 4), 4, np.float32))
    np.testing.assert_array_equal(ops.linear(x, w, b), np.full((2, 4), 4, np.float32))
    with pytest.raises(ValueError, match="linear: input must have 3 features"):
        ops.linear(np.ones((2, 5), np.float32), w, b)
    with pytest.raises(TypeError, match="linear: input dtype float64 differs from weight dtype float32"):
        ops.linear(x.astype(np.float64), w, b)
    with pytest.raises(TypeError, match="got an engine.Tensor"):
        ops.linear(engine.Tensor(x), w, b)
    with pytest.raises(TypeError, match="linear: input must be a floating-point array"):
        ops.linear(x.astype(np.int64), w.astype(np.int64))


def test_mse_of_0d_arrays_and_mean_over_nothing_is_nan():
    assert float(ops.mse_loss(np.ones(()), np.zeros(()))) == 1.0
    assert np.isnan(float(ops.cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))))  # 0/0, no warning


def test_cross_entropy_backward_checks_its_arguments_like_the_forward():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match="reduction must be"):
        ops.cross_entropy_backward(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        ops.cross_entropy_backward(logits, np.array([0, 7]))


def test_global_average_pool_gradient_is_writable():
    dx = ops.global_avg_pool2d_backward(np.ones((2, 3)), (2, 3, 4, 4))
    dx += 1.0  # a broadcast view would refuse this
    np.testing.assert_allclose(dx, 1.0 + 1.0 / 16)
