"""Image files -> ``uint8 [H, W, 3]`` RGB, as a labelling tool shows them.

Everything that reads pixels goes through :func:`load_image`, and everything that needs an image's
size without its pixels goes through :func:`image_size`, so the two always agree on orientation:
the EXIF orientation tag is applied (phones store portrait photos as landscape pixels plus a tag,
and Roboflow, CVAT and Label Studio draw boxes on the rotated picture).

No TensorFlow here: Pillow and NumPy only, so data checks start fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)  # orientations that rotate by 90 or 270 degrees


class ImageReadError(OSError):
    """An image file is missing or cannot be decoded. ``reason`` is ``"missing"`` or ``"unreadable"``."""

    def __init__(self, path, reason: str, detail: str):
        self.path = str(path)
        self.reason = reason
        if reason == "missing":
            message = f"{path}: image file not found. Check the image folder (img_prefix) and the file name."
        else:
            message = (f"{path}: cannot decode the image ({detail}). The file is corrupt or truncated: "
                       f"re-export or re-download it, or remove it from the data set.")
        super().__init__(message)


def _open(path) -> Image.Image:
    if not os.path.isfile(path):
        raise ImageReadError(path, "missing", "no such file")
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(path, "unreadable", f"{type(e).__name__}: {e}") from None


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block is not a broken image; PIL then shows it unrotated too
        return 1


def image_size(path, verify: bool = True) -> Tuple[int, int]:
    """``(width, height)`` in pixels as displayed, i.e. after the EXIF orientation.

    With ``verify`` the pixels are decoded too (JPEGs at reduced scale, which still reads every byte
    of the stream), so a corrupt or truncated file raises here, while the data set is read, rather
    than in the middle of training.

    Raises:
        ImageReadError: the file is missing, or is not an image Pillow can decode.
    """
    path = str(path)
    with _open(path) as img:
        width, height = img.size
        swap = _orientation(img) in _SWAPS_SIDES
        if verify:
            try:
                if img.format == "JPEG":
                    img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
                img.load()
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                raise ImageReadError(path, "unreadable", f"{type(e).__name__}: {e}") from None
    return (height, width) if swap else (width, height)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow image -> ``uint8 [H, W, 3]`` RGB. Alpha is dropped (not composited); 16- and
    32-bit integer grey is scaled from its full range to 0-255; float grey is taken as 0-1 if it
    stays within it, else as 0-255."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        # Pillow's own convert("RGB") clips 16-bit values at 255, turning most photos white.
        a = np.asarray(img).astype(np.float64)
        a = np.clip(a, 0, 65535) / 257.0
        grey = np.round(a).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.nan_to_num(a)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        grey = np.round(np.clip(a * scale, 0, 255)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("P", "PA"):
        # Through RGBA: a palette with transparency converted straight to RGB makes Pillow warn.
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image(path) -> np.ndarray:
    """Read an image file as ``uint8 [H, W, 3]`` RGB, rotated by its EXIF orientation.

    Grey, grey+alpha, RGBA, palette, 16-bit grey PNG, CMYK and YCbCr files all come back as RGB.

    Raises:
        ImageReadError: the file is missing, corrupt or truncated (the message names the file).
    """
    path = str(path)
    with _open(path) as img:
        try:
            img.load()
            if _orientation(img) != 1:
                img = ImageOps.exif_transpose(img)
            return to_rgb_array(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageReadError(path, "unreadable", f"{type(e).__name__}: {e}") from None


def list_images(folder) -> list:
    """Image files under ``folder`` (recursively), sorted, as :class:`Path`."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
