"""Does the decoded face still belong to the same person?

Per judge (``facezip.models.recognizer``), in its own measure (cosine or distance): similarity
of each decoded face to its original, LFW-style k-fold pair verification (the threshold of
each fold is chosen on the other folds), and 1-nearest-neighbour identity matching against the
other originals (the seed paper's protocol). Plus MTCNN re-run on decoded faces, and a cache of
embeddings per judge.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facezip.infra.storage import Storage, join
from facezip.models.face_detector import FaceDetector
from facezip.models.recognizer import Recognizer, identity_key


@dataclass
class Verification:
    accuracy: float  # mean over folds
    std: float
    pairs: int
    folds: int


def best_threshold(similarity: np.ndarray, same: np.ndarray) -> float:
    """The similarity threshold (``same`` when ``similarity >= t``) with the highest accuracy,
    placed midway between neighbouring scores so it generalises to unseen pairs."""
    scores = np.unique(similarity)
    candidates = np.concatenate([[scores[0] - 1.0], (scores[:-1] + scores[1:]) / 2, [scores[-1] + 1.0]])
    predicted = similarity[None, :] >= candidates[:, None]
    accuracy = (predicted == same[None, :]).mean(axis=1)
    return float(candidates[int(np.argmax(accuracy))])


def kfold_verification(similarity: np.ndarray, same: np.ndarray, fold: np.ndarray) -> Verification:
    """Accuracy on each fold with the threshold fitted on the others (on itself if only one fold)."""
    folds = np.unique(fold)
    if len(similarity) == 0:
        return Verification(math.nan, math.nan, 0, 0)
    accuracies = []
    for k in folds:
        test = fold == k
        train = ~test if len(folds) > 1 else test
        threshold = best_threshold(similarity[train], same[train])
        accuracies.append(float(((similarity[test] >= threshold) == same[test]).mean()))
    return Verification(float(np.mean(accuracies)), float(np.std(accuracies)), len(similarity), len(folds))


def nearest_neighbour_accuracy(scores: np.ndarray, identities: Sequence[str | None]) -> tuple[float, int]:
    """``scores[i, j]``: how alike decoded face i is to original j (higher = more alike). Face i
    is matched to the most alike original other than its own; right when that face has the same
    identity. Only faces whose identity has another face count. Returns (accuracy, faces counted)."""
    counts = Counter(i for i in identities if i is not None)
    eligible = np.array([i is not None and counts[i] > 1 for i in identities])
    if not eligible.any():
        return math.nan, 0
    similarity = np.array(scores, dtype=np.float64)
    np.fill_diagonal(similarity, -np.inf)
    labels = np.array(identities, dtype=object)
    matched = labels[np.argmax(similarity, axis=1)]
    return float(np.mean(matched[eligible] == labels[eligible])), int(eligible.sum())


class FaceChecker:
    """MTCNN with the detect stage's settings: is there still a face in the decoded image?"""

    def __init__(self, detect_cfg, device: torch.device) -> None:
        self.detector = FaceDetector(device, detect_cfg.min_face_size, list(detect_cfg.thresholds))
        self.min_probability = detect_cfg.min_probability
        self.identity = hashlib.sha256(f"mtcnn {detect_cfg.min_face_size} {list(detect_cfg.thresholds)} "
                                       f"{self.min_probability}".encode()).hexdigest()[:16]

    def found(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """One flag per image, 1.0 when a face of probability ≥ ``detect.min_probability`` is found."""
        return np.array([float(bool(faces) and faces[0].probability >= self.min_probability)
                         for faces in self.detector.detect(images)], dtype=np.float32)


class Judging:
    """One judge over one evaluation: its recognizer, embeddings cached by image content."""

    def __init__(self, judge: Recognizer, storage: Storage, cache_dir: str, batch_size: int) -> None:
        self.judge, self.batch_size = judge, batch_size
        self.cache = VectorCache(storage, join(cache_dir, f"embeddings-{judge.identity}.npz"))

    @property
    def column(self) -> str:
        """The per-face column: this judge's measure of the decoded face against its original."""
        return identity_key(self.judge.name, self.judge.measure)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.cache.lookup(images, lambda missing: self.judge.embed(missing, self.batch_size))


class VectorCache:
    """Vectors keyed by image content, stored as one ``.npz`` per judge: a re-run over new
    codecs (or the same levels) computes only what it has not seen."""

    def __init__(self, storage: Storage, uri: str) -> None:
        self.storage, self.uri = storage, uri
        self.vectors: dict[str, np.ndarray] = {}
        self.dirty = False
        if storage.exists(uri):
            with np.load(io.BytesIO(storage.read_bytes(uri))) as stored:
                self.vectors = dict(zip(stored["keys"].tolist(), stored["vectors"]))

    def lookup(self, images: Sequence[np.ndarray], compute) -> np.ndarray:
        """Rows for ``images``; ``compute(list_of_images) -> (N, D)`` fills the misses."""
        keys = [content_key(image) for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self.vectors]
        if missing:
            for i, vector in zip(missing, compute([images[i] for i in missing])):
                self.vectors[keys[i]] = np.asarray(vector, dtype=np.float32)
            self.dirty = True
        return np.stack([self.vectors[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)

    def save(self) -> None:
        if not self.dirty:
            return
        buffer = io.BytesIO()
        keys = list(self.vectors)
        np.savez(buffer, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        self.storage.write_bytes_atomic(self.uri, buffer.getvalue())
        self.dirty = False


def content_key(image: np.ndarray) -> str:
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()
