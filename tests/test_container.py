"""Every malformed ``.fz`` file fails with a clear error, before any large allocation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from facezip.models import create_codec
from facezip.models.coding import decode_file, encode_images
from facezip.models.container import (
    MAGIC,
    PAYLOAD_STORED,
    PAYLOAD_XZ,
    FzFormatError,
    FzHeader,
    crc32,
    pack_fz,
    parse_compact,
    parse_identity,
    read_header,
    read_varint,
    unpack_fz,
    varint,
)


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return create_codec("binarized-cae").freeze()


@pytest.fixture(scope="module")
def good(codec) -> bytes:
    return encode_images(codec, [np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)])[0]


def _header_end(data: bytes) -> int:
    """Where a file's payload starts (after the sizes and any CRC32), read without checking it."""
    version = data[len(MAGIC)]
    if version == 4:
        _, pos = read_varint(data, parse_compact(data, len(MAGIC) + 2)[1], "payload length")
        return pos + 4
    _, pos = parse_identity(data, len(MAGIC) + (1 if version == 1 else 2))
    return pos + 4 + (4 if version == 3 else 0)


def zero_payload_after(data: bytes, keep: int) -> bytes:
    """``data`` with its payload zeroed after the first ``keep`` bytes."""
    end = _header_end(data) + keep
    return data[:end] + bytes(len(data) - end)


def as_version(data: bytes, version: int) -> bytes:
    """A file rewritten as an older release wrote it: version 3 (the header spelled out, u32 sizes),
    2 (no CRC32) or 1 (no coding byte either, always xz)."""
    header, stream, coding = read_header(data)
    head = MAGIC + bytes([version, coding]) + header.identity() + struct.pack("<I", len(stream))
    if version == 3:
        return head + struct.pack("<I", crc32(head, stream)) + stream
    return (head[:5] + head[6:] if version == 1 else head) + stream


def with_crc(data: bytes) -> bytes:
    """A file whose CRC32 is recomputed (an edit made by a writer, not by damage)."""
    end = _header_end(data)
    return data[: end - 4] + struct.pack("<I", crc32(data[: end - 4], data[end:])) + data[end:]


def compact_file(codec_field: bytes, height: int, width: int, stream: bytes = b"x") -> bytes:
    """A version 4 file with any codec field and sizes (FzHeader refuses to write absurd ones)."""
    head = MAGIC + bytes([4, PAYLOAD_STORED]) + codec_field + bytes(8) + varint(height) + varint(width) + \
        varint(len(stream))
    return head + struct.pack("<I", crc32(head, stream)) + stream


def test_header_fields(codec, good):
    header, stream, coding = read_header(good)
    assert header == FzHeader("binarized-cae", codec.weights_hash(), 24, 40)
    assert coding == PAYLOAD_XZ and stream[:6] == b"\xfd7zXZ\x00"  # a standard xz stream


def test_stored_payloads_and_files_of_earlier_versions_read():
    header = FzHeader("binarized-cae", "ab" * 8, 16, 16)
    stored = pack_fz(header, b"rans bytes", stored=True)
    assert unpack_fz(stored) == (header, b"rans bytes")
    for version in (1, 2, 3):
        assert unpack_fz(as_version(pack_fz(header, b"codes"), version)) == (header, b"codes")
    assert unpack_fz(as_version(stored, 2)) == (header, b"rans bytes")
    with pytest.raises(FzFormatError, match="larger than the image can need"):
        unpack_fz(pack_fz(header, bytes(100_000), stored=True))


def test_the_compact_header_costs_25_bytes_for_a_face_and_spells_out_unlisted_codecs():
    face, payload = FzHeader("comcnn-reccnn", "ab" * 8, 160, 160), bytes(800)  # 0.25 bpp
    assert len(pack_fz(face, payload, stored=True)) - len(payload) == 25  # version 3: 44
    newer = FzHeader("a-newer-codec", "ab" * 8, 160, 160)
    assert read_header(pack_fz(newer, payload, stored=True))[0] == newer
    assert len(pack_fz(newer, payload, stored=True)) - len(payload) == 25 + len("a-newer-codec") + 1
    big = FzHeader("png", "00" * 8, 65536, 4096)
    assert read_header(pack_fz(big, b"p", stored=True))[0] == big


@pytest.mark.parametrize("codec_field, message", [
    (bytes([200]), "unknown codec id 200"),
    (bytes([0, 3]) + "é".encode("latin-1") * 3, "not ASCII"),
])
def test_bad_codec_fields_are_named(codec_field, message):
    with pytest.raises(FzFormatError, match=message):
        read_header(compact_file(codec_field, 8, 8))


def test_an_overlong_varint_is_refused():
    data = MAGIC + bytes([4, 0, 1]) + bytes(8) + b"\xff\xff\xff\xff\x01" + bytes(12)
    with pytest.raises(FzFormatError, match="height runs over 4 bytes"):
        read_header(data)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"PNG!" + d[4:], "wrong magic"),
    (lambda d: b"", "wrong magic"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "unknown .fz format version 9"),
    (lambda d: d[:10], "truncated header"),
    (lambda d: d[:-7], "truncated data"),
    (lambda d: d + b"junk", "stray bytes"),
    (lambda d: zero_payload_after(d, 20), "checksum mismatch"),
    (lambda d: with_crc(zero_payload_after(d, 20)), "xz data is corrupt"),
    (lambda d: zero_payload_after(as_version(d, 2), 16), "xz data is corrupt"),  # no CRC32 in version 2
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
def test_absurd_dimensions_refused_before_allocating(height, width):
    with pytest.raises(FzFormatError, match="absurd image size"):
        unpack_fz(compact_file(bytes([1]), height, width))
    with pytest.raises(FzFormatError, match="absurd image size"):  # and in a version 3 header
        unpack_fz(MAGIC + bytes([3, 1, 1]) + b"a" + bytes(8) + struct.pack("<III", height, width, 1) + bytes(5))


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
