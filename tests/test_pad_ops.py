"""ops.pad / ops.pad_backward: constant (any value, negative = crop), reflect,
replicate and circular, over 1, 2 and 3 trailing axes, batched or not; a loop
reference, PyTorch CPU forward and backward, finite differences, backends."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import ops

import reference as ref
import reference_parity as rp
from _helpers import FD_TOL, TORCH_TOL, assert_raises, assert_rel, from_torch, to_torch, torch_or_skip
from conftest import assert_close

CASES = [
    # (input shape, pad, mode, value)
    ((2, 3, 5), (2, 1), "reflect", None),
    ((3, 5), (0, 4), "reflect", None),
    ((2, 3, 4, 5), (1, 2, 3, 0), "reflect", None),
    ((3, 4, 5), (4, 4, 3, 3), "reflect", None),
    ((1, 2, 3, 3, 4), (1, 2, 0, 2, 2, 1), "reflect", None),
    ((2, 3, 5), (3, 2), "replicate", None),
    ((2, 3, 4, 5), (2, 3, 1, 4), "replicate", None),
    ((2, 1, 1), (3, 2), "replicate", None),
    ((2, 3, 3, 2, 2), (1, 1, 2, 0, 0, 3), "replicate", None),
    ((2, 3, 5), (5, 2), "circular", None),
    ((2, 3, 4, 5), (2, 5, 4, 1), "circular", None),
    ((3, 4, 5), (1, 0, 0, 4), "circular", None),
    ((2, 2, 2, 3, 2), (2, 1, 3, 0, 1, 2), "circular", None),
    ((2, 3, 4, 5), (1, 2, 3, 4), "constant", None),
    ((2, 3, 4, 5), (1, -2, -1, 3, 2, 0, 1, 1), "constant", 2.5),
    ((4, 5), (-1, -1), "constant", -1.0),
    ((5,), (2, 0), "constant", float("inf")),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape, pads, mode, value", CASES)
def test_pad_matches_torch_and_reference(shape, pads, mode, value, dtype):
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    out_shape = ops.padded_shape(shape, pads)
    g = np.random.default_rng(1).standard_normal(out_shape).astype(dtype)
    tx = to_torch(x, requires_grad=True)
    ty = torch.nn.functional.pad(tx, pads, mode=mode, value=value)
    ty.backward(to_torch(g))
    y = ops.pad(x, pads, mode, value)
    assert tuple(y.shape) == tuple(ty.shape) == out_shape and engine.to_numpy(y).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(engine.to_numpy(y), from_torch(ty))  # copies: exact
    assert_rel(ops.pad_backward(g, shape, pads, mode), from_torch(tx.grad), TORCH_TOL[dtype], "dx")
    if dtype == "float64":
        np.testing.assert_array_equal(engine.to_numpy(y), rp.pad(x, pads, mode, 0.0 if value is None else value))


@pytest.mark.parametrize("shape, pads, mode, value", [c for c in CASES if np.isfinite(c[3] or 0.0)])
def test_pad_backward_matches_finite_differences(shape, pads, mode, value):
    x = np.random.default_rng(2).standard_normal(shape)
    g = np.random.default_rng(3).standard_normal(ops.padded_shape(shape, pads))
    num = ref.numerical_grad(lambda v: float(np.sum(engine.to_numpy(ops.pad(v, pads, mode, value)) * g)), x)
    assert_rel(ops.pad_backward(g, shape, pads, mode), num, FD_TOL, "dx")


@pytest.mark.parametrize("make, exc, words", [
    (lambda: ops.pad(np.zeros((2, 3, 4)), (1, 2, 3)), ValueError, ["pad must have an even length"]),
    (lambda: ops.pad(np.zeros((2, 3)), (1, 1, 1, 1, 1, 1)), ValueError, ["covers 3 axes", "has 2"]),
    (lambda: ops.pad(np.zeros((2, 3)), (1.5, 1)), TypeError, ["pad must be a tuple of ints"]),
    (lambda: ops.pad(np.zeros((2, 3, 4)), (1, 1), mode="wrap"), ValueError, ["mode must be one of"]),
    (lambda: ops.pad(np.zeros((2, 3, 4)), (4, 1), mode="reflect"), ValueError,
     ["reflect padding must be smaller", "(4, 1)", "size 4"]),
    (lambda: ops.pad(np.zeros((2, 3, 4)), (5, 0), mode="circular"), ValueError, ["at most the size", "size 4"]),
    (lambda: ops.pad(np.zeros((2, 3, 4)), (-1, 1), mode="replicate"), ValueError, ["negative padding", "constant"]),
    (lambda: ops.pad(np.zeros(4), (1, 1), mode="reflect"), ValueError, ["one or two more axes", "(4,)"]),
    (lambda: ops.pad(np.zeros((1, 2, 3, 4)), (1, 1), mode="replicate"), ValueError, ["one or two more axes"]),
    (lambda: ops.pad(np.zeros((2, 3, 4)), (1, 1), mode="reflect", value=1.0), ValueError, ["takes no value"]),
    (lambda: ops.pad(np.zeros((2, 3, 4)), (-3, -2)), ValueError, ["crops axis 2 of size 4 below zero"]),
    (lambda: ops.pad(np.zeros((2, 3, 4)), (1, 1), value="x"), TypeError, ["value must be a real number"]),
    (lambda: ops.pad_backward(np.zeros((2, 3, 5)), (2, 3, 4), (1, 1)), ValueError,
     ["grad_out must have the padded shape (2, 3, 6)"]),
])
def test_pad_bad_arguments(make, exc, words):
    assert_raises(exc, make, *words)


def test_pad_on_every_backend(backend):
    for shape, pads, mode, value in CASES:
        x = np.random.default_rng(4).standard_normal(shape)
        g = np.random.default_rng(5).standard_normal(ops.padded_shape(shape, pads))
        assert_close(ops.pad(backend.asarray(x), pads, mode, value), engine.to_numpy(ops.pad(x, pads, mode, value)),
                     rtol=0, backend=backend, err_msg=mode)
        assert_close(ops.pad_backward(backend.asarray(g), shape, pads, mode),
                     engine.to_numpy(ops.pad_backward(g, shape, pads, mode)), rtol=1e-15, backend=backend,
                     err_msg=mode)
