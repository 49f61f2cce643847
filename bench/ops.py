"""The ops and their paths: builds a :class:`bench.harness.Case` for one op on one shape.

Paths of conv2d (names as they appear in the report):

``naive``         engine ``method="naive"``: a loop over output positions.
``strided``       engine ``method="strided"``: the backend's strided window view
                  (NumPy's / CuPy's ``as_strided``) contracted with ``tensordot``.
``gemm``          engine ``method="gemm"``: the backend's im2col (on CuPy its
                  RawKernel) + one GEMM per workspace chunk.
``gemm-slicing``  the same, with the backend's ``im2col``/``col2im``/``pad2d``
                  temporarily replaced by the generic slicing versions of
                  ``backends.base.Backend``: what the hand-written kernel buys.
``gemm-blas``     on NumPy float32: the engine's ``gemm`` path with the C kernels
                  off (``use_native_kernels = False``): im2col/col2im copies and
                  NumPy's BLAS, what the C kernels of ``kernels/cpu_conv.c`` replace.
``torch-cpu`` / ``torch-cuda``  PyTorch on the same threads / cuDNN (TF32 off).
``GEMM``          the bare GEMM of the op's own GEMM shapes, random operands, in
                  the engine path's own GEMM: on NumPy float32 the C kernels'
                  ``gemm_f32`` (same packing and register tiles as the fused conv,
                  the column matrix made beforehand), else ``xp.matmul``.
``GEMM-blas``     on NumPy float32 with the C kernels, ``xp.matmul`` (the BLAS) on
                  the same shapes, for comparison.

The conv input gradient alone (``conv2d_bwd_dx``) is the engine's own
``conv2d_backward(..., need_weight_grad=False, has_bias=False)`` (the strided
path: :func:`conv_dx_strided`, col2im of ``tensordot(W, g)`` per group); the
weight gradient alone is ``conv2d_backward(..., need_input_grad=False,
has_bias=False)``; PyTorch's are ``aten.convolution_backward`` with the
matching ``output_mask``. Every conv path passes the shape's groups, dilation
and (possibly non-square) kernel and padding through.

``model_infer`` runs a whole model (``engine.models``, or :func:`resnet18`) in
eval mode under ``no_grad`` against its PyTorch twin (:func:`torch_twin`) with
the same weights.

``train_epoch`` (:func:`epoch_case`) trains a zoo model for one epoch over a
built-in dataset with ``engine.fit`` and the engine's ``DataLoader``, and its
PyTorch twin, from the same initial weights, with PyTorch's own loop
(``bench.train_torch_fashion.train_epoch``); the test accuracy of both comes
after the timed rounds (:class:`EpochCase`'s ``finish``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import types
import zlib
from collections.abc import Callable

import numpy as np

from .. import backends
import engine
from ..backends import Backend, Window, native_cpu
from ..kernels import native
from engine import ops as F

from .harness import Case, Path
from .suites import ConvShape, EpochShape, ModelShape, PoolShape, TrainShape, scaling_point

CONV_PATHS = ("naive", "strided", "gemm", "gemm-slicing")
PATH_CHOICES = ("naive", "strided", "gemm", "pairs", "gemm-blas", "gemm-slicing", "generic", "torch")

#: Backend methods the generic (slicing-only) variants put back, per family.
IM2COL_METHODS = ("pad2d", "im2col", "col2im")
POOL_METHODS = ("pad2d", "max_pool2d", "max_pool2d_backward", "_scatter_windows")


def default_paths(backend_name: str) -> tuple[str, ...]:
    if backend_name == "cupy":  # naive only when named: on a GPU it is one launch per output position
        return ("strided", "gemm", "pairs", "gemm-slicing", "generic", "torch")
    return ("naive", "strided", "gemm", "pairs", "gemm-blas", "generic", "torch")


def native_active(env) -> bool:
    """The engine's float32 NumPy convolutions, max pooling and ReLU run on the C kernels."""
    return (env.backend.name == "numpy" and env.dtype == "float32"
            and getattr(env.backend, "use_native_kernels", False) and native.library() is not None)


@contextlib.contextmanager
def kernels_off(backend):
    """The NumPy backend without its C kernels (im2col + BLAS, NumPy pooling)."""
    saved = backend.use_native_kernels
    backend.use_native_kernels = False
    try:
        yield
    finally:
        backend.use_native_kernels = saved


def _without_kernels(backend, fn):
    def run():
        with kernels_off(backend):
            return fn()
    return run


@contextlib.contextmanager
def generic_methods(backend: Backend, names):
    """Bind the generic ``backends.base.Backend`` version of each method the
    backend overrides onto the (cached, shared) backend instance for the block."""
    bound = []
    for name in names:
        if getattr(type(backend), name, None) is not getattr(Backend, name, None):
            setattr(backend, name, types.MethodType(getattr(Backend, name), backend))
            bound.append(name)
    try:
        yield bound
    finally:
        for name in bound:
            backend.__dict__.pop(name, None)


def overrides(backend: Backend, names) -> bool:
    return any(getattr(type(backend), n, None) is not getattr(Backend, n, None) for n in names)


def _generic(backend, names, fn):
    def run():
        with generic_methods(backend, names):
            return fn()
    return run


# ------------------------------------------------------------------------------ environment
class Env:
    """What every case needs: the backend, dtype, the peer (torch) and path choices."""

    def __init__(self, backend_name: str, dtype: str, paths, inject_broken: bool = False,
                 use_torch: bool = True):
        self.backend = backends.get(backend_name)
        self.xp = self.backend.xp
        self.dtype = dtype
        self.np_dtype = np.dtype(dtype)
        self.itemsize = self.np_dtype.itemsize
        self.paths = set(paths)
        self.inject_broken = inject_broken
        self.torch = None
        self.torch_device = None
        self.torch_note = "PyTorch not installed"
        if use_torch:
            try:
                import torch
            except ImportError:
                pass
            else:
                self.torch = torch
                self.torch_note = ""
        self.ref_torch = self.torch is not None
        if self.torch is not None and "torch" in self.paths:
            if backend_name == "cupy":
                if self.torch.cuda.is_available():
                    self.torch.backends.cudnn.allow_tf32 = False
                    self.torch.backends.cuda.matmul.allow_tf32 = False
                    self.torch_device = "cuda"
                else:
                    self.torch_note = "PyTorch has no CUDA here: no GPU peer"
            else:
                self.torch_device = "cpu"
        self.peer_name = f"torch-{self.torch_device}" if self.torch_device else None
        self.reference_name = ("torch float64 (CPU)" if self.ref_torch
                               else "engine gemm float64 (numpy backend)")
        self.tol = {"float32": 1e-4, "float64": 1e-9}[dtype]
        self.bare_gemm = True      # time the bare GEMM beside each conv case (the sweep turns it off)
        self._ref_cache = None     # (key, the float64 reference of the last conv shape)

    # arrays
    def dev(self, a: np.ndarray, dtype=None):
        return self.backend.asarray(np.ascontiguousarray(a, dtype=dtype or self.np_dtype))

    def host(self, a) -> np.ndarray:
        return np.asarray(self.backend.to_numpy(a), dtype=np.float64)

    def tdev(self, a: np.ndarray):
        t = self.torch.from_numpy(np.ascontiguousarray(a, dtype=self.np_dtype))
        return t.to(self.torch_device) if self.torch_device != "cpu" else t

    @staticmethod
    def thost(t) -> np.ndarray:
        return t.detach().cpu().double().numpy()

    def want(self, name: str) -> bool:
        return name in self.paths

    def peer_timer(self) -> str:
        return "torch-cuda" if self.torch_device == "cuda" else "host"

    def engine_timer(self) -> str:
        return "cuda" if self.backend.name == "cupy" else "host"


def _rounded(env: Env, a: np.ndarray) -> np.ndarray:
    """``a`` rounded to the benchmark's dtype, kept in float64: the reference then
    sees exactly the values the paths see (float32 rounding of the inputs would
    otherwise flip near-ties in ReLU and max pooling and look like a bug)."""
    return np.asarray(a, dtype=env.np_dtype).astype(np.float64)


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def _broken(path: Path) -> Path:
    """A copy of ``path`` whose outputs are off by 1 %: the harness must call it WRONG."""
    def outputs(result):
        out = dict(path.outputs(result))
        key = next(iter(out))
        out[key] = np.asarray(out[key]) * 1.01 + 1e-3
        return out
    return Path("broken", path.run, outputs, check=path.check, role="engine", timer=path.timer,
                workspace=path.workspace, note="injected fault (--inject-broken)")


# ------------------------------------------------------------------------------ conv2d
_CONV_KEEP = {"conv2d_fwd": ("y",), "conv2d_bwd": ("dx", "dw", "db"), "conv2d_bwd_dx": ("dx",),
              "conv2d_bwd_dw": ("dw",), "conv2d_fwdbwd": ("y", "dx", "dw", "db")}


def _conv_reference(env: Env, op, s: ConvShape, x, w, b, g, cache: bool = True) -> dict:
    """float64 reference outputs of ``op`` on host arrays. All four of ``y, dx,
    dw, db`` are computed at once and kept for the last shape (``cache``), so
    the ops of one shape (same inputs: seeded by the shape) share one reference."""
    key = (s, env.dtype)
    cached = getattr(env, "_ref_cache", None)
    if cache and cached is not None and cached[0] == key:
        full = cached[1]
    else:
        full = _conv_reference_all(env, s, x, w, b, g)
        if cache:
            env._ref_cache = (key, full)
    return {k: full[k] for k in _CONV_KEEP[op]}


def _conv_reference_all(env: Env, s: ConvShape, x, w, b, g) -> dict:
    if env.ref_torch:
        torch = env.torch
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
        y = torch.nn.functional.conv2d(tx, tw, tb, s.stride, s.padding, s.dilation, s.groups).numpy()
        dx, dw, db = torch.ops.aten.convolution_backward(
            tg, tx, tw, [s.o], [s.stride] * 2, list(s.padding), [s.dilation] * 2, False, [0, 0], s.groups,
            [True, True, True])
        return {"y": y, "dx": dx.numpy(), "dw": dw.numpy(), "db": db.numpy()}
    npb = backends.get("numpy")  # the engine itself, in float64, on the host
    with engine.use_backend("numpy"):
        xa, wa, ba, ga = (npb.asarray(a) for a in (x, w, b, g))
        y = F.conv2d(xa, wa, ba, s.stride, s.padding, s.dilation, s.groups, method="gemm")
        dx, dw, db = F.conv2d_backward(ga, xa, wa, s.stride, s.padding, s.dilation, s.groups, method="gemm")
        return {"y": np.asarray(y), "dx": np.asarray(dx), "dw": np.asarray(dw), "db": np.asarray(db)}


def _window(s: ConvShape) -> Window:
    return Window(s.k, s.kw, s.stride, s.stride, s.dilation, s.dilation, s.pad, s.pad, s.pad_w, s.pad_w,
                  s.oh, s.ow)


def conv_dx_strided(backend, grad_out, weight, x_shape, s: ConvShape):
    """dx alone, as the strided backward computes it: ``tensordot(W, g)`` then
    col2im, per group."""
    xp = backend.xp
    n, c, h, w = x_shape
    cg, og = c // s.groups, s.o // s.groups
    win = _window(s)
    parts = []
    for i in range(s.groups):
        gi = grad_out[:, i * og:(i + 1) * og, ...] if s.groups > 1 else grad_out
        wi = weight[i * og:(i + 1) * og, ...] if s.groups > 1 else weight
        dcol = xp.tensordot(wi, gi, axes=([0], [1]))  # (C/g, kh, kw, N, OH, OW)
        parts.append(backend.col2im(xp.reshape(dcol, (cg * s.k * s.kw, n * s.oh * s.ow)), (n, cg, h, w), win))
    return parts[0] if s.groups == 1 else xp.concat(parts, axis=1)


def _device(x):
    from array_api_compat import device
    return device(x)


def _forward_kernel_words(s: ConvShape) -> str:
    """Which C kernel the engine's float32 forward of ``s`` takes, in words."""
    entry = native_cpu.forward_kernel((s.n, s.c, s.h, s.w), (s.o, s.c // s.groups, s.k, s.kw), _window(s), s.groups)
    return native_cpu.KERNEL_WORDS.get(entry, entry or "none")


def _engine_conv_run(env: Env, op, method, s: ConvShape, x, w, b, g):
    geo = dict(stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups, method=method)
    be = env.backend
    if op == "conv2d_fwd":
        return (lambda: F.conv2d(x, w, b, **geo)), (lambda y: {"y": env.host(y)})
    if op == "conv2d_bwd":
        return ((lambda: F.conv2d_backward(g, x, w, **geo)),
                (lambda r: {"dx": env.host(r[0]), "dw": env.host(r[1]), "db": env.host(r[2])}))
    if op == "conv2d_bwd_dw":
        return ((lambda: F.conv2d_backward(g, x, w, need_input_grad=False, has_bias=False, **geo)),
                (lambda r: {"dw": env.host(r[1])}))
    if op == "conv2d_bwd_dx":
        if method == "strided":
            return (lambda: conv_dx_strided(be, g, w, tuple(x.shape), s)), (lambda dx: {"dx": env.host(dx)})
        return ((lambda: F.conv2d_backward(g, x, w, need_weight_grad=False, has_bias=False, **geo)),
                (lambda r: {"dx": env.host(r[0])}))
    if op == "conv2d_fwdbwd":
        def run():
            y = F.conv2d(x, w, b, **geo)
            return (y,) + tuple(F.conv2d_backward(g, x, w, **geo))
        return run, (lambda r: {"y": env.host(r[0]), "dx": env.host(r[1]), "dw": env.host(r[2]),
                                "db": env.host(r[3])})
    raise ValueError(op)


def _torch_conv_run(env: Env, op, s: ConvShape, x, w, b, g):
    torch = env.torch
    tx, tw, tb, tg = (env.tdev(a) for a in (x, w, b, g))
    st, pd, dl = [s.stride] * 2, list(s.padding), [s.dilation] * 2
    conv_bwd = torch.ops.aten.convolution_backward
    th = env.thost
    if op == "conv2d_fwd":
        def run():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, s.stride, s.padding, s.dilation, s.groups)
        return run, (lambda y: {"y": th(y)})
    if op in ("conv2d_bwd", "conv2d_bwd_dx", "conv2d_bwd_dw"):
        mask = {"conv2d_bwd": [True, True, True], "conv2d_bwd_dx": [True, False, False],
                "conv2d_bwd_dw": [False, True, False]}[op]
        keys = [k for k, m in zip(("dx", "dw", "db"), mask) if m]

        def run():
            return conv_bwd(tg, tx, tw, [s.o], st, pd, dl, False, [0, 0], s.groups, mask)
        return run, (lambda r: {k: th(t) for k, t in zip(("dx", "dw", "db"), r) if k in keys})
    if op == "conv2d_fwdbwd":
        xr, wr, br = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

        def run():
            y = torch.nn.functional.conv2d(xr, wr, br, s.stride, s.padding, s.dilation, s.groups)
            dx, dw, db = torch.autograd.grad(y, (xr, wr, br), tg)
            return y, dx, dw, db
        return run, (lambda r: {"y": th(r[0]), "dx": th(r[1]), "dw": th(r[2]), "db": th(r[3])})
    raise ValueError(op)


def _bare_gemm(env: Env, op, s: ConvShape, rng, use_kernels: bool, name="GEMM", role="gemm"):
    """The op's own GEMMs on random contiguous operands, in the engine's layouts:
    forward ``W (O, K) @ col (K, P)``; dW ``g (O, P) @ col.T``; dx ``W.T @ g``.
    ``use_kernels``: through the C kernels' ``gemm_f32``, with each operand laid
    out contiguously as that GEMM reads it best (they are random anyway).
    Grouped shapes: one batched ``xp.matmul`` over the groups (per-group M, K)."""
    xp = env.xp
    m, p, k = s.gemm_mnk
    g = s.groups
    lead = (g,) if g > 1 else ()
    use_kernels = use_kernels and g == 1

    def rand(*shape):
        return env.dev(rng.standard_normal(lead + shape, dtype=np.float32))
    a, col = rand(m, k), rand(k, p)
    gm = rand(m, p) if op != "conv2d_fwd" else None
    if use_kernels:
        mm, col_t, a_t = native_cpu.matmul, rand(p, k), rand(k, m)
        t = lambda arr: {id(col): col_t, id(a): a_t}[id(arr)]  # noqa: E731
        what = "C kernels' gemm_f32"
    else:
        axes = (0, 2, 1) if g > 1 else (1, 0)
        mm, t = xp.matmul, (lambda arr: xp.permute_dims(arr, axes))
        what = "xp.matmul" + (f" batched over {g} groups" if g > 1 else "")
    if op == "conv2d_fwd":
        run = lambda: mm(a, col)
        desc = f"({m}x{k}) @ ({k}x{p})"
    elif op == "conv2d_bwd_dw":
        run = lambda: mm(gm, t(col))
        desc = f"({m}x{p}) @ ({p}x{k})"
    elif op == "conv2d_bwd_dx":
        run = lambda: mm(t(a), gm)
        desc = f"({k}x{m}) @ ({m}x{p})"
    elif op == "conv2d_bwd":
        run = lambda: (mm(gm, t(col)), mm(t(a), gm))
        desc = "dW + dx GEMMs"
    else:
        run = lambda: (mm(a, col), mm(gm, t(col)), mm(t(a), gm))
        desc = "forward + dW + dx GEMMs"
    return Path(name, run, None, role=role, timer=env.engine_timer(), workspace=g * k * p * env.itemsize,
                note=f"bare {what} {desc}, M={m} N={p} K={k}; not checked (random operands)")


OP_FLOPS = {"conv2d_fwd": 1, "conv2d_bwd": 2, "conv2d_bwd_dx": 1, "conv2d_bwd_dw": 1, "conv2d_fwdbwd": 3}
NAIVE_OPS = ("conv2d_fwd", "conv2d_bwd", "conv2d_fwdbwd")


def conv_case(env: Env, op: str, s: ConvShape) -> Case:
    # seeded by the shape alone: every op of a shape sees the same inputs and shares one reference
    rng = np.random.default_rng(_seed("conv", s))
    cg, kk = s.c // s.groups, s.k * s.kw
    x64 = _rounded(env, rng.standard_normal((s.n, s.c, s.h, s.w)))
    w64 = _rounded(env, rng.standard_normal((s.o, cg, s.k, s.kw)) / math.sqrt(cg * kk))
    b64 = _rounded(env, 0.1 * rng.standard_normal(s.o))
    g64 = _rounded(env, rng.standard_normal((s.n, s.o, s.oh, s.ow)))
    ref = _conv_reference(env, op, s, x64, w64, b64, g64)
    x, w, b, g = (env.dev(a) for a in (x64, w64, b64, g64))

    per_image = s.c * kk * s.oh * s.ow * env.itemsize
    pointwise = kk == 1 and s.stride == 1 and s.pad == 0 and s.pad_w == 0
    chunk = 0 if pointwise else min(s.n, max(1, env.backend.workspace_bytes() // per_image)) * per_image
    factor = {"conv2d_fwd": 1, "conv2d_bwd": 2, "conv2d_bwd_dx": 1, "conv2d_bwd_dw": 1, "conv2d_fwdbwd": 2}[op]
    paths = []
    for method in ("strided", "gemm", "gemm-blas", "gemm-slicing"):
        if not env.want(method) or (method == "gemm-blas" and not native_active(env)):
            continue
        engine_method = "strided" if method == "strided" else "gemm"
        run, outputs = _engine_conv_run(env, op, engine_method, s, x, w, b, g)
        if method == "gemm-blas":
            run = _without_kernels(env.backend, run)
        if method == "gemm-slicing":
            run = _generic(env.backend, IM2COL_METHODS, run)
        ws = s.n * per_image * factor if method == "strided" else chunk * factor
        if method == "gemm" and native_active(env):
            ws = None  # no im2col matrix: the C kernels pack columns straight from the image
        note = "tensordot copies the whole window view" if method == "strided" else ""
        if op == "conv2d_bwd_dx":
            note = ("col2im of tensordot(W, g), per group" if method == "strided"
                    else "conv2d_backward(need_weight_grad=False, has_bias=False)")
        elif method == "gemm" and native_active(env):
            note = "C kernels: " + _forward_kernel_words(s) if op == "conv2d_fwd" else "C kernels"
        paths.append(Path(method, run, outputs, timer=env.engine_timer(), workspace=ws, note=note))
    if env.torch_device is not None:
        run, outputs = _torch_conv_run(env, op, s, x64, w64, b64, g64)
        paths.append(Path(env.peer_name, run, outputs, role="peer", timer=env.peer_timer()))
    if env.bare_gemm:
        paths.append(_bare_gemm(env, op, s, rng, native_active(env)))
        if native_active(env) and s.groups == 1:
            paths.append(_bare_gemm(env, op, s, rng, False, name="GEMM-blas", role="info"))
    if env.inject_broken and paths:
        paths.insert(0, _broken(paths[0]))

    make_naive = None
    if env.want("naive") and op in NAIVE_OPS:
        def make_naive(nb):
            sub = s.with_batch(nb)
            xs, gs = x64[:nb], g64[:nb]
            xd, gd = (x, g) if nb == s.n else (env.dev(xs), env.dev(gs))
            run, outputs = _engine_conv_run(env, op, "naive", sub, xd, w, b, gd)
            path = Path("naive", run, outputs, role="naive", timer=env.engine_timer(),
                        workspace=nb * s.c * kk * env.itemsize)
            return path, (lambda: _conv_reference(env, op, sub, xs, w64, b64, gs, cache=(nb == s.n)))

    extra = {"N": s.n, "C": s.c, "H": s.h, "W": s.w, "O": s.o, "k": s.k, "kw": s.kw, "stride": s.stride,
             "pad": s.pad, "pad_w": s.pad_w, "dilation": s.dilation, "groups": s.groups,
             "gemm_M": s.gemm_mnk[0], "gemm_N": s.gemm_mnk[1], "gemm_K": s.gemm_mnk[2]}
    sp = scaling_point(s)
    if sp:
        extra["scaling_axis"], extra["scaling_value"] = sp
    return Case(op, s.name, s.label, OP_FLOPS[op] * s.flops, ref, env.reference_name, paths, batch=s.n,
                make_naive=make_naive, naive_workspace=s.n * s.c * kk * env.itemsize, tol=env.tol,
                extra=extra)


# ------------------------------------------------------------------------------ max pooling
def pool_case(env: Env, op: str, s: PoolShape) -> Case:
    rng = np.random.default_rng(_seed(op, s))
    x64 = _rounded(env, rng.standard_normal((s.n, s.c, s.h, s.w)))  # continuous: no ties
    g64 = _rounded(env, rng.standard_normal((s.n, s.c, s.oh, s.ow)))
    args = dict(kernel_size=s.k, stride=s.stride, padding=s.pad)
    if env.ref_torch:
        tx = env.torch.from_numpy(x64)
        y, ti = env.torch.nn.functional.max_pool2d(tx, s.k, s.stride, s.pad, return_indices=True)
        if op == "maxpool_fwd":
            ref = {"y": y.numpy()}
        else:
            ref = {"dx": env.torch.ops.aten.max_pool2d_with_indices_backward(
                env.torch.from_numpy(g64), tx, [s.k] * 2, [s.stride] * 2, [s.pad] * 2, [1, 1], False, ti).numpy()}
    else:
        with engine.use_backend("numpy"):
            y, idx = F.max_pool2d(x64, return_indices=True, **args)
            ref = ({"y": np.asarray(y)} if op == "maxpool_fwd"
                   else {"dx": np.asarray(F.max_pool2d_backward(g64, idx, x64.shape, **args))})
    x, g = env.dev(x64), env.dev(g64)
    paths = []

    def engine_path(name, wrap):
        if op == "maxpool_fwd":
            run = lambda: F.max_pool2d(x, return_indices=True, **args)
            outputs = lambda r: {"y": env.host(r[0])}
        else:
            _, idx = wrap(lambda: F.max_pool2d(x, return_indices=True, **args))()
            run = lambda: F.max_pool2d_backward(g, idx, x.shape, **args)
            outputs = lambda dx: {"dx": env.host(dx)}
        return Path(name, wrap(run), outputs, timer=env.engine_timer())

    paths.append(engine_path("engine", lambda f: f))
    if native_active(env) and env.want("gemm-blas"):  # the NumPy code the C kernel replaced
        paths.append(engine_path("engine-numpy", lambda f: _without_kernels(env.backend, f)))
    if env.want("generic") and overrides(env.backend, POOL_METHODS):
        paths.append(engine_path("generic", lambda f: _generic(env.backend, POOL_METHODS, f)))
    if env.torch_device is not None:
        torch = env.torch
        tx, tg = env.tdev(x64), env.tdev(g64)
        if op == "maxpool_fwd":
            def run():
                with torch.no_grad():
                    return torch.nn.functional.max_pool2d(tx, s.k, s.stride, s.pad, return_indices=True)
            outputs = lambda r: {"y": env.thost(r[0])}
        else:
            _, ti = torch.nn.functional.max_pool2d(tx, s.k, s.stride, s.pad, return_indices=True)

            def run():
                return torch.ops.aten.max_pool2d_with_indices_backward(
                    tg, tx, [s.k] * 2, [s.stride] * 2, [s.pad] * 2, [1, 1], False, ti)
            outputs = lambda dx: {"dx": env.thost(dx)}
        paths.append(Path(env.peer_name, run, outputs, role="peer", timer=env.peer_timer()))
    if env.inject_broken:
        paths.insert(0, _broken(paths[0]))
    extra = {"N": s.n, "C": s.c, "H": s.h, "W": s.w, "k": s.k, "stride": s.stride, "pad": s.pad}
    return Case(op, s.name, s.label, s.flops, ref, env.reference_name, paths, batch=s.n, tol=env.tol,
                extra=extra)


# ------------------------------------------------------------------------------ training step
LR = 1e-3
EPS = 1e-8


def simplecnn_weights(seed: int = 0) -> dict:
    """SimpleCNN's initial weights (Kaiming-normal, float64), PyTorch state_dict keys."""
    rng = np.random.default_rng(seed)
    shapes = {"0": (32, 1, 3, 3), "3": (64, 32, 3, 3), "7": (128, 3136), "9": (10, 128)}
    out = {}
    for key, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        out[f"{key}.weight"] = rng.normal(0, math.sqrt(2.0 / fan_in), shape)
        out[f"{key}.bias"] = rng.uniform(-1, 1, shape[0]) / math.sqrt(fan_in)
    return out


def engine_simplecnn(method: str, dtype: str):
    nn = engine.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, method=method, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, method=method, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128, dtype=dtype), nn.ReLU(), nn.Linear(128, 10, dtype=dtype))


def torch_simplecnn(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def _adam_gap(p0: dict, after: dict, grads: dict) -> dict:
    """``(p_after - p_expected) / lr`` for Adam's first step from the path's own
    gradients (``p0 - lr * g / (|g| + eps)``): zero when the step is right."""
    return {f"step.{k}": (after[k] - (p0[k] - LR * grads[k] / (np.abs(grads[k]) + EPS))) / LR for k in p0}


def _train_reference(env: Env, w0, x64, y64) -> dict:
    if env.ref_torch:
        torch = env.torch
        model = torch_simplecnn(torch).double()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in w0.items()})
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x64)), torch.from_numpy(y64))
        loss.backward()
        loss = loss.detach()
        grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    else:
        with engine.use_backend("numpy"):
            model = engine_simplecnn("gemm", "float64")
            model.load_state_dict(w0)
            loss = engine.nn.CrossEntropyLoss()(model(x64), y64)
            loss.backward()
            grads = {k: np.asarray(p.grad) for k, p in model.named_parameters()}
    out = {"loss": np.asarray(float(loss))}
    out.update({f"grad.{k}": v for k, v in grads.items()})
    out.update({f"step.{k}": np.zeros_like(v) for k, v in w0.items()})
    return out


def _engine_train(env: Env, method: str, w0, x64, y64):
    """The engine's training step: ``run`` keeps training one model; ``check``
    takes one step from ``w0``: loss and Adam's update in the benchmark dtype,
    gradients from the same code in float64 (see :func:`train_case`)."""
    y = env.dev(y64, dtype=np.int64)

    def build(dtype):
        with engine.use_backend(env.backend.name):
            model = engine_simplecnn(method, dtype)
            model.load_state_dict(w0)
            return model, engine.optim.Adam(model.parameters(), lr=LR, eps=EPS), engine.nn.CrossEntropyLoss()

    def step(model, opt, crit, x):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss.data

    x = env.dev(x64)
    state = build(env.dtype)

    def run():
        return step(*state, x)

    def check():
        model, opt, crit = build(env.dtype)
        loss = step(model, opt, crit, x)
        grads = {k: env.host(p.grad) for k, p in model.named_parameters()}
        after = {k: env.host(p.data) for k, p in model.named_parameters()}
        out = {"loss": np.asarray(float(env.host(loss)))}
        out.update(_adam_gap(w0, after, grads))
        model, opt, crit = build("float64")
        step(model, opt, crit, env.dev(x64, dtype=np.float64))
        out.update({f"grad.{k}": env.host(p.grad) for k, p in model.named_parameters()})
        return out
    return run, check


def _pairs_step(params, x, y):
    """One SimpleCNN step through the array-level pairs called by hand, no tape:
    the calls the layers made before the autograd tape (forward keeping what
    backward needs, then each backward in reverse), for the tape's overhead."""
    c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b = (p.data for p in params)
    n = x.shape[0]
    xp = backends.backend_of(x).xp
    h1, col1 = F.conv2d(x, c1w, c1b, padding=1, keep_columns=True)
    r1 = F.relu(h1)
    p1, i1 = F.max_pool2d(r1, 2, return_indices=True)
    h2, col2 = F.conv2d(p1, c2w, c2b, padding=1, keep_columns=True)
    r2 = F.relu(h2)
    p2, i2 = F.max_pool2d(r2, 2, return_indices=True)
    flat = xp.reshape(p2, (n, -1))
    r3 = F.relu(F.linear(flat, f1w, f1b))
    logits = F.linear(r3, f2w, f2b)
    loss = F.cross_entropy(logits, y)
    g = F.cross_entropy_backward(logits, y)
    g, d_f2w, d_f2b = F.linear_backward(g, r3, f2w)
    g, d_f1w, d_f1b = F.linear_backward(F.relu_backward(g, r3), flat, f1w)
    g = F.relu_backward(F.max_pool2d_backward(xp.reshape(g, p2.shape), i2, r2.shape, 2), r2)
    g, d_c2w, d_c2b = F.conv2d_backward(g, p1, c2w, padding=1, columns=col2)
    g = F.relu_backward(F.max_pool2d_backward(g, i1, r1.shape, 2), r1)
    _, d_c1w, d_c1b = F.conv2d_backward(g, x, c1w, padding=1, columns=col1, need_input_grad=False)
    for p, grad in zip(params, (d_c1w, d_c1b, d_c2w, d_c2b, d_f1w, d_f1b, d_f2w, d_f2b)):
        p.grad = grad
    return loss


def _engine_train_pairs(env: Env, w0, x64, y64):
    """The same step as :func:`_engine_train`'s, through :func:`_pairs_step`."""
    y = env.dev(y64, dtype=np.int64)

    def build(dtype):
        with engine.use_backend(env.backend.name):
            model = engine_simplecnn("gemm", dtype)
            model.load_state_dict(w0)
            return model.parameters(), engine.optim.Adam(model.parameters(), lr=LR, eps=EPS), model

    def step(params, opt, x):
        opt.zero_grad()
        loss = _pairs_step(params, x, y)
        opt.step()
        return loss

    x = env.dev(x64)
    params, opt, _ = build(env.dtype)

    def run():
        return step(params, opt, x)

    def check():
        params, opt, model = build(env.dtype)
        loss = step(params, opt, x)
        grads = {k: env.host(p.grad) for k, p in model.named_parameters()}
        after = {k: env.host(p.data) for k, p in model.named_parameters()}
        out = {"loss": np.asarray(float(env.host(loss)))}
        out.update(_adam_gap(w0, after, grads))
        params, opt, model = build("float64")
        step(params, opt, env.dev(x64, dtype=np.float64))
        out.update({f"grad.{k}": env.host(p.grad) for k, p in model.named_parameters()})
        return out
    return run, check


def _torch_train(env: Env, w0, x64, y64):
    torch = env.torch
    y = torch.from_numpy(y64).to(env.torch_device)

    def build(dtype):
        model = torch_simplecnn(torch).to(dtype=getattr(torch, dtype), device=env.torch_device)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in w0.items()})
        return model, torch.optim.Adam(model.parameters(), lr=LR, eps=EPS)

    def step(model, opt, x):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    x = env.tdev(x64)
    state = build(env.dtype)

    def run():
        return step(*state, x)

    def check():
        model, opt = build(env.dtype)
        loss = step(model, opt, x)
        grads = {k: env.thost(p.grad) for k, p in model.named_parameters()}
        after = {k: env.thost(p) for k, p in model.named_parameters()}
        out = {"loss": np.asarray(float(loss.detach()))}
        out.update(_adam_gap(w0, after, grads))
        model, opt = build("float64")
        step(model, opt, torch.from_numpy(x64).to(env.torch_device))
        out.update({f"grad.{k}": env.thost(p.grad) for k, p in model.named_parameters()})
        return out
    return run, check


def train_case(env: Env, op: str, s: TrainShape) -> Case:
    rng = np.random.default_rng(_seed(op, s))
    w0 = {k: _rounded(env, v) for k, v in simplecnn_weights(0).items()}
    x64 = _rounded(env, rng.standard_normal((s.n, 1, 28, 28)))
    y64 = rng.integers(0, 10, s.n).astype(np.int64)
    ref = _train_reference(env, w0, x64, y64)
    ident = lambda r: r
    paths = []
    for method in ("strided", "gemm"):
        if env.want(method):
            run, check = _engine_train(env, method, w0, x64, y64)
            paths.append(Path(method, run, ident, check=check, timer=env.engine_timer(),
                              note=f"engine SimpleCNN, Conv2d(method={method!r}), Adam"))
    if env.want("pairs"):
        run, check = _engine_train_pairs(env, w0, x64, y64)
        paths.append(Path("pairs", run, ident, check=check, timer=env.engine_timer(),
                          note="the gemm step through the array-level pairs called by hand, no autograd tape"))
    if env.want("gemm-blas") and native_active(env):
        run, check = _engine_train(env, "gemm", w0, x64, y64)
        paths.append(Path("gemm-blas", _without_kernels(env.backend, run), ident,
                          check=_without_kernels(env.backend, check), timer=env.engine_timer(),
                          note="the gemm step with the C kernels off: im2col/col2im, BLAS, NumPy pooling"))
    if env.torch_device is not None:
        run, check = _torch_train(env, w0, x64, y64)
        paths.append(Path(env.peer_name, run, ident, check=check, role="peer", timer=env.peer_timer(),
                          note="torch.nn SimpleCNN, torch.optim.Adam"))
    if env.inject_broken and paths:
        paths.insert(0, _broken(paths[0]))

    make_naive = None
    if env.want("naive"):
        def make_naive(nb):
            xs, ys = x64[:nb], y64[:nb]
            run, check = _engine_train(env, "naive", w0, xs, ys)
            path = Path("naive", run, ident, check=check, role="naive", timer=env.engine_timer())
            return path, (lambda: _train_reference(env, w0, xs, ys))
    # The loss and Adam's update are checked in the benchmark dtype; the gradients
    # from the same code in float64, because in float32 a max-pool window whose
    # two largest values differ by ~1e-6 can route its gradient to the other
    # pixel (PyTorch does the same), which moves a first-layer gradient by ~1 %.
    tol = env.tol * (10 if env.dtype == "float32" else 100)
    return Case(op, s.name, s.label, s.flops, ref, env.reference_name, paths, batch=s.n,
                make_naive=make_naive, tol=tol, extra={"N": s.n})


# ------------------------------------------------------------------------------ model inference
def resnet18(num_classes: int = 1000, dtype: str = "float32"):
    """ResNet-18 (He et al. 2016) for 224x224 images, built from :mod:`engine.nn` as
    torchvision builds it (7x7/2 stem without bias, batch norm, ReLU, 3x3/2 max
    pooling, four stages of two BasicBlocks: 64, 128, 256, 512 channels, global
    average pooling, linear 512 -> classes), as one ``Sequential``: 11.7M parameters."""
    nn = engine.nn
    layers = [nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False, dtype=dtype), nn.BatchNorm2d(64, dtype=dtype),
              nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    channels = 64
    for stage, out in enumerate((64, 128, 256, 512)):
        for block in range(2):
            layers.append(nn.BasicBlock(channels, out, 2 if stage and not block else 1, dtype=dtype))
            channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes, dtype=dtype)]
    return nn.Sequential(*layers)


def engine_model(name: str, dtype: str, in_channels: int):
    """A zoo model by name (``engine.models``), or ``"resnet18"`` (:func:`resnet18`)."""
    if name == "resnet18":
        return resnet18(dtype=dtype)
    return engine.models.get_model(name, dtype=dtype, in_channels=in_channels)


def torch_twin(torch, module):
    """The same architecture in ``torch.nn``, built from the engine module's own
    settings (layer by layer: Sequential, Conv2d, BatchNorm2d, Linear, pooling,
    activations, Dropout, Flatten, BasicBlock with torchvision's names), so the
    engine's ``state_dict`` loads into it key for key."""
    tnn = torch.nn
    kind = type(module).__name__
    if kind == "Sequential":
        return tnn.Sequential(*(torch_twin(torch, m) for m in module.children()))
    if kind == "Conv2d":
        return tnn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                          module.padding, module.dilation, module.groups, bias=module.bias is not None)
    if kind == "BatchNorm2d":
        return tnn.BatchNorm2d(module.num_features, module.eps, module.momentum)
    if kind == "Linear":
        return tnn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if kind == "MaxPool2d":
        return tnn.MaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation,
                             ceil_mode=module.ceil_mode)
    if kind == "AvgPool2d":
        return tnn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                             module.count_include_pad)
    if kind == "AdaptiveAvgPool2d":
        return tnn.AdaptiveAvgPool2d(module.output_size)
    if kind == "LeakyReLU":
        return tnn.LeakyReLU(module.negative_slope)
    if kind in ("ReLU", "Tanh", "Sigmoid", "Identity"):
        return getattr(tnn, kind)()
    if kind == "Dropout":
        return tnn.Dropout(module.p)
    if kind == "Flatten":
        return tnn.Flatten(module.start_dim, module.end_dim)
    if kind == "BasicBlock":
        return _TorchBasicBlock(torch, module)
    raise NotImplementedError(f"no torch twin for the engine layer {kind}")


def _TorchBasicBlock(torch, block):
    class BasicBlock(torch.nn.Module):
        """torchvision's BasicBlock (conv1, bn1, conv2, bn2, downsample), from the engine's."""

        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = torch_twin(torch, block.conv1), torch_twin(torch, block.bn1)
            self.conv2, self.bn2 = torch_twin(torch, block.conv2), torch_twin(torch, block.bn2)
            self.downsample = None if block.downsample is None else torch_twin(torch, block.downsample)

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))
    return BasicBlock()


def _model_state(name: str, in_channels: int, seed: int = 0) -> dict:
    """float64 weights of the model (engine init, seeded) with batch norm running
    statistics drawn away from 0/1, so eval mode does real arithmetic."""
    engine.manual_seed(seed)
    with engine.use_backend("numpy"):
        model = engine_model(name, "float64", in_channels)
        state = {k: np.array(engine.to_numpy(v)) for k, v in model.state_dict().items()}
    rng = np.random.default_rng(seed)
    for k, v in state.items():
        if k.endswith("running_mean"):
            state[k] = 0.1 * rng.standard_normal(v.shape)
        elif k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 1.5, v.shape)
    return state


def model_case(env: Env, op: str, s: ModelShape) -> Case:
    """Inference (eval mode, no_grad) of a whole model on ``s.n`` images: the engine
    model (gemm convolutions) against its PyTorch twin with the same weights."""
    rng = np.random.default_rng(_seed(op, s.name, s.n, s.chw))
    c = s.chw[0]
    state64 = {k: (_rounded(env, v) if v.dtype.kind == "f" else v) for k, v in _model_state(s.name, c).items()}
    x64 = _rounded(env, rng.standard_normal((s.n,) + tuple(s.chw)))
    if env.ref_torch:
        torch = env.torch
        ref_model = torch_twin(torch, engine_model(s.name, "float64", c)).double().eval()
        ref_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state64.items()})
        with torch.no_grad():
            ref = {"y": ref_model(torch.from_numpy(x64)).numpy()}
    else:
        with engine.use_backend("numpy"):
            ref_model = engine_model(s.name, "float64", c)
            ref_model.load_state_dict(state64)
            ref_model.eval()
            with engine.no_grad():
                ref = {"y": np.asarray(engine.to_numpy(ref_model(x64).data))}
    with engine.use_backend(env.backend.name):
        model = engine_model(s.name, env.dtype, c)
        model.load_state_dict({k: (env.dev(v) if v.dtype.kind == "f" else env.backend.asarray(v))
                               for k, v in state64.items()})
        model.eval()
    x = env.dev(x64)

    def run():
        with engine.no_grad():
            return model(x)
    paths = [Path("gemm", run, lambda y: {"y": env.host(y.data)}, timer=env.engine_timer(),
                  note=("bench.ops.resnet18" if s.name == "resnet18" else f"engine.models.{s.name}") + ", eval, no_grad")]
    if env.torch_device is not None:
        torch = env.torch
        tmodel = torch_twin(torch, engine_model(s.name, "float64", c)).to(
            dtype=getattr(torch, env.dtype), device=env.torch_device).eval()
        tmodel.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state64.items()})
        tx = env.tdev(x64)

        def trun():
            with torch.no_grad():
                return tmodel(tx)
        paths.append(Path(env.peer_name, trun, lambda y: {"y": env.thost(y)}, role="peer",
                          timer=env.peer_timer(), note="the same architecture in torch.nn, same weights, eval"))
    if env.inject_broken:
        paths.insert(0, _broken(paths[0]))
    flops = None
    try:
        with engine.use_backend("numpy"):
            from engine.summary import summary
            flops = float(summary(engine_model(s.name, "float32", c), (s.n,) + tuple(s.chw)).total_flops)
    except Exception:  # noqa: BLE001  (FLOPs are a nicety; the timing stands without them)
        flops = None
    # deep float32 networks drift from float64 by more than one conv does
    return Case(op, s.name, s.label, flops, ref, env.reference_name, paths, batch=s.n,
                tol=env.tol * (10 if env.dtype == "float32" else 1), extra={"N": s.n})


# ------------------------------------------------------------------------------ training epochs
#: Test accuracy each side must reach after the rounds when it trained on at least
#: ``EPOCH_CHECK_SAMPLES`` images (LeNet-5 and SimpleCNN reach 80-90 % on Fashion-MNIST
#: after one epoch; 70 % leaves room for any seed and still catches a side that did not learn).
EPOCH_MIN_ACCURACY = 0.70
EPOCH_CHECK_SAMPLES = 10_000
#: Images of the test split whose initial logits both sides must agree on (the check).
EPOCH_CHECK_IMAGES = 256


class EpochDataError(RuntimeError):
    """The dataset of a ``train_epoch`` case cannot be loaded (absent or corrupt)."""


@functools.lru_cache(maxsize=2)
def epoch_data(dataset: str, data_dir: str | None = None):
    """``(train, test)`` splits of a built-in dataset, loaded once per process, never
    downloaded (a benchmark does not touch the network). Raises :class:`EpochDataError`
    with a one-line reason when they cannot be loaded."""
    from engine.data import DatasetUnavailableError, load_dataset
    try:
        return (load_dataset(dataset, "train", data_dir=data_dir, download=False),
                load_dataset(dataset, "test", data_dir=data_dir, download=False))
    except DatasetUnavailableError as exc:
        from engine.data import cache_dir
        lines = str(exc).splitlines()
        files = [ln.split()[0] for ln in lines if ln.startswith("  ") and ln.split() and "ubyte" in ln.split()[0]]
        raise EpochDataError(f"the {dataset} dataset is not installed ({lines[0].rstrip('.:') if lines else exc}); "
                             f"put {', '.join(files) or 'its files'} into {cache_dir(dataset)} "
                             f"or $ENGINE_DATA/{dataset}, or pass --epoch-data-dir DIR") from None
    except (ValueError, OSError) as exc:
        raise EpochDataError(f"the {dataset} dataset cannot be read: {str(exc).splitlines()[0]}") from None


def epoch_data_problem(shapes) -> str | None:
    """``None`` when every epoch shape's dataset loads, else why not (one line)."""
    for s in shapes:
        try:
            epoch_data(s.dataset, s.data_dir)
        except EpochDataError as exc:
            return str(exc)
    return None


@dataclasses.dataclass
class EpochCase(Case):
    """A ``train_epoch`` case: ``finish(results) -> dict`` evaluates both trained
    models on the test split after the timed rounds, notes their accuracy on
    the rows (a side under :data:`EPOCH_MIN_ACCURACY` becomes WRONG) and returns
    the summary entry (seconds, ratio, accuracies) for :func:`epoch_summary`."""

    finish: Callable | None = None


def epoch_case(env: Env, op: str, s: EpochShape) -> EpochCase:
    """One training epoch of ``s.model`` on ``s.dataset`` (the first ``s.samples``
    training images), batch ``s.n``, Adam ``s.lr``, a fresh shuffle each epoch.

    Engine (path ``gemm``): ``engine.fit(model, CrossEntropyLoss(), Adam, loader,
    epochs=1, progress=False)`` with ``DataLoader(train, s.n, shuffle=True,
    seed=s.seed)`` (uint8 pixels / 255, standardised with the train split's
    mean/std on the fly), exactly what ``python -m engine train`` runs per epoch
    (no validation). PyTorch: the twin (:func:`torch_twin`) with the engine's
    initial ``state_dict``, ``torch.optim.Adam``, the images standardised the same
    way once up front, ``bench.train_torch_fashion.train_epoch`` (index a batch,
    zero_grad, forward, cross-entropy, backward, step, read the loss and the
    correct count). Check: both sides' initial logits on the first
    :data:`EPOCH_CHECK_IMAGES` test images (eval mode) against a float64
    forward of the same weights, so both start equal. Each side's first epoch
    is the checked first call (``1st``); the timed rounds then continue training."""
    from . import train_torch_fashion as ttf
    from engine.training import evaluate, fit
    from engine.data import DataLoader

    train_full, test = epoch_data(s.dataset, s.data_dir)
    train = train_full
    if s.samples is not None:
        if s.samples < 1:
            raise ValueError(f"--epoch-samples must be >= 1, got {s.samples}")
        train = train.subset(slice(0, s.samples))
    n_train = len(train)
    head = test.subset(slice(0, EPOCH_CHECK_IMAGES))
    enn = engine.nn
    with engine.use_backend(env.backend.name):
        engine.manual_seed(s.seed)
        model = engine.models.get_model(s.model, dtype=env.dtype,
                                        in_channels=int(train.images.shape[1]), num_classes=len(train.classes))
        state = {k: np.array(engine.to_numpy(v)) for k, v in model.state_dict().items()}
        loader = DataLoader(train, batch_size=s.n, shuffle=True, seed=s.seed, dtype=env.dtype)
        test_loader = DataLoader(test, batch_size=256, dtype=env.dtype)
        x_head = next(iter(DataLoader(head, batch_size=len(head), dtype="float64")))[0]
        x_head = np.asarray(engine.to_numpy(x_head))
        optimizer = engine.optim.Adam(model.parameters(), lr=s.lr)
    criterion = enn.CrossEntropyLoss()

    # float64 reference of the initial logits: the torch twin in float64, else the engine
    if env.ref_torch:
        torch = env.torch
        ref_model = torch_twin(torch, model).double().eval()
        ref_model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in state.items()})
        with torch.no_grad():
            ref = {"y": ref_model(torch.from_numpy(x_head)).numpy()}
    else:
        with engine.use_backend("numpy"):
            ref_model = engine.models.get_model(s.model, dtype="float64", in_channels=int(train.images.shape[1]),
                                                num_classes=len(train.classes))
            ref_model.load_state_dict({k: v.astype(np.float64) for k, v in state.items()})
            ref_model.eval()
            with engine.no_grad():
                ref = {"y": np.asarray(engine.to_numpy(ref_model(x_head).data))}

    epochs = {"gemm": [], "torch": []}

    def run():
        history = fit(model, criterion, optimizer, loader, epochs=1, progress=False)
        epochs["gemm"].append({"loss": history.loss[-1], "accuracy": history.accuracy[-1]})
        return history

    def check():
        model.eval()
        try:
            with engine.no_grad():
                return model(env.dev(x_head))
        finally:
            model.train()

    tag = f"{s.model}, {n_train:,} images"
    paths = [Path("gemm", run, lambda y: {"y": env.host(y.data)}, check=check, timer=env.engine_timer(),
                  note=f"engine.fit, 1 epoch, DataLoader(shuffle), Adam: {tag}", burst=False)]
    tstate = None
    if env.torch_device is not None:
        torch = env.torch
        tmodel = torch_twin(torch, model).to(dtype=getattr(torch, env.dtype), device=env.torch_device)
        tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
        topt = torch.optim.Adam(tmodel.parameters(), lr=s.lr)
        xtr, ytr = ttf.to_tensor(torch, train)
        xte, yte = ttf.to_tensor(torch, test)
        if env.torch_device != "cpu":
            xtr, ytr, xte, yte = (t.to(env.torch_device) for t in (xtr, ytr, xte, yte))
        gen = torch.Generator().manual_seed(s.seed)
        tstate = (tmodel, xte, yte)

        def trun():
            logs = ttf.train_epoch(torch, tmodel, topt, xtr, ytr, s.n, gen)
            epochs["torch"].append(logs)
            return logs

        def tcheck():
            tmodel.eval()
            try:
                with torch.no_grad():
                    return tmodel(env.tdev(x_head))
            finally:
                tmodel.train()
        paths.append(Path(env.peer_name, trun, lambda y: {"y": env.thost(y)}, check=tcheck, role="peer",
                          timer=env.peer_timer(), note=f"torch.nn twin, same initial weights, torch.optim.Adam: {tag}",
                          burst=False))
    if env.inject_broken:
        paths.insert(0, _broken(paths[0]))

    def finish(results) -> dict:
        checked = n_train >= EPOCH_CHECK_SAMPLES
        entry = {"case": s.name, "model": s.model, "dataset": s.dataset, "train_images": n_train,
                 "whole_split": s.samples is None or s.samples >= len(train_full),
                 "test_images": len(test), "batch": s.n, "lr": s.lr, "target": s.target,
                 "accuracy_checked": checked, "min_accuracy": EPOCH_MIN_ACCURACY if checked else None}
        for res in results:
            side = "engine" if res.path == "gemm" else "torch" if res.role == "peer" else None
            if side is None:
                continue
            entry[f"{side}_status"] = res.status
            entry[f"{side}_first_s"] = None if res.first_ms is None else res.first_ms / 1e3
            entry[f"{side}_epochs_s"] = list(res.times)
            entry[f"{side}_median_s"] = res.median_ms / 1e3 if res.times else None
            if res.status != "ok":
                continue
            if side == "engine":
                with engine.use_backend(env.backend.name):
                    acc = evaluate(model, test_loader, criterion)["accuracy"]
                trained = epochs["gemm"]
            else:
                acc, _ = ttf.accuracy(env.torch, *tstate)
                trained = epochs["torch"]
            entry[f"{side}_test_accuracy"] = acc
            entry[f"{side}_epochs_trained"] = len(trained)
            entry[f"{side}_last_train_loss"] = trained[-1]["loss"] if trained else None
            note = f"test acc {acc:.1%} after {len(trained)} epoch(s)"
            if checked and not acc > EPOCH_MIN_ACCURACY:
                res.status = "WRONG"
                note = f"did not learn: {note} <= {EPOCH_MIN_ACCURACY:.0%}"
            res.note = f"{note}; {res.note}" if res.note else note
        eng, peer = entry.get("engine_median_s"), entry.get("torch_median_s")
        entry["ratio"] = eng / peer if eng and peer else None
        return entry

    label = f"{s.dataset} {n_train} imgs b{s.n} Adam"
    # float32 logits of a fresh network against float64: a few 1e-7 relative
    return EpochCase(op, s.name, label, None, ref, env.reference_name, paths, batch=s.n,
                     tol=env.tol * (10 if env.dtype == "float32" else 1),
                     extra={"N": s.n}, finish=finish)


def epoch_summary(entries: list[dict]) -> str:
    """The epoch suite's verdict lines: median epoch seconds per side, engine/PyTorch,
    the target where the issue sets one, test accuracies."""
    lines = ["epoch summary: median seconds of one training epoch over the timed rounds (engine and "
             "PyTorch alternately, the first epoch of each apart); test accuracy after all epochs"]
    lines.append(f"{'case':<26} {'images':>7} {'engine s':>9} {'torch s':>8} {'ratio':>6} {'target':>14} "
                 f"{'engine acc':>10} {'torch acc':>9}")
    for e in entries:
        ratio, target = e.get("ratio"), e.get("target")
        verdict = "-"
        if target is not None and ratio is not None:
            verdict = (f"<= {target:g}: " + ("PASS" if ratio <= target else "MISS")) if e["whole_split"] \
                else "(subset)"

        def sec(v):
            return "-" if v is None else f"{v:.2f}"

        def pct(v):
            return "-" if v is None else f"{v:.1%}"
        lines.append(f"{e['case'][:26]:<26} {e['train_images']:>7} {sec(e.get('engine_median_s')):>9} "
                     f"{sec(e.get('torch_median_s')):>8} {'-' if ratio is None else f'{ratio:.2f}':>6} "
                     f"{verdict:>14} {pct(e.get('engine_test_accuracy')):>10} {pct(e.get('torch_test_accuracy')):>9}")
    if any(e.get("target") is not None and not e["whole_split"] for e in entries):
        lines.append("(targets are judged on whole-split epochs only, not with --epoch-samples)")
    if any(not e["accuracy_checked"] for e in entries):
        lines.append(f"(accuracy not judged under {EPOCH_CHECK_SAMPLES:,} training images; "
                     f"at or above, a side under {EPOCH_MIN_ACCURACY:.0%} is WRONG)")
    return "\n".join(lines)


def build_case(env: Env, op: str, shape) -> Case:
    if isinstance(shape, ConvShape):
        return conv_case(env, op, shape)
    if isinstance(shape, PoolShape):
        return pool_case(env, op, shape)
    if isinstance(shape, TrainShape):
        return train_case(env, op, shape)
    if isinstance(shape, ModelShape):
        return model_case(env, op, shape)
    if isinstance(shape, EpochShape):
        return epoch_case(env, op, shape)
    raise TypeError(f"unknown shape type {type(shape).__name__}")
