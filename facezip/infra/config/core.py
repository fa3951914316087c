"""Loading, merging and validating configs, with errors that name the key and the type."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from facezip.infra.config.schema import SharedConfig


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def config_tree(sections: Mapping[str, type]) -> DictConfig:
    """The default tree: SharedConfig's keys, then one typed section per dataclass in ``sections``
    (name → dataclass, in order). Merges refuse a top-level key the tree lacks (``_merge``)."""
    shared = OmegaConf.structured(SharedConfig)
    taken = sorted(set(sections) & set(shared))
    if taken:
        raise ValueError(f"config sections {', '.join(taken)} are infra's own (facezip.infra.config.schema)")
    # a mapping of typed nodes, not a dataclass made here: a class made at run time does not pickle,
    # and every node carries its root. The nodes, not their values, so device and seed keep their types.
    return OmegaConf.create({**{key: shared._get_node(key) for key in shared},
                             **{name: OmegaConf.structured(section) for name, section in sections.items()}})


def layer_config(defaults: DictConfig, files: Iterable[str | Path] = (), overrides: Sequence[str] = ()) -> DictConfig:
    """Merge ``files`` (YAML, in order) then dotlist ``overrides`` onto ``defaults``.

    Raises ConfigError naming the offending key, its expected type and where it came from.
    """
    cfg = defaults
    for path in files:
        cfg = _merge(cfg, _read_yaml(Path(path)), source=str(path))
    if overrides:
        _check_dotlist(overrides)
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), source="command line")
    return cfg


def merge_config(cfg: DictConfig, update: DictConfig | dict, source: str) -> DictConfig:
    """``update`` merged onto ``cfg`` with the checks and errors of ``layer_config``
    (``source`` says where the update came from, e.g. a pipeline stage)."""
    return _merge(cfg, OmegaConf.create(update), source=source)


def config_to_yaml(cfg: DictConfig, resolve: bool = True) -> str:
    """YAML of ``cfg``; ``resolve=False`` keeps interpolations such as ``facezip-${codec.name}``."""
    return OmegaConf.to_yaml(cfg, resolve=resolve)


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends: report, don't trace
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def _check_dotlist(overrides: Sequence[str]) -> None:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=3)")


def _merge(base: DictConfig, update: DictConfig, source: str) -> DictConfig:
    # the root is a plain mapping (config_tree): its keys are checked here, the sections' by their types
    unknown = [str(key) for key in update if key not in base]
    if unknown:
        raise ConfigError(f"{source}: {_unknown_key(unknown[0], base)}")
    try:
        return OmegaConf.merge(base, _renamed_keys(base, update))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_explain(exc, base)}") from None


def _renamed_keys(base: DictConfig, update: DictConfig) -> DictConfig:
    """Keys configs were written with before a rename, moved to their new place by their section:
    a section's dataclass may have ``renamed_keys(section)``, which edits the update's section."""
    for key in update:
        rename = getattr(OmegaConf.get_type(base, str(key)), "renamed_keys", None)
        section = update.get(key) if rename else None
        if isinstance(section, DictConfig):
            rename(section)
    return update


def _explain(exc: OmegaConfBaseException, base: DictConfig) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    if isinstance(exc, ConfigKeyError):
        return _unknown_key(str(key), base)
    if isinstance(exc, ValidationError):
        expected = _expected_type(base, str(key))
        value = getattr(exc, "value", None)
        return f"config key '{key}' expects {expected}, got {value!r}"
    return f"config key '{key}': {getattr(exc, 'msg', exc)}"


def _unknown_key(key: str, base: DictConfig) -> str:
    return f"unknown config key '{key}'{_suggest(key, base)}"


def _expected_type(base: DictConfig, key: str) -> str:
    list_key, bracket, _ = key.partition("[")
    node = OmegaConf.select(base, list_key, throw_on_missing=False) if list_key else None
    try:
        if bracket:  # an element of a typed list, e.g. detect.thresholds[0]
            ref = node._metadata.element_type
            return f"a list of {_type_name(ref)}"
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(base, parent_key) if parent_key else base
        return _type_name(parent._get_node(leaf)._metadata.ref_type)
    except (AttributeError, OmegaConfBaseException):
        return "a different type"


def _type_name(ref: object) -> str:
    return getattr(ref, "__name__", None) or str(ref).replace("typing.", "")


def _suggest(key: str, base: DictConfig) -> str:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(base, parent_key) if parent_key else base
    if not isinstance(parent, DictConfig):
        return ""
    close = difflib.get_close_matches(leaf, [str(k) for k in parent.keys()], n=3)
    if close:
        return " (did you mean " + ", ".join(f"'{_join(parent_key, c)}'" for c in close) + "?)"
    known = ", ".join(str(k) for k in parent.keys())
    return f" (known keys{' under ' + parent_key if parent_key else ''}: {known})"


def _join(parent: str, leaf: str) -> str:
    return f"{parent}.{leaf}" if parent else leaf
