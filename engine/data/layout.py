"""Image layouts: the engine computes in NCHW; channels-last input is converted
on request, never silently reinterpreted."""
from __future__ import annotations

__all__ = ["check_layout", "looks_channels_last", "to_nchw"]

_CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA


def looks_channels_last(shape) -> bool:
    """True for a 4-D ``(N, H, W, C)``-looking shape: last axis 1, 3 or 4
    (grey, RGB, RGBA) and an axis 1 too large to be channels of those kinds.
    ``(C, H, W)``/``(H, W, C)`` single images (3-D) are judged the same way."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4:
        return False
    return shape[3] in _CHANNEL_COUNTS and shape[1] not in (1, 2, 3, 4)


def check_layout(x, expected_channels: int, where: str = "input") -> None:
    """Raise ``ValueError`` unless ``x`` is ``(N, expected_channels, H, W)``.

    An ``x`` whose *last* axis holds ``expected_channels`` (``(N, H, W, C)``,
    channels last) gets an error naming the NHWC layout and the fix
    (``engine.data.to_nchw(x)`` or ``DataLoader(..., layout="NHWC")``)
    instead of being read as ``C = H``; any other channel mismatch gets one
    naming the expected and found axis-1 sizes. ``where`` names the caller
    (e.g. ``"Conv2d(3→16)"``) in the message.
    """
    shape = tuple(int(s) for s in getattr(x, "shape", ()))
    if len(shape) != 4:
        raise ValueError(f"{where}: expected a batch of images (N, C, H, W) with C = {expected_channels}, "
                         f"got shape {shape}")
    if shape[1] == expected_channels:
        return
    if shape[3] == expected_channels:
        raise ValueError(f"{where}: input of shape {shape} looks like NHWC (channels last: {shape[3]} "
                         f"channel(s) in the last axis); the engine expects NCHW (N, {expected_channels}, H, W). "
                         f"Convert it with engine.data.to_nchw(x), or load it with "
                         f"DataLoader(..., layout='NHWC')")
    raise ValueError(f"{where}: expected {expected_channels} channel(s) in axis 1 (NCHW), got shape {shape}")


def to_nchw(x):
    """``(N, H, W, C) -> (N, C, H, W)`` (or ``(H, W, C) -> (C, H, W)``) on any
    backend (``permute_dims``: a view where the array library allows it)."""
    from array_api_compat import array_namespace

    if hasattr(x, "grad_fn") and hasattr(x, "data"):  # an engine.Tensor: its array
        x = x.data
    xp = array_namespace(x)
    if x.ndim == 4:
        return xp.permute_dims(x, (0, 3, 1, 2))
    if x.ndim == 3:
        return xp.permute_dims(x, (2, 0, 1))
    raise ValueError(f"to_nchw: expected (N, H, W, C) or (H, W, C), got shape {tuple(x.shape)}")
