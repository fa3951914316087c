"""Local paths and fsspec URLs (``s3://…``) behind one small interface.

``Storage`` is picklable, so Ray tasks and actors carry it; S3 credentials come from the
usual AWS environment variables and config files, the endpoint from ``storage.endpoint_url``.
"""

from __future__ import annotations

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

    @classmethod
    def from_config(cls, storage_cfg: Any) -> "Storage":
        return cls(endpoint_url=storage_cfg.endpoint_url, anon=bool(storage_cfg.anon))

    def options(self, url: str) -> dict[str, Any]:
        if not is_remote(url) or not url.startswith(("s3://", "s3a://")):
            return {}
        opts: dict[str, Any] = {"anon": self.anon}
        if self.endpoint_url:
            opts["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return opts

    def fs(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem of ``url`` and the path inside it."""
        return url_to_fs(url, **self.options(url))

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
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            return
        fs.pipe_file(path, data)

    def exists(self, url: str) -> bool:
        fs, path = self.fs(url)
        return fs.exists(path)


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def join(base: str, *parts: str) -> str:
    """Join URL or path segments with '/', whatever the platform."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
