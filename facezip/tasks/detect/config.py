"""Config section ``detect`` (declared by the detect stage's StageSpec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class DetectConfig:
    """MTCNN face detection and cropping (facenet-pytorch), run on a pool of Ray actors."""

    layout: str = "auto"  # auto | celeba | lfw | folder | parquet (see facezip.infra.readers)
    image_size: int = 160  # crops are image_size × image_size
    margin: int = 0  # extra pixels around the face, counted in crop pixels (as facenet-pytorch does)
    min_face_size: int = 20
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])
    min_probability: float = 0.9
    keep_all: bool = False  # every face above min_probability instead of the most probable one
    batch_size: int = 16
    num_actors: Optional[int] = None  # None: one MTCNN actor per cluster CPU
    cpus_per_actor: float = 0.5  # fractional: whole CPUs per actor starve Ray's read tasks on small hosts
    gpus_per_actor: Optional[float] = None  # None: 1/num_actors of a GPU when `device` resolves to cuda, else 0
    max_image_pixels: int = 40_000_000  # larger images are rejected as too_large
    # a JPEG/PNG that decodes although its decoder reports damage (corrupt data, premature end,
    # CRC errors) is rejected as `damaged`; true keeps it with the damage in its notes
    accept_damaged: bool = False
    # input images per worker task; each task writes its own faces/ and rejected/ part files
    # (a part of 500 160 px PNG crops is ≈ 20 MB)
    rows_per_file: int = 500
    contact_sheet_faces: int = 36  # sample crops in the MLflow contact sheet
