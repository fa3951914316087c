"""Config section ``train`` and its subsections, one per training phase and masked-cvae's loss
(declared by the train stage's StageSpec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from facezip.tasks.train.augment import AugmentConfig


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
    # the pixel loss on the face counts 1 + face_weight times (0: eq. 2's plain L2): inside the face mask
    # from detect's landmarks, or the face box for rows without them
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
    # a wall-clock budget for the training loop: past it the run validates, checkpoints, writes its
    # weights and ends; the same command again goes on from that checkpoint (None: no budget)
    max_minutes: Optional[float] = None
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # finetune's face crops
