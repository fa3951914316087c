"""Where an archive keeps its parts, the record format, and the index schema.

An archive root holds ``shards/NNNNN.xz`` (one xz stream of records, ``xzblock.py``), ``index/NNNNN.parquet``
(one row per record of that shard; its presence is what commits the shard),
``stats/NNNNN.json`` (per-shard counts, failures, duration), ``manifests/<run>.json`` and
``_SUCCESS.json``. Byte layout in FORMATS.md.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa

from facezip.infra.storage import Storage, join
from facezip.models.container import (
    DEFAULT_MAX_DECODE_PIXELS,
    LEGACY_HEADER_ALIGN,
    LEGACY_RECORD_MAGIC,
    FzFormatError,
    FzHeader,
    check_decode_size,
    check_dimensions,
    max_payload_bytes,
    pack_record_body,
    unpack_legacy_record,
    unpack_record_body,
    xz_decompress,
)
from facezip.tasks.archive.xzblock import is_chunked, pack_chunks, unpack_chunks

SHARDS, INDEX, STATS, MANIFESTS = "shards", "index", "stats", "manifests"
# the longest record header of any version: version 2's, with a 255-byte codec name and padding
MAX_HEADER_BYTES = len(LEGACY_RECORD_MAGIC) + 2 + 255 + 8 + 8 + 4 + LEGACY_HEADER_ALIGN

IDENTITY_SCORES = pa.map_(pa.string(), pa.float32())
INDEX_SCHEMA = pa.schema([
    ("id", pa.string()), ("version", pa.int32()), ("source_uri", pa.string()), ("source_sha256", pa.string()),
    ("identity", pa.string()), ("split", pa.string()), ("shard", pa.int32()), ("offset", pa.int64()),
    ("length", pa.int64()), ("height", pa.int32()), ("width", pa.int32()), ("codec", pa.string()),
    ("model", pa.string()), ("weights_hash", pa.string()), ("sha256", pa.string()), ("bpp", pa.float64()),
    ("payload_bytes", pa.int64()), ("archived_at", pa.timestamp("ms", tz="UTC")),
    # rung of the rate ladder (null: no ladder, a searched quality, or a lossless fallback); the quality
    # a variable-rate codec coded it at (null: fixed-rate, lossless, or written before the column);
    # FaceNet cosine of the stored face to its original (null without an identity floor judged by
    # facenet); lossless PNG instead of a codec; each floor judge's measure of the stored face
    ("level", pa.int32()), ("quality", pa.float32()), ("identity_similarity", pa.float32()),
    ("lossless_fallback", pa.bool_()), ("identity_scores", IDENTITY_SCORES),
    # what decoding the input noted: conversions, or damage kept with archive.accept_damaged
    ("notes", pa.string()),
])


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
    """One record (version 3): the record body as LZMA2 chunks, compressed with the codec's LZMA2
    options or, for ``stored`` (entropy-coded) payloads, uncompressed. The header itself lives in
    the index row; the body's CRC32 covers it and is checked before the payload is decoded."""
    return pack_chunks(pack_record_body(header, payload), lzma2_options, stored)


def max_record_bytes(height: int, width: int) -> int:
    """No record of a ``height``×``width`` image is longer: header, raw payload bound, LZMA2 or xz framing."""
    most = max_body_bytes(height, width)
    return most + most // 1024 + 4096


def max_body_bytes(height: int, width: int) -> int:
    """No record of a ``height``×``width`` image decompresses to more."""
    return MAX_HEADER_BYTES + max_payload_bytes(height, width)


def row_header(row: dict) -> FzHeader:
    """The header of a record, as its index row holds it."""
    return FzHeader(row["codec"], row["weights_hash"], row["height"], row["width"])


def unpack_record(record: bytes, expected: FzHeader, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> bytes:
    """The codec payload of a record whose index row gives ``expected`` (``row_header``).

    The index bounds the decompressed size, so a damaged record cannot expand without limit; sizes
    over ``max_pixels`` are refused before anything is decompressed. Records of versions 1 and 2
    (an xz stream each, or ``FZR`` + header + payload as they are) still read."""
    check_dimensions(expected.height, expected.width)
    check_decode_size(expected.height, expected.width, max_pixels)
    limit = max_body_bytes(expected.height, expected.width)
    if is_chunked(record):
        return unpack_record_body(unpack_chunks(record, limit), expected)
    stored = record[: len(LEGACY_RECORD_MAGIC)] == LEGACY_RECORD_MAGIC
    if stored and len(record) > limit:
        raise FzFormatError(f"stored record of {len(record)} bytes is larger than a "
                            f"{expected.height}×{expected.width} image can need")
    return unpack_legacy_record(record if stored else xz_decompress(record, limit), expected, padded=not stored)


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
