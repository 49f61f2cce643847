"""Geometry and helpers shared by the array-level ops (engine.ops)."""
from __future__ import annotations

from ..backends import Window

from .._checks import pair

def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | tuple[int, int] = 0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a sliding window: ``floor((H + 2p - d(k-1) - 1)/s) + 1``.

    ``padding`` may be one int (both sides) or ``(before, after)``. With
    ``ceil_mode`` the division rounds up, but the last window must start
    inside the input or the leading padding (PyTorch's rule).
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    span = size + before + after - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1
    return out


def conv_padding(padding, kernel, dilation, stride, where):
    """``(top, bottom, left, right)`` from an int, a pair, "valid" or "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{where}: padding='same' needs stride 1, got stride={stride}")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]  # the extra row/column goes last, as in PyTorch
            return tuple(pads)
        raise ValueError(f"{where}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = pair(padding, "padding", where, minimum=0)
    return ph, ph, pw, pw


def _window(x_shape, kernel, stride, pads, dilation, where, ceil_mode=False) -> Window:
    _, _, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = pads
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eff_h > h + pt + pb or eff_w > w + pl + pr:
        raise ValueError(
            f"{where}: kernel ({eff_h}x{eff_w} with dilation {dilation}) is larger than the padded "
            f"input ({h + pt + pb}x{w + pl + pr} = {h}x{w} plus padding {pads[0]},{pads[1]} rows and "
            f"{pads[2]},{pads[3]} columns)")
    oh = conv_output_size(h, kh, sh, (pt, pb), dh, ceil_mode)
    ow = conv_output_size(w, kw, sw, (pl, pr), dw, ceil_mode)
    return Window(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, oh, ow)


def _batch_chunks(backend, n, per_image_bytes):
    """Slices of the batch whose im2col buffer fits in the backend's workspace."""
    step = max(1, backend.workspace_bytes() // max(1, per_image_bytes))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _is_pointwise(win: Window) -> bool:
    return (win.kh, win.kw, win.sh, win.sw) == (1, 1, 1, 1) and not any(win[6:10])


def _window_at(pos, stride, dilation, kernel):
    start = pos * stride
    return slice(start, start + dilation * (kernel - 1) + 1, dilation)


def _device(x):
    from array_api_compat import device
    return device(x)


def _itemsize(xp, dtype) -> int:
    """Bytes per element of a floating-point ``dtype`` (sizes im2col workspaces)."""
    return xp.finfo(dtype).bits // 8


#: How many checked setups an op's cache (:func:`_remember`) keeps before it starts again.
SETUPS_MAX = 1024


def _plain(value) -> bool:
    """An int, a str or a tuple of ints: arguments whose equality means the same checks
    (``1.0``, ``True`` and ``1`` are equal keys, and only ``1`` passes)."""
    kind = type(value)
    if kind is tuple:
        for v in value:  # a loop, not all() over a generator: this runs a few times a layer call
            if type(v) is not int:
                return False
        return True
    return kind is int or kind is str


def _remember(cache: dict, key, value):
    """``cache[key] = value`` (unless ``key`` is ``None``), emptying a full cache first;
    returns ``value``. The ops' setup caches: the checks of a batch-1 layer cost as much as
    its arithmetic, and they give the same answer for the same types, shapes and arguments."""
    if key is not None:
        if len(cache) >= SETUPS_MAX:
            cache.clear()
        cache[key] = value
    return value
