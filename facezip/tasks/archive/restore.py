"""Reading records back: an id → its index row → a ranged read of exactly its bytes → pixels.

Only index parts that pass their checksum are trusted (the others are reported as problems and
cost only their own records), and a record is written only under the output folder."""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from facezip.infra.storage import Storage, join
from facezip.models.coding import decode_payloads
from facezip.models.container import DEFAULT_MAX_DECODE_PIXELS, FzFormatError, FzHeader, check_dimensions
from facezip.models.store import Codecs, CodecStore
from facezip.tasks.archive.integrity import archive_problems, load_index
from facezip.tasks.archive.layout import max_record_bytes, row_header, shard_url, unpack_record, unsafe_id


class RecordError(ValueError):
    """A record that is missing, damaged or does not match its index row."""


@dataclass
class RestoreResult:
    id: str
    output: str | None = None
    error: str | None = None


@dataclass
class Restored:
    results: list[RestoreResult]
    problems: list[dict]  # {"shard", "problem"}: index parts not trusted, shards missing or unindexed


class ArchiveReader:
    """The trusted index of an archive in memory (latest version of each id) and ranged record reads.
    ``problems`` lists the index parts left out (damaged, unreadable, unverifiable)."""

    def __init__(self, root: str, storage: Storage, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> None:
        self.root, self.storage, self.max_pixels = root, storage, max_pixels
        trusted = load_index(root, storage)
        self.index, self.problems = trusted.table, trusted.problems
        versions = self.index["version"].to_pylist()
        self._latest: dict[str, int] = {}
        for position, image_id in enumerate(self.index["id"].to_pylist()):
            best = self._latest.get(image_id)
            if best is None or versions[position] > versions[best]:
                self._latest[image_id] = position

    def ids(self) -> list[str]:
        return list(self._latest)

    def row(self, image_id: str) -> dict:
        try:
            return self.index.slice(self._latest[image_id], 1).to_pylist()[0]
        except KeyError:
            untrusted = f" (or in one of its {len(self.problems)} untrusted index parts)" if self.problems else ""
            raise RecordError(f"id {image_id!r} is not in the archive{untrusted}") from None

    def read_record(self, row: dict) -> bytes:
        """Exactly the record's bytes, checked against the sha256 in the index."""
        check_span(row)
        try:
            record = self.storage.read_range(shard_url(self.root, row["shard"]), row["offset"], row["length"])
        except (OSError, ValueError) as exc:
            raise RecordError(f"cannot read record {row['id']!r}: {exc}") from None
        check_sha256(record, row)
        return record

    def restore(self, codecs: Codecs, image_id: str) -> np.ndarray:
        row = self.row(image_id)
        return decode_record(codecs, self.read_record(row), row, self.max_pixels)


def check_span(row: dict) -> None:
    """An index row's offset and length are sane for its image size before anything is read (a
    damaged length of 2⁴⁰ must not become a 1 TB read)."""
    try:
        check_dimensions(row["height"], row["width"])
    except FzFormatError as exc:
        raise RecordError(f"record {row['id']!r}: index row has an {exc}") from None
    most = max_record_bytes(row["height"], row["width"])
    if not (0 <= row["offset"] and 0 < row["length"] <= most):
        raise RecordError(f"record {row['id']!r}: index row says {row['length']} bytes at offset {row['offset']}, "
                          f"impossible for a {row['height']}×{row['width']} record (at most {most} bytes)")


def check_sha256(record: bytes, row: dict) -> None:
    if hashlib.sha256(record).hexdigest() != row["sha256"]:
        raise RecordError(f"record {row['id']!r} (shard {row['shard']}, offset {row['offset']}) is damaged: "
                          "sha256 does not match the index")


def decode_record(codecs: Codecs, record: bytes, row: dict, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> np.ndarray:
    store = CodecStore.of(codecs)
    pixels = decode_opened(store, [open_record(store, record, row, max_pixels)])[0]
    if isinstance(pixels, str):
        raise RecordError(f"record {row['id']!r}: {pixels}")
    return pixels


def open_record(codecs: Codecs, record: bytes, row: dict,
                max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> tuple[FzHeader, bytes]:
    """The header and payload of a sha256-checked record, after checking ``codecs`` has the codec
    (by weights hash) that decodes it."""
    try:
        header = row_header(row)
        payload = unpack_record(record, header, max_pixels)
        CodecStore.of(codecs).find(header.codec, header.weights_hash)
    except FzFormatError as exc:
        raise RecordError(f"record {row['id']!r}: {exc}") from None
    return header, payload


def decode_opened(codecs: Codecs, items: list[tuple[FzHeader, bytes]], batch_size: int = 32) -> list[np.ndarray | str]:
    """Opened records → pixels, in order, or why a record does not decode; records of the same
    weights share batches, and a batch that fails is decoded record by record, so a bad payload
    costs only itself."""
    store = CodecStore.of(codecs)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (header, _) in enumerate(items):
        groups[header.codec, header.weights_hash].append(i)
    out: list[np.ndarray | str | None] = [None] * len(items)
    for (name, weights_hash), indices in groups.items():
        codec, group = store.find(name, weights_hash), [items[i] for i in indices]
        images = _decoded(decode_payloads, codec, group, batch_size)
        if isinstance(images, str):
            images = [_decoded(lambda item: decode_payloads(codec, [item])[0], item) for item in group]
        for i, image in zip(indices, images):
            out[i] = image
    return out  # type: ignore[return-value]


def _decoded(decode, *args):
    """``decode(*args)``, or the reason it failed as text."""
    try:
        return decode(*args)
    except (FzFormatError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__


def restore_records(codecs: Codecs, root: str, ids: Iterable[str] | None, output: str, storage: Storage,
                    progress: bool = True, batch_size: int = 32,
                    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> Restored:
    """Restore ``ids`` (None: all) as PNG files ``output/<id>.png``; one result per id, and the
    archive's problems (for all ids, also shards that no trusted index part names). ``codecs``:
    one codec, every rung of a rate ladder or a store (each record picks its codec by weights hash).

    Records are read and checked one by one (a damaged one fails alone) and decoded in batches."""
    codecs = CodecStore.of(codecs)
    reader = ArchiveReader(root, storage, max_pixels)
    problems = (archive_problems(root, storage) if ids is None else []) + reader.problems
    wanted = list(ids) if ids is not None else reader.ids()
    results = [_planned(image_id, output) for image_id in wanted]
    with tqdm(total=len(results), desc="restore", unit="img", disable=not progress) as bar:
        for start in range(0, len(results), batch_size):
            chunk = results[start : start + batch_size]
            opened = [(result, item) for result in chunk if (item := _open(reader, codecs, result)) is not None]
            images = decode_opened(codecs, [item for _, item in opened], batch_size)
            for (result, _), pixels in zip(opened, images):
                if isinstance(pixels, str):
                    result.output, result.error = None, f"record {result.id!r}: {pixels}"
                else:
                    _write_png(result, pixels, storage)
            bar.update(len(chunk))
    return Restored(results, problems)


def _planned(image_id: str, output: str) -> RestoreResult:
    """Where ``image_id`` is restored: ``output/<id>.png``; an id that would leave ``output``
    (absolute, ``..``, empty or ``.`` parts, backslashes, NUL) fails instead of being written."""
    why = unsafe_id(image_id)
    if why:
        return RestoreResult(image_id, None, f"id {image_id!r} is not a safe relative file name ({why}): "
                                             f"not written, it would land outside {output}")
    return RestoreResult(image_id, join(output, f"{image_id}.png"))


def _open(reader: ArchiveReader, codecs: CodecStore, result: RestoreResult) -> tuple[FzHeader, bytes] | None:
    if result.error:
        return None
    try:
        row = reader.row(result.id)
        return open_record(codecs, reader.read_record(row), row, reader.max_pixels)
    except RecordError as exc:
        result.output, result.error = None, str(exc)
        return None


def _write_png(result: RestoreResult, pixels: np.ndarray, storage: Storage) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    try:
        storage.write_bytes_atomic(result.output, buffer.getvalue())
    except OSError as exc:
        result.output, result.error = None, f"cannot write {result.output}: {exc}"
