"""Every registered codec's archive is standard xz: each shard passes ``xz -t`` and ``xz -l``
and Python's lzma decodes it, entropy-coded payloads included, and restore gives back the pixels
of a direct decode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from archive_support import archive_config, check_shards_are_xz, write_crops, write_random_weights
from facezip.infra.storage import Storage
from facezip.models.coding import decode_file, encode_images
from facezip.models.loading import load_codec
from facezip.models.registry import available_codecs
from facezip.tasks.archive import restore_records, run_archive


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
