"""Small helpers shared by the op and model test files (not fixtures: plain functions)."""
from __future__ import annotations

import numpy as np
import pytest

import engine

#: Largest relative error (max |got - expected| / max |expected|) accepted against PyTorch.
TORCH_TOL = {"float64": 1e-10, "float32": 1e-5}
#: Against the float64 naive-loop references (same arithmetic, different summation order).
REF_TOL = {"float64": 1e-12, "float32": 1e-5}
#: Finite differences (eps=1e-6, central) against analytic float64 gradients.
FD_TOL = 1e-6


def torch_or_skip():
    """The ``torch`` module, or skip the test: PyTorch is the outside oracle."""
    return pytest.importorskip(
        "torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of the parity tests")


def rel_err(got, expected) -> float:
    """``max |got - expected| / max |expected|`` in float64 (0 for two empty arrays)."""
    got = np.asarray(engine.to_numpy(got) if not isinstance(got, np.ndarray) else got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    if expected.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    return float(np.max(np.abs(got - expected))) / scale


def assert_rel(got, expected, tol, what=""):
    err = rel_err(got, expected)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"


def to_torch(a, requires_grad=False):
    torch = torch_or_skip()
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_(requires_grad) if requires_grad else t


def from_torch(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def on(backend_name, a, dtype=None):
    """``a`` (NumPy) as an array of backend ``backend_name``."""
    return engine.asarray(a, dtype=dtype, backend=backend_name)


def forward_backward(module, x, grad_out, **kwargs):
    """One forward of ``module`` on ``x`` as a leaf Tensor that requires grad,
    then ``y.backward(grad_out)``. Parameter gradients accumulate into ``.grad``
    as in training. Returns ``(y, dx)``: the output Tensor and the input's
    gradient (an array of ``x``'s backend)."""
    x_t = engine.Tensor(engine.asarray(x) if isinstance(x, np.ndarray) else x, requires_grad=True)
    y = module(x_t, **kwargs)
    y.backward(engine.asarray(grad_out, dtype=y.dtype) if isinstance(grad_out, np.ndarray) else grad_out)
    return y, x_t.grad


def backward_through(module, x, grad_out, **kwargs):
    """The input gradient of :func:`forward_backward`."""
    return forward_backward(module, x, grad_out, **kwargs)[1]


def assert_raises(exc, call, *words):
    """``call()`` raises ``exc`` whose message contains every one of ``words``."""
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"
