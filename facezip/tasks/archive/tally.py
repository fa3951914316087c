"""What the identity floor and rate searches did over a run, summed shard by shard."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from facezip.models.recognizer import Recognizer
from facezip.tasks.archive.floor import LOSSLESS, Floor

QUANTILES = {"min": 0, "p10": 10, "p25": 25, "median": 50, "p75": 75, "p90": 90, "max": 100}


@dataclass
class IdentityTally:
    """Faces per level, raised faces (and by which judge), fallbacks, each judge's measure of the
    stored faces, and the qualities a variable-rate codec coded them at."""

    levels: Counter = field(default_factory=Counter)
    raised: int = 0
    raised_by: Counter = field(default_factory=Counter)
    fallbacks: int = 0
    scores: dict[str, list[float]] = field(default_factory=dict)
    qualities: list[float] = field(default_factory=list)

    def add(self, row: dict) -> None:
        if row["lossless_fallback"] or row["level"] is not None:  # no ladder: nothing to count per level
            self.levels[LOSSLESS.codec.name if row["lossless_fallback"] else str(row["level"])] += 1
        raised_by = row.get("raised_by") or []
        self.raised += bool(raised_by)
        self.raised_by.update(raised_by)
        self.fallbacks += bool(row["lossless_fallback"])
        for judge, value in dict(row.get("identity_scores") or {}).items():  # Arrow maps read as pairs
            self.scores.setdefault(judge, []).append(value)
        if row.get("quality") is not None:
            self.qualities.append(row["quality"])

    def merge(self, other: "IdentityTally") -> None:
        self.levels.update(other.levels)
        self.raised += other.raised
        self.raised_by.update(other.raised_by)
        self.fallbacks += other.fallbacks
        for judge, values in other.scores.items():
            self.scores.setdefault(judge, []).extend(values)
        self.qualities.extend(other.qualities)

    def summary(self, floor: Floor | None) -> dict:
        judges = {j.name: j for j in floor.judges} if floor else {}
        return {"faces_per_level": dict(sorted(self.levels.items())), "raised_faces": self.raised,
                "raised_by_judge": dict(sorted(self.raised_by.items())), "lossless_fallbacks": self.fallbacks,
                "identity": {name: _stats(values, judges.get(name)) for name, values in sorted(self.scores.items())},
                "qualities": _quantiles(self.qualities)}


def _stats(values: list[float], judge: Recognizer | None) -> dict:
    """Mean and worst value of a judge's measure (the lowest cosine, the largest distance)."""
    array = np.array(values, dtype=np.float64)
    worst = array.min() if judge is None or judge.higher_is_better else array.max()
    return {"measure": judge.measure if judge else None, "mean": round(float(array.mean()), 6),
            "worst": round(float(worst), 6)}


def _quantiles(values: list[float]) -> dict | None:
    """How the qualities of a variable-rate codec's faces spread (None: no face had one)."""
    if not values:
        return None
    points = np.percentile(np.array(values, dtype=np.float64), list(QUANTILES.values()))
    return {"faces": len(values), "mean": round(float(np.mean(values)), 3),
            **{name: round(float(q), 3) for name, q in zip(QUANTILES, points)}}
