"""Encode-time refinement of latents by stochastic Gumbel annealing (SGA): ``--effort N``.

Yang, Bamler & Mandt (2020), "Improving Inference for Neural Image Compression" (NeurIPS):
the encoder's latents are only a first guess, amortised over a training set. Gradient steps on
one image's own rate + λ·distortion, through a stochastic rounding that anneals into hard
rounding, find latents that code to fewer bits or decode closer to the image (or both). Each
latent ``u`` (relative to its quantization centre) is rounded down or up at random, with
probabilities ∝ ``exp(−atanh(distance)/τ)``, relaxed by Gumbel-softmax at temperature τ; τ falls
from ``TAU_START`` to ``TAU_END`` over the steps, so the last steps see nearly the hard rounding
that is coded. The decoder, the entropy model and the payload stay exactly as they are.

Deterministic for an image, a step count and weights: each image's Gumbel noise comes from a
generator seeded by its pixels (not by its place in a batch), and cuDNN picks deterministic
algorithms. An image keeps its encoder's latents when the refined ones, hard-rounded, score
worse on the objective (a few large steps can overshoot).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

TAU_START, TAU_END = 0.5, 0.05  # SGA's temperature at the first and the last step (Yang et al. start at 0.5)
LEARNING_RATE = 0.03  # Adam on latents whose quantization step is 1 (see benchmarks/effort.py)
_EPS = 1e-5  # keeps atanh finite at distance 0 and 1

Objective = Callable[[torch.Tensor], torch.Tensor]  # latents (N, …) → each image's R + λ·D (N,)


def image_seeds(x: torch.Tensor) -> list[int]:
    """A noise seed per image of the batch ``x``, from its pixels."""
    return [int.from_bytes(hashlib.sha256(image.cpu().numpy().tobytes()).digest()[:8], "little") for image in x]


def refine_latents(latents: torch.Tensor, centers: torch.Tensor, objective: Objective, steps: int,
                   seeds: list[int]) -> torch.Tensor:
    """``latents`` after ``steps`` of SGA on ``objective``; ``centers`` are their quantization
    centres (coded: ``centers + round(latents − centers)``). Per image, the better of the two by
    the objective of the hard-rounded latents."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    with torch.enable_grad(), _deterministic_cudnn():
        refined = latents.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([refined], lr=LEARNING_RATE)
        for step in range(steps):
            noise = torch.stack([torch.rand((2, *latents.shape[1:]), generator=g) for g in generators], 1)
            soft = centers + sga_round(refined - centers, temperature(step, steps), noise.to(latents.device))
            # the gradient of the latents alone: weights that still train get none
            (refined.grad,) = torch.autograd.grad(objective(soft).sum(), [refined])
            optimizer.step()
    with torch.no_grad():
        before, after = (objective(centers + torch.round(u - centers)) for u in (latents, refined.detach()))
    better = (after < before).view(-1, *[1] * (latents.dim() - 1))
    return torch.where(better, refined.detach(), latents)


@contextmanager
def _deterministic_cudnn() -> Iterator[None]:
    """cuDNN's deterministic algorithms, its other settings as they are (on a CPU: no effect)."""
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved


def temperature(step: int, steps: int) -> float:
    """τ at ``step`` of ``steps``: geometric from ``TAU_START`` to ``TAU_END``."""
    return TAU_START * (TAU_END / TAU_START) ** (step / max(1, steps - 1))


def sga_round(u: torch.Tensor, tau: float, uniform: torch.Tensor) -> torch.Tensor:
    """A relaxed stochastic rounding of ``u`` (Yang et al., eq. 7): between ⌊u⌋ and ⌊u⌋ + 1, with
    ``uniform`` ``(2, *u.shape)`` in [0, 1) as the Gumbel noise of the two choices."""
    down = torch.floor(u)
    distance = (u - down).clamp(_EPS, 1 - _EPS)
    logits = torch.stack([-torch.atanh(distance), -torch.atanh(1 - distance)]) / tau
    gumbel = -torch.log(-torch.log(uniform.clamp(_EPS, 1 - _EPS)))
    weights = torch.softmax((logits + gumbel) / tau, 0)
    return down + weights[1]
