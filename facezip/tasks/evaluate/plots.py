"""PNG figures: rate–quality curves with every codec on one plot, and a sample grid.

Built on ``matplotlib.figure.Figure`` (Agg canvas) rather than pyplot, so no global GUI state
is touched in workers or servers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from facezip.tasks.evaluate.codecs import FACEZIP, REFERENCE
from facezip.tasks.evaluate.levels import LevelResult


def rate_curve(summaries: Sequence[dict], column: str, ylabel: str, judge: str | None = None) -> bytes:
    """Mean bpp (log axis) against ``column``, one line per codec (a facezip ladder's rungs are
    the points of its line); the uncompressed reference as a dashed ceiling."""
    figure = Figure(figsize=(6.4, 4.4), dpi=110)
    axes = figure.add_subplot()
    codecs = dict.fromkeys(s["codec"] for s in summaries)
    for codec in codecs:
        points = sorted((s["bpp_mean"], s[column]) for s in summaries if s["codec"] == codec and s["ok"])
        points = [(x, y) for x, y in points if _finite(y)]
        if not points:
            continue
        if codec == REFERENCE:
            axes.axhline(points[0][1], color="grey", linestyle="--", label="uncompressed")
            continue
        xs, ys = zip(*points)
        learned = any(s["kind"] == FACEZIP for s in summaries if s["codec"] == codec)
        axes.plot(xs, ys, marker="*" if learned else "o", markersize=10 if learned else 5,
                  linewidth=2 if learned else 1, label=codec)
    axes.set_xscale("log")
    axes.set_xlabel("bits per pixel (mean)")
    axes.set_ylabel(ylabel)
    axes.set_title(f"rate–{ylabel}" + (f"\njudge: {judge}" if judge else ""), fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # nothing measurable (e.g. no pairs): an empty plot, no legend
        axes.legend(fontsize=8)
    return _png(figure)


def sample_grid(originals: Sequence[np.ndarray], results: Sequence[LevelResult]) -> bytes | None:
    """Rows of faces: original | each facezip model | JPEG at the size closest to that model's file."""
    facezip = [r for r in results if r.level.kind == FACEZIP]
    jpeg = [r for r in results if r.level.codec == "jpeg"]
    if not originals or not facezip:
        return None
    columns = 1 + len(facezip) * (2 if jpeg else 1)
    figure = Figure(figsize=(2.0 * columns, 2.2 * len(originals)), dpi=100)
    for row, original in enumerate(originals):
        cells = [("original", original)]
        for model in facezip:
            coded = model.samples[row]
            cells.append((_caption(model.level.label, coded), coded.decoded if coded else None))
            if jpeg:
                nearest = _closest_size(jpeg, row, coded.n_bytes if coded else None)
                cells.append(nearest or ("jpeg: –", None))
        for column, (caption, image) in enumerate(cells):
            axes = figure.add_subplot(len(originals), columns, row * columns + column + 1)
            if image is not None:
                axes.imshow(image)
            axes.set_title(caption, fontsize=7)
            axes.axis("off")
    figure.tight_layout()
    return _png(figure)


def _closest_size(jpeg: Sequence[LevelResult], row: int, n_bytes: int | None):
    candidates = [(r.level.label, r.samples[row]) for r in jpeg if r.samples[row] is not None]
    if n_bytes is None or not candidates:
        return None
    label, coded = min(candidates, key=lambda item: abs(item[1].n_bytes - n_bytes))
    return _caption(label, coded), coded.decoded


def _caption(label: str, coded) -> str:
    if coded is None:
        return f"{label}: failed"
    height, width = coded.decoded.shape[:2]
    return f"{label}\n{coded.n_bytes} B, {8 * coded.n_bytes / (height * width):.3f} bpp"


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
