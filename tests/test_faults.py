"""Faults of the world around facezip: S3 down, gone mid-run or without credentials, a full disk.
Each is one clear line naming the storage and the cause, soon (no hang), and leaves no debris;
a rerun completes the archive."""

from __future__ import annotations

import resource
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from archive_support import CLI, weights_overrides
from conftest import free_port
from facezip.cli import main
from facezip.models import create_codec
from facezip.models.loading import weights_to_bytes


@pytest.fixture
def no_s3_cache():
    """A fresh S3 filesystem per call: fsspec caches them, with the credentials they were made with."""
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()
    yield
    S3FileSystem.clear_instance_cache()


def test_s3_endpoint_down_is_one_line(no_s3_cache, capsys):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["verify", "s3://bucket/archive", f"storage.endpoint_url={endpoint}", "tracking.enabled=false",
                 "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'facezip verify: error: S3: Could not connect to the endpoint URL: "{endpoint}/bucket/archive'
                   '/index" (-v for the traceback)']


def test_missing_credentials_are_one_line(s3_endpoint, no_s3_cache, monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert main(["verify", "s3://bucket/archive", f"storage.endpoint_url={s3_endpoint}", "tracking.enabled=false",
                 "--quiet"]) == 1
    assert "facezip verify: error: S3: no credentials found" in capsys.readouterr().err


def _small_file_limit() -> None:
    """In the child: files may not grow past 256 bytes (EFBIG, as a full disk gives ENOSPC)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))


def test_full_disk_fails_each_write_clearly_and_leaves_nothing(tmp_path, astronaut):
    torch.manual_seed(0)
    weights = tmp_path / "cae.pt"
    weights.write_bytes(weights_to_bytes(create_codec("binarized-cae").freeze()))
    for i in range(3):
        Image.fromarray(np.ascontiguousarray(astronaut[i * 40 : i * 40 + 64, :64])).save(tmp_path / f"in{i}.png")
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([*CLI, "compress", *(str(tmp_path / f"in{i}.png") for i in range(3)), "-o", str(out),
                          *weights_overrides(weights), "--quiet"], capture_output=True, text=True, timeout=300,
                         preexec_fn=_small_file_limit)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.count("cannot write") == 3 and "0 of 3 done, 3 failed" in run.stderr
    assert list(out.iterdir()) == []  # no .tmp-* and no zero-byte .fz files


@pytest.mark.slow
def test_s3_stopping_mid_archive_is_one_line_and_a_rerun_completes(ray_local, no_s3_cache, tmp_path, capsys):
    from moto.server import ThreadedMotoServer

    from archive_support import index_rows, write_crops, write_random_weights
    from facezip.infra.storage import Storage

    weights = write_random_weights(tmp_path / "random.pt")
    write_crops(tmp_path / "crops", 48, seed=5)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    storage = Storage(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    storage.fs("s3://faults")[0].mkdir("faults")
    args = ["archive", str(tmp_path / "crops"), "s3://faults/archive", *weights_overrides(weights),
            f"storage.endpoint_url={storage.endpoint_url}", "storage.max_attempts=1", "tracking.enabled=false",
            "archive.records_per_shard=4", "archive.batch_size=4", "archive.num_actors=1", "--quiet"]

    def stop_after_first_commit() -> None:
        fs = storage.fs("s3://faults")[0]
        while not fs.exists("faults/archive/index/00000.parquet"):
            time.sleep(0.05)
        server.stop()

    stopper = threading.Thread(target=stop_after_first_commit, daemon=True)
    stopper.start()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facezip archive: error: S3: Could not connect to the endpoint URL")
    stopper.join(timeout=10)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # the same S3, back again
    server.start()
    try:
        assert main(args) == 0
        rows = index_rows("s3://faults/archive", storage)
        assert sorted(r["id"] for r in rows) == sorted(p.stem for p in (tmp_path / "crops").glob("*.png"))
        assert main(["verify", "s3://faults/archive", f"storage.endpoint_url={storage.endpoint_url}",
                     "tracking.enabled=false", "--quiet"]) == 0
    finally:
        server.stop()


def test_verify_of_a_deleted_bucket_or_an_empty_prefix_fails(s3_bucket, capsys):
    storage, bucket = s3_bucket
    common = [f"storage.endpoint_url={storage.endpoint_url}", "tracking.enabled=false", "--quiet"]
    assert main(["verify", f"{bucket}/archive", *common]) == 1
    assert f"no archive at {bucket}/archive" in capsys.readouterr().err
    assert main(["verify", "s3://no-such-bucket-facezip/archive", *common]) == 1
    assert "no archive at s3://no-such-bucket-facezip/archive" in capsys.readouterr().err


@pytest.mark.slow
def test_bucket_deleted_mid_archive_is_one_line_and_a_rerun_completes(ray_local, s3_bucket, tmp_path, capsys):
    from archive_support import index_rows, write_crops, write_random_weights

    storage, bucket = s3_bucket
    fs = storage.fs(bucket)[0]
    name = bucket.removeprefix("s3://")
    weights = write_random_weights(tmp_path / "random.pt")
    write_crops(tmp_path / "crops", 48, seed=6)
    args = ["archive", str(tmp_path / "crops"), f"{bucket}/archive", *weights_overrides(weights),
            f"storage.endpoint_url={storage.endpoint_url}", "storage.max_attempts=1", "tracking.enabled=false",
            "archive.records_per_shard=4", "archive.batch_size=4", "archive.num_actors=1", "--quiet"]

    def delete_bucket_once_the_run_began() -> None:  # its journal is there; its workers are starting
        while not fs.exists(f"{name}/archive/_RUN.json"):
            time.sleep(0.01)
        fs.rm(f"{name}/archive", recursive=True)
        fs.rmdir(name)

    deleter = threading.Thread(target=delete_bucket_once_the_run_began, daemon=True)
    deleter.start()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"facezip archive: error: storage: cannot write {bucket}/archive/"), err
    assert "bucket does not exist" in err[0]
    deleter.join(timeout=10)

    fs.mkdir(name)  # the bucket is back, empty: the rerun archives everything
    assert main(args) == 0
    ids = sorted(r["id"] for r in index_rows(f"{bucket}/archive", storage))
    assert ids == sorted(p.stem for p in (tmp_path / "crops").glob("*.png"))


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (a real full disk: ENOSPC); needs the privilege to mount."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_full_disk_mid_archive_is_one_line_leaves_no_debris_and_a_rerun_completes(ray_local, small_disk, tmp_path,
                                                                                  capsys, monkeypatch):
    from archive_support import shard_bytes, write_crops, write_random_weights

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    weights = write_random_weights(tmp_path / "random.pt")
    write_crops(tmp_path / "crops", 64, seed=7)
    args = lambda dest: ["archive", str(tmp_path / "crops"), str(dest), *weights_overrides(weights),  # noqa: E731
                         "tracking.enabled=false", "archive.records_per_shard=4", "archive.batch_size=4",
                         "archive.num_actors=1", "--quiet"]
    assert main(args(tmp_path / "reference")) == 0
    capsys.readouterr()

    dest = small_disk / "archive"
    assert main(args(dest)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facezip archive: error: disk full or file too large writing "), err
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert files and not [p for p in files if ".tmp-" in p.name or p.stat().st_size == 0]

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # space again
    assert main(args(dest)) == 0
    assert shard_bytes(dest) == shard_bytes(tmp_path / "reference")
    parts = lambda root: {p.name: p.read_bytes() for p in (root / "index").glob("*.parquet")}  # noqa: E731
    assert parts(dest) == parts(tmp_path / "reference")
    assert main(["verify", str(dest), "tracking.enabled=false", "--quiet"]) == 0
