"""How an archive picks each face's rate: one rung, the identity floor (``--min-identity``), or a
rate target (``--bpp``).

The floor decodes every face and has each judge embed it (one extra decode and one embedding per
judge per face). Over a rate ladder (fixed-rate codecs' rungs), only the faces that some judge
finds too far from the original (its threshold, in its own measure) go to the next rung, batched
again. A variable-rate codec's floor bisects its quality instead: every face at the lowest quality
first, then ``archive.floor_steps`` rounds over the faces still open, one batch each, keeping the
lowest quality checked to pass. A face that fails at the top is stored as lossless PNG bytes, flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facezip.models.coding import decode_payloads, encode_payloads, header_for
from facezip.models.lossless import LosslessCodec
from facezip.models.quality_search import Probe, QualitySearch, encode_within_bpp, quality_grid
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
    quality: float | None  # a variable-rate codec's quality (None: fixed-rate, or lossless)
    identity_scores: dict[str, float] | None = None  # judge → its measure of the stored face vs the original
    identity_similarity: float | None = None  # the facenet judge's cosine (the index column predating judges)
    lossless_fallback: bool = False
    # the judges that failed the face at the start rung (or lowest quality searched): non-empty
    # exactly when it was stored above it (or lossless)
    raised_by: list[str] = field(default_factory=list)
    note: str | None = None  # for the index's notes: a rate target not met


Verdict = tuple[dict[str, float], list[str]]  # a face's score per judge, and the judges it fails


@dataclass(frozen=True)
class Floor:
    """Judges and their thresholds, each in the judge's own measure; a face passes when all pass."""

    judges: Sequence[Recognizer]
    thresholds: dict[str, float]

    def embed(self, images: Sequence[np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        return {j.name: j.embed(images, batch_size) for j in self.judges}

    def judge(self, codec: Codec, originals: dict[str, np.ndarray], images: Sequence[np.ndarray],
              faces: list[int], payloads: list[bytes], batch_size: int) -> list[Verdict]:
        """Each face's payload decoded (one batch) and compared with its original by every judge."""
        decoded = decode_payloads(codec, [(header_for(codec, images[i]), p) for i, p in zip(faces, payloads)],
                                  batch_size)
        scores = {j.name: j.compare(originals[j.name][faces], j.embed(decoded, batch_size)) for j in self.judges}
        failing = {j.name: ~j.passes(scores[j.name], self.thresholds[j.name]) for j in self.judges}
        return [({name: float(s[k]) for name, s in scores.items()}, [name for name, f in failing.items() if f[k]])
                for k in range(len(faces))]


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


@dataclass(frozen=True)
class RatePlan:
    """How an archive codes each face, from its start rung ``rungs[0]``."""

    rungs: Sequence[Rung]  # with a floor and no search: the ladder it climbs, lowest rate first
    floor: Floor | None = None
    search_steps: int | None = None  # bisection rounds over the start rung's quality (a variable-rate codec)
    bpp: float | None = None  # with search_steps: each face's rate target, instead of a floor


def encode_faces(plan: RatePlan, images: Sequence[np.ndarray], batch_size: int) -> list[ArchivedFace]:
    """``images`` coded as ``plan`` says: at the start rung, at the lowest rung or quality whose
    decode passes every judge of the floor (else lossless), or within the bpp target."""
    start = plan.rungs[0]
    if plan.bpp is not None:
        return _within_bpp(start, images, plan.bpp, plan.search_steps, batch_size)
    if plan.floor is None:
        return [_coded(start, image, payload)
                for image, payload in zip(images, encode_payloads(start.codec, images, batch_size))]
    if plan.search_steps is not None:
        return _bisect(start, images, plan.floor, plan.search_steps, batch_size)
    return _climb(plan.rungs, images, plan.floor, batch_size)


def _climb(rungs: Sequence[Rung], images: Sequence[np.ndarray], floor: Floor, batch_size: int) -> list[ArchivedFace]:
    originals = floor.embed(images, batch_size)
    out: list[ArchivedFace | None] = [None] * len(images)
    raised_by: dict[int, list[str]] = {}
    todo = list(range(len(images)))
    for rung in rungs:
        payloads = encode_payloads(rung.codec, [images[i] for i in todo], batch_size)
        verdicts = floor.judge(rung.codec, originals, images, todo, payloads, batch_size)
        for i, payload, (scores, failed) in zip(todo, payloads, verdicts):
            raised_by.setdefault(i, failed)  # the judges that failed it at the start rung
            out[i] = _coded(rung, images[i], payload, scores, raised_by[i])
        todo = [i for i, (_, failed) in zip(todo, verdicts) if failed]
        if not todo:
            break
    return _lossless(out, todo, images, floor, raised_by, batch_size)


def _bisect(start: Rung, images: Sequence[np.ndarray], floor: Floor, steps: int,
            batch_size: int) -> list[ArchivedFace]:
    """Each face at the lowest quality from the start rung's up that was checked to pass."""
    codec = start.codec
    search = QualitySearch(codec, images, quality_grid(codec, codec.quality, 2**steps + 1), batch_size)
    originals = floor.embed(images, batch_size)
    verdicts: dict[Probe, Verdict] = {}

    def fails(probes: list[Probe]) -> list[bool]:
        judged = floor.judge(codec, originals, images, [i for i, _ in probes], search.encode(probes), batch_size)
        verdicts.update(zip(probes, judged))
        return [bool(failed) for _, failed in judged]

    top = len(search.grid) - 1
    search.check([(i, 0) for i in range(len(images))], fails)  # a face that passes here costs one encode
    search.bisect(fails, steps)
    search.check([(i, top) for i, b in enumerate(search.brackets) if b.below < top < b.above], fails)
    out: list[ArchivedFace | None] = [None] * len(images)
    raised_by = {i: verdicts[(i, 0)][1] for i in range(len(images))}
    for i, b in enumerate(search.brackets):
        if b.above <= top:
            out[i] = _coded(Rung(None, start.model, search.at(b.above)), images[i], search.payloads[(i, b.above)],
                            verdicts[(i, b.above)][0], raised_by[i])
    failed = [i for i, b in enumerate(search.brackets) if b.above > top]
    return _lossless(out, failed, images, floor, raised_by, batch_size)


def _lossless(out: list[ArchivedFace | None], faces: list[int], images: Sequence[np.ndarray], floor: Floor,
              raised_by: dict[int, list[str]], batch_size: int) -> list[ArchivedFace]:
    """``out`` with ``faces`` (those no rate kept recognisable) stored as PNG."""
    stored = {j.name: 1.0 if j.higher_is_better else 0.0 for j in floor.judges}  # exact pixels: no distance
    for i, payload in zip(faces, encode_payloads(LOSSLESS.codec, [images[i] for i in faces], batch_size)):
        out[i] = _coded(LOSSLESS, images[i], payload, stored, raised_by[i])
    return out  # type: ignore[return-value]


def _within_bpp(start: Rung, images: Sequence[np.ndarray], bpp: float, steps: int,
                batch_size: int) -> list[ArchivedFace]:
    codec = start.codec
    choices = encode_within_bpp(codec, images, bpp, steps, batch_size,
                                lambda image, payload: _record(codec, image, payload))
    return [_coded(Rung(None, start.model, codec.at_quality(c.quality)), image, c.payload,
                   note=None if c.within else f"over the codec.bpp target {bpp:g} even at the lowest quality "
                                              f"{c.quality:g}, coded at it")
            for image, c in zip(images, choices)]


def _record(codec: Codec, image: np.ndarray, payload: bytes) -> bytes:
    return pack_record(header_for(codec, image), payload, codec.xz_options, stored=codec.entropy_coded)


def _coded(rung: Rung, image: np.ndarray, payload: bytes, scores: dict[str, float] | None = None,
           raised_by: list[str] | None = None, note: str | None = None) -> ArchivedFace:
    codec = rung.codec
    return ArchivedFace(_record(codec, image, payload), len(payload), codec.name, codec.weights_hash(),
                        rung.model, rung.level, codec.quality, scores, (scores or {}).get(FACENET), rung is LOSSLESS,
                        raised_by or [], note)
