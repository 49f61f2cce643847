"""``python -m engine.bench``: the engine's benchmark harness.

Modules: ``__main__`` (the CLI), ``suites`` (shapes), ``ops`` (ops and their
paths), ``harness`` (checking and interleaved timing), ``report`` (table, JSON,
CSV, plot), ``machine`` (machine facts, thread settings). This package imports
nothing heavy at import time, so ``python -m engine.bench --threads N`` can set the BLAS
thread variables before NumPy loads.
"""
