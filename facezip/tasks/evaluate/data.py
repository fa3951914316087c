"""The faces to evaluate on, through ``facezip.infra.readers``: any dataset layout (LFW with
its pairs, CelebA, a folder of crops) or the detect stage's output (``<dest>/faces/*.parquet``).

Every input is accounted for: a file that cannot be decoded (or is smaller than the centre
crop) stays in the set as a face with an ``error``, and becomes a failure row downstream.

Each face gets its face mask (``facezip.models.face_mask``) for the face-region metrics: from the
landmarks detect stored (mapped into the crop, and into the centre crop when asked), else the
centre-ellipse fallback, which the notes count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pyarrow.dataset as ds

from facezip.infra.images import ImageError, decode_image
from facezip.infra.readers import IMAGE_COLUMN, LfwPair, Reader, arrow_filesystem, open_reader, parse_lfw_pairs
from facezip.infra.storage import Storage
from facezip.models.face_mask import FaceMask, face_mask, landmarks_in_crop

GEOMETRY_COLUMNS = ("landmarks", "crop_box")  # detect's: landmarks in original pixels, the region cropped


@dataclass
class Face:
    key: str  # the reader's id, e.g. "Aaron_Peirsol_0001": what pairs.txt entries refer to
    source: str
    identity: str | None
    source_bytes: int = 0
    rgb: np.ndarray | None = None
    error: str | None = None
    mask: FaceMask | None = None  # the face region of rgb (set with it)


@dataclass
class FaceSet:
    faces: list[Face]
    pairs: list[LfwPair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def folds(self) -> int:
        return len({pair.fold for pair in self.pairs})


def load_faces(data: str, storage: Storage, ecfg) -> FaceSet:
    """Faces of ``data`` limited to ``ecfg.max_images`` and centre-cropped to ``ecfg.center_crop``;
    pairs from ``ecfg.pairs`` or the dataset's own ``pairs.txt``."""
    reader = open_reader(data, storage, ecfg.layout)  # a detect output reads as its faces
    faces = [Face(ref.id, ref.source_uri, ref.identity) for ref in reader.refs()]
    if not faces:
        raise ValueError(f"{data}: no images found (layout {reader.layout})")
    inline = list(_parquet_rows(reader, storage)) if reader.layout == "parquet" else None
    pairs = (parse_lfw_pairs(storage.read_bytes(ecfg.pairs).decode("utf-8")) if ecfg.pairs
             else reader.metadata.get("pairs", []))
    notes = [f"{len(faces)} images, layout {reader.layout}" + (f", {len(pairs)} pairs" if pairs else "")]
    pairs = _resolvable(pairs, faces, notes)
    chosen = range(len(faces))
    if ecfg.max_images and len(faces) > ecfg.max_images:
        chosen, pairs = _limit(faces, pairs, ecfg.max_images)
        notes.append(f"limited to {len(chosen)} images (evaluate.max_images={ecfg.max_images})")
    selected = []
    for i in chosen:
        fetch = ((lambda i=i: inline[i]) if inline is not None
                 else (lambda i=i: (storage.read_bytes(faces[i].source), None)))  # a file: no landmarks
        _decode(faces[i], fetch, ecfg.center_crop, ecfg.max_image_pixels)
        selected.append(faces[i])
    if ecfg.center_crop:
        notes.append(f"centre crops of {ecfg.center_crop}×{ecfg.center_crop} px")
    notes += mask_notes(selected)
    return FaceSet(selected, pairs, notes)


def mask_notes(faces: list[Face]) -> list[str]:
    """How many face masks are the centre-ellipse fallback, and why (the report's notes)."""
    reasons = [face.mask.fallback for face in faces if face.mask is not None and face.mask.fallback]
    counts = ", ".join(f"{reasons.count(reason)} {reason}" for reason in sorted(set(reasons)))
    return [f"{len(reasons)} faces used the centre-ellipse fallback for the face-region metrics"
            + (f" ({counts})" if counts else "; the others' masks are fitted to their landmarks")]


def pair_keys(faces: list[Face]) -> dict[str, int]:
    """Face index by the names pairs.txt uses: the id, else the source file's stem (detect output)."""
    index: dict[str, int] = {}
    for i, face in enumerate(faces):
        index.setdefault(PurePosixPath(face.source.split("#", 1)[0]).stem, i)
    index.update({face.key: i for i, face in enumerate(faces)})
    return index


def _resolvable(pairs: list[LfwPair], faces: list[Face], notes: list[str]) -> list[LfwPair]:
    known = pair_keys(faces)
    kept = [p for p in pairs if p.id1 in known and p.id2 in known]
    if len(kept) < len(pairs):
        notes.append(f"{len(pairs) - len(kept)} pairs name images that are not in the dataset: left out")
    return kept


def _parquet_rows(reader: Reader, storage: Storage) -> Iterator[tuple[bytes | None, dict | None]]:
    """``(image bytes, {landmarks, crop_box} or None)`` in the order of ``reader.refs()`` (the same
    dataset scan); the geometry where the table has detect's columns."""
    fs, path = storage.fs(reader.src)
    dataset = ds.dataset(path, format="parquet", filesystem=arrow_filesystem(fs))
    geometry = [c for c in GEOMETRY_COLUMNS if c in dataset.schema.names]
    geometry = geometry if len(geometry) == len(GEOMETRY_COLUMNS) else []
    for batch in dataset.to_batches(columns=[IMAGE_COLUMN, *geometry]):
        for row in batch.to_pylist():
            usable = geometry and all(row[c] is not None for c in geometry)
            yield row[IMAGE_COLUMN], ({c: row[c] for c in geometry} if usable else None)


def _limit(faces: list[Face], pairs: list[LfwPair], max_images: int) -> tuple[list[int], list[LfwPair]]:
    """Whole pairs taken round-robin over folds and same/different until the image budget is
    spent; without pairs, the first ``max_images`` faces."""
    if not pairs:
        return list(range(max_images)), []
    index = pair_keys(faces)
    queues = [[p for p in pairs if p.fold == fold and p.same == same]
              for fold in sorted({p.fold for p in pairs}) for same in (True, False)]
    chosen: list[LfwPair] = []
    keys: set[int] = set()
    for rank in range(max(map(len, queues))):
        added = False
        for queue in queues:
            if rank < len(queue):
                wanted = keys | {index[queue[rank].id1], index[queue[rank].id2]}
                if len(wanted) <= max_images:
                    chosen.append(queue[rank])
                    keys, added = wanted, True
        if not added:
            break
    return sorted(keys), chosen


def _decode(face: Face, fetch: Callable[[], tuple[bytes | None, dict | None]], center_crop: int | None,
            max_pixels: int) -> None:
    try:
        data, geometry = fetch()
        data = data or b""  # a Parquet row without image bytes is an empty image
        face.source_bytes = len(data)
        rgb = decode_image(data, max_pixels).rgb
    except (OSError, ImageError) as exc:
        face.error = f"cannot read {face.source}: {exc}"
        return
    if center_crop and min(rgb.shape[:2]) < center_crop:
        face.error = f"{face.source}: {rgb.shape[1]}×{rgb.shape[0]} is smaller than center_crop={center_crop}"
        return
    landmarks = landmarks_in_crop(geometry["landmarks"], geometry["crop_box"], *rgb.shape[:2]) if geometry else None
    if center_crop:
        top, left = (rgb.shape[0] - center_crop) // 2, (rgb.shape[1] - center_crop) // 2
        rgb = np.ascontiguousarray(rgb[top : top + center_crop, left : left + center_crop])
        landmarks = None if landmarks is None else landmarks - [left, top]
    face.rgb = rgb
    face.mask = face_mask(*rgb.shape[:2], landmarks)
