"""The face mask (landmarks → ellipse, fallbacks) and the face-region metrics built on it."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facezip.infra.storage import Storage
from facezip.models.face_mask import EMPTY, NO_LANDMARKS, centre_ellipse, face_mask, landmarks_in_crop
from facezip.models.metrics import measure
from facezip.pipelines.config import load_config
from facezip.tasks.evaluate.data import load_faces

# a 160 px MTCNN crop's landmarks: eyes, nose, mouth corners (x, y)
LANDMARKS = np.array([[55, 70], [105, 70], [80, 95], [60, 120], [100, 120]], dtype=float)


def _inside(mask: np.ndarray, points: np.ndarray) -> list[bool]:
    return [bool(mask[int(round(y)), int(round(x))]) for x, y in points]


def test_landmark_ellipse_covers_eyes_nose_and_mouth_but_not_the_corners():
    result = face_mask(160, 160, LANDMARKS.ravel())
    assert result.fallback is None
    assert all(_inside(result.mask, LANDMARKS))
    assert not any(_inside(result.mask, np.array([[0, 0], [159, 0], [0, 159], [159, 159]])))
    assert 0.2 < result.mask.mean() < 0.8


def test_the_ellipse_turns_with_a_tilted_face():
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = (LANDMARKS - 80) @ rotation.T + 80
    mask = face_mask(160, 160, tilted).mask
    assert all(_inside(mask, tilted))
    assert not np.array_equal(mask, face_mask(160, 160, LANDMARKS).mask)


def test_no_landmarks_fall_back_to_the_centre_ellipse():
    result = face_mask(120, 100, None)
    assert result.fallback == NO_LANDMARKS
    assert np.array_equal(result.mask, centre_ellipse(120, 100))
    assert result.mask[60, 50] and not result.mask[0, 0]


@pytest.mark.parametrize("landmarks", [np.full(10, 80.0),  # all five points on one pixel
                                       LANDMARKS + 1000,  # a face off the image
                                       np.full(10, np.nan)])
def test_a_mask_that_would_be_empty_falls_back_and_says_so(landmarks):
    result = face_mask(160, 160, landmarks)
    assert result.fallback == EMPTY
    assert np.array_equal(result.mask, centre_ellipse(160, 160))


def test_landmarks_map_into_the_resized_crop():
    # a 100×50 region at (20, 10) of the original, resized to 200×100: ×2 in both axes
    points = landmarks_in_crop([30, 20] * 5, (20, 10, 120, 60), crop_height=100, crop_width=200)
    assert np.allclose(points, [[20, 20]] * 5)


def _face_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    return original, face_mask(160, 160, LANDMARKS).mask


def test_identical_images_have_perfect_face_metrics():
    original, mask = _face_pair()
    metrics = measure(original, original.copy(), mask)
    assert metrics["face_psnr"] == math.inf and metrics["face_l1"] == 0.0
    assert metrics["face_ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["face_ssim"] == pytest.approx(1.0, abs=1e-6)


def test_damage_outside_the_mask_leaves_the_face_untouched():
    original, mask = _face_pair()
    damaged = original.copy()
    damaged[~mask] = 255 - damaged[~mask]
    metrics = measure(original, damaged, mask)
    assert metrics["face_psnr"] == math.inf and metrics["face_l1"] == 0.0


def test_damage_inside_the_mask_is_measured_over_its_pixels_alone():
    original, mask = _face_pair()
    damaged = original.astype(int)
    damaged[mask] = np.clip(damaged[mask] + np.where(damaged[mask] < 128, 4, -4), 0, 255)  # exactly ±4
    metrics = measure(original, damaged.astype(np.uint8), mask)
    assert metrics["face_psnr"] == pytest.approx(10 * math.log10(255**2 / 16))
    assert metrics["face_l1"] == pytest.approx(4 / 255)


def test_a_face_box_too_small_for_ms_ssim_is_measured_by_ssim():
    original = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    metrics = measure(original, original.copy(), centre_ellipse(24, 24))
    assert math.isnan(metrics["face_ms_ssim"]) and metrics["face_ssim"] == pytest.approx(1.0, abs=1e-6)


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


def test_detect_landmarks_reach_the_evaluated_face(tmp_path):
    """A detect-style table: landmarks in original pixels, a 200×200 region resized to a 160 px crop;
    one row without landmarks gets the fallback and is counted in the notes."""
    crop = np.random.default_rng(2).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    original_points = LANDMARKS / 0.8 + [40, 30]  # crop_box (40, 30, 240, 230): 200 px → 160 px
    (tmp_path / "faces").mkdir()
    pq.write_table(pa.table({
        "id": ["a", "b"], "source_uri": ["a.jpg", "b.jpg"], "image_bytes": [_png(crop)] * 2,
        "landmarks": pa.array([original_points.ravel().tolist(), None], pa.list_(pa.float32())),
        "crop_box": pa.array([[40, 30, 240, 230], None], pa.list_(pa.int32()))}), tmp_path / "faces" / "0.parquet")
    ecfg = load_config([], ["evaluate.center_crop=120"]).evaluate
    faceset = load_faces(str(tmp_path), Storage(), ecfg)
    with_landmarks, without = faceset.faces
    assert with_landmarks.mask.fallback is None and without.mask.fallback == NO_LANDMARKS
    expected = face_mask(160, 160, LANDMARKS).mask[20:140, 20:140]  # the same mask, centre-cropped
    assert np.mean(with_landmarks.mask.mask != expected) < 0.002  # float32 landmarks: a boundary pixel may flip
    assert any("1 faces used the centre-ellipse fallback" in note and "1 no landmarks" in note
               for note in faceset.notes)
