"""Reading records back: an id → its index row → a ranged read of exactly its bytes → pixels."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from facezip.infra.storage import Storage, join
from facezip.models.coding import check_header_matches, decode_payload, decode_payloads
from facezip.models.container import FzFormatError, FzHeader
from facezip.models.registry import Codec
from facezip.tasks.archive.layout import read_index, shard_url, unpack_record


class RecordError(ValueError):
    """A record that is missing, damaged or does not match its index row."""


@dataclass
class RestoreResult:
    id: str
    output: str | None = None
    error: str | None = None


class ArchiveReader:
    """The index of an archive in memory (latest version of each id) and ranged record reads."""

    def __init__(self, root: str, storage: Storage) -> None:
        self.root, self.storage = root, storage
        self.index = read_index(root, storage)
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
            raise RecordError(f"id {image_id!r} is not in the archive") from None

    def read_record(self, row: dict) -> bytes:
        """Exactly the record's bytes, checked against the sha256 in the index."""
        try:
            record = self.storage.read_range(shard_url(self.root, row["shard"]), row["offset"], row["length"])
        except (OSError, ValueError) as exc:
            raise RecordError(f"cannot read record {row['id']!r}: {exc}") from None
        check_sha256(record, row)
        return record

    def restore(self, codec: Codec, image_id: str) -> np.ndarray:
        row = self.row(image_id)
        return decode_record(codec, self.read_record(row), row)


def check_sha256(record: bytes, row: dict) -> None:
    if hashlib.sha256(record).hexdigest() != row["sha256"]:
        raise RecordError(f"record {row['id']!r} (shard {row['shard']}, offset {row['offset']}) is damaged: "
                          "sha256 does not match the index")


def decode_record(codec: Codec, record: bytes, row: dict) -> np.ndarray:
    return decode_payload(codec, *open_record(codec, record, row))


def open_record(codec: Codec, record: bytes, row: dict) -> tuple[FzHeader, bytes]:
    """The header and payload of a sha256-checked record, after checking they fit ``codec``."""
    try:
        header, payload = unpack_record(record, row["height"], row["width"])
        check_header_matches(header, codec)
    except FzFormatError as exc:
        raise RecordError(f"record {row['id']!r}: {exc}") from None
    return header, payload


def restore_records(codec: Codec, root: str, ids: Iterable[str] | None, output: str, storage: Storage,
                    progress: bool = True, batch_size: int = 32) -> list[RestoreResult]:
    """Restore ``ids`` (None: all) as PNG files ``output/<id>.png``; one result per id.

    Records are read and checked one by one (a damaged one fails alone) and decoded in batches."""
    reader = ArchiveReader(root, storage)
    wanted = list(ids) if ids is not None else reader.ids()
    results = [RestoreResult(image_id, join(output, f"{image_id}.png")) for image_id in wanted]
    with tqdm(total=len(results), desc="restore", unit="img", disable=not progress) as bar:
        for start in range(0, len(results), batch_size):
            chunk = results[start : start + batch_size]
            opened = [(result, item) for result in chunk if (item := _open(reader, codec, result)) is not None]
            images = decode_payloads(codec, [item for _, item in opened], batch_size)
            for (result, _), pixels in zip(opened, images):
                _write_png(result, pixels, storage)
            bar.update(len(chunk))
    return results


def _open(reader: ArchiveReader, codec: Codec, result: RestoreResult) -> tuple[FzHeader, bytes] | None:
    try:
        row = reader.row(result.id)
        return open_record(codec, reader.read_record(row), row)
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
