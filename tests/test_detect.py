"""The detect stage end to end on Ray: outputs, accounting, MLflow, real data, S3 and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from facezip.cli import main
from facezip.infra.readers import arrow_filesystem, open_reader
from facezip.infra.storage import Storage, join
from facezip.pipelines.config import load_config
from facezip.tasks.detect import FACE_COLUMNS, REJECTED_COLUMNS, run_detect
from tests import detect_samples as samples
from tests.conftest import SHARED_DATA, shared_dataset

# Kodak photos with no person in them (04, 05, 10, 12, 14, 15, 18 show people; 17 a statue's face);
# eight of them keep the test fast
KODAK_WITHOUT_PEOPLE = [1, 2, 3, 8, 13, 20, 22, 23]
FAST = ["ray.progress_bars=false", "detect.batch_size=4", "detect.num_actors=1"]


def _config(tmp_path: Path, *overrides: str):
    return load_config([], [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *FAST, *overrides])


def _check_outputs(summary: dict, dest: str, storage: Storage) -> None:
    """The accounting invariant and the on-disk contract, checked on every run."""
    assert summary["inputs"] == summary["kept_images"] + summary["rejected"]
    assert summary["rejected"] == sum(summary["rejected_by_reason"].values())
    assert json.loads(storage.read_bytes(join(dest, "_SUCCESS.json"))) == summary
    assert json.loads(storage.read_bytes(join(dest, "stats.json")))["inputs"] == summary["inputs"]
    faces = open_reader(dest, storage)  # a finished detect output reads as its faces/ table
    assert (faces.layout, faces.src, faces.count()) == ("parquet", join(dest, "faces"), summary["faces"])
    rejected = _table(join(dest, "rejected"), storage)
    assert rejected.column_names == REJECTED_COLUMNS and len(rejected) == summary["rejected"]
    kept_ids = {ref.id for ref in faces.refs()}
    assert kept_ids.isdisjoint(rejected.column("id").to_pylist())


def _table(url: str, storage: Storage):
    fs, path = storage.fs(url)
    return pq.read_table(path, filesystem=arrow_filesystem(fs))


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Faces under duplicate and unicode names, bad files, and Kodak photos without people."""
    src = tmp_path / "src"
    for rel, data in {"a/img.jpg": samples.encode(samples.astronaut()),
                      "b/img.png": samples.encode(samples.camera(), "PNG"),
                      "b/Zoë 顔.jpg": samples.cmyk_jpeg(),
                      "bad/empty.jpg": b"", "bad/notes.jpg": b"plain text\n",
                      "bad/truncated.jpg": samples.truncated_jpeg()}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    kodak = SHARED_DATA / "kodak"
    if kodak.is_dir():  # optional here: the rest of the test runs without the real photos
        for n in KODAK_WITHOUT_PEOPLE:
            _link(kodak / f"kodim{n:02d}.png", src / "kodak" / f"kodim{n:02d}.png")
    return src


def test_folder_run_keeps_faces_rejects_the_rest_and_logs_to_mlflow(
        mixed_folder: Path, tmp_path: Path, ray_local) -> None:
    cfg = _config(tmp_path)
    dest = str(tmp_path / "out")
    summary = run_detect(cfg, str(mixed_folder), dest)
    storage = Storage()
    _check_outputs(summary, dest, storage)
    kodak = len(list((mixed_folder / "kodak").glob("*.png"))) if (mixed_folder / "kodak").exists() else 0
    assert summary["inputs"] == 6 + kodak
    faces = _table(join(dest, "faces"), storage)
    assert faces.column_names == FACE_COLUMNS
    assert sorted(faces.column("id").to_pylist()) == ["a/img", "b/Zoë 顔", "b/img"]
    rejected = {row["id"]: row["reason"] for row in _table(join(dest, "rejected"), storage).to_pylist()}
    assert {k: v for k, v in rejected.items() if k.startswith("bad/")} == {
        "bad/empty": "empty", "bad/notes": "unreadable", "bad/truncated": "unreadable"}
    # Ray writes blocks in completion order: the rejected rows are a set, not a sequence.
    assert sorted(k for k in rejected if k.startswith("kodak/")) == [f"kodak/kodim{n:02d}" for n in
                                                                    KODAK_WITHOUT_PEOPLE][:kodak]
    assert all(rejected[f"kodak/kodim{n:02d}"] == "no_face" for n in KODAK_WITHOUT_PEOPLE[:kodak])

    run = mlflow.MlflowClient(cfg.tracking.uri).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["inputs"] == summary["inputs"] and run.data.metrics["faces"] == 3
    assert run.data.params["detect.min_probability"] == "0.9"
    artifacts = {a.path for a in mlflow.MlflowClient(cfg.tracking.uri).list_artifacts(run.info.run_id)}
    assert {"contact_sheet.png", "stats.json", "config.yaml"} <= artifacts


def _celeba_slice(tmp_path: Path, count: int) -> Path:
    celeba = shared_dataset("celeba-wild-sample")
    lines = (celeba / "identity_CelebA.txt").read_text().splitlines()[:count]
    root = tmp_path / "celeba"
    for line in lines:
        name = line.split()[0]
        _link(celeba / "images" / name, root / "images" / name)
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_wild_sample_kept_fraction(tmp_path: Path, ray_local, record_property) -> None:
    src = _celeba_slice(tmp_path, 16)
    # in-the-wild photos up to 1600 px: faces are large, and a larger minimum face keeps MTCNN quick
    summary = run_detect(_config(tmp_path, "tracking.enabled=false", "detect.min_face_size=60"),
                         str(src), str(tmp_path / "out"))
    _check_outputs(summary, str(tmp_path / "out"), Storage())
    record_property("celeba_kept_fraction", summary["kept_fraction"])
    print(f"celeba-wild-sample (first 16): kept {summary['kept_fraction']:.1%}, {summary['rejected_by_reason']}")
    assert summary["layout"] == "celeba" and summary["inputs"] == 16
    assert summary["kept_fraction"] >= 0.9
    identities = set(_table(join(str(tmp_path / "out"), "faces"), Storage()).column("identity").to_pylist())
    assert identities and None not in identities


def test_lfw_slice_kept_fraction(tmp_path: Path, ray_local, record_property) -> None:
    lfw = shared_dataset("lfw-dev")
    people = sorted(p for p in (lfw / "images").iterdir() if p.is_dir())[:12]
    for person in people:
        _link(person, tmp_path / "lfw" / "images" / person.name)
    _link(lfw / "pairs.txt", tmp_path / "lfw" / "pairs.txt")
    summary = run_detect(_config(tmp_path, "tracking.enabled=false"), str(tmp_path / "lfw"), str(tmp_path / "out"))
    _check_outputs(summary, str(tmp_path / "out"), Storage())
    record_property("lfw_kept_fraction", summary["kept_fraction"])
    print(f"lfw-dev ({summary['inputs']} images of 12 people): kept {summary['kept_fraction']:.1%}")
    assert summary["layout"] == "lfw" and summary["kept_fraction"] >= 0.95


def test_cli_on_s3_input_and_output(s3_bucket, ray_local, capsys) -> None:
    storage, bucket = s3_bucket
    for key, data in {"in/a/face.jpg": samples.encode(samples.astronaut()),
                      "in/b/face.jpg": samples.png_16bit(), "in/b/none.jpg": samples.encode(samples.no_face()),
                      "in/b/bad.jpg": samples.corrupt_jpeg()}.items():
        storage.write_bytes_atomic(join(bucket, key), data)
    dest = join(bucket, "out")
    status = main(["detect", join(bucket, "in"), dest, f"storage.endpoint_url={storage.endpoint_url}",
                   "tracking.enabled=false", *FAST])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    _check_outputs(summary, dest, storage)
    assert (summary["inputs"], summary["kept_images"], summary["rejected_by_reason"]) == (
        4, 2, {"no_face": 1, "unreadable": 1})
    faces = open_reader(join(dest, "faces"), storage).refs()
    assert sorted(ref.source_uri for ref in faces) == [join(bucket, "in/a/face.jpg"), join(bucket, "in/b/face.jpg")]


def test_cli_reports_a_bad_source(tmp_path: Path, capsys) -> None:
    assert main(["detect", str(tmp_path / "absent"), str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
