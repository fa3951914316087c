"""Exactly once: kill the archive process (SIGKILL) or one of its Ray workers, rerun, and get
the archive of an uninterrupted run, byte for byte, with no duplicate and no missing id."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from archive_support import (
    CLI,
    archive_config,
    command_line,
    descendants,
    index_rows,
    shard_bytes,
    weights_overrides,
    write_crops,
    write_random_weights,
)
from facezip.tasks.archive import run_archive, run_verify

N_CROPS = 64
# Small shards and batches so the run commits shard after shard for a few seconds.
SETTINGS = ["archive.records_per_shard=4", "archive.batch_size=4", "archive.num_actors=1"]


@pytest.fixture(scope="module")
def setup(ray_local, tmp_path_factory):
    """Inputs, weights and the archive of an uninterrupted run, every run timestamped alike."""
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "1767225600"  # the index's archived_at: the CLI processes inherit it
    root = tmp_path_factory.mktemp("kill")
    weights = write_random_weights(root / "random.pt")
    write_crops(root / "crops", N_CROPS, seed=11)
    run_archive(archive_config(weights, *SETTINGS), str(root / "crops"), str(root / "reference"), progress=False)
    yield root, weights
    if saved is None:
        del os.environ["SOURCE_DATE_EPOCH"]
    else:
        os.environ["SOURCE_DATE_EPOCH"] = saved


def start_archive(root: Path, weights: Path, dest: Path) -> subprocess.Popen:
    """The CLI in its own process with its own local Ray (not the test session's)."""
    overrides = [*weights_overrides(weights), "tracking.enabled=false", "ray.address=local", *SETTINGS]
    return subprocess.Popen([*CLI, "archive", str(root / "crops"), str(dest), *overrides, "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_first_commit(process: subprocess.Popen, dest: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not (dest / "index" / "00000.parquet").exists():
        assert process.poll() is None, "the archive process ended before committing a shard"
        assert time.monotonic() < deadline, "no shard committed in time"
        time.sleep(0.005)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (its Ray head and workers), by pid."""
    family = [process.pid, *descendants(process.pid)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") and not _is_zombie(pid) for pid in family[1:]):
        assert time.monotonic() < deadline, "processes of the killed run are still alive"
        time.sleep(0.1)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def assert_same_archive(dest: Path, reference: Path) -> None:
    """Shards and index parts byte for byte; no duplicate, no missing id."""
    assert shard_bytes(dest) == shard_bytes(reference)
    parts = lambda root: {p.name: p.read_bytes() for p in sorted((root / "index").glob("*.parquet"))}  # noqa: E731
    assert parts(dest) == parts(reference)
    ids = [r["id"] for r in index_rows(str(dest))]
    assert len(ids) == len(set(ids)) == N_CROPS


def test_rerun_after_the_process_is_killed_gives_the_same_archive(setup, tmp_path):
    root, weights = setup
    dest = tmp_path / "archive"
    process = start_archive(root, weights, dest)
    wait_for_first_commit(process, dest)
    kill_tree(process)
    assert not (dest / "_SUCCESS.json").exists()
    committed = len(list((dest / "index").glob("*.parquet")))
    assert 1 <= committed < N_CROPS // 4, "the kill should land mid-way"

    (dest / "shards" / f"{committed:05d}.xz.tmp-0badf00d").write_bytes(b"a write the kill cut short")

    cfg = archive_config(weights, *SETTINGS)
    summary = run_archive(cfg, str(root / "crops"), str(dest), progress=False)
    assert summary["skipped"] == 4 * committed and summary["archived"] == N_CROPS - 4 * committed
    assert_same_archive(dest, root / "reference")
    assert not list(dest.glob("*/*.tmp-*")) and run_verify(cfg, str(dest), progress=False)["ok"]


def test_killing_a_ray_worker_mid_way_loses_nothing(setup, tmp_path):
    root, weights = setup
    dest = tmp_path / "archive"
    process = start_archive(root, weights, dest)
    try:
        wait_for_first_commit(process, dest)
        workers = [pid for pid in descendants(process.pid) if "ArchiveWorker" in command_line(pid)]
        assert workers, "no encoder actor process found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=240)  # Ray restarts the actor and retries its batches
    finally:
        if process.poll() is None:
            kill_tree(process)
    assert process.returncode == 0

    run_archive(archive_config(weights, *SETTINGS), str(root / "crops"), str(dest), progress=False)
    assert_same_archive(dest, root / "reference")
