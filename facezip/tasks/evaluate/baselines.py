"""The standard image codecs facezip is measured against, each registered once by name.

A baseline encodes an 8-bit RGB image at a quality (0…100) to the bytes its format stores and
decodes them back; its quality ladder is what evaluate runs unless ``evaluate.qualities.<name>``
gives another. Adding one (JPEG XL, HEIC, …) is one ``@register_baseline`` encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import features

from facezip.infra.images import decode_standard, encode_standard
from facezip.infra.registry import Registry

DEFAULT_QUALITIES = (10, 30, 50, 70, 90)


@dataclass(frozen=True)
class Baseline:
    name: str
    encode: Callable[[np.ndarray, int], bytes]  # (RGB image, quality) → the file's bytes
    qualities: tuple[int, ...] = DEFAULT_QUALITIES
    available: Callable[[], bool] = lambda: True  # False: this installation cannot run it
    decode: Callable[[bytes], np.ndarray] = decode_standard


_BASELINES: Registry[Baseline] = Registry("baseline")


def register_baseline(name: str, **declared) -> Callable[[Callable], Callable]:
    """Function decorator: register ``encode(image, quality) -> bytes`` as the baseline ``name``
    (``Baseline``'s other fields as keywords)."""

    def decorator(encode: Callable[[np.ndarray, int], bytes]) -> Callable[[np.ndarray, int], bytes]:
        _BASELINES.register(name, Baseline(name, encode, **declared))
        return encode

    return decorator


def baseline_names() -> list[str]:
    return list(_BASELINES)


def get_baseline(name: str) -> Baseline:
    """The registered baseline ``name``, usable here; else a ValueError naming the choices."""
    if name not in _BASELINES:
        raise ValueError(f"evaluate.baselines: unknown baseline '{name}' (use {', '.join(_BASELINES)})")
    baseline = _BASELINES[name]
    if not baseline.available():
        raise ValueError(f"evaluate.baselines: this installation cannot run {name} (Pillow built without it?)")
    return baseline


# Pillow's formats (baseline, Pillow format, PIL.features name: a Pillow may be built without it,
# thorough): as a user's tools write them, and with the slower settings comcnn-reccnn's base codec
# uses (THOROUGH_OPTIONS), to tell its gain over its base codec from what the settings give
for _name, _format, _feature, _thorough in (
        ("jpeg", "JPEG", "jpg", False), ("webp", "WEBP", "webp", False), ("avif", "AVIF", "avif", False),
        ("jpeg-optimized", "JPEG", "jpg", True), ("avif-speed4", "AVIF", "avif", True)):
    register_baseline(_name, available=partial(features.check, _feature))(
        lambda image, quality, fmt=_format, thorough=_thorough: encode_standard(image, fmt, quality, thorough))
