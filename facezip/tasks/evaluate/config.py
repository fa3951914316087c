"""Config section ``evaluate`` (declared by the evaluate stage's StageSpec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig

_OLD_QUALITIES_SUFFIX = "_qualities"


@dataclass
class EvaluateConfig:
    """Rate, quality and identity of facezip against image-codec baselines on face crops."""

    # facezip models: "CODEC:ladder" (every bundled rung, one curve), "CODEC:l2", "CODEC:bundled",
    # "CODEC:PATH|s3://…|models:/name/1", or plain weights of codec.name (curve "facezip"); [] = codec.*
    models: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=lambda: ["jpeg", "webp", "avif"])  # registered baselines
    # quality ladder per baseline, e.g. {avif: [1, 20, 50]}; a baseline not named runs its registered
    # ladder (jpeg, webp, avif: 10, 30, 50, 70, 90). `evaluate.jpeg_qualities=[…]` still reads as qualities.jpeg
    qualities: dict[str, list[int]] = field(default_factory=dict)
    reference: bool = True  # the uncompressed originals as a row: the ceiling of every identity metric
    # identity judges, each reported side by side: registered ones (dlib-resnet: independent;
    # facenet: the training loss's network) or a TorchScript / InceptionResnetV1 state-dict file.
    # The first judge no codec trains against gives the headline numbers.
    judges: list[str] = field(default_factory=lambda: ["dlib-resnet", "facenet"])
    facenet_weights: str = "casia-webface"
    recognizer_input_size: int = 160  # input convention of a judge given as a file
    recognizer_normalization: str = "facenet"  # facenet | unit | imagenet
    detect_faces: bool = True  # re-run MTCNN (detect.* settings) on decoded images
    layout: str = "auto"  # dataset layout for facezip.infra.readers: auto | lfw | celeba | folder | parquet
    pairs: Optional[str] = None  # LFW-style pairs.txt; None = the dataset's own (LFW layout)
    center_crop: Optional[int] = None  # e.g. 160 for LFW's 250×250 deep-funneled images
    max_images: Optional[int] = None  # with pairs: whole pairs, spread over folds and same/different
    bd_anchors: list[str] = field(default_factory=lambda: ["jpeg", "avif"])  # BD-rate of every curve vs each
    # a registered metric with Bjøntegaard deltas (psnr, ms_ssim, ssim, face_psnr, face_ms_ssim) |
    # identity (each judge's mean measure) | verification (each judge's accuracy)
    bd_metrics: list[str] = field(default_factory=lambda: ["psnr", "ms_ssim", "identity", "verification"])
    samples: int = 4  # faces in the sample grid
    batch_size: int = 32
    cache_dir: Optional[str] = None  # embedding cache; None = <dest>/cache
    max_image_pixels: int = 40_000_000

    @staticmethod
    def renamed_keys(section: DictConfig) -> None:
        """``<baseline>_qualities``, one key per baseline before the baseline registry, read as
        ``qualities.<baseline>`` (called by facezip.infra.config on every update)."""
        old = [str(key) for key in section if str(key).endswith(_OLD_QUALITIES_SUFFIX)]
        if old:
            moved = {key.removesuffix(_OLD_QUALITIES_SUFFIX): section.pop(key) for key in old}
            section.qualities = {**moved, **(section.get("qualities") or {})}
