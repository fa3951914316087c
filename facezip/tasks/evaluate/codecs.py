"""The codecs under test, each at its levels: facezip models and the Pillow baselines.

A level turns a batch of RGB faces into ``Coded`` results (file size and decoded pixels) or
an error string per face, so one failing image never stops the others.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch
from PIL import Image, features

from facezip.infra.storage import Storage
from facezip.models.coding import decode_file, encode_images
from facezip.models.container import FzFormatError
from facezip.models.loading import load_codec

PILLOW_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
_PILLOW_FEATURES = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}  # names PIL.features.check knows
REFERENCE = "reference"
FACEZIP = "facezip"


@dataclass
class Coded:
    n_bytes: int
    decoded: np.ndarray


Outcome = Coded | str  # a string is the reason this face failed at this level


@dataclass
class Level:
    codec: str  # facezip | jpeg | webp | avif | reference
    setting: str  # q50, the model's name, raw
    roundtrip: Callable[[Sequence[np.ndarray]], list[Outcome]]

    @property
    def label(self) -> str:
        return f"{self.codec}-{self.setting}"


def build_levels(cfg, storage: Storage, device: torch.device) -> list[Level]:
    """Every level of the run, in table order: reference, facezip models, then baselines."""
    ecfg = cfg.evaluate
    levels = [Level(REFERENCE, "raw", _reference)] if ecfg.reference else []
    for weights in ecfg.models or [cfg.codec.weights]:
        levels.append(facezip_level(cfg.codec.name, weights, device, storage))
    for name in ecfg.baselines:
        if name not in PILLOW_FORMATS:
            raise ValueError(f"evaluate.baselines: unknown baseline '{name}' (use {', '.join(PILLOW_FORMATS)})")
        if not features.check(_PILLOW_FEATURES[name]):
            raise ValueError(f"evaluate.baselines: this Pillow was built without {name.upper()} support")
        levels += [pillow_level(name, int(q)) for q in ecfg[f"{name}_qualities"]]
    return levels


def facezip_level(codec_name: str, weights: str, device: torch.device, storage: Storage) -> Level:
    codec = load_codec(codec_name, weights, device, storage)
    setting = "bundled" if weights == "bundled" else PurePosixPath(weights).stem

    def roundtrip(images: Sequence[np.ndarray]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for data in encode_images(codec, images):
            try:
                outcomes.append(Coded(len(data), decode_file(codec, data)))
            except FzFormatError as exc:
                outcomes.append(f"facezip could not decode its own file: {exc}")
        return outcomes

    return Level(FACEZIP, setting, roundtrip)


def pillow_level(name: str, quality: int) -> Level:
    if not 0 <= quality <= 100:
        raise ValueError(f"evaluate.{name}_qualities: {quality} is outside 0…100")

    def roundtrip(images: Sequence[np.ndarray]) -> list[Outcome]:
        return [_pillow_roundtrip(image, PILLOW_FORMATS[name], quality) for image in images]

    return Level(name, f"q{quality}", roundtrip)


def _pillow_roundtrip(image: np.ndarray, fmt: str, quality: int) -> Outcome:
    buffer = io.BytesIO()
    try:
        Image.fromarray(image).save(buffer, fmt, quality=quality)
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            return Coded(buffer.tell(), np.asarray(decoded.convert("RGB")))
    except (OSError, ValueError) as exc:
        return f"{fmt} at quality {quality} failed: {exc}"


def _reference(images: Sequence[np.ndarray]) -> list[Outcome]:
    """Uncompressed: 24 bits per pixel, pixels unchanged."""
    return [Coded(image.size, image) for image in images]
