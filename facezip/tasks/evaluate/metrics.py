"""Per-image rate and quality metrics, and their mean / max / min over a level.

Rates: bits per pixel and compression ratios against the raw RGB size (24 bpp) and against
the source file. Quality on 8-bit RGB: PSNR, SSIM and MS-SSIM (``pytorch-msssim``,
Gaussian window), and the seed paper's L1 and L2, both on pixel values scaled to [0, 1].

Face region (``facezip.models.face_mask``): PSNR and L1 over the pixels inside the face mask,
MS-SSIM and SSIM on the mask's bounding box (the structural measures need a rectangle). A box
under 33 px on its shorter side is too small for 5-scale MS-SSIM: ``face_ms_ssim`` is then not
measured and ``face_ssim`` is the face's structural measure.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim, ssim

from facezip.models.losses import ms_ssim_window as training_ms_ssim_window

QUALITY_METRICS = ("psnr", "ms_ssim", "ssim", "l1", "l2")
FACE_METRICS = ("face_psnr", "face_ms_ssim", "face_ssim", "face_l1")


def rate_metrics(n_bytes: int, height: int, width: int, source_bytes: int) -> dict[str, float]:
    raw_bytes = 3 * height * width
    return {"bytes": n_bytes, "bpp": 8.0 * n_bytes / (height * width),
            "ratio_raw": raw_bytes / n_bytes, "ratio_source": source_bytes / n_bytes if source_bytes else math.nan}


def quality_metrics(original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """Both (H, W, 3) uint8 of the same size."""
    if original.shape != decoded.shape:
        raise ValueError(f"decoded image is {decoded.shape}, the original {original.shape}")
    diff = original.astype(np.float64) - decoded.astype(np.float64)
    mse = float(np.mean(diff**2))
    x, y = _tensor(original), _tensor(decoded)
    return {"psnr": psnr_from_mse(mse), "ms_ssim": _ms_ssim(x, y), "ssim": _ssim(x, y),
            "l1": float(np.mean(np.abs(diff))) / 255.0, "l2": mse / 255.0**2}


def face_metrics(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The face-region metrics (module docstring); ``mask`` (H, W) bool, not empty."""
    if original.shape != decoded.shape or mask.shape != original.shape[:2]:
        raise ValueError(f"decoded {decoded.shape}, original {original.shape} and mask {mask.shape} differ")
    diff = original[mask].astype(np.float64) - decoded[mask].astype(np.float64)
    rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
    x, y = _tensor(original[box]), _tensor(decoded[box])
    return {"face_psnr": psnr_from_mse(float(np.mean(diff**2))), "face_ms_ssim": _ms_ssim(x, y),
            "face_ssim": _ssim(x, y), "face_l1": float(np.mean(np.abs(diff))) / 255.0}


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def ms_ssim_window(smaller_side: int) -> int | None:
    """Training's window choice (``models.losses.ms_ssim_window``: 160-px faces get 9), or None
    for images too small for MS-SSIM (below 33 px), which are then not measured."""
    try:
        return training_ms_ssim_window(smaller_side)
    except ValueError:
        return None


def _ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    window = ms_ssim_window(min(x.shape[-2:]))
    return math.nan if window is None else float(ms_ssim(x, y, data_range=255, win_size=window))


def _ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    window = min(11, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))  # odd, no larger than the image
    return math.nan if window < 3 else float(ssim(x, y, data_range=255, win_size=window))


def summarize(values: list[float]) -> dict[str, float]:
    """Mean / max / min over the finite-or-infinite values (NaN = not measurable, left out)."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return {"mean": math.nan, "max": math.nan, "min": math.nan}
    return {"mean": float(np.mean(kept)), "max": float(max(kept)), "min": float(min(kept))}
