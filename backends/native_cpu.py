"""The NumPy backend's float32 convolutions, max pooling and ReLU through the C
kernels of ``kernels/cpu_conv.c``: for convolutions, im2col folded into the
GEMM's packing, so the column matrix never exists, on the machine's own
AVX-512 units.

Each function returns ``None`` where the kernels do not apply (another dtype,
an empty array, no compiled library, offsets past 32 bits); the caller then
takes the NumPy path. Work is split over the C thread pool (``native_calls``,
``kernels/cpu_pool.c``) so that every output element is summed in the same order whatever
the thread count: output pixels for the forward and the input gradient, fixed shares of
the batch for the weight gradient, planes for pooling.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..kernels import native

from . import host_threads, native_calls
from .base import Window
from .native_calls import START, STOP

#: Multiply-adds a thread must get before a call is split (a hand-off through the C pool
#: costs a few microseconds, a sleeping worker's wake-up tens).
MIN_MACS_PER_THREAD = 1 << 20
#: Elements a thread must get before a streaming kernel (ReLU, pooling) is split.
MIN_ELEMENTS_PER_THREAD = 1 << 16
_INT32_MAX = (1 << 31) - 1
#: Output pixels (all images of a share together) below which the weight gradient takes
#: fewer than DW_BATCH_PARTS shares.
DW_PIXELS_A_PART = 768
#: An input gradient with fewer than 4 channels a group takes the NumPy path when the
#: frame of dY it would pack from is larger than this (about L2).
FEW_ROWS_FRAME_BYTES = 1 << 20
#: The most floats of image frames the batched forward holds at once (16 MiB).
BATCH_FRAME_FLOATS = 1 << 22
#: When stride-1 layers with at most two row panels of output channels a group take the
#: direct kernel of ``kernels/cpu_direct.c`` (the same bits as the GEMM path): ``"auto"``
#: where its cost model says it wins, ``"always"`` wherever it serves, ``"never"``.
DIRECT = "auto"
#: When layers with 9-64 output channels a group (AVX-512) take the kernel with the output
#: channels in the vector (``conv2d_fwd_cv_f32``, the same bits as the GEMM path): ``"auto"``
#: where its cost model says it wins (``cv_wins``), ``"always"`` wherever it serves, ``"never"``.
CHANNEL_VECTOR = "auto"
#: When 3x3 stride-1 layers (forward, and the stride-1 input gradient) take Winograd's
#: F(2x2, 3x3) of ``kernels/cpu_winograd.c`` (2.25x fewer multiply-adds, other rounding
#: than the GEMM path): ``"auto"`` where its cost model says it wins (``wino_wins``),
#: ``"always"`` wherever it serves, ``"never"``.
WINOGRAD = "auto"
#: When a GEMM forward (or an input gradient run as one) packs its weights block by block as
#: the tiles go, straight from W, instead of in a pass of its own before
#: (``conv2d_fwd_split_inline_f32``, the same bits): ``"auto"`` for one image of at most
#: :data:`INLINE_PACK_PANELS` column panels whose threads each take their own output channels
#: (or one thread), where every weight meets one run of panels and the pass would only write
#: A to memory and read it back (9.4 MB each way for 512 channels, 3x3); ``"always"`` wherever
#: the batch is one image; ``"never"``.
INLINE_PACK = "auto"
INLINE_PACK_PANELS = 8
#: A depthwise stride-1 input gradient (one output channel a group) runs as the forward of dY
#: with the flipped taps (``dw_conv_fwd_f32``) where the kernel reaches this many pixels past
#: its first (5x5, 7x7, a dilated 3x3) or the output is this wide; else the input-gradient
#: loops (``dw_conv_dx_f32``). Measured, 2 threads: EfficientNet's 5x5 at 14x14 0.45 -> 0.34 ms,
#: ConvNeXt's 7x7 at 56x56 3.1-3.5 -> 2.6-2.9, MobileNet's 3x3 at 56x56 (batch 64) 17 -> 16;
#: a 3x3 at 14x14 (batch 64, 512 channels) the other way, 2.7-3.0 against 3.2-3.4.
DW_DX_AS_FORWARD_SPAN = 4
DW_DX_AS_FORWARD_WIDTH = 56
#: Whether depthwise stride-1 forwards with a 3x3, 5x5 or 7x7 kernel and rows wider than a
#: vector (AVX-512) compute blocks of output rows, each loaded vector of the frame multiplied
#: into every row that reads it (``dwk_plane_blocked``, the same bits), rather than one vector
#: load per multiply-add: ConvNeXt's 7x7 at 56x56 3.0 -> 1.9 ms
#: (``bench/results/dw-row-blocks-20261207.txt``).
DW_ROW_BLOCKS = True
#: Depthwise forwards (one channel a group in and out) with a 3x3, 5x5 or 7x7 kernel at stride 1
#: or 2 (AVX-512) that lay 16 channels out pixel by pixel and compute each output pixel as one
#: vector of the 16 channels (``dwc_forward``, the same bits): ``"auto"`` where that serves (not
#: a 3x3 at stride 1 on rows wider than 32, nor channels that fill less than 3/4 of their
#: vectors), ``"always"`` wherever the kernel can, ``"never"``. EfficientNet's 5x5 at 14x14
#: 0.37 -> 0.21 ms, its 5x5/2 at 56x56 1.6 -> 0.8, MobileNet's 3x3/2 at 112x112 2.8 -> 1.8
#: (``bench/results/dw-channel-vectors-20261207.txt``).
DW_CHANNEL_VECTORS = "auto"
_DW_CHANNEL_VECTOR_BITS = {"never": 0, "auto": 2, "always": 6}  # dw_conv_fwd_f32's kinds
#: When the weight gradient of a layer with few input channels a group runs as dot products
#: along output rows (``kernels/cpu_dw_rows.c``, any stride and dilation: no packing; other
#: rounding than the GEMM path): ``"auto"`` where :func:`_dw_rows_wins` says so, ``"always"``
#: wherever the C kernels run, ``"never"``. Measured, 2 threads
#: (``bench/results/dw-rows-20261207.txt``): 3 or 8 channels on rows of 28-224 pixels
#: 0.32-0.82x the GEMM path's time (ResNet-20's conv1 0.45, VGG's CIFAR conv1 0.64, the 7x7/2
#: stem 0.82); one grey channel 0.60-0.90x the depthwise loops' (SimpleCNN's conv1 0.65,
#: LeNet-5's C1 0.81); 16 or more channels, or rows of 7-10 pixels (7 or 10 of 16 lanes),
#: 1.07-3.8x.
DW_ROWS = "auto"
DW_ROWS_CHANNELS = 8
DW_ROWS_OUTPUTS = 4  # a tile's output channels (depthwise layers, with one, keep their loops)
DW_ROWS_FILL = 0.85
#: The weight gradient sums this many fixed shares of the batch apart, then adds them up
#: (8: an even split for 1, 2, 4 or 8 threads).
DW_BATCH_PARTS = 8


def _dw_parts(n: int, pixels: int) -> int:
    """Shares of the batch the weight gradient sums apart: :data:`DW_BATCH_PARTS`, fewer (at
    least 2) when the batch has few pixels in all, so that each share is long enough for the
    kernel to take several small images as one reduction, and fewer partial dW to add. The
    shapes alone decide, never the thread count."""
    return _even_shares(max(2, min(DW_BATCH_PARTS, n * pixels // DW_PIXELS_A_PART)))


def _even_shares(k: int) -> int:
    """The largest power of two <= k (k >= 1): shares that 2, 4 or 8 threads take evenly
    (3 shares on 2 threads leave one thread a third of the work idle: the weight gradient
    of Inception's 7x1 layer at batch 8 took 1.43x PyTorch's time with 3, 1.20x with 2)."""
    return 1 << (k.bit_length() - 1)


_F32 = np.dtype(np.float32)


def _lib(*arrays):
    """The library, for float32 arrays with no empty axis (those take the NumPy path)."""
    for a in arrays:  # a loop and a dtype object: a third of the time of any() over np.float32
        if a is None or a.dtype != _F32 or a.size == 0:
            return None
    return native.library()


#: How many entries each of this module's caches (plans, geometries) keeps before it starts again.
_MAX_PLANS = 512


def _keep(cache: dict, key, value):
    """``cache[key] = value``, emptying a full cache first (:data:`_MAX_PLANS`); returns ``value``."""
    if len(cache) >= _MAX_PLANS:
        cache.clear()
    cache[key] = value
    return value


#: Convolution geometries by shapes, window and groups (:func:`_geometry`).
_geometries: dict = {}


def _geometry(x_shape, o, win: Window, groups: int):
    """The kernels' geometry array of a convolution, made once per shapes, window and groups
    and shared: the kernels only read it (``const i64 *g``)."""
    key = (tuple(x_shape), o, win, groups)
    geom = _geometries.get(key)
    if geom is None:
        n, c, h, w = x_shape
        geom = _keep(_geometries, key, np.array([n, c, h, w, o, win.kh, win.kw, win.sh, win.sw, win.dh, win.dw,
                                                 win.pad_top, win.pad_left, win.oh, win.ow, groups], dtype=np.int64))
    return geom


#: ``(geometry, its address, items)`` of the depthwise loops' calls, by :func:`_geometry`'s key
#: and the library (a batch-1 first layer spent 2 of its 12 us of Python making them).
_dw_plans: dict = {}


def _dw_plan(lib, x_shape, o, win: Window, groups: int):
    key = (id(lib), tuple(x_shape), o, win, groups)
    plan = _dw_plans.get(key)
    if plan is None:
        geom = _geometry(x_shape, o, win, groups)
        geom_ptr = _ptr(geom)
        plan = _keep(_dw_plans, key, (geom, geom_ptr, lib.dw_items(geom_ptr)))
    return plan


def _offsets_fit(x_shape, win: Window, groups: int) -> bool:
    """The kernels index one image's padded channels with 32-bit offsets."""
    c = x_shape[1] // groups
    hp = (win.oh - 1) * win.sh + win.dh * (win.kh - 1) + 1
    wp = (win.ow - 1) * win.sw + win.dw * (win.kw - 1) + 1
    return c * hp * wp <= _INT32_MAX


def _frame_pixels(win: Window) -> int:
    hp = (win.oh - 1) * win.sh + win.dh * (win.kh - 1) + 1
    wp = (win.ow - 1) * win.sw + win.dw * (win.kw - 1) + 1
    return hp * wp


def _images_a_panel_row(lib, n: int, pixels: int, frame_floats: int) -> int:
    """How many images' pixels the forward's column panels run across: 1 when one image's
    pixels nearly fill whole panels of NR columns; else the fewest images (frames within
    :data:`BATCH_FRAME_FLOATS`, offsets within 32 bits) that leave at most 5% of the panels'
    columns idle, or the best of those tried."""
    nr = lib.native_nr()
    def idle(b):
        return 1 - b * pixels / (-(-b * pixels // nr) * nr)
    if idle(1) <= 0.05:
        return 1
    best = 1
    for b in range(2, n + 1):
        if b * frame_floats > BATCH_FRAME_FLOATS or b * frame_floats >= _INT32_MAX:
            break
        if idle(b) < idle(best):
            best = b
        if idle(b) <= 0.05:
            break
    return best


def _share_load(cols: tuple, tail: tuple, planes: int, tail_planes: int, row_panels: int, threads: int,
                ob: int) -> float:
    """The work of the busiest of ``threads`` contiguous, equal-count shares of the forward's
    items (plane, block of ``ob``, panel) over an even split's. ``cols`` are the columns of a
    plane's panels, ``tail`` those of the last ``tail_planes`` planes (a short last chunk of
    images; zeros for its empty panels); an item's work is its columns times its rows."""
    rows = [row_panels * (b + 1) // ob - row_panels * b // ob for b in range(ob)]

    def prefix(cs):
        within = [0]
        for r in rows:
            for c in cs:
                within.append(within[-1] + r * c)
        return within
    full, last = prefix(cols), prefix(tail)
    head, per_plane = planes - tail_planes, ob * len(cols)

    def done(i):  # work of the first i items
        p, j = divmod(i, per_plane)
        if p < head:
            return p * full[-1] + full[j]
        return head * full[-1] + (p - head) * last[-1] + (last[j] if p < planes else 0)
    bounds = [0] + [part.stop for part in host_threads.split(planes * per_plane, threads)]
    return max(done(b) - done(a) for a, b in zip(bounds, bounds[1:])) / (done(planes * per_plane) / threads)


def _channel_blocks(cols: tuple, tail: tuple, planes: int, tail_planes: int, row_panels: int,
                    threads: int) -> tuple:
    """``(blocks, score)``: how many blocks of row panels (output channels) the forward cuts each
    column panel into, so that the threads' equal-count shares of the items carry nearly equal
    work: :func:`_share_load` plus 1% a block past the first (each block packs the panels of B
    again), made least; 1 on one thread. VGG conv4_2 at batch 1 (784 pixels: 16 panels and
    one of 16 columns) split by panels gave 2 threads 9 and 7.3 panels; cut in 2, each thread
    takes every panel for half the channels (and reads half of the weights). The sums do not
    depend on the blocks, so neither do the bits."""
    if threads <= 1:
        return 1, 1.0
    best, best_score = 1, None
    for ob in range(1, min(row_panels, 4 * threads) + 1):
        score = _share_load(cols, tail, planes, tail_planes, row_panels, threads, ob) + 0.01 * (ob - 1)
        if best_score is None or score < best_score - 1e-9:
            best, best_score = ob, score
    return best, best_score


@functools.lru_cache(maxsize=256)
def _split_plan(batch: int, nr: int, n: int, pixels: int, frame_floats: int, frame_limit: int, groups: int,
                row_panels: int, threads: int) -> tuple:
    """``(batch, blocks)`` for the GEMM forward: images a panel row (``batch``, the fewest that
    fill the panels, or, on several threads when it leaves a short last chunk, the fewest more
    that divide ``n`` and fill them as well, if the shares come out more even: 8 images of
    17x17 by 3 are chunks of 3, 3 and 2, which 2 threads share as 4.6 and 3.4 images, by 4
    evenly) and blocks of output channels (:func:`_channel_blocks`). Shapes and threads
    decide, never the bits: every output is summed the same way in any case."""
    def fill(b):
        return b * pixels / (-(-b * pixels // nr) * nr)
    candidates = [batch]
    if batch > 1 and threads > 1 and n % batch:
        for b in range(batch + 1, n + 1):
            if b * frame_floats > frame_limit or b * frame_floats >= _INT32_MAX:
                break
            if n % b == 0 and fill(b) >= min(0.95, fill(batch)):
                candidates.append(b)
                break
    best = None
    for b in candidates:
        cols = tuple(min(nr, b * pixels - j) for j in range(0, b * pixels, nr))
        last = n - (-(-n // b) - 1) * b  # images in the last chunk
        tail = tuple(max(0, min(nr, last * pixels - j)) for j in range(0, b * pixels, nr))
        blocks, score = _channel_blocks(cols, tail, -(-n // b) * groups, groups, row_panels, threads)
        if best is None or score < best[0] - 1e-9:
            best = (score, b, blocks)
    return best[1], best[2]


_ptr = native_calls.address
_ptr_or_none = native_calls.address_or_none


def _ok(rc: int, what: str) -> None:
    if rc != 0:
        raise MemoryError(f"{what}: the C kernels (kernels/cpu_conv.c) could not allocate their scratch "
                          f"memory; free some memory, or use smaller batches")


def _run(lib, name: str, args, extent: int, macs: int, what: str | None = None) -> None:
    """Entry point ``name`` over ``[0, extent)`` on the C pool (``args`` as for
    :func:`native_calls.run`), one thread per ``MIN_MACS_PER_THREAD`` multiply-adds; a
    nonzero result (a failed allocation) raises, naming ``what``."""
    rc = native_calls.run(lib, name, args, extent, native_calls.threads_for(extent, macs, MIN_MACS_PER_THREAD))
    if what is not None:
        _ok(rc, what)


def _stream(lib, name: str, args, extent: int, elements: int, what: str | None = None) -> None:
    """:func:`_run` for kernels bound by memory: one thread per ``MIN_ELEMENTS_PER_THREAD``
    elements read or written."""
    rc = native_calls.run(lib, name, args, extent,
                          native_calls.threads_for(extent, elements, MIN_ELEMENTS_PER_THREAD))
    if what is not None:
        _ok(rc, what)


def _direct(x_shape, groups: int) -> bool:
    """One input channel a group (depthwise, any channel multiplier): the direct loops of
    ``kernels/cpu_depthwise.c``, not the GEMM, whose 8-row tiles would be mostly idle."""
    return x_shape[1] == groups


def forward(x, weight, bias, win: Window, groups: int):
    """``y (N, O, OH, OW)`` in float32, bias added, or ``None``."""
    lib = _lib(x, weight) if bias is None or bias.dtype == np.float32 else None
    if lib is None or not _offsets_fit(x.shape, win, groups):
        return None
    n, o = x.shape[0], weight.shape[0]
    # Contiguous copies held in names: a temporary would be freed before the C call reads it.
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    bias = np.ascontiguousarray(bias) if bias is not None else None
    bias_ptr = _ptr_or_none(bias)
    if _direct(x.shape, groups):
        geom, geom_ptr, items = _dw_plan(lib, x.shape, o, win, groups)  # geom held while the kernel reads it
        y = np.empty((n, o, win.oh, win.ow), dtype=np.float32)

        # items: (image, group) in order
        _run(lib, "dw_conv_fwd_f32", (_ptr(x), _ptr(weight), bias_ptr, _ptr(y), START, STOP, geom_ptr,
                                      int(DW_ROW_BLOCKS) | _DW_CHANNEL_VECTOR_BITS[DW_CHANNEL_VECTORS]),
             items, y.size * (weight.size // o), "conv2d")
        return y

    plan = _forward_plan(lib, tuple(x.shape), tuple(weight.shape), win, groups)

    def pack(packed):
        entry = "wino_pack_weights_f32" if plan.entry == WINO_ENTRY else "pack_weights_part_f32"
        return entry, (_ptr(weight), plan.geom_ptr, _ptr(packed), START, STOP)
    return _forward_packed(lib, x, plan, bias_ptr, pack, (weight, plan.geom_ptr, None, None))


def _takes(setting: str, serves, wins, geom_ptr) -> bool:
    """Whether a special forward kernel runs, by its setting (:data:`DIRECT`,
    :data:`CHANNEL_VECTOR`): ``"always"`` wherever it ``serves``, ``"auto"`` where its
    cost model ``wins``, ``"never"``."""
    if setting == "always":
        return bool(serves(geom_ptr))
    return setting == "auto" and bool(wins(geom_ptr))


class _ForwardPlan:
    """What a GEMM forward of one geometry does, worked out once (:func:`_forward_plan`): the
    geometry array and its address, the packed weights' size, the kernel, its items and parts."""
    __slots__ = ("geom", "geom_ptr", "out_shape", "packed_size", "panels", "pack_parts", "entry", "items",
                 "extra", "parts", "inline")


#: Plans by shapes and the settings they depend on; a batch-1 forward spends more time
#: deciding than multiplying when each decision is a ctypes call.
_plans: dict = {}


def _forward_plan(lib, x_shape, weight_shape, win: Window, groups: int) -> _ForwardPlan:
    """The plan of the GEMM forward of ``x_shape`` with weights of ``weight_shape`` (cached)."""
    inside = bool(getattr(host_threads._inside, "worker", False))
    key = (id(lib), x_shape, weight_shape, win, groups, DIRECT, CHANNEL_VECTOR, WINOGRAD,
           host_threads.get_num_threads(), inside, MIN_MACS_PER_THREAD, MIN_ELEMENTS_PER_THREAD, BATCH_FRAME_FLOATS,
           _split_plan, INLINE_PACK)  # tests patch _split_plan
    plan = _plans.get(key)
    if plan is not None:
        return plan
    n, o = x_shape[0], weight_shape[0]
    plan = _ForwardPlan()
    plan.geom = _geometry(x_shape, o, win, groups)
    plan.geom_ptr = gp = _ptr(plan.geom)
    plan.out_shape = (n, o, win.oh, win.ow)
    plan.panels = lib.weight_panels(gp)
    macs = n * win.oh * win.ow * math.prod(weight_shape)
    threads = 1 if inside else min(host_threads.get_num_threads(), max(1, macs // MIN_MACS_PER_THREAD))
    if _takes(WINOGRAD, lib.wino_serves, lib.wino_wins, gp):  # 3x3 stride 1: 16 GEMMs of transformed tiles
        kblocks = _wino_channel_blocks(groups, lib.wino_blocks(gp), n * -(-win.oh // 2) * -(-win.ow // 2),
                                       lib.native_nr(), plan.panels // groups, threads)
        plan.entry, plan.items, plan.extra = WINO_ENTRY, lib.wino_items(gp, kblocks), (kblocks,)
    elif _takes(CHANNEL_VECTOR, lib.cv_serves, lib.cv_wins, gp):  # 9-64 output channels: 1-4 vectors a pixel
        plan.entry, plan.items, plan.extra = "conv2d_fwd_cv_f32", lib.cv_items(gp), ()
    elif _takes(DIRECT, lib.direct_serves, lib.direct_wins, gp):  # stride 1, few output channels: no packing
        plan.entry, plan.items, plan.extra = "conv2d_fwd_direct_f32", lib.direct_items(gp), ()
    else:
        # Panels that threads would share unevenly (few of them, a narrow last one, a short
        # last chunk of images): another number of images a panel row, or each panel's output
        # channels cut into blocks of row panels too; the sums, and so the bits, are the same
        # either way.
        pixels, frame_floats = win.oh * win.ow, (x_shape[1] // groups) * _frame_pixels(win)
        batch, blocks = _split_plan(_images_a_panel_row(lib, n, pixels, frame_floats), lib.native_nr(), n, pixels,
                                    frame_floats, BATCH_FRAME_FLOATS, groups, -(-(o // groups) // 8), threads)
        if batch > 1:
            # items: (images, group, block of channels, a panel of their output pixels): panels run across images
            plan.entry, plan.items = "conv2d_fwd_batched_f32", lib.fwd_batched_items(gp, batch) * blocks
            plan.extra = (batch, blocks)
        else:
            # items: (image, group, block of channels, a panel of output pixels) in order
            plan.entry, plan.items, plan.extra = "conv2d_fwd_split_f32", lib.fwd_items(gp) * blocks, (blocks,)
    plan.parts = native_calls.threads_for(plan.items, macs, MIN_MACS_PER_THREAD)
    plan.inline = plan.entry == "conv2d_fwd_split_f32" and n == 1 and (INLINE_PACK == "always" or (
        INLINE_PACK == "auto" and lib.fwd_items(gp) // groups <= INLINE_PACK_PANELS
        and (plan.extra[0] > 1 or plan.parts == 1)))
    # Winograd's kernel takes the weights transformed (U, 16 points a kernel); the others packed
    plan.packed_size = (lib.wino_packed_size if plan.entry == WINO_ENTRY else lib.packed_weights_size)(gp)
    plan.pack_parts = native_calls.threads_for(plan.panels, 2 * plan.packed_size, MIN_ELEMENTS_PER_THREAD)
    return _keep(_plans, key, plan)


WINO_ENTRY = "conv2d_fwd_wino_f32"
#: What each forward entry point is, in words (the benchmark's notes).
KERNEL_WORDS = {
    WINO_ENTRY: "Winograd F(2x2,3x3): 16 GEMMs of transformed tiles",
    "conv2d_fwd_cv_f32": "output channels in the vector",
    "conv2d_fwd_direct_f32": "direct stride-1 tile, no packing",
    "conv2d_fwd_batched_f32": "im2col inside the GEMM's packing, panels across images",
    "conv2d_fwd_split_f32": "im2col inside the GEMM's packing",
    "dw_conv_fwd_f32": "depthwise loops",
}


def forward_kernel(x_shape, weight_shape, win: Window, groups: int) -> str | None:
    """The entry point a float32 forward of these shapes takes now (settings, threads), or
    ``None`` without the C kernels."""
    lib = native.library()
    if lib is None or not _offsets_fit(x_shape, win, groups):
        return None
    if _direct(x_shape, groups):
        return "dw_conv_fwd_f32"
    return _forward_plan(lib, tuple(x_shape), tuple(weight_shape), win, groups).entry


@functools.lru_cache(maxsize=256)
def _wino_channel_blocks(groups: int, blocks: int, tiles: int, nr: int, row_panels: int, threads: int) -> int:
    """Blocks of output channels a Winograd tile block is cut into, so that the threads'
    contiguous, equal-count shares of the items (group, tile block, channel block) carry nearly
    equal work (tiles times row panels); each block past the first transforms the tiles'
    patches again (2% a block in the score). 1 on one thread. The sums do not depend on it."""
    if threads <= 1:
        return 1
    cols = [tiles * (b + 1) // blocks - tiles * b // blocks for b in range(blocks)] * groups
    best, best_score = 1, None
    for kb in range(1, min(row_panels, 4 * threads) + 1):
        rows = [row_panels * (b + 1) // kb - row_panels * b // kb for b in range(kb)]
        work = [c * r for c in cols for r in rows]
        bounds = [0] + [part.stop for part in host_threads.split(len(work), threads)]
        busiest = max(sum(work[a:b]) for a, b in zip(bounds, bounds[1:]))
        score = busiest / (sum(work) / threads) + 0.02 * (kb - 1)
        if best_score is None or score < best_score - 1e-9:
            best, best_score = kb, score
    return best


def _forward_packed(lib, x, plan: _ForwardPlan, bias_ptr, pack, inline):
    """The GEMM forward of contiguous float32 ``x`` by ``plan``, with weights that the entry
    point and arguments ``pack(packed)`` returns write into ``packed`` as the kernels' row
    panels (items (group, panel of 8 output channels)); the panels are packed on the pool's
    threads (a copy, so the bits do not depend on the split). Where the plan packs as the
    tiles go (``plan.inline``), the kernel packs from ``inline``: ``(weight, the address of
    its convolution's geometry, ys, xs)``, ys and xs the taps of an input gradient's transposed
    weights, or ``None`` for the forward's own."""
    if plan.inline:
        weight, weight_geom_ptr, ys, xs = inline
        taps = (None, 0, None, 0) if ys is None else (_ptr(ys), len(ys), _ptr(xs), len(xs))
        y = np.empty(plan.out_shape, dtype=np.float32)
        args = (_ptr(x), _ptr(weight), bias_ptr, _ptr(y), START, STOP, plan.geom_ptr) + plan.extra + (
            weight_geom_ptr,) + taps
        _ok(native_calls.run(lib, "conv2d_fwd_split_inline_f32", args, plan.items, plan.parts), "conv2d")
        return y
    packed = np.empty(plan.packed_size, dtype=np.float32)
    entry, args = pack(packed)
    _ok(native_calls.run(lib, entry, args, plan.panels, plan.pack_parts), "conv2d")
    y = np.empty(plan.out_shape, dtype=np.float32)
    args = (_ptr(x), _ptr(packed), bias_ptr, _ptr(y), START, STOP, plan.geom_ptr) + plan.extra
    _ok(native_calls.run(lib, plan.entry, args, plan.items, plan.parts), "conv2d")
    return y


#: Whether the weight gradient's GEMM writes dW in W's own (c, ky, kx) column order: "auto"
#: (where the batch has at most :data:`DW_W_ORDER_PIXELS` pixels per output channel of a
#: group), "always" or "never". In W's order each vector of taps is gathered from the frame;
#: in the other, (ky, kx, c), it is one load, and dW is transposed afterwards: one pass over
#: dW, which costs as much as the GEMM where the batch has few pixels (ResNet layer4 at batch
#: 1: 4.1 ms -> 1.9), while with a 3x3 or larger kernel the gathers take 0.96-1.69x the time of
#: the loads and the transpose at 6-8192 pixels per channel (``bench/results/dw-order-20261207.txt``).
#: The bits are the same.
DW_W_ORDER = "auto"
DW_W_ORDER_PIXELS = 2


def _dw_in_w_order(pixels: int, og: int) -> bool:
    """Whether dW of a batch with ``pixels`` output pixels in all and ``og`` output channels a
    group is computed in W's column order (:data:`DW_W_ORDER`)."""
    if DW_W_ORDER in ("always", "never"):
        return DW_W_ORDER == "always"
    return pixels <= DW_W_ORDER_PIXELS * og


def _dw_rows_wins(lib, x_shape, weight_shape, win: Window, groups: int) -> bool:
    """Whether dW runs as dot products along output rows (:data:`DW_ROWS`): at most
    :data:`DW_ROWS_CHANNELS` input channels and at least :data:`DW_ROWS_OUTPUTS` output
    channels a group, on output rows that fill at least :data:`DW_ROWS_FILL` of the vectors
    they take."""
    lanes = lib.native_isa() // 32
    return (x_shape[1] // groups <= DW_ROWS_CHANNELS and weight_shape[0] // groups >= DW_ROWS_OUTPUTS
            and win.ow / (-(-win.ow // lanes) * lanes) >= DW_ROWS_FILL)


def weight_grad(grad_out, x, weight_shape, win: Window, groups: int):
    """``dW`` with ``weight_shape``, summed over the batch, or ``None``."""
    lib = _lib(grad_out, x)
    if lib is None or not _offsets_fit(x.shape, win, groups):
        return None
    geom = _geometry(x.shape, weight_shape[0], win, groups)
    x, grad_out = np.ascontiguousarray(x), np.ascontiguousarray(grad_out)
    o, cg, kh, kw = weight_shape
    n = x.shape[0]
    macs = grad_out.size * cg * kh * kw
    if (DW_ROWS == "always" or (DW_ROWS == "auto" and _dw_rows_wins(lib, x.shape, weight_shape, win, groups))) \
            and lib.dw_rows_serves(_ptr(geom)):
        dw = np.empty(weight_shape, dtype=np.float32)
        _run(lib, "conv2d_dw_rows_f32", (_ptr(x), _ptr(grad_out), _ptr(dw), START, STOP, _ptr(geom)),
             lib.dw_rows_items(_ptr(geom)), macs, "conv2d backward")
        return dw
    if _direct(x.shape, groups):
        # each weight summed over the whole batch by one item, images in order; items are
        # groups, or blocks of a group's output channels where there are few groups (one
        # input channel: one group), so that threads share the layer; the same bits either way
        og = o // groups
        per_item = og if groups >= 8 else -(-og // min(og, 8 // groups))
        dw = np.empty(weight_shape, dtype=np.float32)

        _run(lib, "dw_conv_dw_f32", (_ptr(x), _ptr(grad_out), _ptr(dw), START, STOP, per_item, _ptr(geom)),
             groups * -(-og // per_item), macs, "conv2d backward")
        return dw
    # The batch is cut into fixed shares (_dw_parts; fewer for a smaller batch; one large
    # image: shares of its pixels), each summed into its own partial dW, and the partials
    # are added in order afterwards: a thread frames and packs only its own share, and the
    # order of the sums depends on the shapes alone, never on the thread count.
    pixels = win.oh * win.ow
    w_order = _dw_in_w_order(n * pixels, o // groups)
    columns = (cg, kh, kw) if w_order else (kh, kw, cg)  # the kernels' column order of dW

    def as_weight(dw):  # (O, *columns) -> (O, C/groups, kh, kw)
        return dw if w_order else np.ascontiguousarray(dw.transpose(0, 3, 1, 2))

    pixel_shares = 0
    if n == 1 and pixels >= DW_PIXELS_A_PART:
        pixel_shares = _even_shares(min(DW_BATCH_PARTS, pixels // DW_PIXELS_A_PART))
    if pixel_shares >= 2:
        parts = host_threads.split(pixels, pixel_shares)
    else:
        parts = host_threads.split(n, _dw_parts(n, pixels))
    if len(parts) == 1:
        # one share (one small image): the threads take column panels of dW instead, no partials
        dw = np.empty((o,) + columns, dtype=np.float32)

        _run(lib, "conv2d_dw_cols_f32", (_ptr(x), _ptr(grad_out), _ptr(dw), 0, n, START, STOP, int(w_order),
                                         _ptr(geom)), lib.dw_col_items(_ptr(geom)), macs, "conv2d backward")
        return as_weight(dw)
    dw = np.empty((len(parts), o) + columns, dtype=np.float32)
    bounds = np.array([p.start for p in parts] + [parts[-1].stop], dtype=np.int64)
    _run(lib, "conv2d_dw_shares_f32", (_ptr(x), _ptr(grad_out), _ptr(dw), _ptr(bounds), int(pixel_shares >= 2),
                                       int(w_order), START, STOP, _ptr(geom)), len(parts), macs, "conv2d backward")
    total = dw[0]
    for partial in dw[1:]:
        total += partial
    return as_weight(total)


def input_grad(grad_out, weight, x_shape, win: Window, groups: int):
    """``dx``, or ``None``: of a stride-1 convolution, a forward convolution of
    ``grad_out`` with the flipped, transposed weights (padding ``dilation*(k-1) -
    pad``); of a strided one, the same by phases (:func:`_strided_input_grad`); one
    input channel a group, the direct kernels (depthwise at stride 1, mostly the forward's
    on dY: :data:`DW_DX_AS_FORWARD_SPAN`)."""
    n, c, h, w = x_shape
    o, cg, kh, kw = weight.shape
    stride_1 = (win.sh, win.sw) == (1, 1)
    if stride_1:
        top, left = win.dh * (kh - 1) - win.pad_top, win.dw * (kw - 1) - win.pad_left
        as_forward = Window(kh, kw, 1, 1, win.dh, win.dw, top, win.dh * (kh - 1) - win.pad_bottom,
                            left, win.dw * (kw - 1) - win.pad_right, h, w)
    reach = max(win.dh * (kh - 1), win.dw * (kw - 1))
    if _direct(x_shape, groups) and stride_1 and o == groups and (
            reach >= DW_DX_AS_FORWARD_SPAN or win.ow >= DW_DX_AS_FORWARD_WIDTH
            or _channel_vectors_serve(grad_out, as_forward, groups)):
        # depthwise, stride 1: the forward's loops on dY with the flipped taps, which compute
        # only the image's rows and unroll 3x3 and 5x5, where the input-gradient loops compute
        # the padded frame's; or its channel vectors
        return _forward_transposed(grad_out, weight, x_shape, as_forward, groups, range(kh - 1, -1, -1),
                                   range(kw - 1, -1, -1))
    if _direct(x_shape, groups):
        lib = _lib(grad_out, weight)
        if lib is None or not _offsets_fit(x_shape, win, groups):
            return None
        geom, geom_ptr, items = _dw_plan(lib, x_shape, o, win, groups)
        grad_out, weight = np.ascontiguousarray(grad_out), np.ascontiguousarray(weight)
        dx = np.empty(x_shape, dtype=np.float32)

        _run(lib, "dw_conv_dx_f32", (_ptr(grad_out), _ptr(weight), _ptr(dx), START, STOP, geom_ptr), items,
             grad_out.size * cg * kh * kw, "conv2d backward")
        return dx
    og = o // groups
    if cg < 4 and og * (win.oh + win.dh * kh) * (win.ow + win.dw * kw) * 4 > FEW_ROWS_FRAME_BYTES:
        # dx's GEMM has cg rows: with so few, packing dominates, and a frame of dY's og
        # channels past L2 makes every pack read far memory (a 7x7 stem on one 224x224
        # image: 80 ms against 30 through W^T @ dY and col2im)
        return None
    if not stride_1:
        return _strided_input_grad(grad_out, weight, x_shape, win, groups)
    return _forward_transposed(grad_out, weight, x_shape, as_forward, groups, range(kh - 1, -1, -1),
                               range(kw - 1, -1, -1))


def _channel_vectors_serve(x, win: Window, groups: int) -> bool:
    """Whether the depthwise forward of ``x`` (one channel a group in and out) over ``win``
    would put channels in the vector (``DW_CHANNEL_VECTORS``). A stride-1 input gradient then
    runs as that forward of dY: 3x3 layers with 7-28 pixel rows took 0.67-0.80x the
    input-gradient loops' time (128 x 1024 at 7x7, one 1024-channel 7x7 image, 8 x 144 and
    32 x 96 at 28x28), one 512-channel 14x14 image 1.02x, 64 of them 1.26x (0.53x PyTorch's
    time against 0.42x) (``bench/results/dw-dx-as-forward-20261207.txt``)."""
    lib = _lib(x) if DW_CHANNEL_VECTORS != "never" else None
    return lib is not None and lib.dw_forward_kind(_ptr(_geometry(x.shape, groups, win, groups))) == 2


def _forward_transposed(grad_out, weight, x_shape, as_forward: Window, groups: int, ys, xs):
    """The forward convolution of ``grad_out`` (``as_forward``: its window, out to ``x_shape``'s
    pixels) with the transposed weights, taps ``ys`` x ``xs`` of ``weight`` in that order: the
    kernels pack those weights straight from ``weight`` (no flipped copy, which costs more than
    the GEMM at batch 1 and 7x7), or ``None``."""
    n, c, h, w = x_shape
    o, cg, kh, kw = weight.shape
    og = o // groups
    ys, xs = np.array(ys, dtype=np.int64), np.array(xs, dtype=np.int64)
    if _direct(grad_out.shape, groups):  # one dY channel a group: the direct kernels take a copy
        flipped = np.ascontiguousarray(
            weight.reshape(groups, og, cg, kh, kw)[:, :, :, ys, :][:, :, :, :, xs].transpose(0, 2, 1, 3, 4)
        ).reshape(c, og, len(ys), len(xs))
        return forward(grad_out, flipped, None, as_forward, groups)
    lib = _lib(grad_out, weight)
    shape = (n, og * groups) + tuple(grad_out.shape[2:])
    if lib is None or tuple(grad_out.shape) != shape or not _offsets_fit(grad_out.shape, as_forward, groups):
        return None
    grad_out, weight = np.ascontiguousarray(grad_out), np.ascontiguousarray(weight)
    conv_geom = _geometry(x_shape, o, Window(kh, kw, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1), groups)
    plan = _forward_plan(lib, tuple(grad_out.shape), (c, og, len(ys), len(xs)), as_forward, groups)

    def pack(packed):
        if plan.entry == WINO_ENTRY:  # 3x3 taps: ys and xs have 3 each
            return "wino_pack_weights_t_f32", (_ptr(weight), _ptr(conv_geom), _ptr(ys), _ptr(xs), _ptr(packed),
                                               START, STOP)
        return "pack_weights_t_f32", (_ptr(weight), _ptr(conv_geom), _ptr(ys), len(ys), _ptr(xs), len(xs),
                                      _ptr(packed), START, STOP)
    return _forward_packed(lib, grad_out, plan, None, pack, (weight, _ptr(conv_geom), ys, xs))


def _phase(size: int, k: int, stride: int, dil: int, pad: int, residue: int):
    """One phase of a strided input gradient along one axis: the input positions ``i`` with
    ``(i + pad) % stride == residue`` (``first``, ``count``), the taps that reach them
    (``taps``, ascending: ``taps[j] * dil`` has that residue), the dilation between those
    taps in output positions, and the padding of the stride-1 correlation of ``dY`` with the
    flipped taps that gives them: position ``first + t*stride`` reads ``dY[r0 + t - j*step]``
    for tap ``j``."""
    first = (residue - pad) % stride
    count = len(range(first, size, stride))
    taps = [t for t in range(k) if (t * dil) % stride == residue]
    if not taps or not count:
        return first, count, taps, 1, 0
    step = (taps[1] - taps[0]) * dil // stride if len(taps) > 1 else 1
    r0 = (first + pad - taps[0] * dil) // stride
    return first, count, taps, step, step * (len(taps) - 1) - r0


def _strided_input_grad(grad_out, weight, x_shape, win: Window, groups: int):
    """``dx`` of a strided convolution, by phases: the input pixels whose padded position has
    one residue modulo the stride (per axis) see only the taps of that residue, and their
    gradient is a stride-1 correlation of ``dY`` with those taps, flipped, run by the forward
    kernel. Every pixel belongs to one phase, so each is computed once (no scatter, no sum
    across phases) and the result does not depend on the thread count."""
    n, c, h, w = x_shape
    o, cg, kh, kw = weight.shape
    lib = _lib(grad_out, weight)
    if lib is None:
        return None
    dx = np.empty(x_shape, dtype=np.float32)
    for ry in range(win.sh):
        fy, ny, ty, sy, top = _phase(h, kh, win.sh, win.dh, win.pad_top, ry)
        if not ny:
            continue
        parts = []  # (first column, columns, the phase's dx or None where no tap reaches it)
        for rx in range(win.sw):
            fx, nx, tx, sx, left = _phase(w, kw, win.sw, win.dw, win.pad_left, rx)
            if not nx:
                continue
            part = None
            if ty and tx:
                bottom = (ny - 1) + sy * (len(ty) - 1) + 1 - top - grad_out.shape[2]
                right = (nx - 1) + sx * (len(tx) - 1) + 1 - left - grad_out.shape[3]
                part = _forward_transposed(grad_out, weight, (n, c, ny, nx),
                                           Window(len(ty), len(tx), 1, 1, sy, sx, top, bottom, left, right, ny, nx),
                                           groups, ty[::-1], tx[::-1])
                if part is None:
                    return None
            parts.append((fx, nx, part))
        # in place by the C pool: NumPy's strided copy took 15% of ResNet-20's 3x3/2 input gradient;
        # at a column stride of 2 both column phases at once, by whole rows
        if win.sw == 2 and [fx for fx, _, _ in parts] in ([0, 1], [1, 0]):
            (_, nx_even, even), (_, nx_odd, odd) = sorted(parts, key=lambda part: part[0])
            place = np.array([ny, nx_even, nx_odd, h, w, fy, win.sh], dtype=np.int64)
            _stream(lib, "place_phases2_f32", (_ptr_or_none(even), _ptr_or_none(odd), _ptr(dx), START, STOP,
                                               _ptr(place)), n * c, 2 * ny * w * n * c)
            continue
        for fx, nx, part in parts:
            place = np.array([ny, nx, h, w, fy, fx, win.sh, win.sw], dtype=np.int64)
            _stream(lib, "place_phase_f32", (_ptr_or_none(part), _ptr(dx), START, STOP, _ptr(place)), n * c,
                    2 * ny * nx * n * c)
    return dx


def relu(x):
    """``max(x, 0)`` (NaN kept) for a float32 array, or ``None``."""
    lib = _lib(x)
    if lib is None or x.ndim == 0:  # (ascontiguousarray would make a 0-d array 1-d)
        return None
    x = np.ascontiguousarray(x)
    y = np.empty(x.shape, dtype=np.float32)
    _stream(lib, "relu_f32", (_ptr(x), _ptr(y), START, STOP), x.size, x.size)
    return y


def relu_backward(grad_out, y):
    """``grad_out * (y > 0)`` for float32 arrays of one shape, or ``None``."""
    lib = _lib(grad_out, y)
    if lib is None or grad_out.shape != y.shape or y.ndim == 0:
        return None
    grad_out, y = np.ascontiguousarray(grad_out), np.ascontiguousarray(y)
    dx = np.empty(y.shape, dtype=np.float32)
    _stream(lib, "relu_backward_f32", (_ptr(grad_out), _ptr(y), _ptr(dx), START, STOP), y.size, 2 * y.size)
    return dx


def batch_norm_apply(x, mean, scale, bias):
    """``(x - mean) * scale (+ bias)`` per channel of a float32 ``x (N, C, *)``, the NumPy
    expression's bits in one pass, or ``None``."""
    lib = _lib(x, mean, scale) if bias is None else _lib(x, mean, scale, bias)
    if lib is None or x.ndim < 2:
        return None
    c = x.shape[1]
    if any(a is not None and tuple(a.shape) != (c,) for a in (mean, scale, bias)):
        return None
    x, mean, scale = np.ascontiguousarray(x), np.ascontiguousarray(mean), np.ascontiguousarray(scale)
    bias = np.ascontiguousarray(bias) if bias is not None else None
    y = np.empty(x.shape, dtype=np.float32)
    hw = x.size // (x.shape[0] * c)
    _stream(lib, "bn_apply_f32", (_ptr(x), _ptr(mean), _ptr(scale), _ptr_or_none(bias), _ptr(y),
                                  c, hw, START, STOP), x.shape[0] * c, 2 * x.size)
    return y


def channel_sum(x):
    """The sum of a float32 ``x (N, C, *)`` over every axis but 1, ``(C,)`` (a bias gradient),
    summed in float64 per channel, or ``None``."""
    lib = _lib(x)
    if lib is None or x.ndim < 2 or x.shape[1] == 0:
        return None
    x = np.ascontiguousarray(x)
    n, c = x.shape[:2]
    db = np.empty(c, dtype=np.float32)
    _stream(lib, "channel_sum_f32", (_ptr(x), _ptr(db), n, c, x.size // (n * c), START, STOP), c, x.size)
    return db


#: Pooling geometries by plane size and window (:func:`_pool_geometry`).
_pool_geometries: dict = {}


def _pool_geometry(x_shape, win: Window):
    """The pooling kernels' geometry array for planes of ``x_shape``, made once per plane size
    and window and shared: the kernels only read it (1 us of a batch-1 pooling's 5 us here)."""
    _, _, h, w = x_shape
    key = (h, w, win)
    geom = _pool_geometries.get(key)
    if geom is None:
        geom = _keep(_pool_geometries, key, np.array([h, w, win.kh, win.kw, win.sh, win.sw, win.dh, win.dw,
                                                      win.pad_top, win.pad_left, win.oh, win.ow], dtype=np.int64))
    return geom


def max_pool2d(x, win: Window):
    """``(y, idx)``: the maxima and their uint8 in-window positions, or ``None``
    (another dtype, or windows of more than 256 taps)."""
    lib = _lib(x)
    if lib is None or win.kh * win.kw > 256:
        return None
    n, c = x.shape[:2]
    geom, x = _pool_geometry(x.shape, win), np.ascontiguousarray(x)
    y = np.empty((n, c, win.oh, win.ow), dtype=np.float32)
    idx = np.empty(y.shape, dtype=np.uint8)

    _stream(lib, "max_pool2d_fwd_f32", (_ptr(x), _ptr(y), _ptr(idx), START, STOP, _ptr(geom)), n * c, x.size,
            "max_pool2d")
    return y, idx


def max_pool2d_backward(grad_out, idx, x_shape, win: Window):
    """``dx`` from uint8 indices (what :func:`max_pool2d` returned), or ``None``."""
    lib = _lib(grad_out)
    if lib is None or idx.dtype != np.uint8:
        return None
    n, c, h, w = x_shape
    if tuple(grad_out.shape) != tuple(idx.shape) or idx.shape != (n, c, win.oh, win.ow):
        return None  # the engine reports the shapes; never hand the kernel a mismatch
    if int(idx.max()) >= win.kh * win.kw:  # the kernel would write outside the image
        raise ValueError(f"max_pool2d backward: indices must be in-window positions below "
                         f"kh*kw = {win.kh * win.kw}, got {int(idx.max())}")
    geom = _pool_geometry(x_shape, win)
    grad_out, idx = np.ascontiguousarray(grad_out), np.ascontiguousarray(idx)
    dx = np.empty(x_shape, dtype=np.float32)

    _stream(lib, "max_pool2d_bwd_f32", (_ptr(grad_out), _ptr(idx), _ptr(dx), START, STOP, _ptr(geom)), n * c,
            dx.size, "max_pool2d backward")
    return dx


def _avg_k2s2(lib, x_shape, win: Window, divisor):
    """The geometry for the 2x2/stride-2 average-pooling kernels, or ``None`` where they do
    not serve (other windows, padding, a divisor that is not one number, a build without
    AVX-512)."""
    if not isinstance(divisor, float) or (win.kh, win.kw, win.sh, win.sw) != (2, 2, 2, 2):
        return None
    geom = _pool_geometry(x_shape, win)
    return geom if lib.avg_pool2d_k2s2_ok(_ptr(geom)) else None


def avg_pool2d(x, win: Window, divisor):
    """The means of 2x2, stride-2 windows inside the image, the generic path's bits, or ``None``."""
    lib = _lib(x)
    geom = _avg_k2s2(lib, x.shape, win, divisor) if lib is not None else None
    if geom is None:
        return None
    n, c = x.shape[:2]
    x = np.ascontiguousarray(x)
    y = np.empty((n, c, win.oh, win.ow), dtype=np.float32)
    div = np.array([divisor], dtype=np.float32)
    _stream(lib, "avg_pool2d_k2s2_fwd_f32", (_ptr(x), _ptr(y), _ptr(div), START, STOP, _ptr(geom)), n * c, x.size)
    return y


def avg_pool2d_backward(grad_out, x_shape, win: Window, divisor):
    """``dx`` of :func:`avg_pool2d` (each pixel ``grad / divisor`` of its window), or ``None``."""
    lib = _lib(grad_out)
    n, c = x_shape[:2]
    if lib is None or tuple(grad_out.shape) != (n, c, win.oh, win.ow):
        return None
    geom = _avg_k2s2(lib, x_shape, win, divisor)
    if geom is None:
        return None
    grad_out = np.ascontiguousarray(grad_out)
    dx = np.empty(x_shape, dtype=np.float32)
    div = np.array([divisor], dtype=np.float32)
    _stream(lib, "avg_pool2d_k2s2_bwd_f32", (_ptr(grad_out), _ptr(dx), _ptr(div), START, STOP, _ptr(geom)), n * c,
            dx.size)
    return dx


def matmul(a, b):
    """``a @ b`` for 2-D float32 arrays of any strides through the kernels' GEMM, or ``None``.
    (The benchmark's bare GEMM of the same size as a convolution; the layers keep NumPy's.)"""
    lib = _lib(a, b)
    if lib is None or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        return None
    (m, k), n = a.shape, b.shape[1]
    if any(st % 4 or st < 0 for st in a.strides + b.strides):
        return None  # the kernels take strides in whole floats, forwards
    (ras, cas), (rbs, cbs) = (st // 4 for st in a.strides), (st // 4 for st in b.strides)
    if (k - 1) * rbs + (n - 1) * cbs > _INT32_MAX:
        return None
    c = np.empty((m, n), dtype=np.float32)

    _run(lib, "gemm_f32", (_ptr(a), ras, cas, _ptr(b), rbs, cbs, _ptr(c), n, m, n, k, START, STOP),
         lib.gemm_panels(n), m * n * k, "matmul")
    return c


# ------------------------------------------------------------------------------ tanh and sigmoid
#: What one element of tanh or sigmoid costs, in the elements of a copy that
#: :data:`MIN_ELEMENTS_PER_THREAD` counts (an exp, a division, a few dozen vector
#: operations); the backward kernels read two arrays and write one, as ReLU's.
TRANSCENDENTAL_COST = 4
#: Arrays smaller than this stay with NumPy: a call into the kernels costs 5-8 us (the pool's
#: hand-off, the arrays' addresses), which np.tanh (vectorised already) and NumPy's
#: three-pass backward expressions make up only from about 2^16 elements (on 2 threads;
#: bench/results/scripts/activations_bench.py); NumPy's sigmoid is five passes and an exp,
#: so its kernel pays from a thousand elements.
MIN_ELEMENTS = {"tanh_f32": 1 << 16, "tanh_backward_f32": 1 << 16, "sigmoid_f32": 1 << 10,
                "sigmoid_backward_f32": 1 << 16}


def _big_float32(kernel: str, *arrays) -> bool:
    """Cheap checks first: small arrays (most calls of a small model) must lose no time here."""
    return all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays) \
        and arrays[0].size >= MIN_ELEMENTS[kernel]


def _unary(kernel: str, x):
    lib = _lib(x) if _big_float32(kernel, x) else None
    if lib is None:
        return None  # NumPy scalars, small arrays, other dtypes: NumPy's
    y = np.empty(x.shape, dtype=np.float32)  # before the copy: ascontiguousarray makes a 0-d array 1-d
    x = np.ascontiguousarray(x)
    _stream(lib, kernel, (_ptr(x), _ptr(y), START, STOP), x.size, TRANSCENDENTAL_COST * x.size)
    return y


def _from_output(kernel: str, grad_out, y):
    ok = _big_float32(kernel, grad_out, y) and grad_out.shape == y.shape
    lib = _lib(grad_out, y) if ok else None
    if lib is None:
        return None  # broadcasting, small arrays, NumPy scalars, other dtypes: NumPy's expression
    dx = np.empty(y.shape, dtype=np.float32)
    grad_out, y = np.ascontiguousarray(grad_out), np.ascontiguousarray(y)
    _stream(lib, kernel, (_ptr(grad_out), _ptr(y), _ptr(dx), START, STOP), y.size, 3 * y.size)
    return dx


def tanh(x):
    """``tanh(x)`` for a float32 array (within a few ulp of the exact value, see
    docs/cpu-kernels.md; not ``np.tanh``'s bits), or ``None`` (another dtype, fewer than
    ``MIN_ELEMENTS`` elements)."""
    return _unary("tanh_f32", x)


def tanh_backward(grad_out, y):
    """``grad_out * (1 - y * y)`` for float32 arrays of one shape, NumPy's bits, or ``None``."""
    return _from_output("tanh_backward_f32", grad_out, y)


def sigmoid(x):
    """``1 / (1 + exp(-x))`` for a float32 array (within a few ulp of the exact value), or ``None``."""
    return _unary("sigmoid_f32", x)


def sigmoid_backward(grad_out, y):
    """``grad_out * y * (1 - y)`` for float32 arrays of one shape, NumPy's bits, or ``None``."""
    return _from_output("sigmoid_backward_f32", grad_out, y)
