"""Config section ``archive`` (declared by the archive stage's StageSpec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ArchiveConfig:
    """Bulk compression into xz shards with a Parquet index (``facezip archive``)."""

    # inputs per shard: each worker encodes and commits one shard of this many inputs at a time
    # (rejected inputs are listed in its stats), so a rerun rebuilds a lost shard byte for byte
    records_per_shard: int = 1000
    batch_size: int = 32  # images per codec batch in an encoder actor
    num_actors: Optional[int] = None  # None: one encoder actor per cluster CPU
    cpus_per_actor: float = 0.5  # fractional: whole CPUs per actor starve Ray's read tasks on small hosts
    gpus_per_actor: float = 0.0
    max_image_pixels: int = 40_000_000  # larger inputs are rejected as too_large
    # true: archive damaged JPEG/PNG inputs (see detect.accept_damaged), noted in the index
    accept_damaged: bool = False
    # identity floor (`--min-identity`): a face whose decode fails any judge's threshold against its
    # original is re-encoded at the next rung of the rate ladder, after the top as lossless PNG
    identity_floor: bool = False
    judges: list[str] = field(default_factory=lambda: ["dlib-resnet"])  # every one must pass
    # per judge, in its own measure: dlib-resnet a Euclidean distance (≤), facenet a cosine (≥);
    # defaults measured on LFW-dev pairs by scripts/judge_thresholds.py (README, "identity floor")
    thresholds: dict[str, float] = field(default_factory=lambda: {"dlib-resnet": 0.3, "facenet": 0.85})
    # a variable-rate codec's floor bisects its quality instead of climbing levels: the lowest quality
    # (or codec.level's / codec.quality's) first, then this many rounds, then the top if no quality
    # passed yet; each round encodes, decodes and judges every face still open, in one batch
    floor_steps: int = 6
    # the rate ladder as weights files, lowest rate first (levels 1..n; codec.level picks the start,
    # default 1); [] = the codec's bundled ladder (rungs from codec.level or its default level up)
    ladder: list[str] = field(default_factory=list)
    facenet_weights: str = "casia-webface"  # the facenet judge's weights (facezip.models.facenet.load_facenet)
