"""Cutting the stream of encoded records into shards and committing each one exactly once.

Records arrive in input order; a shard closes after ``records_per_shard`` records or
``target_bytes``, whichever comes first. Rejected inputs are listed in the stats of the shard
that is open when they arrive, but never count towards a cut, so the cut points depend only on
the archived records: a rerun that skips the committed prefix cuts the rest identically.

Commit order per shard: the shard file, its stats (with the sha256 of the index part to come),
then its index part. The index part is the commit: until it exists nothing refers to the shard
file, and a rerun rewrites it.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
from tqdm import tqdm

from facezip.infra.storage import Storage
from facezip.models.coding import bits_per_pixel
from facezip.tasks.archive.floor import IdentityTally
from facezip.tasks.archive.integrity import INDEX_SHA256
from facezip.tasks.archive.layout import (INDEX_SCHEMA, index_url, json_bytes, parquet_bytes, shard_url,
                                          stats_url)

# how each record was coded, as the encoder reports it (the rung can differ from record to record)
_CODING_FIELDS = ("codec", "model", "weights_hash", "level", "identity_similarity", "lossless_fallback",
                  "identity_scores")


class ShardWriter:
    def __init__(self, root: str, storage: Storage, first_shard: int, records_per_shard: int,
                 target_bytes: int, progress: bool = True) -> None:
        self.root, self.storage = root, storage
        self.records_per_shard, self.target_bytes = records_per_shard, target_bytes
        self.next_shard = first_shard
        self.seen_ids: set[str] = set()
        self.totals: Counter = Counter()
        self.failures: Counter = Counter()
        self.rejected: list[dict] = []
        self.identity = IdentityTally()
        self.written: list[int] = []
        self.bar = tqdm(desc="archive", unit="img", disable=not progress)
        self._open()

    def add(self, batch: pa.Table) -> None:
        for row in batch.to_pylist():
            self.bar.update(1)
            if row["status"] == "skipped":
                self.totals["skipped"] += 1
                continue
            if row["id"] in self.seen_ids:
                row.update(status="rejected", reason="duplicate_id",
                           detail=f"another input of this run already has id {row['id']!r}")
            self.seen_ids.add(row["id"])
            if row["status"] == "rejected":
                self._reject(row)
            else:
                self._append(row)
            if len(self.rows) >= self.records_per_shard or self.offset >= self.target_bytes:
                self._commit()

    def close(self) -> None:
        """Commit the open shard if anything (records or rejects) is in it."""
        if self.rows or self.shard_rejects:
            self._commit()
        self.bar.close()

    def _open(self) -> None:
        self.rows: list[dict] = []
        self.chunks: list[bytes] = []
        self.shard_rejects: list[dict] = []
        self.offset = 0
        self.payload_bytes = 0
        self.started = time.monotonic()

    def _reject(self, row: dict) -> None:
        entry = {k: row[k] for k in ("id", "source_uri", "reason", "detail")}
        self.shard_rejects.append(entry)
        self.rejected.append(entry)
        self.failures[row["reason"]] += 1
        self.totals["rejected"] += 1

    def _append(self, row: dict) -> None:
        record = row["record"]
        self.rows.append({
            "id": row["id"], "version": row["version"], "source_uri": row["source_uri"],
            "source_sha256": row["source_sha256"], "identity": row["identity"], "split": row["split"],
            "shard": self.next_shard, "offset": self.offset, "length": len(record), "height": row["height"],
            "width": row["width"], **{k: row[k] for k in _CODING_FIELDS}, "sha256": hashlib.sha256(record).hexdigest(),
            "bpp": bits_per_pixel(len(record), row["height"], row["width"]),
            "payload_bytes": row["payload_bytes"], "archived_at": datetime.now(timezone.utc), "notes": row["detail"],
        })
        self.identity.add(row)
        self.chunks.append(record)
        self.offset += len(record)
        self.payload_bytes += row["payload_bytes"]
        self.totals["archived"] += 1

    def _commit(self) -> None:
        shard = self.next_shard
        if self.chunks:
            self.storage.write_bytes_atomic(shard_url(self.root, shard), b"".join(self.chunks))
        index = parquet_bytes(pa.Table.from_pylist(self.rows, schema=INDEX_SCHEMA))
        # the stats carry the index part's sha256, so readers can trust the part before its rows
        stats = {**self._stats(shard), INDEX_SHA256: hashlib.sha256(index).hexdigest()}
        self.storage.write_bytes_atomic(stats_url(self.root, shard), json_bytes(stats))
        self.storage.write_bytes_atomic(index_url(self.root, shard), index)
        self.totals["bytes"] += self.offset
        self.totals["payload_bytes"] += self.payload_bytes
        self.written.append(shard)
        self.next_shard += 1
        self._open()

    def _stats(self, shard: int) -> dict:
        return {"shard": shard, "records": len(self.rows), "bytes": self.offset, "payload_bytes": self.payload_bytes,
                "failures": dict(Counter(r["reason"] for r in self.shard_rejects)), "rejected": self.shard_rejects,
                "duration_s": round(time.monotonic() - self.started, 3)}
