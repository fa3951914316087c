"""MLflow tracking: one way to open a run and record what produced it."""

from __future__ import annotations

import contextlib
import logging
import platform
import subprocess
from collections.abc import Iterator
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

from facezip import __version__

log = logging.getLogger(__name__)


def configure(tracking_cfg: Any) -> None:
    """Point MLflow at ``tracking.uri`` (else $MLFLOW_TRACKING_URI / MLflow's default)."""
    if tracking_cfg.uri:
        mlflow.set_tracking_uri(tracking_cfg.uri)
    mlflow.set_experiment(tracking_cfg.experiment)


@contextlib.contextmanager
def start_run(cfg: DictConfig, run_name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun | None]:
    """An MLflow run with the resolved config as params (and as ``config.yaml``) and the
    versions of facezip, torch and ray as tags. Yields None when tracking is disabled.

    Inside an active run (a pipeline's parent run) the new run is its child."""
    if not cfg.tracking.enabled:
        yield None
        return
    nested = mlflow.active_run() is not None
    if not nested:
        configure(cfg.tracking)
    with mlflow.start_run(run_name=run_name, nested=nested, tags={**provenance_tags(), **(tags or {})}) as run:
        mlflow.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        yield run


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``{"a.b.c": value}``; lists kept as their string form."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def provenance_tags() -> dict[str, str]:
    import ray
    import torch

    return {"facezip.version": __version__, "torch.version": torch.__version__, "ray.version": ray.__version__,
            "python.version": platform.python_version(), "git.commit": _git_commit()}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=__file__.rsplit("/", 3)[0])
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
