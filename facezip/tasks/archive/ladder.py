"""Which codecs an archive encodes with (the start rung, and the rungs above it for an identity
floor over a ladder; a variable-rate codec's floor or ``--bpp`` searches the start rung's quality)
and which it can decode with (every rung the config names, and every bundled model)."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from omegaconf import DictConfig

from facezip.infra.storage import Storage
from facezip.models.loading import BUNDLED
from facezip.models.quality_search import check_bpp_target
from facezip.models.registry import Codec, codec_class
from facezip.models.store import CodecStore


@dataclass
class Rung:
    level: int | None  # None: a single model, no ladder
    model: str  # the weights reference recorded in the index
    codec: Codec


def encoding_rungs(cfg: DictConfig, storage: Storage) -> list[Rung]:
    """The start rung first; with ``archive.identity_floor`` over a ladder every higher rung after it,
    lowest rate first. A search over a variable-rate codec's quality (its floor, ``--bpp``) starts
    at the lowest quality unless ``codec.level`` or ``codec.quality`` names a higher one."""
    floor = cfg.archive.identity_floor
    store = _store(cfg, storage)
    name, weights, level, quality = cfg.codec.name, cfg.codec.weights, cfg.codec.level, cfg.codec.quality
    if cfg.archive.ladder:
        rungs = _explicit_ladder(cfg, store)
        start = 1 if level is None else level
        if not 1 <= start <= len(rungs):
            raise ValueError(f"codec.level={start} is not a rung of archive.ladder (levels 1..{len(rungs)})")
        chosen = rungs[start - 1 :]
    elif not floor or search_steps(cfg) is not None:
        if search_steps(cfg) is not None and level is None and quality is None:  # a search from the lowest up
            quality = codec_class(name).quality_range[0]
        codec = store.load(name, weights, level, quality)
        return [Rung(codec.level, weights, codec)]
    else:
        ladder = store.ladder(name, weights)
        if not ladder:
            raise ValueError(f"the identity floor (--min-identity) needs a rate ladder, and codec '{name}' with "
                             f"weights '{weights}' has none: use a codec with bundled levels or list the rungs' "
                             "weights in archive.ladder")
        start = (codec_class(name).default_level or 1) if level is None else level
        if start not in ladder:
            raise ValueError(f"codec.level={start} is not a bundled level of '{name}' "
                             f"(levels: {', '.join(map(str, ladder))})")
        chosen = [Rung(n, weights, codec) for n, codec in ladder.items() if n >= start]
    return chosen if floor else chosen[:1]


def search_steps(cfg: DictConfig) -> int | None:
    """Bisection rounds over the start rung's quality: ``--bpp``'s, or those of a variable-rate
    codec's identity floor (no ``archive.ladder``); None: the rate is a rung."""
    if cfg.codec.bpp is not None:
        return cfg.codec.bpp_steps
    variable = codec_class(cfg.codec.name).quality_range is not None
    return cfg.archive.floor_steps if cfg.archive.identity_floor and variable and not cfg.archive.ladder else None


def check_rate_choice(cfg: DictConfig) -> None:
    """One way to pick the rate: a level or quality, a bpp target, or the floor from a level or quality."""
    codec, floor, ladder = cfg.codec, cfg.archive.identity_floor, cfg.archive.ladder
    check_bpp_target(codec_class(codec.name), codec.bpp, codec.level, codec.quality)
    if codec.bpp is not None and (floor or ladder):
        raise ValueError("--bpp (codec.bpp) picks each face's rate, as --min-identity (archive.identity_floor) "
                         "and archive.ladder do: give one of them")
    if codec.quality is not None and (ladder or floor and codec_class(codec.name).quality_range is None):
        raise ValueError(f"codec.quality={codec.quality:g} picks one rate; the identity floor and archive.ladder "
                         "climb named levels: give --level N instead")


def decoding_store(cfg: DictConfig, storage: Storage, device="cpu") -> CodecStore:
    """The codecs the config names (``codec.weights``, every ``archive.ladder`` file) and every
    bundled model: records and files pick theirs by weights hash."""
    store = _store(cfg, storage, device)
    if cfg.archive.ladder:
        return store.add(*(rung.codec for rung in _explicit_ladder(cfg, store)))
    return store if cfg.codec.weights == BUNDLED else store.add(store.load(cfg.codec.name, cfg.codec.weights))


def _explicit_ladder(cfg: DictConfig, store: CodecStore) -> list[Rung]:
    if cfg.codec.weights != BUNDLED:
        raise ValueError(f"give codec.weights ({cfg.codec.weights}) or archive.ladder, not both")
    return [Rung(n, uri, store.load(cfg.codec.name, uri)) for n, uri in enumerate(cfg.archive.ladder, start=1)]


def _store(cfg: DictConfig, storage: Storage, device="cpu") -> CodecStore:
    """``models:/…`` weights resolve against ``tracking.uri`` when it is set."""
    if cfg.tracking.uri:
        mlflow.set_tracking_uri(cfg.tracking.uri)
    return CodecStore(device, storage)
