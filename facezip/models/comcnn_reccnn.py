"""ComCNN/RecCNN around a standard codec: the payload is a JPEG or AVIF file any viewer opens.

F. Jiang, W. Tao, S. Liu, J. Ren, X. Guo, D. Zhao, "An End-to-End Compression Framework Based on
Convolutional Neural Networks", IEEE TCSVT 2018 (arXiv:1708.00838), the framework of the seed
paper "Honey, I Shrunk the Image". ComCNN ``Co`` maps ``x`` to a compact image ``c`` at half size,
the standard codec ``Cod`` stores ``c`` (the payload is its file, byte for byte), and RecCNN ``Re``
restores ``x̂ = u + Re(u)`` from ``u``, the bicubic upsampling of the decoded ``Cod(c)``.
With ``half_size`` off the codec sees ``x`` itself and RecCNN is a pure restoration network.

Face-aware bit allocation (``face_gain`` g > 0, facezip's addition): ComCNN codes ``W(x)``, the image
resampled ``1 + g`` times more densely across the face region than elsewhere
(``facezip.models.face_sampling``), and ``u`` is sampled back through the inverse warp ``W⁻¹``: the
base codec's bits follow its pixels, so they follow the face. The region is the centre ellipse
encoder and decoder derive from the size: nothing of it travels in the file. Weights saved before
the option existed load with g = 0, and decode as they always did.

facezip's default codec. Its defaults are what ships: AVIF as the base, RecCNN of 32 filters ×
12 layers (8× fewer operations than the paper's 64 × 20, so that a CPU trains it and decodes a
160 px face in tens of milliseconds); the paper's JPEG, 64 × 20 is ``configs/comcnn-reccnn-paper.yaml``.

Two departures from the paper, both so a short training run starts from a working codec:
``c = avgpool₂(x) + Co(x)`` with ``Co``'s last layer zero-initialised (the paper's ``Co`` learns the
downscaling from scratch), and ``Re``'s last layer zero-initialised, so the untrained codec is
"downscale, code, bicubic upscale". No batch norm: decoding stays the same in training and eval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facezip.infra.images import decode_standard, encode_standard, map_in_threads
from facezip.models import base_file, face_sampling
from facezip.models.coding import to_tensor, to_uint8
from facezip.models.container import FzFormatError
from facezip.models.face_mask import CENTRE_HALF_AXES
from facezip.models.registry import Codec, register_codec

# RecCNN's full-size 32-channel activations of a batch of 16 faces (52 MB a layer) overflow a CPU's
# caches: restoring 4 at a time decodes 23–30 % faster per face on 1–2 cores (the same pixels)
CPU_RESTORE_BATCH = 4
# base codec → (Pillow format, raw file suffix, the bytes its files start with at offset 0 or 4)
BASES = {"jpeg": ("JPEG", ".jpg", b"\xff\xd8\xff"), "avif": ("AVIF", ".avif", b"ftypavif")}


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


def _zero_last(layers: nn.Sequential) -> nn.Sequential:
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return layers


class ComCNN(nn.Sequential):
    """Conv(3→C) + ReLU, Conv(C→C, stride 2) + ReLU, Conv(C→3): a correction to ``avgpool₂(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__(_conv(3, channels), nn.ReLU(inplace=True), _conv(channels, channels, 2),
                         nn.ReLU(inplace=True), _conv(channels, 3))
        _zero_last(self)


class RecCNN(nn.Sequential):
    """``layers`` 3×3 convolutions of ``channels`` filters, ReLU between, predicting the residual."""

    def __init__(self, channels: int, layers: int) -> None:
        inner = [m for _ in range(layers - 2) for m in (_conv(channels, channels), nn.ReLU(inplace=True))]
        super().__init__(_conv(3, channels), nn.ReLU(inplace=True), *inner, _conv(channels, 3))
        _zero_last(self)


@register_codec("comcnn-reccnn")
class ComRecCNN(Codec):
    """ComCNN → JPEG/AVIF → bicubic ×2 → RecCNN (Jiang et al. 2017); the quality is the base codec's.

    Training (``forward``): the real base codec codes each detached compact image at a random
    quality of the named range (it is not differentiable), RecCNN learns from what it decoded,
    and ComCNN's gradient passes the codec as the identity — the paper's codec-free approximation
    for ComCNN and real codec output for RecCNN, in one step instead of alternating ones.
    """

    entropy_coded = True  # the base codec's file is already entropy-coded: xz would only add framing
    quality_range = (1.0, 100.0)
    named_qualities = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 85.0)
    quality_step = 1.0  # _encode rounds: JPEG and AVIF take integer qualities
    default_quality = 50.0
    # λ on the MSE of [0, 1] pixels against FaceNet's b = 1: the bundled model's (the identity term,
    # about 0.2, and λ·MSE, about 0.002 · 2000 at 33 dB, weigh alike). The rate is the base codec's.
    default_lmbda = {"mse+facenet": 2000.0}
    legacy_architecture = {"face_gain": 0.0}  # the weights of releases before 11: a uniform grid

    def __init__(self, base: str = "avif", half_size: bool = True, channels: int = 32, rec_layers: int = 12,
                 face_gain: float = 1.0) -> None:
        super().__init__()
        if base not in BASES:
            raise ValueError(f"codecs.comcnn_reccnn.base: '{base}' is not a base codec ({', '.join(BASES)})")
        if rec_layers < 2:
            raise ValueError(f"codecs.comcnn_reccnn.rec_layers: {rec_layers} < 2 "
                             "(RecCNN needs an input and an output layer)")
        if not 0 <= face_gain <= 8:
            raise ValueError(f"codecs.comcnn_reccnn.face_gain: {face_gain} is outside [0, 8] (the face region's "
                             "extra sampling density; 0 = uniform)")
        self._arch = {"base": base, "half_size": bool(half_size), "channels": int(channels),
                      "rec_layers": int(rec_layers), "face_gain": float(face_gain)}
        self.quality = self.default_quality
        self.com = ComCNN(channels) if half_size else None
        self.rec = RecCNN(channels, rec_layers)

    @classmethod
    def bundled_metadata(cls, level: int | None) -> dict[str, Any]:
        return {"lmbda": cls.default_lmbda["mse+facenet"], "distortion": "mse+facenet"}

    @property
    def pad_multiple(self) -> int:
        return 2 if self.com is not None else 1

    def architecture(self) -> dict[str, Any]:
        return dict(self._arch)

    def coding_notes(self) -> dict[str, Any]:
        gain = self._arch["face_gain"]
        if not gain:
            return {"face_region": "none: the image is sampled uniformly"}
        half_w, half_h = CENTRE_HALF_AXES
        return {"face_region": f"the centre ellipse (half-axes {half_w:g} W, {half_h:g} H), sampled {1 + gain:g} times "
                               "as densely as the rest; derived from the image size, no landmarks stored"}

    def compact(self, x: torch.Tensor) -> torch.Tensor:
        """``c``: what the base codec stores, from ``W(x)`` (``x`` itself without ``face_gain``;
        ``W(x)`` itself without ``half_size``)."""
        gain = self._arch["face_gain"]
        warped = face_sampling.resample(x, tuple(x.shape[-2:]), gain, inverse=False) if gain else x
        return warped if self.com is None else F.avg_pool2d(warped, 2) + self.com(warped)

    def restore(self, decoded: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``x̂ = u + Re(u)``, ``u`` the decoded compact image sampled (bicubic) at ``size`` through ``W⁻¹``."""
        if self._arch["face_gain"]:
            up = face_sampling.resample(decoded, size, self._arch["face_gain"], inverse=True, mode="bicubic")
        elif decoded.shape[-2:] != size:
            up = F.interpolate(decoded, size=size, mode="bicubic", align_corners=False)
        else:
            up = decoded
        return up + self.rec(up)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        compact = self.compact(x)
        low, high = self.named_qualities[0], self.named_qualities[-1]
        qualities = (low + (high - low) * torch.rand(len(x))).tolist() if self.training else [self.quality] * len(x)
        files = self._encode(compact.detach(), qualities, thorough=False)  # faster, and near enough to learn from
        decoded = self._decode(files, tuple(compact.shape[-2:])).to(x.device, x.dtype)
        through = compact + (decoded - compact).detach()  # the codec-free approximation for ComCNN's gradient
        bits = torch.tensor([8.0 * len(base_file.pack(f, self._arch["base"])) for f in files], device=x.device)
        return {"x_hat": self.restore(through, tuple(x.shape[-2:])), "bits": bits}

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> list[bytes]:
        files = self._encode(self.compact(x), [self.quality] * len(x), thorough=True)
        return [base_file.pack(f, self._arch["base"]) for f in files]

    @torch.no_grad()
    def decompress(self, payloads: Sequence[bytes], size: tuple[int, int]) -> torch.Tensor:
        shape = (size[0] // self.pad_multiple, size[1] // self.pad_multiple)
        for payload in payloads:
            self.check_payload(payload, *size)
        decoded = self._decode([base_file.unpack(payload) for payload in payloads], shape)
        device = next(self.parameters()).device
        if device.type != "cpu":
            return self.restore(decoded.to(device), size)
        return torch.cat([self.restore(part, size) for part in decoded.split(CPU_RESTORE_BATCH)])

    @classmethod
    def check_payload(cls, payload: bytes, height: int, width: int) -> None:
        if cls.payload_base(payload) is None:
            raise FzFormatError(f"payload of {len(payload)} bytes is neither a JPEG nor an AVIF file")

    @staticmethod
    def payload_base(payload: bytes) -> str | None:
        """The base codec whose file ``payload`` holds, packed (base_file) or plain (earlier releases),
        by its signature; None for neither."""
        if payload[:1] == bytes([base_file.TAG]):
            return base_file.packed_base(payload)
        for base, (_, _, magic) in BASES.items():
            if payload[:len(magic)] == magic or payload[4:4 + len(magic)] == magic:
                return base
        return None

    @classmethod
    def raw_file(cls, payload: bytes) -> tuple[bytes, str] | None:
        base = cls.payload_base(payload)
        return (base_file.unpack(payload), BASES[base][1]) if base else None

    def _encode(self, compact: torch.Tensor, qualities: Sequence[float], thorough: bool) -> list[bytes]:
        """The base codec's files; ``thorough``: its slower settings (fewer bytes, the same decoder)."""
        fmt = BASES[self._arch["base"]][0]
        images = to_uint8(compact.float())
        return map_in_threads(lambda pair: encode_standard(pair[0], fmt, round(pair[1]), thorough),
                              list(zip(images, qualities)), torch.get_num_threads())

    @staticmethod
    def _decode(files: Sequence[bytes], shape: tuple[int, int]) -> torch.Tensor:
        """The base codec's files → ``(N, 3, *shape)`` float in [0, 1]; a file of another size is refused."""
        def decode(data: bytes) -> np.ndarray:
            try:
                rgb = decode_standard(data)
            except (OSError, ValueError) as exc:
                raise FzFormatError(f"payload is not a readable image file: {exc}") from None
            if rgb.shape[:2] != shape:
                raise FzFormatError(f"payload holds a {rgb.shape[0]}×{rgb.shape[1]} image, "
                                    f"a {shape[0]}×{shape[1]} one was expected")
            return rgb

        return to_tensor(map_in_threads(decode, list(files), torch.get_num_threads()), shape)
