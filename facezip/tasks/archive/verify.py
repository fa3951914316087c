"""``run_verify``: every record and the index/shard consistency, reporting each damaged record by id.

Checks per record: inside its shard, sha256, xz integrity, a decodable header that agrees
with the index (codec, weights of its rung) and, for lossless fallbacks, a PNG of the right
size. Per shard: its index part matches the sha256 in its stats, records neither overlap nor
leave gaps, no bytes after the last record. Per archive: it exists and is not empty, no shard
file that no index part commits, no committed shard missing. A problem in one record or part
never stops the others from being checked.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from omegaconf import DictConfig
from tqdm import tqdm

from facezip.infra.storage import Storage
from facezip.models.container import FzFormatError
from facezip.tasks.archive.integrity import archive_problems, load_index
from facezip.tasks.archive.layout import LOSSLESS_CODEC, shard_url, unpack_record
from facezip.tasks.archive.restore import check_png_size
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
                                                              "shard_problems"), uses_ray=False, writes_output=False)


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
    expected = 0
    for row in rows:
        error = _check_record(row, data, expected, max_pixels)
        if row["offset"] > expected:
            problem(f"bytes {expected}..{row['offset']} belong to no record")
        if error:
            damaged.append({"id": row["id"], "version": row["version"], "shard": shard, "offset": row["offset"],
                            "problem": error})
        expected = max(expected, row["offset"] + row["length"])
    if len(data) > expected:
        problem(f"{len(data) - expected} orphan bytes after the last record")
    return len(rows)


def _check_record(row: dict, data: bytes, expected_offset: int, max_pixels: int) -> str | None:
    start, end = row["offset"], row["offset"] + row["length"]
    if start < expected_offset:
        return f"overlaps the previous record (starts at {start}, previous ends at {expected_offset})"
    if end > len(data):
        return f"extends past the end of the shard (bytes {start}..{end}, shard has {len(data)})"
    record = data[start:end]
    if hashlib.sha256(record).hexdigest() != row["sha256"]:
        return "sha256 does not match the index"
    try:
        header, payload = unpack_record(record, row["height"], row["width"], max_pixels)
        if header.codec == LOSSLESS_CODEC:
            check_png_size(header, payload)
    except FzFormatError as exc:
        return str(exc)
    if (header.codec, header.weights_hash) != (row["codec"], row["weights_hash"]):
        return f"header names {header.codec}/{header.weights_hash}, the index {row['codec']}/{row['weights_hash']}"
    if bool(row["lossless_fallback"]) != (header.codec == LOSSLESS_CODEC):
        return f"index says lossless_fallback={row['lossless_fallback']}, the record is {header.codec}"
    return None


def _duplicate_versions(index) -> list[dict]:
    keys = Counter(zip(index["id"].to_pylist(), index["version"].to_pylist()))
    return [{"id": image_id, "version": version, "shard": None, "offset": None,
             "problem": f"{count} index rows share this id and version"}
            for (image_id, version), count in keys.items() if count > 1]
