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
from facezip.infra.storage import Storage, join
from facezip.infra.tracking import start_run
from facezip.models.recognizer import load_recognizer
from facezip.tasks.evaluate.codecs import build_levels
from facezip.tasks.evaluate.data import FaceSet, load_faces
from facezip.tasks.evaluate.identity import FaceChecker, VectorCache
from facezip.tasks.evaluate.levels import LevelResult, evaluate_level, summarize_level
from facezip.tasks.evaluate.plots import rate_curve, sample_grid
from facezip.tasks.evaluate.report import (ROW_COLUMNS, accuracy_column, bjontegaard, json_safe, markdown,
                                           missing_anchors, rows_csv, to_json)

log = logging.getLogger(__name__)
SUCCESS = "_SUCCESS.json"


def run_evaluate(cfg: DictConfig, data: str, dest: str) -> dict:
    """Evaluate ``cfg.evaluate.models`` (or ``cfg.codec``) and the baselines on the faces
    of ``data``; write the results under ``dest``; return the ``_SUCCESS.json`` summary."""
    ecfg = cfg.evaluate
    storage = Storage.from_config(cfg.storage)
    device = resolve_device(cfg.device)
    faceset = load_faces(data, storage, ecfg)
    levels = build_levels(cfg, storage, device)
    judge = load_recognizer(ecfg.recognizer, ecfg.facenet_weights, device, storage,
                            ecfg.recognizer_input_size, ecfg.recognizer_normalization)
    cache_dir = ecfg.cache_dir or join(dest, "cache")
    embeddings = VectorCache(storage, join(cache_dir, f"embeddings-{judge.identity}.npz"))
    checker = FaceChecker(cfg.detect, device) if ecfg.detect_faces else None
    detections = VectorCache(storage, join(cache_dir, f"faces-{checker.identity}.npz")) if checker else None

    def embed(images):
        return embeddings.lookup(images, lambda missing: judge.embed(missing, ecfg.batch_size))

    def find_faces(images):
        return detections.lookup(images, lambda missing: checker.found(missing)[:, None])[:, 0]

    log.info("evaluate: %d faces (%d unreadable), %d pairs, %d levels, judge %s", len(faceset.faces),
             sum(face.rgb is None for face in faceset.faces), len(faceset.pairs), len(levels), judge.description)
    with start_run(cfg, "evaluate", tags={"facezip.stage": "evaluate", "evaluate.judge": judge.description}) as run:
        originals = _embed_originals(faceset, embed)
        results = []
        for level in levels:
            results.append(evaluate_level(level, faceset, originals, embed, find_faces if checker else None,
                                          ecfg.batch_size, ecfg.samples))
            for cache in (embeddings, detections):  # keep the work of finished levels if a later one fails
                if cache:
                    cache.save()
        summaries = [summarize_level(result, faceset, originals) for result in results]
        bd_rows = bjontegaard(summaries, list(ecfg.bd_anchors), list(ecfg.bd_metrics), bool(faceset.pairs))
        faceset.notes += [f"no BD-rate against {anchor}: it was not measured in this run (evaluate.baselines)"
                          for anchor in missing_anchors(summaries, list(ecfg.bd_anchors))]
        files = _render(faceset, results, summaries, bd_rows, judge.description)
        outputs = {name: join(dest, name) for name in files}
        for name, content in files.items():
            storage.write_bytes_atomic(outputs[name], content)
        if run:
            _log_to_mlflow(summaries, files)
    summary = json_safe({
        "stage": "evaluate", "data": data, "dest": dest, "judge": judge.description,
        "images": len(faceset.faces), "unreadable_inputs": sum(face.rgb is None for face in faceset.faces),
        "pairs": len(faceset.pairs), "folds": faceset.folds, "notes": faceset.notes,
        "face_mask_fallbacks": sum(bool(face.mask and face.mask.fallback) for face in faceset.faces),
        "levels": summaries, "bjontegaard": bd_rows, "outputs": outputs,
        "mlflow_run_id": run.info.run_id if run else None})
    storage.write_bytes_atomic(join(dest, SUCCESS), to_json(summary))
    return summary


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
            judge: str) -> dict[str, bytes]:
    has_pairs = bool(faceset.pairs)
    rows = [row for result in results for row in result.rows]
    files = {
        "rows.csv": rows_csv(rows, ROW_COLUMNS), "rows.json": to_json(rows),
        "summary.csv": rows_csv(summaries, list(summaries[0])), "summary.json": to_json(summaries),
        "bjontegaard.csv": rows_csv(bd_rows, ["codec", "anchor", "metric", "points", "bd_rate_percent",
                                              "bd_quality", "note"]),
        "report.md": markdown(summaries, bd_rows, judge, has_pairs, faceset.notes).encode(),
        "rate_psnr.png": rate_curve(summaries, "psnr_mean", "PSNR (dB)"),
        "rate_ms_ssim.png": rate_curve(summaries, "ms_ssim_mean", "MS-SSIM"),
        "rate_face_psnr.png": rate_curve(summaries, "face_psnr_mean", "face-region PSNR (dB)"),
        "rate_face_ms_ssim.png": rate_curve(summaries, "face_ms_ssim_mean", "face-region MS-SSIM"),
        "rate_cosine.png": rate_curve(summaries, "cosine_mean", "cosine to the original", judge),
        "rate_accuracy.png": rate_curve(summaries, accuracy_column(has_pairs),
                                        "verification accuracy" if has_pairs else "1-NN identity accuracy", judge),
    }
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
