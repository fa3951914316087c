"""Local paths and fsspec URLs (``s3://…``) behind one small interface.

``Storage`` is picklable, so Ray tasks and actors carry it; S3 credentials come from the
usual AWS environment variables and config files, the endpoint from ``storage.endpoint_url``.
S3 calls have connect and read timeouts and a bounded number of attempts, so an unreachable
endpoint is an error in seconds, not a hang; ``storage_failure`` words such errors as one line.
"""

from __future__ import annotations

import errno
import os
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.core import url_to_fs


@dataclass(frozen=True)
class Storage:
    endpoint_url: str | None = None
    anon: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3

    @classmethod
    def from_config(cls, storage_cfg: Any) -> "Storage":
        return cls(endpoint_url=storage_cfg.endpoint_url, anon=bool(storage_cfg.anon),
                   connect_timeout_s=storage_cfg.connect_timeout_s, read_timeout_s=storage_cfg.read_timeout_s,
                   max_attempts=storage_cfg.max_attempts)

    def options(self, url: str) -> dict[str, Any]:
        if not is_remote(url) or not url.startswith(("s3://", "s3a://")):
            return {}
        # botocore's timeouts and retries, and s3fs's own retry loop, bounded the same way
        # no listing cache: workers in other processes add files the driver must see when it lists
        opts: dict[str, Any] = {"anon": self.anon, "use_listings_cache": False, "config_kwargs": {
            "connect_timeout": self.connect_timeout_s, "read_timeout": self.read_timeout_s,
            "retries": {"max_attempts": self.max_attempts, "mode": "standard"}}}
        if self.endpoint_url:
            opts["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return opts

    def fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem of ``url`` and the path inside it."""
        fs, path = url_to_fs(url, **self.options(url))
        if hasattr(fs, "retries"):  # s3fs retries every call 5 times on top of botocore's attempts
            fs.retries = 2
        return fs, path

    def read_bytes(self, url: str) -> bytes:
        fs, path = self.fs(url)
        return fs.cat_file(path)

    def read_range(self, url: str, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``start`` (a ranged GET on S3)."""
        fs, path = self.fs(url)
        data = fs.cat_file(path, start=start, end=start + length)
        if len(data) != length:
            raise OSError(f"{url}: wanted {length} bytes at offset {start}, got {len(data)} (file too short)")
        return data

    def write_bytes_atomic(self, url: str, data: bytes) -> None:
        """Readers never see a partial file: a temporary name then a rename locally; on
        object stores a single PUT is already all-or-nothing."""
        fs, path = self.fs(url)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if not is_remote(url):
            os.makedirs(parent or ".", exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                with open(tmp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:  # a full disk or an interrupt leaves no temporary or empty file behind
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            return
        try:
            fs.pipe_file(path, data)
        except OSError as exc:  # s3fs words some failures without the key (e.g. a bucket deleted mid-run)
            raise OSError(f"cannot write {url}: {exc}") from exc

    def remove(self, url: str) -> None:
        """Delete a file or a folder and everything below it; nothing there is fine."""
        fs, path = self.fs(url)
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def exists(self, url: str) -> bool:
        fs, path = self.fs(url)
        return fs.exists(path)


def storage_failure(exc: BaseException) -> str | None:
    """One line for a failure of the storage itself (endpoint unreachable, no credentials, access
    denied, disk full, …), looking through the chain of causes; None for any other error."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    seen = exc
    while seen is not None:
        if isinstance(seen, NoCredentialsError):
            return ("S3: no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an AWS profile, "
                    "or storage.anon=true for a public bucket)")
        if isinstance(seen, (BotoCoreError, ClientError)):
            return f"S3: {seen}"
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return f"disk full or file too large writing {seen.filename or 'output'}: {seen.strerror}"
        seen = seen.__cause__ or seen.__context__
    return f"storage: {exc}" if isinstance(exc, OSError) else None


def parquet_bytes(table, row_group_rows: int | None = None) -> bytes:
    """``table`` as a zstd Parquet file, written the same way every time (reruns give the same bytes)."""
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_rows)
    return sink.getvalue()


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join URL or path segments with '/', whatever the platform."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
