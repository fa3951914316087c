"""The stage contract: what a stage declares, and the one function that runs any stage.

A stage is a ``StageSpec``: its config section (a dataclass; the tree's section named after the
stage), whether it spreads work over Ray, the summary keys a pipeline may reference
(``${stages.NAME.result.KEY}``, checked when the pipeline loads) and its work,
``work(ctx, **arguments) -> summary``. The work only does the stage's own job; ``run_stage``
alone opens storage, starts or joins Ray, opens the MLflow run (a child of a pipeline's run) with
the summary as an artifact, and writes the summary as ``_SUCCESS.json`` last, so that its
presence means complete. Adding a stage: a package under ``tasks/`` with its spec and its config
dataclass, and one line in ``facezip.pipelines.registry`` (which also adds the section to the
config tree).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from facezip.infra.ray_runtime import init_ray
from facezip.infra.storage import Storage, join
from facezip.infra.tracking import flatten, start_run

SUCCESS_FILE = "_SUCCESS.json"
_METRIC_UNSAFE = re.compile(r"[^\w\-. /]")


@dataclass
class StageContext:
    """What a stage's work gets: the full config, its section as a typed object, storage, its
    output folder (None for stages that check in place), the MLflow run (None when tracking is
    off) and whether to show progress."""

    cfg: DictConfig
    settings: Any
    storage: Storage
    output: str | None
    run: Any = None
    progress: bool = True

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.run is not None:
            import mlflow

            mlflow.log_metrics(metrics)

    def log_dict(self, data: dict, name: str) -> None:
        if self.run is not None:
            import mlflow

            mlflow.log_dict(data, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run is not None:
            import mlflow

            mlflow.set_tags(tags)

    def log_image(self, image, name: str) -> None:
        if self.run is not None and image is not None:
            import mlflow

            mlflow.log_image(image, name)


@dataclass(frozen=True)
class StageSpec:
    name: str
    work: Callable[..., dict[str, Any]]  # (ctx, **arguments) -> summary
    config: type | None  # the dataclass of config section ``name``, handed to the work as ctx.settings
    result_keys: tuple[str, ...]  # summary fields other stages may reference
    uses_ray: bool = True
    tags: Callable[[dict[str, Any]], dict[str, str]] = field(default=lambda arguments: {})
    run_name: Callable[[dict[str, Any]], str] | None = None  # the MLflow run's name; None: the stage's
    # checks the arguments and completes the config before anything starts (what MLflow records)
    configure: Callable[[DictConfig, dict[str, Any]], DictConfig] | None = None

    def parameters(self) -> list[str]:
        """The work's arguments a pipeline sets with ``with:``."""
        return [name for name in inspect.signature(self.work).parameters if name != "ctx"]


def run_stage(spec: StageSpec, cfg: DictConfig, output: str | None, progress: bool = True,
              **arguments: Any) -> dict[str, Any]:
    """Run one stage with everything around its work; returns its summary (also ``_SUCCESS.json``)."""
    if spec.configure:
        cfg = spec.configure(cfg, arguments)
    storage = Storage.from_config(cfg.storage)
    success = join(output, SUCCESS_FILE) if output else None
    if success:  # stale while the stage reruns: a crash must not look complete
        storage.remove(success)
    if spec.uses_ray:
        init_ray(cfg.ray)
    settings = OmegaConf.to_object(cfg[spec.name]) if spec.config else None
    tags = {"facezip.stage": spec.name, **spec.tags(arguments)}
    with start_run(cfg, spec.run_name(arguments) if spec.run_name else spec.name, tags=tags) as run:
        ctx = StageContext(cfg, settings, storage, output, run, progress)
        summary = {"stage": spec.name, **spec.work(ctx, **arguments)}
        ctx.log_dict(summary, f"{spec.name}_summary.json")
        summary["mlflow_run_id"] = run.info.run_id if run is not None else None
    if success:
        storage.write_bytes_atomic(success, summary_json(summary))
    return summary


def numeric_metrics(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a (nested) summary as an MLflow metric ``a.b.c``."""
    return {_METRIC_UNSAFE.sub("_", f"{prefix}{key}"): float(value) for key, value in flatten(summary).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def summary_json(summary: dict[str, Any]) -> bytes:
    return json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode()
