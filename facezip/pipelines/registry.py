"""Which function runs a pipeline stage: ``uses: NAME`` → an entry function, imported on first use.

Importing lazily lets a pipeline run with the stages that are installed; naming a stage whose
module is missing is a clear error when the pipeline is loaded, not a crash halfway through.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

StageFunction = Callable[..., dict[str, Any]]


class StageLookupError(LookupError):
    """A ``uses:`` name that is unknown or whose entry function cannot be imported."""


@dataclass(frozen=True)
class StageKind:
    """How to call one kind of stage.

    ``target`` is ``"module:function"`` (imported on first use) or the function itself. The
    function takes the full config first; ``output_param`` names the parameter that receives
    the stage's output URI. ``None`` means the stage writes no output directory of its own
    (verify checks an archive in place): the runner then records its summary itself.
    """

    target: str | StageFunction
    output_param: str | None = "dest"

    def load(self, uses: str) -> StageFunction:
        if callable(self.target):
            return self.target
        module_name, _, func_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise StageLookupError(f"stage 'uses: {uses}' needs {self.target}, which cannot be imported "
                                   f"({exc}); is that stage installed?") from None
        func = getattr(module, func_name, None)
        if func is None:
            raise StageLookupError(f"stage 'uses: {uses}': {module_name} has no function {func_name}")
        return func

    def parameters(self, uses: str) -> list[str]:
        """The entry function's parameters a pipeline may set with ``with:`` (all but config and output)."""
        names = list(inspect.signature(self.load(uses)).parameters)[1:]
        return [name for name in names if name != self.output_param]


_STAGES: dict[str, StageKind] = {
    "detect": StageKind("facezip.tasks.detect:run_detect"),
    "train": StageKind("facezip.tasks.train:run_train"),
    "archive": StageKind("facezip.tasks.archive:run_archive"),
    "verify": StageKind("facezip.tasks.archive:run_verify", output_param=None),
    "evaluate": StageKind("facezip.tasks.evaluate:run_evaluate"),
    "demo-data": StageKind("facezip.pipelines.demo:run_demo_data"),
}


def register_stage(uses: str, target: str | StageFunction, output_param: str | None = "dest") -> None:
    """Make ``uses: NAME`` available to pipelines (plugins, and tests with their own stages)."""
    _STAGES[uses] = StageKind(target, output_param)


def stage_kind(uses: str) -> StageKind:
    try:
        return _STAGES[uses]
    except KeyError:
        raise StageLookupError(f"unknown stage 'uses: {uses}' (known: {', '.join(sorted(_STAGES))})") from None
