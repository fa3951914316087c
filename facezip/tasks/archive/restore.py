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
from facezip.models.coding import decode_payload
from facezip.models.container import FzFormatError
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
    try:
        header, payload = unpack_record(record, row["height"], row["width"])
        return decode_payload(codec, header, payload)
    except FzFormatError as exc:
        raise RecordError(f"record {row['id']!r}: {exc}") from None


def restore_records(codec: Codec, root: str, ids: Iterable[str] | None, output: str, storage: Storage,
                    progress: bool = True) -> list[RestoreResult]:
    """Restore ``ids`` (None: all) as PNG files ``output/<id>.png``; one result per id."""
    reader = ArchiveReader(root, storage)
    results = []
    for image_id in tqdm(list(ids) if ids is not None else reader.ids(), desc="restore", unit="img",
                         disable=not progress):
        result = RestoreResult(image_id, join(output, f"{image_id}.png"))
        try:
            pixels = reader.restore(codec, image_id)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "PNG")
            storage.write_bytes_atomic(result.output, buffer.getvalue())
        except (RecordError, OSError) as exc:
            result.output, result.error = None, str(exc)
        results.append(result)
    return results
