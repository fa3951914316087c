"""The codec registry and the fixed interface every codec implements.

Like CompressAI's ``@register_model``: a codec class registers under a name, and callers
(``compress``, ``archive``, ``evaluate``, ``train``) only ever go through ``create_codec``.
The ``compress``/``decompress`` signatures are fixed, as in tensorflow/compression.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from facezip.infra.registry import Registry

_CODECS: Registry[type["Codec"]] = Registry("codec")
MAX_EFFORT = 1000  # refinement steps per image: a bound on encode time (each is a decoder pass and its gradient)


class Codec(nn.Module, ABC):
    """A learned image codec.

    Images are float tensors ``(N, 3, H, W)`` in ``[0, 1]`` whose H and W are multiples of
    ``pad_multiple`` (``facezip.models.coding`` pads and crops for callers).
    """

    name: ClassVar[str] = ""
    # LZMA2 literal/position bits (lc, lp, pb) suited to the payload layout; {} = xz's defaults
    xz_options: ClassVar[dict[str, int]] = {}
    # True when the payload is already entropy-coded (rANS …): containers store it, xz would only add framing
    entropy_coded: ClassVar[bool] = False
    # True when forward()'s bit estimate is differentiable and training minimises it (R + λ·D)
    learns_rate: ClassVar[bool] = False
    # codecs shipped as a rate ladder (weights/<name>-l<N>.pt): the rung used when none is asked for
    default_level: ClassVar[int | None] = None
    # True: trained on the face-masked L1 (+ an optional adversarial term) of losses.MaskedL1Loss in
    # both phases, instead of the phase's loss
    masked_loss: ClassVar[bool] = False
    # λ of R + λ·D when train.lmbda is unset, per distortion loss (the ``distortion`` of the loss
    # classes in facezip.models.losses: its scale sets λ's); a loss not named gets 1, which leaves a
    # fixed-rate codec's loss as it is
    default_lmbda: ClassVar[dict[str, float]] = {}
    # False: a fixed transform with no weights (the lossless fallback), never picked as codec.name,
    # trained or evaluated; it still decodes the records and files that name it
    learned: ClassVar[bool] = True
    # a variable-rate codec: one model encodes at any quality in this (low, high) range (``--quality Q``,
    # higher = more bytes); ``named_qualities`` are the points ``--level N`` names (1 = fewest bytes).
    # None: one rate per weights, and a codec's rates are a ladder of weights files
    quality_range: ClassVar[tuple[float, float] | None] = None
    named_qualities: ClassVar[tuple[float, ...]] = ()
    # the smallest change of quality that can change a payload (a base codec's integer qualities: 1);
    # searches over quality step by it. None: any quality in the range codes differently
    quality_step: ClassVar[float | None] = None
    # the quality ``compress`` encodes at (variable-rate codecs; see ``at_quality``)
    quality: float | None = None
    # True: ``compress`` can refine each image's latents by gradient steps on the codec's own
    # R + λ·D before coding them (``with_effort``); the decoder and the payload stay as they are
    refinable: ClassVar[bool] = False
    # the steps of that refinement per image ``compress`` takes (0: the encoder's latents as they come)
    effort: int = 0
    # architecture options added after weights were first saved, with the value those weights were
    # trained with: a weights file that lacks one loads with it (its constructor default may differ)
    legacy_architecture: ClassVar[dict[str, Any]] = {}

    @property
    @abstractmethod
    def pad_multiple(self) -> int:
        """H and W given to the codec must be multiples of this."""

    @abstractmethod
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass: ``{"x_hat": reconstruction, "bits": estimated bits per image (N,)}``."""

    @abstractmethod
    def compress(self, x: torch.Tensor) -> list[bytes]:
        """Encode a batch to one payload per image (before the container's xz stage)."""

    @abstractmethod
    def decompress(self, payloads: Sequence[bytes], size: tuple[int, int]) -> torch.Tensor:
        """Decode payloads of images of padded ``size`` = (H, W) back to ``(N, 3, H, W)``."""

    @classmethod
    def lmbda_for(cls, distortion: str) -> float:
        """The default λ when training on the loss named ``distortion``."""
        return cls.default_lmbda.get(distortion, 1.0)

    @classmethod
    def bundled_metadata(cls, level: int | None) -> dict[str, Any]:
        """Metadata the bundled weights of rung ``level`` predate and ``load_codec`` adds to
        theirs: what they were trained at (mean-scale-hyperprior: λ); {} for most codecs."""
        return {}

    @classmethod
    def check_payload(cls, payload: bytes, height: int, width: int) -> None:
        """Raise FzFormatError if ``payload`` cannot be an image of ``height``×``width``, judged
        without weights or decoding (``facezip verify``); codecs whose payloads carry no sizes: nothing."""

    def min_payload_bytes(self, height: int, width: int) -> int:
        """The fewest payload bytes any image of padded size ``height``×``width`` codes to (0: no
        bound known). Decoders refuse shorter payloads: a few bytes cannot claim a huge image."""
        return 0

    @abstractmethod
    def architecture(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this codec (saved beside its weights)."""

    def coding_notes(self) -> dict[str, Any]:
        """What ``facezip info`` adds about how these weights code a file ({}: nothing to add)."""
        return {}

    def aux_loss(self) -> torch.Tensor | None:
        """A loss for ``aux_parameters`` alone (entropy models' quantiles), or None."""
        return None

    def aux_parameters(self) -> list[nn.Parameter]:
        """Parameters trained only through ``aux_loss``, by their own optimizer."""
        return []

    def refresh_entropy_model(self) -> None:
        """Rebuild entropy-coding tables from the weights after training; codecs without any: nothing."""

    def with_options(self, **options: Any) -> "Codec":
        """This model with the architecture ``options`` its weights do not set (an option newer
        than the weights, such as mean-scale-hyperprior's ``quant_gain``): every weight kept, new
        parameters at their initial values. Options the weights set are theirs and stay."""
        architecture = {**options, **self.architecture()}
        extended = create_codec(self.name, **architecture)
        if extended.architecture() == self.architecture():
            return self
        state = extended.state_dict()
        state.update(self.state_dict())
        extended.load_state_dict(state)
        extended.metadata = getattr(self, "metadata", {})
        return extended

    def at_quality(self, quality: float) -> "Codec":
        """This model encoding at ``quality``: a view sharing every weight (decoding needs no quality)."""
        if self.quality_range is None:
            raise ValueError(f"codec '{self.name}' codes one rate per weights and takes no quality "
                             "(pick a rung with --level N or weights with codec.weights)")
        low, high = self.quality_range
        if not low <= quality <= high:
            raise ValueError(f"quality {quality:g} is outside codec '{self.name}''s range {low:g}…{high:g}")
        view = copy.copy(self)  # shares the parameter and module dicts: the same weights, one more quality
        view.quality = float(quality)
        return view

    def with_effort(self, steps: int) -> "Codec":
        """This model refining each image's latents for ``steps`` gradient steps when it encodes
        (``--effort N``): a view sharing every weight, whose files any facezip with them decodes."""
        check_effort(self, steps)
        if steps == self.effort:
            return self
        view = copy.copy(self)  # shares the parameter and module dicts, as at_quality
        view.effort = int(steps)
        return view

    def at_level(self, level: int) -> "Codec":
        """This variable-rate model at its named quality ``level`` (1 = fewest bytes)."""
        if not 1 <= level <= len(self.named_qualities):
            raise ValueError(f"codec.level={level} is not a level of '{self.name}' "
                             f"(levels 1…{len(self.named_qualities)})")
        view = self.at_quality(self.named_qualities[level - 1])
        view.level = level
        return view

    @classmethod
    def raw_file(cls, payload: bytes) -> tuple[bytes, str] | None:
        """The standard image file that ``payload`` holds, byte for byte, and its suffix (``.jpg``,
        ``.avif``), for any viewer (``decompress --raw``); None for payloads only this codec reads."""
        return None

    def freeze(self) -> "Codec":
        """Inference mode: eval, no gradients, and the weights hash computed once."""
        self.eval().requires_grad_(False)
        self._frozen_hash = None
        self._frozen_hash = self.weights_hash()
        return self

    def weights_hash(self) -> str:
        """16 hex digits identifying the weights; stored in every ``.fz`` file and archive row."""
        if getattr(self, "_frozen_hash", None):
            return self._frozen_hash
        digest = hashlib.sha256(self.name.encode())
        for key, tensor in sorted(self.state_dict().items()):
            data = tensor.detach().to("cpu").contiguous()
            digest.update(f"{key}:{data.dtype}:{tuple(data.shape)}".encode())
            digest.update(data.numpy().tobytes() if data.numel() else b"")
        return digest.hexdigest()[:16]


def check_effort(codec: Codec | type[Codec], steps: int) -> None:
    """ValueError naming the flag when ``steps`` is no effort ``codec`` can spend."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_EFFORT:
        raise ValueError(f"--effort {steps} (codec.effort): give a whole number of refinement steps per "
                         f"image from 0 (the encoder's output) to {MAX_EFFORT}")
    if steps and not codec.refinable:
        able = ", ".join(name for name, cls in sorted(_CODECS.items()) if cls.refinable) or "none"
        raise ValueError(f"--effort {steps} (codec.effort): codec '{codec.name}' cannot refine its latents at "
                         f"encode time; leave --effort at 0 or use a codec that can ({able})")


def register_codec(name: str) -> Callable[[type[Codec]], type[Codec]]:
    """Class decorator: make a codec available under ``name``."""

    def decorator(cls: type[Codec]) -> type[Codec]:
        _CODECS.register(name, cls)
        cls.name = name
        return cls

    return decorator


def architecture_defaults(name: str) -> dict[str, Any]:
    """A codec's architecture options and their defaults, as its constructor declares them: the one
    place they are written (config ``codecs.<name>`` is checked against it)."""
    parameters = list(inspect.signature(codec_class(name).__init__).parameters.values())[1:]
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def architecture_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (config ``codecs.<name>``), refused with the codec's options listed when one is unknown."""
    known = architecture_defaults(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        listed = ", ".join(f"{key}={value!r}" for key, value in known.items()) or "none"
        raise ValueError(f"codecs.{name.replace('-', '_')}: codec '{name}' has no option {', '.join(unknown)} "
                         f"(its options and defaults: {listed})")
    return dict(options)


def available_codecs(fixed: bool = False) -> list[str]:
    """The learned codecs (``codec.name``, train, evaluate); with ``fixed``, also those without
    weights, which only decode what names them."""
    return sorted(name for name, cls in _CODECS.items() if fixed or cls.learned)


def codec_class(name: str) -> type[Codec]:
    try:
        return _CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec '{name}' (available: {', '.join(available_codecs(fixed=True))})") from None


def create_codec(name: str, **architecture: Any) -> Codec:
    """A new (untrained) codec of the registered class ``name``."""
    return codec_class(name)(**architecture)
