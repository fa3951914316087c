"""A SIGKILLed driver takes the local Ray it started along (issue #20), and only that one: a driver
that joined a cluster leaves the cluster's processes running."""

from __future__ import annotations

import select
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.slow

# A stage in miniature: init_ray with the project's ray section, an actor pool mapping batches,
# a line on stdout once batches flow ("RUNNING <gcs address>"), then waiting to be killed.
DRIVER = """
import sys, time
import ray
from ray.data import ActorPoolStrategy
from facezip.pipelines.config import default_config
from facezip.infra.ray_runtime import init_ray

class Slow:
    def __call__(self, batch):
        time.sleep(0.01)
        return batch

cfg = default_config()
cfg.ray.address = sys.argv[1] or None
cfg.ray.num_cpus, cfg.ray.log_to_driver, cfg.ray.progress_bars = 4, False, False  # room for 2 drivers
init_ray(cfg.ray)
rows = ray.data.range(10**5, override_num_blocks=10**4)  # small blocks: the first comes out at once
rows = rows.map_batches(Slow, batch_size=10, compute=ActorPoolStrategy(size=1), num_cpus=0.5)
for _ in rows.iter_batches(batch_size=10):
    print("RUNNING", ray.get_runtime_context().gcs_address, flush=True)
    time.sleep(3600)
"""


def start_driver(address: str = "") -> tuple[subprocess.Popen, str]:
    """The driver and the GCS address it prints once its actor pool is working."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, address], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([driver.stdout], [], [], 120)
    line = driver.stdout.readline().split() if ready else []
    if line[:1] != ["RUNNING"]:
        processes = family(driver) if driver.poll() is None else []
        kill(driver)
        survivors(processes, timeout=0)
        pytest.fail(f"the driver's map did not run within 120 s (exit status {driver.wait()})")
    return driver, line[1]


def family(driver: subprocess.Popen) -> dict[psutil.Process, str]:
    """Everything the driver started, the raylet's agents and workers included, with its command."""
    return {process: f"{process.pid} {' '.join(process.cmdline())}"
            for process in psutil.Process(driver.pid).children(recursive=True)}


def is_worker(command: str) -> bool:
    """A task or actor worker: named ``ray::…`` once running, ``…/default_worker.py`` while starting."""
    return ("ray::" in command and "Agent" not in command) or "default_worker.py" in command


def alive(processes: dict[psutil.Process, str]) -> list[str]:
    living = []
    for process, command in processes.items():
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(command)
        except psutil.NoSuchProcess:
            pass
    return living


def kill(driver: subprocess.Popen) -> None:
    """SIGKILL the driver alone, as the OOM killer or ``kill -9`` would."""
    driver.kill()
    driver.wait()


def survivors(processes: dict[psutil.Process, str], timeout: float) -> list[str]:
    """Those of ``processes`` alive after up to ``timeout`` s; killed then, not to outlive the test."""
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive(processes)
    for process, command in processes.items():
        if command in left:
            process.kill()
    return left


def test_a_killed_driver_leaves_no_process_of_its_local_ray():
    driver, _ = start_driver()
    processes = family(driver)
    assert any("raylet" in command for command in processes.values())
    kill(driver)
    assert not survivors(processes, timeout=15)


def test_a_killed_driver_that_joined_a_cluster_leaves_the_cluster_running():
    head, address = start_driver()
    cluster = family(head)
    try:
        joined, _ = start_driver(address)
        assert not family(joined), "a driver that joins should start no process of its own"
        kill(joined)
        time.sleep(3)  # what wrongly swept the cluster would have done so by now
        # Workers come and go with tasks and jobs; the cluster is its servers and the raylet's agents.
        lasting = {process: command for process, command in cluster.items() if not is_worker(command)}
        lost = [command for command in lasting.values() if command not in alive(lasting)]
        assert not lost, f"the cluster lost processes to the joined driver's death: {lost}"
    finally:
        kill(head)
        assert not survivors(cluster, timeout=15)
