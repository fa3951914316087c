"""What a run archives, in which shard: the run journal, what to skip, and the slices.

A run numbers its shards from ``base``: input slice ``n`` (``records_per_shard`` inputs not
skipped, in listing order) becomes shard ``base + n``. The journal ``_RUN.json`` keeps ``base``,
the listing's fingerprint and the run's timestamp until the run succeeds, so a rerun of the same
command after a crash makes the same plan, skips the slices already committed and writes the
others byte for byte as the interrupted run would have. What to skip is decided from the shards
before ``base`` only: the archive as it was when the run began.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from facezip.infra.readers import Reader, read_bytes
from facezip.infra.slices import InputSlice, cut_slices
from facezip.infra.storage import Storage, join
from facezip.tasks.archive.encode import DUPLICATE_COLUMN
from facezip.tasks.archive.integrity import read_index
from facezip.tasks.archive.layout import committed_shards, json_bytes, read_json, stats_url

RUN_JOURNAL = "_RUN.json"
INPUTS_SHA256 = "inputs_sha256"  # the stats key: fingerprint of the slice a shard was made from
_HASH_LOOKAHEAD = 8  # incremental runs: ref tables being hashed in Ray tasks ahead of the slicer


class PlanError(RuntimeError):
    """A rerun cannot resume the interrupted run it finds in the destination."""


@dataclass(frozen=True)
class Journal:
    src: str
    incremental: bool
    records_per_shard: int
    listing_sha256: str
    base_shard: int
    started_at: str  # ISO 8601 UTC: every index row of the run has it as archived_at

    @property
    def archived_at(self) -> datetime:
        return datetime.fromisoformat(self.started_at)


def open_journal(dest: str, storage: Storage, src: str, incremental: bool, records_per_shard: int,
                 listing_sha256: str) -> tuple[Journal, bool]:
    """The interrupted run's journal when it is this run's (resuming), else a new one; and whether resuming."""
    url = join(dest, RUN_JOURNAL)
    if storage.exists(url):
        try:
            journal = Journal(**read_json(url, storage))
        except (TypeError, ValueError):  # unreadable: start afresh after what is committed
            journal = None
        if journal and (journal.src, journal.incremental, journal.records_per_shard, journal.listing_sha256) == (
                src, incremental, records_per_shard, listing_sha256):
            return journal, True
    shards = committed_shards(dest, storage)
    journal = Journal(src, incremental, records_per_shard, listing_sha256, shards[-1] + 1 if shards else 0,
                      _run_time().isoformat(timespec="milliseconds"))
    storage.write_bytes_atomic(url, json_bytes(asdict(journal)))
    return journal, False


def _run_time() -> datetime:
    """Now, or $SOURCE_DATE_EPOCH (reproducible-builds.org) for archives that must match byte for byte."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)


def listing_fingerprint(reader: Reader) -> tuple[int, str]:
    """How many inputs ``reader`` lists, and a sha256 of their ids and source URIs (streamed)."""
    digest, count = hashlib.sha256(), 0
    for table in reader.ref_tables():
        digest.update(_identities(table))
        count += table.num_rows
    return count, digest.hexdigest()


def slice_fingerprint(refs: pa.Table) -> str:
    return hashlib.sha256(_identities(refs)).hexdigest()


def _identities(refs: pa.Table) -> bytes:
    """What identifies a run's inputs: their ids and source URIs, in order."""
    return json.dumps([refs["id"].to_pylist(), refs["source_uri"].to_pylist()]).encode()


@dataclass
class SkipRules:
    """What the archive held when the run began. Normal runs skip ids already archived or
    rejected; incremental runs skip (source URI, content hash) pairs already archived and give
    a changed source a new version of its id."""

    incremental: bool = False
    done_ids: set[str] = field(default_factory=set)
    archived_keys: set[tuple[str, str]] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def before(cls, dest: str, storage: Storage, incremental: bool, base_shard: int) -> "SkipRules":
        index = read_index(dest, storage)
        index = index.filter(pc.less(index["shard"], base_shard))
        rules = cls(incremental=incremental)
        for image_id, version in zip(index["id"].to_pylist(), index["version"].to_pylist()):
            rules.versions[image_id] = max(version, rules.versions.get(image_id, 0))
        if incremental:
            rules.archived_keys = set(zip(index["source_uri"].to_pylist(), index["source_sha256"].to_pylist()))
        else:
            rules.done_ids = set(rules.versions)
            for shard in (s for s in committed_shards(dest, storage) if s < base_shard):
                rules.done_ids.update(r["id"] for r in read_json(stats_url(dest, shard), storage)["rejected"])
        return rules


@dataclass
class Planner:
    """Streams a reader's refs into the run's slices: skipped inputs counted and left out,
    repeated ids flagged (the worker rejects them), incremental content hashed in Ray tasks."""

    rules: SkipRules
    storage: Storage
    skipped: int = 0
    seen_ids: set[str] = field(default_factory=set)

    def slices(self, reader: Reader, rows_per_slice: int) -> Iterator[InputSlice]:
        tables = self._hashed(reader.ref_tables()) if self.rules.incremental else (
            (t, None) for t in reader.ref_tables())
        return cut_slices((self._kept(table, hashes) for table, hashes in tables), rows_per_slice)

    def _kept(self, table: pa.Table, hashes: list[str | None] | None) -> pa.Table:
        ids, uris = table["id"].to_pylist(), table["source_uri"].to_pylist()
        if hashes is None:
            keep = [i not in self.rules.done_ids for i in ids]
        else:
            keep = [(uri, sha) not in self.rules.archived_keys for uri, sha in zip(uris, hashes)]
        self.skipped += keep.count(False)
        duplicate = [False] * len(ids)
        for row, (image_id, kept) in enumerate(zip(ids, keep)):
            if kept:
                duplicate[row] = image_id in self.seen_ids
                self.seen_ids.add(image_id)
        table = table.append_column(DUPLICATE_COLUMN, pa.array(duplicate, pa.bool_()))
        return table.filter(pa.array(keep, pa.bool_()))

    def _hashed(self, tables: Iterator[pa.Table]) -> Iterator[tuple[pa.Table, list[str | None]]]:
        """Each table with the content sha256 of its rows whose URI the archive holds (other rows are
        new: None), hashed by Ray tasks a few tables ahead, in listing order."""
        import ray

        archived_uris = {uri for uri, _ in self.rules.archived_keys}
        task = ray.remote(num_cpus=0.25)(_content_sha256)
        window: deque = deque()
        for table in tables:
            wanted = pa.array([uri in archived_uris for uri in table["source_uri"].to_pylist()], pa.bool_())
            hashing = task.remote(table.filter(wanted), self.storage) if wanted.true_count else None
            window.append((table, wanted, hashing))
            if len(window) > _HASH_LOOKAHEAD:
                yield _with_hashes(*window.popleft())
        while window:
            yield _with_hashes(*window.popleft())


def _content_sha256(refs: pa.Table, storage: Storage) -> list[str | None]:
    rows = read_bytes(refs, storage)
    return [hashlib.sha256(data).hexdigest() if data is not None else None for data in rows["image_bytes"].to_pylist()]


def _with_hashes(table: pa.Table, wanted: pa.Array, future) -> tuple[pa.Table, list[str | None]]:
    import ray

    hashed = iter(ray.get(future) if future is not None else [])
    return table, [next(hashed) if w else None for w in wanted.to_pylist()]
