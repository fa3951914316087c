"""Pipelines tracked on a real ``mlflow server`` process: parent/child runs, then ``facezip runs compare``."""

from __future__ import annotations

from pathlib import Path

import mlflow
from PIL import Image

from facezip.cli import main
from facezip.pipelines import load_pipeline, register_stage, run_pipeline
from facezip.tasks.stage import StageContext, StageSpec

QUALITY = {"bpp": 0.3, "psnr": 31.0, "ms_ssim": 0.95, "accuracy": 0.97, "cosine": 0.88}


def fake_detect(ctx: StageContext, src: str) -> dict:
    ctx.log_metrics({"kept": 3})
    return {"kept": 3}


def fake_evaluate(ctx: StageContext, data: str) -> dict:
    """Logs evaluate-like metrics that differ with ``seed``, so two runs can be told apart."""
    metrics = {f"facezip.{name}_mean": value * (1 + ctx.cfg.seed / 10) for name, value in QUALITY.items()}
    ctx.log_metrics({**metrics, "facezip.seconds": 1.0})
    return {"data": data, "rows": 1}


register_stage("compare-detect", StageSpec("detect", fake_detect, None, ("kept",), uses_ray=False))
register_stage("compare-evaluate", StageSpec("evaluate", fake_evaluate, None, ("data", "rows"), uses_ray=False))


def _run(tmp_path: Path, uri: str, seed: int) -> str:
    definition = tmp_path / "track.yaml"
    definition.write_text(
        "pipeline: {name: track}\n"
        "data: {faces: /data/faces}\n"
        "stages:\n"
        "  detect: {uses: compare-detect, with: {src: '${data.faces}'}}\n"
        "  evaluate: {uses: compare-evaluate, with: {data: '${stages.detect.output}'}}\n")
    pipeline = load_pipeline(str(definition), [f"pipeline.root={tmp_path / f'run{seed}'}", f"seed={seed}",
                                               f"tracking.uri={uri}", "tracking.experiment=compare"])
    return run_pipeline(pipeline)["mlflow_run_id"]


def test_pipeline_runs_nest_stage_runs_and_compare_side_by_side(tmp_path: Path, mlflow_server: str, capsys) -> None:
    first, second = _run(tmp_path, mlflow_server, seed=0), _run(tmp_path, mlflow_server, seed=5)

    client = mlflow.MlflowClient(mlflow_server)
    parent = client.get_run(first)
    assert parent.info.run_name == "pipeline-track" and parent.info.status == "FINISHED"
    assert parent.data.params["pipeline.data.faces"] == "/data/faces"
    assert parent.data.metrics["detect.kept"] == 3  # stage summaries, for the MLflow UI's run comparison
    assert parent.data.tags["pipeline.root"] == str(tmp_path / "run0")
    assert {"facezip.version", "torch.version", "ray.version", "git.commit"} <= set(parent.data.tags)
    assert "pipeline.yaml" in {f.path for f in client.list_artifacts(first)}
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first}'")
    assert sorted(child.info.run_name for child in children) == ["detect", "evaluate"]
    assert all(child.data.params["seed"] == "0" for child in children)

    plot = tmp_path / "compare.png"
    assert main(["runs", "compare", first, second, "--tracking-uri", mlflow_server, "--plot", str(plot)]) == 0
    output = capsys.readouterr().out.splitlines()  # MLflow prints "View run …" lines first
    table = output[next(i for i, line in enumerate(output) if line.startswith("metric ")):]
    assert table[0].split()[0] == "metric" and first[:8] in table[0] and second[:8] in table[0]
    rows = {line.split()[0]: line.split()[1:] for line in table[2:]}
    assert rows["evaluate/facezip.psnr_mean"] == ["31", "46.5"]
    assert rows["evaluate/facezip.accuracy_mean"] == ["0.97", "1.455"]
    assert set(rows) == {f"evaluate/facezip.{name}_mean" for name in QUALITY}  # no seconds, no detect counts
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.height > image.width / 2  # one panel per metric family


def test_compare_names_a_missing_run(mlflow_server: str, capsys) -> None:
    assert main(["runs", "compare", "0" * 32, "--tracking-uri", mlflow_server]) == 2
    assert f"run {'0' * 32}" in capsys.readouterr().err
