"""Stage ``archive``: face images → Parquet-indexed xz shards; restore by id; verify.

``run_archive`` writes, ``restore_records``/``ArchiveReader`` read back, ``run_verify`` checks.
"""

from facezip.tasks.archive.restore import ArchiveReader, RecordError, restore_records
from facezip.tasks.archive.run import run_archive
from facezip.tasks.archive.verify import run_verify

__all__ = ["ArchiveReader", "RecordError", "restore_records", "run_archive", "run_verify"]
