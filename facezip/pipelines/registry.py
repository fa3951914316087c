"""Which stage ``uses: NAME`` runs: a registered ``StageSpec`` (facezip.tasks.stage), imported on first use.

A stage whose module cannot be imported is a clear error (StageLookupError) naming it. The config
tree holds every registered stage's section, so building it (``stage_sections``) imports them all.
"""

from __future__ import annotations

import importlib

from facezip.tasks.stage import StageSpec


class StageLookupError(LookupError):
    """A ``uses:`` name that is unknown or whose spec cannot be imported."""


_STAGES: dict[str, str | StageSpec] = {  # uses → "module:ATTRIBUTE" of its StageSpec, or the spec
    "detect": "facezip.tasks.detect:STAGE",
    "train": "facezip.tasks.train.runner:TRAIN_STAGE",
    "archive": "facezip.tasks.archive.run:ARCHIVE_STAGE",
    "verify": "facezip.tasks.archive.verify:VERIFY_STAGE",
    "evaluate": "facezip.tasks.evaluate.run:EVALUATE_STAGE",
    "demo-data": "facezip.pipelines.demo:DEMO_DATA_STAGE",
}


def register_stage(uses: str, spec: str | StageSpec) -> None:
    """Make ``uses: NAME`` available to pipelines (plugins, and tests with their own stages)."""
    _STAGES[uses] = spec


def stage_spec(uses: str) -> StageSpec:
    try:
        target = _STAGES[uses]
    except KeyError:
        raise StageLookupError(f"unknown stage 'uses: {uses}' (known: {', '.join(sorted(_STAGES))})") from None
    if isinstance(target, StageSpec):
        return target
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise StageLookupError(f"stage 'uses: {uses}' needs {target}, which cannot be imported "
                               f"({exc}); is that stage installed?") from None
    spec = getattr(module, attribute, None)
    if not isinstance(spec, StageSpec):
        raise StageLookupError(f"stage 'uses: {uses}': {module_name} has no StageSpec {attribute}")
    return spec


def stage_sections() -> dict[str, type]:
    """Every registered stage's config section, ``{stage name: dataclass}`` in registration order."""
    specs = [stage_spec(uses) for uses in _STAGES]
    return {spec.name: spec.config for spec in specs if spec.config is not None}
