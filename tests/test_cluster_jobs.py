"""``facezip submit / status / logs`` against a real Ray cluster started by this test.

The head runs as ``ray start --head --block`` in its own session with its own ports and
``--temp-dir``. It is stopped by signalling that process (which shuts down what it started)
and then its process group, never with ``ray stop``: that stops every Ray on the machine,
including other test runs'.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from facezip.cli import main
from facezip.models.loading import weights_to_bytes
from facezip.models.registry import create_codec
from facezip.pipelines.demo import build_demo_dataset
from tests.conftest import free_port, wait_for_http

pytestmark = pytest.mark.slow
PORT_OPTIONS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
                "node-manager-port", "object-manager-port")


@dataclass(frozen=True)
class Cluster:
    address: str
    head_log: Path

    def log_tail(self) -> str:
        """For failure messages: a head that died (e.g. someone ran `ray stop`) says so here."""
        return self.head_log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="fzray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ports = {option: free_port() for option in PORT_OPTIONS}
    command = [shutil.which("ray", path=os.path.dirname(sys.executable)), "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "true",
               "--dashboard-host", "127.0.0.1", "--temp-dir", temp_dir, "--disable-usage-stats",
               *(arg for option, port in ports.items() for arg in (f"--{option}", str(port)))]
    # The job runs `facezip run`: the venv's bin must be on the PATH the head hands its workers.
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    log_path = Path(temp_dir, "head.log")
    with open(log_path, "wb") as log:
        head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        wait_for_http(f"{address}/api/version", head, log_path, "ray start --head", timeout=180)
        yield Cluster(address, log_path)
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop(head: subprocess.Popen) -> None:
    """SIGTERM makes `ray start --block` stop the processes it started; then its group, to be sure."""
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=10)


@pytest.fixture
def tiny_pipeline(tmp_path: Path) -> Path:
    """Archive the demo faces with a random-weight codec, then verify the archive: real stages, quick."""
    data = build_demo_dataset(str(tmp_path / "data"))
    torch.manual_seed(0)
    (tmp_path / "random.pt").write_bytes(weights_to_bytes(create_codec("binarized-cae").freeze()))
    definition = tmp_path / "tiny.yaml"
    definition.write_text(
        "pipeline: {name: tiny}\n"
        f"data: {{faces: {data['faces']}, model: {tmp_path / 'random.pt'}}}\n"
        "config: {codec: {weights: '${data.model}'}, archive: {num_actors: 1}}\n"
        "stages:\n"
        "  archive: {uses: archive, with: {src: '${data.faces}'}}\n"
        "  verify: {uses: verify, with: {dest: '${stages.archive.output}'}}\n")
    return definition


def test_submit_a_pipeline_follow_it_and_find_its_outputs(cluster: Cluster, tiny_pipeline: Path, capsys) -> None:
    root, cluster_address = tiny_pipeline.parent / "run", cluster.address
    assert main(["submit", str(tiny_pipeline), "--address", cluster_address,
                 f"pipeline.root={root}", "tracking.enabled=false"]) == 0, cluster.log_tail()
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_")

    assert main(["status", job_id, "--address", cluster_address]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] in {"PENDING", "RUNNING", "SUCCEEDED"}
    assert status["entrypoint"].startswith("facezip run 0-tiny.yaml pipeline.root=")  # the shipped copy

    assert main(["logs", job_id, "--address", cluster_address, "--follow"]) == 0
    log = capsys.readouterr().out
    assert "[2/2] verify (verify): running" in log
    assert main(["status", job_id, "--address", cluster_address]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "SUCCEEDED", log[-3000:] + cluster.log_tail()

    archived = json.loads((root / "archive" / "_SUCCESS.json").read_text())
    verified = json.loads((root / "verify" / "_SUCCESS.json").read_text())
    assert archived["archived"] == 28 and verified["ok"] is True and verified["records"] == 28
    summary = json.loads((root / "_PIPELINE.json").read_text())
    assert [stage["status"] for stage in summary["stages"].values()] == ["ran", "ran"]


def test_status_of_an_unknown_job_is_an_error(cluster: Cluster, capsys) -> None:
    assert main(["status", "raysubmit_nope", "--address", cluster.address]) == 2
    error = capsys.readouterr().err
    assert "job raysubmit_nope" in error and "does not exist" in error, error + cluster.log_tail()
