"""Face recognizers that judge whether a decoded face is still the same person.

A registry, like the codec registry: ``facenet`` (the CASIA-WebFace / VGGFace2 FaceNet that the
identity loss trains against), ``dlib-resnet`` (dlib's face-recognition ResNet, which no facezip
codec ever trains against: the independent judge) and, for any other spec, a user's embedding
network in a file (TorchScript, or a state dict of facenet-pytorch's ``InceptionResnetV1``).

Each judge states its measure and direction — cosine similarity (higher = more alike) or
Euclidean distance (lower = more alike) — so that reports and thresholds never mix units.
``score`` turns any measure into "higher = more alike" for threshold fitting and 1-NN matching.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from facezip.infra.storage import Storage
from facezip.models.facenet import load_facenet, standardize

FACENET = "facenet"
COSINE, DISTANCE = "cosine", "distance"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# pixels in [0, 1] → the input range each kind of network was trained on
_NORMALIZATIONS = {
    "facenet": standardize,
    "unit": lambda x: x,
    "imagenet": lambda x: ((x - x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
                           / x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)),
}


@dataclass(frozen=True)
class RecognizerOptions:
    """What loading a judge may need: FaceNet's weights, a device, storage for files, and the
    input convention of a user's network."""

    facenet_weights: str = "casia-webface"
    device: str = "cpu"
    storage: Storage | None = None
    input_size: int = 160
    normalization: str = "facenet"


class Recognizer(ABC):
    """A face-embedding judge: ``embed`` faces, ``compare`` embeddings row by row in its measure."""

    name: str  # the judge's name in column headers, metric names and thresholds
    measure: str  # COSINE (higher = more alike) or DISTANCE (lower = more alike)
    description: str
    same_person_threshold: float | None = None  # the judge's own same-person cut, in its measure
    trained_against = False  # True for the network in facezip's identity loss: not an independent judge

    @property
    def higher_is_better(self) -> bool:
        return self.measure == COSINE

    @property
    def identity(self) -> str:
        """A short stable key for caching embeddings made by this judge."""
        return hashlib.sha256(self.description.encode()).hexdigest()[:16]

    @abstractmethod
    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(H, W, 3) uint8 faces → (N, D) float32 embeddings."""

    def to(self, device: torch.device | str) -> "Recognizer":
        """The judge on ``device`` where it can use one (dlib's CPU build cannot)."""
        return self

    def compare(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row i of ``a`` against row i of ``b``, in this judge's measure."""
        if self.measure == DISTANCE:
            return np.linalg.norm(a - b, axis=1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return np.sum(a * b, axis=1) / np.where(norms == 0, 1.0, norms)

    def score(self, values: np.ndarray | float) -> np.ndarray | float:
        """Values of the measure as "higher = more alike" (distances negated)."""
        return values if self.higher_is_better else -values

    def pairwise_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N, M) scores, higher = more alike, of every row of ``a`` against every row of ``b``."""
        if self.measure == DISTANCE:  # |a − b|² = |a|² + |b|² − 2a·b: no (N, M, D) difference array
            a, b = a.astype(np.float64), b.astype(np.float64)
            squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
            return -np.sqrt(np.maximum(squared, 0.0))
        unit = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (a, b)]
        return unit[0] @ unit[1].T

    def passes(self, values: np.ndarray, threshold: float) -> np.ndarray:
        """Which values of the measure are at least as alike as ``threshold``."""
        return values >= threshold if self.higher_is_better else values <= threshold


class TorchRecognizer(Recognizer):
    """A PyTorch embedding network plus its input convention; embeddings are unit rows, cosine."""

    measure = COSINE

    def __init__(self, model: nn.Module, name: str, description: str, input_size: int = 160,
                 normalization: str = "facenet", device: torch.device | str = "cpu") -> None:
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"recognizer normalization '{normalization}' is unknown "
                             f"(use one of {', '.join(_NORMALIZATIONS)})")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.name, self.input_size, self.normalization = name, input_size, normalization
        self.description = f"{description}, input {input_size}px, {normalization} normalization"

    def to(self, device: torch.device | str) -> "TorchRecognizer":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        rows = []
        for start in range(0, len(images), batch_size):
            batch = [self._prepare(image) for image in images[start : start + batch_size]]
            x = _NORMALIZATIONS[self.normalization](torch.cat(batch).to(self.device))
            rows.append(F.normalize(self.model(x).flatten(1).float(), dim=1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        x = torch.tensor(image).permute(2, 0, 1)[None].float().div_(255)  # a copy: decoded arrays are read-only
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        return x


_RECOGNIZERS: dict[str, Callable[[RecognizerOptions], Recognizer]] = {}


def register_recognizer(name: str):
    """Class or factory decorator: ``load_recognizer(name, …)`` builds it from ``RecognizerOptions``."""

    def decorate(factory):
        _RECOGNIZERS[name] = factory
        return factory

    return decorate


def available_recognizers() -> list[str]:
    return sorted(_RECOGNIZERS)


@register_recognizer(FACENET)
def _facenet(options: RecognizerOptions) -> Recognizer:
    judge = TorchRecognizer(load_facenet(options.facenet_weights, options.device, options.storage), FACENET,
                            f"FaceNet InceptionResnetV1 ({options.facenet_weights}; the training identity loss's "
                            f"network)", device=options.device)
    judge.trained_against = True
    return judge


def load_recognizer(spec: str, options: RecognizerOptions | None = None) -> Recognizer:
    """``spec``: a registered judge (``available_recognizers()``) or the path/URI of a TorchScript
    file or an ``InceptionResnetV1`` state dict (named after the file's stem)."""
    options = options or RecognizerOptions()
    if spec in _RECOGNIZERS:
        return _RECOGNIZERS[spec](options)
    try:
        data = (options.storage or Storage()).read_bytes(spec)
    except FileNotFoundError:
        raise ValueError(f"identity judge '{spec}' is neither a registered judge "
                         f"({', '.join(available_recognizers())}) nor an existing file") from None
    digest = hashlib.sha256(data).hexdigest()[:12]
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, yet it is what users have
            warnings.simplefilter("ignore", FutureWarning)
            model, kind = torch.jit.load(io.BytesIO(data), map_location="cpu"), "TorchScript"
    except RuntimeError:  # not TorchScript: a state dict of FaceNet's network
        model, kind = load_facenet(spec, options.device, options.storage), "InceptionResnetV1 state dict"
    return TorchRecognizer(model, PurePosixPath(spec).stem, f"{kind} {spec} (sha256 {digest})",
                           options.input_size, options.normalization, options.device)


def load_recognizers(specs: Sequence[str], options: RecognizerOptions | None = None) -> list[Recognizer]:
    """Several judges, each once; two judges of one name would share every column."""
    judges = [load_recognizer(spec, options) for spec in dict.fromkeys(specs)]
    names = [judge.name for judge in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"identity judges must have distinct names, got {names}")
    return judges


def identity_key(judge: str, stat: str) -> str:
    """A judge's column, summary key and metric name: ``identity.dlib-resnet.mean_distance``."""
    return f"identity.{judge}.{stat}"


def headline_judge(judges: Sequence[Recognizer]) -> Recognizer:
    """The judge whose numbers headline a report: the first that no codec trains against."""
    return next((judge for judge in judges if not judge.trained_against), judges[0])
