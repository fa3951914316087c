"""Running every face through one codec level and measuring what came out.

Per face: a row of rate, quality and identity metrics (or a failure row with its reason).
Per level: mean / max / min of each metric plus, per judge, the identity measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from facezip.models.metrics import measure, metrics
from facezip.models.recognizer import identity_key
from facezip.tasks.evaluate.codecs import Level, RoundTrip
from facezip.tasks.evaluate.data import FaceSet, pair_keys
from facezip.tasks.evaluate.identity import Judging, kfold_verification, nearest_neighbour_accuracy
from facezip.tasks.evaluate.metrics import SUMMARIZED_RATES, rate_metrics, summarize

WORST_SHARE = 5  # percent: "worst 5 %" is the 5th percentile of a cosine, the 95th of a distance

FindFaces = Callable[[list[np.ndarray]], np.ndarray]  # faces → (N,) 1.0 where MTCNN finds a face


@dataclass
class LevelResult:
    level: Level
    rows: list[dict]  # one per input face, in input order
    embeddings: dict[str, np.ndarray]  # judge → (N, D); NaN rows where the face failed
    samples: list[RoundTrip | None] = field(default_factory=list)  # the first faces, for the sample grid


def evaluate_level(level: Level, faceset: FaceSet, judges: list[Judging], originals: dict[str, np.ndarray],
                   find_faces: FindFaces | None, batch_size: int, n_samples: int) -> LevelResult:
    faces = faceset.faces
    rows: list[dict] = [_failure(level, face, face.error) for face in faces]
    embeddings = {name: np.full_like(vectors, np.nan) for name, vectors in originals.items()}
    readable = [i for i, face in enumerate(faces) if face.rgb is not None]
    sample_slot = {face_index: slot for slot, face_index in enumerate(readable[:n_samples])}
    samples: list[RoundTrip | None] = [None] * len(sample_slot)
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
                rows[i] = _measure(level, faces[i], outcome, judges)
                coded.append((i, outcome))
                if i in sample_slot:
                    samples[sample_slot[i]] = outcome
            if coded:
                _judge(coded, rows, judges, embeddings, originals, find_faces)
            bar.update(len(chunk))
    return LevelResult(level, rows, embeddings, samples)


def summarize_level(result: LevelResult, faceset: FaceSet, judges: list[Judging],
                    originals: dict[str, np.ndarray]) -> dict:
    """The level's row of the tables: counts, mean/max/min of each metric, each judge's identity measures."""
    level, rows = result.level, result.rows
    ok = [row for row in rows if row["status"] == "ok"]
    encode_ms, decode_ms = level.timing.per_image_ms()
    summary: dict = {"label": level.label, "codec": level.codec, "kind": level.kind, "setting": level.setting,
                     "images": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
                     "size_mb": sum(row["bytes"] for row in ok) / 1e6,
                     "encode_ms": encode_ms, "decode_ms": decode_ms}
    for metric in (*SUMMARIZED_RATES, *(m.name for m in metrics())):
        for stat, value in summarize([row[metric] for row in ok]).items():
            summary[f"{metric}_{stat}"] = value
    checked = [row["face_found"] for row in ok if not math.isnan(row["face_found"])]
    summary["faces_not_detected"] = int(sum(1 for found in checked if not found)) if checked else None
    ok_index = [i for i, row in enumerate(rows) if row["status"] == "ok"]
    pairs = _usable_pairs(faceset, set(ok_index))
    for judging in judges:
        summary.update(_judge_summary(judging, result, faceset, originals, ok_index, pairs))
    summary.update({"verification_pairs": len(pairs.same), "verification_folds": len(set(pairs.fold)),
                    "pairs_skipped": len(faceset.pairs) - len(pairs.same)})
    return summary


@dataclass
class _Pairs:
    """The pairs whose two faces were both coded: face indexes, same person or not, fold."""

    first: list[int]
    second: list[int]
    same: np.ndarray
    fold: np.ndarray


def _usable_pairs(faceset: FaceSet, ok: set[int]) -> _Pairs:
    """Pairs with a failed face are left out of verification."""
    position = pair_keys(faceset.faces)
    usable = [p for p in faceset.pairs if position[p.id1] in ok and position[p.id2] in ok]
    return _Pairs([position[p.id1] for p in usable], [position[p.id2] for p in usable],
                  np.array([p.same for p in usable], dtype=bool), np.array([p.fold for p in usable]))


def _judge_summary(judging: Judging, result: LevelResult, faceset: FaceSet, originals: dict[str, np.ndarray],
                   ok_index: list[int], pairs: _Pairs) -> dict:
    """One judge's columns: mean and worst 5 % of its measure, k-fold pair verification and 1-NN
    accuracy on the decoded faces."""
    judge, name = judging.judge, judging.judge.name
    values = np.array([result.rows[i][judging.column] for i in ok_index], dtype=np.float64)
    values = values[~np.isnan(values)]
    worst_percentile = WORST_SHARE if judge.higher_is_better else 100 - WORST_SHARE
    decoded, original = result.embeddings[name], originals[name]
    nn, counted = nearest_neighbour_accuracy(judge.pairwise_scores(decoded[ok_index], original[ok_index]),
                                             [faceset.faces[i].identity for i in ok_index])
    similarity = judge.score(judge.compare(decoded[pairs.first], decoded[pairs.second]))
    verification = kfold_verification(similarity, pairs.same, pairs.fold)
    return {identity_key(name, f"mean_{judge.measure}"): float(values.mean()) if len(values) else math.nan,
            identity_key(name, f"worst5_{judge.measure}"):
                float(np.percentile(values, worst_percentile)) if len(values) else math.nan,
            identity_key(name, "verification_accuracy"): verification.accuracy,
            identity_key(name, "verification_std"): verification.std,
            identity_key(name, "nn_accuracy"): nn, "nn_faces": counted}


def _judge(coded: list[tuple[int, RoundTrip]], rows: list[dict], judges: list[Judging],
           embeddings: dict[str, np.ndarray], originals: dict[str, np.ndarray], find_faces: FindFaces | None) -> None:
    indices = [i for i, _ in coded]
    decoded = [outcome.decoded for _, outcome in coded]
    for judging in judges:
        name = judging.judge.name
        embeddings[name][indices] = judging.embed(decoded)
        for i, value in zip(indices, judging.judge.compare(embeddings[name][indices], originals[name][indices])):
            rows[i][judging.column] = float(value)
    found = find_faces(decoded) if find_faces else np.full(len(indices), np.nan)
    for i, face_found in zip(indices, found):
        rows[i]["face_found"] = float(face_found)


def _measure(level: Level, face, coded: RoundTrip, judges: list[Judging]) -> dict:
    height, width = face.rgb.shape[:2]
    return {**_base(level, face), "status": "ok", "error": "", "height": height, "width": width,
            **rate_metrics(coded.n_bytes, height, width, face.source_bytes),
            **measure(face.rgb, coded.decoded, face.mask.mask),
            **{j.column: math.nan for j in judges}, "face_found": math.nan}


def _failure(level: Level, face, error: str | None) -> dict:
    return {**_base(level, face), "status": "failed", "error": error or ""}


def _base(level: Level, face) -> dict:
    return {"label": level.label, "codec": level.codec, "setting": level.setting, "key": face.key,
            "identity": face.identity or "", "source": face.source}
