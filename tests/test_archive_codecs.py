"""Every registered codec's archive is standard xz: each shard passes ``xz -t`` and ``xz -l``
and Python's lzma decodes it, entropy-coded payloads included, and restore gives back the pixels
of a direct decode."""

from __future__ import annotations

import lzma
import random
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from archive_support import archive_config, check_shards_are_xz, write_crops, write_random_weights
from facezip.infra.storage import Storage
from facezip.models.coding import decode_file, encode_images
from facezip.models.loading import load_codec
from facezip.models.registry import available_codecs
from facezip.tasks.archive import restore_records, run_archive
from facezip.tasks.archive.xzblock import STREAM_HEAD, pack_chunks, pack_shard, unpack_chunks


def test_records_of_any_size_and_coding_make_one_xz_block_and_read_alone(tmp_path):
    """Stored and compressed records, over 64 KiB (several LZMA2 chunks) and tiny, in one shard:
    liblzma and the xz program read the whole stream, and each record decodes from its own bytes."""
    rng = random.Random(0)
    bodies = [rng.randbytes(n) for n in (5, 800, 70_000, 200_000)] + [b"face" * 20_000, bytes(100)]
    records = [pack_chunks(body, stored=True) for body in bodies[:4]]
    records += [pack_chunks(body, {"lc": 0, "lp": 4, "pb": 4}) for body in bodies]
    bodies = bodies[:4] + bodies
    shard = pack_shard(records)
    assert shard.startswith(STREAM_HEAD) and lzma.decompress(shard) == b"".join(bodies)
    offset = len(STREAM_HEAD)
    for record, body in zip(records, bodies):
        assert shard[offset : offset + len(record)] == record and unpack_chunks(record, len(body)) == body
        offset += len(record)
    if shutil.which("xz"):
        (tmp_path / "shard.xz").write_bytes(shard)
        listing = subprocess.run(["xz", "-l", "--robot", str(tmp_path / "shard.xz")], check=True,
                                 capture_output=True, text=True).stdout
        assert "\nfile\t1\t1\t" in listing  # one stream, one block
        subprocess.run(["xz", "-t", str(tmp_path / "shard.xz")], check=True)


@pytest.mark.parametrize("name", available_codecs())
def test_every_codec_archives_to_xz_shards_that_restore(ray_local, tmp_path, name):
    weights = write_random_weights(tmp_path / f"{name}.pt", name)
    crops = write_crops(tmp_path / "crops", 6, seed=7)
    cfg = archive_config(weights, f"codec.name={name}", "archive.records_per_shard=4")
    assert run_archive(cfg, str(tmp_path / "crops"), str(tmp_path / "archive"), progress=False)["archived"] == 6
    check_shards_are_xz(tmp_path / "archive")

    codec = load_codec(name, str(weights))
    results = restore_records(codec, str(tmp_path / "archive"), None, str(tmp_path / "out"), Storage(),
                              progress=False).results
    assert [r.error for r in results] == [None] * 6
    for path in crops:
        direct = decode_file(codec, encode_images(codec, [np.asarray(Image.open(path).convert("RGB"))])[0])
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png")), direct)
