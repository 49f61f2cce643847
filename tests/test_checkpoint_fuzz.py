"""Fuzzing load_checkpoint: a few hundred mutated checkpoints (bit flips, truncations,
deleted or added entries, edited .npy headers and JSON, huge shapes, damaged zip
directories, swapped data), seeded, in a child process under an address-space limit.

Every load either succeeds or raises CheckpointError (a ValueError); nothing else
escapes (no zlib.error, KeyError, RecursionError, MemoryError …), nothing crashes
the process or hangs it, and a refused load leaves the model and the RNG as they
were. More cases: CHECKPOINT_FUZZ_CASES=5000; another seed: CHECKPOINT_FUZZ_SEED.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CASES = int(os.environ.get("CHECKPOINT_FUZZ_CASES", "300"))
SEED = int(os.environ.get("CHECKPOINT_FUZZ_SEED", "14"))
MEMORY_HEADROOM = 1 << 30  # the child may allocate this much beyond what it holds after setup

CHILD = r'''
import io, json, os, random, re, struct, sys, tempfile, traceback, zipfile
import numpy as np
import engine
from engine import nn, optim
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.schedulers import StepLR
import _checkpoint_files as files

cases, seed, headroom = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
draw = random.Random(seed)


def setup():
    engine.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    return model, opt, StepLR(opt, 2, 0.5)


model, opt, sched = setup()
r = np.random.default_rng(seed)
for i, p in enumerate(model.parameters()):  # Adam state as after some steps
    opt.state[i] = {"step": 3, "exp_avg": r.standard_normal(p.data.shape).astype(np.float32),
                    "exp_avg_sq": r.random(p.data.shape).astype(np.float32)}
work = tempfile.mkdtemp()
bases = []
for compress in (False, True):
    path = os.path.join(work, f"base{int(compress)}.npz")
    save_checkpoint(path, model, opt, epoch=3, scheduler=sched, compress=compress, extra={"model": "tiny", "arr": np.arange(4)})
    bases.append(open(path, "rb").read())
load_checkpoint(os.path.join(work, "base1.npz"), *setup())  # the bases load

try:  # the limit: what the process holds now plus the headroom
    import resource
    with open("/proc/self/status") as f:
        held = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (held + headroom, held + headroom))
    limited = True
except (ImportError, OSError, ValueError, StopIteration):
    limited = False

HUGE = [2**31, 2**40, 10**12, 2**62, 2**63 - 1, 2**64]
DTYPES = ["'|O'", "'<f8'", "'>i4'", "'<U100000000'", "'|V8'", "[('a', '<f4')]", "'<c16'", "'<M8[s]'", "'|b1'", "'<f2'", "'x'"]
JUNK_JSON = ["[" * 50000, "[" * 5000 + "]" * 5000, "1" * 6000, "NaN", '{"lr": NaN}', '"\\ud800"', "null", "[]", "{}",
             '{"history": {"loss": [1e999]}}', '{"bit_generator": "PCG64", "state": {"state": -1, "inc": 2}, "has_uint32": 0, "uinteger": 0}',
             '[{"lr": -1, "params": [0]}]', '{"entries": {"format": ["<U19", [99999999999]]}}', "\u0000" * 100]


def entries_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def zipped(entries, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def mutate(data):
    kind = draw.choice(["flip", "bytes", "truncate", "drop", "header", "json", "add", "directory", "swap",
                        "shape"])
    compression = zipfile.ZIP_DEFLATED if data == bases[1] else zipfile.ZIP_STORED
    b = bytearray(data)
    if kind == "flip":
        for _ in range(draw.randint(1, 8)):
            i = draw.randrange(len(b))
            b[i] ^= 1 << draw.randrange(8)
        return kind, bytes(b)
    if kind == "bytes":
        i = draw.randrange(len(b))
        b[i:i + draw.randint(1, 16)] = bytes(draw.randrange(256) for _ in range(draw.randint(1, 16)))
        return kind, bytes(b)
    if kind == "truncate":
        return kind, bytes(b[:draw.randrange(len(b))])
    if kind == "directory":  # a field of a central-directory record or of the end record
        starts = [m.start() for m in re.finditer(rb"PK\x01\x02|PK\x05\x06", b)]
        i = draw.choice(starts) + draw.randrange(4, 22)
        struct.pack_into("<H", b, min(i, len(b) - 2), draw.choice([0, 1, 8, 99, 0xFFFF, draw.randrange(65536)]))
        return kind, bytes(b)
    entries = entries_of(data)
    names = list(entries)
    name = draw.choice(names)
    manifest = draw.random() < 0.7
    if kind == "drop":
        for n in draw.sample(names, draw.randint(1, min(4, len(names)))):
            del entries[n]
    elif kind == "add":
        entries[draw.choice(["extra/x.npy", "model/9.weight.npy", "optimizer/state/0/planted.npy", "junk.txt",
                             "optimizer/state/99/step.npy"])] = files.npy(np.zeros(draw.randint(0, 5)))
    elif kind == "swap":
        other = draw.choice(names)
        entries[name], entries[other] = entries[other], entries[name]
    elif kind == "json":
        text = [n for n in names if entries[n][8:].find(b"<U") != -1]
        entries[draw.choice(text)] = files.npy(np.array(draw.choice(JUNK_JSON)))
    elif kind in ("header", "shape"):
        dims = draw.randint(0, 4)
        shape = tuple(draw.choice(HUGE + [0, 1, 3, -1]) if kind == "shape" or draw.random() < 0.3
                      else draw.randint(0, 9) for _ in range(dims))
        descr = draw.choice(DTYPES) if kind == "header" else "'<f4'"
        fortran = draw.choice(["False", "True", "1", "None"])
        header = "{'descr': %s, 'fortran_order': %s, 'shape': %r, }" % (descr, fortran, shape)
        payload = entries[name][128:] if draw.random() < 0.5 else bytes(draw.randrange(0, 512))
        entries[name] = files.raw_npy(header, payload)
    if manifest and "manifest.npy" in entries and kind not in ("header", "shape"):
        try:
            entries = files.with_manifest({k: v for k, v in entries.items() if k.endswith(".npy")}) | \
                {k: v for k, v in entries.items() if not k.endswith(".npy")}
        except Exception:
            pass  # an entry the helper cannot parse: keep the old manifest
    return kind, zipped(entries, compression)


def weights(m):
    return [np.array(v, copy=True) for v in m.state_dict().values()]


outcomes, errors = {"loaded": 0, "refused": 0}, []
path = os.path.join(work, "mutated.npz")
for case in range(cases):
    kind, data = mutate(draw.choice(bases))
    with open(path, "wb") as f:
        f.write(data)
    for with_model in (True, False):
        target = setup() if with_model else ()
        before, rng = (weights(target[0]) if with_model else None), engine.get_rng_state()
        try:
            load_checkpoint(path, *target)
            outcomes["loaded"] += 1
        except CheckpointError as exc:
            outcomes["refused"] += 1
            if not str(exc).startswith(path):
                errors.append(f"case {case} ({kind}): the message does not name the file: {exc}")
            if with_model and (any(not np.array_equal(a, b) for a, b in zip(before, weights(target[0])))
                               or engine.get_rng_state() != rng or target[1].state):
                errors.append(f"case {case} ({kind}): a refused load changed the model, optimizer or RNG")
        except BaseException as exc:
            errors.append(f"case {case} ({kind}, model={with_model}): {type(exc).__name__}: {str(exc)[:300]}\n"
                          + "".join(traceback.format_exc(limit=-3)))
            if len(errors) > 20:
                break
print(json.dumps({"cases": cases, "limited": limited, "outcomes": outcomes, "errors": errors}))
'''


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork-free subprocess limits of POSIX")
def test_mutated_checkpoints_load_or_raise_checkpoint_error(tmp_path):
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(CASES), str(SEED), str(MEMORY_HEADROOM)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, f"the fuzzing process died (rc {done.returncode}):\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == [], "\n".join(report["errors"])
    assert sum(report["outcomes"].values()) == 2 * CASES
    assert report["outcomes"]["refused"] > CASES  # most mutations must be caught, not loaded
    if sys.platform.startswith("linux"):
        assert report["limited"], "the address-space limit was not set"
