"""A shard as one standard ``.xz`` stream whose single block strings its records together.

A record is its body (``models.container.pack_record_body``) as raw LZMA2 chunks that begin
with a dictionary, state and properties reset and lack LZMA2's end marker: a decoder meets each
record as if the block started there, so one ranged read of a record + the end marker decodes
it alone, and the whole shard passes ``xz -t``. The frame around the records is written here by
hand, after the .xz file format specification (tukaani.org/xz/xz-file-format.txt) — Python's
lzma cannot make one block out of separately compressed parts:

    stream header | block header | records… | 0x00 end marker, block padding, CRC32 of the
    records' bodies | index (one record: the block's unpadded and uncompressed sizes) | footer
"""

from __future__ import annotations

import lzma
import struct

from facezip.models.container import LZMA2_DECODER, XZ_FILTERS, crc32, xz_decompress

_MAGIC, _FOOTER_MAGIC = b"\xfd7zXZ\x00", b"YZ"
_FLAGS = b"\x00\x01"  # stream flags: the block check is a CRC32 (Python's lzma exposes no CRC64)
_CHECK = struct.Struct("<I")
END_MARKER = b"\x00"
_CHUNK = 1 << 16  # the most bytes an uncompressed LZMA2 chunk holds
# control bytes that open a chunk resetting the dictionary: uncompressed, or LZMA with new properties
_RESET_CONTROLS = (0x01, 0xE0)


def _crc(*parts: bytes) -> bytes:
    return _CHECK.pack(crc32(*parts))


def _varint(value: int) -> bytes:
    """The spec's multibyte integer: 7 bits a byte, low bits first, the top bit says more follow."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _dict_size_byte(size: int) -> int:
    """LZMA2's one property byte: dictionary sizes 2^n and 3·2^(n-1) as ``(2 | b & 1) << (b // 2 + 11)``."""
    return next(b for b in range(41) if (2 | b & 1) << (b // 2 + 11) >= size)


def _block_header() -> bytes:
    """No sizes in the header (the index has them), one filter: LZMA2 (0x21) with the records'
    dictionary size, padded to a multiple of 4, then its CRC32; the first byte is its size / 4 - 1."""
    fields = b"\x00" + b"\x21\x01" + bytes([_dict_size_byte(LZMA2_DECODER["dict_size"])])
    body = fields + bytes(-(len(fields) + 1 + 4) % 4)
    size = 1 + len(body) + 4
    head = bytes([size // 4 - 1]) + body
    return head + _crc(head)


_BLOCK_HEADER = _block_header()
STREAM_HEAD = _MAGIC + _FLAGS + _crc(_FLAGS) + _BLOCK_HEADER  # the same bytes before every shard's records


def pack_chunks(body: bytes, lzma2_options: dict[str, int] | None = None, stored: bool = False) -> bytes:
    """``body`` as a record's LZMA2 chunks: compressed with the codec's options, or for ``stored``
    (entropy-coded) payloads uncompressed chunks, 3 bytes of framing per 64 KiB."""
    if stored:  # control byte 0x01: uncompressed, dictionary reset; 0x02: uncompressed, continued
        return b"".join(bytes([0x02 if at else 0x01]) + (len(part) - 1).to_bytes(2, "big") + part
                        for at in range(0, len(body), _CHUNK) for part in [body[at : at + _CHUNK]])
    filters = [{**XZ_FILTERS[0], **(lzma2_options or {})}]
    return lzma.compress(body, format=lzma.FORMAT_RAW, filters=filters)[: -len(END_MARKER)]


def is_chunked(record: bytes) -> bool:
    """A record of this layout (version 3): older ones begin with xz's magic or ``FZR``."""
    return bool(record) and record[0] in _RESET_CONTROLS


def unpack_chunks(record: bytes, max_length: int) -> bytes:
    """The body of one record, read alone; more than ``max_length`` bytes is refused."""
    return xz_decompress(record + END_MARKER, max_length, raw_lzma2=True)


def _stream_tail(records_length: int, bodies: list[bytes]) -> bytes:
    """What follows ``records_length`` bytes of records whose bodies are ``bodies``."""
    block_data = len(_BLOCK_HEADER) + records_length + len(END_MARKER)
    check = _crc(*bodies)
    block_end = END_MARKER + bytes(-block_data % 4) + check
    index = b"\x00" + _varint(1) + _varint(block_data + len(check)) + _varint(sum(map(len, bodies)))
    index += bytes(-len(index) % 4)
    index += _crc(index)
    footer_fields = _CHECK.pack(len(index) // 4 - 1) + _FLAGS
    return block_end + index + _crc(footer_fields) + footer_fields + _FOOTER_MAGIC


def pack_shard(records: list[bytes]) -> bytes:
    """The shard file of ``records`` (each from ``pack_chunks``), one xz stream; each record is
    decoded once for the block's CRC32 and size, so a record that does not decode alone fails here."""
    bodies = [lzma.decompress(record + END_MARKER, format=lzma.FORMAT_RAW, filters=[LZMA2_DECODER])
              for record in records]
    return STREAM_HEAD + b"".join(records) + _stream_tail(sum(map(len, records)), bodies)

