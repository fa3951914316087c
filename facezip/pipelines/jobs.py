"""Pipelines as Ray Jobs: ``facezip run`` submitted to a cluster's Jobs API (dashboard port 8265).

The cluster runs the facezip installed on its nodes (``ray up ray_cluster.yaml`` syncs and
installs this checkout), so a job ships only what the command line names: the pipeline file
and ``--config`` files, as the job's ``working_dir``. A bundled pipeline (``demo``) ships nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

log = logging.getLogger(__name__)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
AGENT_WAIT_SECONDS = 120
# Forwarded to the job when set here: where its runs are tracked. Credentials are not: the
# cluster's nodes get theirs from their instance role / environment.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")


@dataclass(frozen=True)
class Submission:
    job_id: str
    entrypoint: str


def client_for(address: str | None) -> JobSubmissionClient:
    return JobSubmissionClient(address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS)


def submit_pipeline(client: JobSubmissionClient, pipeline: str, overrides: Sequence[str] = (),
                    config_files: Sequence[str] = (), start_from: str | None = None) -> Submission:
    """Submit ``facezip run PIPELINE …`` as a Ray Job; returns its id at once."""
    with tempfile.TemporaryDirectory(prefix="facezip-job-") as staging:
        shipped = {path: _stage_file(path, staging) for path in (pipeline, *config_files) if Path(path).is_file()}
        command = ["facezip", "run", shipped.get(pipeline, pipeline)]
        for path in config_files:
            command += ["--config", shipped.get(path, path)]
        if start_from:
            command += ["--from", start_from]
        entrypoint = shlex.join([*command, *overrides])
        runtime_env: dict = {"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
        if shipped:
            runtime_env["working_dir"] = staging
        job_id = _submit_when_ready(client, entrypoint=entrypoint, runtime_env=runtime_env,
                                    metadata={"facezip.pipeline": Path(pipeline).stem})
    return Submission(job_id, entrypoint)


def _submit_when_ready(client: JobSubmissionClient, wait_seconds: float = AGENT_WAIT_SECONDS, **job) -> str:
    """A head that has just started answers before its job agent is up ("No available agent to
    submit job, please try again later"): do as it says for a while, then give up with its error."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            log.info("the cluster's job agent is not up yet; retrying")
            time.sleep(3)


def follow_logs(client: JobSubmissionClient, job_id: str, write=print) -> JobStatus:
    """Stream the job's log until it ends; returns its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk, end="", flush=True)

    asyncio.run(tail())
    return client.get_job_status(job_id)


def _stage_file(path: str, staging: str) -> str:
    """Copy ``path`` into the job's working dir under a unique name; the name the job sees."""
    name = f"{len(os.listdir(staging))}-{Path(path).name}"
    shutil.copyfile(path, Path(staging, name))
    return name
