"""``verify`` names exactly the damaged records: flipped bytes, truncated shards, a bad index; an
archive that is missing, empty, incomplete or whose index is damaged fails verify and restore."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from archive_support import (
    archive_config,
    index_rows,
    legacy_record,
    weights_overrides,
    write_crops,
    write_random_weights,
)
from facezip.cli import main
from facezip.infra.storage import Storage
from facezip.models.container import FzHeader
from facezip.models.lossless import LOSSLESS_WEIGHTS_HASH
from facezip.models.registry import codec_class
from facezip.tasks.archive import ArchiveReader, run_archive, run_verify
from facezip.tasks.archive.integrity import IndexPartError, read_trusted_part
from facezip.tasks.archive.layout import row_header, unpack_record
from facezip.tasks.archive.restore import decode_opened

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


def flip(archive: Path, position) -> tuple[list[dict], int]:
    """Flip a bit of shard SHARD at ``position(rows, data)``; returns the shard's rows and the position."""
    rows = shard_rows(archive)
    shard = archive / "shards" / f"{SHARD:05d}.xz"
    data = bytearray(shard.read_bytes())
    at = position(rows, data)
    data[at] ^= 0x40
    shard.write_bytes(bytes(data))
    return rows, at


def records_end(rows: list[dict]) -> int:
    return rows[-1]["offset"] + rows[-1]["length"]


@pytest.mark.parametrize("where", ["first", "second record header", "middle", "record end", "last"])
def test_one_flipped_byte_names_its_record_and_only_it(archive, pristine, where):
    rows, at = flip(archive, lambda rows, data: {
        "first": rows[0]["offset"], "second record header": rows[1]["offset"] + 3, "middle": len(data) // 2,
        "record end": rows[2]["offset"] + rows[2]["length"] - 1, "last": records_end(rows) - 1}[where])
    assert verify(archive, pristine[1]) == ({owner_of(rows, at)}, [])


@pytest.mark.parametrize("where", ["stream header", "block header", "end marker", "block check", "footer"])
def test_a_flipped_byte_in_the_xz_frame_is_a_shard_problem(archive, pristine, where):
    flip(archive, lambda rows, data: {"stream header": 1, "block header": 14, "end marker": records_end(rows),
                                      "block check": records_end(rows) + 4, "footer": len(data) - 1}[where])
    damaged, problems = verify(archive, pristine[1])
    assert damaged == set() and [p["shard"] for p in problems] == [SHARD]
    assert ("not a valid xz stream" if where != "end marker" else "belong to no record") in problems[0]["problem"]


def test_truncated_shard_names_the_records_past_the_cut(archive, pristine):
    rows = shard_rows(archive)
    cut = rows[5]["offset"] + 10
    shard = archive / "shards" / f"{SHARD:05d}.xz"
    shard.write_bytes(shard.read_bytes()[:cut])
    assert verify(archive, pristine[1]) == ({r["id"] for r in rows[5:]}, [])


def rewrite_index_part(archive: Path, rows: list[dict], checksum: bool, shard: int = SHARD) -> None:
    """Write ``shard``'s index part anew; with ``checksum``, its stats record the new sha256 (an
    archive written that way, e.g. by a faulty or hostile writer), else the old one stays (damage)."""
    part = archive / "index" / f"{shard:05d}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(part)), part, compression="zstd")
    if checksum:
        stats_file = archive / "stats" / f"{shard:05d}.json"
        stats = json.loads(stats_file.read_text())
        stats_file.write_text(json.dumps({**stats, "index_sha256": hashlib.sha256(part.read_bytes()).hexdigest()}))


def index_part_rows(archive: Path, shard: int = SHARD) -> list[dict]:
    return pq.read_table(archive / "index" / f"{shard:05d}.parquet").to_pylist()


def test_index_pointing_past_the_end_names_that_record(archive, pristine):
    table = index_part_rows(archive)
    last = max(table, key=lambda r: r["offset"])
    last["length"] += 100
    rewrite_index_part(archive, table, checksum=True)
    assert verify(archive, pristine[1]) == ({last["id"]}, [])


def test_orphan_bytes_and_uncommitted_shards_are_shard_problems(archive, pristine):
    with open(archive / "shards" / f"{SHARD:05d}.xz", "ab") as handle:
        handle.write(b"\0" * 7)
    (archive / "shards" / "00009.xz").write_bytes(b"left by a crash")
    damaged, problems = verify(archive, pristine[1])
    assert damaged == set()
    assert problems == [{"shard": "00009.xz", "problem": "shard file not committed by any index part (an "
                                                         "interrupted run: rerun archive; or its index part "
                                                         "was deleted)"},
                        {"shard": SHARD, "problem": "the shard is not a valid xz stream: 7 stray bytes after the "
                                                    "xz stream"}]


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


def cli_restore(archive: Path, weights: Path, out: Path, *which: str) -> int:
    return main(["restore", str(archive), *which, "-o", str(out), *weights_overrides(weights),
                 "tracking.enabled=false", "--quiet"])


def delete_shard(archive: Path, shard: int, *folders: str) -> None:
    suffix = {"shards": "xz", "index": "parquet", "stats": "json"}
    for folder in folders:
        (archive / folder / f"{shard:05d}.{suffix[folder]}").unlink()


def test_missing_or_empty_destination_fails_verify(tmp_path, pristine, capsys):
    assert main(["verify", str(tmp_path / "does-not-exist"), "tracking.enabled=false", "--quiet"]) == 1
    assert f"no archive at {tmp_path / 'does-not-exist'}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty"), "tracking.enabled=false", "--quiet"]) == 1
    assert "holds no index parts" in capsys.readouterr().err


@pytest.mark.parametrize("shard", [SHARD, 2])  # a middle shard (a gap) and the last one (its manifest names it)
def test_shard_deleted_with_its_index_and_stats_is_missing(archive, pristine, shard):
    delete_shard(archive, shard, "shards", "index", "stats")
    damaged, problems = verify(archive, pristine[1])
    assert damaged == set() and [p["shard"] for p in problems] == [shard]
    assert "committed shard is missing" in problems[0]["problem"]


def test_damaged_index_part_is_detected_and_costs_only_its_records(archive, pristine, tmp_path, capsys):
    rows = index_part_rows(archive)
    renamed = rows[0]["id"]
    rows[0]["id"] = "renamed"
    rows[1]["source_uri"], rows[2]["source_uri"] = rows[2]["source_uri"], rows[1]["source_uri"]
    rewrite_index_part(archive, rows, checksum=False)
    damaged, problems = verify(archive, pristine[1])
    assert damaged == set() and problems == [{"shard": SHARD, "problem": f"index part {SHARD:05d} is damaged: its "
                                              "sha256 does not match the one in its stats; its records are not "
                                              "trusted"}]
    assert cli_restore(archive, pristine[1], tmp_path / "out", "--all") == 1
    err = capsys.readouterr().err
    assert f"shard {SHARD}: index part {SHARD:05d} is damaged" in err and "the archive has 1 problem(s)" in err
    restored = {p.stem for p in (tmp_path / "out").glob("*.png")}
    assert len(restored) == 12 and renamed not in restored and "renamed" not in restored  # shards 0 and 2


def test_unreadable_index_part_costs_only_its_records(archive, pristine, tmp_path, capsys):
    part = archive / "index" / f"{SHARD:05d}.parquet"
    part.write_bytes(part.read_bytes()[:50])
    wanted = [r["id"] for r in index_rows(str(pristine[0])) if r["shard"] == 0][:2]
    assert cli_restore(archive, pristine[1], tmp_path / "out", "--id", *wanted) == 1
    assert f"index part {SHARD:05d} is damaged" in capsys.readouterr().err
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == sorted(wanted)


def test_restore_all_fails_when_records_sit_in_a_shard_no_index_names(archive, pristine, tmp_path, capsys):
    delete_shard(archive, SHARD, "index")
    assert cli_restore(archive, pristine[1], tmp_path / "out", "--all") == 1
    err = capsys.readouterr().err
    assert "12 of 12 done" in err and f"shard {SHARD:05d}.xz: shard file not committed" in err
    assert f"shard {SHARD}: committed shard is missing" in err and "the archive has 2 problem(s)" in err


def test_restore_never_writes_outside_the_output_folder(archive, pristine, tmp_path, capsys):
    rows = index_part_rows(archive)
    rows[0]["id"], rows[1]["id"] = "../../ESCAPED_by_id", "/tmp/absolute"
    rewrite_index_part(archive, rows, checksum=True)
    out = tmp_path / "a" / "b" / "out"
    assert cli_restore(archive, pristine[1], out, "--all") == 1
    assert "'../../ESCAPED_by_id' is not a safe relative file name" in capsys.readouterr().err
    assert [p.name for p in tmp_path.rglob("ESCAPED*")] == [] and len(list(out.glob("*.png"))) == 18


def test_absurd_length_in_the_index_is_a_clear_error(archive, pristine, tmp_path, capsys):
    rows = index_part_rows(archive)
    rows[0]["length"] = 2**40
    rewrite_index_part(archive, rows, checksum=True)
    assert cli_restore(archive, pristine[1], tmp_path / "out", "--id", rows[0]["id"], rows[1]["id"]) == 1
    err = capsys.readouterr().err
    assert f"index row says {2**40} bytes at offset {rows[0]['offset']}, impossible for a" in err
    assert "1 of 2 done" in err
    assert rows[0]["id"] in verify(archive, pristine[1])[0]


def rewrite_in_an_older_layout(archive: Path, version: int) -> None:
    """Every shard rewritten as facezip wrote them before record version 3 (records back to back
    from byte 0, each an xz stream, or, every other one, ``FZR`` + header + payload as they are),
    its index rows and stats to match."""
    reader, options = ArchiveReader(str(archive), Storage()), codec_class("binarized-cae").xz_options
    for shard in sorted(int(part.stem) for part in (archive / "index").glob("*.parquet")):
        records, offset = [], 0
        rows = sorted(index_part_rows(archive, shard), key=lambda r: r["offset"])
        for i, row in enumerate(rows):
            payload = unpack_record(reader.read_record(row), row_header(row))
            records.append(legacy_record(row_header(row), payload, options, stored=i % 2 == 1, version=version))
            row.update(offset=offset, length=len(records[-1]), sha256=hashlib.sha256(records[-1]).hexdigest())
            offset += len(records[-1])
        (archive / "shards" / f"{shard:05d}.xz").write_bytes(b"".join(records))
        rewrite_index_part(archive, rows, checksum=True, shard=shard)


@pytest.mark.parametrize("version", [1, 2])
def test_archives_of_older_record_versions_restore_and_verify(archive, pristine, tmp_path, version):
    assert cli_restore(pristine[0], pristine[1], tmp_path / "now", "--all") == 0
    rewrite_in_an_older_layout(archive, version)
    assert verify(archive, pristine[1]) == (set(), [])
    assert cli_restore(archive, pristine[1], tmp_path / "old", "--all") == 0
    restored = sorted(p.name for p in (tmp_path / "now").iterdir())
    assert len(restored) == 20 and restored == sorted(p.name for p in (tmp_path / "old").iterdir())
    for name in restored:
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "now" / name).read_bytes()
    rows = flip(archive, lambda rows, data: rows[3]["offset"] + rows[3]["length"] // 2)[0]
    assert verify(archive, pristine[1]) == ({rows[3]["id"]}, [])


def test_a_corrupt_lossless_record_fails_alone():
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    good, corrupt = png.getvalue(), png.getvalue()[:40] + bytes(30) + png.getvalue()[70:]
    header = FzHeader("png", LOSSLESS_WEIGHTS_HASH, 8, 8)
    decoded = decode_opened([], [(header, corrupt), (header, good)])
    assert decoded[0].startswith("lossless PNG does not decode") and decoded[1].shape == (8, 8, 3)


def test_ids_that_would_escape_a_restore_are_rejected_when_archiving(pristine, tmp_path):
    crop = next((pristine[0].parent / "crops").glob("*.png")).read_bytes()
    ids = ["../../ESCAPED_by_id", "/etc/absolute", "a\\b", "person/fine"]
    (tmp_path / "src").mkdir()
    pq.write_table(pa.table({"id": ids, "image_bytes": [crop] * len(ids)}), tmp_path / "src" / "part.parquet")
    summary = run_archive(archive_config(pristine[1]), str(tmp_path / "src"), str(tmp_path / "a"), progress=False)
    assert (summary["archived"], summary["failures"]) == (1, {"unsafe_id": 3})
    assert [r["id"] for r in index_rows(str(tmp_path / "a"))] == ["person/fine"]


def test_invalid_utf8_in_an_unchecked_index_part_is_an_index_error(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / "stats").mkdir()
    (tmp_path / "stats" / "00000.json").write_text("{}")  # an archive from before index checksums
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": ["face_0001"]}), sink, compression="none")
    data = bytearray(sink.getvalue())
    data[data.index(b"face_0001") + 4] = 0xFF
    (tmp_path / "index" / "00000.parquet").write_bytes(bytes(data))
    with pytest.raises(IndexPartError, match="index part 00000 is unreadable.*Invalid UTF8"):
        read_trusted_part(str(tmp_path), 0, Storage())


@pytest.mark.parametrize("edit", ["null offset", "other shard"])
def test_index_rows_a_reader_cannot_use_make_their_part_damaged(archive, pristine, edit):
    rows = index_part_rows(archive)
    rows[2].update(offset=None) if edit == "null offset" else rows[2].update(shard=SHARD + 1)
    rewrite_index_part(archive, rows, checksum=True)  # found by fuzzing: a TypeError in restore before
    damaged, problems = verify(archive, pristine[1])
    assert damaged == set() and [p["shard"] for p in problems] == [SHARD]
    assert problems[0]["problem"].startswith(f"index part {SHARD:05d} is damaged: rows ")
