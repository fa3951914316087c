"""Running every face through one codec level and measuring what came out.

Per face: a row of rate, quality and identity metrics (or a failure row with its reason).
Per level: mean / max / min of each metric plus the level-wide identity measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from facezip.tasks.evaluate.codecs import Coded, Level
from facezip.tasks.evaluate.data import FaceSet, pair_keys
from facezip.tasks.evaluate.identity import cosine_rows, kfold_verification, nearest_neighbour_accuracy
from facezip.tasks.evaluate.metrics import (FACE_METRICS, QUALITY_METRICS, face_metrics, quality_metrics,
                                            rate_metrics, summarize)

SUMMARIZED = ("bpp", "ratio_raw", "ratio_source", *QUALITY_METRICS, *FACE_METRICS, "cosine")

Embed = Callable[[list[np.ndarray]], np.ndarray]  # faces → (N, D) unit rows
FindFaces = Callable[[list[np.ndarray]], np.ndarray]  # faces → (N,) 1.0 where MTCNN finds a face


@dataclass
class LevelResult:
    level: Level
    rows: list[dict]  # one per input face, in input order
    embeddings: np.ndarray  # (N, D); NaN rows where the face failed
    samples: list[Coded | None] = field(default_factory=list)  # the first faces, for the sample grid


def evaluate_level(level: Level, faceset: FaceSet, originals: np.ndarray, embed: Embed,
                   find_faces: FindFaces | None, batch_size: int, n_samples: int) -> LevelResult:
    faces = faceset.faces
    rows: list[dict] = [_failure(level, face, face.error) for face in faces]
    embeddings = np.full_like(originals, np.nan)
    readable = [i for i, face in enumerate(faces) if face.rgb is not None]
    sample_slot = {face_index: slot for slot, face_index in enumerate(readable[:n_samples])}
    samples: list[Coded | None] = [None] * len(sample_slot)
    if readable:
        level.warm_up(faces[readable[0]].rgb)
    with tqdm(total=len(readable), desc=f"evaluate {level.label}", unit="img") as bar:
        for start in range(0, len(readable), batch_size):
            chunk = readable[start : start + batch_size]
            coded = []
            for i, outcome in zip(chunk, level.roundtrip([faces[i].rgb for i in chunk])):
                if isinstance(outcome, str):
                    rows[i] = _failure(level, faces[i], outcome)
                    continue
                rows[i] = _measure(level, faces[i], outcome)
                coded.append((i, outcome))
                if i in sample_slot:
                    samples[sample_slot[i]] = outcome
            if coded:
                _judge(coded, rows, embeddings, originals, embed, find_faces)
            bar.update(len(chunk))
    return LevelResult(level, rows, embeddings, samples)


def summarize_level(result: LevelResult, faceset: FaceSet, originals: np.ndarray) -> dict:
    """The level's row of the tables: counts, mean/max/min of each metric, identity measures."""
    level, rows = result.level, result.rows
    ok = [row for row in rows if row["status"] == "ok"]
    encode_ms, decode_ms = level.timing.per_image_ms()
    summary: dict = {"label": level.label, "codec": level.codec, "kind": level.kind, "setting": level.setting,
                     "images": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
                     "size_mb": sum(row["bytes"] for row in ok) / 1e6,
                     "encode_ms": encode_ms, "decode_ms": decode_ms}
    for metric in SUMMARIZED:
        for stat, value in summarize([row[metric] for row in ok]).items():
            summary[f"{metric}_{stat}"] = value
    checked = [row["face_found"] for row in ok if not math.isnan(row["face_found"])]
    summary["faces_not_detected"] = int(sum(1 for found in checked if not found)) if checked else None
    summary.update(_verification(result.embeddings, faceset))
    ok_index = [i for i, row in enumerate(rows) if row["status"] == "ok"]
    accuracy, counted = nearest_neighbour_accuracy(
        result.embeddings[ok_index], originals[ok_index], [faceset.faces[i].identity for i in ok_index])
    summary.update({"nn_accuracy": accuracy, "nn_faces": counted})
    return summary


def _verification(embeddings: np.ndarray, faceset: FaceSet) -> dict:
    """k-fold pair verification on decoded faces; pairs with a failed face are left out."""
    position = pair_keys(faceset.faces)
    usable = [p for p in faceset.pairs if not (np.isnan(embeddings[position[p.id1]]).any()
                                              or np.isnan(embeddings[position[p.id2]]).any())]
    a = embeddings[[position[p.id1] for p in usable]]
    b = embeddings[[position[p.id2] for p in usable]]
    result = kfold_verification(cosine_rows(a, b), np.array([p.same for p in usable], dtype=bool),
                                np.array([p.fold for p in usable]))
    return {"verification_accuracy": result.accuracy, "verification_std": result.std,
            "verification_pairs": result.pairs, "verification_folds": result.folds,
            "pairs_skipped": len(faceset.pairs) - len(usable)}


def _judge(coded: list[tuple[int, Coded]], rows: list[dict], embeddings: np.ndarray, originals: np.ndarray,
           embed: Embed, find_faces: FindFaces | None) -> None:
    indices = [i for i, _ in coded]
    decoded = [outcome.decoded for _, outcome in coded]
    embeddings[indices] = embed(decoded)
    similarity = cosine_rows(embeddings[indices], originals[indices])
    found = find_faces(decoded) if find_faces else np.full(len(indices), np.nan)
    for i, cosine, face_found in zip(indices, similarity, found):
        rows[i].update(cosine=float(cosine), face_found=float(face_found))


def _measure(level: Level, face, coded: Coded) -> dict:
    height, width = face.rgb.shape[:2]
    return {**_base(level, face), "status": "ok", "error": "", "height": height, "width": width,
            **rate_metrics(coded.n_bytes, height, width, face.source_bytes),
            **quality_metrics(face.rgb, coded.decoded), **face_metrics(face.rgb, coded.decoded, face.mask.mask),
            "cosine": math.nan, "face_found": math.nan}


def _failure(level: Level, face, error: str | None) -> dict:
    return {**_base(level, face), "status": "failed", "error": error or ""}


def _base(level: Level, face) -> dict:
    return {"label": level.label, "codec": level.codec, "setting": level.setting, "key": face.key,
            "identity": face.identity or "", "source": face.source}
