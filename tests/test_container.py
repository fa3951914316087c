"""Every malformed ``.fz`` file fails with a clear error, before any large allocation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from facezip.models import create_codec
from facezip.models.coding import decode_file, encode_images
from facezip.models.container import MAGIC, PAYLOAD_XZ, FzFormatError, FzHeader, crc32, pack_fz, read_header, unpack_fz


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return create_codec("binarized-cae").freeze()


@pytest.fixture(scope="module")
def good(codec) -> bytes:
    return encode_images(codec, [np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)])[0]


def _header_end(data: bytes) -> int:
    """Where a version 3 file's payload starts (after the sizes and the CRC32)."""
    return len(MAGIC) + 3 + data[len(MAGIC) + 2] + 8 + 12 + 4


def as_version(data: bytes, version: int) -> bytes:
    """A version 3 file rewritten as the older version 1 (no coding byte, always xz) or 2 (no CRC32)."""
    end = _header_end(data)
    old = bytearray(data[: end - 4] + data[end:])
    old[len(MAGIC)] = version
    if version == 1:
        del old[len(MAGIC) + 1]
    return bytes(old)


def with_crc(data: bytes) -> bytes:
    """A version 3 file whose CRC32 is recomputed (an edit made by a writer, not by damage)."""
    end = _header_end(data)
    return data[: end - 4] + struct.pack("<I", crc32(data[: end - 4], data[end:])) + data[end:]


def test_header_fields(codec, good):
    header, stream, coding = read_header(good)
    assert header == FzHeader("binarized-cae", codec.weights_hash(), 24, 40)
    assert coding == PAYLOAD_XZ and stream[:6] == b"\xfd7zXZ\x00"  # a standard xz stream


def test_stored_payloads_and_version_1_files_read():
    header = FzHeader("binarized-cae", "ab" * 8, 16, 16)
    stored = pack_fz(header, b"rans bytes", stored=True)
    assert unpack_fz(stored) == (header, b"rans bytes")
    assert unpack_fz(as_version(pack_fz(header, b"codes"), 1)) == (header, b"codes")
    assert unpack_fz(as_version(stored, 2)) == (header, b"rans bytes")
    with pytest.raises(FzFormatError, match="larger than the image can need"):
        unpack_fz(pack_fz(header, bytes(100_000), stored=True))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"PNG!" + d[4:], "wrong magic"),
    (lambda d: b"", "wrong magic"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "unknown .fz format version 9"),
    (lambda d: d[:10], "truncated header"),
    (lambda d: d[:-7], "truncated data"),
    (lambda d: d + b"junk", "stray bytes"),
    (lambda d: d[: _header_end(d) + 20] + bytes(len(d) - _header_end(d) - 20), "checksum mismatch"),
    (lambda d: with_crc(d[: _header_end(d) + 20] + bytes(len(d) - _header_end(d) - 20)), "xz data is corrupt"),
    (lambda d: as_version(d, 2)[: _header_end(d) + 16] + bytes(len(d) - _header_end(d) - 20), "xz data is corrupt"),
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
    with pytest.raises(FzFormatError, match="payload of 5 bytes is implausibly short for a 16×16 image"):
        decode_file(codec, data)


@pytest.mark.parametrize("height, width", [(0, 10), (10, 0), (1 << 20, 8), (60000, 60000)])
def test_absurd_dimensions_refused_before_allocating(codec, good, height, width):
    pos = _header_end(good) - 16
    data = with_crc(good[:pos] + struct.pack("<II", height, width) + good[pos + 8 :])
    with pytest.raises(FzFormatError, match="absurd image size"):
        unpack_fz(data)


@pytest.mark.parametrize("position", ["header", "payload"])
def test_every_flipped_byte_is_caught_by_the_checksum(good, position):
    end = _header_end(good)
    for offset in range(len(MAGIC) + 1, end - 4) if position == "header" else range(end, len(good)):
        damaged = bytearray(good)
        damaged[offset] ^= 0x10
        with pytest.raises(FzFormatError):
            unpack_fz(bytes(damaged))


def test_decode_limit_is_facezips_and_named(codec):
    data = pack_fz(FzHeader(codec.name, codec.weights_hash(), 8192, 8192), b"\0" * 32, stored=True)
    with pytest.raises(FzFormatError, match=r"8192×8192 = 67108864 pixels is over facezip's decode limit of "
                                            r"16777216 pixels \(codec.max_decode_pixels\)"):
        unpack_fz(data)
    with pytest.raises(FzFormatError, match="decode limit of 4096 pixels"):
        unpack_fz(pack_fz(FzHeader(codec.name, codec.weights_hash(), 80, 80), b"x", stored=True), max_pixels=4096)


def test_xz_bomb_is_refused(codec):
    # a valid stream that inflates far past anything a 8×8 image could need
    data = pack_fz(FzHeader(codec.name, codec.weights_hash(), 8, 8), bytes(10_000_000))
    with pytest.raises(FzFormatError, match="expands beyond"):
        unpack_fz(data)
