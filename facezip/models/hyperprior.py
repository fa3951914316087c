"""``mean-scale-hyperprior``: the mean–scale hyperprior of Minnen, Ballé & Toderici (2018),
"Joint Autoregressive and Hierarchical Priors for Learned Image Compression" (NeurIPS),
without the autoregressive context model ("mbt2018-mean" in CompressAI's zoo).

    y = g_a(x)              analysis transform with GDN, stride 16
    z = h_a(y)              hyper-analysis, stride 4
    ẑ = Q(z)                factorized entropy bottleneck p(ẑ)
    (μ, σ) = h_s(ẑ)         hyper-synthesis: mean and scale of each latent
    ŷ = Q(y − μ) + μ        Gaussian conditional N(μ, σ²) ∗ U(−½, ½)
    x̂ = g_s(ŷ)              synthesis transform with inverse GDN

With ``quant_gain`` a model also has a gain ``g_c > 0`` per latent channel, the gain unit of
Cui et al. (2021), "Asymmetric Gained Deep Image Compression With Continuous Rate Adaptation"
(CVPR), with the inverse gain tied to ``1/g_c``: ``ŷ = Q(g·(y − μ))/g + μ``, coded as
N(gμ, (gσ)²). ``1/g_c`` is a learned quantization step per channel; trained alone on a frozen
model at a new λ (``train.trainable=[quant_gain]``) it moves that model to another rate in a
few hundred steps, where retraining the transforms moves it slowly.

Layers, entropy models and the rANS coder are CompressAI's (``compressai.models.
MeanScaleHyperprior``). Two things are ours. Images are padded to a multiple of 16 (not 64):
``y`` is padded with zeros to a multiple of 4 before ``h_a`` and ``h_s``'s output cropped
back, so a 160×160 face codes 10×10 latents instead of the 12×12 of a 192×192 reflection.
And ``h_s`` runs in float64 on one CPU thread in encoder and decoder alike:
each scale picks a CDF table by comparing against fixed bounds, and a float32 convolution's
last bits change with batch size, thread count and device, which would pick another table on
decode and turn the rest of the rANS stream into garbage.

With ``--effort N`` (``with_effort``) ``compress`` refines each image's ``y`` for N steps of
SGA (``facezip.models.refinement``) on bits(ŷ)/pixels + λ·MSE(g_s(ŷ), x), with ``ẑ`` (hence μ
and σ) as the encoder coded it, then codes the refined ``y``; the decoder is unchanged. λ is the
one the weights were trained at (their ``metadata``; each bundled rung's is ``LADDER_LMBDA``),
without the identity term they also trained on (FaceNet is the training judge: refining against
it would flatter it, not the independent dlib judge).

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
from torch import nn

with warnings.catch_warnings():  # compressai 1.2.8 torch.jit.scripts a helper at import; torch 2.14 deprecates that
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.models import MeanScaleHyperprior as CompressAIMeanScaleHyperprior

from facezip.models.rans_guard import guarded_decoding
from facezip.models.refinement import image_seeds, refine_latents
from facezip.models.registry import Codec, register_codec

_Z_LENGTH = struct.Struct("<H")
_RANS_WORD, _RANS_MIN_BYTES = 4, 8  # CompressAI's rANS emits 32-bit words and flushes a 64-bit state
Y_STRIDE, Z_STRIDE = 16, 4  # g_a downsamples by 16, h_a by 4 more
MIN_GAIN = 1 / 64  # quantization steps of at most 64: a gain trained towards 0 cannot divide by zero
PIXEL_MSE = "mse+facenet"  # the fine-tuning loss whose λ weighs the pixel MSE (facezip.models.losses.FaceNetLoss)
# λ each bundled rung was fine-tuned at (LADDER_LAMBDAS of scripts/train_bundled_models.sh): their
# weights files predate recording it in their metadata
LADDER_LMBDA = {1: 6.0, 2: 25.0, 3: 100.0, 4: 400.0, 5: 1600.0, 6: 6400.0, 7: 25600.0, 8: 102400.0}


@register_codec("mean-scale-hyperprior")
class MeanScaleHyperprior(Codec):
    """``N`` channels in the transforms, ``M`` latent channels (CompressAI: N=128, M=192 for
    its low-rate models; smaller defaults train in a CPU session)."""

    entropy_coded = True
    learns_rate = True
    refinable = True
    default_level = 4
    # the bundled ladder's rung 4 (faces, MSE) and its Kodak pretraining (L1 + MS-SSIM)
    default_lmbda = {"l1+ms-ssim": 32.0, PIXEL_MSE: 400.0}

    def __init__(self, N: int = 64, M: int = 96, quant_gain: bool = False) -> None:
        super().__init__()
        # quant_gain is recorded only when on: models without it keep their saved architecture
        self._arch = {"N": int(N), "M": int(M), **({"quant_gain": True} if quant_gain else {})}
        self.net = CompressAIMeanScaleHyperprior(N=int(N), M=int(M))
        self.register_parameter("quant_gain", nn.Parameter(torch.ones(int(M))) if quant_gain else None)

    @property
    def pad_multiple(self) -> int:
        return Y_STRIDE

    def architecture(self) -> dict[str, Any]:
        return dict(self._arch)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.net.g_a(x)
        z_hat, z_likelihoods = self.net.entropy_bottleneck(self.net.h_a(_pad_latents(y)))
        scales, means = _crop_to(self.net.h_s(z_hat), y).chunk(2, 1)
        gain = self._gain(y.dtype)
        y_hat, y_likelihoods = self.net.gaussian_conditional(y * gain, scales * gain, means=means * gain)
        y_hat = y_hat / gain
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
        state = {k.removeprefix("net."): v for k, v in state_dict.items()}
        gain = state.pop("quant_gain", None)
        if (gain is None) != (self.quant_gain is None):
            raise ValueError("mean-scale-hyperprior weights " + ("have" if gain is not None else "lack")
                             + f" quant_gain but the model was built with quant_gain={self.quant_gain is not None}")
        if gain is not None:
            with torch.no_grad():
                self.quant_gain.copy_(gain)
        return self.net.load_state_dict(state, strict=strict)

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> list[bytes]:
        require_cdf_tables(self.net.entropy_bottleneck, self.name)
        y = self.net.g_a(x)
        z = self.net.h_a(_pad_latents(y))
        bottleneck, conditional = self.net.entropy_bottleneck, self.net.gaussian_conditional
        z_strings = bottleneck.compress(z)
        z_hat = bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = self._gaussian_parameters(z_hat, y.shape[-2:], y.device)
        latents = y * self._gain(y.dtype)  # coded as means + round(latents − means)
        if self.effort:
            latents = refine_latents(latents, means, self._objective(x, scales, means), self.effort, image_seeds(x))
        y_strings = conditional.compress(latents, conditional.build_indexes(scales), means=means)
        return [_Z_LENGTH.pack(len(zs)) + zs + ys for zs, ys in zip(z_strings, y_strings)]

    @classmethod
    def bundled_metadata(cls, level: int | None) -> dict[str, Any]:
        return {"lmbda": LADDER_LMBDA[level], "distortion": PIXEL_MSE} if level in LADDER_LMBDA else {}

    def _objective(self, x: torch.Tensor, scales: torch.Tensor, means: torch.Tensor):
        """Each image's bits(ŷ)/pixels + λ·MSE(g_s(ŷ), x) for gained latents ŷ·g (refinement's loss)."""
        conditional, gain, pixels = self.net.gaussian_conditional, self._gain(x.dtype), x.shape[-2] * x.shape[-1]
        lmbda = self._pixel_lmbda()

        def objective(latents: torch.Tensor) -> torch.Tensor:
            likelihoods = conditional._likelihood(latents, scales, means)
            if conditional.use_likelihood_bound:
                likelihoods = conditional.likelihood_lower_bound(likelihoods)
            bits = -torch.log2(likelihoods).flatten(1).sum(1)
            return bits / pixels + lmbda * (self.net.g_s(latents / gain) - x).pow(2).flatten(1).mean(1)

        return objective

    def _pixel_lmbda(self) -> float:
        """λ of the pixel MSE the weights were trained at, else the codec's default for it."""
        metadata = getattr(self, "metadata", {})
        if metadata.get("distortion") == PIXEL_MSE and metadata.get("lmbda") is not None:
            return float(metadata["lmbda"])
        return self.default_lmbda[PIXEL_MSE]

    @torch.no_grad()
    def decompress(self, payloads: Sequence[bytes], size: tuple[int, int]) -> torch.Tensor:
        require_cdf_tables(self.net.entropy_bottleneck, self.name)
        y_shape = (size[0] // Y_STRIDE, size[1] // Y_STRIDE)
        z_shape = (-(-y_shape[0] // Z_STRIDE), -(-y_shape[1] // Z_STRIDE))
        device = next(self.parameters()).device
        z_strings, y_strings = zip(*(_split(payload) for payload in payloads))
        conditional = self.net.gaussian_conditional
        with guarded_decoding(self.net.entropy_bottleneck, conditional):  # a hostile string cannot crash us
            z_hat = self.net.entropy_bottleneck.decompress(list(z_strings), z_shape)
            scales, means = self._gaussian_parameters(z_hat, y_shape, device)
            y_hat = conditional.decompress(list(y_strings), conditional.build_indexes(scales), means=means)
        return self.net.g_s(y_hat.to(device) / self._gain(y_hat.dtype)).clamp_(0, 1)

    def min_payload_bytes(self, height: int, width: int) -> int:
        """Half the information the hyper-latents carry even when every one takes its most
        probable value (rANS output is within a few bytes of it), plus the framing."""
        require_cdf_tables(self.net.entropy_bottleneck, self.name)
        bottleneck = self.net.entropy_bottleneck
        cdf, lengths = bottleneck._quantized_cdf.double(), bottleneck._cdf_length.long()
        freqs = cdf[:, 1:] - cdf[:, :-1]
        freqs[torch.arange(freqs.shape[1]) >= (lengths - 1)[:, None]] = 0  # past each channel's table
        bits_per_position = -torch.log2(freqs.max(1).values / (1 << bottleneck.entropy_coder_precision)).sum()
        positions = -(-height // (Y_STRIDE * Z_STRIDE)) * -(-width // (Y_STRIDE * Z_STRIDE))
        return int(bits_per_position * positions / 16) + _Z_LENGTH.size + 2 * _RANS_MIN_BYTES

    def _gaussian_parameters(self, z_hat: torch.Tensor, y_shape, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gσ, gμ)`` reproducibly (see the module docstring): float64 on one CPU thread, where a
        convolution treats each image of the batch on its own, so batch composition cannot matter."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            params = self._h_s_float64()(z_hat.to("cpu", torch.float64))[..., : y_shape[0], : y_shape[1]]
        finally:
            torch.set_num_threads(threads)
        if self.quant_gain is not None:  # h_s gives σ then μ: both scaled by g
            params = params * self._gain(torch.float64).cpu().repeat(1, 2, 1, 1)
        scales, means = params.float().chunk(2, 1)
        return scales.to(device), means.to(device)

    def _gain(self, dtype: torch.dtype) -> torch.Tensor | float:
        """``g`` shaped to multiply latents ``(N, M, H, W)``; 1 for a model without quant_gain."""
        if self.quant_gain is None:
            return 1.0
        return self.quant_gain.clamp_min(MIN_GAIN).to(dtype).view(1, -1, 1, 1)

    def _h_s_float64(self) -> torch.nn.Module:
        """A float64 CPU copy of h_s, rebuilt whenever its weights change (parameter identity and
        version counters; kept in a tuple so it is not registered as a submodule)."""
        key = tuple((id(p), p._version) for p in self.net.h_s.parameters())
        cached = getattr(self, "_h_s64_cache", None)
        if cached is None or cached[0] != key:
            self._h_s64_cache = (key, copy.deepcopy(self.net.h_s).to("cpu", torch.float64))
        return self._h_s64_cache[1]



def require_cdf_tables(bottleneck: torch.nn.Module, codec_name: str) -> None:
    """Coding needs the CDF tables that ``refresh_entropy_model`` builds (and weights files carry)."""
    if bottleneck._offset.numel() == 0:
        raise RuntimeError(f"{codec_name} has no CDF tables: call refresh_entropy_model() "
                           "after training (weights saved by facezip carry them)")


def _pad_latents(y: torch.Tensor) -> torch.Tensor:
    height, width = y.shape[-2:]
    return F.pad(y, (0, -width % Z_STRIDE, 0, -height % Z_STRIDE))


def _crop_to(params: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return params[..., : y.shape[-2], : y.shape[-1]]


def _split(payload: bytes) -> tuple[bytes, bytes]:
    """The z and y strings; each is rANS output: whole 32-bit words, at least the 2 of the final state."""
    if len(payload) < _Z_LENGTH.size:
        raise ValueError(f"payload of {len(payload)} bytes is too short for a hyperprior stream")
    (z_length,) = _Z_LENGTH.unpack_from(payload)
    if _Z_LENGTH.size + z_length > len(payload):
        raise ValueError(f"payload announces a {z_length}-byte hyper-latent string but has "
                         f"{len(payload) - _Z_LENGTH.size} bytes")
    strings = payload[_Z_LENGTH.size : _Z_LENGTH.size + z_length], payload[_Z_LENGTH.size + z_length :]
    for name, string in zip(("hyper-latent", "latent"), strings):
        if len(string) < _RANS_MIN_BYTES or len(string) % _RANS_WORD:
            raise ValueError(f"the {name} string has {len(string)} bytes; rANS writes whole 4-byte words, "
                             f"at least {_RANS_MIN_BYTES}")
    return strings
