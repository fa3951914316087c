"""Shared fixtures: real data (skipped when absent), a quiet local Ray, MLflow stores, S3 (moto server)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

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


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two 8-bit images, computed here rather than by the code under test."""
    mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def shared_dataset(name: str) -> Path:
    """A folder of ``../shared/data``; the test is skipped when it is not on this machine."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not on this machine (development data, not shipped)")
    return path


# Fixtures that start Ray, an MLflow server or an S3 server: a test using any of them, directly or
# through another fixture, is `slow` (README "Test"). Tests that start them otherwise mark themselves.
SLOW_FIXTURES = {"ray_local", "mlflow_server", "s3_endpoint", "s3_bucket"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, what: str, timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200; fail with the end of ``log`` if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} not answering at {url} after {timeout} s: {log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real ``mlflow server`` on a free port (sqlite backend); stopped, its process group only, at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1",
               "--port", str(port), "--backend-store-uri", f"sqlite:///{root}/db",
               "--default-artifact-root", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", server, root / "server.log", "mlflow server")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its gunicorn/uvicorn workers, nothing else
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory) -> Path:
    """A TorchScript embedding model for evaluate's ``--judge``, never in any training loss."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()).eval()
    path = tmp_path_factory.mktemp("judge") / "tiny.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return path
