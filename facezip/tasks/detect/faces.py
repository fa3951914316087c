"""The detect stage's per-batch work inside its worker: decode, find faces with MTCNN, crop, or say why not.

Every input row becomes either kept face rows (``reason`` null) or exactly one rejected row
(``reason`` set), so the driver can check that nothing was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import torch

from facezip.infra.images import DecodedImage, ImageError, decode_image
from facezip.models.face_detector import Face, FaceDetector, crop_face
from facezip.tasks.detect.config import DetectConfig

log = logging.getLogger(__name__)

_FLOATS = pa.list_(pa.float32())
# One table for both outcomes: the driver splits it into faces/ and rejected/.
DETECTION_SCHEMA = pa.schema([
    ("id", pa.string()),  # image id, or <image id>_<k> with keep_all
    ("image_id", pa.string()),
    ("face_index", pa.int32()),  # 0 = most probable face of the image
    ("source_uri", pa.string()),
    ("identity", pa.string()),
    ("split", pa.string()),
    ("image_bytes", pa.binary()),  # the crop, PNG
    ("box", _FLOATS),  # x1, y1, x2, y2 in original image pixels
    ("landmarks", _FLOATS),  # x, y × (left eye, right eye, nose, left mouth corner, right mouth corner)
    ("probability", pa.float32()),
    ("width", pa.int32()),  # of the original image, after EXIF orientation
    ("height", pa.int32()),
    ("crop_box", pa.list_(pa.int32())),  # the original-image region that became the crop
    ("face_box_in_crop", _FLOATS),  # x1, y1, x2, y2 in crop pixels
    ("notes", pa.string()),  # conversions applied while decoding, "; "-separated
    ("reason", pa.string()),  # null for a kept face; else no_face, low_probability, unreadable, too_large, …
    ("detail", pa.string()),  # the reason in words
])
FACE_COLUMNS = [name for name in DETECTION_SCHEMA.names if name not in ("reason", "detail")]
REJECTED_COLUMNS = ["id", "source_uri", "identity", "split", "reason", "detail", "notes"]


class DetectFaces:
    """One MTCNN, loaded once per worker; called on batches of input rows."""

    def __init__(self, detect_cfg: DetectConfig, device: str) -> None:
        # as many torch threads as CPUs reserved: more threads than cores makes MTCNN several times slower
        torch.set_num_threads(max(1, round(detect_cfg.cpus_per_actor)))
        self.cfg = detect_cfg
        self.detector = FaceDetector(device, detect_cfg.min_face_size, detect_cfg.thresholds)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[dict[str, Any]] = []
        decoded: list[tuple[dict[str, Any], DecodedImage]] = []
        for row in batch.to_pylist():
            image, rejection = self._decode(row)
            if rejection:
                out.append(rejection)
            else:
                decoded.append((row, image))
        for (row, image), faces in zip(decoded, self._detect([image.rgb for _, image in decoded])):
            out.extend(self._outcome(row, image, faces))
        return pa.Table.from_pylist(out, schema=DETECTION_SCHEMA)

    def _decode(self, row: dict[str, Any]) -> tuple[DecodedImage | None, dict[str, Any] | None]:
        if row.get("read_error") or row["image_bytes"] is None:
            return None, _rejected(row, "unreadable", row.get("read_error") or "no image bytes")
        try:
            image = decode_image(row["image_bytes"], self.cfg.max_image_pixels, self.cfg.accept_damaged)
        except ImageError as exc:
            return None, _rejected(row, exc.reason, str(exc))
        height, width = image.rgb.shape[:2]
        if min(height, width) < self.cfg.min_face_size:
            return None, _rejected(row, "too_small", f"{width}×{height} is smaller than min_face_size "
                                                     f"{self.cfg.min_face_size}", image.notes)
        return image, None

    def _detect(self, images: Sequence) -> list[list[Face] | Exception]:
        """Batched MTCNN; if the batch fails, image by image so one bad image costs only itself."""
        if not images:
            return []
        try:
            return self.detector.detect(images)
        except Exception as exc:  # noqa: BLE001 — isolate the culprit below
            log.warning("MTCNN failed on a batch (%s); retrying image by image", exc)
        results: list[list[Face] | Exception] = []
        for image in images:
            try:
                results.append(self.detector.detect([image])[0])
            except Exception as exc:  # noqa: BLE001 — recorded as the image's rejection
                results.append(exc)
        return results

    def _outcome(self, row: dict[str, Any], image: DecodedImage, faces: list[Face] | Exception) -> list[dict]:
        if isinstance(faces, Exception):
            return [_rejected(row, "detection_failed", f"{type(faces).__name__}: {faces}", image.notes)]
        kept, rejection = select_faces(faces, self.cfg.min_probability, self.cfg.keep_all)
        if rejection:
            return [_rejected(row, *rejection, image.notes)]
        return [self._face_row(row, image, face, index) for index, face in enumerate(kept)]

    def _face_row(self, row: dict[str, Any], image: DecodedImage, face: Face, index: int) -> dict[str, Any]:
        crop = crop_face(image.rgb, face.box, self.cfg.image_size, self.cfg.margin)
        height, width = image.rgb.shape[:2]
        face_id = f"{row['id']}_{index}" if self.cfg.keep_all else row["id"]
        return {**_ref(row), "id": face_id, "image_id": row["id"], "face_index": index,
                "image_bytes": crop.png, "box": list(face.box), "landmarks": list(face.landmarks),
                "probability": face.probability, "width": width, "height": height,
                "crop_box": list(crop.crop_box), "face_box_in_crop": list(crop.face_box_in_crop),
                "notes": "; ".join(image.notes) or None}


def select_faces(faces: list[Face], min_probability: float,
                 keep_all: bool) -> tuple[list[Face], tuple[str, str] | None]:
    """The faces to keep (most probable first) or ``(reason, detail)`` when there are none."""
    if not faces:
        return [], ("no_face", "MTCNN found no face")
    above = [face for face in faces if face.probability >= min_probability]
    if not above:
        return [], ("low_probability", f"best face probability {faces[0].probability:.3f} "
                                       f"is below min_probability {min_probability}")
    return (above if keep_all else above[:1]), None


def _ref(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get(key) for key in ("id", "source_uri", "identity", "split")}


def _rejected(row: dict[str, Any], reason: str, detail: str, notes: Sequence[str] = ()) -> dict[str, Any]:
    return {**_ref(row), "image_id": row["id"], "reason": reason, "detail": detail,
            "notes": "; ".join(notes) or None}
