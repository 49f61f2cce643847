"""Edge cases found in review: shared modules, dtype mismatches, 0-d losses,
backward argument checks, writable gradients."""
from __future__ import annotations

import numpy as np
import pytest

from engine import functional as F
from engine import nn


def test_a_shared_layer_is_one_set_of_parameters_but_keeps_every_state_dict_key():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(model.parameters()) == 2 and model.num_parameters() == 6
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # as torch lists them


@pytest.mark.parametrize("weight_dtype, bias_dtype", [(np.float32, None), (np.float64, np.float32)])
def test_linear_refuses_mixed_dtypes(weight_dtype, bias_dtype):
    x = np.ones((2, 3))
    w = np.ones((4, 3), dtype=weight_dtype)
    b = None if bias_dtype is None else np.ones(4, dtype=bias_dtype)
    with pytest.raises(TypeError, match="linear: input dtype float64 differs from (weight|bias) dtype float32"):
        F.linear(x, w, b)


def test_conv2d_refuses_a_bias_of_another_dtype_and_bool_groups():
    x, w = np.ones((1, 2, 3, 3)), np.ones((2, 2, 1, 1))
    with pytest.raises(TypeError, match="bias dtype float32"):
        F.conv2d(x, w, np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match="groups must be a positive int, got True"):
        F.conv2d(x, w, groups=True)


def test_mse_of_0d_arrays_and_mean_over_nothing_is_nan():
    assert float(F.mse_loss(np.ones(()), np.zeros(()))) == 1.0
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        assert np.isnan(float(F.cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))))


def test_cross_entropy_backward_checks_its_arguments_like_the_forward():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy_backward(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        F.cross_entropy_backward(logits, np.array([0, 7]))


def test_global_average_pool_gradient_is_writable():
    dx = F.global_avg_pool2d_backward(np.ones((2, 3)), (2, 3, 4, 4))
    dx += 1.0  # a broadcast view would refuse this
    np.testing.assert_allclose(dx, 1.0 + 1.0 / 16)
