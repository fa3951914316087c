"""Starting or joining Ray the same way in every stage."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import ray

log = logging.getLogger(__name__)


def init_ray(ray_cfg: Any) -> None:
    """Join ``ray.address`` (or $RAY_ADDRESS), else start a local Ray; a no-op when already up.

    Progress bars follow ``ray.progress_bars``; the dashboard is off unless asked for, which
    keeps a local start to a few seconds on small machines.
    """
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = bool(ray_cfg.progress_bars)
    if ray.is_initialized():
        return
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": bool(ray_cfg.log_to_driver), "configure_logging": False}
    if address:
        log.info("joining Ray at %s", address)
        ray.init(address=address, **kwargs)
    else:
        if not ray_cfg.include_dashboard:
            kwargs["runtime_env"] = {"worker_process_setup_hook": "facezip.infra.ray_runtime.quiet_state_api_users"}
        ray.init(num_cpus=ray_cfg.num_cpus, include_dashboard=bool(ray_cfg.include_dashboard), **kwargs)
    _watch_for_driver_death()  # also after address="local", which starts a Ray too
    DataContext.get_current().enable_progress_bars = bool(ray_cfg.progress_bars)


# Ray ties what the driver starts itself (gcs_server, raylet, log monitor, ...) to the driver with
# PR_SET_PDEATHSIG, but not the raylet's children: its dashboard and runtime-env agents notice the
# raylet's death, then report it to the dead GCS with a hard-coded 60 s timeout before exiting, and
# workers still starting wait long for the raylet too. So a SIGKILLed driver leaves them behind. This
# sweeper waits for EOF on a pipe from the driver (the driver died or its session is over), then
# SIGKILLs the session's processes: those given a path in the session directory as a --flag=PATH,
# and those titled "ray::..." (setproctitle hides their arguments) holding a file there (their logs).
# It sweeps until a pass finds none, so that nothing forked meanwhile is left. (Ray's own reaper,
# used where PDEATHSIG is missing, would first move the driver out of the terminal's process group.)
_SWEEPER = """
import os, signal, sys, time
sys.stdin.buffer.read()
given, real = sys.argv[1], os.path.realpath(sys.argv[1])
inside = lambda path, top: path == top or path.startswith(top + "/")
def ours(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        args = handle.read().decode(errors="replace").split("\\0")
    if any(arg.startswith("--") and inside(arg.partition("=")[2], given) for arg in args):
        return True
    if not args[0].startswith("ray::"):
        return False
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if inside(os.readlink(f"/proc/{pid}/fd/{fd}"), real):
                return True
        except OSError:
            pass
    return False
for _ in range(20):
    found = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if ours(pid):
                os.kill(int(pid), signal.SIGKILL)
                found += 1
        except OSError:
            pass
    if not found:
        break
    time.sleep(0.25)
"""
_sweeper: subprocess.Popen | None = None


def _watch_for_driver_death() -> None:
    """Start the sweeper where this process started its Ray (never for a joined cluster) and Ray
    fate-shares with PR_SET_PDEATHSIG (Linux; elsewhere Ray's reaper or job objects take the tree)."""
    global _sweeper
    node = ray._private.worker._global_node
    if not (sys.platform.startswith("linux") and getattr(node, "kernel_fate_share", False)):
        return
    if _sweeper is not None:  # a previous session, shut down since: let its sweeper finish
        _sweeper.stdin.close()
        _sweeper.wait()
    # Its own session, so the terminal's Ctrl-C goes to the driver only and the driver shuts Ray down.
    _sweeper = subprocess.Popen([sys.executable, "-S", "-c", _SWEEPER, node.get_session_dir_path()],
                                stdin=subprocess.PIPE, start_new_session=True)


def quiet_state_api_users() -> None:
    """Runs in every worker of a local Ray started without the dashboard. Ray Train's placement
    group cleaner asks the state API (served by the dashboard) whether the controller is alive
    every second, and warns each time it cannot: thousands of identical lines in a long run."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))
