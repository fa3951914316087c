"""The Ray Data actor that turns input rows into archive records (batched codec on CPU or GPU).

Every input row comes out as one row: ``archived`` (with its xz record), ``skipped`` (already
in the archive) or ``rejected`` (with the reason), so nothing is lost between input and index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pyarrow as pa

from facezip.infra.device import resolve_device
from facezip.infra.images import ImageError, decode_image
from facezip.models.coding import encode_payloads
from facezip.models.container import FzHeader
from facezip.models.loading import codec_from_bytes
from facezip.tasks.archive.layout import pack_record

ENCODED_SCHEMA = pa.schema([
    ("id", pa.string()), ("source_uri", pa.string()), ("identity", pa.string()), ("split", pa.string()),
    ("source_sha256", pa.string()), ("status", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("version", pa.int32()), ("record", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
    ("payload_bytes", pa.int64()),
])


@dataclass
class SkipRules:
    """What the archive already holds. Normal runs skip ids already committed (resuming after
    a crash); incremental runs skip (source URI, content hash) pairs already archived and give
    a changed source a new version of its id."""

    incremental: bool = False
    done_ids: set[str] = field(default_factory=set)
    archived_keys: set[tuple[str, str]] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)

    def skips(self, image_id: str, source_uri: str, content_sha256: str) -> bool:
        if self.incremental:
            return (source_uri, content_sha256) in self.archived_keys
        return image_id in self.done_ids


@dataclass(frozen=True)
class EncoderSettings:
    codec: str
    weights: bytes  # the weights file the driver loaded: actors need neither S3 nor MLflow access
    source: str  # codec.weights, for messages
    device: str
    batch_size: int
    max_pixels: int


class ArchiveEncoder:
    """Callable class for ``Dataset.map_batches``: the codec is loaded once per actor."""

    def __init__(self, settings: EncoderSettings, rules: SkipRules) -> None:
        codec = codec_from_bytes(settings.weights, settings.source, expected_codec=settings.codec)
        self.codec = codec.to(resolve_device(settings.device)).freeze()
        self.weights_hash = self.codec.weights_hash()
        self.settings = settings
        self.rules = rules

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out = [self._classify(row) for row in rows]
        pending = [(o, image) for o, image in out if image is not None]
        if pending:
            payloads = encode_payloads(self.codec, [image for _, image in pending], self.settings.batch_size)
            for (row, image), payload in zip(pending, payloads):
                header = FzHeader(self.codec.name, self.weights_hash, *image.shape[:2])
                record = pack_record(header, payload, self.codec.xz_options, stored=self.codec.entropy_coded)
                row.update(record=record, height=header.height, width=header.width, payload_bytes=len(payload))
        return pa.Table.from_pylist([o for o, _ in out], schema=ENCODED_SCHEMA)

    def _classify(self, row: dict):
        data = row.get("image_bytes")
        result = {"id": row["id"], "source_uri": row["source_uri"], "identity": row.get("identity"),
                  "split": row.get("split"), "status": "rejected",
                  "source_sha256": hashlib.sha256(data).hexdigest() if data is not None else None}
        if data is None:
            return {**result, "reason": "read_error", "detail": row.get("read_error") or "no image bytes"}, None
        if self.rules.skips(row["id"], row["source_uri"], result["source_sha256"]):
            return {**result, "status": "skipped", "reason": "already_archived"}, None
        try:
            decoded = decode_image(data, self.settings.max_pixels)
        except ImageError as exc:
            return {**result, "reason": exc.reason, "detail": str(exc)}, None
        result.update(status="archived", version=self.rules.versions.get(row["id"], 0) + 1,
                      detail="; ".join(decoded.notes) or None)
        return result, decoded.rgb
