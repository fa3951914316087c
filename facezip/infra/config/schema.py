"""infra's part of the config tree: the root keys and the sections every stage shares.

Each stage declares its own section beside its code; the tree is assembled from both
(``facezip.infra.config.core.config_tree``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class StorageConfig:
    """Where data lives. Paths may be local or fsspec URLs (``s3://bucket/key``).

    S3 credentials come from the usual AWS environment variables / config files.
    """

    endpoint_url: Optional[str] = None  # S3-compatible endpoint (MinIO, moto); None = AWS
    anon: bool = False
    # every S3 call: an unreachable endpoint or missing credentials fail in seconds, not a hang
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: $RAY_ADDRESS, else a local Ray started for the run
    num_cpus: Optional[int] = None  # local Ray only; None = all cores
    include_dashboard: bool = False
    log_to_driver: bool = True
    progress_bars: bool = True


@dataclass
class TrackingConfig:
    """MLflow tracking; ``uri: null`` means $MLFLOW_TRACKING_URI or MLflow's default."""

    enabled: bool = True
    uri: Optional[str] = None
    experiment: str = "facezip"


@dataclass
class CodecConfig:
    """The model compress, archive and evaluate use, and train trains."""

    name: str = "comcnn-reccnn"
    # "bundled" (shipped with facezip), a local path, an s3:// URI or models:/<name>/<version>
    weights: str = "bundled"
    # rung of a codec's rate ladder for bundled weights (mean-scale-hyperprior: 1 = fewest bytes …
    # 8 = best quality); None = the codec's default rung. `--level N` on the command line.
    level: Optional[int] = None
    # a variable-rate codec's quality (comcnn-reccnn: the base codec's 1…100), instead of a named
    # level; `--quality Q` on the command line
    quality: Optional[float] = None
    # a variable-rate codec's rate target, instead of a level or quality: each image at the highest
    # quality whose file (compress) or record (archive) is at most this many bits per pixel, found in
    # bpp_steps rounds of bisection; the lowest quality when even that is larger. `--bpp B`
    bpp: Optional[float] = None
    bpp_steps: int = 7  # 7: every integer quality of 1…100 reachable
    # encode-time refinement: gradient steps per image on the codec's own rate + λ·distortion before
    # its latents are coded (0 = the encoder's output; at most 1000); codecs with differentiable
    # latents only (mean-scale-hyperprior); files decode as any other. `--effort N` on the command line
    effort: int = 0
    # the largest image (in pixels) decompress, restore and verify decode: a file or record that
    # claims more is refused before its payload is touched (4096×4096; a face needs far less)
    max_decode_pixels: int = 16_777_216


@dataclass
class SharedConfig:
    """The config tree's first keys; the stages' sections follow them."""

    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    seed: int = 0
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    # architecture options of a new (untrained) model, per codec, e.g. codecs.mean_scale_hyperprior.N=128;
    # the options and their defaults are the codec's constructor's (written once, there); a trained
    # model keeps its own, and options it predates are added (e.g. quant_gain)
    codecs: dict[str, dict[str, Any]] = field(default_factory=dict)
