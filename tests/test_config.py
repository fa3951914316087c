"""The typed config tree: defaults, layering, and errors that name the key and the type."""

from __future__ import annotations

from pathlib import Path

import pytest

from facezip.infra.config import ConfigError, config_to_yaml
from facezip.pipelines.config import default_config, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_file_matches_the_schema():
    """configs/default.yaml is the schema's defaults written out, interpolations kept (regenerate:
    python -c "from facezip.infra.config import *; from facezip.pipelines.config import *; print(
    config_to_yaml(default_config(), False), end='')" > configs/default.yaml)."""
    assert (REPO / "configs" / "default.yaml").read_text() == config_to_yaml(default_config(), resolve=False)


def test_files_then_overrides_layer_in_order(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train:\n  epochs: 5\n  lr: 0.5\n")
    second.write_text("train:\n  epochs: 7\n")
    cfg = load_config([first, second], ["train.lr=0.25", "storage.endpoint_url=http://127.0.0.1:9000"])
    assert (cfg.train.epochs, cfg.train.lr) == (7, 0.25)
    assert cfg.storage.endpoint_url == "http://127.0.0.1:9000"
    assert cfg.train.batch_size == default_config().train.batch_size


@pytest.mark.parametrize("override, message", [
    ("train.epochz=3", r"unknown config key 'train.epochz' \(did you mean 'train.epochs'\?\)"),
    ("nonsense=1", r"unknown config key 'nonsense' \(known keys: device, seed"),
    ("train.epochs=three", r"config key 'train.epochs' expects int, got 'three'"),
    ("detect.thresholds=[0.6,high,0.7]", r"config key 'detect.thresholds\[1\]' expects a list of float"),
    ("ray.log_to_driver=maybe", r"config key 'ray.log_to_driver' expects bool"),
    ("train.epochs", r"not of the form key=value"),
])
def test_bad_overrides_name_key_and_type(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([], [override])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config([tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config([broken])
    typo = tmp_path / "typo.yaml"
    typo.write_text("archive:\n  records_per_shrad: 10\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'archive.records_per_shrad'"):
        load_config([typo])


def test_per_baseline_quality_keys_of_older_configs_still_load(tmp_path):
    """``evaluate.<baseline>_qualities`` predates the baseline registry: it reads as ``evaluate.qualities``."""
    old = tmp_path / "old.yaml"
    old.write_text("evaluate:\n  webp_qualities: [5, 30]\n")
    cfg = load_config([old], ["evaluate.jpeg_qualities=[10,50]", "evaluate.qualities.avif=[1]"])
    assert dict(cfg.evaluate.qualities) == {"webp": [5, 30], "jpeg": [10, 50], "avif": [1]}
