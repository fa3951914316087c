"""Per-image rates, and the mean / max / min of a metric over a level.

Rates: bits per pixel and compression ratios against the raw RGB size (24 bpp) and against
the source file. The quality metrics are registered in ``facezip.models.metrics``.
"""

from __future__ import annotations

import math

import numpy as np

SUMMARIZED_RATES = ("bpp", "ratio_raw", "ratio_source")  # per level: mean / max / min
RATE_COLUMNS = ("bytes", *SUMMARIZED_RATES)


def rate_metrics(n_bytes: int, height: int, width: int, source_bytes: int) -> dict[str, float]:
    raw_bytes = 3 * height * width
    return {"bytes": n_bytes, "bpp": 8.0 * n_bytes / (height * width),
            "ratio_raw": raw_bytes / n_bytes, "ratio_source": source_bytes / n_bytes if source_bytes else math.nan}


def summarize(values: list[float]) -> dict[str, float]:
    """Mean / max / min over the finite-or-infinite values (NaN = not measurable, left out)."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return {"mean": math.nan, "max": math.nan, "min": math.nan}
    return {"mean": float(np.mean(kept)), "max": float(max(kept)), "min": float(min(kept))}
