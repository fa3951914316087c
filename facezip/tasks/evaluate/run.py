"""``run_evaluate``: every face through every codec level, then tables, plots and one MLflow run.

Files under ``dest``: ``rows.csv/json`` (one row per face and level, failures included),
``summary.csv/json`` (one row per level, with encode / decode ms per image; whole-image and
face-region metrics side by side), ``bjontegaard.csv``
(every codec curve against each of ``evaluate.bd_anchors``), ``report.md``, ``rate_*.png`` (whole
image and face region), ``samples.png``, the embedding cache (``cache/``) and, last, ``_SUCCESS.json``.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from omegaconf import DictConfig

from facezip.infra.device import resolve_device
from facezip.infra.storage import join
from facezip.models.metrics import metrics
from facezip.models.recognizer import Recognizer, RecognizerOptions, headline_judge, identity_key, load_recognizers
from facezip.tasks.evaluate.codecs import build_levels
from facezip.tasks.evaluate.config import EvaluateConfig
from facezip.tasks.evaluate.data import FaceSet, load_faces
from facezip.tasks.evaluate.identity import FaceChecker, Judging, VectorCache
from facezip.tasks.evaluate.levels import LevelResult, evaluate_level, summarize_level
from facezip.tasks.evaluate.plots import rate_curve, sample_grid
from facezip.tasks.evaluate.report import (
    accuracy_column,
    bjontegaard,
    json_safe,
    markdown,
    missing_anchors,
    row_columns,
    rows_csv,
    to_json,
)
from facezip.tasks.stage import StageContext, StageSpec, run_stage

log = logging.getLogger(__name__)


def run_evaluate(cfg: DictConfig, data: str, dest: str) -> dict:
    """Evaluate ``cfg.evaluate.models`` (or ``cfg.codec``) and the baselines on the faces
    of ``data``; write the results under ``dest``; return the ``_SUCCESS.json`` summary."""
    return run_stage(EVALUATE_STAGE, cfg, dest, data=data)


def evaluate(ctx: StageContext, data: str) -> dict:
    """The stage's work: measure every level on every face, then write the tables, plots and report."""
    cfg, storage, dest = ctx.cfg, ctx.storage, ctx.output
    ecfg = cfg.evaluate
    device = resolve_device(cfg.device)
    faceset = load_faces(data, storage, ecfg)
    levels = build_levels(cfg, storage, device)
    judges = load_judges(ecfg, device, storage)
    cache_dir = ecfg.cache_dir or join(dest, "cache")
    judging = [Judging(judge, storage, cache_dir, ecfg.batch_size) for judge in judges]
    checker = FaceChecker(cfg.detect, device) if ecfg.detect_faces else None
    detections = VectorCache(storage, join(cache_dir, f"faces-{checker.identity}.npz")) if checker else None

    def find_faces(images):
        return detections.lookup(images, lambda missing: checker.found(missing)[:, None])[:, 0]

    log.info("evaluate: %d faces (%d unreadable), %d pairs, %d levels, judges %s", len(faceset.faces),
             sum(face.rgb is None for face in faceset.faces), len(faceset.pairs), len(levels),
             ", ".join(judge.name for judge in judges))
    ctx.set_tags({"evaluate.headline_judge": headline_judge(judges).name,
                  **{f"evaluate.judge.{judge.name}": judge.description for judge in judges}})
    originals = {j.judge.name: _embed_originals(faceset, j.embed) for j in judging}
    results = []
    for level in levels:
        results.append(evaluate_level(level, faceset, judging, originals, find_faces if checker else None,
                                      ecfg.batch_size, ecfg.samples))
        for cache in (*(j.cache for j in judging), detections):  # keep finished levels' work if one fails
            if cache:
                cache.save()
    summaries = [summarize_level(result, faceset, judging, originals) for result in results]
    bd_rows = bjontegaard(summaries, list(ecfg.bd_anchors), list(ecfg.bd_metrics), judges, bool(faceset.pairs))
    faceset.notes += [f"no BD-rate against {anchor}: it was not measured in this run (evaluate.baselines)"
                      for anchor in missing_anchors(summaries, list(ecfg.bd_anchors))]
    files = _render(faceset, results, summaries, bd_rows, judges)
    outputs = {name: join(dest, name) for name in files}
    for name, content in files.items():
        storage.write_bytes_atomic(outputs[name], content)
    if ctx.run:
        _log_to_mlflow(summaries, files)
    return json_safe({
        "data": data, "dest": dest, "judges": [_judge_summary(judge) for judge in judges],
        "headline_judge": headline_judge(judges).name,
        "images": len(faceset.faces), "unreadable_inputs": sum(face.rgb is None for face in faceset.faces),
        "pairs": len(faceset.pairs), "folds": faceset.folds, "notes": faceset.notes,
        "face_mask_fallbacks": sum(bool(face.mask and face.mask.fallback) for face in faceset.faces),
        "levels": summaries, "bjontegaard": bd_rows, "outputs": outputs})


EVALUATE_STAGE = StageSpec("evaluate", evaluate, EvaluateConfig, result_keys=(
    "data", "judges", "headline_judge", "images", "pairs", "levels", "bjontegaard", "outputs"), uses_ray=False)


def load_judges(ecfg, device, storage) -> list[Recognizer]:
    """``evaluate.judges``: registered judges or embedding-network files, at least one."""
    if not ecfg.judges:
        raise ValueError("evaluate.judges is empty: name at least one identity judge (e.g. [dlib-resnet, facenet])")
    options = RecognizerOptions(ecfg.facenet_weights, str(device), storage, ecfg.recognizer_input_size,
                                ecfg.recognizer_normalization)
    return load_recognizers(list(ecfg.judges), options)


def _judge_summary(judge: Recognizer) -> dict:
    return {"name": judge.name, "description": judge.description, "measure": judge.measure,
            "higher_is_better": judge.higher_is_better, "trained_against": judge.trained_against,
            "unaligned_faces": getattr(judge, "unaligned", None)}


def _embed_originals(faceset: FaceSet, embed) -> np.ndarray:
    readable = [i for i, face in enumerate(faceset.faces) if face.rgb is not None]
    if not readable:
        reasons = "; ".join(face.error or "" for face in faceset.faces[:3])
        raise ValueError(f"none of the {len(faceset.faces)} input images could be read ({reasons} …)")
    vectors = embed([faceset.faces[i].rgb for i in readable])
    originals = np.full((len(faceset.faces), vectors.shape[1]), np.nan, dtype=np.float32)
    originals[readable] = vectors
    return originals


def _render(faceset: FaceSet, results: list[LevelResult], summaries: list[dict], bd_rows: list[dict],
            judges: list[Recognizer]) -> dict[str, bytes]:
    has_pairs = bool(faceset.pairs)
    rows = [row for result in results for row in result.rows]
    files = {
        "rows.csv": rows_csv(rows, row_columns(judges)), "rows.json": to_json(rows),
        "summary.csv": rows_csv(summaries, list(summaries[0])), "summary.json": to_json(summaries),
        "bjontegaard.csv": rows_csv(bd_rows, ["codec", "anchor", "metric", "points", "bd_rate_percent",
                                              "bd_quality", "note"]),
        "report.md": markdown(summaries, bd_rows, judges, has_pairs, faceset.notes).encode(),
        **{f"rate_{m.name}.png": rate_curve(summaries, f"{m.name}_mean", m.title) for m in metrics() if m.headline},
    }
    for judge in judges:
        better = "higher" if judge.higher_is_better else "lower"
        files[f"rate_identity_{judge.name}.png"] = rate_curve(
            summaries, identity_key(judge.name, f"mean_{judge.measure}"),
            f"{judge.measure} to the original ({better} is better)", judge.name)
        files[f"rate_verification_{judge.name}.png"] = rate_curve(
            summaries, accuracy_column(judge, has_pairs),
            "verification accuracy" if has_pairs else "1-NN identity accuracy", judge.name)
    readable = [face.rgb for face in faceset.faces if face.rgb is not None]
    grid = sample_grid(readable[: len(results[0].samples)], results)
    if grid:
        files["samples.png"] = grid
    return files


def _log_to_mlflow(summaries: list[dict], files: dict[str, bytes]) -> None:
    metrics = {}
    for summary in summaries:
        label = re.sub(r"[^\w\-. /]", "_", summary["label"])
        for key, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                metrics[f"{label}.{key}"] = float(value)
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            Path(tmp, name).write_bytes(content)
        mlflow.log_artifacts(tmp)
