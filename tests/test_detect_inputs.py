"""The detect actor on real faces and on every kind of bad input, without Ray: each input
must come out kept or rejected with the right reason, never crash the batch."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from omegaconf import OmegaConf
from PIL import Image

from facezip.infra.readers import IMAGE_COLUMN, REF_SCHEMA
from facezip.models.face_detector import Face, FaceDetector, crop_face
from facezip.pipelines.config import load_config
from facezip.tasks.detect import DETECTION_SCHEMA, AccountingError, select_faces
from facezip.tasks.detect.faces import DetectFaces
from facezip.tasks.detect.report import check_accounting, count_outcomes
from tests import detect_samples as samples


@pytest.fixture(scope="module")
def actor() -> DetectFaces:
    cfg = load_config([], ["detect.max_image_pixels=1000000000000"])  # let Pillow's own bomb limit act
    return DetectFaces(OmegaConf.to_object(cfg.detect), "cpu")


def _batch(items: dict[str, bytes | None], read_errors: dict[str, str] | None = None) -> pa.Table:
    ids = list(items)
    refs = pa.Table.from_pylist([{"id": i, "source_uri": f"mem://{i}", "identity": "p", "split": None}
                                 for i in ids], schema=REF_SCHEMA)
    errors = [(read_errors or {}).get(i) for i in ids]
    return refs.append_column(IMAGE_COLUMN, pa.array(list(items.values()), pa.binary())).append_column(
        "read_error", pa.array(errors, pa.string()))


def _outcomes(actor: DetectFaces, items: dict[str, bytes | None], **kwargs) -> dict[str, dict]:
    table = actor(_batch(items, **kwargs))
    assert table.schema == DETECTION_SCHEMA
    rows = table.to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(items)  # one outcome per input
    return {r["image_id"]: r for r in rows}


def test_real_faces_are_kept_with_a_consistent_crop(actor: DetectFaces) -> None:
    rows = _outcomes(actor, {"astronaut": samples.encode(samples.astronaut()),
                             "camera": samples.encode(samples.camera(), "PNG")})
    for row in rows.values():
        assert row["reason"] is None and row["probability"] > 0.99
        crop = Image.open(io.BytesIO(row["image_bytes"]))
        assert (crop.format, crop.size, crop.mode) == ("PNG", (160, 160), "RGB")
        assert (row["width"], row["height"]) == (samples.SIDE, samples.SIDE)
        assert len(row["landmarks"]) == 10 and len(row["box"]) == 4
        x1, y1, x2, y2 = row["face_box_in_crop"]
        assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 160 and x2 - x1 > 120  # margin 0: face fills the crop
        bx1, by1, bx2, by2 = row["box"]
        assert all(bx1 <= x <= bx2 and by1 <= y <= by2 for x, y in zip(row["landmarks"][::2], row["landmarks"][1::2]))
    assert rows["camera"]["notes"] == "converted greyscale to RGB"
    assert rows["astronaut"]["notes"] is None


BAD_INPUTS = {  # name → (bytes, reason, words in the detail)
    "zero_byte": (lambda: b"", "empty", "zero-byte"),
    "text_named_jpg": (lambda: b"this is a text file, not a JPEG\n", "unreadable", "not an image"),
    "truncated_jpeg": (samples.truncated_jpeg, "unreadable", "truncated"),
    "corrupt_jpeg": (samples.corrupt_jpeg, "unreadable", ""),
    "decompression_bomb": (samples.decompression_bomb_png, "too_large", "more pixels than facezip's limit of"),
    "no_face": (lambda: samples.encode(samples.no_face()), "no_face", "no face"),
    "tiny": (lambda: samples.encode(Image.new("RGB", (12, 9), "grey"), "PNG"), "too_small", "12×9"),
    "damaged_jpeg": (samples.damaged_jpeg, "damaged", "libjpeg reports: Corrupt JPEG data"),
    "png_bad_crc": (samples.png_with_bad_crc, "damaged", "CRC error in the 'IDAT' chunk"),
}
CONVERTED_INPUTS = {  # name → (bytes, note)
    "cmyk": (samples.cmyk_jpeg, "converted CMYK to RGB"),
    "rgba": (samples.rgba_png, "converted RGBA to RGB (alpha composited on white)"),
    "png_16bit": (samples.png_16bit, "converted 16-bit greyscale to RGB"),
    "animated_gif": (samples.animated_gif, "animated image with 2 frames: used the first"),
    "exif_rotated": (samples.exif_rotated_jpeg, "applied EXIF orientation 6"),
}


@pytest.fixture(scope="module")
def mixed_batch(actor: DetectFaces) -> dict[str, dict]:
    """One batch holding every bad and unusual input next to a good one and a failed read."""
    items = {name: make() for name, (make, *_) in {**BAD_INPUTS, **CONVERTED_INPUTS}.items()}
    items.update({"good": samples.encode(samples.astronaut()), "unread": None})
    return _outcomes(actor, items, read_errors={"unread": "FileNotFoundError: gone.jpg"})


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_inputs_become_rejections(mixed_batch: dict[str, dict], name: str) -> None:
    _, reason, detail = BAD_INPUTS[name]
    row = mixed_batch[name]
    assert row["reason"] == reason and detail in row["detail"]
    assert row["image_bytes"] is None and row["source_uri"] == f"mem://{name}"
    assert mixed_batch["good"]["reason"] is None  # the batch went on


def test_damaged_images_are_kept_and_flagged_when_asked() -> None:
    detect_cfg = OmegaConf.to_object(load_config([], ["detect.accept_damaged=true"]).detect)
    rows = DetectFaces(detect_cfg, "cpu")(_batch({"jpeg": samples.damaged_jpeg(), "png": samples.png_with_bad_crc()}))
    assert rows.column("reason").null_count == 2  # both kept: the face is intact
    notes = rows.column("notes").to_pylist()
    assert "damaged, kept as asked: libjpeg reports: Corrupt JPEG data" in notes[0]
    assert "damaged, kept as asked: CRC error in the 'IDAT' chunk" in notes[1]


def test_a_failed_read_is_an_unreadable_rejection(mixed_batch: dict[str, dict]) -> None:
    row = mixed_batch["unread"]
    assert row["reason"] == "unreadable" and "FileNotFoundError" in row["detail"]


@pytest.mark.parametrize("name", CONVERTED_INPUTS)
def test_unusual_formats_are_converted_and_said_so(mixed_batch: dict[str, dict], name: str) -> None:
    row = mixed_batch[name]
    assert row["reason"] is None, row["detail"]
    assert CONVERTED_INPUTS[name][1] in row["notes"]


def test_exif_orientation_is_applied_before_detection(mixed_batch: dict[str, dict]) -> None:
    row = mixed_batch["exif_rotated"]
    assert (row["width"], row["height"]) == (256, 192)
    eyes_y = row["landmarks"][1], row["landmarks"][3]
    assert abs(eyes_y[0] - eyes_y[1]) < 8  # upright: the eyes are level


def test_keep_all_keeps_every_face_above_the_threshold() -> None:
    faces = [Face((0, 0, 10, 10), (0.0,) * 10, p) for p in (0.99, 0.95, 0.5)]
    assert select_faces(faces, 0.9, keep_all=True) == (faces[:2], None)
    assert select_faces(faces, 0.9, keep_all=False) == (faces[:1], None)
    assert select_faces(faces, 0.999, keep_all=False)[1][0] == "low_probability"
    assert select_faces([], 0.9, keep_all=False)[1][0] == "no_face"


def test_keep_all_gives_each_face_its_own_id() -> None:
    pair = np.concatenate([np.asarray(samples.astronaut()), np.asarray(samples.camera().convert("RGB"))], axis=1)
    detect_cfg = OmegaConf.to_object(load_config([], ["detect.keep_all=true"]).detect)
    table = DetectFaces(detect_cfg, "cpu")(_batch({"pair": samples.encode(Image.fromarray(pair), "PNG")}))
    assert table.column("id").to_pylist() == ["pair_0", "pair_1"]
    assert table.column("face_index").to_pylist() == [0, 1]
    assert table.column("reason").null_count == 2


def test_detector_batches_mixed_sizes_and_crop_maps_the_box() -> None:
    detector = FaceDetector("cpu")
    big, small = np.asarray(samples.astronaut()), np.asarray(samples.astronaut().resize((200, 200)))
    faces = detector.detect([big, small, big])
    assert [len(f) >= 1 for f in faces] == [True, True, True]
    assert faces[0][0] == faces[2][0]
    crop = crop_face(big, faces[0][0].box, image_size=100, margin=20)
    left, top, right, bottom = crop.crop_box
    x1, y1, x2, y2 = faces[0][0].box
    fx1, fy1, fx2, fy2 = crop.face_box_in_crop
    assert fx1 == pytest.approx((x1 - left) * 100 / (right - left))
    assert fy2 == pytest.approx((y2 - top) * 100 / (bottom - top))
    assert 5 < fx1 < 15 and 85 < fx2 < 95  # 20 px of margin in total: ~10 on each side


def test_accounting_counts_images_not_faces_and_catches_losses() -> None:
    outcomes = pa.table({"face_index": pa.array([0, 1, 0, None, None], pa.int32()),
                         "reason": [None, None, None, "no_face", "unreadable"]})
    counts = count_outcomes(4, outcomes)  # an image with two faces, one with one, two rejected
    assert (counts.kept_images, counts.faces, counts.rejected) == (2, 3, 2)
    assert counts.rejected_by_reason == {"no_face": 1, "unreadable": 1}
    check_accounting(counts)
    with pytest.raises(AccountingError, match="5 inputs but 2 kept \\+ 2 rejected"):
        check_accounting(count_outcomes(5, outcomes))
