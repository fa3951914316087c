"""``facezip runs compare``: the key metrics of MLflow runs side by side, as a table and a plot.

A pipeline's parent run is read through its stage runs (its children, named after what they
ran: ``evaluate/facezip.psnr_mean``); a run without children (one stage run alone) is read
directly. Key metrics are those whose name mentions one of ``KEY_METRICS``' words; each goes to
the first family that claims it, so the independent judge's identity numbers come before those
of the network the identity loss trains against.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

KEY_METRICS = {  # family → words that mark its metrics (lower case), in the order families claim them
    "bpp": ("bpp",),
    "PSNR": ("psnr",),
    "MS-SSIM": ("ms_ssim", "msssim", "ms-ssim"),
    "identity (dlib-resnet, independent judge)": ("identity.dlib-resnet",),
    "identity (facenet, the training loss's network)": ("identity.facenet", "cosine"),
    "verification accuracy": ("accuracy",),
}


class CompareError(ValueError):
    """A run that cannot be found or compared."""


@dataclass(frozen=True)
class RunMetrics:
    run_id: str
    name: str
    metrics: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.run_id[:8]})"


def collect_runs(client: mlflow.MlflowClient, run_ids: Sequence[str]) -> list[RunMetrics]:
    return [_collect(client, run_id) for run_id in run_ids]


def key_metric_names(runs: Sequence[RunMetrics], contains: str | None = None) -> dict[str, list[str]]:
    """Family → the metric names (of any run) in it, in name order; only names containing ``contains``."""
    names = sorted({name for run in runs for name in run.metrics if not contains or contains in name})
    families: dict[str, list[str]] = {}
    for name in names:
        family = next((f for f, words in KEY_METRICS.items() if any(word in name.lower() for word in words)), None)
        if family:
            families.setdefault(family, []).append(name)
    return {family: families[family] for family in KEY_METRICS if family in families}


def format_table(runs: Sequence[RunMetrics], families: dict[str, list[str]]) -> str:
    header = ["metric", *(run.label for run in runs)]
    rows = [[name, *(_format(run.metrics.get(name)) for run in runs)]
            for names in families.values() for name in names]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot_comparison(runs: Sequence[RunMetrics], families: dict[str, list[str]], max_bars: int = 12) -> bytes:
    """A PNG with one panel per metric family: grouped bars, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(len(families), 1, figsize=(10, 3.2 * len(families)), squeeze=False)
    width = 0.8 / len(runs)
    for axis, (family, names) in zip(axes[:, 0], families.items()):
        shown = names[:max_bars]
        for index, run in enumerate(runs):
            values = [run.metrics.get(name, math.nan) for name in shown]
            axis.bar([i + index * width for i in range(len(shown))], values, width, label=run.label)
        axis.set_title(family + (f" (first {max_bars} of {len(names)})" if len(names) > max_bars else ""))
        axis.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(shown))], shown,
                        rotation=30, ha="right", fontsize=7)
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _collect(client: mlflow.MlflowClient, run_id: str) -> RunMetrics:
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise CompareError(f"run {run_id}: {exc.message}") from None
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    metrics = dict(run.data.metrics) if not children else {
        f"{child.info.run_name}/{name}": value for child in children for name, value in child.data.metrics.items()}
    return RunMetrics(run_id, run.info.run_name or run_id, metrics)


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
