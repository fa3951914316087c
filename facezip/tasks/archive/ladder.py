"""Which codecs an archive encodes with (the start rung, and the rungs above it for an identity
floor) and which it can decode with (every rung the config names, and every bundled model)."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from omegaconf import DictConfig

from facezip.infra.storage import Storage
from facezip.models.loading import BUNDLED
from facezip.models.registry import Codec, codec_class
from facezip.models.store import CodecStore


@dataclass
class Rung:
    level: int | None  # None: a single model, no ladder
    model: str  # the weights reference recorded in the index
    codec: Codec


def encoding_rungs(cfg: DictConfig, storage: Storage) -> list[Rung]:
    """The start rung first; with ``archive.identity_floor`` every higher rung after it, lowest rate first."""
    floor = cfg.archive.identity_floor
    store = _store(cfg, storage)
    name, weights, level = cfg.codec.name, cfg.codec.weights, cfg.codec.level
    if cfg.codec.quality is not None and (floor or cfg.archive.ladder):
        raise ValueError(f"codec.quality={cfg.codec.quality:g} picks one rate; the identity floor and archive.ladder "
                         "climb named levels: give --level N instead")
    if cfg.archive.ladder:
        rungs = _explicit_ladder(cfg, store)
        start = 1 if level is None else level
        if not 1 <= start <= len(rungs):
            raise ValueError(f"codec.level={start} is not a rung of archive.ladder (levels 1..{len(rungs)})")
        chosen = rungs[start - 1 :]
    elif not floor:
        codec = store.load(name, weights, level, cfg.codec.quality)
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
