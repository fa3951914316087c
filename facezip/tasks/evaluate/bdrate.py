"""Bjøntegaard deltas (VCEG-M33): how much rate a codec saves at equal quality (BD-rate) and
how much quality it gains at equal rate (BD-PSNR, BD-accuracy, …) against an anchor codec.

Each curve is interpolated piecewise-cubically in log10(rate) with PCHIP, the variant of
Bjøntegaard's method used by JVET/AV2 common test conditions: a single cubic polynomial
through four points oscillates when a quality saturates (cosine, accuracy near 1) and gives
BD-rates of −96 % for a codec that clearly needs more bits. The fits are integrated over the
interval where both curves overlap. A test "curve" of one point (a facezip model has one
rate) degenerates to the difference at that point, read off the anchor's curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def bd_rate(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
            test_rate: Sequence[float], test_quality: Sequence[float]) -> float:
    """Average rate difference of ``test`` over ``anchor`` at equal quality, in percent
    (negative = ``test`` needs fewer bits). NaN when the quality ranges do not overlap."""
    a_log, a_q, t_log, t_q = _prepare(anchor_rate, anchor_quality, test_rate, test_quality)
    low, high = max(a_q.min(), t_q.min()), min(a_q.max(), t_q.max())
    if not _overlaps(low, high, t_q):
        return math.nan
    mean_diff = _mean_of_fit(t_q, t_log, low, high) - _mean_of_fit(a_q, a_log, low, high)
    try:
        return (10.0**mean_diff - 1.0) * 100.0
    except OverflowError:  # a wild fit (nearly flat quality curve): "infinitely more bits"
        return math.inf


def bd_quality(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
               test_rate: Sequence[float], test_quality: Sequence[float]) -> float:
    """Average quality difference of ``test`` over ``anchor`` at equal rate (e.g. BD-PSNR in dB).
    NaN when the rate ranges do not overlap."""
    a_log, a_q, t_log, t_q = _prepare(anchor_rate, anchor_quality, test_rate, test_quality)
    low, high = max(a_log.min(), t_log.min()), min(a_log.max(), t_log.max())
    if not _overlaps(low, high, t_log):
        return math.nan
    return _mean_of_fit(t_log, t_q, low, high) - _mean_of_fit(a_log, a_q, low, high)


def _prepare(anchor_rate, anchor_quality, test_rate, test_quality):
    curves = []
    for name, rate, quality in (("anchor", anchor_rate, anchor_quality), ("test", test_rate, test_quality)):
        rate, quality = np.asarray(rate, dtype=float), np.asarray(quality, dtype=float)
        keep = np.isfinite(rate) & np.isfinite(quality) & (rate > 0)
        needed = 2 if name == "anchor" else 1
        if min(len(np.unique(rate[keep])), len(np.unique(quality[keep]))) < needed:
            raise ValueError(f"Bjøntegaard delta: the {name} curve needs at least {needed} point(s) with "
                             f"distinct finite rate and quality, has {int(keep.sum())}")
        curves += [np.log10(rate[keep]), quality[keep]]
    return curves


def _overlaps(low: float, high: float, test_x: np.ndarray) -> bool:
    """A proper interval, or the single point of a one-point test curve inside the anchor's range."""
    return high > low or (len(np.unique(test_x)) == 1 and high == low)


def _mean_of_fit(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Mean of the PCHIP interpolation y(x) over [low, high] (its value when low == high).
    Points sharing an x (a saturated quality) are averaged first: PCHIP needs increasing x."""
    xs, inverse = np.unique(x, return_inverse=True)
    ys = np.bincount(inverse, weights=y) / np.bincount(inverse)
    if len(xs) == 1:
        return float(ys[0])
    curve = PchipInterpolator(xs, ys, extrapolate=False)
    if high == low:
        return float(curve(low))
    return float(curve.integrate(low, high) / (high - low))
