"""Starting or joining Ray the same way in every stage."""

from __future__ import annotations

import logging
import os
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
    DataContext.get_current().enable_progress_bars = bool(ray_cfg.progress_bars)


def quiet_state_api_users() -> None:
    """Runs in every worker of a local Ray started without the dashboard. Ray Train's placement
    group cleaner asks the state API (served by the dashboard) whether the controller is alive
    every second, and warns each time it cannot: thousands of identical lines in a long run."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))
