"""Shared fixtures: one parametrized backend fixture and a strict ``assert_close``."""
from __future__ import annotations

import numpy as np
import pytest

from engine import backends
import engine

BACKEND_NAMES = ["numpy", "array_api_strict", "cupy"]


def _backend_or_skip(name):
    reason = backends.unavailable_reason(name)
    if reason is not None:
        if name == "cupy":
            pytest.skip(f"CuPy test requires a CUDA device and CuPy: {reason.splitlines()[0]}")
        pytest.skip(reason)
    return backends.get(name)


@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.gpu) if n == "cupy" else n for n in BACKEND_NAMES])
def backend(request):
    """Each backend in turn, made active for the test (skipped where unusable, with the reason)."""
    b = _backend_or_skip(request.param)
    with engine.use_backend(b.name):
        yield b


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_close(actual, expected, rtol=1e-7, atol=0.0, backend=None, err_msg=""):
    """Compare an engine array with a NumPy reference: backend, shape and dtype
    first, then values. ``rtol`` is relative to the reference's largest magnitude."""
    if isinstance(actual, engine.Tensor):
        actual = actual.data
    if backend is not None:
        assert backends.backend_of(actual) is backend, (
            f"result lives on {backends.backend_of(actual)}, expected {backend}")
    got = engine.to_numpy(actual)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape} {err_msg}"
    if expected.dtype.kind == "f":
        assert got.dtype == expected.dtype, f"dtype {got.dtype} != {expected.dtype} {err_msg}"
    finite = np.abs(expected[np.isfinite(expected)]) if expected.dtype.kind == "f" else np.abs(expected)
    scale = float(np.max(finite)) if finite.size else 0.0
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol + rtol * max(scale, 1e-300), err_msg=err_msg)
