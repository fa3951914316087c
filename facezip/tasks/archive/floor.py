"""Encoding faces up the rate ladder until FaceNet still recognises them (``--min-identity``).

Every face is encoded at the start rung, decoded and embedded (one extra decode + embedding
per face); only the faces whose cosine to the original is below the floor go to the next rung,
batched again. After the top rung a face is stored as lossless PNG bytes, flagged.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from facezip.models.coding import decode_payloads, encode_payloads
from facezip.models.container import FzHeader
from facezip.models.recognizer import Recognizer
from facezip.models.registry import Codec
from facezip.tasks.archive.ladder import Rung
from facezip.tasks.archive.layout import LOSSLESS_CODEC, LOSSLESS_WEIGHTS_HASH, pack_record


@dataclass
class Coded:
    """One face's archive record and the index fields that describe how it was coded."""

    record: bytes
    payload_bytes: int
    codec: str
    weights_hash: str
    model: str
    level: int | None
    identity_similarity: float | None = None
    lossless_fallback: bool = False
    raised: bool = False  # stored above the start rung (or lossless)


def encode_faces(rungs: Sequence[Rung], images: Sequence[np.ndarray], judge: Recognizer | None,
                 floor: float | None, batch_size: int) -> list[Coded]:
    """``images`` coded at ``rungs[0]``; with a ``judge`` and ``floor``, each face at the lowest
    rung whose decode reaches the floor, else lossless."""
    if judge is None or floor is None:
        return [_coded(rungs[0], image, payload)
                for image, payload in zip(images, encode_payloads(rungs[0].codec, images, batch_size))]
    originals = judge.embed(images, batch_size)
    out: list[Coded | None] = [None] * len(images)
    todo = list(range(len(images)))
    for step, rung in enumerate(rungs):
        payloads = encode_payloads(rung.codec, [images[i] for i in todo], batch_size)
        headers = [_header(rung.codec, images[i]) for i in todo]
        decoded = decode_payloads(rung.codec, list(zip(headers, payloads)), batch_size)
        # unit-length rows: the dot product is the cosine similarity
        similarity = np.sum(originals[todo] * judge.embed(decoded, batch_size), axis=1)
        for i, payload, value in zip(todo, payloads, similarity):
            out[i] = _coded(rung, images[i], payload, float(value), raised=step > 0)
        todo = [i for i, value in zip(todo, similarity) if value < floor]
        if not todo:
            break
    for i in todo:
        out[i] = _lossless(images[i])
    return out  # type: ignore[return-value]


def _header(codec: Codec, image: np.ndarray) -> FzHeader:
    return FzHeader(codec.name, codec.weights_hash(), *image.shape[:2])


def _coded(rung: Rung, image: np.ndarray, payload: bytes, similarity: float | None = None,
           raised: bool = False) -> Coded:
    codec = rung.codec
    record = pack_record(_header(codec, image), payload, codec.xz_options, stored=codec.entropy_coded)
    return Coded(record, len(payload), codec.name, codec.weights_hash(), rung.model, rung.level, similarity,
                 raised=raised)


def _lossless(image: np.ndarray) -> Coded:
    """The decoded pixels as PNG: restore gives them back exactly, so the similarity is 1."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", optimize=True)
    payload = buffer.getvalue()
    header = FzHeader(LOSSLESS_CODEC, LOSSLESS_WEIGHTS_HASH, *image.shape[:2])
    return Coded(pack_record(header, payload, stored=True), len(payload), LOSSLESS_CODEC, LOSSLESS_WEIGHTS_HASH,
                 "lossless", None, 1.0, lossless_fallback=True, raised=True)


@dataclass
class IdentityTally:
    """What the floor did over a run: faces per level, raised faces, fallbacks, similarities."""

    levels: Counter = field(default_factory=Counter)
    raised: int = 0
    fallbacks: int = 0
    similarities: list[float] = field(default_factory=list)

    def add(self, row: dict) -> None:
        if row["lossless_fallback"] or row["level"] is not None:  # no ladder: nothing to count per level
            self.levels[LOSSLESS_CODEC if row["lossless_fallback"] else str(row["level"])] += 1
        self.raised += bool(row["raised"])
        self.fallbacks += bool(row["lossless_fallback"])
        if row["identity_similarity"] is not None:
            self.similarities.append(row["identity_similarity"])

    def summary(self) -> dict:
        values = np.array(self.similarities, dtype=np.float64)
        return {"faces_per_level": dict(sorted(self.levels.items())), "raised_faces": self.raised,
                "lossless_fallbacks": self.fallbacks,
                "identity_similarity_mean": round(float(values.mean()), 6) if len(values) else None,
                "identity_similarity_min": round(float(values.min()), 6) if len(values) else None}
