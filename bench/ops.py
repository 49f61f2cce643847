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

The conv input gradient alone (``conv2d_bwd_dx``) is timed by calling the dx
half of the engine's backward directly: on NumPy float32 with the C kernels and
stride 1, ``backends.native_cpu.input_grad``; else ``W^T @ grad`` per workspace
chunk then ``backend.col2im``, exactly the calls ``engine/ops/conv.py``
(``_conv2d_backward_gemm``, dx branch; ``_conv2d_backward_strided`` for the
strided path) makes, checked against the reference dx like every other path.
The weight gradient alone is ``conv2d_backward(..., need_input_grad=False,
has_bias=False)``; PyTorch's are ``aten.convolution_backward`` with the
matching ``output_mask``.
"""
from __future__ import annotations

import contextlib
import math
import types
import zlib

import numpy as np

from .. import backends
import engine
from ..backends import Backend, Window, native_cpu
from ..kernels import native
from engine import ops as F

from .harness import Case, Path
from .suites import ConvShape, PoolShape, TrainShape, sweep_point

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
def _conv_reference(env: Env, op, s: ConvShape, x, w, b, g) -> dict:
    """float64 reference outputs of ``op`` on host arrays."""
    if env.ref_torch:
        torch = env.torch
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
        out = {}
        if op in ("conv2d_fwd", "conv2d_fwdbwd"):
            out["y"] = torch.nn.functional.conv2d(tx, tw, tb, s.stride, s.pad).numpy()
        if op != "conv2d_fwd":
            dx, dw, db = torch.ops.aten.convolution_backward(
                tg, tx, tw, [s.o], [s.stride] * 2, [s.pad] * 2, [1, 1], False, [0, 0], 1, [True, True, True])
            grads = {"dx": dx.numpy(), "dw": dw.numpy(), "db": db.numpy()}
            keep = {"conv2d_bwd": ("dx", "dw", "db"), "conv2d_bwd_dx": ("dx",), "conv2d_bwd_dw": ("dw",),
                    "conv2d_fwdbwd": ("dx", "dw", "db")}[op]
            out.update({k: grads[k] for k in keep})
        return out
    npb = backends.get("numpy")  # the engine itself, in float64, on the host
    with engine.use_backend("numpy"):
        xa, wa, ba, ga = (npb.asarray(a) for a in (x, w, b, g))
        out = {}
        if op in ("conv2d_fwd", "conv2d_fwdbwd"):
            out["y"] = np.asarray(F.conv2d(xa, wa, ba, s.stride, s.pad, method="gemm"))
        if op != "conv2d_fwd":
            dx, dw, db = F.conv2d_backward(ga, xa, wa, s.stride, s.pad, method="gemm")
            grads = {"dx": np.asarray(dx), "dw": np.asarray(dw), "db": np.asarray(db)}
            keep = {"conv2d_bwd": ("dx", "dw", "db"), "conv2d_bwd_dx": ("dx",), "conv2d_bwd_dw": ("dw",),
                    "conv2d_fwdbwd": ("dx", "dw", "db")}[op]
            out.update({k: grads[k] for k in keep})
        return out


def _window(s: ConvShape) -> Window:
    p = s.pad
    return Window(s.k, s.k, s.stride, s.stride, 1, 1, p, p, p, p, s.oh, s.ow)


def _chunks(backend, n, per_image):
    try:  # the engine's own chunking, so the dx path splits the batch as the engine does
        from engine.ops._common import _batch_chunks
        return _batch_chunks(backend, n, per_image)
    except ImportError:
        step = max(1, backend.workspace_bytes() // max(1, per_image))
        return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def conv_dx_gemm(backend, grad_out, weight, x_shape, s: ConvShape):
    """dx alone, as the gemm backward computes it: ``W^T @ g`` then col2im, per chunk."""
    xp = backend.xp
    n, c, h, w = x_shape
    o, kc = weight.shape[0], weight.shape[1] * s.k * s.k
    win = _window(s)
    w_t = xp.permute_dims(xp.reshape(weight, (o, kc)), (1, 0))
    dx = xp.empty((n, c, h, w), dtype=grad_out.dtype, device=_device(grad_out))
    per_image = kc * s.oh * s.ow * (8 if grad_out.dtype == xp.float64 else 4)
    for part in _chunks(backend, n, per_image):
        nb = part.stop - part.start
        g = xp.reshape(xp.permute_dims(grad_out[part, ...], (1, 0, 2, 3)), (o, nb * s.oh * s.ow))
        dx[part, ...] = backend.col2im(xp.matmul(w_t, g), (nb, c, h, w), win)
    return dx


def conv_dx_engine(backend, grad_out, weight, x_shape, s: ConvShape):
    """dx alone, as the engine's gemm backward computes it: on NumPy float32 with the C
    kernels, the forward kernel on the flipped weights (stride 1); else :func:`conv_dx_gemm`."""
    if backend.name == "numpy" and getattr(backend, "use_native_kernels", False):
        dx = native_cpu.input_grad(grad_out, weight, tuple(x_shape), _window(s), 1)
        if dx is not None:
            return dx
    return conv_dx_gemm(backend, grad_out, weight, x_shape, s)


def conv_dx_strided(backend, grad_out, weight, x_shape, s: ConvShape):
    """dx alone, as the strided backward computes it: ``tensordot(W, g)`` then col2im."""
    xp = backend.xp
    n, c, _, _ = x_shape
    dcol = xp.tensordot(weight, grad_out, axes=([0], [1]))  # (C, kh, kw, N, OH, OW)
    return backend.col2im(xp.reshape(dcol, (c * s.k * s.k, n * s.oh * s.ow)), tuple(x_shape), _window(s))


def _device(x):
    from array_api_compat import device
    return device(x)


def _engine_conv_run(env: Env, op, method, s: ConvShape, x, w, b, g):
    st, pd = s.stride, s.pad
    be = env.backend
    if op == "conv2d_fwd":
        return (lambda: F.conv2d(x, w, b, st, pd, method=method)), (lambda y: {"y": env.host(y)})
    if op == "conv2d_bwd":
        return ((lambda: F.conv2d_backward(g, x, w, st, pd, method=method)),
                (lambda r: {"dx": env.host(r[0]), "dw": env.host(r[1]), "db": env.host(r[2])}))
    if op == "conv2d_bwd_dw":
        return ((lambda: F.conv2d_backward(g, x, w, st, pd, method=method, need_input_grad=False,
                                           has_bias=False)),
                (lambda r: {"dw": env.host(r[1])}))
    if op == "conv2d_bwd_dx":
        fn = conv_dx_strided if method == "strided" else conv_dx_engine
        return (lambda: fn(be, g, w, tuple(x.shape), s)), (lambda dx: {"dx": env.host(dx)})
    if op == "conv2d_fwdbwd":
        def run():
            y = F.conv2d(x, w, b, st, pd, method=method)
            return (y,) + tuple(F.conv2d_backward(g, x, w, st, pd, method=method))
        return run, (lambda r: {"y": env.host(r[0]), "dx": env.host(r[1]), "dw": env.host(r[2]),
                                "db": env.host(r[3])})
    raise ValueError(op)


def _torch_conv_run(env: Env, op, s: ConvShape, x, w, b, g):
    torch = env.torch
    tx, tw, tb, tg = (env.tdev(a) for a in (x, w, b, g))
    st, pd = [s.stride] * 2, [s.pad] * 2
    conv_bwd = torch.ops.aten.convolution_backward
    th = env.thost
    if op == "conv2d_fwd":
        def run():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, s.stride, s.pad)
        return run, (lambda y: {"y": th(y)})
    if op in ("conv2d_bwd", "conv2d_bwd_dx", "conv2d_bwd_dw"):
        mask = {"conv2d_bwd": [True, True, True], "conv2d_bwd_dx": [True, False, False],
                "conv2d_bwd_dw": [False, True, False]}[op]
        keys = [k for k, m in zip(("dx", "dw", "db"), mask) if m]

        def run():
            return conv_bwd(tg, tx, tw, [s.o], st, pd, [1, 1], False, [0, 0], 1, mask)
        return run, (lambda r: {k: th(t) for k, t in zip(("dx", "dw", "db"), r) if k in keys})
    if op == "conv2d_fwdbwd":
        xr, wr, br = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

        def run():
            y = torch.nn.functional.conv2d(xr, wr, br, s.stride, s.pad)
            dx, dw, db = torch.autograd.grad(y, (xr, wr, br), tg)
            return y, dx, dw, db
        return run, (lambda r: {"y": th(r[0]), "dx": th(r[1]), "dw": th(r[2]), "db": th(r[3])})
    raise ValueError(op)


def _bare_gemm(env: Env, op, s: ConvShape, rng, use_kernels: bool, name="GEMM", role="gemm"):
    """The op's own GEMMs on random contiguous operands, in the engine's layouts:
    forward ``W (O, K) @ col (K, P)``; dW ``g (O, P) @ col.T``; dx ``W.T @ g``.
    ``use_kernels``: through the C kernels' ``gemm_f32``, with each operand laid
    out contiguously as that GEMM reads it best (they are random anyway)."""
    xp = env.xp
    m, p, k = s.gemm_mnk

    def rand(*shape):
        return env.dev(rng.standard_normal(shape, dtype=np.float32))
    a, col = rand(m, k), rand(k, p)
    gm = rand(m, p) if op != "conv2d_fwd" else None
    if use_kernels:
        mm, col_t, a_t = native_cpu.matmul, rand(p, k), rand(k, m)
        t = lambda arr, axes: {id(col): col_t, id(a): a_t}[id(arr)]  # noqa: E731
        what = "C kernels' gemm_f32"
    else:
        mm, t, what = xp.matmul, xp.permute_dims, "xp.matmul"
    if op == "conv2d_fwd":
        run = lambda: mm(a, col)
        desc = f"({m}x{k}) @ ({k}x{p})"
    elif op == "conv2d_bwd_dw":
        run = lambda: mm(gm, t(col, (1, 0)))
        desc = f"({m}x{p}) @ ({p}x{k})"
    elif op == "conv2d_bwd_dx":
        run = lambda: mm(t(a, (1, 0)), gm)
        desc = f"({k}x{m}) @ ({m}x{p})"
    elif op == "conv2d_bwd":
        run = lambda: (mm(gm, t(col, (1, 0))), mm(t(a, (1, 0)), gm))
        desc = "dW + dx GEMMs"
    else:
        run = lambda: (mm(a, col), mm(gm, t(col, (1, 0))), mm(t(a, (1, 0)), gm))
        desc = "forward + dW + dx GEMMs"
    return Path(name, run, None, role=role, timer=env.engine_timer(), workspace=k * p * env.itemsize,
                note=f"bare {what} {desc}, M={m} N={p} K={k}; not checked (random operands)")


OP_FLOPS = {"conv2d_fwd": 1, "conv2d_bwd": 2, "conv2d_bwd_dx": 1, "conv2d_bwd_dw": 1, "conv2d_fwdbwd": 3}
NAIVE_OPS = ("conv2d_fwd", "conv2d_bwd", "conv2d_fwdbwd")


def conv_case(env: Env, op: str, s: ConvShape) -> Case:
    rng = np.random.default_rng(_seed(op, s))
    x64 = _rounded(env, rng.standard_normal((s.n, s.c, s.h, s.w)))
    w64 = _rounded(env, rng.standard_normal((s.o, s.c, s.k, s.k)) / math.sqrt(s.c * s.k * s.k))
    b64 = _rounded(env, 0.1 * rng.standard_normal(s.o))
    g64 = _rounded(env, rng.standard_normal((s.n, s.o, s.oh, s.ow)))
    ref = _conv_reference(env, op, s, x64, w64, b64, g64)
    x, w, b, g = (env.dev(a) for a in (x64, w64, b64, g64))

    per_image = s.c * s.k * s.k * s.oh * s.ow * env.itemsize
    pointwise = s.k == 1 and s.stride == 1 and s.pad == 0
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
            note = "dx half of the engine's backward called directly"
        elif method == "gemm" and native_active(env):
            note = "C kernels: im2col inside the GEMM's packing"
        paths.append(Path(method, run, outputs, timer=env.engine_timer(), workspace=ws, note=note))
    if env.torch_device is not None:
        run, outputs = _torch_conv_run(env, op, s, x64, w64, b64, g64)
        paths.append(Path(env.peer_name, run, outputs, role="peer", timer=env.peer_timer()))
    paths.append(_bare_gemm(env, op, s, rng, native_active(env)))
    if native_active(env):
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
                        workspace=nb * s.c * s.k * s.k * env.itemsize)
            return path, (lambda: _conv_reference(env, op, sub, xs, w64, b64, gs))

    extra = {"N": s.n, "C": s.c, "H": s.h, "W": s.w, "O": s.o, "k": s.k, "stride": s.stride, "pad": s.pad,
             "gemm_M": s.gemm_mnk[0], "gemm_N": s.gemm_mnk[1], "gemm_K": s.gemm_mnk[2]}
    sp = sweep_point(s)
    if sp:
        extra["sweep_axis"], extra["sweep_value"] = sp
    return Case(op, s.name, s.label, OP_FLOPS[op] * s.flops, ref, env.reference_name, paths, batch=s.n,
                make_naive=make_naive, naive_workspace=s.n * s.c * s.k * s.k * env.itemsize, tol=env.tol,
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


def build_case(env: Env, op: str, shape) -> Case:
    if isinstance(shape, ConvShape):
        return conv_case(env, op, shape)
    if isinstance(shape, PoolShape):
        return pool_case(env, op, shape)
    if isinstance(shape, TrainShape):
        return train_case(env, op, shape)
    raise TypeError(f"unknown shape type {type(shape).__name__}")
