"""Pipeline definitions: a YAML document listing stages in order, wired by omegaconf interpolation.

::

    pipeline: {name: demo, root: runs/demo}     # root: local path or s3:// URL
    data: {photos: /data/clic}                  # input URIs, referenced as ${data.photos}
    config: {device: auto}                      # merged onto facezip's defaults for every stage
    stages:                                     # run in this order
      pretrain:
        uses: train                             # registry name → facezip.tasks.train.run_train
        with: {data: "${data.photos}", phase: pretrain}   # entry-function arguments
        config: {train: {epochs: 2}}            # merged for this stage only
      archive:
        uses: archive
        with: {src: "${stages.detect.output}"}  # an earlier stage's output directory
        config: {codec: {weights: "${stages.pretrain.result.weights}"}}  # a field of its _SUCCESS.json

Each stage writes into ``output`` (default ``<root>/<stage name>``); ``result`` is its summary,
filled in when it completes or is found complete. Command-line overrides starting with
``pipeline.``, ``data.`` or ``stages.`` edit this document; any other ``key=value`` is a facezip
config key and wins over every section (``device=cpu``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from facezip.infra.config import merge_config
from facezip.infra.storage import is_remote, join
from facezip.pipelines.config import load_config
from facezip.pipelines.registry import StageLookupError, stage_spec
from facezip.tasks.stage import SUCCESS_FILE

BUNDLED_PACKAGE = "facezip.configs.pipelines"
DOCUMENT_KEYS = ("pipeline", "data", "config", "stages")
STAGE_KEYS = ("uses", "with", "config", "output", "resume")
_STAGE_NAME = re.compile(r"^[A-Za-z_]\w*$")
_URI_SCHEME = re.compile(r"^[A-Za-z][\w+.-]+:")
_STAGE_REFERENCE = re.compile(r"\$\{stages\.(\w+)\.(\w+)(?:\.(\w+))?")


class PipelineError(ValueError):
    """A pipeline definition that cannot run, reported as one line naming the file and key."""


@dataclass(frozen=True)
class Stage:
    name: str
    uses: str
    output: str
    resume: bool  # False: run even when its _SUCCESS.json exists (e.g. a nightly incremental archive)

    @property
    def success_uri(self) -> str:
        return join(self.output, SUCCESS_FILE)


@dataclass
class Pipeline:
    name: str
    root: str
    source: str
    document: DictConfig  # stage results are filled in as the run goes
    stages: list[Stage]
    shared_config: DictConfig  # facezip defaults + --config files + the document's config section
    config_overrides: list[str]  # facezip key=value overrides, applied last for every stage

    @property
    def config(self) -> DictConfig:
        """The pipeline-wide config (what the parent run records): shared sections ← command line."""
        return merge_config(self.shared_config, OmegaConf.from_dotlist(self.config_overrides), "command line")

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise PipelineError(f"{self.source}: no stage '{name}' (stages: {', '.join(s.name for s in self.stages)})")

    def stage_config(self, stage: Stage) -> DictConfig:
        """The full config one stage runs with: base ← the stage's section ← command line."""
        section = self._resolve(stage, "config")
        cfg = merge_config(self.shared_config, section, f"{self.source}: stages.{stage.name}.config")
        return merge_config(cfg, OmegaConf.from_dotlist(self.config_overrides), "command line")

    def stage_arguments(self, stage: Stage) -> dict[str, Any]:
        return self._resolve(stage, "with")

    def record_result(self, stage: Stage, summary: dict[str, Any]) -> None:
        self.document.stages[stage.name].result = json.loads(json.dumps(summary, default=str))

    def data_uris(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in OmegaConf.to_container(self.document.data, resolve=True).items()}

    def _resolve(self, stage: Stage, key: str) -> dict[str, Any]:
        node = self.document.stages[stage.name].get(key)
        if node is None:
            return {}
        try:
            return OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException as exc:
            raise PipelineError(f"{self.source}: stages.{stage.name}.{key}: {_first_line(exc)} "
                                "(a stage's result exists only once that stage has completed)") from None


def bundled_pipelines() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(BUNDLED_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def read_definition(ref: str) -> tuple[str, str]:
    """``(source, YAML text)`` of a pipeline file path or a bundled name such as ``demo``."""
    path = Path(ref)
    if path.is_file():
        return str(path), path.read_text()
    bundled = resources.files(BUNDLED_PACKAGE) / (ref if ref.endswith(".yaml") else f"{ref}.yaml")
    if "/" not in ref and bundled.is_file():
        return f"{BUNDLED_PACKAGE}/{bundled.name}", bundled.read_text()
    raise PipelineError(f"pipeline '{ref}': no such file, nor a bundled pipeline "
                        f"(bundled: {', '.join(bundled_pipelines())})")


def load_pipeline(ref: str, overrides: Sequence[str] = (), config_files: Sequence[str] = ()) -> Pipeline:
    """Read, override and check a pipeline: every error here comes before any stage runs."""
    source, text = read_definition(ref)
    document = _parse(source, text)
    document_overrides = [o for o in overrides if o.split(".", 1)[0] in ("pipeline", "data", "stages")]
    config_overrides = [o for o in overrides if o not in document_overrides]
    if document_overrides:
        document = OmegaConf.merge(document, OmegaConf.from_dotlist(document_overrides))
    name = str(document.pipeline.get("name") or Path(source).stem)
    root = _absolute(_required(document.pipeline, "root", source, "pipeline"))
    document.pipeline.root = root
    document.data = {key: _absolute_data(str(value)) for key, value in document.data.items()}
    stages = _stages(document, source, root)
    _check_references(document, stages, source)
    load_config(config_files, config_overrides)  # fail now on a bad override, not at stage 3
    try:
        section = OmegaConf.to_container(document.config, resolve=True)
    except OmegaConfBaseException as exc:
        raise PipelineError(f"{source}: config: {_first_line(exc)} (stage results belong in a stage's config)")
    shared = merge_config(load_config(config_files), section, f"{source}: config")
    return Pipeline(name, root, source, document, stages, shared, config_overrides)


def _parse(source: str, text: str) -> DictConfig:
    try:
        document = OmegaConf.create(text)
    except Exception as exc:  # yaml errors: report, don't trace
        raise PipelineError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, DictConfig):
        raise PipelineError(f"{source}: expected a mapping with keys {', '.join(DOCUMENT_KEYS)}")
    unknown = [str(k) for k in document if k not in DOCUMENT_KEYS]
    if unknown:
        raise PipelineError(f"{source}: unknown top-level key(s) {unknown} (known: {', '.join(DOCUMENT_KEYS)})")
    for key in DOCUMENT_KEYS:
        if document.get(key) is None:
            document[key] = {}
        if not isinstance(document[key], DictConfig):
            raise PipelineError(f"{source}: '{key}' must be a mapping")
    if not document.stages:
        raise PipelineError(f"{source}: 'stages' lists no stage")
    return document


def _stages(document: DictConfig, source: str, root: str) -> list[Stage]:
    stages = []
    for name, spec in document.stages.items():
        where = f"stages.{name}"
        if not _STAGE_NAME.match(str(name)):
            raise PipelineError(f"{source}: {where}: stage names are letters, digits and '_'")
        if not isinstance(spec, DictConfig):
            raise PipelineError(f"{source}: {where} must be a mapping with keys {', '.join(STAGE_KEYS)}")
        unknown = [str(k) for k in spec if k not in STAGE_KEYS]
        if unknown:
            raise PipelineError(f"{source}: {where}: unknown key(s) {unknown} (known: {', '.join(STAGE_KEYS)})")
        uses = str(_required(spec, "uses", source, where))
        spec.output = _absolute(str(spec.output)) if spec.get("output") else join(root, str(name))
        _check_arguments(uses, spec.get("with") or {}, f"{source}: {where}")
        stages.append(Stage(str(name), uses, spec.output, bool(spec.get("resume", True))))
    return stages


def _check_arguments(uses: str, arguments: DictConfig, where: str) -> None:
    try:
        accepted = stage_spec(uses).parameters()
    except StageLookupError as exc:
        raise PipelineError(f"{where}: {exc}") from None
    unknown = [str(k) for k in arguments if k not in accepted]
    if unknown:
        raise PipelineError(f"{where}.with: '{uses}' takes no argument(s) {unknown} "
                            f"(it takes: {', '.join(accepted)})")


def _check_references(document: DictConfig, stages: list[Stage], source: str) -> None:
    """``${stages.X.…}`` must name an earlier stage (the order in the file is the run order), and
    ``${stages.X.result.KEY}`` a key X's stage declares in its result."""
    raw = OmegaConf.to_container(document.stages, resolve=False)
    uses = {s.name: s.uses for s in stages}
    for position, stage in enumerate(stages):
        earlier = {s.name for s in stages[:position]}
        for referenced, field, key in _STAGE_REFERENCE.findall(json.dumps(raw[stage.name])):
            if referenced not in earlier and not (referenced == stage.name and field == "output"):
                raise PipelineError(f"{source}: stages.{stage.name} refers to stages.{referenced}, "
                                    "which is not an earlier stage")
            if field != "result":
                continue
            declared = stage_spec(uses[referenced]).result_keys
            if key not in declared:
                raise PipelineError(f"{source}: stages.{stage.name} refers to stages.{referenced}.result.{key}, "
                                    f"but '{uses[referenced]}' has no result '{key}' "
                                    f"(it has: {', '.join(declared)})")


def _required(node: DictConfig, key: str, source: str, where: str) -> Any:
    value = node.get(key)
    if value in (None, ""):
        raise PipelineError(f"{source}: {where}.{key} is required")
    return value


def _absolute(path: str) -> str:
    """Local paths become absolute so Ray workers and Ray Jobs, whatever their cwd, agree."""
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def _absolute_data(value: str) -> str:
    """Data entries may also be URIs (``models:/name/1``) or words (``bundled``): only paths change."""
    looks_like_path = value.startswith((".", "~", "/")) or "/" in value
    return _absolute(value) if looks_like_path and not _URI_SCHEME.match(value) else value


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]
