"""Stages run in order, as defined by YAML files under ``configs/pipelines``."""

from facezip.pipelines.registry import StageLookupError, register_stage
from facezip.pipelines.runner import StageFailed, plan, run_pipeline
from facezip.pipelines.spec import Pipeline, PipelineError, bundled_pipelines, load_pipeline

__all__ = ["Pipeline", "PipelineError", "StageFailed", "StageLookupError", "bundled_pipelines", "load_pipeline",
           "plan", "register_stage", "run_pipeline"]
