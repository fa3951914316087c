"""``verify`` names exactly the damaged records: flipped bytes, truncated shards, a bad index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archive_support import archive_config, index_rows, write_crops, write_random_weights
from facezip.cli import main
from facezip.tasks.archive import run_archive, run_verify

SHARD = 1  # the shard the tests damage (the archive has 3: 8 + 8 + 4 records)


@pytest.fixture(scope="module")
def pristine(ray_local, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("verify")
    weights = write_random_weights(root / "random.pt")
    write_crops(root / "crops", 20, seed=3)
    run_archive(archive_config(weights), str(root / "crops"), str(root / "archive"), progress=False)
    return root / "archive", weights


@pytest.fixture
def archive(pristine, tmp_path) -> Path:
    dest = tmp_path / "archive"
    shutil.copytree(pristine[0], dest)
    return dest


def verify(dest: Path, weights: Path) -> tuple[set[str], list[dict]]:
    summary = run_verify(archive_config(weights), str(dest), progress=False)
    return {d["id"] for d in summary["damaged"]}, summary["shard_problems"]


def shard_rows(dest: Path) -> list[dict]:
    return sorted((r for r in index_rows(str(dest)) if r["shard"] == SHARD), key=lambda r: r["offset"])


def owner_of(rows: list[dict], position: int) -> str:
    return next(r["id"] for r in rows if r["offset"] <= position < r["offset"] + r["length"])


def test_pristine_archive_verifies(pristine):
    dest, weights = pristine
    assert verify(dest, weights) == (set(), [])


@pytest.mark.parametrize("where", ["first", "second record header", "middle", "record end", "last"])
def test_one_flipped_byte_names_its_record_and_only_it(archive, pristine, where):
    rows = shard_rows(archive)
    shard = archive / "shards" / f"{SHARD:05d}.xz"
    data = bytearray(shard.read_bytes())
    position = {"first": 0, "second record header": rows[1]["offset"] + 3, "middle": len(data) // 2,
                "record end": rows[2]["offset"] + rows[2]["length"] - 1, "last": len(data) - 1}[where]
    data[position] ^= 0x40
    shard.write_bytes(bytes(data))
    assert verify(archive, pristine[1]) == ({owner_of(rows, position)}, [])


def test_truncated_shard_names_the_records_past_the_cut(archive, pristine):
    rows = shard_rows(archive)
    cut = rows[5]["offset"] + 10
    shard = archive / "shards" / f"{SHARD:05d}.xz"
    shard.write_bytes(shard.read_bytes()[:cut])
    assert verify(archive, pristine[1]) == ({r["id"] for r in rows[5:]}, [])


def test_index_pointing_past_the_end_names_that_record(archive, pristine):
    part = archive / "index" / f"{SHARD:05d}.parquet"
    table = pq.read_table(part).to_pylist()
    last = max(table, key=lambda r: r["offset"])
    last["length"] += 100
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(part)), part)
    assert verify(archive, pristine[1]) == ({last["id"]}, [])


def test_orphan_bytes_and_uncommitted_shards_are_shard_problems(archive, pristine):
    with open(archive / "shards" / f"{SHARD:05d}.xz", "ab") as handle:
        handle.write(b"\0" * 7)
    (archive / "shards" / "00009.xz").write_bytes(b"left by a crash")
    damaged, problems = verify(archive, pristine[1])
    assert damaged == set()
    assert problems == [{"shard": SHARD, "problem": "7 orphan bytes after the last record"},
                        {"shard": "00009.xz", "problem": "shard file not committed by any index part "
                                                         "(an interrupted run: rerun archive)"}]


def test_cli_verify_reports_each_damaged_record_and_fails(archive, pristine, capsys):
    rows = shard_rows(archive)
    shard = archive / "shards" / f"{SHARD:05d}.xz"
    data = bytearray(shard.read_bytes())
    for row in (rows[0], rows[4]):
        data[row["offset"] + row["length"] // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(archive), "tracking.enabled=false", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"damaged record {rows[0]['id']!r}" in err and f"damaged record {rows[4]['id']!r}" in err
    assert "2 damaged records" in err
