"""evaluate end to end: generated faces in LFW layout (and real LFW-dev when present), bad inputs,
the MLflow run, the embedding cache and the CLI. A tiny TorchScript judge keeps it fast; the
FaceNet path is exercised with a random-weight InceptionResnetV1 state dict."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from facezip.cli import main
from facezip.models.loading import weights_to_bytes
from facezip.models.registry import create_codec
from facezip.pipelines.config import load_config
from facezip.tasks.evaluate import run_evaluate
from tests.conftest import shared_dataset

PEOPLE = ("Ann_Alpha", "Bob_Beta", "Cid_Gamma", "Dee_Delta")
PAIRS = """2 2
Ann_Alpha 1 2
Bob_Beta 1 3
Ann_Alpha 1 Bob_Beta 2
Cid_Gamma 1 Dee_Delta 1
Cid_Gamma 2 3
Dee_Delta 1 2
Ann_Alpha 3 Cid_Gamma 3
Bob_Beta 1 Dee_Delta 3
"""


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory, astronaut) -> Path:
    """4 people × 3 images of 64×64 in LFW layout, with a 2-fold pairs.txt."""
    root = tmp_path_factory.mktemp("lfw-like")
    rng = np.random.default_rng(0)
    for p, person in enumerate(PEOPLE):
        (root / "images" / person).mkdir(parents=True)
        for i in range(1, 4):
            top, left = 30 + 40 * p + 4 * i, 150 + 5 * i
            face = astronaut[top : top + 64, left : left + 64].astype(int) + rng.integers(-8, 8, (64, 64, 3))
            path = root / "images" / person / f"{person}_{i:04d}.jpg"
            Image.fromarray(np.clip(face, 0, 255).astype(np.uint8)).save(path)
    (root / "pairs.txt").write_text(PAIRS)
    return root


@pytest.fixture(scope="module")
def codec_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random-cae.pt"
    path.write_bytes(weights_to_bytes(create_codec("binarized-cae").freeze()))
    return path


def _config(codec_weights: Path, judge: Path, *extra: str):
    return load_config([], [f"evaluate.models=[binarized-cae:{codec_weights}]", f"evaluate.judges=[{judge}]",
                            "evaluate.recognizer_input_size=64", "evaluate.recognizer_normalization=unit",
                            "evaluate.baselines=[jpeg,webp]", "evaluate.jpeg_qualities=[10,50,90]",
                            "evaluate.webp_qualities=[20,80]", "evaluate.detect_faces=false",
                            "tracking.enabled=false", "device=cpu", *extra])


def test_run_on_generated_faces_writes_every_output(faces_dir, codec_weights, tiny_judge, tmp_path):
    dest = tmp_path / "eval"
    summary = run_evaluate(_config(codec_weights, tiny_judge), str(faces_dir), str(dest))

    labels = [level["label"] for level in summary["levels"]]
    assert labels == ["reference-raw", "binarized-cae-random-cae", "jpeg-q10", "jpeg-q50", "jpeg-q90", "webp-q20",
                      "webp-q80"]
    (judge,) = summary["judges"]
    assert judge["name"] == tiny_judge.stem == summary["headline_judge"] and judge["measure"] == "cosine"
    assert "TorchScript" in judge["description"] and str(tiny_judge) in judge["description"]
    cosine = f"identity.{tiny_judge.stem}.mean_cosine"
    assert summary["images"] == 12 and summary["pairs"] == 8 and summary["folds"] == 2
    by_label = {level["label"]: level for level in summary["levels"]}
    reference = by_label["reference-raw"]
    assert reference["bpp_mean"] == 24.0 and reference["psnr_mean"] == "inf"
    assert reference[cosine] == pytest.approx(1.0, abs=1e-5)
    jpeg = [by_label[f"jpeg-q{q}"] for q in (10, 50, 90)]
    assert [j["bpp_mean"] for j in jpeg] == sorted(j["bpp_mean"] for j in jpeg)
    assert jpeg[0]["psnr_mean"] < jpeg[2]["psnr_mean"] and jpeg[2][cosine] > 0.9
    for level in summary["levels"]:
        assert level["ok"] == 12 and level["failed"] == 0
        assert level["verification_pairs"] == 8 and level["nn_faces"] == 12
        assert 0.0 <= level[f"identity.{tiny_judge.stem}.verification_accuracy"] <= 1.0
        assert level["bpp_min"] <= level["bpp_mean"] <= level["bpp_max"]
    facezip = by_label["binarized-cae-random-cae"]
    assert facezip["size_mb"] == pytest.approx(facezip["bpp_mean"] * 64 * 64 * 12 / 8 / 1e6)

    bd = {(row["codec"], row["metric"]): row for row in summary["bjontegaard"]}
    judged = (f"identity.{tiny_judge.stem}.mean_cosine", f"identity.{tiny_judge.stem}.verification_accuracy")
    assert set(bd) == {(c, m) for c in ("binarized-cae", "webp") for m in ("psnr", "ms_ssim", *judged)}
    assert isinstance(bd[("webp", "psnr")]["bd_rate_percent"], float)

    for name in ("rows.csv", "rows.json", "summary.csv", "summary.json", "bjontegaard.csv", "report.md",
                 "rate_psnr.png", "rate_ms_ssim.png", "rate_face_psnr.png", "rate_face_ms_ssim.png",
                 f"rate_identity_{tiny_judge.stem}.png", f"rate_verification_{tiny_judge.stem}.png", "samples.png",
                 "_SUCCESS.json"):
        assert (dest / name).stat().st_size > 0, name
    rows = json.loads((dest / "rows.json").read_text())
    assert len(rows) == 12 * 7
    report = (dest / "report.md").read_text()
    assert "Table 1: compression" in report and "Table 4: Bjøntegaard" in report and "TorchScript" in report
    assert f"identity judged by {tiny_judge.stem}" in report and f"{tiny_judge.stem} cosine mean" in report
    # a folder of images has no landmarks: every face is measured in the centre ellipse, and counted
    assert "12 faces used the centre-ellipse fallback" in report and summary["face_mask_fallbacks"] == 12
    assert "Face PSNR (dB) mean" in report
    assert reference["face_psnr_mean"] == "inf" and reference["face_l1_mean"] == 0.0
    assert jpeg[0]["face_psnr_mean"] < jpeg[2]["face_psnr_mean"]
    assert all(isinstance(row["face_psnr"], float) for row in rows if row["codec"] == "jpeg")
    assert json.loads((dest / "_SUCCESS.json").read_text())["levels"] == summary["levels"]
    assert any(p.name.startswith("embeddings-") for p in (dest / "cache").iterdir())


def test_bad_inputs_become_counted_failure_rows(faces_dir, codec_weights, tiny_judge, tmp_path):
    data = tmp_path / "crops"
    data.mkdir()
    for name in ("Ann_Alpha_0001.jpg", "Bob_Beta_0001.jpg"):
        (data / name).write_bytes((faces_dir / "images" / name.rsplit("_", 1)[0] / name).read_bytes())
    (data / "truncated.jpg").write_bytes((faces_dir / "images/Ann_Alpha/Ann_Alpha_0002.jpg").read_bytes()[:200])
    (data / "empty.png").write_bytes(b"")
    (data / "small.png").write_bytes(_png(np.zeros((20, 20, 3), np.uint8)))
    cfg = _config(codec_weights, tiny_judge, "evaluate.center_crop=48", "evaluate.baselines=[jpeg]",
                  "evaluate.jpeg_qualities=[50]")
    summary = run_evaluate(cfg, str(data), str(tmp_path / "eval"))

    assert summary["images"] == 5 and summary["unreadable_inputs"] == 3 and summary["pairs"] == 0
    for level in summary["levels"]:
        assert (level["ok"], level["failed"]) == (2, 3)
    failures = {row["key"]: row["error"] for row in json.loads((tmp_path / "eval/rows.json").read_text())
                if row["status"] == "failed" and row["label"] == "jpeg-q50"}
    assert set(failures) == {"truncated", "empty", "small"}
    assert "empty" in failures["empty"] and "smaller than center_crop=48" in failures["small"]
    assert "unreadable" in failures["truncated"]


def test_unknown_baseline_is_a_clear_error(faces_dir, codec_weights, tiny_judge, tmp_path):
    with pytest.raises(ValueError, match="unknown baseline 'jpeg2000'"):
        run_evaluate(_config(codec_weights, tiny_judge, "evaluate.baselines=[jpeg2000]"), str(faces_dir),
                     str(tmp_path / "eval"))
    assert not (tmp_path / "eval" / "_SUCCESS.json").exists()


def test_facenet_judge_mtcnn_and_one_mlflow_run(faces_dir, codec_weights, tmp_path, mlflow_sqlite):
    """FaceNet's network (random weights from a state dict: nothing to download), MTCNN re-run,
    and everything logged to one MLflow run; a second run hits the embedding cache."""
    judge = tmp_path / "facenet-random.pt"
    torch.manual_seed(2)
    from facenet_pytorch import InceptionResnetV1

    torch.save(InceptionResnetV1(pretrained=None).state_dict(), judge)
    cfg = load_config([], [f"evaluate.models=[binarized-cae:{codec_weights}]", f"evaluate.judges=[{judge}]",
                           "evaluate.baselines=[jpeg]", "evaluate.jpeg_qualities=[30,90]", "evaluate.max_images=4",
                           f"tracking.uri={mlflow_sqlite}", "tracking.experiment=evaluate-test", "device=cpu"])
    summary = run_evaluate(cfg, str(faces_dir), str(tmp_path / "eval"))

    assert "InceptionResnetV1 state dict" in summary["judges"][0]["description"]
    # max_images keeps whole pairs only: the first same and different pair of fold 1 (3 images)
    assert summary["images"] == 3 and summary["pairs"] == 2 and summary["folds"] == 1
    for level in summary["levels"]:
        assert 0 <= level["faces_not_detected"] <= level["ok"] == 3  # MTCNN ran on every decoded face
    run = mlflow.MlflowClient(mlflow_sqlite).get_run(summary["mlflow_run_id"])
    assert run.data.tags["evaluate.judge.facenet-random"] == summary["judges"][0]["description"]
    assert run.data.params["evaluate.max_images"] == "4"
    assert run.data.metrics["jpeg-q90.bpp_mean"] == pytest.approx(summary["levels"][3]["bpp_mean"])
    artifacts = {a.path for a in mlflow.MlflowClient(mlflow_sqlite).list_artifacts(run.info.run_id)}
    assert {"report.md", "rows.csv", "summary.json", "rate_verification_facenet-random.png", "samples.png",
            "config.yaml"} <= artifacts
    assert run.data.metrics["jpeg-q90.identity.facenet-random.mean_cosine"] > 0

    cache = next((tmp_path / "eval" / "cache").glob("embeddings-*.npz"))
    stamp = cache.stat().st_mtime_ns
    again = run_evaluate(cfg, str(faces_dir), str(tmp_path / "eval"))
    assert cache.stat().st_mtime_ns == stamp  # nothing new to embed: the cache was not rewritten
    cosine = "identity.facenet-random.mean_cosine"
    assert again["levels"][1][cosine] == pytest.approx(summary["levels"][1][cosine])


def test_cli_evaluate(faces_dir, codec_weights, tiny_judge, tmp_path, capsys):
    dest = tmp_path / "cli-eval"
    status = main(["evaluate", str(faces_dir), str(dest), "--codec", f"binarized-cae:{codec_weights}",
                   "--baselines", "jpeg", "--judge", str(tiny_judge), "evaluate.jpeg_qualities=[20,80]",
                   "evaluate.recognizer_input_size=64", "evaluate.detect_faces=false", "tracking.enabled=false"])
    out = capsys.readouterr().out
    assert status == 0
    assert f"judge {tiny_judge.stem} (headline): TorchScript" in out
    assert "jpeg-q80" in out and "binarized-cae-random-cae" in out
    assert (dest / "report.md").is_file() and (dest / "_SUCCESS.json").is_file()
    assert main(["evaluate", str(tmp_path / "missing"), str(dest), "tracking.enabled=false"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_lfw_dev_crops_with_its_pairs(codec_weights, tiny_judge, tmp_path):
    lfw = shared_dataset("lfw-dev")
    cfg = _config(codec_weights, tiny_judge, "evaluate.center_crop=160", "evaluate.max_images=20",
                  "evaluate.baselines=[jpeg]", "evaluate.jpeg_qualities=[10,90]", "evaluate.recognizer_input_size=80")
    summary = run_evaluate(cfg, str(lfw), str(tmp_path / "eval"))

    assert summary["images"] <= 20 and summary["folds"] == 5
    assert summary["pairs"] >= 10  # whole pairs, round-robin over 5 folds × same/different
    levels = {level["label"]: level for level in summary["levels"]}
    assert levels["reference-raw"]["verification_folds"] == 5
    assert levels["jpeg-q90"]["psnr_mean"] > levels["jpeg-q10"]["psnr_mean"] > 22
    assert levels["jpeg-q90"]["ms_ssim_mean"] > 0.97
    assert levels["jpeg-q10"]["ratio_source_mean"] > 1.0  # vs the 250×250 source JPEG


def _png(rgb: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()
