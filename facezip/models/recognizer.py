"""Face-embedding networks that judge whether a decoded face still looks like the same person.

A judge is FaceNet (``facenet``, weights through ``load_facenet``, the same resolver as
training) or any embedding model in a file: TorchScript, or a state dict of facenet-pytorch's
``InceptionResnetV1``. Judging with a network that was not in the training loss keeps the
identity numbers honest; every result names the judge it came from.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from facezip.infra.storage import Storage
from facezip.models.facenet import load_facenet, standardize

FACENET = "facenet"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# pixels in [0, 1] → the input range each kind of network was trained on
_NORMALIZATIONS = {
    "facenet": standardize,
    "unit": lambda x: x,
    "imagenet": lambda x: ((x - x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
                           / x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)),
}


class Recognizer:
    """An embedding network plus its input convention; ``embed`` gives unit-length rows."""

    def __init__(self, model: nn.Module, description: str, input_size: int = 160,
                 normalization: str = "facenet", device: torch.device | str = "cpu") -> None:
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"recognizer normalization '{normalization}' is unknown "
                             f"(use one of {', '.join(_NORMALIZATIONS)})")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.input_size = input_size
        self.normalization = normalization
        self.description = f"{description}, input {input_size}px, {normalization} normalization"

    @property
    def identity(self) -> str:
        """A short stable key for caching embeddings made by this judge."""
        return hashlib.sha256(self.description.encode()).hexdigest()[:16]

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(H, W, 3) uint8 faces → (N, D) float32 unit vectors (resized to the input size)."""
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


def load_recognizer(spec: str, facenet_weights: str, device: torch.device | str = "cpu",
                    storage: Storage | None = None, input_size: int = 160,
                    normalization: str = "facenet") -> Recognizer:
    """``spec``: ``facenet`` (weights per ``facenet_weights``) or the path/URI of a TorchScript
    file or an ``InceptionResnetV1`` state dict."""
    if spec == FACENET:
        model = load_facenet(facenet_weights, device, storage)
        return Recognizer(model, f"FaceNet InceptionResnetV1 ({facenet_weights})", input_size, normalization, device)
    try:
        data = (storage or Storage()).read_bytes(spec)
    except FileNotFoundError:
        raise ValueError(f"evaluate.recognizer: file not found: {spec}") from None
    digest = hashlib.sha256(data).hexdigest()[:12]
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, yet it is what users have
            warnings.simplefilter("ignore", FutureWarning)
            model, kind = torch.jit.load(io.BytesIO(data), map_location="cpu"), "TorchScript"
    except RuntimeError:  # not TorchScript: a state dict of FaceNet's network
        model, kind = load_facenet(spec, device, storage), "InceptionResnetV1 state dict"
    return Recognizer(model, f"{kind} {spec} (sha256 {digest})", input_size, normalization, device)
