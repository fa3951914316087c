"""A variable-rate codec's identity floor bisects its quality, and ``--bpp`` targets a rate per face
(issue #16), on archive and compress: real codec (a small untrained comcnn-reccnn, JPEG base: the
"downscale, code, upscale" it starts as) and the real dlib-resnet judge, on 96 px faces.

Untrained, the codec keeps a face within dlib distance 0.45 somewhere between JPEG q20 and q90, so
at that floor every face fails the lowest quality and the bisection has to find its own quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from archive_support import index_rows
from facezip.cli import main
from facezip.infra.storage import Storage
from facezip.models.coding import bits_per_pixel, decode_files, encode_images
from facezip.models.loading import load_codec, weights_to_bytes
from facezip.models.recognizer import RecognizerOptions, load_recognizers
from facezip.models.registry import create_codec
from facezip.tasks.archive import ArchiveReader
from facezip.tasks.archive.floor import Floor, RatePlan, encode_faces
from facezip.tasks.archive.integrity import read_index
from facezip.tasks.archive.ladder import Rung

DISTANCE = 0.45  # dlib-resnet's floor in these tests
NAMES = ("face0", "face1", "face2")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "crc.pt"
    path.write_bytes(weights_to_bytes(create_codec("comcnn-reccnn", base="jpeg", channels=8, rec_layers=3).freeze()))
    return path


@pytest.fixture(scope="module")
def codec(weights):
    return load_codec("comcnn-reccnn", str(weights))


@pytest.fixture(scope="module")
def faces(astronaut, tmp_path_factory) -> Path:
    """Eileen Collins' face from skimage's astronaut photo, three crops of it at 96 px."""
    folder = tmp_path_factory.mktemp("faces")
    for name, (dy, dx) in zip(NAMES, [(0, 0), (10, 5), (-10, 10)]):
        crop = Image.fromarray(astronaut[30 + dy : 190 + dy, 170 + dx : 330 + dx]).resize((96, 96), Image.BILINEAR)
        crop.save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def dlib():
    return load_recognizers(["dlib-resnet"], RecognizerOptions())[0]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def images(faces: Path) -> list[np.ndarray]:
    return [pixels(faces / f"{name}.png") for name in NAMES]


def overrides(weights: Path, *extra: str) -> list[str]:
    return ["codec.name=comcnn-reccnn", f"codec.weights={weights}", "tracking.enabled=false", "device=cpu",
            "archive.num_actors=1", "ray.progress_bars=false", *extra]


def distance(dlib, codec, face: np.ndarray, quality: float) -> float:
    """dlib's distance of ``face`` to its decode at ``quality``, computed apart from the archive."""
    decoded = decode_files(codec, encode_images(codec.at_quality(quality), [face]))
    return float(dlib.compare(dlib.embed([face]), dlib.embed(decoded))[0])


@pytest.fixture(scope="module")
def floored(ray_local, weights, faces, tmp_path_factory) -> Path:
    """``facezip archive --min-identity dlib-resnet=0.45``, 7 rounds: every quality 1…100 reachable."""
    dest = tmp_path_factory.mktemp("floored") / "archive"
    assert main(["archive", str(faces), str(dest), "--quiet", *overrides(weights, "archive.floor_steps=7"),
                 "--min-identity", f"dlib-resnet={DISTANCE}"]) == 0
    return dest


def test_the_floor_keeps_each_face_at_a_quality_that_passes_where_the_one_below_fails(floored, codec, faces,
                                                                                      dlib, tmp_path):
    rows = {r["id"]: r for r in index_rows(str(floored))}
    reader = ArchiveReader(str(floored), Storage())
    for name, face in zip(NAMES, images(faces)):
        row = rows[name]
        quality = row["quality"]
        assert (row["level"], row["lossless_fallback"]) == (None, False)
        assert 1 < quality <= 100 and quality == round(quality)  # JPEG's integer qualities
        # checked to pass, and the quality below it checked to fail (7 rounds close every bracket)
        reached = distance(dlib, codec, face, quality)
        assert reached == pytest.approx(dict(row["identity_scores"])["dlib-resnet"], abs=1e-5)
        assert reached <= DISTANCE < distance(dlib, codec, face, quality - 1)
        # the record holds that quality's encoding: restore gives its decode
        direct = decode_files(codec, encode_images(codec.at_quality(quality), [face]))[0]
        np.testing.assert_array_equal(reader.restore([codec], name), direct)

    summary = json.loads((floored / "_SUCCESS.json").read_text())
    assert (summary["raised_faces"], summary["raised_by_judge"], summary["faces_per_level"]) == (
        3, {"dlib-resnet": 3}, {})
    qualities = sorted(r["quality"] for r in rows.values())
    assert summary["qualities"]["faces"] == 3
    assert (summary["qualities"]["min"], summary["qualities"]["median"], summary["qualities"]["max"]) == (
        pytest.approx(qualities[0]), pytest.approx(qualities[1]), pytest.approx(qualities[2]))
    assert summary["search_steps"] == 7 and summary["quality"] == 1.0  # from the lowest quality up
    assert main(["verify", str(floored), "tracking.enabled=false", "--quiet"]) == 0


def test_index_parts_written_before_the_quality_column_read_it_as_null(floored, tmp_path):
    part = next((floored / "index").glob("*.parquet"))
    old = tmp_path / "old"
    (old / "index").mkdir(parents=True)
    (old / "stats").mkdir()
    pq.write_table(pq.read_table(part).drop(["quality"]), old / "index" / part.name)
    stats = json.loads((floored / "stats" / f"{part.stem}.json").read_text())
    del stats["index_sha256"]  # stats written before index parts had a checksum
    (old / "stats" / f"{part.stem}.json").write_text(json.dumps(stats))
    table = read_index(str(old), Storage())
    assert table.num_rows == 3 and table["quality"].null_count == 3
    assert table["identity_scores"].null_count == 0


def test_faces_passing_at_the_lowest_quality_stay_there_and_failing_at_the_top_go_lossless(codec, faces, dlib):
    face = images(faces)[:1]
    start = Rung(None, "test", codec.at_quality(1))
    loose = encode_faces(RatePlan([start], Floor([dlib], {"dlib-resnet": 5.0}), 1), face, 8)[0]
    assert (loose.quality, loose.raised_by, loose.lossless_fallback) == (1.0, [], False)
    strict = encode_faces(RatePlan([start], Floor([dlib], {"dlib-resnet": 0.01}), 1), face, 8)[0]
    assert (strict.codec, strict.quality, strict.lossless_fallback, strict.raised_by) == (
        "png", None, True, ["dlib-resnet"])
    # the same faces give the same records
    plan = RatePlan([start], Floor([dlib], {"dlib-resnet": DISTANCE}), 2)
    first, again = (encode_faces(plan, images(faces)[1:], 8) for _ in range(2))
    assert [f.record for f in first] == [f.record for f in again]


def test_archive_bpp_keeps_each_record_within_the_target_at_the_highest_quality(ray_local, weights, codec, faces,
                                                                                tmp_path):
    dest = tmp_path / "archive"
    assert main(["archive", str(faces), str(dest), "--quiet", "--bpp", "1.2", *overrides(weights)]) == 0
    for row, face in zip(sorted(index_rows(str(dest)), key=lambda r: r["id"]), images(faces)):
        assert row["bpp"] <= 1.2 and row["notes"] is None
        above = encode_faces(RatePlan([Rung(None, "test", codec.at_quality(row["quality"] + 1))]), [face], 8)[0]
        assert bits_per_pixel(len(above.record), 96, 96) > 1.2  # one quality more is over the target
    summary = json.loads((dest / "_SUCCESS.json").read_text())
    assert summary["bpp_target"] == 1.2 and summary["qualities"]["faces"] == 3
    unreachable = encode_faces(RatePlan([Rung(None, "test", codec)], bpp=0.01, search_steps=7), images(faces)[:1], 8)
    assert unreachable[0].quality == 1.0 and "over the codec.bpp target 0.01 even at the lowest quality" in (
        unreachable[0].note)


def test_archive_at_a_quality_encodes_every_face_at_it(ray_local, weights, codec, faces, tmp_path):
    """The actors get the driver's quality (weights files hold none: they once coded at the default)."""
    dest = tmp_path / "archive"
    assert main(["archive", str(faces), str(dest), "--quiet", "--quality", "30", *overrides(weights)]) == 0
    reader = ArchiveReader(str(dest), Storage())
    for name, face in zip(NAMES, images(faces)):
        assert reader.row(name)["quality"] == 30.0
        direct = decode_files(codec, encode_images(codec.at_quality(30), [face]))[0]
        np.testing.assert_array_equal(reader.restore([codec], name), direct)


def test_compress_bpp_writes_the_same_files_within_the_target(weights, faces, tmp_path, capsys):
    args = [str(faces / f"{name}.png") for name in NAMES] + ["--bpp", "1.5", *overrides(weights)[:2], "--quiet"]
    assert main(["compress", *args, "-o", str(tmp_path / "a") + "/"]) == 0
    assert "quality " in capsys.readouterr().out
    assert main(["compress", *args, "-o", str(tmp_path / "b") + "/"]) == 0
    for name in NAMES:
        data = (tmp_path / "a" / f"{name}.fz").read_bytes()
        assert data == (tmp_path / "b" / f"{name}.fz").read_bytes()  # deterministic
        assert bits_per_pixel(len(data), 96, 96) <= 1.5
    assert main(["compress", args[0], "--bpp", "0.01", *overrides(weights)[:2], "--quiet",
                 "-o", str(tmp_path / "c.fz")]) == 0
    assert "over the 0.01 bpp target even at the lowest quality" in capsys.readouterr().out


@pytest.mark.parametrize("command, flags, message", [
    ("compress", ["--bpp", "0"], "--bpp 0 (codec.bpp): a rate target must be > 0"),
    ("compress", ["--bpp", "0.5", "codec.name=binarized-cae"], "--bpp (codec.bpp): codec 'binarized-cae' codes one "
                                                               "rate per weights"),
    ("archive", ["--bpp", "-1"], "a rate target must be > 0"),
    ("archive", ["--bpp", "0.5", "--min-identity"], "--bpp (codec.bpp) picks each face's rate, as --min-identity"),
    ("archive", ["--bpp", "0.5", "codec.name=mean-scale-hyperprior"], "codec 'mean-scale-hyperprior' codes one rate"),
])
def test_bad_bpp_is_a_usage_error_naming_the_flag(faces, tmp_path, capsys, command, flags, message):
    where = [str(faces), str(tmp_path / "a")] if command == "archive" else [str(faces / "face0.png"), "-o",
                                                                            str(tmp_path / "a.fz")]
    assert main([command, *where, "codec.name=comcnn-reccnn", "tracking.enabled=false", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.fz").exists()


@pytest.mark.parametrize("command", ["compress", "archive"])
def test_bpp_with_a_level_is_refused_by_the_parser(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "x", "y", "--bpp", "0.5", "--level", "2"])
    assert exited.value.code == 2
    assert "argument --level: not allowed with argument --bpp" in capsys.readouterr().err
