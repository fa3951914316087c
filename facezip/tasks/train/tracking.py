"""MLflow for training: rank 0 logs into the driver's run; the driver logs and registers the model.

The driver opens the run (``facezip.infra.tracking.start_run``: params = the resolved config) and
hands its id and tracking URI to the workers; only rank 0 writes, through ``MlflowClient`` with
that run id, so no worker ever starts a run of its own.
"""

from __future__ import annotations

import os
import tempfile
import time
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from PIL import Image
from torchvision.utils import make_grid

from facezip.models.registry import Codec


def worker_visible_uri(uri: str) -> str:
    """Relative sqlite URIs and bare paths made absolute: Ray workers run in other directories."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    return uri if "://" in uri else os.path.abspath(uri)


class RunLogger:
    """Metrics and images into an existing run (used on rank 0 only)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client, self.run_id = MlflowClient(tracking_uri), run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def reconstruction_grid(self, originals: torch.Tensor, reconstructions: torch.Tensor, epoch: int) -> None:
        """A PNG: originals on the top row, their reconstructions below."""
        grid = make_grid(torch.cat([originals, reconstructions]).clamp(0, 1), nrow=len(originals), padding=2)
        image = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        self.client.log_image(self.run_id, image, artifact_file=f"reconstructions/epoch_{epoch:03d}.png")


def _requirements() -> list[str]:
    """What loading the model needs, pinned to this environment: stated, because MLflow's own
    inference imports the model in a subprocess (~10× slower than the rest of the logging)."""
    return [f"{name}=={metadata.version(name)}" for name in ("facezip", "torch", "compressai")]


def log_trained_model(codec: Codec, weights_bytes: bytes, registered_name: str | None) -> str | None:
    """Log ``codec`` with ``mlflow.pytorch`` in the active run, its facezip weights file inside
    the model (``extra_files/<codec>.pt``, what ``load_codec('models:/…')`` reads, with
    ``weights_only=True``), and register it. Returns ``models:/<name>/<version>`` or None."""
    with tempfile.TemporaryDirectory() as tmp:
        weights_path = Path(tmp) / f"{codec.name}.pt"
        weights_path.write_bytes(weights_bytes)
        # "pickle": MLflow's pt2 format needs a single-tensor forward and a TensorSpec signature,
        # the codec's forward returns a dict. facezip itself never unpickles it (see above).
        info = mlflow.pytorch.log_model(codec, name="model", extra_files=[str(weights_path)],
                                        serialization_format="pickle", registered_model_name=registered_name,
                                        pip_requirements=_requirements())
    version = getattr(info, "registered_model_version", None)
    return f"models:/{registered_name}/{version}" if registered_name and version else None
