"""facenet-pytorch's MTCNN, batched over images of any size, and face cropping that says where
the face lies inside the crop.

MTCNN only batches equal-sized images, so a batch is grouped by size first; the weights ship
inside facenet-pytorch, so nothing is downloaded.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    landmarks: tuple[float, ...]  # 10 values: x, y of left eye, right eye, nose, left and right mouth corners
    probability: float


@dataclass(frozen=True)
class FaceCrop:
    png: bytes  # image_size × image_size RGB PNG
    crop_box: tuple[int, int, int, int]  # the region of the image that was resized, in image pixels
    face_box_in_crop: tuple[float, float, float, float]  # the face box in crop pixels


class FaceDetector:
    """MTCNN face detection; faces of each image come most probable first."""

    def __init__(self, device: torch.device | str = "cpu", min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7)) -> None:
        from facenet_pytorch import MTCNN

        self.device = torch.device(device)
        self.mtcnn = MTCNN(min_face_size=min_face_size, thresholds=list(thresholds), select_largest=False,
                           device=self.device).eval()

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces of each (H, W, 3) uint8 RGB image, one MTCNN pass per distinct image size."""
        faces: list[list[Face]] = [[] for _ in images]
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            by_size[image.shape].append(index)
        for indices in by_size.values():
            boxes, probs, points = self.mtcnn.detect(np.stack([images[i] for i in indices]), landmarks=True)
            for index, image_boxes, image_probs, image_points in zip(indices, boxes, probs, points):
                faces[index] = _faces(image_boxes, image_probs, image_points)
        return faces


def crop_face(rgb: np.ndarray, box: Sequence[float], image_size: int = 160, margin: int = 0) -> FaceCrop:
    """The face plus ``margin`` (in output pixels, as facenet-pytorch counts it), clipped to the
    image and resized to a square PNG; the box is also mapped into crop coordinates."""
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    pad_x = margin * (x2 - x1) / (image_size - margin) / 2
    pad_y = margin * (y2 - y1) / (image_size - margin) / 2
    crop_box = (int(max(x1 - pad_x, 0)), int(max(y1 - pad_y, 0)),
                int(min(x2 + pad_x, width)), int(min(y2 + pad_y, height)))
    left, top, right, bottom = crop_box
    if right <= left or bottom <= top:
        raise ValueError(f"face box {box} lies outside the {width}×{height} image")
    crop = Image.fromarray(rgb).crop(crop_box).resize((image_size, image_size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    crop.save(out, "PNG")
    scale_x, scale_y = image_size / (right - left), image_size / (bottom - top)
    in_crop = ((x1 - left) * scale_x, (y1 - top) * scale_y, (x2 - left) * scale_x, (y2 - top) * scale_y)
    return FaceCrop(out.getvalue(), crop_box, tuple(float(np.clip(v, 0, image_size)) for v in in_crop))


def _faces(boxes, probs, points) -> list[Face]:
    if boxes is None:
        return []
    faces = [Face(tuple(float(v) for v in box), tuple(float(v) for v in point.reshape(-1)), float(prob))
             for box, prob, point in zip(boxes, probs, points)]
    return sorted(faces, key=lambda face: face.probability, reverse=True)
