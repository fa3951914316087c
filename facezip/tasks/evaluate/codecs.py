"""The codecs under test, each at its levels: facezip models and the registered baselines.

A level turns a batch of RGB faces into ``RoundTrip`` results (file size and decoded pixels) or
an error string per face, so one failing image never stops the others. It also adds up the
time spent encoding and decoding, batched as the codec is used (facezip: whole batches).

Which facezip models: ``evaluate.models`` entries ``CODEC:WHAT`` — ``CODEC:ladder`` (every
bundled rung: one curve, one point per rung), ``CODEC:lN`` (bundled rung N), ``CODEC:bundled``,
``CODEC:PATH`` / ``CODEC:s3://…`` / ``CODEC:models:/name/1``. A plain entry (no codec name) is
weights of ``codec.name``, a point of the curve called ``facezip``; ``[]`` = ``codec.*``. With
``codec.effort`` N > 0 every model encodes with N refinement steps per face, on curves named
``<curve>+effortN``, so that a run with and one without compare side by side.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import torch

from facezip.infra.storage import Storage
from facezip.models.coding import decode_file, decode_files, encode_images
from facezip.models.container import FzFormatError
from facezip.models.loading import BUNDLED, REGISTRY_SCHEME
from facezip.models.registry import Codec, available_codecs, codec_class
from facezip.models.store import CodecStore
from facezip.tasks.evaluate.baselines import Baseline, get_baseline

REFERENCE = "reference"
FACEZIP = "facezip"  # the kind of every learned codec, and the curve name of plain evaluate.models entries
LADDER = "ladder"
_RUNG = re.compile(r"^l(\d+)$")


@dataclass
class RoundTrip:
    """One face through a codec and back: its coded size and its decoded pixels."""

    n_bytes: int
    decoded: np.ndarray


Outcome = RoundTrip | str  # a string is the reason this face failed at this level


@dataclass
class Timing:
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    images: int = 0

    def per_image_ms(self) -> tuple[float, float]:
        if not self.images:
            return float("nan"), float("nan")
        return 1000 * self.encode_seconds / self.images, 1000 * self.decode_seconds / self.images


@dataclass
class Level:
    codec: str  # the curve: facezip | mean-scale-hyperprior | … | jpeg | webp | avif | reference
    setting: str  # q50, l2, the model's name, raw
    code: Callable[[Sequence[np.ndarray], Timing], list[Outcome]]  # faces → outcomes, adding to the timing
    kind: str = ""  # facezip for every learned codec, else the codec itself
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        self.kind = self.kind or self.codec

    @property
    def label(self) -> str:
        return f"{self.codec}-{self.setting}"

    def roundtrip(self, images: Sequence[np.ndarray]) -> list[Outcome]:
        return self.code(images, self.timing)

    def warm_up(self, image: np.ndarray) -> None:
        """One untimed round trip, so lazy initialisation does not count as the first batch's speed."""
        self.code([image], Timing())


@dataclass(frozen=True)
class ModelEntry:
    curve: str  # the curve this model is a point of
    codec: str
    weights: str
    level: int | None = None
    ladder: bool = False
    quality: float | None = None  # a variable-rate codec's one quality (codec.quality)


def parse_model_entry(entry: str, default_codec: str) -> ModelEntry:
    """One ``evaluate.models`` entry (see the module docstring)."""
    prefix, sep, rest = entry.partition(":")
    if not sep or prefix not in available_codecs():
        if sep and re.fullmatch(r"[a-z][\w-]+", prefix) and not rest.startswith("/"):
            raise ValueError(f"evaluate.models: unknown codec '{prefix}' in '{entry}' "
                             f"(codecs: {', '.join(available_codecs())})")
        return ModelEntry(FACEZIP, default_codec, entry)  # old style: weights of codec.name
    if not rest:
        raise ValueError(f"evaluate.models: '{entry}' names no weights (use {prefix}:bundled, {prefix}:ladder, "
                         f"{prefix}:l<N> or {prefix}:PATH)")
    if rest == LADDER:
        return ModelEntry(prefix, prefix, BUNDLED, ladder=True)
    rung = _RUNG.match(rest)
    if rung:
        return ModelEntry(prefix, prefix, BUNDLED, level=int(rung.group(1)))
    return ModelEntry(prefix, prefix, rest)


def build_levels(cfg, storage: Storage, device: torch.device) -> list[Level]:
    """Every level of the run, in table order: reference, facezip models, then baselines."""
    ecfg = cfg.evaluate
    levels = [Level(REFERENCE, "raw", _reference)] if ecfg.reference else []
    entries = ([parse_model_entry(e, cfg.codec.name) for e in ecfg.models] if ecfg.models
               else [ModelEntry(FACEZIP, cfg.codec.name, cfg.codec.weights, cfg.codec.level, False, cfg.codec.quality)])
    store = CodecStore(device, storage)
    for entry in entries:
        levels += model_levels(entry, store, cfg.codec.effort)
    for name in ecfg.baselines:
        baseline = get_baseline(name)
        qualities = ecfg.qualities[name] if name in ecfg.qualities else baseline.qualities
        levels += [baseline_level(baseline, int(q)) for q in qualities]
    return levels


def model_levels(entry: ModelEntry, store: CodecStore, effort: int = 0) -> list[Level]:
    """The levels of one ``evaluate.models`` entry: one, or one per rung of a ladder (a variable-rate
    codec's weights are a curve of its named qualities unless one level or quality is asked for),
    each encoding with ``effort`` refinement steps per face."""
    variable = codec_class(entry.codec).quality_range is not None
    if not entry.ladder and not (variable and entry.level is None and entry.quality is None):
        codec = store.load(entry.codec, entry.weights, entry.level, entry.quality).with_effort(effort)
        setting = f"q{entry.quality:g}" if entry.quality is not None else _setting(entry.weights, codec)
        return [facezip_level(_curve(entry.curve, effort), codec, setting)]
    ladder = store.ladder(entry.codec, entry.weights)
    if not ladder:
        raise ValueError(f"evaluate.models: codec '{entry.codec}' has no bundled rate ladder "
                         f"(give {entry.codec}:bundled or {entry.codec}:PATH)")
    # weights of a variable-rate codec are a curve of their own, named after them, beside other weights'
    curve = entry.curve if entry.weights == BUNDLED else f"{entry.curve}:{_setting(entry.weights, ladder[1])}"
    return [facezip_level(_curve(curve, effort), codec.with_effort(effort), f"l{level}")
            for level, codec in ladder.items()]


def _curve(curve: str, effort: int) -> str:
    return f"{curve}+effort{effort}" if effort else curve


def _setting(weights: str, codec: Codec) -> str:
    if weights == BUNDLED:
        return BUNDLED if codec.level is None else f"l{codec.level}"
    if weights.startswith(REGISTRY_SCHEME):
        return weights[len(REGISTRY_SCHEME):]
    return PurePosixPath(weights).stem


def facezip_level(curve: str, codec: Codec, setting: str) -> Level:
    def roundtrip(images: Sequence[np.ndarray], timing: Timing) -> list[Outcome]:
        start = time.perf_counter()
        files = encode_images(codec, images, batch_size=max(1, len(images)))
        encoded = time.perf_counter()
        try:
            outcomes: list[Outcome] = [RoundTrip(len(data), pixels) for data, pixels in
                                       zip(files, decode_files(codec, files, batch_size=max(1, len(files))))]
        except FzFormatError:  # find the file(s) at fault one by one; the batch's time still counts
            outcomes = [_decode_one(codec, data) for data in files]
        timing.encode_seconds += encoded - start
        timing.decode_seconds += time.perf_counter() - encoded
        timing.images += len(images)
        return outcomes

    return Level(curve, setting, roundtrip, kind=FACEZIP)


def _decode_one(codec: Codec, data: bytes) -> Outcome:
    try:
        return RoundTrip(len(data), decode_file(codec, data))
    except FzFormatError as exc:
        return f"facezip could not decode its own file: {exc}"


def baseline_level(baseline: Baseline, quality: int) -> Level:
    if not 0 <= quality <= 100:
        raise ValueError(f"evaluate.qualities.{baseline.name}: {quality} is outside 0…100")

    def roundtrip(images: Sequence[np.ndarray], timing: Timing) -> list[Outcome]:
        return [_baseline_roundtrip(baseline, image, quality, timing) for image in images]

    return Level(baseline.name, f"q{quality}", roundtrip)


def _baseline_roundtrip(baseline: Baseline, image: np.ndarray, quality: int, timing: Timing) -> Outcome:
    try:
        start = time.perf_counter()
        data = baseline.encode(image, quality)
        encoded = time.perf_counter()
        pixels = baseline.decode(data)
        timing.encode_seconds += encoded - start
        timing.decode_seconds += time.perf_counter() - encoded
        timing.images += 1
        return RoundTrip(len(data), pixels)
    except (OSError, ValueError) as exc:
        return f"{baseline.name} at quality {quality} failed: {exc}"


def _reference(images: Sequence[np.ndarray], timing: Timing) -> list[Outcome]:
    """Uncompressed: 24 bits per pixel, pixels unchanged."""
    return [RoundTrip(image.size, image) for image in images]
