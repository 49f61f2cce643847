"""Image files: :func:`load_image` and :class:`ImageFolder` (one folder per class).

PNG and JPEG are decoded by Pillow, an optional extra (``pip install
"engine[images]"``, or ``pip install ".[images]"`` in a checkout). Only those
two formats are opened (by content, not by name), and an image larger than
``max_pixels`` is refused before it is decoded.
"""
from __future__ import annotations

import os

import numpy as np

from .dataset import Dataset

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageFolder", "load_image"]

#: File names ImageFolder picks up (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: Largest image (width x height) read unless told otherwise: 64 Mpixel.
DEFAULT_MAX_PIXELS = 1 << 26
_FORMATS = ("PNG", "JPEG")
_INSTALL = ('reading PNG/JPEG images needs Pillow, an optional extra: pip install "engine[images]" '
            '(in a checkout of the engine: pip install ".[images]"), or pip install pillow')


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(_INSTALL) from None
    return Image


def _open(Image, path, max_pixels):
    """An opened (header read, pixels not decoded) PNG/JPEG image, or ValueError."""
    name = os.fspath(path)
    try:
        im = Image.open(name, formats=_FORMATS)
    except FileNotFoundError:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise ValueError(f"{name}: not a readable PNG or JPEG image ({type(exc).__name__}: {exc})") from None
    w, h = im.size
    if w < 1 or h < 1 or w * h > max_pixels:
        im.close()
        raise ValueError(f"{name}: {im.format} image of {w}x{h} pixels is outside the accepted size "
                         f"(1 to max_pixels={max_pixels} pixels)")
    return im


def _decode(im, name, channels):
    try:
        im.load()
        converted = im.convert("L" if channels == 1 else "RGB")
        a = np.asarray(converted, dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt pixel data
        raise ValueError(f"{name}: corrupt {im.format} image data ({type(exc).__name__}: {exc})") from None
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _check_channels(channels, where):
    if channels not in (1, 3):
        raise ValueError(f"{where}: channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def load_image(path, channels: int = 3, size=None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a PNG or JPEG file as a ``(channels, H, W)`` uint8 array.

    ``channels``: 1 (converted to grey) or 3 (RGB; alpha is dropped).
    ``size``: ``(h, w)`` or an int (shorter side) to resize to (bilinear,
    antialiased: :class:`engine.data.transforms.Resize`; the result is
    rounded back to uint8). A file that is not a PNG/JPEG, is truncated or
    corrupt, or has more than ``max_pixels`` pixels raises ``ValueError``
    naming it; without Pillow, ``ImportError`` naming the install command.
    """
    _check_channels(channels, "load_image")
    Image = _pillow()
    name = os.fspath(path)
    with _open(Image, name, max_pixels) as im:
        a = _decode(im, name, channels)
    if size is not None:
        a = _resize_uint8(a, size)
    return a


def _resize_uint8(a, size):
    from .transforms import Resize

    out = Resize(size)(a.astype(np.float32) / np.float32(255))
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


class ImageFolder(Dataset):
    """Images in one sub-folder per class: ``root/<class>/**/<file>.png|jpg|jpeg``.

    Classes are the sub-folder names, sorted (``classes[label]``); files are
    found recursively, sorted, other extensions ignored. Every file's header
    is checked when the dataset is built: a file that is not a PNG/JPEG image
    (by content), an image outside ``max_pixels``, an empty class folder, or
    (without ``size``) images of different sizes give one ``ValueError``
    that lists each bad file and why. Pixel data are decoded on access;
    corrupt data then raise ``ValueError`` naming the file.

    ``ds[i]`` is ``(image, label)``: ``(channels, H, W)`` uint8 (1 = grey,
    3 = RGB), resized to ``size`` (``(h, w)`` or an int shorter side) when
    given; with ``transform``, the image goes through it as float32 in
    [0, 1] (one sample at a time, e.g. ``transforms.RandomCrop``). Needs
    Pillow (``pip install "engine[images]"``).
    """

    def __init__(self, root, transform=None, channels: int = 3, size=None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None):
        _check_channels(channels, "ImageFolder")
        Image = _pillow()
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ImageFolder: {root} is not a directory")
        if transform is not None and not callable(transform):
            raise TypeError(f"ImageFolder: transform must be callable, got {type(transform).__name__}")
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise ValueError(f"ImageFolder: {root} has no class folders (expected {root}/<class>/<image>.png)")
        samples, problems, sizes = [], [], {}
        for label, cls in enumerate(classes):
            folder = os.path.join(root, cls)
            found = 0
            for directory, dirs, files in os.walk(folder):
                dirs.sort()
                for f in sorted(files):
                    if not f.lower().endswith(IMAGE_EXTENSIONS):
                        continue
                    path = os.path.join(directory, f)
                    found += 1
                    try:
                        with _open(Image, path, max_pixels) as im:
                            sizes.setdefault((im.size[1], im.size[0]), []).append(path)
                    except (ValueError, OSError) as exc:
                        problems.append(str(exc) if str(exc).startswith(path) else f"{path}: {exc}")
                        continue
                    samples.append((path, label))
            if not found:
                problems.append(f"{folder}: class folder {cls!r} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        if size is None and len(sizes) > 1:
            common = max(sizes, key=lambda s: len(sizes[s]))
            for hw, paths in sorted(sizes.items()):
                if hw != common:
                    problems += [f"{p}: {hw[1]}x{hw[0]} pixels, but most images are {common[1]}x{common[0]} "
                                 f"(pass size= to resize them all)" for p in paths]
        if problems:
            shown = problems[:20]
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise ValueError(f"ImageFolder {root}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)
        self.root = root
        self.classes = tuple(classes)
        self.samples = samples
        self.labels = np.asarray([label for _, label in samples], dtype=np.int64)
        self.transform = transform
        self.channels = channels
        self.size = size
        self.max_pixels = max_pixels
        self.name = name or os.path.basename(os.path.normpath(root))
        if size is not None:
            from .transforms import Resize
            first = next(iter(sizes)) if sizes else (1, 1)
            hw = Resize(size).output_size(*first) if isinstance(size, int) else tuple(size)
            self.image_shape = (channels, *hw) if (not isinstance(size, int) or len(sizes) == 1) else None
        else:
            self.image_shape = (channels, *next(iter(sizes))) if sizes else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        image = load_image(path, self.channels, self.size, self.max_pixels)
        if self.transform is not None:
            image = self.transform(image.astype(np.float32) / np.float32(255))
        return image, label

    def __repr__(self) -> str:
        return f"ImageFolder({self.root!r}, n={len(self)}, classes={len(self.classes)})"
