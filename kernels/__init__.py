"""CUDA kernels: the ``.cu`` sources of this package and the one loader for them.

The sources are package data, read with :mod:`importlib.resources`. Each holds
templated ``__device__`` bodies and one ``extern "C"`` entry point per element
type: ``<kernel>_f32`` (float32), ``<kernel>_f64`` (float64) and ``<kernel>_f16``
(float16 storage, float32 accumulation).

Each kernel comes in two variants: ``<kernel>`` with 64-bit indices and one
thread per element (any size), and ``<kernel>_i32`` with 32-bit indices, which
does its index divisions once per thread and walks the window taps (see the
sources); it serves tensors whose every index fits in 32 bits
(:func:`fits_int32`). Both give the same bits; the CuPy backend picks one per
call (``CupyBackend.kernel_variant``).

Pure Python, importable without CuPy (the compile and host-shim tests use it):

* :data:`SOURCES`, :func:`source_names`, :func:`entry_points`, :func:`entry_name`,
  :func:`read_source`, :func:`compile_options`, :func:`cupy_nvrtc_options`;
* the argument packers ``*_args``: the exact parameter list of each entry point,
  with every scalar as its exact NumPy type (``np.int64`` for ``long long``,
  ``np.int32`` for ``int``; ``narrow=True`` packs the sizes of an ``_i32``
  entry point as ``np.int32``), shared by the CuPy backend and the host-shim tests;
* :func:`fits_int32`, :func:`variant_name`, :func:`loop_extent`, :func:`launch_config`.

With CuPy (imported lazily): :func:`get_kernel` compiles a source with NVRTC
(``cupy.RawModule``) on first use and caches the module and the kernel once
per device and dtype (``cupy.memoize(for_each_device=True)``).
"""
from __future__ import annotations

import functools
import re
from importlib import resources

import numpy as np

#: The kernels, each with a 64-bit (``name``) and a 32-bit (``name_i32``) variant.
KERNELS_BY_SOURCE: dict[str, tuple[str, ...]] = {
    "conv.cu": ("im2col", "col2im"),
    "pool.cu": ("max_pool2d_forward", "max_pool2d_backward",
                "avg_pool2d_forward", "avg_pool2d_backward"),
}
#: Suffix of the 32-bit variant of a kernel.
I32 = "_i32"
#: Kernel source file -> every kernel it defines (each in every dtype of DTYPES).
SOURCES: dict[str, tuple[str, ...]] = {
    source: names + tuple(name + I32 for name in names) for source, names in KERNELS_BY_SOURCE.items()
}
#: Largest index a 32-bit kernel may form.
INT32_MAX = 2**31 - 1
#: Supported element types -> entry-point suffix.
DTYPES: dict[str, str] = {"float32": "f32", "float64": "f64", "float16": "f16"}
#: Threads per block of every launch.
BLOCK = 256

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


def source_names() -> list[str]:
    """File names of the kernel sources, e.g. ``["conv.cu", "pool.cu"]``."""
    return list(SOURCES)


def source_of(kernel: str) -> str:
    """The source file that defines ``kernel`` (e.g. ``"im2col"`` -> ``"conv.cu"``)."""
    for name, kernels in SOURCES.items():
        if kernel in kernels:
            return name
    known = ", ".join(k for ks in SOURCES.values() for k in ks)
    raise ValueError(f"unknown kernel {kernel!r}; known kernels are {known}")


def dtype_name(dtype) -> str:
    """``"float32"``, ``"float64"`` or ``"float16"`` for any spelling of those dtypes."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise TypeError(f"the CUDA kernels support {', '.join(DTYPES)}; got dtype {name}")
    return name


def entry_name(kernel: str, dtype) -> str:
    """Name of the ``extern "C"`` entry point of ``kernel`` for ``dtype``."""
    source_of(kernel)
    return f"{kernel}_{DTYPES[dtype_name(dtype)]}"


def entry_points(source: str, fp16: bool = True) -> list[str]:
    """Every entry point of ``source`` (those of float16 only if ``fp16``)."""
    if source not in SOURCES:
        raise ValueError(f"unknown kernel source {source!r}; sources are {', '.join(SOURCES)}")
    return [entry_name(k, d) for k in SOURCES[source] for d in DTYPES
            if fp16 or d != "float16"]


@functools.lru_cache(maxsize=None)
def read_source(name: str) -> str:
    """Text of kernel source ``name``, with its local ``#include "..."`` files inlined.

    Inlining keeps compilation independent of include paths (NVRTC sees one
    self-contained string); system headers (``<cuda_fp16.h>``) are left as they are.
    """
    return _expand(name, ())


def _expand(name: str, stack: tuple[str, ...]) -> str:
    if name in stack:
        raise ValueError(f"kernel sources include each other in a cycle: {' -> '.join(stack + (name,))}")
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")

    def inline(match: re.Match) -> str:
        return f'// ---- begin "{match[1]}" ----\n{_expand(match[1], stack + (name,))}' \
               f'// ---- end "{match[1]}" ----'

    return _INCLUDE.sub(inline, text)


def compile_options(dtype) -> tuple[str, ...]:
    """Compiler options for the module that serves ``dtype``.

    float32/float64 modules are built with ``-DKERNELS_NO_FP16`` so that they
    never need the ``cuda_fp16.h`` header; the float16 module includes it.
    """
    return () if dtype_name(dtype) == "float16" else ("-DKERNELS_NO_FP16",)


def variant_name(kernel: str, narrow: bool) -> str:
    """``"im2col"`` -> ``"im2col_i32"`` when ``narrow``, else ``"im2col"``."""
    base = kernel[:-len(I32)] if kernel.endswith(I32) else kernel
    source_of(base)
    return base + I32 if narrow else base


def fits_int32(x_shape, win, out_elems: int) -> bool:
    """True when every index a ``_i32`` kernel forms fits in a 32-bit int.

    ``x_shape`` is the image ``(N, C, H, W)``, ``out_elems`` the element count
    of the other buffer (the column matrix, or the pooled output). Besides the
    two buffers' sizes, the padded coordinates (``o * s + k * d`` and the like)
    must fit.
    """
    n, c, h, w = (int(v) for v in x_shape)
    extent_h = h + win.pad_top + win.pad_bottom + (win.oh + 1) * win.sh + (win.kh + 1) * win.dh
    extent_w = w + win.pad_left + win.pad_right + (win.ow + 1) * win.sw + (win.kw + 1) * win.dw
    return max(n * c * h * w, int(out_elems), extent_h, extent_w,
               win.kh * win.kw) <= INT32_MAX


def loop_extent(kernel: str, x_shape, win) -> int:
    """How many threads' worth of work the grid-stride loop of ``kernel`` covers."""
    n, c, h, w = (int(v) for v in x_shape)
    base = variant_name(kernel, False)
    if base == "im2col":
        taps = 1 if kernel.endswith(I32) else win.kh * win.kw
        return c * taps * n * win.oh * win.ow
    if base.endswith("_forward"):
        return n * c * win.oh * win.ow
    return n * c * h * w  # col2im and the pooling backwards: one thread per image element


def cupy_nvrtc_options(options, arch: str, include_dirs=(), ptx: bool = False) -> list[str]:
    """The option list CuPy 14 hands NVRTC for ``cupy.RawModule(code=..., options=options)``.

    Read from CuPy v14.2.0: ``assemble_cupy_compiler_options`` (cupy/_core/core.pyx)
    puts its bundled CCCL include folders first, then ``options``, then
    ``--std=c++17`` (unless a standard is given) and the include folders of
    CuPy and of the CUDA headers; ``_compile_with_cache_cuda``
    (cupy/cuda/compiler.py) appends ``-ftz=true``; the NVRTC call appends
    ``-arch=sm_XX`` (``compute_XX`` under ``CUPY_COMPILE_WITH_PTX=1``) and
    ``--device-as-default-execution-space``. ``include_dirs`` stands in for the
    include folders (here: where ``cuda_fp16.h`` is). ``arch`` is e.g. ``"80"``.
    The compile test uses this list without a GPU; the GPU run records the list
    CuPy really passed (``bench/gpu_bench.py compile``).
    """
    out = list(options)
    if not any(o.startswith(("-std=", "--std=")) for o in out):
        out.append("--std=c++17")
    out += [f"-I{d}" for d in include_dirs]
    out.append("-ftz=true")
    out.append(f"-arch={'compute' if ptx else 'sm'}_{arch}")
    out.append("--device-as-default-execution-space")
    return out


def launch_config(total: int, max_blocks: int, block: int = BLOCK) -> tuple[int, int]:
    """``(grid, block)`` for a grid-stride loop over ``total`` elements."""
    if total <= 0:
        raise ValueError(f"a launch needs at least one element, got total={total}")
    return int(max(1, min(-(-total // block), max_blocks))), int(block)


# -- argument packing: the parameter lists of conv.cu and pool.cu ------------------

def _sizes_and_window(x_shape, win, narrow: bool) -> tuple:
    n, c, h, w = (int(v) for v in x_shape)
    size = np.int32 if narrow else np.int64
    if narrow and max(n, c, h, w, win.oh, win.ow) > INT32_MAX:
        raise ValueError(f"a size of x_shape {tuple(x_shape)} or of the output "
                         f"({win.oh}, {win.ow}) does not fit the 32-bit kernels")
    return (*(size(v) for v in (n, c, h, w, win.oh, win.ow)),
            *(np.int32(v) for v in (win.kh, win.kw, win.sh, win.sw, win.dh, win.dw,
                                    win.pad_top, win.pad_left)))


def im2col_args(x, col, x_shape, win, narrow: bool = False) -> tuple:
    """Arguments of ``im2col_*``: x (N, C, H, W) -> col (C*kh*kw, N*OH*OW)."""
    return (x, col, *_sizes_and_window(x_shape, win, narrow))


def col2im_args(col, x, x_shape, win, narrow: bool = False) -> tuple:
    """Arguments of ``col2im_*``: col (C*kh*kw, N*OH*OW) -> x (N, C, H, W)."""
    return (col, x, *_sizes_and_window(x_shape, win, narrow))


def max_pool2d_forward_args(x, y, argmax, x_shape, win, narrow: bool = False) -> tuple:
    """Arguments of ``max_pool2d_forward_*``: x -> y, argmax (int64), both (N, C, OH, OW)."""
    return (x, y, argmax, *_sizes_and_window(x_shape, win, narrow))


def max_pool2d_backward_args(grad_out, argmax, grad_in, x_shape, win, narrow: bool = False) -> tuple:
    """Arguments of ``max_pool2d_backward_*``: grad_out, argmax -> grad_in (N, C, H, W)."""
    return (grad_out, argmax, grad_in, *_sizes_and_window(x_shape, win, narrow))


def avg_pool2d_forward_args(x, divisor, y, x_shape, win, narrow: bool = False) -> tuple:
    """Arguments of ``avg_pool2d_forward_*``: x, divisor (OH, OW) -> y (N, C, OH, OW)."""
    return (x, divisor, y, *_sizes_and_window(x_shape, win, narrow))


def avg_pool2d_backward_args(grad_out, divisor, grad_in, x_shape, win, narrow: bool = False) -> tuple:
    """Arguments of ``avg_pool2d_backward_*``: grad_out, divisor (OH, OW) -> grad_in."""
    return (grad_out, divisor, grad_in, *_sizes_and_window(x_shape, win, narrow))


# -- the loader (CuPy) --------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _loader():
    import cupy  # lazily: the rest of this module works without it

    @cupy.memoize(for_each_device=True)
    def module(source: str, fp16: bool):
        options = compile_options("float16" if fp16 else "float32")
        return cupy.RawModule(code=read_source(source), options=options)

    @cupy.memoize(for_each_device=True)
    def kernel(name: str, dtype: str):
        source = source_of(name)
        try:
            return module(source, dtype == "float16").get_function(entry_name(name, dtype))
        except cupy.cuda.compiler.CompileException as exc:
            hint = ""
            if dtype == "float16" and "cuda_fp16" in str(exc):
                hint = ("; float16 kernels need the CUDA headers (cuda_fp16.h): install CuPy "
                        "with its CUDA components, pip install \".[cuda12]\" or "
                        "pip install \".[cuda13]\" (cupy-cudaXXx[ctk]), or set CUDA_PATH "
                        "to a CUDA toolkit")
            raise RuntimeError(f"compiling kernels/{source} for {dtype} failed{hint}:\n{exc}") from exc

    return kernel


def get_kernel(kernel: str, dtype):
    """The compiled ``cupy.RawKernel`` of ``kernel`` for ``dtype`` on the current device.

    Compiled on first use (NVRTC), then cached once per device and dtype.
    """
    return _loader()(kernel, dtype_name(dtype))
