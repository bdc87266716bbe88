"""Decoding an image file into the 8-bit RGB picture the model sees: the one place where it is done.

Training and evaluation (through ``CocoDetection``), ``predict`` and the Python API (``Detector``)
read image files with ``read_rgb_image``, and the data check (``data/check.py``) probes them with
``check_pixel_range``, so what the check reports is what is trained on and scored.

16-bit grayscale (Pillow's modes I;16, I;16L, I;16B, I;16N, and I, which Pillow uses for 16-bit PGM
and older Pillow for 16-bit PNG) is *scaled* to 8 bits here, by keeping the high byte (v >> 8).
Pillow's own ``convert("RGB")`` clips it instead (every value above 255 becomes 255), which turns an
ordinary 16-bit photo nearly white. The high byte is the rule Pillow already applies to 16-bit RGB
and gray+alpha PNGs (it opens them as 8-bit RGB / RGBA), so the same picture gives the same 8-bit
values whether it was stored as gray or colour; it also undoes the usual 8 -> 16-bit expansion
(v * 257) exactly, and maps 65535 to 255. Pixels whose range is unknown (32-bit float, mode F, or
mode I values outside 0..65535) are refused with a ValueError rather than guessed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# what reading a bad image file raises: missing, a folder, not an image, truncated, pixels of unknown
# range (ValueError), or more pixels than Pillow's limit, Image.MAX_IMAGE_PIXELS (DecompressionBombError,
# which is not an OSError)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def check_pixel_range(image: Image.Image) -> None:
    """Raise ValueError when a decoded image's pixels have no known 8-bit scale (see the module docstring)."""
    if image.mode == "F":
        raise ValueError("32-bit float pixels: their range is unknown, so they cannot be scaled to 8 bits")
    if image.mode == "I":
        low, high = image.getextrema()
        if low < 0 or high > 65535:
            raise ValueError(f"32-bit integer pixels from {low} to {high}: more than 16 bits, so their range is "
                             "unknown and they cannot be scaled to 8 bits")


def to_rgb(image: Image.Image) -> Image.Image:
    """A decoded PIL image -> 8-bit RGB; 16-bit grayscale is scaled (v >> 8), not clipped."""
    check_pixel_range(image)
    if image.mode in SIXTEEN_BIT_MODES:
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))  # mode L
    return image.convert("RGB")


def read_image(path: str | Path) -> tuple[Image.Image, str]:
    """Decode an image file in full -> (the 8-bit RGB picture, the file's own Pillow mode).

    Raises one of ``DECODE_ERRORS`` for a file that cannot be used; callers name the file."""
    with Image.open(path) as image:
        return to_rgb(image), image.mode  # the conversion forces the full decode: truncation fails here


def read_rgb_image(path: str | Path) -> Image.Image:
    """``read_image`` without the mode: the 8-bit RGB picture of an image file."""
    return read_image(path)[0]
