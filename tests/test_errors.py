"""Bad input raises ValueError/TypeError (RuntimeError for misuse of backward)
whose message names the layer or op, the argument, what was expected and what came."""
from __future__ import annotations


import numpy as np
import pytest

import engine
from engine import ops
from engine import nn, optim


def _raises(exc, fn, *fragments):
    """``fn()`` raises ``exc`` and its message contains every fragment (literally)."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in message {msg!r}"
    return msg


def _f32(*shape):
    return np.zeros(shape, dtype=np.float32)


# --------------------------------------------------------------------------- number of dimensions
@pytest.mark.parametrize("make, shape, fragments", [
    # unbatched (C, H, W), (C, L), (in,) inputs are PyTorch's and accepted; one axis fewer is not
    (lambda: nn.Conv2d(3, 4, 3), (8, 8), ["Conv2d(3, 4", "input", "(N, C, H, W) or unbatched",
                                          "got 2 dimensions", "(8, 8)"]),
    (lambda: nn.Conv2d(3, 4, 3), (1, 1, 3, 8, 8), ["Conv2d(3, 4", "got 5 dimensions"]),
    (lambda: nn.MaxPool2d(2), (8,), ["MaxPool2d", "input", "(N, C, H, W) or unbatched", "got 1 dimensions",
                                     "(8,)"]),
    (lambda: nn.AvgPool2d(2), (1, 2, 2, 8, 8), ["AvgPool2d", "got 5 dimensions"]),
    (lambda: nn.GlobalAvgPool2d(), (2, 8), ["GlobalAvgPool2d", "4 dimensions", "(2, 8)"]),
    (lambda: nn.Linear(4, 2), (), ["Linear(in_features=4", "input", "at least 1 dimension", "shape ()"]),
])
def test_wrong_number_of_dimensions(make, shape, fragments):
    _raises(ValueError, lambda: make()(_f32(*shape)), *fragments)


def test_wrong_number_of_dimensions_functional():
    _raises(ValueError, lambda: ops.conv2d(_f32(3, 8, 8), _f32(4, 3, 3, 3)), "conv2d", "input", "4 dimensions",
            "got 3 dimensions")
    _raises(ValueError, lambda: ops.conv2d(_f32(1, 3, 8, 8), _f32(4, 3, 3)), "conv2d", "weight",
            "(out_channels, in_channels/groups, kh, kw)", "got 3 dimensions")
    _raises(ValueError, lambda: ops.max_pool2d(_f32(8, 8), 2), "max_pool2d", "4 dimensions", "got 2")
    _raises(ValueError, lambda: ops.avg_pool2d(_f32(1, 8, 8), 2), "avg_pool2d", "4 dimensions", "got 3")
    _raises(ValueError, lambda: ops.cross_entropy(_f32(4), np.zeros(4, dtype=np.int64)), "cross_entropy",
            "unbatched logits of shape (4,)", "needs a 0-d target", "got shape (4,)")  # (C,) is one sample


# --------------------------------------------------------------------------- channels and widths
def test_wrong_channel_count():
    _raises(ValueError, lambda: nn.Conv2d(3, 4, 3)(_f32(2, 2, 8, 8)), "Conv2d(3, 4", "input has 2 channels",
            "expected 3", "(2, 2, 8, 8)")
    _raises(ValueError, lambda: ops.conv2d(_f32(1, 4, 5, 5), _f32(6, 3, 3, 3), groups=2), "conv2d",
            "input has 4 channels", "expected 6", "groups=2")
    _raises(ValueError, lambda: ops.conv2d(_f32(1, 4, 5, 5), _f32(3, 2, 3, 3), groups=2), "conv2d",
            "out_channels=3", "not divisible by groups=2")
    _raises(ValueError, lambda: ops.conv2d(_f32(1, 3, 5, 5), _f32(4, 3, 3, 3), _f32(3)), "conv2d", "bias",
            "(4,)", "(3,)")


def test_linear_input_of_the_wrong_width():
    _raises(ValueError, lambda: nn.Linear(4, 2)(_f32(3, 5)), "Linear(in_features=4, out_features=2",
            "input has 5 features", "expected 4", "(3, 5)")
    _raises(ValueError, lambda: ops.linear(_f32(3, 5), _f32(2, 4)), "linear", "4 features", "(3, 5)")


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("call, fragments", [
    (lambda: nn.Conv2d(1, 1, 5)(_f32(1, 1, 3, 3)), ["Conv2d(1, 1", "kernel (5x5", "larger than the padded input",
                                                    "(3x3"]),
    (lambda: nn.Conv2d(1, 1, 3, padding=1, dilation=3)(_f32(1, 1, 4, 4)), ["Conv2d(1, 1", "kernel (7x7",
                                                                            "dilation (3, 3)", "(6x6"]),
    (lambda: nn.Conv2d(1, 1, (2, 6))(_f32(1, 1, 8, 5)), ["kernel (2x6", "(8x5"]),
    (lambda: ops.conv2d(_f32(1, 1, 3, 3), _f32(1, 1, 4, 4)), ["conv2d", "kernel (4x4", "(3x3"]),
    (lambda: nn.MaxPool2d(4)(_f32(1, 1, 3, 3)), ["MaxPool2d", "kernel (4x4", "larger than the padded input"]),
    (lambda: nn.AvgPool2d(3)(_f32(1, 1, 2, 5)), ["AvgPool2d", "kernel (3x3", "(2x5"]),
])
def test_kernel_larger_than_padded_input(call, fragments):
    _raises(ValueError, call, *fragments)


@pytest.mark.parametrize("make, fragments", [
    (lambda: nn.Conv2d(1, 1, 0), ["Conv2d(1, 1)", "kernel_size must be >= 1", "got (0, 0)"]),
    (lambda: nn.Conv2d(1, 1, (3, -1)), ["kernel_size must be >= 1", "(3, -1)"]),
    (lambda: nn.Conv2d(1, 1, 3, stride=0), ["Conv2d(1, 1)", "stride must be >= 1", "got (0, 0)"]),
    (lambda: nn.Conv2d(1, 1, 3, stride=(1, -2)), ["stride must be >= 1", "(1, -2)"]),
    (lambda: nn.Conv2d(1, 1, 3, dilation=0), ["dilation must be >= 1"]),
    (lambda: nn.Conv2d(1, 1, 3, padding=-1), ["padding must be >= 0", "(-1, -1)"]),
    (lambda: nn.Conv2d(1, 1, 3, stride=2, padding="same"), ["padding='same' needs stride 1", "(2, 2)"]),
    (lambda: nn.Conv2d(1, 1, 3, padding="full"), ["padding must be an int, a pair, 'valid' or 'same'",
                                                  "'full'"]),
    (lambda: nn.Conv2d(0, 1, 3), ["in_channels must be a positive int", "got 0"]),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ["divisible by groups=2"]),
    (lambda: nn.Conv2d(1, 1, 3, method="fft"), ["method must be one of", "'fft'"]),
    (lambda: nn.Conv2d(1, 1, 3, dtype="float16"), ["dtype must be 'float32' or 'float64'", "'float16'"]),
    (lambda: nn.Conv2d(1, 1, 3, init="ones"), ["init must be one of", "'ones'"]),
    (lambda: nn.MaxPool2d(0), ["MaxPool2d", "kernel_size must be >= 1", "(0, 0)"]),
    (lambda: nn.MaxPool2d(2, stride=0), ["MaxPool2d", "stride must be >= 1"]),
    (lambda: nn.AvgPool2d(-2), ["AvgPool2d", "kernel_size must be >= 1", "(-2, -2)"]),
    (lambda: nn.Linear(0, 3), ["Linear(0, 3)", "in_features must be a positive int", "got 0"]),
    (lambda: ops.conv2d(_f32(1, 1, 5, 5), _f32(1, 1, 3, 3), stride=0), ["conv2d", "stride must be >= 1"]),
    (lambda: ops.conv2d(_f32(1, 1, 5, 5), _f32(1, 1, 3, 3), groups=0), ["conv2d", "groups must be a positive int"]),
    (lambda: ops.max_pool2d(_f32(1, 1, 5, 5), 0), ["max_pool2d", "kernel_size must be >= 1"]),
    (lambda: ops.avg_pool2d(_f32(1, 1, 5, 5), 2, stride=-1), ["avg_pool2d", "stride must be >= 1"]),
    (lambda: ops.max_pool2d(_f32(1, 1, 5, 5), 2, padding=2), ["max_pool2d", "padding (2, 2)", "at most half"]),
    (lambda: ops.avg_pool2d(_f32(1, 1, 5, 5), 2, divisor_override=0), ["divisor_override must be a positive int"]),
])
def test_bad_geometry_arguments_raise_value_error(make, fragments):
    _raises(ValueError, make, *fragments)


@pytest.mark.parametrize("make, fragments", [
    (lambda: nn.Conv2d(1, 1, 2.5), ["kernel_size must be an int or a pair of ints", "2.5"]),
    (lambda: nn.Conv2d(1, 1, (1, 2, 3)), ["kernel_size must be an int or a pair of ints", "(1, 2, 3)"]),
    (lambda: nn.Conv2d(1, 1, 3, stride=True), ["stride must be an int or a pair of ints", "True"]),
    (lambda: nn.MaxPool2d("2"), ["MaxPool2d", "kernel_size", "'2'"]),
])
def test_non_integer_sizes_raise_type_error(make, fragments):
    _raises(TypeError, make, *fragments)


def test_max_pool_padding_bound_uses_the_undilated_kernel_like_torch():
    # kernel 2, dilation 3: PyTorch rejects padding 2 > 2 // 2 ("pad should be at most half of kernel size")
    with pytest.raises(ValueError, match="padding"):
        y = ops.max_pool2d(np.ones((1, 1, 1, 1)), 2, 1, padding=2, dilation=3)
        assert np.all(engine.to_numpy(y) > -1e300), "a window of padding only: finfo.min leaked out"


# --------------------------------------------------------------------------- dtypes
def test_integer_input_to_a_conv():
    _raises(TypeError, lambda: nn.Conv2d(1, 2, 3)(np.zeros((1, 1, 5, 5), dtype=np.int64)), "Conv2d(1, 2",
            "input must be a floating-point array", "got dtype int64", "engine.asarray(x, dtype='float32')")
    _raises(TypeError, lambda: ops.conv2d(np.zeros((1, 1, 5, 5), dtype=np.uint8), _f32(1, 1, 3, 3)), "conv2d",
            "got dtype uint8")
    _raises(TypeError, lambda: ops.conv2d(_f32(1, 1, 5, 5), np.ones((1, 1, 3, 3), dtype=np.int32)), "conv2d",
            "weight must be a floating-point array", "int32")
    _raises(TypeError, lambda: nn.MaxPool2d(2)(np.zeros((1, 1, 4, 4), dtype=np.int64)), "MaxPool2d",
            "floating-point", "int64")
    _raises(TypeError, lambda: nn.Linear(3, 2)(np.zeros((1, 3), dtype=np.int64)), "Linear(in_features=3", "floating-point")


def test_input_and_weight_dtypes_must_agree():
    _raises(TypeError, lambda: nn.Conv2d(1, 2, 3)(np.zeros((1, 1, 5, 5))), "Conv2d(1, 2", "input dtype float64",
            "weight dtype float32", "model.to('float64')")


def test_non_arrays_are_rejected():
    _raises(TypeError, lambda: ops.conv2d([[[[1.0]]]], _f32(1, 1, 1, 1)), "conv2d",
            "expected an array of one of the engine's backends", "builtins.list", "engine.asarray")
    _raises(TypeError, lambda: ops.relu(3.0), "relu", "float")


# --------------------------------------------------------------------------- losses
def test_labels_outside_the_class_range():
    logits = _f32(3, 4)
    _raises(ValueError, lambda: nn.CrossEntropyLoss()(logits, np.array([0, 4, 1])), "CrossEntropyLoss",
            "labels must be in [0, 3]", "4 classes", "got values in [0, 4]")
    _raises(ValueError, lambda: nn.CrossEntropyLoss()(logits, np.array([-1, 0, 1])), "CrossEntropyLoss",
            "labels must be in [0, 3]", "[-1, 1]")
    _raises(ValueError, lambda: ops.cross_entropy(logits, np.array([9, 9, 9])), "cross_entropy:", "[9, 9]")


def test_bad_targets():
    logits = _f32(3, 4)
    _raises(TypeError, lambda: nn.CrossEntropyLoss()(logits, np.array([0.0, 1.0, 2.0])), "CrossEntropyLoss",
            "target must hold integer class labels", "float64")
    _raises(ValueError, lambda: nn.CrossEntropyLoss()(logits, np.array([0, 1])), "CrossEntropyLoss",
            "target must have shape (3,)", "(3, 4)", "got (2,)")
    _raises(TypeError, lambda: nn.CrossEntropyLoss()(np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2])),
            "CrossEntropyLoss", "logits must be a floating-point array")
    _raises(ValueError, lambda: nn.MSELoss()(_f32(3), _f32(4)), "MSELoss", "input shape (3,)",
            "target shape (4,)")
    _raises(ValueError, lambda: nn.CrossEntropyLoss(reduction="avg"), "CrossEntropyLoss",
            "reduction must be 'mean', 'sum' or 'none'", "'avg'")
    _raises(ValueError, lambda: nn.CrossEntropyLoss(label_smoothing=1.5)(logits, np.array([0, 1, 2])),
            "label_smoothing must be in [0, 1]", "1.5")


# --------------------------------------------------------------------------- misuse of backward
def test_backward_of_a_tensor_outside_any_graph():
    y = nn.ReLU()(_f32(2, 2))  # data in, no parameters: nothing recorded
    _raises(RuntimeError, lambda: y.backward(_f32(2, 2)), "does not require grad and does not have a grad_fn")
    with engine.no_grad():
        z = nn.Linear(2, 2)(_f32(1, 2))
    _raises(RuntimeError, lambda: z.sum().backward(), "does not require grad")


def test_backward_through_a_freed_graph_says_retain_graph():
    loss = nn.Linear(3, 2)(_f32(4, 3)).sum()
    loss.backward()
    _raises(RuntimeError, loss.backward, "backward through the graph a second time", "retain_graph=True")


def test_implicit_gradient_needs_a_scalar_and_a_given_one_the_right_shape():
    y = nn.Linear(3, 2)(_f32(4, 3))
    _raises(RuntimeError, y.backward, "grad can be implicitly created only for scalar outputs", "(4, 2)")
    _raises(RuntimeError, lambda: y.backward(_f32(2, 4)), "gradient has shape (2, 4)", "shape (4, 2)")


def test_array_ops_refuse_tensors_and_name_the_differentiable_version():
    t = engine.tensor(np.ones((2, 3)), requires_grad=True)
    _raises(TypeError, lambda: ops.relu(t), "relu", "engine.Tensor", "engine.nn.functional.relu")


def test_create_graph_is_refused_with_the_reason():
    loss = nn.Linear(3, 1)(_f32(2, 3)).sum()
    _raises(NotImplementedError, lambda: loss.backward(create_graph=True), "double backward")


def test_requires_grad_only_on_float_leaves():
    _raises(RuntimeError, lambda: engine.tensor([1, 2], requires_grad=True), "floating point")
    y = nn.Linear(3, 1)(_f32(2, 3))
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_in_place_change_of_a_recorded_tensor_is_refused():
    w = engine.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w += 1
    with engine.no_grad():
        w -= 0.5  # an optimizer's update
    assert float(w.sum()) == 1.5


def test_conv_backward_with_a_wrong_grad_shape():
    _raises(ValueError, lambda: ops.conv2d_backward(_f32(1, 2, 4, 4), _f32(1, 1, 5, 5), _f32(2, 1, 3, 3)),
            "conv2d backward", "grad_out must have shape (1, 2, 3, 3)", "got (1, 2, 4, 4)")


# --------------------------------------------------------------------------- state dicts
def _model():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def test_load_state_dict_shape_mismatch():
    sd = {k: engine.to_numpy(v) for k, v in _model().state_dict().items()}
    sd["3.weight"] = np.zeros((3, 9))
    _raises(ValueError, lambda: _model().load_state_dict(sd), "Sequential.load_state_dict", "'3.weight'",
            "has shape (3, 9)", "expected (3, 8)")
    _raises(ValueError, lambda: _model().load_state_dict(sd, strict=False), "'3.weight'", "(3, 9)")


def test_load_state_dict_missing_and_unexpected_keys_are_named():
    sd = {k: engine.to_numpy(v) for k, v in _model().state_dict().items()}
    del sd["0.bias"]
    sd["9.weight"] = np.zeros(3)
    msg = _raises((KeyError, ValueError), lambda: _model().load_state_dict(sd), "Sequential.load_state_dict",
                  "missing keys ['0.bias']", "unexpected keys ['9.weight']")
    assert msg
    model = _model()
    model.load_state_dict(sd, strict=False)  # non-strict: loads what matches
    np.testing.assert_array_equal(engine.to_numpy(model.state_dict()["0.weight"]), sd["0.weight"])


def test_load_state_dict_missing_keys_is_a_value_error():
    sd = {k: engine.to_numpy(v) for k, v in _model().state_dict().items()}
    del sd["0.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['0.bias'\]"):
        _model().load_state_dict(sd)


def test_load_state_dict_never_aliases_the_source():
    src = {k: engine.to_numpy(v).copy() for k, v in _model().state_dict().items()}
    model = _model()
    model.load_state_dict(src)
    src["3.bias"][:] = 42.0
    assert not np.any(engine.to_numpy(model.state_dict()["3.bias"]) == 42.0)


# --------------------------------------------------------------------------- misc
def test_misc_argument_errors():
    _raises(TypeError, lambda: nn.Sequential(nn.ReLU(), lambda x: x), "Sequential", "item '1'", "Module",
            "function")
    _raises(TypeError, lambda: engine.manual_seed(1.5), "manual_seed", "int", "float")
    _raises(ValueError, lambda: ops.cross_entropy(_f32(2, 3), np.array([0, 1]), reduction="avg"), "cross_entropy",
            "reduction")
    _raises(ValueError, lambda: optim.SGD([nn.Parameter(_f32(2))], lr=-1.0), "SGD", "lr must be >= 0", "-1.0")


def test_channels_last_input_to_a_conv_names_the_layout():
    x = np.zeros((2, 28, 28, 3), dtype=np.float32)  # NHWC
    msg = _raises(ValueError, lambda: nn.Conv2d(3, 8, 3)(x), "Conv2d(3, 8", "looks like NHWC",
                  "engine.data.to_nchw")
    assert "(2, 28, 28, 3)" in msg
