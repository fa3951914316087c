"""The ``.fz`` file: one image compressed by one codec. Byte layout in ARCHITECTURE.md.

Everything read from a file is checked before it is trusted: a damaged or foreign file
raises FzFormatError saying what is wrong, never a numpy/torch error or a huge allocation.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\x89FZ\n"  # non-ASCII first byte and a newline catch text-mode transfer damage, as PNG's do
# 2 added the payload-coding byte, 3 a CRC32 of header and payload; versions 1 and 2 still read
FORMAT_VERSION = 3
PAYLOAD_XZ, PAYLOAD_STORED = 0, 1  # stored: the codec entropy-codes its payload itself, xz would only add framing
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28  # what the format can describe
# what facezip decodes unless told otherwise (codec.max_decode_pixels): a 4096×4096 photo, far
# above any face; a file claiming more is refused before its payload is touched
DEFAULT_MAX_DECODE_PIXELS = 1 << 24
_SIZES = struct.Struct("<III")  # height, width, payload length
_CRC = struct.Struct("<I")
# A small dictionary: payloads are kilobytes, and the 64 MiB one of preset 9 costs ~670 MB per call.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]


class FzFormatError(ValueError):
    """A ``.fz`` file (or archive record) that cannot be decoded, with the reason."""


@dataclass(frozen=True)
class FzHeader:
    codec: str
    weights_hash: str  # 16 hex digits
    height: int
    width: int


def check_dimensions(height: int, width: int) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise FzFormatError(f"absurd image size {height}×{width} (limits: sides 1..{MAX_SIDE}, "
                            f"{MAX_PIXELS} pixels)")


def check_decode_size(height: int, width: int, max_pixels: int) -> None:
    """Refuse to decode images above facezip's decode limit (the format allows far more)."""
    if height * width > max_pixels:
        raise FzFormatError(f"{height}×{width} = {height * width} pixels is over facezip's decode limit of "
                            f"{max_pixels} pixels (codec.max_decode_pixels)")


def crc32(*parts: bytes) -> int:
    value = 0
    for part in parts:
        value = zlib.crc32(part, value)
    return value


def xz_compress(payload: bytes, lzma2_options: dict[str, int] | None = None) -> bytes:
    """One xz stream. ``lzma2_options`` (lc/lp/pb) tune LZMA2 to a codec's payload structure; xz
    decoders need no hint, since the stream carries everything needed to decode it."""
    filters = [{**XZ_FILTERS[0], **(lzma2_options or {})}]
    return lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)


def xz_decompress(stream: bytes, max_length: int) -> bytes:
    """Decompress one xz stream, refusing output beyond ``max_length`` bytes (no xz bombs)."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        data = decompressor.decompress(stream, max_length=max_length + 1)
    except lzma.LZMAError as exc:
        raise FzFormatError(f"xz data is corrupt: {exc}") from None
    if len(data) > max_length:
        raise FzFormatError(f"xz data expands beyond {max_length} bytes, more than the image can need")
    if not decompressor.eof:
        raise FzFormatError("xz data is truncated")
    if decompressor.unused_data:
        raise FzFormatError(f"{len(decompressor.unused_data)} stray bytes after the xz stream")
    return data


def max_payload_bytes(height: int, width: int) -> int:
    """No codec needs more bytes than raw 8-bit RGB plus slack for its own framing."""
    return 3 * height * width + 4096


def pack_fz(header: FzHeader, payload: bytes, lzma2_options: dict[str, int] | None = None,
            stored: bool = False) -> bytes:
    """A ``.fz`` file; ``stored`` keeps an entropy-coded payload as is instead of an xz stream."""
    check_dimensions(header.height, header.width)
    name = header.codec.encode("ascii")
    if not 1 <= len(name) <= 255:
        raise ValueError(f"codec name '{header.codec}' must be 1..255 ASCII characters")
    stream = payload if stored else xz_compress(payload, lzma2_options)
    coding = PAYLOAD_STORED if stored else PAYLOAD_XZ
    head = b"".join([MAGIC, bytes([FORMAT_VERSION, coding, len(name)]), name, bytes.fromhex(header.weights_hash),
                     _SIZES.pack(header.height, header.width, len(stream))])
    return head + _CRC.pack(crc32(head, stream)) + stream


def unpack_fz(data: bytes, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> tuple[FzHeader, bytes]:
    """Parse and check a ``.fz`` file; returns its header and the codec payload (xz undone).
    Images over ``max_pixels`` are refused before the payload is decompressed."""
    header, stream, coding = read_header(data)
    check_decode_size(header.height, header.width, max_pixels)
    limit = max_payload_bytes(header.height, header.width)
    if coding == PAYLOAD_XZ:
        return header, xz_decompress(stream, limit)
    if len(stream) > limit:
        raise FzFormatError(f"stored payload of {len(stream)} bytes is larger than the image can need")
    return header, stream


def read_header(data: bytes) -> tuple[FzHeader, bytes, int]:
    """Parse the header only; returns it with the payload still in its coding (PAYLOAD_XZ or PAYLOAD_STORED)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise FzFormatError("not a .fz file (wrong magic bytes)")
    pos = len(MAGIC)
    if len(data) < pos + 3:
        raise FzFormatError("truncated header")
    version = data[pos]
    if version not in (1, 2, FORMAT_VERSION):
        raise FzFormatError(f"unknown .fz format version {version} (this facezip reads versions 1–{FORMAT_VERSION})")
    coding = data[pos + 1] if version >= 2 else PAYLOAD_XZ
    if coding not in (PAYLOAD_XZ, PAYLOAD_STORED):
        raise FzFormatError(f"unknown payload coding {coding}")
    pos += 1 if version == 1 else 2
    name_len = data[pos]
    pos += 1
    sizes_at = pos + name_len + 8
    end = sizes_at + _SIZES.size + (_CRC.size if version >= 3 else 0)
    if len(data) < end:
        raise FzFormatError("truncated header")
    height, width, length = _SIZES.unpack_from(data, sizes_at)
    stream = data[end:]
    if len(stream) < length:
        raise FzFormatError(f"truncated data: header announces {length} payload bytes, file has {len(stream)}")
    if len(stream) > length:
        raise FzFormatError(f"{len(stream) - length} stray bytes after the payload")
    if version >= 3 and crc32(data[: end - _CRC.size], stream) != _CRC.unpack_from(data, end - _CRC.size)[0]:
        raise FzFormatError("checksum mismatch: the file is damaged (the CRC32 of its header and payload is "
                            "not the one it carries)")
    try:
        codec = data[pos : pos + name_len].decode("ascii")
    except UnicodeDecodeError:
        raise FzFormatError("codec name in the header is not ASCII") from None
    check_dimensions(height, width)
    weights_hash = data[sizes_at - 8 : sizes_at].hex()
    return FzHeader(codec, weights_hash, height, width), stream, coding
