"""Config sections of the pipeline stages, one dataclass per stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class DetectConfig:
    """MTCNN face detection and cropping (facenet-pytorch), run as a Ray Data actor pool."""

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
    rows_per_file: int = 2000  # Parquet rows per output file (≈ 80 MB of 160 px PNG crops)
    contact_sheet_faces: int = 36  # sample crops in the MLflow contact sheet


@dataclass
class TrainConfig:
    phase: str = "pretrain"  # pretrain | finetune
    epochs: int = 1
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 1e-4
    beta1: float = 0.99
    weight_decay: float = 0.0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: Optional[str] = None


@dataclass
class ArchiveConfig:
    """Bulk compression into xz shards with a Parquet index (``facezip archive``)."""

    records_per_shard: int = 1000  # a shard closes at this many records or target_shard_mb, whichever first
    target_shard_mb: float = 64.0
    batch_size: int = 32  # images per codec batch in an encoder actor
    num_actors: Optional[int] = None  # None: one encoder actor per cluster CPU
    cpus_per_actor: float = 0.5  # fractional: whole CPUs per actor starve Ray's read tasks on small hosts
    gpus_per_actor: float = 0.0
    max_image_pixels: int = 40_000_000  # larger inputs are rejected as too_large


@dataclass
class EvaluateConfig:
    baselines: list[str] = field(default_factory=lambda: ["jpeg", "webp", "avif"])
    jpeg_qualities: list[int] = field(default_factory=lambda: [10, 30, 50, 70, 90])
    webp_qualities: list[int] = field(default_factory=lambda: [10, 30, 50, 70, 90])
    avif_qualities: list[int] = field(default_factory=lambda: [10, 30, 50, 70, 90])
    recognizer: str = "facenet"
    facenet_weights: str = "casia-webface"
