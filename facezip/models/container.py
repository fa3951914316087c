"""The headers of facezip's two containers, and the xz stage both use. Byte layouts in FORMATS.md.

A ``.fz`` file carries its ``FzHeader`` (codec, weights hash, size; compactly since version 4);
an archive record carries only a version byte and a CRC32 that covers the header its index row
holds, so a record read with the wrong row fails its check. Older record versions, which spelled
the header out like a version 3 ``.fz``, still read.

Everything read from a file is checked before it is trusted: a damaged or foreign file
raises FzFormatError saying what is wrong, never a numpy/torch error or a huge allocation.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\x89FZ\n"  # non-ASCII first byte and a newline catch text-mode transfer damage, as PNG's do
# 2 added the payload-coding byte, 3 a CRC32 of header and payload, 4 a compact header (a codec id
# instead of its name, varint sizes: 25 bytes instead of 44 for a face, 7 % of a 0.2 bpp file);
# versions 1–3 still read
FORMAT_VERSION = 4
# version 4's one-byte codec ids, fixed forever (a file names its codec by them); 0: the name follows
# spelled out, as for a codec registered after this table
CODEC_IDS = {"binarized-cae": 1, "mean-scale-hyperprior": 2, "masked-cvae": 3, "comcnn-reccnn": 4, "png": 5}
CODEC_NAMES = {number: name for name, number in CODEC_IDS.items()}
SPELLED_OUT = 0
MAX_VARINT_BYTES = 4  # 2²⁸: more than any side or payload the format allows
PAYLOAD_XZ, PAYLOAD_STORED = 0, 1  # stored: the codec entropy-codes its payload itself, xz would only add framing
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28  # what the format can describe
# what facezip decodes unless told otherwise (codec.max_decode_pixels): a 4096×4096 photo, far
# above any face; a file claiming more is refused before its payload is touched
DEFAULT_MAX_DECODE_PIXELS = 1 << 24
_DIMS = struct.Struct("<II")  # height, width
_LENGTH = struct.Struct("<I")  # versions 1–3: the .fz payload length, after the dims
_CRC = struct.Struct("<I")
# archive records: 3 keeps the header in the index row (a version byte and a CRC32 here); 2 and 1
# spelled it out after a magic (2 with a CRC32), zero-padded to 16 when xz-compressed
RECORD_VERSION = 3
RECORD_HEADER_BYTES = 1 + _CRC.size
LEGACY_RECORD_MAGIC, LEGACY_HEADER_ALIGN = b"FZR", 16
# A small dictionary: payloads are kilobytes, and the 64 MiB one of preset 9 costs ~670 MB per call.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]
LZMA2_DECODER = {"id": lzma.FILTER_LZMA2, "dict_size": XZ_FILTERS[0]["dict_size"]}


class FzFormatError(ValueError):
    """A ``.fz`` file (or archive record) that cannot be decoded, with the reason."""


@dataclass(frozen=True)
class FzHeader:
    codec: str
    weights_hash: str  # 16 hex digits
    height: int
    width: int

    def identity(self) -> bytes:
        """Codec-name length + name, the 8-byte weights hash, height, width: spelled out by a
        ``.fz`` header, covered by an archive record's CRC32."""
        check_dimensions(self.height, self.width)
        try:
            name, weights = self.codec.encode("ascii"), bytes.fromhex(self.weights_hash)
        except (UnicodeEncodeError, ValueError):
            raise FzFormatError(f"codec name {self.codec!r} is not ASCII or weights hash {self.weights_hash!r} "
                                "is not hex") from None
        if not 1 <= len(name) <= 255 or len(weights) != 8:
            raise FzFormatError(f"codec name '{self.codec}' must be 1..255 ASCII characters and the weights "
                                "hash 16 hex digits")
        return bytes([len(name)]) + name + weights + _DIMS.pack(self.height, self.width)

    def compact(self) -> bytes:
        """Version 4's spelling of the same fields: codec id (or 0, length, name), weights hash,
        height and width as varints."""
        identity = self.identity()  # checks every field
        name_field = bytes([CODEC_IDS[self.codec]]) if self.codec in CODEC_IDS else bytes([SPELLED_OUT]) + \
            identity[: 1 + identity[0]]
        return name_field + bytes.fromhex(self.weights_hash) + varint(self.height) + varint(self.width)


def parse_identity(data: bytes, pos: int) -> tuple[FzHeader, int]:
    """The ``FzHeader.identity`` bytes at ``pos``, and where they end."""
    end = pos + 1 + (data[pos] if pos < len(data) else 0) + 8 + _DIMS.size
    if len(data) < end:
        raise FzFormatError("truncated header")
    try:
        codec = data[pos + 1 : end - 8 - _DIMS.size].decode("ascii")
    except UnicodeDecodeError:
        raise FzFormatError("codec name in the header is not ASCII") from None
    height, width = _DIMS.unpack_from(data, end - _DIMS.size)
    check_dimensions(height, width)
    return FzHeader(codec, data[end - 8 - _DIMS.size : end - _DIMS.size].hex(), height, width), end


def parse_compact(data: bytes, pos: int) -> tuple[FzHeader, int]:
    """The ``FzHeader.compact`` bytes at ``pos``, and where they end."""
    if pos >= len(data):
        raise FzFormatError("truncated header")
    number, pos = data[pos], pos + 1
    if number == SPELLED_OUT:
        end = pos + 1 + (data[pos] if pos < len(data) else 0)
        if len(data) < end:
            raise FzFormatError("truncated header")
        try:
            codec = data[pos + 1 : end].decode("ascii")
        except UnicodeDecodeError:
            raise FzFormatError("codec name in the header is not ASCII") from None
        pos = end
    elif number in CODEC_NAMES:
        codec = CODEC_NAMES[number]
    else:
        raise FzFormatError(f"unknown codec id {number} (this facezip knows ids 1–{max(CODEC_NAMES)}; a newer "
                            "facezip may have written the file)")
    if len(data) < pos + 8:
        raise FzFormatError("truncated header")
    weights, pos = data[pos : pos + 8].hex(), pos + 8
    height, pos = read_varint(data, pos, "height")
    width, pos = read_varint(data, pos, "width")
    check_dimensions(height, width)
    return FzHeader(codec, weights, height, width), pos


def varint(value: int) -> bytes:
    """``value`` ≥ 0 as LEB128: 7 bits a byte, low bits first, the top bit set on all but the last."""
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def read_varint(data: bytes, pos: int, field: str) -> tuple[int, int]:
    """The LEB128 value of ``field`` at ``pos`` and where it ends; at most MAX_VARINT_BYTES long."""
    value = 0
    for k in range(MAX_VARINT_BYTES):
        if pos + k >= len(data):
            raise FzFormatError("truncated header")
        value |= (data[pos + k] & 0x7F) << 7 * k
        if not data[pos + k] & 0x80:
            return value, pos + k + 1
    raise FzFormatError(f"the header's {field} runs over {MAX_VARINT_BYTES} bytes")


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


def xz_decompress(stream: bytes, max_length: int, raw_lzma2: bool = False) -> bytes:
    """Decompress one xz stream, or with ``raw_lzma2`` one LZMA2 chunk sequence ending in its end
    marker (an archive record), refusing output beyond ``max_length`` bytes (no xz bombs)."""
    decompressor = (lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[LZMA2_DECODER]) if raw_lzma2
                    else lzma.LZMADecompressor(lzma.FORMAT_XZ))
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
    stream = payload if stored else xz_compress(payload, lzma2_options)
    coding = PAYLOAD_STORED if stored else PAYLOAD_XZ
    head = MAGIC + bytes([FORMAT_VERSION, coding]) + header.compact() + varint(len(stream))
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
    if version not in range(1, FORMAT_VERSION + 1):
        raise FzFormatError(f"unknown .fz format version {version} (this facezip reads versions 1–{FORMAT_VERSION})")
    coding = data[pos + 1] if version >= 2 else PAYLOAD_XZ
    if coding not in (PAYLOAD_XZ, PAYLOAD_STORED):
        raise FzFormatError(f"unknown payload coding {coding}")
    if version == FORMAT_VERSION:
        header, pos = parse_compact(data, pos + 2)
        length, pos = read_varint(data, pos, "payload length")
    else:
        header, pos = parse_identity(data, pos + (1 if version == 1 else 2))
        if len(data) < pos + _LENGTH.size:
            raise FzFormatError("truncated header")
        length, pos = _LENGTH.unpack_from(data, pos)[0], pos + _LENGTH.size
    end = pos + (_CRC.size if version >= 3 else 0)
    if len(data) < end:
        raise FzFormatError("truncated header")
    stream = data[end:]
    if len(stream) < length:
        raise FzFormatError(f"truncated data: header announces {length} payload bytes, file has {len(stream)}")
    if len(stream) > length:
        raise FzFormatError(f"{len(stream) - length} stray bytes after the payload")
    if version >= 3 and crc32(data[: end - _CRC.size], stream) != _CRC.unpack_from(data, end - _CRC.size)[0]:
        raise FzFormatError("checksum mismatch: the file is damaged (the CRC32 of its header and payload is "
                            "not the one it carries)")
    return header, stream, coding


def pack_record_body(header: FzHeader, payload: bytes) -> bytes:
    """An archive record before LZMA2: the record version, then a CRC32 of the header (which the
    index row holds, not the record) and the payload, then the payload."""
    version = bytes([RECORD_VERSION])
    return version + _CRC.pack(crc32(header.identity(), version, payload)) + payload



def unpack_record_body(body: bytes, expected: FzHeader) -> bytes:
    """The payload of a version 3 record body whose index row gives ``expected``."""
    if len(body) < RECORD_HEADER_BYTES or body[0] != RECORD_VERSION:
        raise FzFormatError(f"unknown record version {body[0] if body else None} (this facezip reads "
                            f"versions 1–{RECORD_VERSION})")
    payload = body[RECORD_HEADER_BYTES:]
    if crc32(expected.identity(), body[:1], payload) != _CRC.unpack_from(body, 1)[0]:
        raise FzFormatError("record checksum mismatch: the record is damaged, or its index row names another "
                            "codec, weights or size (the CRC32 of header and payload is not the one it carries)")
    return payload


def unpack_legacy_record(data: bytes, expected: FzHeader, padded: bool) -> bytes:
    """The payload of a version 1 or 2 record (``FZR``, version, the header spelled out, a CRC32
    from version 2); ``padded``: it came out of xz, whose records zero-padded the header to 16."""
    if data[: len(LEGACY_RECORD_MAGIC)] != LEGACY_RECORD_MAGIC or len(data) < len(LEGACY_RECORD_MAGIC) + 2:
        raise FzFormatError("not an archive record (wrong magic bytes)")
    version = data[3]
    if version not in (1, 2):
        raise FzFormatError(f"unknown record version {version} (this facezip reads versions 1–{RECORD_VERSION})")
    header, pos = parse_identity(data, 4)
    end = pos + (_CRC.size if version == 2 else 0)
    if len(data) < end:
        raise FzFormatError("truncated record header")
    payload = data[end + (-end % LEGACY_HEADER_ALIGN if padded else 0) :]
    if version == 2 and crc32(data[:pos], payload) != _CRC.unpack_from(data, pos)[0]:
        raise FzFormatError("record checksum mismatch: the record is damaged (the CRC32 of its header and "
                            "payload is not the one it carries)")
    if header != expected:
        raise FzFormatError(f"record header says {header.codec}/{header.weights_hash} {header.height}×{header.width}"
                            f", the index {expected.codec}/{expected.weights_hash} {expected.height}×{expected.width}")
    return payload
