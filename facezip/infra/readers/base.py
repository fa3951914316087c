"""The reader interface, the registry of layouts and of stage output folders, and byte reading.

A reader streams ``ImageRef``s (``refs()``); its rows with bytes come out as a plain iterator
(``rows()``, no Ray) or as a Ray dataset whose bytes are read inside Ray tasks
(``to_ray_dataset()``). A file that cannot be read still comes out as a row, with
``image_bytes`` null and ``read_error`` saying why, so every input can be accounted for.

Layouts register with ``@register_reader``; ``auto`` picks the first whose ``recognises`` says
so, in registration order, else ``folder``. A stage whose output folder other stages read
registers where its table is (``@register_output_folder``), so infra knows no stage's layout.
"""

from __future__ import annotations

import bisect
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from facezip.infra.registry import Registry
from facezip.infra.storage import Storage

IMAGE_COLUMN = "image_bytes"
REF_SCHEMA = pa.schema([("id", pa.string()), ("source_uri", pa.string()),
                        ("identity", pa.string()), ("split", pa.string())])
ROW_COLUMNS = (*REF_SCHEMA.names, IMAGE_COLUMN, "read_error")
PART_COLUMN, ROW_COLUMN = "part", "row"  # where a Parquet input's bytes are: file URL, row in that file
FALLBACK_LAYOUT = "folder"
_REFS_PER_BLOCK = 64  # refs per Ray read task: small blocks spread the work over every detect actor


class ReaderError(ValueError):
    """A dataset location that cannot be read as the asked-for (or any) layout."""


@dataclass(frozen=True)
class ImageRef:
    id: str  # stable and unique within the dataset, e.g. "000001", "Aaron_Eckhart_0001", "a/b/photo"
    source_uri: str
    identity: str | None = None
    split: str | None = None


@dataclass
class Reader(ABC):
    """Base of the layouts: ``refs()`` is the one listing, everything else derives from it."""

    src: str
    storage: Storage
    layout: str = FALLBACK_LAYOUT
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Where a layout reads its ``metadata`` (LFW: its pairs)."""

    @classmethod
    def recognises(cls, fs, path: str, names: set[str]) -> bool:
        """Whether the folder ``path`` (holding files and folders ``names``) is in this layout."""
        return False

    @abstractmethod
    def refs(self) -> Iterator[ImageRef]:
        """Every image of the dataset, in a stable order, streamed."""

    def count(self) -> int:
        """How many images ``refs()`` yields (streams the listing again; holds nothing)."""
        return sum(1 for _ in self.refs())

    def ref_tables(self) -> Iterator[pa.Table]:
        """``refs()`` as Arrow tables (``REF_SCHEMA``), streamed; ``read_bytes`` adds their bytes."""
        return _ref_tables(self.refs())

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row with its bytes (``ROW_COLUMNS``), read here, without Ray."""
        for table in self.ref_tables():
            yield from read_bytes(table, self.storage).select(ROW_COLUMNS).to_pylist()

    def to_ray_dataset(self):
        """Columns ``ROW_COLUMNS``; bytes are read in Ray tasks."""
        import ray
        import ray.data

        blocks = [ray.put(table) for table in self.ref_tables()]  # the driver keeps references, not rows
        if not blocks:
            raise ReaderError(f"{self.src}: no images found (layout {self.layout})")
        return ray.data.from_arrow_refs(blocks).map_batches(
            read_bytes, fn_kwargs={"storage": self.storage}, batch_format="pyarrow", batch_size=None)


_READERS: Registry[type[Reader]] = Registry("reader layout")
_OUTPUT_FOLDERS: dict[str, Callable[[str, Storage], str | None]] = {}


def register_reader(layout: str) -> Callable[[type[Reader]], type[Reader]]:
    """Class decorator: make a reader available as ``layout`` (and to ``auto`` through ``recognises``)."""

    def decorator(cls: type[Reader]) -> type[Reader]:
        return _READERS.register(layout, cls)

    return decorator


def register_output_folder(stage: str) -> Callable:
    """Function decorator for ``table_of(src, storage) -> str | None``: the table that ``stage``'s
    output folder ``src`` reads as (None: ``src`` is not such a folder)."""

    def decorator(table_of: Callable[[str, Storage], str | None]) -> Callable[[str, Storage], str | None]:
        _OUTPUT_FOLDERS[stage] = table_of
        return table_of

    return decorator


def layouts() -> tuple[str, ...]:
    return ("auto", *_READERS)


def reader_class(layout: str) -> type[Reader]:
    if layout not in _READERS:
        raise ReaderError(f"unknown layout '{layout}' (choose from {', '.join(layouts())})")
    return _READERS[layout]


def recognised_layout(fs, path: str, names: set[str]) -> str:
    return next((layout for layout, cls in _READERS.items() if cls.recognises(fs, path, names)), FALLBACK_LAYOUT)


def output_table(src: str, storage: Storage) -> str | None:
    """The table to read when ``src`` is a registered stage's output folder (detect's: its face crops)."""
    return next((table for table_of in _OUTPUT_FOLDERS.values() if (table := table_of(src, storage))), None)


def read_bytes(refs: pa.Table, storage: Storage) -> pa.Table:
    """The refs with ``image_bytes`` and ``read_error`` (null unless the read failed) appended:
    from each ``source_uri``, or from the Parquet ``part`` and ``row`` a ParquetReader listed."""
    if PART_COLUMN in refs.column_names:
        contents, errors = _read_parquet_refs(refs, storage)
    else:
        read = [_read_file(uri, storage) for uri in refs["source_uri"].to_pylist()]
        contents, errors = [content for content, _ in read], [error for _, error in read]
    return refs.append_column(IMAGE_COLUMN, pa.array(contents, pa.binary())).append_column(
        "read_error", pa.array(errors, pa.string()))


def arrow_filesystem(fs):
    """A pyarrow filesystem over an fsspec one, for pyarrow and Ray Data readers/writers."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fs))


def _read_file(uri: str, storage: Storage) -> tuple[bytes | None, str | None]:
    try:
        return storage.read_bytes(uri), None
    except (OSError, ValueError) as exc:  # missing, permission, network: the row survives
        return None, f"{type(exc).__name__}: {exc}"


def _read_parquet_refs(refs: pa.Table, storage: Storage) -> tuple[list, list]:
    contents: list[bytes | None] = [None] * refs.num_rows
    errors: list[str | None] = [None] * refs.num_rows
    parts, rows = refs[PART_COLUMN].to_pylist(), refs[ROW_COLUMN].to_pylist()
    for part, positions in itertools.groupby(range(refs.num_rows), key=parts.__getitem__):
        positions = list(positions)
        try:
            values = _parquet_rows(part, [rows[p] for p in positions], storage)
        except (OSError, pa.ArrowException) as exc:  # the rows survive, with the reason
            values, errors_here = [None] * len(positions), f"{part}: {type(exc).__name__}: {exc}"
            for p in positions:
                errors[p] = errors_here
        for p, value in zip(positions, values):
            contents[p] = value
    return contents, errors


def _parquet_rows(url: str, rows: list[int], storage: Storage) -> list[bytes | None]:
    """The image bytes of ``rows`` of one Parquet file, reading only the row groups that hold them."""
    import pyarrow.parquet as pq

    fs, path = storage.fs(url)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        starts = list(itertools.accumulate((parquet.metadata.row_group(g).num_rows
                                            for g in range(parquet.metadata.num_row_groups)), initial=0))
        first, last = bisect.bisect_right(starts, min(rows)) - 1, bisect.bisect_right(starts, max(rows)) - 1
        table = parquet.read_row_groups(range(first, last + 1), columns=[IMAGE_COLUMN])
    return table.column(IMAGE_COLUMN).take([row - starts[first] for row in rows]).to_pylist()


def _ref_tables(refs: Iterator[ImageRef]) -> Iterator[pa.Table]:
    chunk: list[dict[str, Any]] = []
    for ref in refs:
        chunk.append(asdict(ref))
        if len(chunk) == _REFS_PER_BLOCK:
            yield pa.Table.from_pylist(chunk, schema=REF_SCHEMA)
            chunk = []
    if chunk:
        yield pa.Table.from_pylist(chunk, schema=REF_SCHEMA)
