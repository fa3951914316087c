"""Where an archive keeps its parts, the record format, and the index schema.

An archive root holds ``shards/NNNNN.xz`` (records back to back), ``index/NNNNN.parquet``
(one row per record of that shard; its presence is what commits the shard),
``stats/NNNNN.json`` (per-shard counts, failures, duration), ``manifests/<run>.json`` and
``_SUCCESS.json``. Byte layout in ARCHITECTURE.md.
"""

from __future__ import annotations

import json
import posixpath
import struct

import pyarrow as pa

from facezip.infra.storage import Storage, join
from facezip.models.container import (
    DEFAULT_MAX_DECODE_PIXELS,
    FzFormatError,
    FzHeader,
    check_decode_size,
    check_dimensions,
    crc32,
    max_payload_bytes,
    xz_compress,
    xz_decompress,
)

SHARDS, INDEX, STATS, MANIFESTS, SUCCESS = "shards", "index", "stats", "manifests", "_SUCCESS.json"
RECORD_MAGIC = b"FZR"
RECORD_VERSION = 2  # 2 added a CRC32 of header and payload; version 1 records still read
_DIMS = struct.Struct("<II")  # height, width
_CRC = struct.Struct("<I")
# The header is zero-padded to this multiple so the payload keeps the alignment the codec's
# LZMA2 options (lp/pb) assume, as at the start of a .fz stream.
HEADER_ALIGN = 16
MAX_HEADER_BYTES = len(RECORD_MAGIC) + 2 + 255 + 8 + _DIMS.size + _CRC.size + HEADER_ALIGN

IDENTITY_SCORES = pa.map_(pa.string(), pa.float32())
INDEX_SCHEMA = pa.schema([
    ("id", pa.string()), ("version", pa.int32()), ("source_uri", pa.string()), ("source_sha256", pa.string()),
    ("identity", pa.string()), ("split", pa.string()), ("shard", pa.int32()), ("offset", pa.int64()),
    ("length", pa.int64()), ("height", pa.int32()), ("width", pa.int32()), ("codec", pa.string()),
    ("model", pa.string()), ("weights_hash", pa.string()), ("sha256", pa.string()), ("bpp", pa.float64()),
    ("payload_bytes", pa.int64()), ("archived_at", pa.timestamp("ms", tz="UTC")),
    # rung of the rate ladder (null: no ladder, or a lossless fallback); FaceNet cosine of the
    # stored face to its original (null without an identity floor judged by facenet); lossless PNG
    # instead of a codec; each floor judge's measure of the stored face (dlib-resnet: distance, …)
    ("level", pa.int32()), ("identity_similarity", pa.float32()), ("lossless_fallback", pa.bool_()),
    ("identity_scores", IDENTITY_SCORES),
    # what decoding the input noted: conversions, or damage kept with archive.accept_damaged
    ("notes", pa.string()),
])
# A face no rung keeps above the identity floor is stored as PNG bytes under this codec name.
LOSSLESS_CODEC, LOSSLESS_WEIGHTS_HASH = "png", "0" * 16


def part_name(shard: int) -> str:
    return f"{shard:05d}"


def shard_url(root: str, shard: int) -> str:
    return join(root, SHARDS, f"{part_name(shard)}.xz")


def index_url(root: str, shard: int) -> str:
    return join(root, INDEX, f"{part_name(shard)}.parquet")


def stats_url(root: str, shard: int) -> str:
    return join(root, STATS, f"{part_name(shard)}.json")


def pack_record(header: FzHeader, payload: bytes, lzma2_options: dict[str, int] | None = None,
                stored: bool = False) -> bytes:
    """One record: an xz stream of (record header + codec payload) with the codec's LZMA2 options,
    or, for ``stored`` (entropy-coded) payloads, header + payload as they are. A reader tells them
    apart by the first bytes: xz's magic or the record's own. The header ends with a CRC32 of
    itself and the payload, checked before the payload is decoded."""
    check_dimensions(header.height, header.width)
    name = header.codec.encode("ascii")
    head = b"".join([RECORD_MAGIC, bytes([RECORD_VERSION, len(name)]), name, bytes.fromhex(header.weights_hash),
                     _DIMS.pack(header.height, header.width)])
    head += _CRC.pack(crc32(head, payload))
    if stored:
        return head + payload
    return xz_compress(head + bytes(-len(head) % HEADER_ALIGN) + payload, lzma2_options)


def max_record_bytes(height: int, width: int) -> int:
    """No record of a ``height``×``width`` image is longer: header, raw payload bound, xz framing."""
    return MAX_HEADER_BYTES + max_payload_bytes(height, width) + 4096


def unpack_record(record: bytes, height: int, width: int,
                  max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> tuple[FzHeader, bytes]:
    """The header and codec payload of a record whose index row says ``height``×``width``.

    The index bounds the xz output, so a damaged record cannot expand without limit; sizes over
    ``max_pixels`` are refused before anything is decompressed."""
    check_dimensions(height, width)
    check_decode_size(height, width, max_pixels)
    limit = MAX_HEADER_BYTES + max_payload_bytes(height, width)
    stored = record[: len(RECORD_MAGIC)] == RECORD_MAGIC
    if stored and len(record) > limit:
        raise FzFormatError(f"stored record of {len(record)} bytes is larger than a {height}×{width} image can need")
    data = record if stored else xz_decompress(record, limit)
    if data[: len(RECORD_MAGIC)] != RECORD_MAGIC or len(data) < len(RECORD_MAGIC) + 2:
        raise FzFormatError("not an archive record (wrong magic bytes)")
    version, name_len = data[3], data[4]
    if version not in (1, RECORD_VERSION):
        raise FzFormatError(f"unknown record version {version} (this facezip reads versions 1–{RECORD_VERSION})")
    dims_at = 5 + name_len + 8
    end = dims_at + _DIMS.size + (_CRC.size if version >= 2 else 0)
    if len(data) < end:
        raise FzFormatError("truncated record header")
    payload = data[end:] if stored else data[end + -end % HEADER_ALIGN :]
    if version >= 2 and crc32(data[: end - _CRC.size], payload) != _CRC.unpack_from(data, end - _CRC.size)[0]:
        raise FzFormatError("record checksum mismatch: the record is damaged (the CRC32 of its header and "
                            "payload is not the one it carries)")
    try:
        codec = data[5 : 5 + name_len].decode("ascii")
    except UnicodeDecodeError:
        raise FzFormatError("codec name in the record header is not ASCII") from None
    rec_height, rec_width = _DIMS.unpack_from(data, dims_at)
    if (rec_height, rec_width) != (height, width):
        raise FzFormatError(f"record header says {rec_height}×{rec_width}, the index says {height}×{width}")
    return FzHeader(codec, data[5 + name_len : dims_at].hex(), height, width), payload


def unsafe_id(image_id: str) -> str | None:
    """Why ``image_id`` cannot name a file below an output folder (``<out>/<id>.png``), or None."""
    if any(part in ("", ".", "..") for part in image_id.split("/")) or "\\" in image_id or "\0" in image_id:
        return "absolute, or with '..', '.', empty parts, a backslash or NUL"
    return None


def committed_shards(root: str, storage: Storage) -> list[int]:
    """Shard numbers whose index part exists (a shard counts only once its index is written)."""
    fs, path = storage.fs(join(root, INDEX))
    if not fs.exists(path):
        return []
    names = [posixpath.basename(p) for p in fs.ls(path, detail=False)]
    return sorted(int(n[: -len(".parquet")]) for n in names if n.endswith(".parquet") and n[:-8].isdigit())


def read_json(url: str, storage: Storage) -> dict:
    return json.loads(storage.read_bytes(url))


def json_bytes(data: dict) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True, default=str).encode()
