"""Face-aware bit allocation by resampling: the face gets more of a codec's pixels, the rest fewer.

A standard base codec (AVIF, JPEG) spends its bits on the pixels it is given, with no per-region
quantizer facezip can reach through Pillow. So the allocation happens before it: the image is
resampled on a grid that is ``1 + gain`` times denser across the face region than elsewhere, the
codec stores that warped image, and decoding samples it back on the inverse grid. Every face
pixel is then coded at a finer scale, and the background and hair at a coarser one — the bits a
codec spends follow the pixels, so they follow the face. It is the saliency-driven warping of
e.g. Setlur et al., "Automatic Image Retargeting" (MUM 2005), separable so that it stays a
monotone, exactly invertible map per axis.

The importance map is the **centre ellipse** of ``facezip.models.face_mask`` (half-axes 0.3 W,
0.4 H): detect's crops, FaceNet-style margin crops and aligned datasets all centre the face, and
encoder and decoder derive it from the image size alone, so nothing travels in the file. Along
each axis the sampling density is ``1 + gain · s(t)``, ``s`` a logistic step (width ``EDGE``)
that is 1 inside the ellipse's extent and 0 outside; the warp is its normalised integral.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from facezip.models.face_mask import CENTRE_HALF_AXES

EDGE = 0.04  # the density's logistic step width, a fraction of the side: no seam at the region's border
_SAMPLES = 4097  # the integral's resolution along an axis


def _warp(half_extent: float, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """``(t, u)``: image position ``t`` ∈ [0, 1] → warped position ``u`` (monotone, u(0)=0, u(1)=1)."""
    t = np.linspace(0.0, 1.0, _SAMPLES)
    density = 1.0 + gain / (1.0 + np.exp(-(half_extent - np.abs(t - 0.5)) / EDGE))
    u = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    return t, u / u[-1]


def _axis(size: int, half_extent: float, gain: float, inverse: bool) -> np.ndarray:
    """grid_sample coordinates (align_corners=False) of the ``size`` pixel centres of one axis: where
    each warped pixel lies in the image (``inverse`` False) or each image pixel in the warped one."""
    t, u = _warp(half_extent, gain)
    centres = (np.arange(size) + 0.5) / size
    return 2.0 * (np.interp(centres, t, u) if inverse else np.interp(centres, u, t)) - 1.0


@lru_cache(maxsize=32)
def sampling_grid(height: int, width: int, gain: float, inverse: bool) -> torch.Tensor:
    """``(1, height, width, 2)`` float32 grid: the warp (image → warped image) or its inverse."""
    half_w, half_h = CENTRE_HALF_AXES
    xs = _axis(width, half_w, gain, inverse)
    ys = _axis(height, half_h, gain, inverse)
    grid = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None]), axis=-1)
    return torch.from_numpy(grid.astype(np.float32))[None]


def resample(images: torch.Tensor, size: tuple[int, int], gain: float, inverse: bool,
             mode: str = "bilinear") -> torch.Tensor:
    """``images`` resampled to ``size`` on the face-dense grid (``inverse``: back to the image's own),
    channels-last like the batches ``coding.to_tensor`` makes: the convolutions that follow run
    batches of 16 faces about twice as fast per face in that layout (grid_sample returns NCHW)."""
    grid = sampling_grid(*size, float(gain), inverse).to(images.device, images.dtype)
    resampled = F.grid_sample(images, grid.expand(len(images), -1, -1, -1), mode=mode, padding_mode="border",
                              align_corners=False)
    return resampled.contiguous(memory_format=torch.channels_last)
