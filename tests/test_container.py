"""Every malformed ``.fz`` file fails with a clear error, before any large allocation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from facezip.models import create_codec
from facezip.models.coding import decode_file, encode_images
from facezip.models.container import MAGIC, PAYLOAD_XZ, FzFormatError, FzHeader, pack_fz, read_header, unpack_fz


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return create_codec("binarized-cae").freeze()


@pytest.fixture(scope="module")
def good(codec) -> bytes:
    return encode_images(codec, [np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)])[0]


def _header_end(data: bytes) -> int:
    return len(MAGIC) + 3 + data[len(MAGIC) + 2] + 8 + 12


def test_header_fields(codec, good):
    header, stream, coding = read_header(good)
    assert header == FzHeader("binarized-cae", codec.weights_hash(), 24, 40)
    assert coding == PAYLOAD_XZ and stream[:6] == b"\xfd7zXZ\x00"  # a standard xz stream


def test_stored_payloads_and_version_1_files_read():
    header = FzHeader("binarized-cae", "ab" * 8, 16, 16)
    stored = pack_fz(header, b"rans bytes", stored=True)
    assert unpack_fz(stored) == (header, b"rans bytes")
    as_v1 = bytearray(pack_fz(header, b"codes"))
    del as_v1[len(MAGIC) + 1]  # version 1 had no coding byte and always xz
    as_v1[len(MAGIC)] = 1
    assert unpack_fz(bytes(as_v1)) == (header, b"codes")
    with pytest.raises(FzFormatError, match="larger than the image can need"):
        unpack_fz(pack_fz(header, bytes(100_000), stored=True))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"PNG!" + d[4:], "wrong magic"),
    (lambda d: b"", "wrong magic"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "unknown .fz format version 9"),
    (lambda d: d[:10], "truncated header"),
    (lambda d: d[:-7], "truncated data"),
    (lambda d: d + b"junk", "stray bytes"),
    (lambda d: d[: _header_end(d) + 20] + bytes(len(d) - _header_end(d) - 20), "xz data is corrupt"),
])
def test_malformed_files(codec, good, mutate, message):
    with pytest.raises(FzFormatError, match=message):
        decode_file(codec, mutate(good))


def test_unknown_codec_is_named(codec):
    data = pack_fz(FzHeader("mystery-codec", "00" * 8, 8, 8), b"x")
    with pytest.raises(FzFormatError, match="unknown codec 'mystery-codec'"):
        decode_file(codec, data)


def test_weights_hash_mismatch_names_both(codec, good):
    other = create_codec("binarized-cae").freeze()
    with pytest.raises(FzFormatError, match=f"needs weights {codec.weights_hash()}.*has {other.weights_hash()}"):
        decode_file(other, good)


def test_payload_size_must_fit_dimensions(codec):
    data = pack_fz(FzHeader(codec.name, codec.weights_hash(), 16, 16), b"\x00" * 5)
    with pytest.raises(FzFormatError, match="does not fit a 16×16 image"):
        decode_file(codec, data)


@pytest.mark.parametrize("height, width", [(0, 10), (10, 0), (1 << 20, 8), (60000, 60000)])
def test_absurd_dimensions_refused_before_allocating(codec, good, height, width):
    pos = _header_end(good) - 12
    data = good[:pos] + struct.pack("<II", height, width) + good[pos + 8 :]
    with pytest.raises(FzFormatError, match="absurd image size"):
        unpack_fz(data)


def test_xz_bomb_is_refused(codec):
    # a valid stream that inflates far past anything a 8×8 image could need
    data = pack_fz(FzHeader(codec.name, codec.weights_hash(), 8, 8), bytes(10_000_000))
    with pytest.raises(FzFormatError, match="expands beyond"):
        unpack_fz(data)
