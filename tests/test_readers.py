"""Readers: layout detection, stable ids, metadata, and Ray datasets that keep unreadable files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facezip.infra.readers import ROW_COLUMNS, LfwPair, ReaderError, lfw_id, open_reader, parse_lfw_pairs
from facezip.infra.storage import Storage
from tests.conftest import shared_dataset


def _jpeg(seed: int = 0, size: tuple[int, int] = (24, 20)) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG")
    return out.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def celeba(tmp_path: Path) -> Path:
    for n in (1, 2, 3):
        _write(tmp_path / "img_align_celeba" / f"{n:06d}.jpg", _jpeg(n))
    (tmp_path / "identity_CelebA.txt").write_text("000001.jpg 10\n000002.jpg 11\n000003.jpg 10\n")
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n")
    return tmp_path


@pytest.fixture
def lfw(tmp_path: Path) -> Path:
    for name, count in (("Ann_Lee", 2), ("Bo_Ek", 1)):
        for i in range(1, count + 1):
            _write(tmp_path / name / f"{name}_{i:04d}.jpg", _jpeg(i))
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBo_Ek\t1\n")
    return tmp_path


def test_celeba_layout_ids_identities_and_splits(celeba: Path) -> None:
    reader = open_reader(str(celeba), Storage())
    assert reader.layout == "celeba"
    refs = list(reader.refs())
    assert [(r.id, r.identity, r.split) for r in refs] == [
        ("000001", "10", "train"), ("000002", "11", "val"), ("000003", "10", "test")]
    assert refs[0].source_uri.endswith("img_align_celeba/000001.jpg")


def test_lfw_layout_and_pairs(lfw: Path) -> None:
    reader = open_reader(str(lfw), Storage())
    assert reader.layout == "lfw"
    assert [(r.id, r.identity) for r in reader.refs()] == [
        ("Ann_Lee_0001", "Ann_Lee"), ("Ann_Lee_0002", "Ann_Lee"), ("Bo_Ek_0001", "Bo_Ek")]
    assert reader.metadata["pairs"] == [LfwPair(1, "Ann_Lee_0001", "Ann_Lee_0002", True),
                                        LfwPair(1, "Ann_Lee_0001", "Bo_Ek_0001", False)]


def test_lfw_pairs_folds_and_bad_lines() -> None:
    text = "2\t1\nA\t1\t2\nA\t1\tB\t3\nC\t2\t4\nC\t1\tD\t1\n"
    assert [p.fold for p in parse_lfw_pairs(text)] == [1, 1, 2, 2]
    assert lfw_id("C", "4") == "C_0004"
    with pytest.raises(ReaderError, match="line 2"):
        parse_lfw_pairs("1\t1\nA\t1\n")


def test_folder_ids_keep_duplicate_names_and_unicode(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "img.jpg", _jpeg(1))
    _write(tmp_path / "b" / "img.jpg", _jpeg(2))
    _write(tmp_path / "b" / "Zoë 顔.png", _jpeg(3))
    (tmp_path / "notes.txt").write_text("not an image")
    reader = open_reader(str(tmp_path), Storage())
    assert reader.layout == "folder"
    assert [r.id for r in reader.refs()] == ["a/img", "b/Zoë 顔", "b/img"]  # sorted by code point


def test_glob_is_relative_to_its_fixed_prefix(tmp_path: Path) -> None:
    _write(tmp_path / "x" / "one.jpg", _jpeg(1))
    _write(tmp_path / "x" / "two.png", _jpeg(2))
    reader = open_reader(str(tmp_path / "x" / "*.jpg"), Storage())
    assert [r.id for r in reader.refs()] == ["one"]


def test_unknown_layout_and_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="unknown layout"):
        open_reader(str(tmp_path), Storage(), layout="imagenet")
    with pytest.raises(ReaderError, match="no such file"):
        open_reader(str(tmp_path / "absent"), Storage())


def test_parquet_layout_needs_image_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["x"], "pixels": [b"1"]}), tmp_path / "part-0.parquet")
    with pytest.raises(ReaderError, match="no 'image_bytes' column"):
        list(open_reader(str(tmp_path), Storage()).refs())


def test_ray_dataset_reads_bytes_and_keeps_missing_files(celeba: Path, ray_local) -> None:
    (celeba / "img_align_celeba" / "000002.jpg").unlink()
    rows = sorted(open_reader(str(celeba), Storage()).to_ray_dataset().take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == ["000001", "000002", "000003"]
    assert rows[0]["image_bytes"] == (celeba / "img_align_celeba" / "000001.jpg").read_bytes()
    assert rows[0]["read_error"] is None
    assert rows[1]["image_bytes"] is None and "FileNotFoundError" in rows[1]["read_error"]


def test_parquet_round_trip_through_ray(tmp_path: Path, ray_local) -> None:
    data = [_jpeg(1), _jpeg(2)]
    pq.write_table(pa.table({"id": ["p1", "p2"], "identity": ["7", None], "image_bytes": data}),
                   tmp_path / "part-0.parquet")
    reader = open_reader(str(tmp_path), Storage())
    assert reader.layout == "parquet"
    assert [(r.id, r.identity) for r in reader.refs()] == [("p1", "7"), ("p2", None)]
    rows = sorted(reader.to_ray_dataset().take_all(), key=lambda r: r["id"])
    assert [r["image_bytes"] for r in rows] == data
    assert set(rows[0]) == {"id", "source_uri", "identity", "split", "image_bytes", "read_error"}


def test_rows_with_bytes_come_without_ray_from_files_and_parquet(celeba: Path, tmp_path: Path) -> None:
    (celeba / "img_align_celeba" / "000002.jpg").unlink()
    rows = list(open_reader(str(celeba), Storage()).rows())
    assert [r["id"] for r in rows] == ["000001", "000002", "000003"]
    assert rows[0]["image_bytes"] == (celeba / "img_align_celeba" / "000001.jpg").read_bytes()
    assert rows[1]["image_bytes"] is None and "FileNotFoundError" in rows[1]["read_error"]
    table = tmp_path / "table"
    table.mkdir()
    pq.write_table(pa.table({"id": ["p1", "p2"], "image_bytes": [_jpeg(1), _jpeg(2)]}), table / "part-0.parquet")
    rows = list(open_reader(str(table), Storage()).rows())
    assert [r["image_bytes"] for r in rows] == [_jpeg(1), _jpeg(2)] and set(rows[0]) == set(ROW_COLUMNS)


def test_a_registered_output_folder_reads_as_its_table(tmp_path: Path) -> None:
    """detect registers its output folder; infra knows no stage's layout."""
    import facezip.tasks  # noqa: F401  (registers detect's output folder)

    (tmp_path / "faces").mkdir()
    pq.write_table(pa.table({"id": ["f1"], "image_bytes": [_jpeg(1)]}), tmp_path / "faces" / "part-00000.parquet")
    _write(tmp_path / "contact_sheet.png", _jpeg(2))
    reader = open_reader(str(tmp_path), Storage())
    assert (reader.layout, reader.src, [r.id for r in reader.refs()]) == ("parquet", str(tmp_path / "faces"), ["f1"])


def test_real_lfw_and_celeba_listings() -> None:
    lfw = open_reader(str(shared_dataset("lfw-dev")), Storage())
    assert lfw.layout == "lfw" and len(lfw.metadata["pairs"]) == 3000
    ids = [r.id for r in lfw.refs()]
    assert len(ids) == len(set(ids)) == 6922
    celeba = open_reader(str(shared_dataset("celeba-wild-sample")), Storage())
    assert celeba.layout == "celeba" and sum(1 for _ in celeba.refs()) == 487
