"""PyTorch's own test inputs, replayed on the engine's twins (the machinery of
``tests/test_torch_harvest.py``; the tables of scope and known differences live
there).

Three sources, all installed with torch 2.13:

* ``torch.testing._internal.common_modules.module_db``: each entry's
  ``module_inputs_func`` for CPU float64, once in training and once in
  evaluation mode;
* ``torch.testing._internal.common_nn``: ``module_tests``,
  ``get_new_module_tests()`` and ``criterion_tests`` (in training mode, as
  PyTorch runs them; every floating input cast to float64). Entries that wrap a
  ``torch.nn.functional`` call in a lambda (``wrap_functional``) are replayed on
  the engine's function of the same name: a ``TorchFunctionMode`` records the
  outermost ``torch.nn.functional`` call and its arguments, and the engine
  function gets the same arguments;
* ``torch.testing._internal.common_optimizers.optim_db``: every
  ``optim_inputs_func`` configuration, with the implementation switches
  (``foreach``, ``fused``, ``differentiable``) PyTorch's own tests add.

A module case builds the torch module from the harvested constructor
arguments and the engine class of the same name from the same arguments,
copies the torch ``state_dict`` into the engine module (strict), runs both on
the same inputs and compares outputs, input gradients (for a random output
gradient), parameter gradients and the whole ``state_dict`` afterwards
(running statistics included). An optimizer case runs 5 steps of both
optimizers from the same parameters on the same smooth loss (each side's
gradient taken at its own parameters) and compares parameters after every
step and the optimizer state at the end.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

import engine
import engine.nn.functional as EF
from engine import nn as enn
from engine import optim as eoptim

#: Largest relative error accepted (max |engine - torch| / max |torch|, float64).
TOLERANCE = 1e-9
OPTIMIZER_STEPS = 5


class Mismatch(AssertionError):
    """The engine and PyTorch disagree (or the engine refuses what PyTorch runs)."""


@dataclass
class Case:
    source: str          # "module_db", "common_nn" or "optim_db"
    cls: str             # engine class ("Conv2d"), or "F.interpolate" for a wrapped functional
    name: str            # unique within the harvest
    build: object        # () -> (torch_fn, engine_fn, inputs) or an optimizer spec
    facts: dict = field(default_factory=dict)   # what the scope rules look at

    @property
    def id(self) -> str:
        return self.name


# --------------------------------------------------------------------------- torch <-> engine values
def _engine_value(value, leaves):
    """A harvested torch value as the engine takes it: float tensors become engine
    leaves (requiring a gradient where the torch one does), integer tensors plain
    arrays; ``leaves`` maps each torch leaf to its engine twin."""
    if isinstance(value, torch.Tensor):
        host = value.detach().numpy().copy()
        if value.is_floating_point():
            t = engine.tensor(host.astype(np.float64), requires_grad=value.requires_grad)
            leaves.append((value, t))
            return t
        return engine.asarray(host)
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_engine_value(v, leaves) for v in value)
    if isinstance(value, dict):
        return {k: _engine_value(v, leaves) for k, v in value.items()}
    return value


def _constructor_value(value):
    """Constructor arguments: tensors (loss weights) as float64 NumPy arrays."""
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().astype(np.float64) if value.is_floating_point() else value.numpy()
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_constructor_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _constructor_value(v) for k, v in value.items()}
    return value


def _as_float64(value):
    """Harvested inputs with every floating tensor in float64 (a leaf keeps requires_grad)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.dtype != torch.float64:
            return value.detach().double().requires_grad_(value.requires_grad)
        return value
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(_as_float64(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_float64(v) for k, v in value.items()}
    return value


def _seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


# --------------------------------------------------------------------------- comparison
def _host(a):
    if isinstance(a, torch.Tensor):
        return a.detach().numpy()
    return engine.to_numpy(a)


def compare(got, expected, what):
    """``got`` (engine) against ``expected`` (torch): shape, kind, NaN/inf places,
    then ``max |got - expected| <= TOLERANCE * max |expected|``."""
    g, e = np.asarray(_host(got)), np.asarray(_host(expected))
    if g.shape != e.shape:
        raise Mismatch(f"{what}: shape {g.shape}, PyTorch {e.shape}")
    if e.dtype.kind in "iub" and g.dtype.kind in "iub":
        if not np.array_equal(g, e):
            raise Mismatch(f"{what}: integer results differ")
        return
    g, e = g.astype(np.float64), e.astype(np.float64)
    if not np.array_equal(np.isnan(g), np.isnan(e)):
        raise Mismatch(f"{what}: NaN at different places ({int(np.isnan(g).sum())} against {int(np.isnan(e).sum())})")
    inf = np.isinf(e) | np.isinf(g)
    if not np.array_equal(g[inf], e[inf]):
        raise Mismatch(f"{what}: infinities differ")
    finite = np.isfinite(e) & np.isfinite(g)
    if not finite.any():
        return
    scale = float(np.max(np.abs(e[finite])))
    err = float(np.max(np.abs(g[finite] - e[finite])))
    if err > TOLERANCE * max(scale, 1e-300) and err > 0:
        raise Mismatch(f"{what}: relative error {err / max(scale, 1e-300):.3e} > {TOLERANCE:g} "
                       f"(max |PyTorch| {scale:.3g})")


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


@contextlib.contextmanager
def _refusal(what):
    """An engine error inside is a :class:`Mismatch`: the engine refused what PyTorch takes."""
    try:
        yield
    except (TypeError, ValueError, RuntimeError, NotImplementedError, KeyError) as exc:
        raise Mismatch(f"the engine refused {what}: {type(exc).__name__}: {exc}") from None


def has_complex(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_complex()
    if isinstance(value, (list, tuple)):
        return any(has_complex(v) for v in value)
    if isinstance(value, dict):
        return any(has_complex(v) for v in value.values())
    return False


def run_pair(torch_fn, engine_fn, torch_inputs, engine_inputs, leaves, seed, torch_module=None,
             engine_module=None):
    """Forward both, compare outputs; backward a random output gradient, compare
    the input and parameter gradients and the modules' state afterwards.
    PyTorch's own warnings (deprecated arguments) are silenced; the engine's are not."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\.")
        _run_pair(torch_fn, engine_fn, torch_inputs, engine_inputs, leaves, seed, torch_module, engine_module)


def _run_pair(torch_fn, engine_fn, torch_inputs, engine_inputs, leaves, seed, torch_module, engine_module):
    t_args, t_kwargs = torch_inputs
    e_args, e_kwargs = engine_inputs
    t_out = torch_fn(*t_args, **t_kwargs)
    with _refusal("what PyTorch runs"):
        e_out = engine_fn(*e_args, **e_kwargs)
    t_outs, e_outs = _outputs(t_out), _outputs(e_out)
    if len(t_outs) != len(e_outs):
        raise Mismatch(f"{len(e_outs)} outputs, PyTorch {len(t_outs)}")
    for i, (e, t) in enumerate(zip(e_outs, t_outs)):
        compare(e, t, f"output {i}")
    if torch_module is not None:
        _compare_state(engine_module, torch_module, "state after forward")
    rng = np.random.default_rng(seed)
    pairs = [(e, t) for e, t in zip(e_outs, t_outs) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not pairs:
        return
    grads = [rng.standard_normal(tuple(t.shape)) for _, t in pairs]
    for (e, t), g in zip(pairs, grads):
        if not isinstance(e, engine.Tensor) or not e.requires_grad:
            raise Mismatch("an output PyTorch differentiates has no gradient path in the engine")
    torch.autograd.backward([t for _, t in pairs], [torch.from_numpy(g) for g in grads])
    engine.autograd.backward([e for e, _ in pairs], [engine.asarray(g) for g in grads])
    for i, (t, e) in enumerate(leaves):
        if not t.requires_grad:
            continue
        if (t.grad is None) != (e.grad is None):
            raise Mismatch(f"input {i}: gradient {'missing' if e.grad is None else 'unexpected'} in the engine")
        if t.grad is not None:
            compare(e.grad, t.grad, f"gradient of input {i} {tuple(t.shape)}")
    if torch_module is not None:
        e_params = dict(engine_module.named_parameters())
        for name, p in torch_module.named_parameters():
            q = e_params[name]
            if (p.grad is None) != (q.grad is None):
                raise Mismatch(f"parameter {name}: gradient {'missing' if q.grad is None else 'unexpected'}")
            if p.grad is not None:
                compare(q.grad, p.grad, f"gradient of {name}")


def _compare_state(engine_module, torch_module, what):
    theirs = torch_module.state_dict()
    ours = engine_module.state_dict()
    if set(ours) != set(theirs):
        raise Mismatch(f"{what}: state_dict keys {sorted(ours)}, PyTorch {sorted(theirs)}")
    for key, value in theirs.items():
        compare(ours[key], value, f"{what}: {key}")


# --------------------------------------------------------------------------- module cases
ENGINE_CLASSES = {n for n in enn.__all__ if isinstance(getattr(enn, n), type) and issubclass(getattr(enn, n),
                                                                                               enn.Module)}
ENGINE_FUNCTIONS = set(EF.__all__)


def _fresh(value):
    """Harvested torch inputs as new leaves (a case may run more than once)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(_fresh(v) for v in value)
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    return value


def _module_case_runner(torch_module_factory, cls_name, ctor_args, ctor_kwargs, fwd_args, fwd_kwargs, training,
                        seed):
    """A closure that runs one module case."""

    def run():
        t_args, t_kwargs = _fresh(fwd_args), _fresh(fwd_kwargs)
        with engine.use_backend("numpy"):
            leaves = []
            with _refusal("PyTorch's inputs"):
                e_args = _engine_value(t_args, leaves)
                e_kwargs = _engine_value(t_kwargs, leaves)
            torch.manual_seed(seed)
            tm = torch_module_factory().to(torch.float64)
            tm.train(training)
            with _refusal("PyTorch's constructor arguments"):
                em = getattr(enn, cls_name)(*_constructor_value(ctor_args), **_constructor_value(ctor_kwargs))
            em.to("float64")
            with _refusal("PyTorch's state_dict"):
                em.load_state_dict(tm.state_dict())
            em.train(training)
            run_pair(tm, em, (t_args, t_kwargs), (e_args, e_kwargs), leaves, seed, tm, em)

    return run


def module_db_cases():
    from torch.testing._internal.common_modules import module_db
    cases = []
    for info in module_db:
        name = info.module_cls.__name__
        if name not in ENGINE_CLASSES:
            continue
        for training in (True, False):
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inputs = info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True,
                                                 training=training)
            for i, mi in enumerate(inputs):
                mode = "train" if training else "eval"
                case_name = f"module_db-{name}-{i}-{mi.desc or 'default'}-{mode}"
                ci, fi = mi.constructor_input, mi.forward_input
                factory = functools.partial(info.module_cls, *ci.args, **ci.kwargs)
                facts = dict(ctor_args=ci.args, ctor_kwargs=ci.kwargs, fwd_args=fi.args, fwd_kwargs=fi.kwargs,
                             desc=mi.desc, training=training, complex=has_complex((fi.args, fi.kwargs)))
                cases.append(Case("module_db", name, case_name,
                                  _module_case_runner(factory, name, ci.args, ci.kwargs, fi.args, fi.kwargs, training,
                                                      _seed_of(case_name)), facts))
    return cases


class _RecordFunctional(TorchFunctionMode):
    """Records the outermost ``torch.nn.functional`` calls (function, args, kwargs, result)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # this mode is off inside its own handler: nested calls go unrecorded
        if getattr(func, "__module__", "") == "torch.nn.functional":
            self.calls.append((func, args, kwargs, out))
        return out


@contextlib.contextmanager
def _recording_constructors():
    """Record ``(class name, args, kwargs)`` of every ``torch.nn`` module built inside."""
    calls, patched = [], []
    for name in ENGINE_CLASSES:
        cls = getattr(torch.nn, name, None)
        if not isinstance(cls, type) or cls.__init__ is torch.nn.Module.__init__:
            continue
        own = cls.__dict__.get("__init__")  # None: inherited (MSELoss from _Loss), patched on the class itself

        def spy(self, *args, _init=cls.__init__, _cls=cls, **kwargs):
            if type(self) is _cls:
                calls.append((_cls.__name__, args, kwargs))
            _init(self, *args, **kwargs)

        cls.__init__ = spy
        patched.append((cls, own))
    try:
        yield calls
    finally:
        for cls, own in patched:
            if own is None:
                del cls.__init__
            else:
                cls.__init__ = own


def common_nn_cases():
    from torch.testing._internal import common_nn
    cases, seen = [], {}
    tests = [("module", d) for d in common_nn.module_tests + common_nn.get_new_module_tests()]
    tests += [("criterion", d) for d in common_nn.criterion_tests]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for kind, spec in tests:
            spec = dict(spec)
            if "constructor" not in spec:
                spec["constructor"] = getattr(torch.nn, spec["module_name"])
            spec.pop("default_dtype", None)
            test_cls = common_nn.CriterionTest if kind == "criterion" else common_nn.NewModuleTest
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                test = test_cls(**spec)
                with _recording_constructors() as built:
                    module = test.constructor(*test.constructor_args)
                module_name = type(module).__name__
                if module_name != "FunctionalModule" and module_name not in ENGINE_CLASSES:
                    continue
                inputs = test._get_input()
                target = test._get_target() if kind == "criterion" else None
            inputs = _as_float64(inputs)
            args = inputs if isinstance(inputs, tuple) else (inputs,)
            if kind == "criterion":
                args = args + (_as_float64(target),) + tuple(test.extra_args)
            base = test.get_name()[len("test_"):]
            seen[base] = seen.get(base, 0) + 1
            case_name = f"common_nn-{base}" + (f"-{seen[base]}" if seen[base] > 1 else "")
            if module_name == "FunctionalModule":
                case = _functional_case(module, args, case_name)
                if case is not None:
                    cases.append(case)
                continue
            ctor = next(((a, k) for n, a, k in built if n == module_name), ((), {}))
            factory = functools.partial(_rebuild, test.constructor, tuple(test.constructor_args))
            facts = dict(ctor_args=ctor[0], ctor_kwargs=ctor[1], fwd_args=args, fwd_kwargs={}, desc=base,
                         training=True, complex=has_complex(args))
            cases.append(Case("common_nn", module_name, case_name,
                              _module_case_runner(factory, module_name, ctor[0], ctor[1], args, {}, True,
                                                  _seed_of(case_name)), facts))
    finally:
        torch.set_default_dtype(previous)
    return cases


def _rebuild(constructor, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return constructor(*args)


def _functional_case(module, args, case_name):
    """A ``wrap_functional`` entry: the outermost ``torch.nn.functional`` call its forward
    makes, replayed on the engine function of that name (``None`` if the engine has none)."""
    probe = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
    recorder = _RecordFunctional()
    with recorder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = module(*probe)
    if not recorder.calls:
        return None
    func, f_args, f_kwargs, result = recorder.calls[-1]
    name = func.__name__
    if name not in ENGINE_FUNCTIONS:
        return None

    def torch_inputs():
        """The recorded call's arguments with the case's inputs as fresh leaves."""
        fresh = {id(p): _as_float64(a).detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
                 and a.is_floating_point() else a for p, a in zip(probe, args)}

        def swap(v):
            if isinstance(v, torch.Tensor) and id(v) in fresh:
                return fresh[id(v)]
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                return v.detach().double()
            if isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
                return type(v)(swap(x) for x in v)
            return v
        return tuple(swap(a) for a in f_args), {k: swap(v) for k, v in f_kwargs.items()}

    facts = dict(function=name, kwargs=f_kwargs, args=f_args, post_processed=result is not out, desc=case_name,
                 training=True, complex=has_complex((f_args, f_kwargs)))

    def run():
        if facts["post_processed"]:
            raise Mismatch("the wrapped lambda changes the functional's result; not comparable as recorded")
        t_args, t_kwargs = torch_inputs()
        with engine.use_backend("numpy"):
            leaves = []
            with _refusal("PyTorch's inputs"):
                e_args = _engine_value(t_args, leaves)
                e_kwargs = _engine_value(t_kwargs, leaves)
            run_pair(func, getattr(EF, name), (t_args, t_kwargs), (e_args, e_kwargs), leaves, _seed_of(case_name))

    return Case("common_nn", f"F.{name}", case_name, run, facts)


# --------------------------------------------------------------------------- optimizer cases
ENGINE_OPTIMIZERS = {n for n in eoptim.__all__ if isinstance(getattr(eoptim, n), type)
                     and issubclass(getattr(eoptim, n), eoptim.Optimizer) and n != "Optimizer"}


def _objective(w, b, x):
    """A smooth loss of a weight ``(3, 4)`` and a bias ``(3,)`` (torch tensors)."""
    h = torch.tanh(x @ w.T + b)
    return (h * h).sum() + 0.1 * (w ** 3).sum() + (b.sin() * 0.5).sum()


def _grads_at(w, b, x):
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    _objective(tw, tb, x).backward()
    return tw.grad.numpy(), tb.grad.numpy()


def _optimizer_runner(cls_name, kwargs, groups, seed):
    def run():
        rng = np.random.default_rng(seed)
        w0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(3)
        x = torch.from_numpy(rng.standard_normal((5, 4)))
        tw, tb = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
        with engine.use_backend("numpy"):
            ew, eb = enn.Parameter(engine.asarray(w0.copy())), enn.Parameter(engine.asarray(b0.copy()))
            t_params = [tw, tb] if groups == 1 else [{"params": [tw]}, {"params": [tb], "lr": _half_lr(kwargs)}]
            e_params = [ew, eb] if groups == 1 else [{"params": [ew]}, {"params": [eb], "lr": _half_lr(kwargs)}]
            topt = getattr(torch.optim, cls_name)(t_params, **kwargs)
            with _refusal("PyTorch's optimizer arguments"):
                eopt = getattr(eoptim, cls_name)(e_params, **_constructor_value(kwargs))
            for step in range(OPTIMIZER_STEPS):
                topt.zero_grad()
                _objective(tw, tb, x).backward()
                topt.step()
                gw, gb = _grads_at(engine.to_numpy(ew.data), engine.to_numpy(eb.data), x)
                ew.grad, eb.grad = engine.asarray(gw), engine.asarray(gb)
                eopt.step()
                compare(ew.data, tw, f"weight after step {step + 1}")
                compare(eb.data, tb, f"bias after step {step + 1}")
            theirs, ours = topt.state_dict()["state"], eopt.state_dict()["state"]
            for index, entries in theirs.items():
                mine = ours.get(index, {})
                if set(mine) != set(entries):
                    raise Mismatch(f"state of parameter {index}: keys {sorted(mine)}, PyTorch {sorted(entries)}")
                for key, value in entries.items():
                    compare(np.asarray(engine.to_numpy(mine[key]) if hasattr(mine[key], "shape") else mine[key]),
                            value if isinstance(value, torch.Tensor) else torch.tensor(value),
                            f"state {key!r} of parameter {index}")

    return run


def _half_lr(kwargs):
    lr = kwargs.get("lr", 1e-3)
    return 0.5 * float(lr)


def optim_db_cases():
    from torch.testing._internal.common_optimizers import (_get_optim_inputs_including_global_cliquey_kwargs,
                                                           optim_db)
    cases = []
    for info in optim_db:
        name = info.optim_cls.__name__
        if name not in ENGINE_OPTIMIZERS:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float64, info)
        for i, oi in enumerate(inputs):
            flags = ",".join(f"{k}={v}" for k, v in oi.kwargs.items() if k in ("foreach", "fused", "differentiable")
                             and v)
            for groups in (1, 2):
                case_name = f"optim_db-{name}-{i}-{oi.desc}" + (f"-{flags}" if flags else "") + f"-groups{groups}"
                facts = dict(kwargs=oi.kwargs, desc=oi.desc, groups=groups)
                cases.append(Case("optim_db", name, case_name,
                                  _optimizer_runner(name, dict(oi.kwargs), groups, _seed_of(case_name)), facts))
    return cases


def harvest():
    """Every harvested case, in a fixed order."""
    return module_db_cases() + common_nn_cases() + optim_db_cases()


def signature_of(obj):
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None
