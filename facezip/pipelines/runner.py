"""Run a pipeline's stages in order under one MLflow parent run, resuming where it stopped.

A stage is complete when ``<output>/_SUCCESS.json`` exists (each stage writes it last). On a
rerun complete stages are skipped and their summaries reread; ``start_from`` forces a restart at
one stage. Once a stage runs, every later stage runs too, since its inputs may have changed.
Stages run in this process, one after another, each through the stage contract
(``facezip.tasks.stage.run_stage``); each spreads its own work over Ray (actor pools, Ray Train
workers), so a pipeline submitted as a Ray Job uses the whole cluster.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import mlflow
from omegaconf import OmegaConf

from facezip.infra.storage import Storage, join
from facezip.infra.tracking import start_run
from facezip.pipelines.registry import stage_spec
from facezip.pipelines.spec import Pipeline, PipelineError, Stage
from facezip.tasks.stage import numeric_metrics, run_stage

log = logging.getLogger(__name__)
PIPELINE_SUMMARY_FILE = "_PIPELINE.json"


class StageFailed(RuntimeError):
    """A stage raised: the pipeline stopped there; outputs of earlier stages are untouched."""

    def __init__(self, pipeline: Pipeline, stage: Stage, error: Exception, completed: list[str]) -> None:
        kept = f"outputs of {', '.join(completed)} are kept; " if completed else ""
        super().__init__(f"pipeline '{pipeline.name}': stage '{stage.name}' (uses: {stage.uses}) failed: "
                         f"{type(error).__name__}: {error}; "
                         f"{kept}rerun the same command to resume at '{stage.name}'")
        self.stage = stage


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    run: bool
    reason: str  # why it runs or is skipped, for the log


def plan(pipeline: Pipeline, storage: Storage, start_from: str | None = None) -> list[PlannedStage]:
    """Which stages run and which are kept, decided before anything runs."""
    forced_from = pipeline.stage(start_from).name if start_from else None
    planned: list[PlannedStage] = []
    running = False
    for stage in pipeline.stages:
        complete = storage.exists(stage.success_uri)
        if stage.name == forced_from:
            running, reason = True, "restart requested (--from)"
        elif forced_from and not running and not complete:
            raise PipelineError(f"--from {forced_from}: earlier stage '{stage.name}' is not complete "
                                f"({stage.success_uri} is missing); run without --from first")
        elif running:
            reason = "an earlier stage ran"
        elif not stage.resume:
            running, reason = True, "resume: false"
        elif not complete:
            running, reason = True, "not complete"
        else:
            reason = f"complete ({stage.success_uri})"
        planned.append(PlannedStage(stage, running, reason))
    return planned


def run_pipeline(pipeline: Pipeline, start_from: str | None = None) -> dict[str, Any]:
    """Run ``pipeline``; returns (and writes to ``<root>/_PIPELINE.json``) a summary per stage.

    Raises StageFailed when a stage raises, PipelineError when the definition cannot run."""
    cfg = pipeline.config
    storage = Storage.from_config(cfg.storage)
    steps = plan(pipeline, storage, start_from)
    tags = {"pipeline.name": pipeline.name, "pipeline.source": pipeline.source, "pipeline.root": pipeline.root}
    with start_run(cfg, run_name=f"pipeline-{pipeline.name}", tags=tags) as run:
        if run is not None:
            _log_definition(pipeline)
        stages: dict[str, Any] = {}
        for number, step in enumerate(steps, start=1):
            stage = step.stage
            action = "running" if step.run else "skipping"
            log.info("[%d/%d] %s (%s): %s, %s", number, len(steps), stage.name, stage.uses, action, step.reason)
            started = time.monotonic()
            summary = _run_stage(pipeline, stage, stages) if step.run else _read_summary(stage, storage)
            pipeline.record_result(stage, summary)
            stages[stage.name] = {"uses": stage.uses, "status": "ran" if step.run else "skipped",
                                  "output": stage.output, "seconds": round(time.monotonic() - started, 1),
                                  "summary": summary}
            if run is not None:
                _log_stage_metrics(stage, summary)
        result = {"pipeline": pipeline.name, "root": pipeline.root, "source": pipeline.source,
                  "mlflow_run_id": run.info.run_id if run is not None else None, "stages": stages}
        if run is not None:
            mlflow.log_dict(result, "pipeline_summary.json")
        storage.write_bytes_atomic(join(pipeline.root, PIPELINE_SUMMARY_FILE), _to_json(result))
    return result


def _run_stage(pipeline: Pipeline, stage: Stage, done: dict[str, Any]) -> dict[str, Any]:
    """Through the stage contract: ``run_stage`` owns Ray, the child MLflow run and ``_SUCCESS.json``
    (in the stage's output folder, also for stages that check in place, such as verify)."""
    spec, cfg, arguments = stage_spec(stage.uses), pipeline.stage_config(stage), pipeline.stage_arguments(stage)
    try:
        return run_stage(spec, cfg, stage.output, **arguments)
    except Exception as exc:
        raise StageFailed(pipeline, stage, exc, list(done)) from exc


def _read_summary(stage: Stage, storage: Storage) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(stage.success_uri))
    except ValueError as exc:
        raise PipelineError(f"{stage.success_uri}: not valid JSON ({exc}); "
                            f"delete it to rerun '{stage.name}'") from None


def _log_definition(pipeline: Pipeline) -> None:
    """The data URIs and stage outputs as params, the definition as an artifact."""
    params = {f"pipeline.data.{key}": uri for key, uri in pipeline.data_uris().items()}
    params.update({f"pipeline.stages.{s.name}": f"{s.uses} -> {s.output}" for s in pipeline.stages})
    mlflow.log_params(params)
    mlflow.log_text(OmegaConf.to_yaml(pipeline.document), "pipeline.yaml")


def _log_stage_metrics(stage: Stage, summary: dict[str, Any]) -> None:
    """A stage's numeric summary values on the parent run, so the MLflow UI compares pipelines directly."""
    numbers = numeric_metrics(summary, prefix=f"{stage.name}.")
    if numbers:
        mlflow.log_metrics(numbers)


def _to_json(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()
