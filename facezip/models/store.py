"""One place that turns codec references into loaded, frozen codecs, and weights hashes back into them.

A reference is a codec name plus weights: ``bundled`` (at ``level``, a rung of the bundled rate
ladder), a path, an fsspec URL or ``models:/<name>/<version>`` (``loading.load_codec``). A ``.fz``
header or archive row names a codec and a weights hash; ``CodecStore.find`` picks the codec among
those the caller made available: the codecs given to it, the codecs without weights (the lossless
fallback) and, with ``search_bundled``, every bundled model of the named codec.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from facezip.infra.storage import Storage
from facezip.models import loading  # through the module: tests point bundled weights elsewhere
from facezip.models.coding import check_known
from facezip.models.container import FzFormatError
from facezip.models.loading import BUNDLED
from facezip.models.registry import Codec, codec_class, create_codec


class CodecStore:
    """Codecs loaded once per reference, and found by weights hash."""

    def __init__(self, device: torch.device | str = "cpu", storage: Storage | None = None,
                 codecs: Iterable[Codec] = (), search_bundled: bool = True) -> None:
        self.device, self.storage, self.search_bundled = device, storage, search_bundled
        self._loaded: dict[tuple[str, str, int | None], Codec] = {}
        self._by_hash: dict[str, Codec] = {}
        self._given: dict[str, list[str]] = {}  # codec name → weights hashes given by the caller
        self._searched: set[str] = set()  # codecs whose bundled models are in _by_hash
        self.add(*codecs)

    @classmethod
    def of(cls, codecs: Codecs) -> CodecStore:
        """``codecs`` as a store that finds exactly them (and the codecs without weights)."""
        if isinstance(codecs, CodecStore):
            return codecs
        return cls(codecs=[codecs] if isinstance(codecs, Codec) else codecs, search_bundled=False)

    def add(self, *codecs: Codec) -> CodecStore:
        """Make ``codecs`` findable by their weights hash."""
        for codec in codecs:
            self._given.setdefault(codec.name, []).append(codec.weights_hash())
        self._index(codecs)
        return self

    def load(self, name: str, weights: str = BUNDLED, level: int | None = None,
             quality: float | None = None) -> Codec:
        """The codec ``name`` with ``weights``, loaded on first use: at bundled rung ``level`` of a
        ladder, or for a variable-rate codec at its named ``level`` or at ``quality``."""
        if codec_class(name).quality_range is not None:
            return self._variable_rate(name, weights, level, quality)
        if quality is not None:
            raise ValueError(f"codec.quality={quality:g}: codec '{name}' codes one rate per weights "
                             "(pick a rung with --level N)")
        key = (name, weights, level)
        if key not in self._loaded:
            if codec_class(name).learned:
                self._loaded[key] = loading.load_codec(name, weights, self.device, self.storage, level=level)
            else:
                self._loaded[key] = create_codec(name).freeze()
        return self._loaded[key]

    def ladder(self, name: str, weights: str = BUNDLED) -> dict[int, Codec]:
        """``{level: codec}``, lowest rate first: a variable-rate codec's named qualities, else the
        rungs of ``name``'s bundled rate ladder ({} without one)."""
        if codec_class(name).quality_range is not None:
            levels = range(1, len(codec_class(name).named_qualities) + 1)
            return {level: self.load(name, weights, level) for level in levels}
        if weights != BUNDLED:
            return {}
        return {level: self.load(name, BUNDLED, level) for level in loading.bundled_levels(name)}

    def _variable_rate(self, name: str, weights: str, level: int | None, quality: float | None) -> Codec:
        if level is not None and quality is not None:
            raise ValueError(f"codec.level={level} and codec.quality={quality:g}: give one or the other")
        key = (name, weights, None)
        if key not in self._loaded:
            self._loaded[key] = loading.load_codec(name, weights, self.device, self.storage)
        model = self._loaded[key]
        if level is not None:
            return model.at_level(level)
        return model if quality is None else model.at_quality(quality)

    def bundled(self, name: str) -> list[Codec]:
        """Every bundled model of ``name``: its ladder's rungs, or its bundled model and the ones it
        replaced (``loading.retired_weights_paths``); [] if it ships none."""
        ladder = {} if codec_class(name).quality_range is not None else self.ladder(name)
        if ladder or not codec_class(name).learned:
            return list(ladder.values())
        retired = [self.load(name, str(path)) for path in loading.retired_weights_paths(name)]
        try:
            return [self.load(name), *retired]
        except ValueError:  # this codec ships no weights: nothing to match
            return retired

    def find(self, name: str, weights_hash: str) -> Codec:
        """The codec ``name`` whose weights hash is ``weights_hash``, among those available."""
        check_known(name)
        if weights_hash not in self._by_hash:
            self._search(name)
        codec = self._by_hash.get(weights_hash)
        if codec is None or codec.name != name:
            raise FzFormatError(f"written by {name} with weights {weights_hash}, which match none of "
                                f"{self._searched_text(name)}; give codec.weights=PATH (or archive.ladder) "
                                "of the weights that wrote it")
        return codec

    def _index(self, codecs: Iterable[Codec]) -> None:
        self._by_hash.update((codec.weights_hash(), codec) for codec in codecs)

    def _search(self, name: str) -> None:
        if not codec_class(name).learned:
            self._index([self.load(name)])
        elif self.search_bundled and name not in self._searched:
            self._searched.add(name)
            self._index(self.bundled(name))

    def _searched_text(self, name: str) -> str:
        given = self._given.get(name)
        parts = [f"the given weights {', '.join(given)}"] if given else []
        if name in self._searched:
            levels = loading.bundled_levels(name)
            retired = len(loading.retired_weights_paths(name))
            parts.insert(0, f"bundled levels {', '.join(map(str, levels))}" if levels else
                         "its bundled weights" + (f" and the {retired} they replaced" if retired else ""))
        return " or ".join(parts) or f"any loaded {name} weights"


# what the decoding functions take: one codec, several (a ladder's rungs) or a store
Codecs = Codec | Iterable[Codec] | CodecStore
