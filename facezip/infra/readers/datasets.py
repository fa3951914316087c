"""The dataset layouts facezip meets, registered in the order ``auto`` tries them: Parquet,
CelebA, LFW, and a folder or glob of images (the fallback)."""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from facezip.infra.images import IMAGE_SUFFIXES
from facezip.infra.readers.base import (
    IMAGE_COLUMN,
    PART_COLUMN,
    REF_SCHEMA,
    ROW_COLUMN,
    ImageRef,
    Reader,
    ReaderError,
    arrow_filesystem,
    register_reader,
)
from facezip.infra.storage import Storage, is_remote, join

CELEBA_IDENTITY_FILE = "identity_CelebA.txt"
CELEBA_PARTITION_FILE = "list_eval_partition.txt"
CELEBA_IMAGE_DIRS = ("img_align_celeba", "img_celeba", "images")
CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}
LFW_PAIRS_FILE = "pairs.txt"
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class LfwPair:
    """One line of LFW's pairs.txt; ``same`` when both images show the same person."""

    fold: int
    id1: str
    id2: str
    same: bool


@register_reader("parquet")
class ParquetReader(Reader):
    """A Parquet dataset with an ``image_bytes`` column (facezip's own detect output reads this
    way). ``id``/``source_uri``/``identity``/``split`` are taken when present; without an ``id``
    column the id is a hash of the image bytes (identical images then share an id)."""

    @classmethod
    def recognises(cls, fs, path: str, names: set[str]) -> bool:
        return any(name.endswith(".parquet") for name in names)

    def refs(self) -> Iterator[ImageRef]:
        for table in self.ref_tables():
            for row in table.select(REF_SCHEMA.names).to_pylist():
                yield ImageRef(**row)

    def count(self) -> int:
        return self._dataset().count_rows()

    def ref_tables(self) -> Iterator[pa.Table]:
        """With ``part`` (the file's URL) and ``row`` (in that file): a worker reads just those rows' bytes."""
        dataset = self._dataset()
        if IMAGE_COLUMN not in dataset.schema.names:
            raise ReaderError(f"{self.src}: Parquet dataset has no '{IMAGE_COLUMN}' column "
                              f"(columns: {', '.join(dataset.schema.names)})")
        columns = [c for c in REF_SCHEMA.names if c in dataset.schema.names]
        columns += [] if "id" in columns else [IMAGE_COLUMN]
        for fragment in dataset.get_fragments():
            start = 0
            for batch in fragment.to_batches(columns=columns):
                table = pa.Table.from_pylist([_parquet_ref(row, self.src) for row in batch.to_pylist()],
                                             schema=REF_SCHEMA)
                part = pa.array([_uri_like(self.src, fragment.path)] * len(table))
                yield table.append_column(PART_COLUMN, part).append_column(
                    ROW_COLUMN, pa.array(range(start, start + len(table)), pa.int64()))
                start += len(table)

    def to_ray_dataset(self):
        import ray.data

        fs, path = self.storage.fs(self.src)
        dataset = ray.data.read_parquet(path, filesystem=arrow_filesystem(fs))
        return dataset.map_batches(_NormaliseParquetRows(self.src), batch_format="pyarrow", batch_size=None)

    def _dataset(self):
        import pyarrow.dataset as ds

        fs, path = self.storage.fs(self.src)
        return ds.dataset(path, format="parquet", filesystem=arrow_filesystem(fs))


@register_reader("celeba")
class CelebAReader(Reader):
    """``identity_CelebA.txt`` (the index, streamed line by line) + an image folder, with the
    train/val/test split from ``list_eval_partition.txt`` when present."""

    @classmethod
    def recognises(cls, fs, path: str, names: set[str]) -> bool:
        return CELEBA_IDENTITY_FILE in names

    def refs(self) -> Iterator[ImageRef]:
        image_dir = _celeba_image_dir(self.src, self.storage)
        splits = self._splits()
        fs, path = self.storage.fs(join(self.src, CELEBA_IDENTITY_FILE))
        with fs.open(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise ReaderError(f"{join(self.src, CELEBA_IDENTITY_FILE)} line {number}: "
                                      f"expected 'file identity', got {line.strip()!r}")
                name, identity = parts
                yield ImageRef(posixpath.splitext(name)[0], join(image_dir, name), identity, splits.get(name))

    def _splits(self) -> dict[str, str]:
        uri = join(self.src, CELEBA_PARTITION_FILE)
        if not self.storage.exists(uri):
            return {}
        fs, path = self.storage.fs(uri)
        with fs.open(path, "rt", encoding="utf-8") as lines:
            pairs = (line.split() for line in lines)
            return {p[0]: CELEBA_SPLITS.get(p[1], p[1]) for p in pairs if len(p) == 2}


@register_reader("lfw")
class LfwReader(Reader):
    """``<Name>/<Name>_NNNN.jpg`` below ``src`` or ``src/images``; ``metadata["pairs"]`` holds
    the parsed ``pairs.txt`` (a list of LfwPair) when the file is there."""

    def __post_init__(self) -> None:
        pairs_uri = join(self.src, LFW_PAIRS_FILE)
        if self.storage.exists(pairs_uri):
            self.metadata["pairs"] = parse_lfw_pairs(self.storage.read_bytes(pairs_uri).decode("utf-8"))

    @classmethod
    def recognises(cls, fs, path: str, names: set[str]) -> bool:
        return LFW_PAIRS_FILE in names or _looks_like_lfw(fs, path)

    def refs(self) -> Iterator[ImageRef]:
        image_root = _lfw_image_root(self.src, self.storage)
        fs, root_path = self.storage.fs(image_root)
        for file_path in walk_files(fs, root_path):
            rel = posixpath.relpath(file_path, root_path.rstrip("/"))
            if rel.count("/") == 1 and file_path.lower().endswith(IMAGE_SUFFIXES):
                person = rel.split("/")[0]
                yield ImageRef(posixpath.splitext(posixpath.basename(rel))[0],
                               _uri_like(self.src, file_path), person)


@register_reader("folder")
class FolderReader(Reader):
    """Every image below a folder (recursively, sorted) or matching a glob.

    The id is the path relative to the folder (or to the glob's fixed prefix) without its
    suffix, so ``a/img.jpg`` and ``b/img.jpg`` stay distinct."""

    def refs(self) -> Iterator[ImageRef]:
        fs, path = self.storage.fs(self.src)
        base, paths = ((_glob_base(path), iter(sorted(fs.glob(path)))) if is_glob(path)
                       else (path, walk_files(fs, path)))
        for file_path in paths:
            if file_path.lower().endswith(IMAGE_SUFFIXES):
                rel = posixpath.relpath(file_path, base.rstrip("/") or "/")
                yield ImageRef(posixpath.splitext(rel)[0], _uri_like(self.src, file_path))


def parse_lfw_pairs(text: str) -> list[LfwPair]:
    """LFW's pairs.txt: a ``folds n`` header, then per fold n same-person lines ``name i j``
    and n different-person lines ``name1 i name2 j``."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or len(lines[0]) != 2:
        raise ReaderError("pairs.txt: first line must be '<folds> <pairs per fold>'")
    per_fold = int(lines[0][1])
    pairs = []
    for number, parts in enumerate(lines[1:]):
        fold = number // (2 * per_fold) + 1
        if len(parts) == 3:
            pairs.append(LfwPair(fold, lfw_id(parts[0], parts[1]), lfw_id(parts[0], parts[2]), True))
        elif len(parts) == 4:
            pairs.append(LfwPair(fold, lfw_id(parts[0], parts[1]), lfw_id(parts[2], parts[3]), False))
        else:
            raise ReaderError(f"pairs.txt line {number + 2}: expected 3 or 4 fields, got {' '.join(parts)!r}")
    return pairs


def lfw_id(name: str, number: str | int) -> str:
    """The image id of LFW's ``name``, ``number`` (as in pairs.txt): ``Name_0001``."""
    return f"{name}_{int(number):04d}"


def is_glob(src: str) -> bool:
    return any(ch in src for ch in _GLOB_CHARS)


def walk_files(fs, path: str) -> Iterator[str]:
    """Files below ``path`` in sorted order, one directory listing at a time. Locally through
    os.walk, which (unlike fsspec's local walk) follows symlinked folders."""
    walk = os.walk(path, followlinks=True) if isinstance(fs, LocalFileSystem) else fs.walk(path)
    for root, dirs, files in walk:
        dirs.sort()  # in place: the walk then descends in this order
        for name in sorted(files):
            yield posixpath.join(root, name)


class _NormaliseParquetRows:
    """Ray batch function: give a Parquet table exactly the reader columns."""

    def __init__(self, src: str) -> None:
        self.src = src

    def __call__(self, table: pa.Table) -> pa.Table:
        if IMAGE_COLUMN not in table.column_names:
            raise ReaderError(f"{self.src}: Parquet dataset has no '{IMAGE_COLUMN}' column")
        names = table.column_names
        keep = [c for c in REF_SCHEMA.names if c in names] + ([] if "id" in names else [IMAGE_COLUMN])
        refs = [_parquet_ref(row, self.src) for row in table.select(keep).to_pylist()]
        out = pa.Table.from_pylist(refs, schema=REF_SCHEMA)
        return out.append_column(IMAGE_COLUMN, table.column(IMAGE_COLUMN).cast(pa.binary())).append_column(
            "read_error", pa.nulls(len(out), pa.string()))


def _parquet_ref(row: dict[str, Any], src: str) -> dict[str, Any]:
    ident = row.get("id") or hashlib.sha1(row.get(IMAGE_COLUMN) or b"").hexdigest()[:16]
    return {"id": ident, "source_uri": row.get("source_uri") or f"{src}#{ident}",
            "identity": row.get("identity"), "split": row.get("split")}


def _glob_base(pattern: str) -> str:
    fixed = pattern[:min(pattern.index(ch) for ch in _GLOB_CHARS if ch in pattern)]
    return fixed.rsplit("/", 1)[0] if "/" in fixed else ""


def _uri_like(src: str, file_path: str) -> str:
    """A listed file path written the way the user wrote ``src`` (with its scheme if any)."""
    if not is_remote(src):
        return file_path
    scheme = src.split("://", 1)[0]
    return f"{scheme}://{file_path}"


def _celeba_image_dir(src: str, storage: Storage) -> str:
    for name in CELEBA_IMAGE_DIRS:
        if storage.exists(join(src, name)):
            return join(src, name)
    raise ReaderError(f"{src}: CelebA layout needs an image folder ({', '.join(CELEBA_IMAGE_DIRS)})")


def _lfw_image_root(src: str, storage: Storage) -> str:
    images = join(src, "images")
    return images if storage.exists(images) else src


def _looks_like_lfw(fs, path: str) -> bool:
    """True when the first sub-folder holds ``<folder>_NNNN.<image>`` files."""
    for root in (posixpath.join(path, "images"), path):
        if not fs.isdir(root):
            continue
        folders = sorted(p for p in fs.ls(root, detail=False) if fs.isdir(p))
        if not folders:
            continue
        person = posixpath.basename(folders[0].rstrip("/"))
        files = [posixpath.basename(p) for p in fs.ls(folders[0], detail=False)]
        return bool(files) and all(posixpath.splitext(f)[0].rsplit("_", 1)[0] == person for f in files)
    return False
