"""Image-quality metrics, each registered once with what its readers need to know.

A metric is a function of an ``ImagePair`` (original and decoded 8-bit RGB, and the face mask)
registered with ``@register_metric``: its column name, title, direction, display digits and
whether Bjøntegaard deltas apply. evaluate's rows, summaries, tables, plots and BD-rate columns
iterate ``metrics()``, so a new metric is one registered function.

Whole image: PSNR, SSIM and MS-SSIM (``pytorch-msssim``, Gaussian window), and the seed paper's
L1 and L2 on pixel values scaled to [0, 1]. Face region (``facezip.models.face_mask``): PSNR and
L1 over the pixels inside the mask, MS-SSIM and SSIM on the mask's bounding box (the structural
measures need a rectangle). A box under 33 px on its shorter side is too small for 5-scale
MS-SSIM: ``face_ms_ssim`` is then not measured (NaN) and ``face_ssim`` is the face's structural
measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from pytorch_msssim import ms_ssim, ssim

from facezip.infra.registry import Registry
from facezip.models.losses import ms_ssim_window as training_ms_ssim_window


@dataclass(frozen=True)
class Metric:
    name: str  # the row column; level summaries add _mean, _max and _min
    title: str  # table headers and plot axes, e.g. "PSNR (dB)"
    measure: Callable[["ImagePair"], float]  # NaN: not measurable on this image
    higher_is_better: bool = True
    digits: int = 4  # decimals shown in tables
    bd: bool = False  # a quality whose rate curve Bjøntegaard deltas integrate (evaluate.bd_metrics)
    headline: bool = False  # plotted against rate and printed by `facezip evaluate`
    face: bool = False  # measured in the face mask; ``face_X`` sits beside ``X`` in the report


_METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str, title: str, **declared) -> Callable[[Callable], Callable]:
    """Function decorator: register ``measure(pair) -> float`` as the metric ``name`` (``Metric``'s fields)."""

    def decorator(measure: Callable[["ImagePair"], float]) -> Callable[["ImagePair"], float]:
        _METRICS.register(name, Metric(name, title, measure, **declared))
        return measure

    return decorator


def metrics() -> list[Metric]:
    """Every registered metric, in registration order (the order of columns and tables)."""
    return list(_METRICS.values())


def get_metric(name: str) -> Metric:
    return _METRICS[name]


class ImagePair:
    """An original and its decoded image, both (H, W, 3) uint8, and the face mask (H, W) bool
    (None: the whole image); what several metrics share (differences, tensors, the face box) is computed once."""

    def __init__(self, original: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None = None) -> None:
        mask = np.ones(original.shape[:2], dtype=bool) if mask is None else mask
        if original.shape != decoded.shape or mask.shape != original.shape[:2]:
            raise ValueError(f"decoded {decoded.shape}, original {original.shape} and mask {mask.shape} differ")
        if not mask.any():
            raise ValueError("the face mask is empty")
        self.original, self.decoded, self.mask = original, decoded, mask

    @cached_property
    def diff(self) -> np.ndarray:
        return self.original.astype(np.float64) - self.decoded.astype(np.float64)

    @cached_property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _tensor(self.original), _tensor(self.decoded)

    @cached_property
    def face_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask's bounding box of both images."""
        rows, columns = np.flatnonzero(self.mask.any(1)), np.flatnonzero(self.mask.any(0))
        box = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
        return _tensor(self.original[box]), _tensor(self.decoded[box])


def measure(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Every registered metric of one decoded image."""
    pair = ImagePair(original, decoded, mask)
    return {metric.name: float(metric.measure(pair)) for metric in _METRICS.values()}


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error on pixels in [0, peak]; infinite when identical."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def psnr(reference: np.ndarray, restored: np.ndarray) -> float:
    """PSNR in dB of two 8-bit images."""
    return psnr_from_mse(float(np.mean((reference.astype(np.float64) - restored.astype(np.float64)) ** 2)))


def batch_psnr(x_hat: torch.Tensor, x: torch.Tensor) -> list[float]:
    """Per-image PSNR in dB of ``(N, C, H, W)`` tensors in [0, 1]."""
    mse = (x_hat.detach().double() - x.detach().double()).pow(2).flatten(1).mean(1)
    return [psnr_from_mse(value, peak=1.0) for value in mse.tolist()]


def ms_ssim_window(smaller_side: int) -> int | None:
    """Training's window choice (``models.losses.ms_ssim_window``: 160-px faces get 9), or None
    for images too small for MS-SSIM (below 33 px), which are then not measured."""
    try:
        return training_ms_ssim_window(smaller_side)
    except ValueError:
        return None


@register_metric("psnr", "PSNR (dB)", digits=2, bd=True, headline=True)
def _psnr(pair: ImagePair) -> float:
    return psnr_from_mse(float(np.mean(pair.diff**2)))


@register_metric("ms_ssim", "MS-SSIM", bd=True, headline=True)
def _ms_ssim(pair: ImagePair) -> float:
    return _ms_ssim_of(*pair.tensors)


@register_metric("ssim", "SSIM", bd=True)
def _ssim(pair: ImagePair) -> float:
    return _ssim_of(*pair.tensors)


@register_metric("l1", "L1", higher_is_better=False)
def _l1(pair: ImagePair) -> float:
    return float(np.mean(np.abs(pair.diff))) / 255.0


@register_metric("l2", "L2", higher_is_better=False, digits=5)
def _l2(pair: ImagePair) -> float:
    return float(np.mean(pair.diff**2)) / 255.0**2


@register_metric("face_psnr", "Face PSNR (dB)", digits=2, bd=True, headline=True, face=True)
def _face_psnr(pair: ImagePair) -> float:
    return psnr_from_mse(float(np.mean(pair.diff[pair.mask] ** 2)))


@register_metric("face_ms_ssim", "Face MS-SSIM", bd=True, headline=True, face=True)
def _face_ms_ssim(pair: ImagePair) -> float:
    return _ms_ssim_of(*pair.face_tensors)


@register_metric("face_ssim", "Face SSIM", face=True)
def _face_ssim(pair: ImagePair) -> float:
    return _ssim_of(*pair.face_tensors)


@register_metric("face_l1", "Face L1", higher_is_better=False, face=True)
def _face_l1(pair: ImagePair) -> float:
    return float(np.mean(np.abs(pair.diff[pair.mask]))) / 255.0


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()


def _ms_ssim_of(x: torch.Tensor, y: torch.Tensor) -> float:
    window = ms_ssim_window(min(x.shape[-2:]))
    return math.nan if window is None else float(ms_ssim(x, y, data_range=255, win_size=window))


def _ssim_of(x: torch.Tensor, y: torch.Tensor) -> float:
    window = min(11, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))  # odd, no larger than the image
    return math.nan if window < 3 else float(ssim(x, y, data_range=255, win_size=window))
