"""evaluate: metrics, Bjøntegaard deltas and identity protocols against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facezip.models.metrics import measure, ms_ssim_window
from facezip.tasks.evaluate.baselines import get_baseline
from facezip.tasks.evaluate.bdrate import bd_quality, bd_rate
from facezip.tasks.evaluate.codecs import baseline_level
from facezip.tasks.evaluate.identity import kfold_verification, nearest_neighbour_accuracy
from facezip.tasks.evaluate.metrics import rate_metrics, summarize


def _checkerboard_noise(size: int, amplitude: int) -> tuple[np.ndarray, np.ndarray]:
    original = np.full((size, size, 3), 128, dtype=np.uint8)
    signs = np.where((np.add.outer(np.arange(size), np.arange(size)) % 2) == 0, 1, -1)[..., None]
    return original, (original.astype(int) + amplitude * signs).astype(np.uint8)


def test_psnr_l1_l2_of_a_known_noise():
    original, noisy = _checkerboard_noise(64, 5)  # every pixel off by exactly 5: MSE = 25
    metrics = measure(original, noisy)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(255**2 / 25))  # 34.151 dB
    assert metrics["psnr"] == pytest.approx(34.1514, abs=1e-4)
    assert metrics["l1"] == pytest.approx(5 / 255)
    assert metrics["l2"] == pytest.approx(25 / 255**2)
    assert metrics["ssim"] < 1.0 and metrics["ms_ssim"] < 1.0


def test_identical_images_have_ms_ssim_and_ssim_one(astronaut):
    for face in (astronaut[:64, :64], astronaut[100:260, 150:310]):  # windows 3 and 9
        metrics = measure(face, face.copy())
        assert metrics["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
        assert metrics["ssim"] == pytest.approx(1.0, abs=1e-6)
        assert metrics["psnr"] == math.inf and metrics["l1"] == 0.0


def test_ms_ssim_window_fits_the_image_or_is_not_measured():
    assert ms_ssim_window(161) == 11 and ms_ssim_window(160) == 9 and ms_ssim_window(64) == 3
    assert ms_ssim_window(32) is None
    tiny = np.zeros((24, 24, 3), np.uint8)
    assert math.isnan(measure(tiny, tiny)["ms_ssim"])


def test_rates_name_both_ratios():
    rates = rate_metrics(n_bytes=600, height=40, width=40, source_bytes=1200)
    assert rates["bpp"] == pytest.approx(3.0) and rates["ratio_raw"] == pytest.approx(8.0)
    assert rates["ratio_source"] == pytest.approx(2.0)


def test_summaries_skip_unmeasurable_values():
    assert summarize([1.0, math.nan, 3.0]) == {"mean": 2.0, "max": 3.0, "min": 1.0}
    assert math.isnan(summarize([math.nan])["mean"])


def test_bd_rate_known_answer_when_the_test_codec_needs_80_percent_of_the_bits():
    rate = np.array([0.25, 0.5, 1.0, 2.0])
    psnr = 30 + 20 * np.log10(rate)  # a line in log-rate: every polynomial fit is exact
    assert bd_rate(rate, psnr, 0.8 * rate, psnr) == pytest.approx(-20.0, abs=1e-9)
    assert bd_quality(rate, psnr, 0.8 * rate, psnr) == pytest.approx(20 * math.log10(1.25), abs=1e-9)
    assert bd_rate(rate, psnr, 2 * rate, psnr) == pytest.approx(100.0, abs=1e-9)


def test_bd_quality_known_answer_on_curved_curves():
    rate = np.array([0.1, 0.3, 0.9, 2.7, 8.1])
    log_rate = np.log10(rate)
    quality = 0.9 + 0.05 * log_rate - 0.02 * log_rate**2 + 0.01 * log_rate**3
    assert bd_quality(rate, quality, rate, quality + 0.5) == pytest.approx(0.5, abs=1e-9)
    assert bd_rate(rate, quality, rate, quality) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_does_not_oscillate_when_quality_saturates():
    # LFW-dev numbers: JPEG q10…q90 cosine climbs to 0.999; a polynomial through these four points
    # swings so far that a codec needing more bits got −96 %. Read off the curve it is ≈ +160 %.
    jpeg_bpp, jpeg_cosine = [0.505, 0.775, 0.977, 2.095], [0.8553, 0.9762, 0.9882, 0.9987]
    assert 100 < bd_rate(jpeg_bpp, jpeg_cosine, [1.392], [0.8939]) < 250
    with pytest.raises(ValueError, match="distinct"):  # accuracy saturated at 1.0: no curve to read
        bd_rate(jpeg_bpp, [1.0] * 4, [1.392], [1.0])


def test_bd_of_a_single_point_reads_the_anchor_fit_and_refuses_to_extrapolate():
    rate = np.array([0.25, 0.5, 1.0, 2.0])
    psnr = 30 + 20 * np.log10(rate)
    assert bd_rate(rate, psnr, [0.4], [30 + 20 * math.log10(0.5)]) == pytest.approx(-20.0, abs=1e-9)
    assert bd_quality(rate, psnr, [1.0], [31.0]) == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(bd_rate(rate, psnr, [0.4], [80.0]))  # far above the anchor's best quality
    with pytest.raises(ValueError, match="anchor curve needs at least 2"):
        bd_rate([1.0], [30.0], rate, psnr)


def _pairs_with_cosines(similarities: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """2-D unit vectors a, b whose cosine is each given similarity."""
    angles = np.arccos(np.asarray(similarities))
    a = np.tile([1.0, 0.0], (len(similarities), 1))
    return a, np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_kfold_verification_on_a_toy_embedding_with_known_accuracy():
    # 10 folds × (10 same, 10 different). Same pairs: cosine 0.6…0.9; different pairs 0.0…0.4,
    # except one per fold at 0.99. A threshold fitted on the other folds separates all but that
    # impostor: every fold scores 19/20.
    sims, same, fold = [], [], []
    for k in range(10):
        sims += list(np.linspace(0.6, 0.9, 10)) + list(np.linspace(0.0, 0.4, 9)) + [0.99]
        same += [True] * 10 + [False] * 10
        fold += [k] * 20
    a, b = _pairs_with_cosines(sims)
    result = kfold_verification(np.sum(a * b, axis=1), np.array(same), np.array(fold))
    assert result.accuracy == pytest.approx(0.95)
    assert result.std == pytest.approx(0.0, abs=1e-12)
    assert (result.pairs, result.folds) == (200, 10)


def test_kfold_verification_threshold_comes_from_the_other_folds():
    # Fold 0 alone would be perfect at 0.5, but fold 1 says "same" starts at 0.85: fold 0 then
    # gets its 0.8 same-pair wrong (3/4) and fold 1, judged by fold 0's threshold, 3/4 as well.
    sims = np.array([0.9, 0.8, 0.2, 0.3, 0.95, 0.9, 0.1, 0.8])
    same = np.array([True, True, False, False, True, True, False, False])
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = kfold_verification(sims, same, fold)
    assert result.accuracy == pytest.approx(0.75)


def test_nearest_neighbour_identity_matching_excludes_the_own_original():
    gallery = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], dtype=float)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes = gallery.copy()
    probes[3] = [0.95, 0.05]  # B's second face decoded into something that looks like A
    accuracy, counted = nearest_neighbour_accuracy(probes @ gallery.T, ["A", "A", "B", "B", "C"])
    assert counted == 4  # C has no other face to match
    assert accuracy == pytest.approx(0.75)


def test_jpeg_baseline_is_monotone_in_quality(astronaut):
    face = astronaut[40:200, 140:300]
    sizes, psnrs = [], []
    for quality in (10, 30, 50, 70, 90):
        (coded,) = baseline_level(get_baseline("jpeg"), quality).roundtrip([face])
        sizes.append(coded.n_bytes)
        psnrs.append(measure(face, coded.decoded)["psnr"])
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    assert psnrs == sorted(psnrs) and psnrs[0] > 20


@pytest.mark.parametrize("name", ["webp", "avif"])
def test_other_pillow_baselines_shrink_with_lower_quality(astronaut, name):
    face = astronaut[40:200, 140:300]
    low, high = (baseline_level(get_baseline(name), q).roundtrip([face])[0] for q in (10, 90))
    assert low.n_bytes < high.n_bytes
    low_psnr, high_psnr = (measure(face, coded.decoded)["psnr"] for coded in (low, high))
    assert 25 < low_psnr < high_psnr  # measured q10 / q90: webp 28.8 / 38.3 dB, avif 26.5 / 39.8 (mid-grey: 10.8)
