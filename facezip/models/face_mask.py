"""The face region of an image: the one mask behind evaluate's face-region metrics and the
masked-cvae's masked reconstruction loss.

From MTCNN's 5 landmarks (left eye, right eye, nose, left and right mouth corner) an ellipse is
fitted to the face: centred on the line from the eyes' midpoint to the mouth corners' midpoint,
``CENTRE_BELOW_EYES`` of the way down it; its axes along the eye line and across it; half-width
``HALF_WIDTH`` × the eye distance (cheek to cheek), half-height ``HALF_HEIGHT`` × the eyes-to-mouth
distance (eyebrows to chin). It is grown, keeping its shape, until every landmark lies inside with
a ``LANDMARK_MARGIN`` margin, and clipped to the image.

Without landmarks (images from a plain folder) the mask is the **centre ellipse**: centred, with
half-axes ``CENTRE_HALF_AXES`` of the width and height (a face centred in its crop, as detect and
LFW's alignment leave it). Landmarks that give an ellipse of fewer than ``MIN_FACE_PIXELS`` pixels
inside the image (degenerate points, a face off the image) fall back to it too; ``FaceMask.fallback``
says which happened, so callers can count them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HALF_WIDTH = 1.0  # × distance between the eyes
HALF_HEIGHT = 1.4  # × distance from the eyes' midpoint to the mouth's
CENTRE_BELOW_EYES = 0.6  # × the same distance, from the eyes towards the mouth
LANDMARK_MARGIN = 0.1  # every landmark at most 1 / 1.1 of the way to the ellipse's edge
CENTRE_HALF_AXES = (0.3, 0.4)  # the fallback ellipse's half-width and half-height, fractions of W and H
MIN_FACE_PIXELS = 64
NO_LANDMARKS = "no landmarks"
EMPTY = "empty landmark mask"


@dataclass(frozen=True)
class FaceMask:
    mask: np.ndarray  # (H, W) bool, True on the face
    fallback: str | None = None  # None: fitted to the landmarks; else why the centre ellipse was used


def face_mask(height: int, width: int, landmarks: Sequence[float] | np.ndarray | None = None) -> FaceMask:
    """The face mask of an ``height`` × ``width`` image; ``landmarks``: 10 values x, y (or (5, 2)) in
    its pixels, or None."""
    if landmarks is None:
        return FaceMask(centre_ellipse(height, width), NO_LANDMARKS)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    ellipse = _landmark_ellipse(points)
    mask = _ellipse_mask(height, width, *ellipse) if ellipse else None
    if mask is None or mask.sum() < MIN_FACE_PIXELS:
        return FaceMask(centre_ellipse(height, width), EMPTY)
    return FaceMask(mask)


def centre_ellipse(height: int, width: int) -> np.ndarray:
    half_w, half_h = CENTRE_HALF_AXES
    return _ellipse_mask(height, width, np.array([(width - 1) / 2, (height - 1) / 2]), np.array([1.0, 0.0]),
                         max(half_w * width, 0.5), max(half_h * height, 0.5))


def landmarks_in_crop(landmarks: Sequence[float], crop_box: Sequence[int], crop_height: int,
                      crop_width: int) -> np.ndarray:
    """detect's landmarks (original image pixels) → pixels of the crop cut from ``crop_box`` =
    (left, top, right, bottom) and resized to ``crop_width`` × ``crop_height``; (5, 2)."""
    left, top, right, bottom = (float(v) for v in crop_box)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    return (points - [left, top]) * [crop_width / (right - left), crop_height / (bottom - top)]


def _landmark_ellipse(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(centre, unit axis along the eyes, half-width, half-height), or None for degenerate points."""
    if not np.isfinite(points).all():
        return None
    eyes, mouth = points[:2].mean(0), points[3:].mean(0)
    across = points[1] - points[0]
    eye_distance = float(np.hypot(*across))
    if eye_distance < 1.0:
        return None
    along = across / eye_distance
    down = np.array([-along[1], along[0]])  # the eye line turned 90°: towards the mouth in image coordinates
    mouth_distance = float((mouth - eyes) @ down)
    if mouth_distance < 1.0:
        return None
    centre = eyes + CENTRE_BELOW_EYES * mouth_distance * down
    half_w, half_h = HALF_WIDTH * eye_distance, HALF_HEIGHT * mouth_distance
    offsets = points - centre
    reach = np.sqrt(((offsets @ along) / half_w) ** 2 + ((offsets @ down) / half_h) ** 2).max()
    grow = max(1.0, reach * (1 + LANDMARK_MARGIN))
    return centre, along, half_w * grow, half_h * grow


def _ellipse_mask(height: int, width: int, centre: np.ndarray, along: np.ndarray, half_w: float,
                  half_h: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = xs - centre[0], ys - centre[1]
    u = dx * along[0] + dy * along[1]
    v = -dx * along[1] + dy * along[0]
    return (u / half_w) ** 2 + (v / half_h) ** 2 <= 1.0
