"""The typed configuration tree (omegaconf structured configs).

Defaults live in dataclasses: infra's shared keys in ``schema.py``, each stage's section in its own
package; ``config_tree`` puts them together (``facezip.pipelines.config.default_config``).
``configs/default.yaml`` is the whole tree written out for reading (a test keeps the two equal).
Users layer YAML files and dotlist overrides on top:
``facezip train … train.epochs=3 storage.endpoint_url=http://minio:9000``.
"""

from facezip.infra.config.core import ConfigError, config_to_yaml, config_tree, layer_config, merge_config
from facezip.infra.config.schema import SharedConfig

__all__ = ["ConfigError", "SharedConfig", "config_to_yaml", "config_tree", "layer_config", "merge_config"]
