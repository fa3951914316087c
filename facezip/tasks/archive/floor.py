"""Encoding faces up the rate ladder until every judge still recognises them (``--min-identity``).

Every face is encoded at the start rung, decoded and embedded by each judge (one extra decode
and one embedding per judge per face); only the faces that some judge finds too far from the
original (its threshold, in its own measure) go to the next rung, batched again. After the top
rung a face is stored as lossless PNG bytes, flagged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facezip.models.coding import decode_payloads, encode_payloads
from facezip.models.container import FzHeader
from facezip.models.lossless import LosslessCodec
from facezip.models.recognizer import FACENET, Recognizer, RecognizerOptions, load_recognizers
from facezip.models.registry import Codec
from facezip.tasks.archive.ladder import Rung
from facezip.tasks.archive.layout import pack_record

# above the top rung: the exact pixels as PNG, flagged as the lossless fallback in the index
LOSSLESS = Rung(None, "lossless", LosslessCodec().freeze())


@dataclass
class ArchivedFace:
    """One face's archive record and the index fields that describe how it was coded."""

    record: bytes
    payload_bytes: int
    codec: str
    weights_hash: str
    model: str
    level: int | None
    identity_scores: dict[str, float] | None = None  # judge → its measure of the stored face vs the original
    identity_similarity: float | None = None  # the facenet judge's cosine (the index column predating judges)
    lossless_fallback: bool = False
    # the judges that failed the face at the start rung: non-empty exactly when it was stored
    # above the start rung (or lossless)
    raised_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Floor:
    """Judges and their thresholds, each in the judge's own measure; a face passes when all pass."""

    judges: Sequence[Recognizer]
    thresholds: dict[str, float]

    def measure(self, originals: dict[str, np.ndarray], decoded: Sequence[np.ndarray],
                batch_size: int) -> dict[str, np.ndarray]:
        return {j.name: j.compare(originals[j.name], j.embed(decoded, batch_size)) for j in self.judges}

    def failing(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Judge → which faces it fails."""
        return {j.name: ~j.passes(scores[j.name], self.thresholds[j.name]) for j in self.judges}


def build_floor(settings, storage) -> Floor | None:
    """``archive.judges`` with their ``archive.thresholds`` when ``archive.identity_floor`` is on;
    a threshold outside its judge's measure (a cosine in (0, 1], a distance > 0) is an error."""
    if not settings.identity_floor:
        return None
    if not settings.judges:
        raise ValueError("archive.judges is empty: the identity floor needs at least one judge (e.g. dlib-resnet)")
    judges = load_recognizers(list(settings.judges), RecognizerOptions(settings.facenet_weights, "cpu", storage))
    thresholds = dict(settings.thresholds)
    for judge in judges:
        value = thresholds.get(judge.name)
        if value is None:
            raise ValueError(f"archive.thresholds has no threshold for the judge '{judge.name}' "
                             f"(--min-identity {judge.name}=VALUE, a {judge.measure})")
        if not (0 < value <= 1 if judge.higher_is_better else value > 0):
            raise ValueError(f"archive.thresholds.{judge.name} = {value}: a {judge.measure} floor must be "
                             + ("in (0, 1]" if judge.higher_is_better else "> 0"))
    return Floor(judges, {judge.name: float(thresholds[judge.name]) for judge in judges})


def encode_faces(rungs: Sequence[Rung], images: Sequence[np.ndarray], floor: Floor | None,
                 batch_size: int) -> list[ArchivedFace]:
    """``images`` coded at ``rungs[0]``; with a ``floor``, each face at the lowest rung whose
    decode passes every judge, else lossless."""
    if floor is None:
        return [_coded(rungs[0], image, payload)
                for image, payload in zip(images, encode_payloads(rungs[0].codec, images, batch_size))]
    originals = {j.name: j.embed(images, batch_size) for j in floor.judges}
    out: list[ArchivedFace | None] = [None] * len(images)
    raised_by: dict[int, list[str]] = {}
    todo = list(range(len(images)))
    for step, rung in enumerate(rungs):
        payloads = encode_payloads(rung.codec, [images[i] for i in todo], batch_size)
        headers = [_header(rung.codec, images[i]) for i in todo]
        decoded = decode_payloads(rung.codec, list(zip(headers, payloads)), batch_size)
        scores = floor.measure({name: vectors[todo] for name, vectors in originals.items()}, decoded, batch_size)
        failing = floor.failing(scores)
        for k, (i, payload) in enumerate(zip(todo, payloads)):
            if step == 0:
                raised_by[i] = [name for name, failed in failing.items() if failed[k]]
            out[i] = _coded(rung, images[i], payload, {name: float(s[k]) for name, s in scores.items()},
                            raised_by[i])
        todo = [i for k, i in enumerate(todo) if any(failed[k] for failed in failing.values())]
        if not todo:
            break
    stored = {j.name: 1.0 if j.higher_is_better else 0.0 for j in floor.judges}  # exact pixels: no distance
    for i, payload in zip(todo, encode_payloads(LOSSLESS.codec, [images[i] for i in todo], batch_size)):
        out[i] = _coded(LOSSLESS, images[i], payload, stored, raised_by[i])
    return out  # type: ignore[return-value]


def _header(codec: Codec, image: np.ndarray) -> FzHeader:
    return FzHeader(codec.name, codec.weights_hash(), *image.shape[:2])


def _coded(rung: Rung, image: np.ndarray, payload: bytes, scores: dict[str, float] | None = None,
           raised_by: list[str] | None = None) -> ArchivedFace:
    codec = rung.codec
    record = pack_record(_header(codec, image), payload, codec.xz_options, stored=codec.entropy_coded)
    return ArchivedFace(record, len(payload), codec.name, codec.weights_hash(), rung.model, rung.level, scores,
                        (scores or {}).get(FACENET), rung is LOSSLESS, raised_by or [])


@dataclass
class IdentityTally:
    """What the floor did over a run: faces per level, raised faces (and by which judge),
    fallbacks, and each judge's measure of the stored faces."""

    levels: Counter = field(default_factory=Counter)
    raised: int = 0
    raised_by: Counter = field(default_factory=Counter)
    fallbacks: int = 0
    scores: dict[str, list[float]] = field(default_factory=dict)

    def add(self, row: dict) -> None:
        if row["lossless_fallback"] or row["level"] is not None:  # no ladder: nothing to count per level
            self.levels[LOSSLESS.codec.name if row["lossless_fallback"] else str(row["level"])] += 1
        raised_by = row.get("raised_by") or []
        self.raised += bool(raised_by)
        self.raised_by.update(raised_by)
        self.fallbacks += bool(row["lossless_fallback"])
        for judge, value in dict(row.get("identity_scores") or {}).items():  # Arrow maps read as pairs
            self.scores.setdefault(judge, []).append(value)

    def merge(self, other: "IdentityTally") -> None:
        self.levels.update(other.levels)
        self.raised += other.raised
        self.raised_by.update(other.raised_by)
        self.fallbacks += other.fallbacks
        for judge, values in other.scores.items():
            self.scores.setdefault(judge, []).extend(values)

    def summary(self, floor: Floor | None) -> dict:
        judges = {j.name: j for j in floor.judges} if floor else {}
        return {"faces_per_level": dict(sorted(self.levels.items())), "raised_faces": self.raised,
                "raised_by_judge": dict(sorted(self.raised_by.items())), "lossless_fallbacks": self.fallbacks,
                "identity": {name: _stats(values, judges.get(name)) for name, values in sorted(self.scores.items())}}


def _stats(values: list[float], judge: Recognizer | None) -> dict:
    """Mean and worst value of a judge's measure (the lowest cosine, the largest distance)."""
    array = np.array(values, dtype=np.float64)
    worst = array.min() if judge is None or judge.higher_is_better else array.max()
    return {"measure": judge.measure if judge else None, "mean": round(float(array.mean()), 6),
            "worst": round(float(worst), 6)}
