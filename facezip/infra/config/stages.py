"""Config sections of the pipeline stages, one dataclass per stage."""

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


@dataclass
class PretrainConfig:
    """Phase 1 on general photos: ``l1_weight · L1 + ms_ssim_weight · (1 − MS-SSIM)``, Adam."""

    lr: float = 1e-4
    beta1: float = 0.99  # the paper's "momentum 0.99"
    weight_decay: float = 0.0
    l1_weight: float = 1.0
    ms_ssim_weight: float = 1.0
    crops_per_image: int = 1  # random crops of each photo per epoch: a few dozen photos make few steps otherwise


@dataclass
class FinetuneConfig:
    """Phase 2 on detect's face crops, eq. 2: ``pixel_weight · L2 + facenet_weight · L2(FaceNet)``."""

    lr: float = 0.003
    beta1: float = 0.99
    weight_decay: float = 0.001
    pixel_weight: float = 1.0
    # the pixel loss inside the face box counts 1 + face_weight times (0: eq. 2's plain L2)
    face_weight: float = 0.0
    facenet_weight: float = 1.0
    facenet_weights: str = "casia-webface"  # vggface2 | casia-webface | path or s3:// state dict | none
    # judges whose identity numbers validation logs per epoch (never in the loss): does a gain on
    # the training FaceNet carry over to a network the codec never trained against?
    val_judges: list[str] = field(default_factory=lambda: ["dlib-resnet"])


@dataclass
class MaskedLossConfig:
    """masked-cvae's loss, in both phases: λ · face-masked L1 (+ adversarial_weight · DCGAN generator
    loss when ``adversarial``), with the KL as its rate (facezip.models.losses.MaskedL1Loss)."""

    # a DCGAN discriminator beside the codec: off, as the bundled weights were trained (it doubles a
    # CPU step's time, and a few hundred steps are too few for the adversarial game to settle)
    adversarial: bool = False
    adversarial_weight: float = 10.0  # the generator loss's scale, the paper's ×10
    discriminator_lr: float = 2e-4  # DCGAN's Adam (β1 = 0.5)


@dataclass
class TrainConfig:
    """Two-phase codec training on Ray Train (``facezip train --phase pretrain|finetune``)."""

    epochs: int = 10
    batch_size: int = 8  # per worker
    crop_size: int = 128  # pretrain: random crops; finetune: face crops are resized to it
    lr: Optional[float] = None  # None: the phase's own lr (pretrain.lr / finetune.lr)
    max_steps_per_epoch: Optional[int] = None  # None: one pass over the worker's shard
    # λ in R + λ·D + b·identity: the pixel distortion's weight against the estimated rate R (bpp) of
    # codecs with an entropy model (mean-scale-hyperprior); binarized-cae's rate is fixed, λ = 1 keeps eq. 2
    lmbda: Optional[float] = None  # None: the codec's default for the phase (Codec.default_lmbda), set by run_train
    aux_lr: float = 1e-3  # Adam on entropy-bottleneck quantiles (their auxiliary loss), as CompressAI trains them
    clip_grad_norm: Optional[float] = None  # e.g. 1.0 as CompressAI's example training for hyperpriors
    # fp32 | bf16: the forward pass and loss under bfloat16 autocast (AVX512-BF16 CPUs, recent GPUs);
    # weights, optimizer and gradients stay fp32
    precision: str = "fp32"
    # linear lr warmup over the run's first steps: a fresh Adam moves every weight by about lr per
    # step at first, which knocks a model fine-tuned from --init off its optimum (0 = none)
    warmup_steps: int = 0
    # names (or name prefixes) of the codec parameters to train, the rest frozen; [] = all. E.g.
    # [quant_gain]: a new rung of the rate ladder from a trained model's quantization gains alone
    trainable: list[str] = field(default_factory=list)
    # lr of the parameters a name (prefix) names, instead of the phase's lr: quantization gains
    # move several orders of magnitude more than weights, e.g. {quant_gain: 0.01}
    lr_by_parameter: dict[str, float] = field(default_factory=dict)
    val_fraction: float = 0.1  # held out by a hash of the image id (or the dataset's own split)
    max_val_images: int = 16  # validation metrics and the reconstruction grid, on rank 0
    log_every_steps: int = 10
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # fractional CPUs leave room for Ray Data's read tasks on small hosts
    storage_path: Optional[str] = None  # Ray Train checkpoints (local or s3://); None = <dest>/ray
    checkpoints_to_keep: int = 2  # the best (lowest val_loss) ones are kept
    registered_model_name: Optional[str] = "facezip-${codec.name}"  # None: log the model, don't register
    max_image_pixels: int = 40_000_000
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    masked: MaskedLossConfig = field(default_factory=MaskedLossConfig)


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
    # the rate ladder as weights files, lowest rate first (levels 1..n; codec.level picks the start,
    # default 1); [] = the codec's bundled ladder (rungs from codec.level or its default level up)
    ladder: list[str] = field(default_factory=list)
    facenet_weights: str = "casia-webface"  # the facenet judge's weights (facezip.models.facenet.load_facenet)


@dataclass
class CompressConfig:
    """``facezip compress`` of single images."""

    accept_damaged: bool = False  # true: compress damaged JPEG/PNG inputs (see detect.accept_damaged), with a note


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
