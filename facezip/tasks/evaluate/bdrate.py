"""Bjøntegaard deltas (VCEG-M33): how much rate a codec saves at equal quality (BD-rate) and
how much quality it gains at equal rate (BD-PSNR, BD-accuracy, …) against an anchor codec.

Each curve is fitted with a polynomial (cubic, as in the original, when there are four or
more points; lower degrees for shorter curves) in log10(rate), and the fits are integrated
over the interval where both curves overlap. A test "curve" of one point (a facezip model
has one rate) degenerates to the difference at that point, read off the anchor's fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.polynomial import polynomial as P


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
        if keep.sum() < needed:
            raise ValueError(f"Bjøntegaard delta: the {name} curve needs at least {needed} point(s) with "
                             f"finite rate and quality, has {int(keep.sum())}")
        curves += [np.log10(rate[keep]), quality[keep]]
    return curves


def _overlaps(low: float, high: float, test_x: np.ndarray) -> bool:
    """A proper interval, or the single point of a one-point test curve inside the anchor's range."""
    return high > low or (len(np.unique(test_x)) == 1 and high == low)


def _mean_of_fit(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Mean of the polynomial fit y(x) over [low, high] (its value when low == high)."""
    degree = min(3, len(np.unique(x)) - 1)
    if degree == 0:
        return float(np.mean(y))
    fit = P.polyfit(x, y, degree)
    if high == low:
        return float(P.polyval(low, fit))
    integral = P.polyint(fit)
    return float((P.polyval(high, integral) - P.polyval(low, integral)) / (high - low))
