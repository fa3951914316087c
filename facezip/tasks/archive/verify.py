"""``run_verify``: every record and the index/shard consistency, reporting each damaged record by id.

Checks per record: inside its shard, sha256, LZMA2 (or, in older archives, xz) integrity, the
CRC32 of its header (as its index row gives it: codec, weights of its rung, size) and payload
and what its codec can check of a payload without decoding (the lossless fallback: a PNG of the
right size). Per shard: its index part matches the
sha256 in its stats, records neither overlap nor leave gaps, and the file is one valid xz
stream that ends right after its last record's frame (older archives: no bytes after the last
record). Per archive: it exists and is not empty, no shard
file that no index part commits, no committed shard missing. A problem in one record or part
never stops the others from being checked.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from omegaconf import DictConfig
from tqdm import tqdm

from facezip.infra.storage import Storage
from facezip.models.container import FzFormatError, xz_decompress
from facezip.models.lossless import LosslessCodec
from facezip.models.registry import available_codecs, codec_class
from facezip.tasks.archive.integrity import archive_problems, load_index
from facezip.tasks.archive.layout import max_body_bytes, row_header, shard_url, unpack_record
from facezip.tasks.archive.xzblock import END_MARKER, STREAM_HEAD
from facezip.tasks.stage import StageContext, StageSpec, run_stage


def run_verify(cfg: DictConfig, dest: str, progress: bool = True) -> dict:
    """Returns ``{"ok", "shards", "records", "damaged": [{id, version, shard, offset, problem}],
    "shard_problems": [{shard, problem}]}``."""
    return run_stage(VERIFY_STAGE, cfg, None, progress, dest=dest)


def verify(ctx: StageContext, dest: str) -> dict:
    """The stage's work: every record, shard and index part of the archive at ``dest`` checked in place."""
    storage, progress, cfg = ctx.storage, ctx.progress, ctx.cfg
    index = load_index(dest, storage)
    damaged: list[dict] = []
    shard_problems: list[dict] = archive_problems(dest, storage) + index.problems
    records = 0
    for shard, part in tqdm(sorted(index.parts.items()), desc="verify", unit="shard", disable=not progress):
        records += _verify_shard(dest, shard, part.to_pylist(), storage, damaged, shard_problems,
                                 cfg.codec.max_decode_pixels)
    damaged += _duplicate_versions(index.table)
    summary = {"dest": dest, "ok": not damaged and not shard_problems,
               "shards": len(index.parts) + len(index.problems), "records": records,
               "damaged": damaged, "shard_problems": shard_problems}
    ctx.log_metrics({"records": records, "damaged": len(damaged), "shard_problems": len(shard_problems)})
    return summary


VERIFY_STAGE = StageSpec("verify", verify, None, result_keys=("dest", "ok", "shards", "records", "damaged",
                                                              "shard_problems"), uses_ray=False)


def _verify_shard(dest: str, shard: int, rows: list[dict], storage: Storage, damaged: list,
                  shard_problems: list, max_pixels: int) -> int:
    def problem(text: str) -> None:
        shard_problems.append({"shard": shard, "problem": text})

    rows = sorted(rows, key=lambda r: r["offset"])
    try:
        data = storage.read_bytes(shard_url(dest, shard)) if rows else b""
    except FileNotFoundError:
        problem("shard file missing")
        data = b""
    # a shard of record version 3 is one xz stream, its records after the stream and block
    # headers; older shards held their records back to back from byte 0
    framed = bool(rows) and rows[0]["offset"] != 0
    expected, damaged_before = len(STREAM_HEAD) if framed else 0, len(damaged)
    for row in rows:
        error = _check_record(row, data, expected, max_pixels)
        if row["offset"] > expected:
            problem(f"bytes {expected}..{row['offset']} belong to no record")
        if error:
            damaged.append({"id": row["id"], "version": row["version"], "shard": shard, "offset": row["offset"],
                            "problem": error})
        expected = max(expected, row["offset"] + row["length"])
    if not framed and len(data) > expected:
        problem(f"{len(data) - expected} orphan bytes after the last record")
    elif framed and data and len(damaged) == damaged_before:  # a damaged record already breaks the stream
        error = _stream_error(data, expected, rows)
        if error:
            problem(error)
    return len(rows)


def _stream_error(data: bytes, records_end: int, rows: list[dict]) -> str | None:
    """Why a shard whose records all check out is not one valid xz stream ending with them, or None."""
    if data[records_end : records_end + 1] != END_MARKER:
        return f"bytes from {records_end} on, before the xz block ends, belong to no record"
    try:  # liblzma checks the headers, the block's CRC32 over every record, the index and the footer
        xz_decompress(data, sum(max_body_bytes(row["height"], row["width"]) for row in rows))
    except FzFormatError as exc:
        return f"the shard is not a valid xz stream: {exc}"
    return None


def _check_record(row: dict, data: bytes, expected_offset: int, max_pixels: int) -> str | None:
    start, end = row["offset"], row["offset"] + row["length"]
    if start < expected_offset:
        return f"overlaps the previous record (starts at {start}, previous ends at {expected_offset})"
    if end > len(data):
        return f"extends past the end of the shard (bytes {start}..{end}, shard has {len(data)})"
    record = data[start:end]
    if hashlib.sha256(record).hexdigest() != row["sha256"]:
        return "sha256 does not match the index"
    header = row_header(row)
    try:
        payload = unpack_record(record, header, max_pixels)
        if header.codec in available_codecs(fixed=True):
            codec_class(header.codec).check_payload(payload, header.height, header.width)
    except FzFormatError as exc:
        return str(exc)
    if bool(row["lossless_fallback"]) != (header.codec == LosslessCodec.name):
        return f"index says lossless_fallback={row['lossless_fallback']}, the record is {header.codec}"
    return None


def _duplicate_versions(index) -> list[dict]:
    keys = Counter(zip(index["id"].to_pylist(), index["version"].to_pylist()))
    return [{"id": image_id, "version": version, "shard": None, "offset": None,
             "problem": f"{count} index rows share this id and version"}
            for (image_id, version), count in keys.items() if count > 1]
