"""Archive stage: round trips (local, S3), incremental runs, detect output as input, bad inputs, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from archive_support import (
    archive_config,
    check_shards_are_xz,
    index_rows,
    weights_overrides,
    write_crops,
    write_detect_output,
    write_random_weights,
)
from facezip.cli import main
from facezip.infra.storage import Storage
from facezip.models.coding import decode_file, encode_images
from facezip.models.loading import load_codec
from facezip.tasks.archive import ArchiveReader, RecordError, restore_records, run_archive, run_verify
from facezip.tasks.archive.xzblock import STREAM_HEAD


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_random_weights(tmp_path_factory.mktemp("weights") / "random.pt")


@pytest.fixture(scope="module")
def codec(weights):
    return load_codec("binarized-cae", str(weights))


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crops")
    write_crops(folder, 40)
    return folder


def direct_decode(codec, path: Path) -> np.ndarray:
    """What ``facezip compress`` + ``decompress`` give for the same image: the reference pixels."""
    return decode_file(codec, encode_images(codec, [np.asarray(Image.open(path).convert("RGB"))])[0])


@pytest.fixture(scope="module")
def archived(ray_local, crops, weights, tmp_path_factory):
    """One archive of the 40 crops (tracked in a fresh MLflow store), shared by the read-only tests."""
    root = tmp_path_factory.mktemp("archived")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = archive_config(weights, "tracking.enabled=true", f"tracking.uri={uri}")
    return root / "archive", run_archive(cfg, str(crops), str(root / "archive"), progress=False), uri


def test_round_trip_local_restores_the_pixels_of_a_direct_decode(archived, crops, codec, tmp_path):
    dest, summary, tracking_uri = archived

    assert (summary["archived"], summary["skipped"], summary["rejected"]) == (40, 0, 0)
    assert summary["shards_written"] == [0, 1, 2, 3, 4]  # 40 records, 8 per shard
    assert json.loads((dest / "_SUCCESS.json").read_text()) == summary
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["weights_hash"] == codec.weights_hash() and manifest["config"]["archive"]["records_per_shard"] == 8
    check_shards_are_xz(dest)

    rows = index_rows(str(dest))
    assert sorted(r["id"] for r in rows) == sorted(p.stem for p in crops.glob("*.png"))
    for shard in range(5):
        spans = sorted((r["offset"], r["length"]) for r in rows if r["shard"] == shard)
        assert [o for o, _ in spans] == list(np.cumsum([len(STREAM_HEAD)] + [n for _, n in spans[:-1]]))
        data = (dest / "shards" / f"{shard:05d}.xz").read_bytes()
        assert data.startswith(STREAM_HEAD) and data[sum(spans[-1])] == 0  # LZMA2's end marker ends the records

    results = restore_records(codec, str(dest), None, str(tmp_path / "out"), Storage(), progress=False).results
    assert all(r.error is None for r in results) and len(results) == 40
    for path in crops.glob("*.png"):
        restored = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png"))
        np.testing.assert_array_equal(restored, direct_decode(codec, path))

    mlflow.set_tracking_uri(tracking_uri)
    run = mlflow.search_runs(experiment_names=["facezip"], output_format="list")[0]
    assert run.data.metrics["archived"] == 40 and run.data.tags["facezip.stage"] == "archive"


def test_round_trip_on_s3_with_ranged_reads(ray_local, crops, weights, codec, s3_bucket):
    storage, bucket = s3_bucket
    dest = f"{bucket}/archive"
    cfg = archive_config(weights, f"storage.endpoint_url={storage.endpoint_url}")
    summary = run_archive(cfg, str(crops), dest, progress=False)
    assert summary["archived"] == 40 and storage.exists(f"{dest}/_SUCCESS.json")

    reader = ArchiveReader(dest, storage)
    for image_id in ("face000", "face017", "face039"):
        np.testing.assert_array_equal(reader.restore(codec, image_id), direct_decode(codec, crops / f"{image_id}.png"))
    assert run_verify(cfg, dest, progress=False)["ok"]


def test_restore_checks_the_sha256_before_decoding(archived, codec, tmp_path):
    dest = tmp_path / "archive"
    shutil.copytree(archived[0], dest)
    reader = ArchiveReader(str(dest), Storage())
    row = reader.row("face005")
    shard = dest / "shards" / f"{row['shard']:05d}.xz"
    data = bytearray(shard.read_bytes())
    data[row["offset"] + row["length"] // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(RecordError, match="face005.*sha256"):
        reader.restore(codec, "face005")
    with pytest.raises(RecordError, match="not in the archive"):
        reader.row("nobody")


def test_incremental_adds_only_new_and_changed_sources(ray_local, crops, weights, codec, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(crops, src)
    dest = tmp_path / "archive"
    cfg = archive_config(weights)
    run_archive(cfg, str(src), str(dest), incremental=True, progress=False)

    write_crops(src, 10, seed=7, prefix="new")
    changed = src / "face003.png"
    Image.fromarray(255 - np.asarray(Image.open(changed))).save(changed)
    summary = run_archive(cfg, str(src), str(dest), incremental=True, progress=False)

    assert (summary["archived"], summary["skipped"], summary["rejected"]) == (11, 39, 0)
    assert summary["shards_written"] == [5, 6]  # new shards after the 5 existing ones
    rows = index_rows(str(dest))
    added = {r["id"] for r in rows if r["shard"] >= 5}
    assert added == {f"new{i:03d}" for i in range(10)} | {"face003"}
    assert sorted(r["version"] for r in rows if r["id"] == "face003") == [1, 2]
    restored = ArchiveReader(str(dest), Storage()).restore(codec, "face003")
    np.testing.assert_array_equal(restored, direct_decode(codec, changed))


def test_cli_archives_a_detect_output_as_crops_with_identities(ray_local, crops, weights, tmp_path, capsys):
    detect_dir = tmp_path / "detect"
    write_detect_output(detect_dir, sorted(crops.glob("*.png"))[:12])
    dest = tmp_path / "archive"
    overrides = [*weights_overrides(weights), "tracking.enabled=false", "archive.num_actors=1"]
    assert main(["archive", str(detect_dir), str(dest), *overrides, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["archived"] == 12
    rows = sorted(index_rows(str(dest)), key=lambda r: r["id"])
    assert rows[0]["id"] == "face000_0" and rows[0]["source_uri"] == "/photos/face000.jpg"
    assert [r["identity"] for r in rows[:4]] == ["person0", "person1", "person2", "person0"]
    assert main(["archive", str(tmp_path / "missing"), str(dest), *overrides]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_bad_inputs_are_each_accounted_for(ray_local, crops, weights, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(crops, src)
    (src / "empty.png").write_bytes(b"")
    (src / "garbage.jpg").write_bytes(b"this is not an image")
    (src / "truncated.png").write_bytes((crops / "face001.png").read_bytes()[:200])
    Image.new("RGB", (300, 300), "red").save(src / "huge.png")
    Image.new("CMYK", (40, 40), (0, 128, 0, 0)).save(src / "cmyk.jpg")
    grey16 = Image.fromarray(np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 20)
    grey16.save(src / "grey16.png")
    (src / "badcrc.png").write_bytes(png_with_bad_crc(crops / "face002.png"))
    dest = tmp_path / "archive"

    summary = run_archive(archive_config(weights, "archive.max_image_pixels=50000"), str(src), str(dest),
                          progress=False)

    assert summary["inputs"] == 47 and summary["archived"] == 42  # 40 crops + CMYK + 16-bit, converted
    assert summary["failures"] == {"empty": 1, "unreadable": 2, "too_large": 1, "damaged": 1}
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert {r["id"]: r["reason"] for r in manifest["rejected_inputs"]} == {
        "empty": "empty", "garbage": "unreadable", "truncated": "unreadable", "huge": "too_large",
        "badcrc": "damaged"}
    stats = [json.loads(p.read_text()) for p in sorted((dest / "stats").glob("*.json"))]
    assert sum(s["records"] for s in stats) == 42 and sum(len(s["rejected"]) for s in stats) == 5
    assert {"cmyk", "grey16"} <= {r["id"] for r in index_rows(str(dest))}


def png_with_bad_crc(path: Path) -> bytes:
    damaged = bytearray(path.read_bytes())
    damaged[damaged.rindex(b"IEND") - 5] ^= 0x01  # the last byte of the last IDAT chunk's CRC
    return bytes(damaged)


def test_damaged_inputs_are_archived_and_flagged_when_asked(ray_local, crops, weights, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(crops / "face001.png", src)
    (src / "badcrc.png").write_bytes(png_with_bad_crc(crops / "face002.png"))
    summary = run_archive(archive_config(weights, "archive.accept_damaged=true"), str(src), str(tmp_path / "a"),
                          progress=False)
    assert (summary["inputs"], summary["archived"], summary["rejected"]) == (2, 2, 0)
    notes = {r["id"]: r["notes"] for r in index_rows(str(tmp_path / "a"))}
    assert notes["face001"] is None and "damaged, kept as asked: CRC error in the 'IDAT' chunk" in notes["badcrc"]


def test_cli_restore_and_verify(archived, crops, weights, codec, tmp_path, capsys):
    dest, out = archived[0], tmp_path / "out"
    overrides = [*weights_overrides(weights), "tracking.enabled=false"]
    assert main(["restore", str(dest), "--id", "face002", "face030", "-o", str(out), *overrides, "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["face002.png", "face030.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "face030.png")),
                                  direct_decode(codec, crops / "face030.png"))
    assert main(["restore", str(dest), "--id", "ghost", "-o", str(out), *overrides, "--quiet"]) == 1
    assert "ghost" in capsys.readouterr().err
    assert main(["verify", str(dest), "tracking.enabled=false", "--quiet"]) == 0
