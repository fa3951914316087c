"""Turning input rows into archive records (batched codec on CPU or GPU), inside an archive worker.

Every input row comes out as one row: ``archived`` (with its record and how it was coded: rung,
identity similarity, lossless fallback) or ``rejected`` (with the reason), so nothing is lost
between input and index. (What the archive already holds was skipped before slicing.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from facezip.infra.device import resolve_device
from facezip.infra.images import ImageError, decode_image
from facezip.models.loading import codec_from_bytes
from facezip.models.registry import Codec
from facezip.tasks.archive.floor import Floor, RatePlan, encode_faces
from facezip.tasks.archive.ladder import Rung
from facezip.tasks.archive.layout import IDENTITY_SCORES, unsafe_id

DUPLICATE_COLUMN = "duplicate"  # set by the driver on every input after the first with the same id
ENCODED_SCHEMA = pa.schema([
    ("id", pa.string()), ("source_uri", pa.string()), ("identity", pa.string()), ("split", pa.string()),
    ("source_sha256", pa.string()), ("status", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("version", pa.int32()), ("record", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
    ("payload_bytes", pa.int64()), ("codec", pa.string()), ("model", pa.string()), ("weights_hash", pa.string()),
    ("level", pa.int32()), ("quality", pa.float32()), ("identity_similarity", pa.float32()),
    ("lossless_fallback", pa.bool_()), ("identity_scores", IDENTITY_SCORES), ("raised_by", pa.list_(pa.string())),
])


@dataclass(frozen=True)
class EncoderSettings:
    """What every actor needs. The large parts are ObjectRefs: one copy in the object store, and a
    small actor constructor (Ray warns about, and ships, every byte captured in it)."""

    codec: str
    # ObjectRef of (level, weights reference, quality, weights file) per rung, start rung first: the
    # driver loaded the files, so actors need neither S3 nor MLflow access
    rungs: Any
    device: str
    batch_size: int
    max_pixels: int
    thresholds: dict[str, float] | None = None  # the identity floor's, per judge; None = no floor
    judges: Any = None  # ObjectRef of the floor's judges (FaceNet's weights are large)
    accept_damaged: bool = False
    versions: Any = None  # ObjectRef of {id: latest version in the archive} (an archive's ids can be millions)
    search_steps: int | None = None  # bisection rounds over the start rung's quality (RatePlan)
    bpp: float | None = None  # codec.bpp: each face's rate target
    effort: int = 0  # latent refinement steps per face (codec.effort), at every rung


class ArchiveEncoder:
    """Codecs and judges loaded once per worker; called on batches of input rows."""

    def __init__(self, settings: EncoderSettings) -> None:
        import ray

        device = resolve_device(settings.device)
        rungs = [Rung(level, model, _codec_at(codec_from_bytes(data, model, expected_codec=settings.codec)
                                              .to(device).freeze().with_effort(settings.effort), quality))
                 for level, model, quality, data in ray.get(settings.rungs)]
        floor = None
        if settings.judges is not None:
            floor = Floor([judge.to(device) for judge in ray.get(settings.judges)], settings.thresholds)
        self.plan = RatePlan(rungs, floor, settings.search_steps, settings.bpp)
        self.settings = settings
        self.versions: dict[str, int] = ray.get(settings.versions)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out = [self._classify(row) for row in rows]
        pending = [(o, image) for o, image in out if image is not None]
        if pending:
            coded = encode_faces(self.plan, [image for _, image in pending], self.settings.batch_size)
            for (row, image), face in zip(pending, coded):
                notes = "; ".join(note for note in (row["detail"], face.note) if note) or None
                row.update(vars(face), height=image.shape[0], width=image.shape[1], detail=notes)
        return pa.Table.from_pylist([o for o, _ in out], schema=ENCODED_SCHEMA)

    def _classify(self, row: dict):
        data = row.get("image_bytes")
        result = {"id": row["id"], "source_uri": row["source_uri"], "identity": row.get("identity"),
                  "split": row.get("split"), "status": "rejected",
                  "source_sha256": hashlib.sha256(data).hexdigest() if data is not None else None}
        if data is None:
            return {**result, "reason": "read_error", "detail": row.get("read_error") or "no image bytes"}, None
        if why := unsafe_id(row["id"]):  # restore writes <out>/<id>.png: the id must stay below <out>
            detail = f"id {row['id']!r} is not a safe file name ({why})"
            return {**result, "reason": "unsafe_id", "detail": detail}, None
        if row.get(DUPLICATE_COLUMN):
            return {**result, "reason": "duplicate_id",
                    "detail": f"another input of this run already has id {row['id']!r}"}, None
        try:
            decoded = decode_image(data, self.settings.max_pixels, self.settings.accept_damaged)
        except ImageError as exc:
            return {**result, "reason": exc.reason, "detail": str(exc)}, None
        result.update(status="archived", version=self.versions.get(row["id"], 0) + 1,
                      detail="; ".join(decoded.notes) or None)
        return result, decoded.rgb


def _codec_at(codec: Codec, quality: float | None) -> Codec:
    """A variable-rate rung at the quality the driver chose (weights files hold no quality)."""
    return codec if quality is None else codec.at_quality(quality)
