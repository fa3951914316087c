"""``masked-cvae``: the masked convolutional VAE of "Facial Image Reconstruction" (after Toledo &
Antonelo 2021), a CVAE after Kingma & Welling (2014), "Auto-Encoding Variational Bayes", with
an optional DCGAN discriminator (Radford et al. 2016), made a codec with a real bitstream.

In the paper's notation, with ``m`` the face mask (``facezip.models.face_mask``):

    q_φ(z | x) = N(μ_φ(x), diag σ²_φ(x))      encoder E_φ: 4 × [Conv 4×4 s2 (+BN) + LeakyReLU 0.2],
                                               then 1×1 convolutions to μ and log σ² (stride 16)
    p(z) = N(0, I)                             the prior
    x̂ = D_θ(z)                                decoder: 3 × [ConvT 4×4 s2 + BN + ReLU], ConvT 4×4 s2 + sigmoid
    L = L1_m(x, x̂) + β · KL(q_φ(z | x) ‖ p(z))  (+ w · L_G, the DCGAN generator loss; the paper: w = 10)

``L1_m`` is the mean absolute error over the pixels inside the mask (``losses.MaskedL1Loss``). In
facezip's ``R + λ·D`` the KL is the rate: ``forward``'s ``bits`` are KL(q ‖ p) in bits (a VAE's
code length, bits-back), so β = 1/λ and ``train.lmbda`` sets it.

As a codec the latent is the posterior mean in steps of Δ (``quant_step``), entropy-coded:

    y = μ / Δ;   ŷ = Q(y)                      CompressAI's EntropyBottleneck (factorized, learned) + rANS
    x̂ = D_θ(Δ · ŷ)

Training feeds the decoder ``z = μ + σ·ε + Δ·u`` with ``u ~ U(−½, ½)``: the CVAE's sample plus the
error quantisation adds (Ballé et al. 2017's proxy), so decoding ``Δ·ŷ`` is what it learned. The
entropy model is fitted to the batches' latents by the auxiliary optimizer (its negative
log-likelihood of the detached ``y``, plus CompressAI's quantile loss), outside the CVAE objective:
the files' rate is measured, not assumed. Decoding is reproducible without mean-scale-hyperprior's
float64 step: a factorized bottleneck's CDF tables depend on the weights alone, so no float computed
while decoding picks a table, and the rANS symbols come back exactly on any batch or thread count.

Images are reflect-padded to multiples of 16 (``facezip.models.coding``), so any size codes, a
1×1 image included. Payload of one image: the bottleneck's rANS string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.models.base import CompressionModel
from torch import nn

from facezip.models.hyperprior import require_cdf_tables
from facezip.models.rans_guard import guarded_decoding
from facezip.models.registry import Codec, register_codec

STRIDE = 16  # four stride-2 layers
LOG_VARIANCE_RANGE = (-12.0, 6.0)  # keeps exp() finite in the first steps


@register_codec("masked-cvae")
class MaskedCVAE(Codec):
    """``channels``: the encoder's four widths (the decoder mirrors them); ``latent_channels``: C of z;
    ``quant_step``: Δ, the quantisation step of μ."""

    entropy_coded = True
    learns_rate = True  # R = the KL (see the module docstring); the real rate is measured on files
    masked_loss = True
    # β = 1/λ: 200 weighs a masked L1 of 1 grey level (0.004) like 0.8 bits per pixel of KL
    default_lmbda = {"masked-l1": 200.0}

    def __init__(self, channels: Sequence[int] = (32, 64, 96, 128), latent_channels: int = 48,
                 quant_step: float = 0.5) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"masked-cvae needs 4 encoder widths (stride 16), got {list(channels)}")
        self._arch = {"channels": [int(c) for c in channels], "latent_channels": int(latent_channels),
                      "quant_step": float(quant_step)}
        widths = [3, *self._arch["channels"]]
        self.encoder = nn.Sequential(*(_down(c_in, c_out, batch_norm=i > 0)
                                       for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))))
        self.to_mean = nn.Conv2d(widths[-1], latent_channels, 1)
        self.to_log_variance = nn.Conv2d(widths[-1], latent_channels, 1)
        back = [latent_channels, *reversed(self._arch["channels"][:-1])]
        self.decoder = nn.Sequential(*(_up(c_in, c_out) for c_in, c_out in zip(back[:-1], back[1:])),
                                     nn.ConvTranspose2d(back[-1], 3, 4, stride=2, padding=1), nn.Sigmoid())
        self.entropy_bottleneck = EntropyBottleneck(latent_channels)
        self._latents_to_fit: torch.Tensor | None = None

    @property
    def pad_multiple(self) -> int:
        return STRIDE

    @property
    def step(self) -> float:
        return self._arch["quant_step"]

    def architecture(self) -> dict[str, Any]:
        return {**self._arch, "channels": list(self._arch["channels"])}

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)`` of q_φ(z | x), each ``(N, C, H/16, W/16)``."""
        features = self.encoder(x)
        return self.to_mean(features), self.to_log_variance(features).clamp(*LOG_VARIANCE_RANGE)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, log_variance = self.posterior(x)
        self._latents_to_fit = (mean / self.step).detach()
        if self.training:
            noise = torch.randn_like(mean) * torch.exp(0.5 * log_variance) + self.step * (torch.rand_like(mean) - 0.5)
            z = mean + noise
        else:  # what decoding the file gives
            z = self.step * self.entropy_bottleneck(mean / self.step, training=False)[0]
        kl_nats = 0.5 * (mean.pow(2) + log_variance.exp() - 1 - log_variance).flatten(1).sum(1)
        return {"x_hat": self.decoder(z), "bits": kl_nats / math.log(2)}

    def aux_loss(self) -> torch.Tensor:
        """CompressAI's quantile loss plus the bottleneck's bits per latent on the last batch's detached ``y``."""
        loss = self.entropy_bottleneck.loss()
        if self._latents_to_fit is not None:
            _, likelihoods = self.entropy_bottleneck(self._latents_to_fit, training=True)
            loss = loss - torch.log2(likelihoods).mean()
        return loss

    def aux_parameters(self) -> list[nn.Parameter]:
        return list(self.entropy_bottleneck.parameters())

    def refresh_entropy_model(self) -> None:
        self.entropy_bottleneck.update(force=True)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # CompressAI's loader, which resizes the bottleneck's CDF buffers to the saved tables first
        return CompressionModel.load_state_dict(self, dict(state_dict), strict=strict)

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> list[bytes]:
        require_cdf_tables(self.entropy_bottleneck, self.name)
        mean, _ = self.posterior(x)
        return self.entropy_bottleneck.compress(mean / self.step)

    @torch.no_grad()
    def decompress(self, payloads: Sequence[bytes], size: tuple[int, int]) -> torch.Tensor:
        require_cdf_tables(self.entropy_bottleneck, self.name)
        with guarded_decoding(self.entropy_bottleneck):  # a hostile string cannot crash the process
            y_hat = self.entropy_bottleneck.decompress(list(payloads), (size[0] // STRIDE, size[1] // STRIDE))
        device = next(self.parameters()).device
        return self.decoder(self.step * y_hat.to(device)).clamp_(0, 1)


class Discriminator(nn.Module):
    """DCGAN's discriminator (Radford et al. 2016): 3 × [Conv 4×4 s2 (+BN) + LeakyReLU 0.2] and a
    4×4 convolution to one logit per patch (any input size ≥ 32 px)."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        widths = [3, *channels]
        self.net = nn.Sequential(*(_down(c_in, c_out, batch_norm=i > 0)
                                   for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))),
                                 nn.Conv2d(widths[-1], 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _down(c_in: int, c_out: int, batch_norm: bool) -> nn.Sequential:
    """DCGAN's encoder block (no batch norm on the first layer, as DCGAN)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not batch_norm),
                         *([nn.BatchNorm2d(c_out)] if batch_norm else []), nn.LeakyReLU(0.2, inplace=True))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
