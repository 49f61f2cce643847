"""The FMA-peak kernel of kernels/cpu_peak.c (the bench's roofline line): it
counts its FLOPs right and measures a plausible peak, on 1 and 2 threads."""
from __future__ import annotations

import ctypes
import math

import pytest

from engine.bench import machine
from engine.kernels import native


@pytest.mark.skipif(native.library() is None, reason="the C kernels are not built here: " + native.status())
def test_peak_kernel_counts_flops_and_reports_a_plausible_peak():
    lib = native.library()
    vl = 16 if lib.native_isa() == 512 else 8
    sink = ctypes.c_float()
    assert lib.peak_fma_f32(1000, ctypes.byref(sink)) == 1000 * 12 * vl * 2
    assert math.isfinite(sink.value) and sink.value > 0
    assert lib.peak_fma_f32(0, ctypes.byref(sink)) == 0
    peak = machine.fma_peak(2, target_ms=5.0, best_of=2)
    # a vector FMA unit of any CPU these kernels build for: well above 1 GFLOP/s, far below 10 TFLOP/s
    assert 1.0 < peak["gflops_1"] < 1e4 and 1.0 < peak["gflops_all"] < 2e4
    assert peak["flops_per_call"] == peak["iters"] * 12 * vl * 2 and peak["threads"] == 2
