"""Reading image datasets in the layouts facezip meets: CelebA, LFW, a folder or glob, Parquet,
and the output folders of stages that registered theirs (detect's reads as its face crops).

``open_reader(src, storage)`` picks the layout from the files present; ``Reader.rows()``
iterates rows with bytes without Ray, ``Reader.to_ray_dataset()`` reads them in Ray tasks.
A new layout is a ``Reader`` subclass under ``@register_reader(name)`` (``facezip/infra/readers/datasets.py``).
"""

from __future__ import annotations

import posixpath

from facezip.infra.readers.base import (
    IMAGE_COLUMN,
    PART_COLUMN,
    REF_SCHEMA,
    ROW_COLUMN,
    ROW_COLUMNS,
    ImageRef,
    Reader,
    ReaderError,
    arrow_filesystem,
    layouts,
    output_table,
    read_bytes,
    reader_class,
    recognised_layout,
    register_output_folder,
    register_reader,
)
from facezip.infra.readers.datasets import LfwPair, is_glob, lfw_id, parse_lfw_pairs
from facezip.infra.storage import Storage

__all__ = ["IMAGE_COLUMN", "PART_COLUMN", "REF_SCHEMA", "ROW_COLUMN", "ROW_COLUMNS", "ImageRef", "LfwPair", "Reader",
           "ReaderError", "arrow_filesystem", "detect_layout", "layouts", "lfw_id", "open_reader", "output_table",
           "parse_lfw_pairs", "read_bytes", "register_output_folder", "register_reader"]


def open_reader(src: str, storage: Storage | None = None, layout: str = "auto") -> Reader:
    """A reader for ``src`` (a local path or fsspec URL) in ``layout``, or the detected one.

    A registered stage's output folder (``register_output_folder``) reads as its table."""
    storage = storage or Storage()
    if layout != "auto":
        reader_class(layout)  # an unknown layout is refused before anything is listed
    if not is_glob(src) and not storage.exists(src):
        raise ReaderError(f"{src}: no such file or folder")
    if layout in ("auto", "parquet") and not is_glob(src):
        src = output_table(src, storage) or src
    layout = detect_layout(src, storage) if layout == "auto" else layout
    return reader_class(layout)(src, storage, layout)


def detect_layout(src: str, storage: Storage) -> str:
    """``folder`` for globs and plain folders; else the first registered layout that recognises the files."""
    if is_glob(src):
        return "folder"
    fs, path = storage.fs(src)
    if fs.isfile(path):
        if path.endswith(".parquet"):
            return "parquet"
        raise ReaderError(f"{src}: a single file is not a dataset (give its folder or a glob)")
    names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
    return recognised_layout(fs, path, names)
