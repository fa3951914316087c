"""The typed configuration tree (omegaconf structured configs).

Defaults live in the dataclasses below; ``configs/default.yaml`` is the same tree written out
for reading (a test keeps the two equal). Users layer YAML files and dotlist overrides on top:
``facezip train … train.epochs=3 storage.endpoint_url=http://minio:9000``.
"""

from facezip.infra.config.core import ConfigError, config_to_yaml, default_config, load_config, merge_config
from facezip.infra.config.schema import FacezipConfig

__all__ = ["ConfigError", "FacezipConfig", "config_to_yaml", "default_config", "load_config", "merge_config"]
