"""Trusting an archive's metadata before its records: index parts are checked against the sha256
their shard's stats recorded when the part was written, and the archive as a whole is checked
for completeness (it exists, shards that no index part names, committed shards that are gone).

One damaged index part costs only its own records: it is reported and left out, the others load.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from facezip.infra.storage import Storage, join
from facezip.tasks.archive.layout import (
    INDEX_SCHEMA,
    MANIFESTS,
    SHARDS,
    committed_shards,
    index_url,
    part_name,
    stats_url,
)

INDEX_SHA256 = "index_sha256"  # the stats key holding the sha256 of the shard's index part
# what a reader needs of every row to find, check and decode its record
REQUIRED_COLUMNS = ("id", "version", "shard", "offset", "length", "height", "width", "codec", "weights_hash", "sha256")


class IndexPartError(ValueError):
    """An index part that cannot be trusted: unreadable, or not the bytes its stats recorded."""


@dataclass
class TrustedIndex:
    parts: dict[int, pa.Table] = field(default_factory=dict)  # shard → its index rows, checked
    problems: list[dict] = field(default_factory=list)  # {"shard", "problem"}: parts left out

    @property
    def table(self) -> pa.Table:
        """Every trusted row, in shard order."""
        tables = [self.parts[shard] for shard in sorted(self.parts)]
        return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()


def read_index(root: str, storage: Storage) -> pa.Table:
    """Every committed index row, in shard then offset order; IndexPartError if any part is not trusted."""
    index = load_index(root, storage)
    if index.problems:
        raise IndexPartError("; ".join(f"shard {p['shard']}: {p['problem']}" for p in index.problems)
                             + " (facezip verify reports the whole archive)")
    return index.table


def load_index(root: str, storage: Storage) -> TrustedIndex:
    """Every committed index part that passes its checks; the others as problems."""
    index = TrustedIndex()
    for shard in committed_shards(root, storage):
        try:
            index.parts[shard] = read_trusted_part(root, shard, storage)
        except IndexPartError as exc:
            index.problems.append({"shard": shard, "problem": str(exc)})
    return index


def read_trusted_part(root: str, shard: int, storage: Storage) -> pa.Table:
    """One index part in ``INDEX_SCHEMA`` after checking its sha256 against its stats (parts
    written before the checksum existed are read unchecked); columns added since read as null."""
    name = f"index part {part_name(shard)}"
    try:
        data = storage.read_bytes(index_url(root, shard))
    except FileNotFoundError:
        raise IndexPartError(f"{name} is missing") from None
    expected = _recorded_sha256(root, shard, storage)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise IndexPartError(f"{name} is damaged: its sha256 does not match the one in its stats; "
                             "its records are not trusted")
    try:
        table = pq.read_table(io.BytesIO(data))
        table.validate(full=True)  # e.g. invalid UTF-8 in a string column, which would fail only when read
        columns = [table[f.name] if f.name in table.column_names else pa.nulls(len(table), f.type)
                   for f in INDEX_SCHEMA]
        table = pa.Table.from_arrays(columns, names=INDEX_SCHEMA.names).cast(INDEX_SCHEMA)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise IndexPartError(f"{name} is unreadable ({exc})") from None
    _check_rows(table, shard, name)
    return table


def _check_rows(table: pa.Table, shard: int, name: str) -> None:
    """Every row has what a reader needs, and points into this part's own shard."""
    missing = [column for column in REQUIRED_COLUMNS if table[column].null_count]
    if missing:
        raise IndexPartError(f"{name} is damaged: rows without {', '.join(missing)}")
    if any(value != shard for value in table["shard"].unique().to_pylist()):
        raise IndexPartError(f"{name} is damaged: rows point into another shard's file")


def _recorded_sha256(root: str, shard: int, storage: Storage) -> str | None:
    """The index part's sha256 from the stats written just before it (None: an older archive)."""
    try:
        stats = json.loads(storage.read_bytes(stats_url(root, shard)))
    except FileNotFoundError:
        raise IndexPartError(f"stats of shard {part_name(shard)} are missing: its index part cannot be "
                             "checked, its records are not trusted") from None
    except (ValueError, OSError) as exc:
        raise IndexPartError(f"stats of shard {part_name(shard)} are unreadable ({exc}): its index part "
                             "cannot be checked, its records are not trusted") from None
    return stats.get(INDEX_SHA256) if isinstance(stats, dict) else None


def archive_problems(root: str, storage: Storage) -> list[dict]:
    """What makes ``root`` not a complete archive, beyond its single records: it is missing or
    empty, a shard file no index part names, or a shard an earlier run committed that is gone
    (shard numbers run 0, 1, … without gaps, and every run's manifest lists the shards it wrote)."""
    fs, path = storage.fs(root)
    if not fs.exists(path):
        return [{"shard": None, "problem": f"no archive at {root} (it does not exist)"}]
    committed = set(committed_shards(root, storage))
    if not committed:
        return [{"shard": None, "problem": f"{root} holds no index parts: an empty archive, or not one"}]
    problems = _stray_shard_files(root, storage, committed)
    expected, manifest_problems = _shards_runs_wrote(root, storage)
    for shard in sorted((expected | set(range(max(committed)))) - committed):
        problems.append({"shard": shard, "problem": "committed shard is missing (no index part; an earlier "
                                                    "run wrote it): its records are lost from this copy"})
    return problems + manifest_problems


def _stray_shard_files(root: str, storage: Storage, committed: set[int]) -> list[dict]:
    fs, path = storage.fs(join(root, SHARDS))
    names = [posixpath.basename(p) for p in fs.ls(path, detail=False)] if fs.exists(path) else []
    stray = [n for n in names if not (n.endswith(".xz") and n[:-3].isdigit() and int(n[:-3]) in committed)]
    return [{"shard": name, "problem": "shard file not committed by any index part (an interrupted run: rerun "
             "archive; or its index part was deleted)"} for name in sorted(stray)]


def _shards_runs_wrote(root: str, storage: Storage) -> tuple[set[int], list[dict]]:
    """Shard numbers every run's manifest lists, and the manifests that cannot be read."""
    fs, path = storage.fs(join(root, MANIFESTS))
    shards: set[int] = set()
    problems: list[dict] = []
    for name in sorted(fs.ls(path, detail=False)) if fs.exists(path) else []:
        try:
            shards.update(int(s) for s in json.loads(fs.cat_file(name))["shards_written"])
        except (ValueError, KeyError, TypeError, OSError) as exc:
            problems.append({"shard": None, "problem": f"manifest {posixpath.basename(name)} is unreadable ({exc})"})
    return shards, problems
