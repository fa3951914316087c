"""Images in, ``.fz`` payloads out, and back: padding, batching and the container around a codec.

Any image size works: images are reflect-padded up to the codec's ``pad_multiple`` and
cropped back after decoding; images of the same padded size are encoded as one batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from facezip.models.container import DEFAULT_MAX_DECODE_PIXELS, FzFormatError, FzHeader, pack_fz, unpack_fz
from facezip.models.registry import Codec, available_codecs


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def to_tensor(images: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 images → one (N, 3, *size) float batch in [0, 1], reflect-padded."""
    batch = np.empty((len(images), size[0], size[1], 3), dtype=np.uint8)
    for i, image in enumerate(images):
        pad = ((0, size[0] - image.shape[0]), (0, size[1] - image.shape[1]), (0, 0))
        batch[i] = np.pad(image, pad, mode="reflect" if min(image.shape[:2]) > 1 else "edge")
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] → (N, H, W, 3) uint8, rounded."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def encode_images(codec: Codec, images: Sequence[np.ndarray], batch_size: int = 16) -> list[bytes]:
    """RGB uint8 images → complete ``.fz`` files, in input order."""
    payloads = encode_payloads(codec, images, batch_size)
    return [pack_file(codec, image, payload) for image, payload in zip(images, payloads)]


def header_for(codec: Codec, image: np.ndarray) -> FzHeader:
    """What a ``.fz`` file or an archive record of ``image`` coded by ``codec`` names."""
    return FzHeader(codec.name, codec.weights_hash(), *image.shape[:2])


def pack_file(codec: Codec, image: np.ndarray, payload: bytes) -> bytes:
    """The ``.fz`` file of ``codec``'s payload of ``image``."""
    return pack_fz(header_for(codec, image), payload, codec.xz_options, stored=codec.entropy_coded)


@torch.no_grad()
def encode_payloads(codec: Codec, images: Sequence[np.ndarray], batch_size: int = 16) -> list[bytes]:
    """RGB uint8 images → the codec's payloads (no container), in input order."""
    device = next(codec.parameters(), torch.empty(0)).device  # a codec without weights (PNG) runs on the CPU
    out: list[bytes | None] = [None] * len(images)
    for size, indices in _group_by_padded_size(images, codec.pad_multiple).items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            payloads = codec.compress(to_tensor([images[i] for i in chunk], size).to(device))
            for i, payload in zip(chunk, payloads):
                out[i] = payload
    return out  # type: ignore[return-value]


def decode_file(codec: Codec, data: bytes, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> np.ndarray:
    """One ``.fz`` file → (H, W, 3) uint8, after checking it belongs to this codec and weights."""
    header, payload = unpack_fz(data, max_pixels)
    return decode_payload(codec, header, payload)


def decode_files(codec: Codec, files: Sequence[bytes], batch_size: int = 16,
                 max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> list[np.ndarray]:
    """Many ``.fz`` files, decoded in batches (far faster per image on a CPU than one by one)."""
    return decode_payloads(codec, [unpack_fz(data, max_pixels) for data in files], batch_size)


def decode_payload(codec: Codec, header: FzHeader, payload: bytes) -> np.ndarray:
    """A codec payload described by ``header`` → (H, W, 3) uint8, cropped back from the padding."""
    return decode_payloads(codec, [(header, payload)])[0]


@torch.no_grad()
def decode_payloads(codec: Codec, items: Sequence[tuple[FzHeader, bytes]], batch_size: int = 16) -> list[np.ndarray]:
    """Payloads with their headers → (H, W, 3) uint8 images in input order; equal padded sizes share a batch."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (header, payload) in enumerate(items):
        check_header_matches(header, codec)
        check_payload_length(codec, header, payload)
        groups[padded_size(header.height, header.width, codec.pad_multiple)].append(i)
    out: list[np.ndarray | None] = [None] * len(items)
    for size, indices in groups.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            try:
                x_hat = to_uint8(codec.decompress([items[i][1] for i in chunk], size))
            except FzFormatError:
                raise
            except ValueError as exc:
                header = items[chunk[0]][0]
                raise FzFormatError(f"payload does not fit a {header.height}×{header.width} image: {exc}") from None
            for i, image in zip(chunk, x_hat):
                out[i] = image[: items[i][0].height, : items[i][0].width]
    return out  # type: ignore[return-value]


def check_known(codec_name: str) -> None:
    known = available_codecs(fixed=True)
    if codec_name not in known:
        raise FzFormatError(f"unknown codec '{codec_name}' (this facezip knows {', '.join(known)})")


def check_header_matches(header: FzHeader, codec: Codec) -> None:
    check_known(header.codec)
    if header.codec != codec.name:
        raise FzFormatError(f"file was written by codec '{header.codec}', the loaded model is '{codec.name}'")
    if header.weights_hash != codec.weights_hash():
        raise FzFormatError(f"weights hash mismatch: file needs weights {header.weights_hash}, "
                            f"the loaded model has {codec.weights_hash()}")


def check_payload_length(codec: Codec, header: FzHeader, payload: bytes) -> None:
    """A payload far shorter than the codec can code the claimed size in is damaged or hostile
    (a few bytes claiming a huge image): refused before any decoding work or allocation."""
    size = padded_size(header.height, header.width, codec.pad_multiple)
    needed = codec.min_payload_bytes(*size)
    if len(payload) < needed:
        raise FzFormatError(f"payload of {len(payload)} bytes is implausibly short for a {header.height}×"
                            f"{header.width} image ({codec.name} needs at least {needed}): damaged or hostile")


def bits_per_pixel(n_bytes: int, height: int, width: int) -> float:
    return 8.0 * n_bytes / (height * width)


def _group_by_padded_size(images: Sequence[np.ndarray], multiple: int) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
        groups[padded_size(*image.shape[:2], multiple)].append(i)
    return groups
