"""The detect stage's worker: one slice of inputs → its own ``faces/`` and ``rejected/`` Parquet parts.

Part ``n`` holds the outcomes of input slice ``n`` (``part-NNNNN.parquet``), so a rerun writes
the same files, and each part is committed (written atomically) as soon as its slice is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from facezip.infra.readers import read_bytes
from facezip.infra.slices import InputSlice
from facezip.infra.storage import Storage, join, parquet_bytes
from facezip.tasks.detect.config import DetectConfig
from facezip.tasks.detect.faces import FACE_COLUMNS, REJECTED_COLUMNS, DetectFaces
from facezip.tasks.detect.output import FACES_DIR, REJECTED_DIR
from facezip.tasks.detect.report import Counts, count_outcomes

ROW_GROUP_ROWS = 256  # small row groups: archive reads a slice of rows without the whole file


def part_url(dest: str, folder: str, number: int) -> str:
    return join(dest, folder, f"part-{number:05d}.parquet")


@dataclass
class PartResult:
    number: int
    counts: Counts
    samples: list[bytes] = field(default_factory=list)  # the slice's first crops, for the contact sheet


class DetectWorker:
    """Setup: one MTCNN (``DetectFaces``). Per slice: read, detect in batches, commit both parts."""

    def __init__(self, detect_cfg: DetectConfig, device: str, dest: str, storage: Storage, samples: int) -> None:
        self.faces = DetectFaces(detect_cfg, device)
        self.batch_size, self.dest, self.storage, self.samples = detect_cfg.batch_size, dest, storage, samples

    def process(self, job: InputSlice) -> PartResult:
        inputs = read_bytes(job.refs, self.storage)
        outcomes = pa.concat_tables([self.faces(inputs.slice(start, self.batch_size))
                                     for start in range(0, len(inputs), self.batch_size)])
        kept = pc.is_null(outcomes["reason"])
        faces = outcomes.filter(kept).select(FACE_COLUMNS)
        rejected = outcomes.filter(pc.invert(kept)).select(REJECTED_COLUMNS)
        for folder, table in ((FACES_DIR, faces), (REJECTED_DIR, rejected)):
            if table.num_rows:
                self.storage.write_bytes_atomic(part_url(self.dest, folder, job.number),
                                                parquet_bytes(table, ROW_GROUP_ROWS))
        return PartResult(job.number, count_outcomes(len(job), outcomes),
                          faces["image_bytes"].slice(0, self.samples).to_pylist())
