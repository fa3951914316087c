"""The archive's worker: one slice of inputs → one shard, committed by the worker itself.

Shard ``base + n`` holds input slice ``n`` of a run (``archive.records_per_shard`` inputs), so
which records a shard holds, and their bytes, do not depend on which worker ran it or when: a
rerun after a crash redoes exactly the slices whose shards were not committed.

Commit order per shard: the shard file, its stats (with the sha256 of the index part to come),
then its index part. The index part is the commit: until it exists nothing refers to the shard
file, and a rerun rewrites it.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from facezip.infra.readers import read_bytes
from facezip.infra.slices import InputSlice
from facezip.infra.storage import Storage, parquet_bytes
from facezip.models.coding import bits_per_pixel
from facezip.tasks.archive.encode import ArchiveEncoder, EncoderSettings
from facezip.tasks.archive.integrity import INDEX_SHA256
from facezip.tasks.archive.layout import INDEX_SCHEMA, index_url, json_bytes, shard_url, stats_url
from facezip.tasks.archive.plan import INPUTS_SHA256, slice_fingerprint
from facezip.tasks.archive.tally import IdentityTally
from facezip.tasks.archive.xzblock import STREAM_HEAD, pack_shard

# how each record was coded, as the encoder reports it (the rung can differ from record to record)
_CODING_FIELDS = ("codec", "model", "weights_hash", "level", "quality", "identity_similarity",
                  "lossless_fallback", "identity_scores")


@dataclass
class ShardResult:
    """What the driver needs of a committed shard (its records stay with the worker)."""

    shard: int
    inputs: int
    archived: int = 0
    bytes: int = 0  # of the shard file
    payload_bytes: int = 0
    rejected: list[dict] = field(default_factory=list)  # id, source_uri, reason, detail
    identity: IdentityTally = field(default_factory=IdentityTally)


class ArchiveWorker:
    """Setup: the codecs and judges (``ArchiveEncoder``). Per slice: read, encode in batches, commit."""

    def __init__(self, settings: EncoderSettings, root: str, storage: Storage, archived_at: datetime) -> None:
        self.encoder = ArchiveEncoder(settings)
        self.batch_size, self.root, self.storage, self.archived_at = settings.batch_size, root, storage, archived_at

    def process(self, job: tuple[int, InputSlice]) -> ShardResult:
        shard, inputs = job
        started = time.monotonic()
        rows = read_bytes(inputs.refs, self.storage)
        builder = ShardBuilder(shard, len(inputs), slice_fingerprint(inputs.refs), self.archived_at)
        for start in range(0, len(rows), self.batch_size):
            builder.add(self.encoder(rows.slice(start, self.batch_size)))
        return builder.commit(self.root, self.storage, time.monotonic() - started)


class ShardBuilder:
    """The records, index rows and rejects of one shard, in input order."""

    def __init__(self, shard: int, inputs: int, inputs_sha256: str, archived_at: datetime) -> None:
        self.result = ShardResult(shard, inputs)
        self.inputs_sha256, self.archived_at = inputs_sha256, archived_at
        self.rows: list[dict] = []
        self.records: list[bytes] = []
        self.end = len(STREAM_HEAD)  # where the next record starts in the shard file

    def add(self, batch: pa.Table) -> None:
        for row in batch.to_pylist():
            if row["status"] == "rejected":
                self.result.rejected.append({k: row[k] for k in ("id", "source_uri", "reason", "detail")})
            else:
                self._append(row)

    def _append(self, row: dict) -> None:
        record = row["record"]
        result = self.result
        self.rows.append({
            "id": row["id"], "version": row["version"], "source_uri": row["source_uri"],
            "source_sha256": row["source_sha256"], "identity": row["identity"], "split": row["split"],
            "shard": result.shard, "offset": self.end, "length": len(record), "height": row["height"],
            "width": row["width"], **{k: row[k] for k in _CODING_FIELDS}, "sha256": hashlib.sha256(record).hexdigest(),
            "bpp": bits_per_pixel(len(record), row["height"], row["width"]),
            "payload_bytes": row["payload_bytes"], "archived_at": self.archived_at, "notes": row["detail"],
        })
        result.identity.add(row)
        self.records.append(record)
        self.end += len(record)
        result.archived += 1
        result.payload_bytes += row["payload_bytes"]

    def commit(self, root: str, storage: Storage, duration: float) -> ShardResult:
        shard = self.result.shard
        if self.records:
            data = pack_shard(self.records)
            self.result.bytes = len(data)
            storage.write_bytes_atomic(shard_url(root, shard), data)
        index = parquet_bytes(pa.Table.from_pylist(self.rows, schema=INDEX_SCHEMA))
        # the stats carry the index part's sha256, so readers can trust the part before its rows
        stats = {**self._stats(duration), INDEX_SHA256: hashlib.sha256(index).hexdigest()}
        storage.write_bytes_atomic(stats_url(root, shard), json_bytes(stats))
        storage.write_bytes_atomic(index_url(root, shard), index)
        return self.result

    def _stats(self, duration: float) -> dict:
        result = self.result
        return {"shard": result.shard, "inputs": result.inputs, INPUTS_SHA256: self.inputs_sha256,
                "records": result.archived, "bytes": result.bytes, "payload_bytes": result.payload_bytes,
                "failures": dict(Counter(r["reason"] for r in result.rejected)), "rejected": result.rejected,
                "duration_s": round(duration, 3)}
