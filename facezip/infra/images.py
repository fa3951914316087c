"""Decoding image files into RGB arrays, saying what was converted and why a file was refused.

Every stage reads images through ``decode_image`` so a CMYK JPEG, a 16-bit PNG or a
decompression bomb is handled the same way everywhere.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from facezip.infra.image_damage import find_damage

T, R = TypeVar("T"), TypeVar("R")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".avif")
DEFAULT_MAX_PIXELS = 40_000_000
_CONVERTIBLE = {"L": "greyscale", "LA": "greyscale+alpha", "1": "bilevel", "P": "palette", "PA": "palette+alpha",
                "RGBA": "RGBA", "CMYK": "CMYK", "YCbCr": "YCbCr", "I;16": "16-bit greyscale",
                "I;16B": "16-bit greyscale", "I;16L": "16-bit greyscale", "I": "32-bit greyscale"}


class ImageError(ValueError):
    """An input that cannot become an RGB image. ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    notes: list[str] = field(default_factory=list)  # conversions applied, e.g. "converted CMYK to RGB"


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, accept_damaged: bool = False) -> DecodedImage:
    """Bytes of any Pillow-readable image → RGB; EXIF orientation applied, first frame of animations.

    Raises ImageError with reason ``empty``, ``too_large``, ``unreadable``, ``unsupported_mode`` or
    ``damaged`` (a JPEG/PNG that decodes although its decoder reports damage); with
    ``accept_damaged`` such an image is kept and the damage noted instead.
    """
    if not data:
        raise ImageError("empty", "zero-byte file")
    image = _open(data, max_pixels)
    notes: list[str] = []
    damage = find_damage(data, image.format)
    if damage and not accept_damaged:
        raise ImageError("damaged", damage)
    if damage:
        notes.append(f"damaged, kept as asked: {damage}")
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"animated image with {image.n_frames} frames: used the first")
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        oriented = ImageOps.exif_transpose(image)  # a copy even when there is nothing to turn
        if orientation not in (None, 1):
            notes.append(f"applied EXIF orientation {orientation}")
        return DecodedImage(to_rgb(oriented, notes), notes)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # truncated data surfaces only on load
        raise ImageError("unreadable", str(exc) or type(exc).__name__) from None


# Slower encoder settings that store the same quality in fewer bytes, measured on 80 px face crops
# (the compact images of comcnn-reccnn): JPEG's optimised Huffman tables, the same pixels in 16–32 %
# fewer bytes; AVIF speed 4 instead of Pillow's 6, 3.4 % fewer bytes at equal PSNR for 38 ms an
# image instead of 9 (speed 0: 5.6 % for 230 ms)
THOROUGH_OPTIONS = {"JPEG": {"optimize": True}, "AVIF": {"speed": 4}}


def encode_standard(rgb: np.ndarray, fmt: str, quality: int, thorough: bool = False) -> bytes:
    """An (H, W, 3) uint8 image as a file of Pillow's format ``fmt`` (JPEG, WEBP, AVIF) at ``quality``
    (0…100), with the format's defaults otherwise: what a user's own tools would write; ``thorough``:
    with THOROUGH_OPTIONS, what the format's encoder does when given the time."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, quality=int(quality), **(THOROUGH_OPTIONS.get(fmt, {}) if thorough else {}))
    return buffer.getvalue()


def map_in_threads(function: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """``[function(item) for item in items]`` on up to ``threads`` threads, in order: Pillow's JPEG
    and AVIF coders release the GIL (80 px AVIF faces: 7.3 ms each in turn, 3.0 on 2 threads)."""
    threads = min(threads, len(items))
    if threads <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, items))


def decode_standard(data: bytes) -> np.ndarray:
    """A file ``encode_standard`` wrote (or any Pillow-readable image) → (H, W, 3) uint8, without the
    damage checks of ``decode_image``: for payloads whose integrity the container already checks."""
    with Image.open(io.BytesIO(data)) as decoded:
        return np.asarray(decoded.convert("RGB"))


def to_rgb(image: Image.Image, notes: list[str] | None = None) -> np.ndarray:
    """An RGB uint8 array; other supported modes are converted and the conversion noted."""
    notes = notes if notes is not None else []
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode not in _CONVERTIBLE:
        raise ImageError("unsupported_mode", f"image mode {mode} cannot be converted to RGB")
    if mode.startswith("I"):  # 16/32-bit greyscale: scale the used range down to 8 bits
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    elif "A" in mode or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        notes.append(f"converted {_CONVERTIBLE[mode]} to RGB (alpha composited on white)")
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    notes.append(f"converted {_CONVERTIBLE[mode]} to RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError("too_large", f"{width}×{height} pixels exceeds the limit of {max_pixels}")
            image.load()
            return image
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_large", f"more pixels than facezip's limit of {max_pixels} "
                                      f"(max_image_pixels); Pillow: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("unreadable", "not an image Pillow can identify") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError("unreadable", str(exc) or type(exc).__name__) from None
