"""Small test images for the detect stage: real faces from scikit-image and every bad-input case."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image
from skimage import data

SIDE = 256  # small enough for fast MTCNN, large enough for a clear face


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def camera() -> Image.Image:
    return Image.fromarray(data.camera()).resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def no_face() -> Image.Image:
    return Image.fromarray(data.coffee()).resize((SIDE, 192), Image.Resampling.BILINEAR)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def truncated_jpeg() -> bytes:
    full = encode(astronaut())
    return full[: len(full) // 2]


def corrupt_jpeg() -> bytes:
    """A JPEG header followed by noise: identified as JPEG, fails to decode."""
    full = encode(astronaut())
    noise = np.random.default_rng(0).integers(0, 255, len(full) - 200, dtype=np.uint8).tobytes()
    return full[:200] + noise


def damaged_jpeg() -> bytes:
    """Four bytes near the end of the scan overwritten: Pillow decodes it, libjpeg reports corrupt data."""
    damaged = bytearray(encode(astronaut()))
    at = len(damaged) * 93 // 100
    damaged[at : at + 4] = b"\x5a" * 4
    return bytes(damaged)


def png_with_bad_crc() -> bytes:
    """A PNG whose image-data chunk fails its CRC32 (one bit of the stored CRC flipped)."""
    damaged = bytearray(encode(astronaut(), "PNG"))
    damaged[damaged.rindex(b"IEND") - 5] ^= 0x01  # the last byte of the last IDAT's CRC
    return bytes(damaged)


def cmyk_jpeg() -> bytes:
    return encode(astronaut().convert("CMYK"))


def rgba_png() -> bytes:
    rgba = astronaut().convert("RGBA")
    rgba.putalpha(200)
    return encode(rgba, "PNG")


def png_16bit() -> bytes:
    values = np.asarray(camera(), dtype=np.uint16) * 257
    return encode(Image.fromarray(values), "PNG")  # uint16 → mode I;16


def exif_rotated_jpeg() -> bytes:
    """The astronaut stored lying on its side, with Orientation=6 (turn 90° clockwise to view)."""
    stored = astronaut().resize((SIDE, 192)).transpose(Image.Transpose.ROTATE_90)  # 192 wide, 256 high
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, exif=exif)


def animated_gif() -> bytes:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8))
    return encode(astronaut(), "GIF", save_all=True, append_images=[noise], duration=100, loop=0)


def decompression_bomb_png(side: int = 40_000) -> bytes:
    """A PNG header claiming side × side pixels (beyond Pillow's bomb limit) and a tiny body."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")
