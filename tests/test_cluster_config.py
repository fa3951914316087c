"""ray_cluster.yaml, checked by Ray's own cluster-launcher code: defaults filled, then the packaged schema."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_ray_accepts_the_cluster_config(cluster: dict) -> None:
    prepared = prepare_config(copy.deepcopy(cluster))  # what `ray up` does before validating
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def test_cpu_head_gpu_workers_for_training_cpu_workers_for_archival(cluster: dict) -> None:
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    workers = {name: spec for name, spec in types.items() if name != cluster["head_node_type"]}
    gpu = [spec for spec in workers.values() if spec["resources"].get("GPU", 0) >= 1]
    cpu = [spec for spec in workers.values() if spec["resources"].get("GPU", 0) == 0]
    assert gpu and cpu
    for spec in workers.values():
        assert 0 <= spec["min_workers"] <= spec["max_workers"]
    assert cluster["max_workers"] >= max(spec["max_workers"] for spec in workers.values())


def test_every_node_installs_this_checkout_of_facezip(cluster: dict) -> None:
    mounted = [remote for remote, local in cluster["file_mounts"].items() if local == "."]
    assert mounted
    assert any(f"pip install -e {mounted[0]}" in command for command in cluster["setup_commands"])


def test_the_validator_rejects_a_broken_config(cluster: dict) -> None:
    """The check above means something: a wrong type in the same file is caught."""
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_config(prepare_config(broken))
