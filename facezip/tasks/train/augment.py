"""Augmentation of training face crops, so that a codec meets every crop style a face archive gets.

Databases crop faces differently: tight detector boxes or wide margins, slightly different
aspect ratios and scales, mirrored, under other lighting. A codec trained on one style learns
that style. Each training face is therefore drawn through a random window of its crop that keeps
the whole face box (from the box alone up to the full crop: tighter crops of a wide-margin face),
stretched by a small aspect change, resized to the training size, flipped half of the time and
given a small brightness / contrast / saturation / hue jitter. Wider margins than a crop has
cannot be made without inventing pixels: they come from the data (detect's ``margin``).
Validation faces are never augmented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

BICUBIC = v2.InterpolationMode.BICUBIC  # as the unaugmented faces are resized (PIL bicubic)


@dataclass
class AugmentConfig:
    """``train.augment``: how training face crops are varied (validation never is)."""

    enabled: bool = True
    # the window's side as a fraction of the crop's, drawn from [min_window, 1]; never cutting the face box
    min_window: float = 0.75
    aspect: float = 0.1  # the window's width/height ratio is drawn within 1 ± aspect
    flip: bool = True  # horizontal mirror, half of the faces
    colour: float = 0.1  # brightness, contrast and saturation within 1 ± colour; hue within ± colour / 5


def check_augment(cfg: AugmentConfig) -> None:
    """Usage errors naming the key, before any worker starts."""
    if not 0 < cfg.min_window <= 1:
        raise ValueError(f"train.augment.min_window must be in (0, 1], got {cfg.min_window}")
    if not 0 <= cfg.aspect < 1:
        raise ValueError(f"train.augment.aspect must be in [0, 1), got {cfg.aspect}")
    if not 0 <= cfg.colour < 1:
        raise ValueError(f"train.augment.colour must be in [0, 1), got {cfg.colour}")


class FaceAugment:
    """``(image (3,H,W) in [0,1], face box (4,) in its pixels, mask (1,H,W) or None)`` → the same
    at ``size × size``, randomly varied as ``AugmentConfig`` says."""

    def __init__(self, cfg: AugmentConfig, size: int, generator: torch.Generator | None = None) -> None:
        self.cfg, self.size = cfg, size
        self.generator = generator or torch.Generator().manual_seed(torch.initial_seed())
        colour = float(cfg.colour)
        self.jitter = v2.ColorJitter(brightness=colour, contrast=colour, saturation=colour, hue=colour / 5) \
            if colour > 0 else None

    def __call__(self, image: torch.Tensor, box: np.ndarray,
                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray, torch.Tensor | None]:
        height, width = image.shape[-2:]
        left, top, win_w, win_h = self._window(width, height, box)
        size = [self.size, self.size]
        image = TF.resized_crop(image, top, left, win_h, win_w, size, BICUBIC, antialias=True).clamp_(0, 1)
        if mask is not None:
            mask = TF.resized_crop(mask, top, left, win_h, win_w, size, antialias=True)
        scale = np.array([self.size / win_w, self.size / win_h] * 2, dtype=np.float32)
        offset = np.array([left, top, left, top], dtype=np.float32)  # float32 boxes, as roi_align wants them
        box = ((np.asarray(box, dtype=np.float32) - offset) * scale).clip(0, self.size)
        if self.cfg.flip and self._uniform() < 0.5:
            image, mask = image.flip(-1), None if mask is None else mask.flip(-1)
            box = np.array([self.size - box[2], box[1], self.size - box[0], box[3]], dtype=np.float32)
        if self.jitter is not None:
            with torch.random.fork_rng(devices=[]):  # ColorJitter draws from the global generator
                torch.manual_seed(int(torch.randint(2**31, (1,), generator=self.generator)))
                image = self.jitter(image).clamp_(0, 1)
        return image, box, mask

    def _window(self, width: int, height: int, box: np.ndarray) -> tuple[int, int, int, int]:
        """``(left, top, width, height)`` of a random window inside the crop around the whole face box."""
        x1, y1, x2, y2 = (float(v) for v in box)
        side = self.cfg.min_window + (1 - self.cfg.min_window) * self._uniform()
        stretch = math.sqrt(1 + self.cfg.aspect * (2 * self._uniform() - 1))
        win_w = int(round(min(width, max(x2 - x1, width * side * stretch))))
        win_h = int(round(min(height, max(y2 - y1, height * side / stretch))))
        left = self._position(max(0.0, x2 - win_w), min(x1, width - win_w))
        top = self._position(max(0.0, y2 - win_h), min(y1, height - win_h))
        return left, top, max(win_w, 1), max(win_h, 1)

    def _position(self, low: float, high: float) -> int:
        return int(round(low + (high - low) * self._uniform())) if high > low else int(round(low))

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))
