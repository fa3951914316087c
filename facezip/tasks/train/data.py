"""Training data: Ray datasets for the phases, checked on the driver, batched on the workers.

A phase on photos (``pretrain``) reads any folder of photos through ``facezip.infra.readers``;
a phase on faces (``Phase.faces``: ``finetune``) reads the ``faces/`` Parquet written by
``detect`` (or a folder of Parquet files with the same ``image_bytes`` + ``face_box_in_crop``
columns, and ``landmarks`` + ``crop_box`` for the face masks of a masked loss, which fall back to
the centre ellipse without them). Every image is decoded once on the driver's Ray cluster to
account for it: unreadable ones are skipped and counted with their reason.
Rows keep their encoded bytes, the workers decode each batch, so random crops change every epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from facezip.infra.images import ImageError, decode_image
from facezip.infra.readers import IMAGE_COLUMN, arrow_filesystem, open_reader, output_table
from facezip.infra.storage import Storage
from facezip.models.face_mask import face_mask, landmarks_in_crop
from facezip.tasks.train.augment import AugmentConfig, FaceAugment
from facezip.tasks.train.phases import get_phase

BOX_COLUMN = "face_box_in_crop"
GEOMETRY_COLUMNS = ("landmarks", "crop_box")  # detect's landmarks (original pixels) and the region cropped
VAL_SPLITS = ("val", "valid", "validation", "test")
MAX_SKIPPED_EXAMPLES = 20


@dataclass
class TrainingData:
    """The datasets handed to Ray Train and the accounting of every input image."""

    train: Any  # ray.data.Dataset
    val: Any
    counts: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)  # first few: {"id", "reason"}


def load_training_data(phase: str, src: str, storage: Storage, train_cfg: Any) -> TrainingData:
    """Read, check and split ``src``; raises ValueError when nothing usable is left."""
    faces = get_phase(phase).faces
    dataset = _read(faces, src, storage)
    checked = dataset.map_batches(_CheckRows(faces, int(train_cfg.max_image_pixels),
                                             float(train_cfg.val_fraction)),
                                  batch_format="pyarrow", batch_size=64).materialize()
    bad = checked.filter(expr="is_valid(error)").select_columns(["id", "error"])
    good = checked.filter(expr="is_null(error)").drop_columns(["error"])
    skipped = [{"id": row["id"], "reason": row["error"]} for row in bad.take(MAX_SKIPPED_EXAMPLES)]
    train = good.filter(expr="is_val == False").materialize()
    val = good.filter(expr="is_val == True").materialize()
    counts = {"images": checked.count(), "skipped": bad.count(), "train": train.count(), "val": val.count()}
    if counts["train"] == 0:
        raise ValueError(f"{src}: no usable training images ({counts['images']} found, "
                         f"{counts['skipped']} skipped as unreadable, {counts['val']} held out for validation)")
    if counts["val"] == 0:  # tiny datasets: validate on training images rather than not at all
        val = train.limit(int(train_cfg.max_val_images)).materialize()
        counts["val"] = val.count()
    repeats = get_phase(phase).crops_per_image(train_cfg)
    if repeats > 1:  # the same blocks listed again, not copied: each pass draws new random crops
        train = train.union(*[train] * (repeats - 1))
    return TrainingData(train, val, counts, skipped)


def _read(faces: bool, src: str, storage: Storage):
    import ray.data

    if not faces:
        return open_reader(src, storage).to_ray_dataset().select_columns(["id", "split", IMAGE_COLUMN, "read_error"])
    path_uri = output_table(src, storage) or src  # a detect output: its faces
    fs, path = storage.fs(path_uri)
    dataset = ray.data.read_parquet(path, filesystem=arrow_filesystem(fs))
    missing = {IMAGE_COLUMN, BOX_COLUMN} - set(dataset.schema().names)
    if missing:
        raise ValueError(f"{path_uri}: not face crops from detect, missing column(s) {', '.join(sorted(missing))}")
    columns = [c for c in ("id", "split", IMAGE_COLUMN, BOX_COLUMN, *GEOMETRY_COLUMNS) if c in dataset.schema().names]
    return dataset.select_columns(columns)


class _CheckRows:
    """Ray batch function: decode each image once, note why it cannot be used, pick the split."""

    def __init__(self, faces: bool, max_pixels: int, val_fraction: float) -> None:
        self.faces, self.max_pixels, self.val_fraction = faces, max_pixels, val_fraction

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        errors, is_val = [], []
        for row in rows:
            errors.append(self._problem(row))
            row.setdefault("id", hashlib.sha1(row[IMAGE_COLUMN] or b"").hexdigest()[:16])
            is_val.append(_is_validation(row["id"], row.get("split"), self.val_fraction))
        keep = [c for c in table.column_names if c != "read_error"]
        out = pa.Table.from_pylist([{c: r.get(c) for c in keep + ["id"]} for r in rows])
        return out.append_column("error", pa.array(errors, pa.string())).append_column(
            "is_val", pa.array(is_val, pa.bool_()))

    def _problem(self, row: dict[str, Any]) -> str | None:
        if row.get("read_error"):
            return f"unreadable: {row['read_error']}"
        try:
            rgb = decode_image(row[IMAGE_COLUMN] or b"", self.max_pixels).rgb
        except ImageError as exc:
            return str(exc)
        if self.faces:
            box = row.get(BOX_COLUMN)
            height, width = rgb.shape[:2]
            if box is None or len(box) != 4 or not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
                return f"bad_box: face_box_in_crop {box} is not inside the {width}×{height} crop"
        return None


def _is_validation(image_id: str, split: str | None, val_fraction: float) -> bool:
    """The dataset's own split when it has one, else a stable hash of the id."""
    if split:
        return split.lower() in VAL_SPLITS
    digest = int(hashlib.sha1(image_id.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < val_fraction


Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # images, boxes, masks


class BatchMaker:
    """Worker side: encoded rows → ``(images (N,3,S,S) in [0,1], boxes (N,4) or None, masks
    (N,1,S,S) or None)``.

    Photos: a random ``S×S`` crop (reflect-padded when the photo is smaller) and a random
    horizontal flip in training, the centre crop for validation; no boxes, no masks. Faces:
    the face crop resized to ``S×S`` and its face box scaled with it (in training drawn through
    ``augment``'s random window, flip and colour jitter when given); with ``masks`` its face mask
    (``facezip.models.face_mask``), for a masked loss.
    """

    def __init__(self, phase: str, crop_size: int, max_pixels: int, masks: bool = False,
                 augment: AugmentConfig | None = None) -> None:
        self.faces = get_phase(phase).faces
        self.crop_size, self.max_pixels, self.masks = crop_size, max_pixels, masks
        self.random_crop = v2.Compose([v2.RandomCrop(crop_size, pad_if_needed=True, padding_mode="reflect"),
                                       v2.RandomHorizontalFlip()])
        self.augment = FaceAugment(augment, crop_size) if augment is not None and augment.enabled else None

    def __call__(self, batch: dict[str, np.ndarray], training: bool) -> Batch:
        images = [decode_image(data, self.max_pixels).rgb for data in batch[IMAGE_COLUMN]]
        if self.faces and training and self.augment:
            return self._augmented_faces(images, batch)
        if self.faces:
            size = self.crop_size
            tensors, boxes = self._faces(images, batch[BOX_COLUMN])
            masks = [self._mask(size, size, *row) for row in _geometry(batch)] if self.masks else None
            return tensors, boxes, None if masks is None else torch.stack(masks)
        crop = self.random_crop if training else self._centre_crop
        return torch.stack([crop(_to_float(rgb)) for rgb in images]), None, None

    def _augmented_faces(self, images: list[np.ndarray], batch: dict[str, np.ndarray]) -> Batch:
        tensors, boxes, masks = [], [], []
        for rgb, box, geometry in zip(images, batch[BOX_COLUMN], _geometry(batch)):
            mask = self._mask(*rgb.shape[:2], *geometry) if self.masks else None
            image, box, mask = self.augment(_to_float(rgb), np.asarray(box, dtype=np.float32), mask)
            tensors.append(image)
            boxes.append(box)
            masks.append(mask)
        return torch.stack(tensors), torch.from_numpy(np.stack(boxes)), torch.stack(masks) if self.masks else None

    @staticmethod
    def _mask(height: int, width: int, landmarks, crop_box) -> torch.Tensor:
        """The face mask (1,H,W) from detect's landmarks (the centre ellipse for rows without them)."""
        known = landmarks is not None and crop_box is not None
        points = landmarks_in_crop(landmarks, crop_box, height, width) if known else None
        return torch.from_numpy(face_mask(height, width, points).mask[None].astype(np.float32))

    def _centre_crop(self, image: torch.Tensor) -> torch.Tensor:
        short = self.crop_size - min(image.shape[-2:])
        if short > 0:  # reflect like the training crops, not v2.CenterCrop's zero padding
            image = F.pad(image[None], [(short + 1) // 2] * 4, mode="reflect")[0]
        return v2.functional.center_crop(image, [self.crop_size, self.crop_size])

    def _faces(self, images: list[np.ndarray], boxes) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.crop_size
        tensors, scaled = [], []
        for rgb, box in zip(images, boxes):
            height, width = rgb.shape[:2]
            if (height, width) != (size, size):
                rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))
            tensors.append(_to_float(rgb))
            scale = [size / width, size / height, size / width, size / height]
            scaled.append(np.asarray(box, dtype=np.float32) * scale)
        return torch.stack(tensors), torch.from_numpy(np.stack(scaled).astype(np.float32))


def _geometry(batch: dict[str, np.ndarray]) -> list[tuple[Any, Any]]:
    """Each row's ``(landmarks, crop_box)``, None where the rows have no such column."""
    count = len(batch[IMAGE_COLUMN])
    return list(zip(*[batch[c] if c in batch else [None] * count for c in GEOMETRY_COLUMNS]))


def _to_float(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1).div_(255.0)  # a writable copy

