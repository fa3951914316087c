"""``facezip submit / status / logs`` against a real Ray cluster started by this test, which
runs the bundled demo pipeline (every stage, shrunk by overrides) as a Ray Job.

The head runs as ``ray start --head --block`` in its own session with its own ports and
``--temp-dir``. It is stopped by signalling that process (which shuts down what it started)
and then its process group, never with ``ray stop``: that stops every Ray on the machine,
including other test runs'.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from facezip.cli import main
from tests.conftest import REPO_ROOT, free_port, wait_for_http

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
def cluster(tmp_path_factory):
    temp_dir = tempfile.mkdtemp(prefix="fzray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ports = {option: free_port() for option in PORT_OPTIONS}
    command = [shutil.which("ray", path=os.path.dirname(sys.executable)), "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "true",
               "--dashboard-host", "127.0.0.1", "--temp-dir", temp_dir, "--disable-usage-stats",
               # OS-chosen worker ports: every other Ray on this machine starts its workers in the
               # default 10002-19999 range, and a port taken between Ray's check and the bind kills the worker
               "--min-worker-port", "0", "--max-worker-port", "0",
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
        try:
            _keep_logs(temp_dir, tmp_path_factory.mktemp("ray-head-logs"))
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _keep_logs(temp_dir: str, kept: Path) -> None:
    """The head's logs (dashboard, job agent, raylet, job drivers) outlive its short temp dir,
    for failures under load that only the dashboard's own log explains."""
    logs = Path(temp_dir, "session_latest", "logs")
    if logs.is_dir():
        shutil.copytree(logs, kept, dirs_exist_ok=True, ignore_dangling_symlinks=True)
        print(f"ray head logs kept in {kept}")


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


DEMO_PIPELINE = REPO_ROOT / "configs" / "pipelines" / "demo.yaml"
DEMO_STAGES = ["data", "detect", "pretrain", "finetune", "archive", "verify", "evaluate"]
# Every stage of the demo, shrunk: 2 people besides the astronaut (12 faces), 2 training steps
# per phase, one detect actor, 2 JPEG qualities (the fewest a Bjøntegaard anchor takes).
SHRINK = ("stages.data.with.people=2", "train.max_steps_per_epoch=2", "train.batch_size=2",
          "train.max_val_images=2", "detect.num_actors=1", "evaluate.jpeg_qualities=[10,90]", "evaluate.samples=2")


def test_submit_the_demo_pipeline_follow_it_and_find_its_outputs(cluster: Cluster, tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    root, address = tmp_path / "demo", cluster.address
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # submit forwards it to the job
    code = main(["submit", str(DEMO_PIPELINE), "--address", address, "--follow", f"pipeline.root={root}", *SHRINK])
    out, err = capsys.readouterr()
    job_id = out.splitlines()[0]
    assert code == 0 and f"job {job_id}: SUCCEEDED" in err, out[-4000:] + err[-2000:] + cluster.log_tail()
    assert job_id.startswith("raysubmit_")
    for number, stage in enumerate(DEMO_STAGES, start=1):
        assert f"[{number}/7] {stage} (" in out  # the runner's progress, streamed by --follow

    assert main(["status", job_id, "--address", address]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "SUCCEEDED"
    assert status["entrypoint"].startswith("facezip run 0-demo.yaml pipeline.root=")  # the shipped copy
    assert main(["logs", job_id, "--address", address]) == 0
    assert "[7/7] evaluate (evaluate): running" in capsys.readouterr().out
    assert main(["logs", job_id, "--address", address, "--follow"]) == 0  # a finished job: its status at once
    assert f"job {job_id}: SUCCEEDED" in capsys.readouterr().err

    _check_demo_outputs(root)
    _check_mlflow_runs(tracking_uri, root)


def _check_demo_outputs(root: Path) -> None:
    summary = json.loads((root / "_PIPELINE.json").read_text())
    assert {name: stage["status"] for name, stage in summary["stages"].items()} == dict.fromkeys(DEMO_STAGES, "ran")
    done = {stage: json.loads((root / stage / "_SUCCESS.json").read_text()) for stage in DEMO_STAGES}
    assert done["data"]["face_count"] == 12
    faces = done["detect"]["faces"]
    assert 8 <= faces <= 12 and done["detect"]["inputs"] == 12
    assert done["pretrain"]["metrics"]["step"] == done["finetune"]["metrics"]["step"] == 2
    assert done["finetune"]["weights"] == str(root / "finetune" / "weights" / "comcnn-reccnn.pt")  # the default
    assert done["archive"]["archived"] == faces and done["archive"]["model"] == done["finetune"]["weights"]
    assert pq.read_table(root / "archive" / "index").num_rows == faces
    assert done["verify"]["ok"] is True and done["verify"]["records"] == faces
    with open(root / "evaluate" / "summary.csv", newline="") as table:
        rows = {row["label"]: row for row in csv.DictReader(table)}
    curve = [f"facezip:comcnn-reccnn-l{level}" for level in range(1, 9)]  # one model, its eight named qualities
    assert list(rows) == ["reference-raw", *curve, "jpeg-q10", "jpeg-q90"]
    assert all(int(row["images"]) == 12 for row in rows.values())
    assert float(rows["jpeg-q10"]["bpp_mean"]) < float(rows["jpeg-q90"]["bpp_mean"])


def _check_mlflow_runs(tracking_uri: str, root: Path) -> None:
    """One parent run for the pipeline, one child per stage, in the store the job was told to use."""
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("facezip").experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert [parent.info.run_name for parent in parents] == ["pipeline-demo"]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["pipeline.root"] == str(root)
    children = {run.info.run_name: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == sorted(["demo-data", "detect", "train-pretrain", "train-finetune", "archive",
                                       "verify", "evaluate"])
    assert all(child.info.status == "FINISHED" for child in children.values())
    assert parent.data.metrics["archive.archived"] == children["archive"].data.metrics["archived"]


def test_status_of_an_unknown_job_is_an_error(cluster: Cluster, capsys) -> None:
    assert main(["status", "raysubmit_nope", "--address", cluster.address]) == 2
    error = capsys.readouterr().err
    assert "job raysubmit_nope" in error and "does not exist" in error, error + cluster.log_tail()
