"""The host backends' worker threads and allocator tuning: results do not
depend on the thread count, work is split exactly, errors surface, settings
are validated."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from engine import backends
import engine
from engine import ops
from engine.backends import host_memory, host_threads


@pytest.fixture
def threads():
    """Set the host thread count for one test, then put it back."""
    before = host_threads.get_num_threads()
    yield host_threads.set_num_threads
    host_threads.set_num_threads(before)


@pytest.mark.parametrize("extent,parts", [(10, 3), (3, 8), (1, 1), (64, 2), (7, 7)])
def test_split_covers_the_range_in_order_with_balanced_parts(extent, parts):
    cuts = host_threads.split(extent, parts)
    assert [i for s in cuts for i in range(s.start, s.stop)] == list(range(extent))
    sizes = [s.stop - s.start for s in cuts]
    assert len(cuts) == min(extent, parts) and max(sizes) - min(sizes) <= 1


def test_parallel_for_runs_every_part_once_on_several_threads(threads):
    threads(4)
    seen, names = [], set()
    lock = threading.Lock()
    all_running = threading.Barrier(4, timeout=30)  # passes only if the 4 parts run at once

    def work(part):
        with lock:
            seen.extend(range(part.start, part.stop))
            names.add(threading.current_thread().name)
        all_running.wait()
    host_threads.parallel_for(work, 10, items=10 * host_threads.MIN_ITEMS_PER_THREAD)
    assert sorted(seen) == list(range(10))
    assert len(names) == 4  # the caller and three workers


def test_parallel_for_keeps_small_work_on_the_calling_thread(threads):
    threads(4)
    names = []
    host_threads.parallel_for(lambda part: names.append(threading.current_thread().name), 10, items=1000)
    assert names == [threading.current_thread().name]


def test_parallel_for_reraises_a_worker_error_after_every_part_finished(threads):
    threads(2)
    finished = []

    def work(part):
        if part.start > 0:
            raise RuntimeError(f"part {part.start} failed")
        finished.append(part)
    with pytest.raises(RuntimeError, match="failed"):
        host_threads.parallel_for(work, 4, items=4 * host_threads.MIN_ITEMS_PER_THREAD)
    assert finished == [slice(0, 2)]


def test_nested_parallel_for_runs_inline(threads):
    threads(2)
    inner_names = []

    def outer(part):
        host_threads.parallel_for(lambda p: inner_names.append(threading.current_thread().name), 8,
                                  items=8 * host_threads.MIN_ITEMS_PER_THREAD)
    host_threads.parallel_for(outer, 2, items=2 * host_threads.MIN_ITEMS_PER_THREAD)
    assert len(inner_names) == 2  # each outer part ran its inner loop as one piece


@pytest.mark.parametrize("bad,error,message", [
    (0, ValueError, "n must be a positive int, got 0"),
    (-1, ValueError, "n must be a positive int, got -1"),
    (1.5, TypeError, "n must be an int, got float 1.5"),
    (True, TypeError, "n must be an int, got bool True"),
    ("2", TypeError, "n must be an int, got str '2'"),
])
def test_set_num_threads_rejects_what_is_not_a_positive_int(bad, error, message, threads):
    with pytest.raises(error, match=message):
        engine.set_num_threads(bad)


def test_set_num_threads_takes_numpy_ints(threads):
    engine.set_num_threads(np.int64(2))
    assert engine.get_num_threads() == 2 and type(engine.get_num_threads()) is int


def test_engine_num_threads_round_trip(threads):
    engine.set_num_threads(3)
    assert engine.get_num_threads() == 3 == host_threads.get_num_threads()


def test_env_var_sets_the_default_and_bad_values_are_named():
    code = "import engine; print(engine.get_num_threads())"
    env = dict(os.environ, ENGINE_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
    env["ENGINE_NUM_THREADS"] = "many"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "ENGINE_NUM_THREADS must be a positive integer, got 'many'" in bad.stderr


def _ops(x, w, g):
    """The threaded NumPy paths: im2col, col2im, conv forward/backward, max pooling."""
    b = backends.get("numpy")
    win = ops.pooling._pool_window(x.shape, 3, 2, 1, 1, False, "test")
    y, idx = b.max_pool2d(x, win)
    gy = np.ones_like(y)
    y2, idx2 = ops.max_pool2d(x, 2, return_indices=True)
    return [ops.conv2d(x, w, padding=1), *ops.conv2d_backward(g, x, w, padding=1), y, idx,
            b.max_pool2d_backward(gy, idx, x.shape, win), y2, idx2,
            ops.max_pool2d_backward(np.ones_like(y2), idx2, x.shape, 2)]


def test_results_do_not_depend_on_the_thread_count(threads, monkeypatch):
    monkeypatch.setattr(host_threads, "MIN_ITEMS_PER_THREAD", 1024)  # split even these small arrays
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 5, 30, 31)).astype(np.float32)  # odd batch: unequal shares
    w = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    g = rng.standard_normal((9, 4, 30, 31)).astype(np.float32)
    threads(1)
    one = _ops(x, w, g)
    for n in (2, 3, 8):
        threads(n)
        for a, b in zip(one, _ops(x, w, g)):
            np.testing.assert_array_equal(a, b)  # bit for bit


def test_malloc_tuning_is_on_with_glibc_and_can_be_turned_off():
    backends.get("numpy")
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator tuning applies to glibc only")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        pytest.skip("glibc's own MALLOC_* variables are set: the engine leaves the allocator alone")
    turned_off = os.environ.get("ENGINE_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off")
    assert host_memory.malloc_tuned() is not turned_off  # this process follows the variable too
    code = ("from engine import backends; backends.get('numpy'); from engine.backends import host_memory; "
            "print(host_memory.malloc_tuned())")
    for env_value, expected in (("0", "False"), ("1", "True")):
        env = dict(os.environ, ENGINE_TUNE_MALLOC=env_value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_worker_threads(threads):
    threads(2)
    work = 2 * host_threads.MIN_ITEMS_PER_THREAD
    host_threads.parallel_for(lambda part: None, 2, items=work)  # the parent's pool exists
    code = 0
    pid = os.fork()
    if pid == 0:  # child: would hang on the parent's (absent) workers without the pid check
        try:
            done = []
            host_threads.parallel_for(lambda part: done.append(part), 2, items=work)
            code = 0 if len(done) == 2 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("prelude,env_value,expected", [
    ("", None, "4"),                     # engine first: idle BLAS threads sleep at once
    ("import numpy;", None, "None"),     # NumPy already loaded: too late, nothing is set
    ("", "28", "28"),                    # the user's own value wins
])
def test_openblas_thread_timeout_is_set_only_before_numpy_and_never_overrides(prelude, env_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env_value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = env_value
    code = prelude + "import os, engine; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_a_growing_pool_never_fails_a_call_running_on_another_thread(threads):
    """Raising the thread count replaces the pool; a call that another thread is
    making at that moment still runs every part (the old pool is not shut down)."""
    errors, stop = [], threading.Event()
    out = np.zeros(64)

    def other_thread():
        def fn(part):
            out[part] += 1
        while not stop.is_set():
            try:
                host_threads.parallel_for(fn, 64, 1 << 30)
            except Exception as exc:  # noqa: BLE001 - any error fails the test
                errors.append(repr(exc))
                return
    t = threading.Thread(target=other_thread)
    t.start()
    try:
        for n in range(2, 200):
            threads(n)
            host_threads.parallel_for(lambda part: None, 64, 1 << 30)  # a bigger pool each time
    finally:
        stop.set()
        t.join()
    assert not errors
    assert np.all(out == out[0]) and out[0] > 0  # every call covered every index once
