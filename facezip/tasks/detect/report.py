"""Counting the detect stage's outcomes, checking that every input is accounted for, and the
contact sheet of sample crops."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image


class AccountingError(RuntimeError):
    """Inputs went missing (or were counted twice) between the reader and the outputs."""


@dataclass(frozen=True)
class Counts:
    inputs: int = 0
    kept_images: int = 0
    faces: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def kept_fraction(self) -> float:
        return self.kept_images / self.inputs if self.inputs else 0.0

    def __add__(self, other: "Counts") -> "Counts":
        reasons = Counter(self.rejected_by_reason) + Counter(other.rejected_by_reason)
        return Counts(self.inputs + other.inputs, self.kept_images + other.kept_images, self.faces + other.faces,
                      self.rejected + other.rejected, dict(reasons.most_common()))

    def as_dict(self) -> dict:
        return {**asdict(self), "kept_fraction": round(self.kept_fraction, 6)}


def count_outcomes(inputs: int, outcomes: pa.Table) -> Counts:
    """``outcomes``: the ``face_index`` and ``reason`` columns of every detection row."""
    kept = pc.is_null(outcomes["reason"])
    first_faces = pc.and_(kept, pc.equal(outcomes["face_index"], 0))
    reasons = outcomes.filter(pc.invert(kept))["reason"].value_counts().to_pylist()
    return Counts(inputs=inputs, kept_images=pc.sum(first_faces).as_py() or 0, faces=pc.sum(kept).as_py() or 0,
                  rejected=len(outcomes) - (pc.sum(kept).as_py() or 0),
                  rejected_by_reason={item["values"]: item["counts"] for item in sorted(
                      reasons, key=lambda item: -item["counts"])})


def check_accounting(counts: Counts) -> None:
    """Every input is either kept (once) or rejected (once): inputs = kept + rejected."""
    if counts.kept_images + counts.rejected != counts.inputs:
        raise AccountingError(f"{counts.inputs} inputs but {counts.kept_images} kept + {counts.rejected} "
                              f"rejected = {counts.kept_images + counts.rejected}: images were lost or duplicated")


def contact_sheet(pngs: Sequence[bytes], tile: int = 96) -> Image.Image | None:
    """A square-ish grid of crops, ``tile`` pixels each; None when there is nothing to show."""
    if not pngs:
        return None
    columns = math.ceil(math.sqrt(len(pngs)))
    rows = math.ceil(len(pngs) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), "white")
    for index, png in enumerate(pngs):
        crop = Image.open(io.BytesIO(png)).convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR)
        sheet.paste(crop, ((index % columns) * tile, (index // columns) * tile))
    return sheet


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
