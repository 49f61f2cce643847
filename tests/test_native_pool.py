"""The C thread pool (kernels/cpu_pool.c) and the calls through it (backends/native_calls.py):
every part of a range runs exactly once, split as the host threads split it, on several
threads; a part's failure comes back; concurrent callers and forked children still get
right answers; and every kernel gives the same bits through the pool as through the Python
host threads, whatever the thread count."""
from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np
import pytest

import engine
from engine import ops
from engine.backends import host_threads, native_calls, native_cpu, native_dense
from engine.kernels import native

lib = native.library()
pytestmark = pytest.mark.skipif(lib is None, reason=f"C kernels unavailable: {native.status()}")

_PART = ctypes.CFUNCTYPE(ctypes.c_longlong, ctypes.c_longlong, ctypes.c_longlong)


def _pool_run(fn, extent, parts, returns_int=1):
    """pool_run with a ctypes callback taking (start, stop) as its only arguments."""
    values = (ctypes.c_longlong * native_calls.MAX_ARGS)()
    address = ctypes.cast(fn, ctypes.c_void_p).value
    return lib.pool_run(address, values, 2, 0, 1, returns_int, extent, parts)


@pytest.mark.parametrize("extent,parts", [(1, 1), (10, 1), (10, 2), (10, 3), (7, 7), (5, 9), (1000, 4)])
def test_parts_cover_the_range_once_as_host_threads_split_it(extent, parts):
    seen, lock = [], threading.Lock()

    def part(start, stop):
        with lock:
            seen.append((start, stop))
        return 0
    callback = _PART(part)
    assert _pool_run(callback, extent, parts) == 0
    want = [(s.start, s.stop) for s in host_threads.split(extent, min(parts, extent))]
    assert sorted(seen) == want


def test_parts_run_on_several_threads():
    threads, lock = set(), threading.Lock()

    def part(start, stop):
        with lock:
            threads.add(threading.get_ident())
        time.sleep(0.05)  # long enough that a worker claims the other parts
        return 0
    callback = _PART(part)
    _pool_run(callback, 2, 2)
    assert len(threads) == 2
    assert lib.pool_workers() >= 1


def test_a_failing_part_is_reported():
    callback = _PART(lambda start, stop: -1 if start <= 5 < stop else 0)
    assert _pool_run(callback, 10, 3) == -1
    assert _pool_run(_PART(lambda start, stop: 0), 10, 3) == 0  # the next job starts clean
    # an entry point that returns nothing: its register is not read
    assert _pool_run(_PART(lambda start, stop: 7), 10, 3, returns_int=0) == 0


def test_run_checks_the_entry_points_it_can_call():
    with pytest.raises(ValueError, match="START and STOP"):
        native_calls.run(lib, "relu_f32", (0, 0, 0, 0), 4, 2)
    native_calls._entries.pop((id(lib), "peak_fma_f32"), None)
    with pytest.raises(TypeError, match="integer or pointer"):  # returns int64, not int
        native_calls.run(lib, "peak_fma_f32", (native_calls.START, native_calls.STOP), 4, 2)
    assert native_calls.run(lib, "relu_f32", (0, 0, native_calls.START, native_calls.STOP), 0, 2) == 0


def _conv_case(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 5, 13, 11)).astype(np.float32)
    w = rng.standard_normal((12, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    return x, w, b


def _everything(x, w, b):
    """Forward, backward (dx, dW by image shares and by pixel shares), ReLU, max and average
    pooling, a depthwise convolution, a linear layer and an Adam update, all float32."""
    y = ops.conv2d(x, w, b, stride=1, padding=1)
    g = np.cos(y)
    dx, dw, db = ops.conv2d_backward(g, x, w, stride=1, padding=1)
    dx2, dw2, _ = ops.conv2d_backward(np.cos(ops.conv2d(x, w, b, stride=2, padding=1)), x, w, stride=2,
                                      padding=1)
    one = x[:1]
    y1 = ops.conv2d(one, w, b, padding=1)
    _, dw1, _ = ops.conv2d_backward(np.cos(y1), one, w, padding=1)  # column panels of dW
    big = np.sin(np.arange(5 * 40 * 40, dtype=np.float32)).reshape(1, 5, 40, 40)
    _, dw_pixels, _ = ops.conv2d_backward(np.cos(ops.conv2d(big, w, b, padding=1)), big, w, padding=1)
    r = native_cpu.relu(y)
    dr = native_cpu.relu_backward(g, r)
    mp, idx = ops.max_pool2d(y, 2, return_indices=True)
    dmp = ops.max_pool2d_backward(np.sin(mp), idx, y.shape, 2)
    ap = ops.avg_pool2d(y, 2)
    dap = ops.avg_pool2d_backward(np.sin(ap), y.shape, 2)
    dwc = ops.conv2d(y, np.ascontiguousarray(w[:, :1]), None, padding=1, groups=12)
    flat = y.reshape(y.shape[0], -1)
    weight = np.cos(np.arange(7 * flat.shape[1], dtype=np.float32)).reshape(7, -1)
    lin = native_dense.linear(flat, weight, None)
    p = np.sin(np.arange(300_000, dtype=np.float32))
    state = native_dense.adam_update(p, np.cos(p), np.zeros_like(p), np.zeros_like(p), None, step=1, lr=1e-3,
                                     beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False,
                                     amsgrad=False, maximize=False)
    return [y, dx, dw, db, dx2, dw2, y1, dw1, dw_pixels, r, dr, mp, dmp, ap, dap, dwc, lin, p, *state[:2]]


def test_every_kernel_gives_the_same_bits_through_the_pool_and_the_host_threads(monkeypatch):
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)  # split even these small calls
    monkeypatch.setattr(native_cpu, "MIN_ELEMENTS_PER_THREAD", 1)
    monkeypatch.setattr(native_dense, "MIN_MACS", 0)
    monkeypatch.setattr(native_dense, "MIN_MACS_PER_THREAD", 1)
    monkeypatch.setattr(native_dense, "MIN_ELEMENTS_PER_THREAD", 1)
    x, w, b = _conv_case(0)
    before = engine.get_num_threads()
    results = {}
    try:
        for pool in (True, False):
            for threads in (1, 2, 3):
                monkeypatch.setattr(native_calls, "USE_POOL", pool)
                engine.set_num_threads(threads)
                results[pool, threads] = _everything(x, w, b)
    finally:
        engine.set_num_threads(before)
    first = results[True, 1]
    for key, arrays in results.items():
        for i, (a, ref) in enumerate(zip(arrays, first)):
            assert a.dtype == ref.dtype and a.tobytes() == ref.tobytes(), (key, i)


def test_concurrent_callers_get_their_own_answers():
    """Callers on several Python threads at once: one runs on the pool, the others run their
    whole range themselves; every answer is right."""
    cases = [_conv_case(seed) for seed in range(4)]
    want = [ops.conv2d(x, w, b, padding=1) for x, w, b in cases]
    errors = []

    def worker(i):
        x, w, b = cases[i]
        for _ in range(20):
            got = ops.conv2d(x, w, b, padding=1)
            if got.tobytes() != want[i].tobytes():
                errors.append(i)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_on_a_fresh_pool():
    x, w, b = _conv_case(1)
    want = ops.conv2d(x, w, b, padding=1)  # the parent's workers exist now
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its pool has no workers; it must start its own and agree
        try:
            os.close(r)
            got = ops.conv2d(x, w, b, padding=1)
            os.write(wfd, b"1" if got.tobytes() == want.tobytes() else b"0")
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(r, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    assert answer == b"1"


def test_address_is_the_first_element_whatever_the_array():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    ro = a.copy()
    ro.flags.writeable = False
    for arr in (a, ro, a[:, 1:], a[1:], np.empty(0, np.float32), np.float32(3) * np.ones(1, np.float32)):
        assert native_calls.address(arr) == arr.ctypes.data


def test_forward_plans_follow_the_settings_they_depend_on(monkeypatch):
    """A cached forward plan is keyed by the shapes and the settings that decide it: a
    changed thread count or threshold gives a new plan, and the results stay the same bits."""
    x, w, b = _conv_case(2)
    native_cpu._plans.clear()
    first = ops.conv2d(x, w, b, padding=1)
    assert len(native_cpu._plans) == 1
    again = ops.conv2d(x, w, b, padding=1)
    assert len(native_cpu._plans) == 1 and again.tobytes() == first.tobytes()
    monkeypatch.setattr(native_cpu, "MIN_MACS_PER_THREAD", 1)
    before = engine.get_num_threads()
    try:
        engine.set_num_threads(3)
        split = ops.conv2d(x, w, b, padding=1)
    finally:
        engine.set_num_threads(before)
    assert len(native_cpu._plans) == 2 and split.tobytes() == first.tobytes()
    plan = next(p for k, p in native_cpu._plans.items() if 3 in k[8:9])  # the thread count
    assert plan.parts == min(3, plan.items)


def test_relu_of_a_0d_array_keeps_its_shape():
    x = np.array(-2.5, dtype=np.float32)
    y = ops.relu(x)
    assert y.shape == () and float(y) == 0.0
    g = ops.relu_backward(np.array(1.0, dtype=np.float32), np.array(3.0, dtype=np.float32))
    assert g.shape == () and float(g) == 1.0


def test_quiesce_sends_workers_to_sleep_and_warm_wakes_them():
    callback = _PART(lambda start, stop: 0)
    _pool_run(callback, 4, 2)  # at least one worker exists and spins after its job
    workers = lib.pool_workers()
    assert workers >= 1
    native_calls.quiesce()
    deadline = time.monotonic() + 2
    while lib.pool_spinning() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lib.pool_spinning() == 0
    woke = []
    for _ in range(5):  # a worker descheduled past its 200 us of spinning goes back to sleep: retry
        native_calls.warm()
        woke.append(lib.pool_spinning())
    assert workers in woke, woke
    x, w, b = _conv_case(3)
    assert ops.conv2d(x, w, b, padding=1).tobytes() == ops.conv2d(x, w, b, padding=1).tobytes()
