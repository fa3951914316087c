"""The whole config tree: infra's shared keys, then the ``compress`` section, then the section each
registered stage declares (``StageSpec.config``), so a new stage brings its own section."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import DictConfig

from facezip.infra.config import config_tree, layer_config
from facezip.pipelines.registry import stage_sections
from facezip.tasks.compress import CompressConfig


def default_config() -> DictConfig:
    """The full default tree, typed: later merges are checked against it."""
    # compress is a command of its own, not a pipeline stage: its section is named here
    return config_tree({"compress": CompressConfig, **stage_sections()})


def load_config(files: Iterable[str | Path] = (), overrides: Sequence[str] = ()) -> DictConfig:
    """Merge ``files`` (YAML, in order) then dotlist ``overrides`` onto the defaults.

    Raises ConfigError naming the offending key, its expected type and where it came from.
    """
    return layer_config(default_config(), files, overrides)
