"""ops.interpolate / interpolate_backward: nearest, nearest-exact, (bi/tri)linear
and bicubic with align_corners False/True, area; size or scale_factor (with and without
recompute_scale_factor); a loop reference, PyTorch CPU forward and backward,
finite differences, backends."""
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
    # (input shape, kwargs)
    ((2, 3, 4, 5), dict(scale_factor=2, mode="nearest")),
    ((2, 3, 4, 5), dict(size=(7, 8), mode="nearest")),
    ((2, 3, 6, 5), dict(scale_factor=(0.5, 0.7), mode="nearest")),
    ((1, 2, 5, 5), dict(scale_factor=1.7, mode="nearest", recompute_scale_factor=True)),
    ((2, 3, 7), dict(scale_factor=3, mode="nearest")),
    ((1, 2, 3, 4, 2), dict(size=(5, 3, 4), mode="nearest")),
    ((2, 3, 4, 5), dict(size=(7, 9), mode="nearest-exact")),
    ((2, 3, 6, 5), dict(scale_factor=0.6, mode="nearest-exact")),
    ((2, 2, 9), dict(size=4, mode="nearest-exact")),
    ((2, 3, 4, 5), dict(scale_factor=2, mode="bilinear")),
    ((2, 3, 4, 5), dict(scale_factor=2, mode="bilinear", align_corners=True)),
    ((2, 3, 4, 5), dict(size=(7, 5), mode="bilinear")),
    ((2, 3, 6, 7), dict(size=(4, 3), mode="bilinear", align_corners=True)),
    ((2, 3, 5, 5), dict(scale_factor=(1.7, 0.6), mode="bilinear")),
    ((2, 3, 5, 5), dict(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True)),
    ((1, 1, 1, 4), dict(size=(3, 1), mode="bilinear", align_corners=True)),
    ((2, 3, 6), dict(size=11, mode="linear")),
    ((2, 3, 6), dict(scale_factor=0.5, mode="linear", align_corners=True)),
    ((1, 2, 3, 4, 3), dict(size=(5, 2, 6), mode="trilinear")),
    ((1, 2, 3, 4, 3), dict(scale_factor=2, mode="trilinear", align_corners=True)),
    ((2, 3, 4, 5), dict(scale_factor=2, mode="bicubic")),
    ((2, 3, 5, 4), dict(size=(7, 3), mode="bicubic", align_corners=True)),
    ((1, 2, 5, 6), dict(scale_factor=(1.7, 0.6), mode="bicubic")),
    ((1, 2, 2, 3), dict(size=(5, 8), mode="bicubic")),
    ((2, 3, 6, 7), dict(size=(4, 3), mode="area")),
    ((2, 3, 9), dict(scale_factor=0.5, mode="area")),
]
IDS = [f"{k['mode']}-{'x'.join(map(str, s))}-{i}" for i, (s, k) in enumerate(CASES)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape, kwargs", CASES, ids=IDS)
def test_interpolate_matches_torch(shape, kwargs, dtype):
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    tx = to_torch(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, **kwargs)
    g = np.random.default_rng(1).standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(to_torch(g))
    y = ops.interpolate(x, **kwargs)
    assert tuple(y.shape) == tuple(ty.shape) and engine.to_numpy(y).dtype == np.dtype(dtype)
    assert tuple(y.shape[2:]) == ops.interpolate_output_size(shape, **{k: v for k, v in kwargs.items()
                                                                       if k != "align_corners"})
    assert_rel(y, from_torch(ty), TORCH_TOL[dtype], "y")
    assert_rel(ops.interpolate_backward(g, shape, **kwargs), from_torch(tx.grad), TORCH_TOL[dtype], "dx")


@pytest.mark.parametrize("shape, kwargs", [c for c in CASES if c[1]["mode"] != "area"],
                         ids=[i for i, c in zip(IDS, CASES) if c[1]["mode"] != "area"])
def test_interpolate_matches_loop_reference(shape, kwargs):
    x = np.random.default_rng(2).standard_normal(shape)
    y = ops.interpolate(x, **kwargs)
    scales = kwargs.get("scale_factor")
    if scales is not None and not kwargs.get("recompute_scale_factor"):
        scales = list(scales) if isinstance(scales, tuple) else [scales] * (len(shape) - 2)
    else:
        scales = None
    want = rp.interpolate(x, tuple(y.shape[2:]), kwargs["mode"], kwargs.get("align_corners") or False, scales)
    assert_rel(y, want, 1e-12, "reference")


@pytest.mark.parametrize("shape, kwargs", CASES[::3], ids=IDS[::3])
def test_interpolate_backward_matches_finite_differences(shape, kwargs):
    x = np.random.default_rng(3).standard_normal(shape)
    g = np.random.default_rng(4).standard_normal(engine.to_numpy(ops.interpolate(x, **kwargs)).shape)
    num = ref.numerical_grad(lambda v: float(np.sum(engine.to_numpy(ops.interpolate(v, **kwargs)) * g)), x)
    assert_rel(ops.interpolate_backward(g, shape, **kwargs), num, FD_TOL, "dx")


def test_nearest_keeps_inf_and_nan_where_they_are():
    x = np.array([[[1.0, np.inf, np.nan, -2.0]]])
    y = engine.to_numpy(ops.interpolate(x, scale_factor=2))
    np.testing.assert_array_equal(y, np.repeat(x, 2, axis=2))


@pytest.mark.parametrize("make, exc, words", [
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), size=3, scale_factor=2), ValueError, ["exactly one of"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4))), ValueError, ["exactly one of"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), size=3, mode="lanczos"), ValueError,
     ["mode must be one of", "'bicubic'", "'lanczos'"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4)), size=3, mode="bicubic"), ValueError, ["needs a 4-D input"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4)), size=3, mode="bilinear"), ValueError, ["needs a 4-D input"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), size=3, align_corners=True), ValueError,
     ["align_corners can only be set"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), size=(3, 3, 3)), ValueError, ["size must be an int or 2 ints"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), scale_factor=-1.0), ValueError, ["scale_factor must be"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), scale_factor=0.1), ValueError, ["must be positive",
                                                                                     "output (0, 0)"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), size=3, recompute_scale_factor=True), ValueError,
     ["recompute_scale_factor is not meaningful"]),
    (lambda: ops.interpolate(np.zeros((1, 1, 4, 4)), size=3, mode="bilinear", antialias=True), ValueError,
     ["antialias"]),
    (lambda: ops.interpolate(np.zeros((4, 4)), size=3), ValueError, ["3-D, 4-D or 5-D"]),
    (lambda: ops.interpolate_backward(np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), size=2), ValueError,
     ["grad_out must have the resampled shape (1, 1, 2, 2)"]),
])
def test_interpolate_bad_arguments(make, exc, words):
    assert_raises(exc, make, *words)


def test_interpolate_on_every_backend(backend):
    for shape, kwargs in CASES:
        x = np.random.default_rng(5).standard_normal(shape)
        y = ops.interpolate(x, **kwargs)
        g = np.random.default_rng(6).standard_normal(engine.to_numpy(y).shape)
        assert_close(ops.interpolate(backend.asarray(x), **kwargs), engine.to_numpy(y), rtol=1e-14, backend=backend,
                     err_msg=str(kwargs))
        assert_close(ops.interpolate_backward(backend.asarray(g), shape, **kwargs),
                     engine.to_numpy(ops.interpolate_backward(g, shape, **kwargs)), rtol=1e-13, backend=backend,
                     err_msg=str(kwargs))
