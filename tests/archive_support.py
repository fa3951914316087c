"""Small inputs and configs shared by the archive tests (fast: tens of crops of 32…64 px)."""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from facezip.infra.storage import Storage
from facezip.models.container import FzHeader, crc32, xz_compress
from facezip.models.loading import weights_to_bytes
from facezip.models.registry import create_codec
from facezip.pipelines.config import load_config
from facezip.tasks.archive.integrity import read_index

CLI = [sys.executable, "-c", "import sys; from facezip.cli import main; sys.exit(main())"]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its Ray head and workers), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def weights_overrides(weights: Path, codec: str = "binarized-cae") -> list[str]:
    """The overrides that make a command use ``weights`` (not the default codec's)."""
    return [f"codec.weights={weights}", f"codec.name={codec}"]


def write_random_weights(path: Path, codec: str = "binarized-cae") -> Path:
    torch.manual_seed(0)
    model = create_codec(codec)
    model.refresh_entropy_model()  # entropy-coded codecs need their CDF tables, as trained weights carry them
    path.write_bytes(weights_to_bytes(model.freeze()))
    return path


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Face-crop-like content: low-frequency colour fields plus a little noise (compressible, not flat)."""
    coarse = rng.random((4, 4, 3))
    image = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR))
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def write_crops(folder: Path, count: int, seed: int = 0, prefix: str = "face") -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = (int(v) for v in rng.integers(32, 65, 2))
        path = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(smooth_image(rng, height, width)).save(path)
        paths.append(path)
    return paths


def archive_config(weights: Path, *overrides: str):
    return load_config([], [*weights_overrides(weights), "tracking.enabled=false", "device=cpu",
                            "archive.records_per_shard=8", "archive.batch_size=8", "archive.num_actors=1",
                            "ray.progress_bars=false", *overrides])


def index_rows(root: str, storage: Storage | None = None) -> list[dict]:
    return read_index(root, storage or Storage()).drop(["archived_at"]).to_pylist()


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.xz"))}


def write_detect_output(folder: Path, crops: list[Path]) -> None:
    """The detect stage's output as the archive reads it: ``faces/`` Parquet + ``_SUCCESS.json``."""
    (folder / "faces").mkdir(parents=True)
    table = pa.table({"id": [f"{p.stem}_0" for p in crops], "source_uri": [f"/photos/{p.stem}.jpg" for p in crops],
                      "identity": [f"person{i % 3}" for i in range(len(crops))], "split": ["train"] * len(crops),
                      "image_bytes": [p.read_bytes() for p in crops]})
    pq.write_table(table, folder / "faces" / "part-00000.parquet")
    (folder / "_SUCCESS.json").write_text("{}")


def check_shards_are_xz(root: Path) -> None:
    """Every shard is one valid xz stream: ``xz -t`` and ``xz -l`` accept it (where the xz
    program is installed) and Python's lzma decodes it."""
    shards = sorted((root / "shards").glob("*.xz"))
    assert shards
    for shard in shards:
        lzma.decompress(shard.read_bytes(), format=lzma.FORMAT_XZ)
        if shutil.which("xz"):
            for flag in ("-t", "-l"):
                subprocess.run(["xz", flag, str(shard)], check=True, capture_output=True)


def legacy_record(header: FzHeader, payload: bytes, lzma2_options: dict | None = None, stored: bool = False,
                  version: int = 2) -> bytes:
    """A record as facezip wrote them before version 3 (``pack_record`` of then, kept here to build
    old archives): ``FZR``, version, codec-name length + name, weights hash, height, width, a CRC32
    of all that and the payload (version 2), then the payload; the whole an xz stream of its own,
    with the header zero-padded to 16, unless ``stored``."""
    name = header.codec.encode("ascii")
    head = b"FZR" + bytes([version, len(name)]) + name + bytes.fromhex(header.weights_hash)
    head += struct.pack("<II", header.height, header.width)
    if version == 2:
        head += struct.pack("<I", crc32(head, payload))
    return head + payload if stored else xz_compress(head + bytes(-len(head) % 16) + payload, lzma2_options)
