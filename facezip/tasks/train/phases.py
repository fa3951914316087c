"""Training phases, registered by name: what a phase reads, the loss it trains on, its settings.

A phase's settings are the config section ``train.<name>`` (its lr, β1, weight decay and loss
weights). Codecs know losses, not phases: a codec's default λ is keyed by the distortion a phase
trains on (``Codec.lmbda_for``). A codec with its own loss (``Codec.masked_loss``) trains on it in
every phase. Adding a phase is one ``@register_phase`` class and its ``train.<name>`` section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from facezip.infra.registry import Registry
from facezip.infra.storage import Storage
from facezip.models.facenet import load_facenet
from facezip.models.losses import FaceNetLoss, MaskedL1Loss, PretrainLoss
from facezip.models.recognizer import Recognizer, RecognizerOptions, load_recognizers
from facezip.models.registry import Codec

_PHASES: Registry["Phase"] = Registry("training phase")


class Phase:
    name: ClassVar[str] = ""
    faces: ClassVar[bool] = False  # reads detect's face crops with their boxes; else any photos
    starts_from_codec_weights: ClassVar[bool] = False  # without --init: codec.weights, else an untrained model
    distortion: ClassVar[str] = ""  # the phase loss's name, which picks the codec's default λ

    def settings(self, tcfg: Any) -> Any:
        """``train.<name>``: lr, beta1, weight_decay and the loss's weights."""
        return getattr(tcfg, self.name)

    def loss(self, tcfg: Any, device: torch.device) -> nn.Module:
        raise NotImplementedError

    def val_judges(self, tcfg: Any) -> list[Recognizer]:
        """Identity judges validation reports on (never part of the loss)."""
        return []

    def check(self, tcfg: Any, storage: Storage) -> None:
        """On the driver, before Ray Train starts: fail fast on what the loss will need."""

    def crops_per_image(self, tcfg: Any) -> int:
        """Times each training image is listed per epoch (a new random crop each time)."""
        return 1


def register_phase(name: str) -> Callable[[type[Phase]], type[Phase]]:
    """Class decorator: make a phase available as ``facezip train --phase name``."""

    def decorator(cls: type[Phase]) -> type[Phase]:
        cls.name = name
        _PHASES.register(name, cls())
        return cls

    return decorator


def phase_names() -> list[str]:
    return list(_PHASES)


def get_phase(name: str) -> Phase:
    if name not in _PHASES:
        raise ValueError(f"phase '{name}' is not one of {', '.join(_PHASES)}")
    return _PHASES[name]


def codec_distortion(phase: Phase, codec: Codec) -> str:
    """The distortion ``codec`` trains on in ``phase``: its own loss's, else the phase's."""
    return MaskedL1Loss.distortion if codec.masked_loss else phase.distortion


@register_phase("pretrain")
class Pretrain(Phase):
    """Phase 1 on any photos: λ · (L1 + (1 − MS-SSIM)) on random crops."""

    distortion = PretrainLoss.distortion

    def loss(self, tcfg: Any, device: torch.device) -> nn.Module:
        return PretrainLoss(tcfg.pretrain.l1_weight, tcfg.pretrain.ms_ssim_weight, tcfg.lmbda)

    def crops_per_image(self, tcfg: Any) -> int:
        return int(tcfg.pretrain.crops_per_image)


@register_phase("finetune")
class Finetune(Phase):
    """Phase 2 on detect's face crops: pixel L2 + FaceNet L2 (seed paper eq. 2)."""

    faces = True
    starts_from_codec_weights = True
    distortion = FaceNetLoss.distortion

    def loss(self, tcfg: Any, device: torch.device) -> nn.Module:
        settings = tcfg.finetune  # b = 0: no FaceNet to load (nor weights to have)
        facenet = load_facenet(settings.facenet_weights, device) if settings.facenet_weight else None
        return FaceNetLoss(facenet, settings.pixel_weight, settings.facenet_weight, tcfg.lmbda,
                           settings.face_weight).to(device)

    def val_judges(self, tcfg: Any) -> list[Recognizer]:
        return load_recognizers(list(tcfg.finetune.val_judges), RecognizerOptions(tcfg.finetune.facenet_weights))

    def check(self, tcfg: Any, storage: Storage) -> None:
        if tcfg.finetune.facenet_weight:
            load_facenet(tcfg.finetune.facenet_weights, "cpu", storage)  # resolve (or convert) it once, here
