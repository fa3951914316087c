"""detect's output folder: ``faces/`` and ``rejected/`` Parquet parts. Registered with the
readers, so every stage given a detect output reads its face crops (``faces/``)."""

from __future__ import annotations

import posixpath

from facezip.infra.readers import register_output_folder
from facezip.infra.storage import Storage, join

FACES_DIR, REJECTED_DIR = "faces", "rejected"


@register_output_folder("detect")
def faces_table(src: str, storage: Storage) -> str | None:
    """``src/faces`` when it holds Parquet parts (a detect output, or a table written like one)."""
    fs, path = storage.fs(join(src, FACES_DIR))
    return join(src, FACES_DIR) if fs.isdir(path) and fs.glob(posixpath.join(path, "*.parquet")) else None
