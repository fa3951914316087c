"""The lossless fallback as a codec: PNG bytes, for faces no rung of a rate ladder keeps
recognisable (``archive --min-identity``). It has no weights, so its weights hash is fixed."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from facezip.models.coding import to_uint8
from facezip.models.container import FzFormatError
from facezip.models.registry import Codec, register_codec

# what archives have always recorded for the fallback: records written before it was a codec still match
LOSSLESS_WEIGHTS_HASH = "0" * 16


@register_codec("png")
class LosslessCodec(Codec):
    learned = False
    entropy_coded = True  # deflate already: xz would only add framing

    @property
    def pad_multiple(self) -> int:
        return 1

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x_hat": x, "bits": torch.tensor([8.0 * len(p) for p in self.compress(x)])}

    def compress(self, x: torch.Tensor) -> list[bytes]:
        return [_png(image) for image in to_uint8(x)]

    def decompress(self, payloads: Sequence[bytes], size: tuple[int, int]) -> torch.Tensor:
        pixels = np.stack([_pixels(payload, *size) for payload in payloads])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255)

    @classmethod
    def check_payload(cls, payload: bytes, height: int, width: int) -> None:
        """A PNG of the header's size, read from the PNG header alone."""
        _open(payload, height, width).close()

    def architecture(self) -> dict[str, Any]:
        return {}

    def weights_hash(self) -> str:
        return LOSSLESS_WEIGHTS_HASH


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _open(payload: bytes, height: int, width: int, failure: str = "lossless record is not a PNG") -> Image.Image:
    """The PNG, its size checked against the header before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(payload), formats=["PNG"])
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FzFormatError(f"{failure} ({exc})") from None
    if image.size != (width, height):
        image.close()
        raise FzFormatError(f"lossless PNG is {image.size[0]}×{image.size[1]}, the header says {width}×{height}")
    return image


def _pixels(payload: bytes, height: int, width: int) -> np.ndarray:
    """The pixels exactly as archived."""
    with _open(payload, height, width, "lossless PNG does not decode") as image:
        try:
            return np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:  # what Pillow raises for a damaged PNG
            raise FzFormatError(f"lossless PNG does not decode ({exc})") from None
