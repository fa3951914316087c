"""``mean-scale-hyperprior``: the mean–scale hyperprior of Minnen, Ballé & Toderici (2018),
"Joint Autoregressive and Hierarchical Priors for Learned Image Compression" (NeurIPS),
without the autoregressive context model ("mbt2018-mean" in CompressAI's zoo).

    y = g_a(x)              analysis transform with GDN, stride 16
    z = h_a(y)              hyper-analysis, stride 4
    ẑ = Q(z)                factorized entropy bottleneck p(ẑ)
    (μ, σ) = h_s(ẑ)         hyper-synthesis: mean and scale of each latent
    ŷ = Q(y − μ) + μ        Gaussian conditional N(μ, σ²) ∗ U(−½, ½)
    x̂ = g_s(ŷ)              synthesis transform with inverse GDN

Layers, entropy models and the rANS coder are CompressAI's (``compressai.models.
MeanScaleHyperprior``). Two things are ours. Images are padded to a multiple of 16 (not 64):
``y`` is padded with zeros to a multiple of 4 before ``h_a`` and ``h_s``'s output cropped
back, so a 160×160 face codes 10×10 latents instead of the 12×12 of a 192×192 reflection.
And ``h_s`` runs in float64 on one CPU thread in encoder and decoder alike:
each scale picks a CDF table by comparing against fixed bounds, and a float32 convolution's
last bits change with batch size, thread count and device, which would pick another table on
decode and turn the rest of the rANS stream into garbage.

Payload of one image: ``u16 len(z string) · z string · y string``.
"""

from __future__ import annotations

import copy
import struct
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
with warnings.catch_warnings():  # compressai 1.2.8 torch.jit.scripts a helper at import; torch 2.14 deprecates that
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.models import MeanScaleHyperprior as CompressAIMeanScaleHyperprior

from facezip.models.registry import Codec, register_codec

_Z_LENGTH = struct.Struct("<H")
Y_STRIDE, Z_STRIDE = 16, 4  # g_a downsamples by 16, h_a by 4 more


@register_codec("mean-scale-hyperprior")
class MeanScaleHyperprior(Codec):
    """``N`` channels in the transforms, ``M`` latent channels (CompressAI: N=128, M=192 for
    its low-rate models; smaller defaults train in a CPU session)."""

    entropy_coded = True
    learns_rate = True
    default_level = 3
    # the bundled ladder's rung 3 (faces, MSE) and its Kodak pretraining (L1 + MS-SSIM)
    default_lmbda = {"pretrain": 32.0, "finetune": 400.0}

    def __init__(self, N: int = 64, M: int = 96) -> None:
        super().__init__()
        self._arch = {"N": int(N), "M": int(M)}
        self.net = CompressAIMeanScaleHyperprior(N=int(N), M=int(M))

    @property
    def pad_multiple(self) -> int:
        return Y_STRIDE

    def architecture(self) -> dict[str, Any]:
        return dict(self._arch)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.net.g_a(x)
        z_hat, z_likelihoods = self.net.entropy_bottleneck(self.net.h_a(_pad_latents(y)))
        scales, means = _crop_to(self.net.h_s(z_hat), y).chunk(2, 1)
        y_hat, y_likelihoods = self.net.gaussian_conditional(y, scales, means=means)
        bits = sum(-torch.log2(lik).flatten(1).sum(1) for lik in (y_likelihoods, z_likelihoods))
        return {"x_hat": self.net.g_s(y_hat), "bits": bits}

    def aux_loss(self) -> torch.Tensor:
        """The entropy bottleneck's quantile loss, minimised by its own optimizer (as CompressAI does)."""
        return self.net.aux_loss()

    def aux_parameters(self) -> list[torch.nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.endswith(".quantiles")]

    def refresh_entropy_model(self) -> None:
        """Rebuild the CDF tables from the current weights (after training; saved with them)."""
        self.net.update(force=True)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # CompressAI resizes its CDF buffers to the saved tables before loading them
        return self.net.load_state_dict({k.removeprefix("net."): v for k, v in state_dict.items()}, strict=strict)

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> list[bytes]:
        self._require_tables()
        y = self.net.g_a(x)
        z = self.net.h_a(_pad_latents(y))
        bottleneck, conditional = self.net.entropy_bottleneck, self.net.gaussian_conditional
        z_strings = bottleneck.compress(z)
        scales, means = self._gaussian_parameters(bottleneck.decompress(z_strings, z.shape[-2:]), y.shape[-2:], y.device)
        y_strings = conditional.compress(y, conditional.build_indexes(scales), means=means)
        return [_Z_LENGTH.pack(len(zs)) + zs + ys for zs, ys in zip(z_strings, y_strings)]

    @torch.no_grad()
    def decompress(self, payloads: Sequence[bytes], size: tuple[int, int]) -> torch.Tensor:
        self._require_tables()
        y_shape = (size[0] // Y_STRIDE, size[1] // Y_STRIDE)
        z_shape = (-(-y_shape[0] // Z_STRIDE), -(-y_shape[1] // Z_STRIDE))
        device = next(self.parameters()).device
        z_strings, y_strings = zip(*(_split(payload) for payload in payloads))
        z_hat = self.net.entropy_bottleneck.decompress(list(z_strings), z_shape)
        scales, means = self._gaussian_parameters(z_hat, y_shape, device)
        conditional = self.net.gaussian_conditional
        y_hat = conditional.decompress(list(y_strings), conditional.build_indexes(scales), means=means)
        return self.net.g_s(y_hat.to(device)).clamp_(0, 1)

    def _gaussian_parameters(self, z_hat: torch.Tensor, y_shape, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(σ, μ)`` reproducibly (see the module docstring): float64 on one CPU thread, where a
        convolution treats each image of the batch on its own, so batch composition cannot matter."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            params = self._h_s_float64()(z_hat.to("cpu", torch.float64))[..., : y_shape[0], : y_shape[1]]
        finally:
            torch.set_num_threads(threads)
        scales, means = params.float().chunk(2, 1)
        return scales.to(device), means.to(device)

    def _h_s_float64(self) -> torch.nn.Module:
        """A float64 CPU copy of h_s, rebuilt whenever its weights change (parameter identity and
        version counters; kept in a tuple so it is not registered as a submodule)."""
        key = tuple((id(p), p._version) for p in self.net.h_s.parameters())
        cached = getattr(self, "_h_s64_cache", None)
        if cached is None or cached[0] != key:
            self._h_s64_cache = (key, copy.deepcopy(self.net.h_s).to("cpu", torch.float64))
        return self._h_s64_cache[1]

    def _require_tables(self) -> None:
        if self.net.entropy_bottleneck._offset.numel() == 0:
            raise RuntimeError("mean-scale-hyperprior has no CDF tables: call refresh_entropy_model() "
                               "after training (weights saved by facezip carry them)")


def _pad_latents(y: torch.Tensor) -> torch.Tensor:
    height, width = y.shape[-2:]
    return F.pad(y, (0, -width % Z_STRIDE, 0, -height % Z_STRIDE))


def _crop_to(params: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return params[..., : y.shape[-2], : y.shape[-1]]


def _split(payload: bytes) -> tuple[bytes, bytes]:
    if len(payload) < _Z_LENGTH.size:
        raise ValueError(f"payload of {len(payload)} bytes is too short for a hyperprior stream")
    (z_length,) = _Z_LENGTH.unpack_from(payload)
    if _Z_LENGTH.size + z_length > len(payload):
        raise ValueError(f"payload announces a {z_length}-byte hyper-latent string but has "
                         f"{len(payload) - _Z_LENGTH.size} bytes")
    return payload[_Z_LENGTH.size : _Z_LENGTH.size + z_length], payload[_Z_LENGTH.size + z_length :]
