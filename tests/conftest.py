"""Shared fixtures: real data (skipped when absent), a quiet local Ray, MLflow stores, S3 (moto server)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

# Quiet, offline Ray and fake AWS credentials, set before anything starts a Ray worker.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEZIP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """A folder of ``../shared/data``; the test is skipped when it is not on this machine."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not on this machine (development data, not shipped)")
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def ray_local():
    """One quiet local Ray for the whole session (2 CPUs, no dashboard, no log forwarding)."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def mlflow_sqlite(tmp_path: Path) -> str:
    """A fresh MLflow sqlite store (the MLflow 3 default backend) for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API on 127.0.0.1: moto's server mode, as s3fs's own tests use."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A new empty bucket; returns ``(Storage, "s3://bucket")``."""
    from facezip.infra.storage import Storage

    storage = Storage(endpoint_url=s3_endpoint)
    bucket = f"facezip-test-{uuid.uuid4().hex[:10]}"
    fs, _ = storage.fs(f"s3://{bucket}")
    fs.mkdir(bucket)
    return storage, f"s3://{bucket}"
