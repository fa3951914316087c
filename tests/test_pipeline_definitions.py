"""The bundled pipelines (celeba, nightly, demo) and the demo's dataset built from skimage.data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facezip.infra.readers import open_reader, parse_lfw_pairs
from facezip.infra.storage import Storage
from facezip.pipelines import bundled_pipelines, load_pipeline
from facezip.pipelines.config import load_config
from facezip.pipelines.demo import DEMO_DATA_STAGE, build_demo_dataset
from facezip.pipelines.spec import read_definition
from facezip.tasks.stage import run_stage

EXPECTED_STAGES = {
    "celeba": ["detect", "pretrain", "finetune", "archive", "verify", "evaluate"],
    "demo": ["data", "detect", "pretrain", "finetune", "archive", "verify", "evaluate"],
    "nightly": ["archive", "verify"],
}


def test_the_issue_s_pipelines_are_bundled() -> None:
    assert set(EXPECTED_STAGES) <= set(bundled_pipelines())


@pytest.mark.parametrize("name", sorted(EXPECTED_STAGES))
def test_bundled_pipeline_loads_with_its_stages_in_order(name: str, tmp_path: Path) -> None:
    source, text = read_definition(name)
    assert source == f"facezip.configs.pipelines/{name}.yaml" and "stages:" in text
    pipeline = load_pipeline(name, [f"pipeline.root={tmp_path}"])
    assert [stage.name for stage in pipeline.stages] == EXPECTED_STAGES[name]
    assert all(stage.output.startswith(str(tmp_path)) or stage.uses == "archive" for stage in pipeline.stages)


def test_nightly_archive_grows_one_archive_incrementally(tmp_path: Path) -> None:
    pytest.importorskip("facezip.tasks.archive")
    pipeline = load_pipeline("nightly", [f"pipeline.root={tmp_path}/night", f"data.archive={tmp_path}/archive"])
    archive = pipeline.stage("archive")
    assert archive.output == f"{tmp_path}/archive" and archive.resume is False
    assert pipeline.stage_arguments(archive)["incremental"] is True
    assert pipeline.stage_arguments(pipeline.stage("verify")) == {"dest": f"{tmp_path}/archive"}


def test_demo_data_stage_writes_an_lfw_face_database_and_a_photo_folder(tmp_path: Path) -> None:
    built = run_stage(DEMO_DATA_STAGE, load_config(overrides=["tracking.enabled=false"]), str(tmp_path))
    assert (built["photo_count"], built["face_count"]) == (36, 28)
    assert json.loads((tmp_path / "_SUCCESS.json").read_text()) == built
    storage = Storage()
    reader = open_reader(built["faces"], storage)
    assert reader.layout == "lfw"
    refs = list(reader.refs())
    assert len(refs) == 28 and len({ref.identity for ref in refs}) == 11
    pairs = parse_lfw_pairs((tmp_path / "faces" / "pairs.txt").read_text())
    ids = {ref.id for ref in refs}
    assert len(pairs) == 20 and sum(pair.same for pair in pairs) == 10
    assert all(pair.id1 in ids and pair.id2 in ids for pair in pairs)
    assert len(list((tmp_path / "photos").glob("*.png"))) == 36


def test_demo_faces_are_found_by_mtcnn(tmp_path: Path) -> None:
    """The face database is only useful to detect if MTCNN finds its faces (weights ship in facenet-pytorch)."""
    from facenet_pytorch import MTCNN

    build_demo_dataset(str(tmp_path))
    detector = MTCNN(device="cpu")
    images = sorted((tmp_path / "faces" / "images").glob("*/*_0001.jpg"))[:4]
    for path in images:
        boxes, probabilities = detector.detect(Image.open(path).convert("RGB"))
        assert boxes is not None and float(np.max(probabilities)) > 0.9, path.name
