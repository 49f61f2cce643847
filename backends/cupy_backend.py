"""CuPy backend: NVIDIA GPUs through CuPy, with CUDA kernels (kernels/*.cu) for
im2col/col2im and pooling, and cuBLAS (through CuPy) for the GEMMs.

Importing this module never fails: without CuPy, or without a CUDA device, the
constructor raises :class:`BackendUnavailableError` saying which, and how to
install (``pip install ".[cuda12]"`` or ``pip install ".[cuda13]"``).

Kernel launches check dtype (float16/32/64), shapes and the window before
launching, make inputs contiguous (a RawKernel reads raw memory), and pass
every scalar as its exact NumPy type (``kernels.*_args``). Each kernel has a
64-bit and a 32-bit variant (``kernels/*.cu``); :attr:`CupyBackend.kernel_variant`
says which serves a call.
"""
from __future__ import annotations

import os

import numpy as np

from .. import kernels

from .base import Backend, BackendUnavailableError, Window

try:
    import cupy as _cupy
    from array_api_compat import cupy as _xp_cupy
except Exception as exc:  # ImportError mostly; kept to explain the failure when the backend is asked for
    _cupy = _xp_cupy = None
    _import_error: BaseException | None = exc
else:
    _import_error = None

_INSTALL = ('install CuPy with: pip install ".[cuda12]" (NVIDIA driver for CUDA 12) '
            'or pip install ".[cuda13]" (CUDA 13)')
_FLOATS = ("float16", "float32", "float64")
_INT32_MAX = 2**31 - 1
_DLPACK_GPU = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
#: Values of CupyBackend.kernel_variant (and of the ENGINE_CUDA_KERNELS variable).
KERNEL_VARIANTS = ("auto", "i64")


class CupyBackend(Backend):
    """NVIDIA GPUs through CuPy.

    ``kernel_variant``: ``"auto"`` (default) launches the 32-bit kernels
    (``*_i32``: index divisions once per thread, window taps walked) whenever
    every index of the call fits in 32 bits (``kernels.fits_int32``) and the
    64-bit ones otherwise; ``"i64"`` always launches the 64-bit per-element
    kernels. Both give the same bits; the environment variable
    ``ENGINE_CUDA_KERNELS`` sets it when the backend is made.

    ``keep_columns_bytes``: how many bytes of im2col columns a conv layer may
    keep from its forward for its backward; by default
    ``keep_columns_fraction`` (a quarter) of the device's free memory at the
    time of the forward, the memory pool's cached blocks counted as free.
    Assign a number of bytes to fix it, ``None`` to go back to the default.
    """

    name = "cupy"
    xp = _xp_cupy
    host_memory = False
    #: Share of the free device memory the kept im2col columns of one conv call may take.
    keep_columns_fraction = 0.25

    def __init__(self):
        if _cupy is None:
            raise BackendUnavailableError(
                f"the 'cupy' backend needs CuPy, which could not be imported "
                f"({type(_import_error).__name__}: {_import_error}); {_INSTALL}")
        try:
            count = _cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device
            raise BackendUnavailableError(
                f"the 'cupy' backend found no usable CUDA device: CuPy {_cupy.__version__} is "
                f"installed, but asking for devices failed ({type(exc).__name__}: {exc}). Check "
                f"the NVIDIA driver (nvidia-smi), and that CuPy matches its CUDA major version; "
                f"{_INSTALL}") from exc
        if count < 1:
            raise BackendUnavailableError(
                f"the 'cupy' backend found no CUDA device: CuPy {_cupy.__version__} is installed "
                f"but the driver reports 0 devices (check nvidia-smi and CUDA_VISIBLE_DEVICES); "
                f"{_INSTALL}")
        self.xp = _xp_cupy
        self._generator = None  # device random generator, see reseed()/uniform()
        self._max_blocks: dict[int, int] = {}
        self._keep_columns_limit: int | None = None
        self.kernel_variant = os.environ.get("ENGINE_CUDA_KERNELS", "auto")

    @property
    def kernel_variant(self) -> str:
        """``"auto"`` (32-bit kernels where every index fits) or ``"i64"`` (64-bit always)."""
        return self._kernel_variant

    @kernel_variant.setter
    def kernel_variant(self, value: str) -> None:
        if value not in KERNEL_VARIANTS:
            raise ValueError(f"kernel_variant must be one of {', '.join(map(repr, KERNEL_VARIANTS))} "
                             f"(also the values of ENGINE_CUDA_KERNELS), got {value!r}")
        self._kernel_variant = value

    # -- arrays -------------------------------------------------------------
    def owns(self, x) -> bool:
        return isinstance(x, _cupy.ndarray)

    def asarray(self, data, dtype=None):
        dtype = _np_dtype(dtype)
        if not self.owns(data) and not isinstance(data, np.ndarray) and hasattr(data, "__dlpack__"):
            device_type = data.__dlpack_device__()[0] if hasattr(data, "__dlpack_device__") else 1
            data = _cupy.from_dlpack(data) if int(device_type) in _DLPACK_GPU else np.from_dlpack(data)
        return _cupy.asarray(data, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return _cupy.asnumpy(x) if self.owns(x) else np.asarray(x)

    def synchronize(self) -> None:
        _cupy.cuda.Device().synchronize()

    @property
    def default_workspace_bytes(self) -> int:
        """A quarter of the free memory of the current device (the memory pool's
        cached free blocks count as free), at least 8 MiB."""
        return max(8 << 20, _free_device_bytes() // 4)

    @property
    def keep_columns_bytes(self) -> int:
        """Largest im2col columns (bytes, whole batch) a conv call keeps for its
        backward: the set limit, else ``keep_columns_fraction`` of the free
        device memory now (the CPU backends' fixed 32 MiB would make every
        large layer build its columns twice)."""
        if self._keep_columns_limit is not None:
            return self._keep_columns_limit
        return int(self.keep_columns_fraction * _free_device_bytes())

    @keep_columns_bytes.setter
    def keep_columns_bytes(self, value: int | None) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"keep_columns_bytes must be a number of bytes >= 0 (0 keeps "
                                 f"nothing) or None (the default share of free device memory), "
                                 f"got {value!r}")
            value = int(value)
        self._keep_columns_limit = value

    # -- random numbers ------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Seed the device generator (``engine.manual_seed`` calls this)."""
        self._generator = _cupy.random.default_rng(int(seed))

    def uniform(self, shape, dtype, rng: np.random.Generator):
        """Uniform [0, 1) samples drawn on the device (cupy.random).

        The numbers differ from the host backends'. Unless :meth:`reseed` was
        called, the device generator is seeded once from ``rng``, so a run
        seeded with ``engine.manual_seed`` is reproducible either way.
        """
        if self._generator is None:
            self._generator = _cupy.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        dt = _np_dtype(dtype) or np.dtype(np.float64)
        if dt.name in ("float32", "float64"):
            return self._generator.random(shape, dtype=dt)
        return self._generator.random(shape, dtype=np.float32).astype(dt)

    def index_add(self, target, key, values):
        """Scatter-add on the device (``cupyx.scatter_add``; repeated indices add up)."""
        import cupyx
        cupyx.scatter_add(target, key, values)
        return target

    # -- windows -------------------------------------------------------------
    def sliding_windows(self, x_padded, win: Window):
        """View ``(N, C, OH, OW, kh, kw)`` of a padded input (do not write to it:
        CuPy has no read-only arrays)."""
        x_padded = _cupy.ascontiguousarray(x_padded)
        _check_window(win)
        n, c, hp, wp = x_padded.shape
        need_h = (win.oh - 1) * win.sh + win.dh * (win.kh - 1) + 1
        need_w = (win.ow - 1) * win.sw + win.dw * (win.kw - 1) + 1
        if need_h > hp or need_w > wp:
            raise ValueError(f"sliding_windows: the windows need a padded input of at least "
                             f"{need_h}x{need_w}, got {hp}x{wp} (pad with pad2d first)")
        s_n, s_c, s_h, s_w = x_padded.strides
        return _cupy.lib.stride_tricks.as_strided(
            x_padded, shape=(n, c, win.oh, win.ow, win.kh, win.kw),
            strides=(s_n, s_c, s_h * win.sh, s_w * win.sw, s_h * win.dh, s_w * win.dw))

    def im2col(self, x, win: Window):
        x = self._input(x, "im2col: x", ndim=4)
        _check_window(win)
        n, c, _, _ = x.shape
        rows, cols = c * win.kh * win.kw, n * win.oh * win.ow
        with _device_of(x):
            try:
                col = _cupy.empty((rows, cols), dtype=x.dtype)
            except _cupy.cuda.memory.OutOfMemoryError as exc:
                raise MemoryError(
                    f"im2col: out of GPU memory for the {rows} x {cols} {x.dtype} column buffer "
                    f"({rows * cols * x.dtype.itemsize:,} bytes) of input {tuple(x.shape)}; "
                    f"lower the workspace limit (backend.workspace_limit = <bytes>; now "
                    f"{self.workspace_bytes()} bytes) or the batch size ({exc})") from exc
            narrow = self._narrow(x.shape, win, col.size)
            self._launch("im2col", narrow, x.dtype, x.shape, win,
                         kernels.im2col_args(x, col, x.shape, win, narrow))
        return col

    def col2im(self, col, x_shape, win: Window):
        col = self._input(col, "col2im: col")
        _check_window(win)
        n, c, h, w = _shape4(x_shape, "col2im: x_shape")
        rows, cols = c * win.kh * win.kw, n * win.oh * win.ow
        if tuple(col.shape) not in ((rows, cols), (c, win.kh, win.kw, n, win.oh, win.ow)):
            raise ValueError(f"col2im: col has shape {tuple(col.shape)}, expected ({rows}, {cols}) "
                             f"= (C*kh*kw, N*OH*OW) for x_shape {(n, c, h, w)} and window {win}")
        with _device_of(col):
            x = _cupy.empty((n, c, h, w), dtype=col.dtype)
            narrow = self._narrow(x.shape, win, col.size)
            self._launch("col2im", narrow, col.dtype, x.shape, win,
                         kernels.col2im_args(col, x, x.shape, win, narrow))
        return x

    # -- pooling -------------------------------------------------------------
    def max_pool2d(self, x, win: Window):
        x = self._input(x, "max_pool2d: x", ndim=4)
        _check_window(win)
        n, c, _, _ = x.shape
        with _device_of(x):
            y = _cupy.empty((n, c, win.oh, win.ow), dtype=x.dtype)
            idx = _cupy.empty((n, c, win.oh, win.ow), dtype=np.int64)
            narrow = self._narrow(x.shape, win, y.size)
            self._launch("max_pool2d_forward", narrow, x.dtype, x.shape, win,
                         kernels.max_pool2d_forward_args(x, y, idx, x.shape, win, narrow))
        return y, idx

    def max_pool2d_backward(self, grad_out, idx, x_shape, win: Window):
        _check_window(win)
        n, c, h, w = _shape4(x_shape, "max_pool2d_backward: x_shape")
        out_shape = (n, c, win.oh, win.ow)
        g = self._input(grad_out, "max_pool2d_backward: grad_out", shape=out_shape)
        if not self.owns(idx):
            raise TypeError(f"max_pool2d_backward: idx must be a CuPy array, got {type(idx).__name__}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"max_pool2d_backward: idx must hold integers, got dtype {idx.dtype}")
        if tuple(idx.shape) != out_shape:
            raise ValueError(f"max_pool2d_backward: idx has shape {tuple(idx.shape)}, "
                             f"expected {out_shape}")
        with _device_of(g):
            idx = _cupy.ascontiguousarray(idx.astype(np.int64, copy=False))
            gx = _cupy.empty((n, c, h, w), dtype=g.dtype)
            narrow = self._narrow(gx.shape, win, g.size)
            self._launch("max_pool2d_backward", narrow, g.dtype, gx.shape, win,
                         kernels.max_pool2d_backward_args(g, idx, gx, gx.shape, win, narrow))
        return gx

    def avg_pool2d(self, x, win: Window, divisor):
        x = self._input(x, "avg_pool2d: x", ndim=4)
        _check_window(win)
        n, c, _, _ = x.shape
        with _device_of(x):
            d = self._divisor(divisor, win, x.dtype, "avg_pool2d")
            y = _cupy.empty((n, c, win.oh, win.ow), dtype=x.dtype)
            narrow = self._narrow(x.shape, win, y.size)
            self._launch("avg_pool2d_forward", narrow, x.dtype, x.shape, win,
                         kernels.avg_pool2d_forward_args(x, d, y, x.shape, win, narrow))
        return y

    def avg_pool2d_backward(self, grad_out, x_shape, win: Window, divisor):
        _check_window(win)
        n, c, h, w = _shape4(x_shape, "avg_pool2d_backward: x_shape")
        g = self._input(grad_out, "avg_pool2d_backward: grad_out", shape=(n, c, win.oh, win.ow))
        with _device_of(g):
            d = self._divisor(divisor, win, g.dtype, "avg_pool2d_backward")
            gx = _cupy.empty((n, c, h, w), dtype=g.dtype)
            narrow = self._narrow(gx.shape, win, g.size)
            self._launch("avg_pool2d_backward", narrow, g.dtype, gx.shape, win,
                         kernels.avg_pool2d_backward_args(g, d, gx, gx.shape, win, narrow))
        return gx

    # -- launching -----------------------------------------------------------
    def _input(self, x, what: str, *, ndim: int | None = None, shape=None):
        """``x`` as a contiguous CuPy array of a kernel dtype, or a clear error."""
        if not self.owns(x):
            raise TypeError(f"{what} must be a CuPy array (on the GPU), got "
                            f"{type(x).__module__}.{type(x).__name__}; move it with backend.asarray")
        if x.dtype.name not in _FLOATS:
            raise TypeError(f"{what}: the CUDA kernels support {', '.join(_FLOATS)}, "
                            f"got dtype {x.dtype}")
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{what} must be {ndim}-D (N, C, H, W), got shape {tuple(x.shape)}")
        if shape is not None and tuple(x.shape) != tuple(shape):
            raise ValueError(f"{what} has shape {tuple(x.shape)}, expected {tuple(shape)}")
        with _device_of(x):
            return _cupy.ascontiguousarray(x)

    def _divisor(self, divisor, win: Window, dtype, what: str):
        """The divisor as a contiguous ``(OH, OW)`` array of ``dtype`` on the current device."""
        d = _cupy.asarray(divisor, dtype=dtype)
        try:
            d = _cupy.broadcast_to(d, (win.oh, win.ow))
        except ValueError:
            raise ValueError(f"{what}: divisor of shape {tuple(d.shape)} does not broadcast to the "
                             f"output positions ({win.oh}, {win.ow})") from None
        return _cupy.ascontiguousarray(d)

    def _narrow(self, x_shape, win: Window, other_elems: int) -> bool:
        """Launch the 32-bit variant for this call?"""
        return self._kernel_variant == "auto" and kernels.fits_int32(x_shape, win, other_elems)

    def _launch(self, kernel: str, narrow: bool, dtype, x_shape, win: Window, args: tuple) -> None:
        name = kernels.variant_name(kernel, narrow)
        total = kernels.loop_extent(name, x_shape, win)
        if total == 0:
            return
        device = _cupy.cuda.Device()
        max_blocks = self._max_blocks.get(device.id)
        if max_blocks is None:
            try:
                sms = int(_cupy.cuda.runtime.getDeviceProperties(device.id)["multiProcessorCount"])
            except Exception:
                sms = 128
            max_blocks = self._max_blocks[device.id] = 32 * max(sms, 1)
        grid, block = kernels.launch_config(total, max_blocks)
        kernels.get_kernel(name, dtype)((grid,), (block,), args)


def _free_device_bytes() -> int:
    """Free memory of the current device, the memory pool's cached free blocks included."""
    free, _total = _cupy.cuda.runtime.memGetInfo()
    return int(free) + int(_cupy.get_default_memory_pool().free_bytes())


def _device_of(x):
    """Context manager making the device that holds ``x`` current."""
    return _cupy.cuda.Device(x.data.device_id)


def _np_dtype(dtype):
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(getattr(dtype, "name", str(dtype)))


def _shape4(shape, what: str) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(f"{what} must be (N, C, H, W), got {tuple(shape)}")
    return tuple(int(v) for v in shape)


def _check_window(win: Window) -> None:
    """Kernel parameters are 32-bit ints; sizes and steps must make sense."""
    positive = {k: getattr(win, k) for k in ("kh", "kw", "sh", "sw", "dh", "dw")}
    nonneg = {k: getattr(win, k) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right",
                                           "oh", "ow")}
    bad = [f"{k}={v}" for k, v in positive.items() if not 1 <= v <= _INT32_MAX]
    bad += [f"{k}={v}" for k, v in nonneg.items() if not 0 <= v <= _INT32_MAX]
    if bad:
        raise ValueError(f"invalid window {win}: {', '.join(bad)} (kernel sizes, strides and "
                         f"dilations must be >= 1, paddings and output sizes >= 0, all < 2**31)")


BACKEND_CLASS = CupyBackend
