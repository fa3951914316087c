"""A standard codec's file (AVIF, JPEG) stored with its header deflated against a fixed dictionary.

An 80 px AVIF file opens with ~275 bytes of ISOBMFF boxes (ftyp; meta with hdlr, pitm, iloc, iinf,
iprp: ispe, pixi, av1C, colr; the mdat box header) and the AV1 temporal delimiter and sequence
header: half the file at the rates faces are archived at, and nearly the same bytes in every
file. comcnn-reccnn's payload stores that header deflated (RFC 1951, zlib) against a fixed
dictionary of such headers — 12–20 bytes instead of 275 — and the rest of the file as it is;
``unpack`` gives the file back byte for byte (``facezip decompress --raw`` writes it for any
viewer). JPEG's header (tables and markers up to the scan) is packed the same way.

Layout: ``TAG``, the base codec's id, the raw-deflated header (self-terminating), the rest of the
file. A payload that is a plain file (earlier releases stored one) unpacks to itself. The
dictionaries are fixed forever: another dictionary needs another tag.
"""

from __future__ import annotations

import base64
import struct
import zlib

from facezip.models.container import FzFormatError, read_varint

TAG = 0xFA  # neither a JPEG's first byte (0xFF) nor an AVIF's (its ftyp box's size: 0x00)
BASE_IDS = {"jpeg": 1, "avif": 2}
BASE_NAMES = {number: name for name, number in BASE_IDS.items()}
MAX_HEADER_BYTES = 1 << 16
_AV1_TEMPORAL_DELIMITER, _AV1_SEQUENCE_HEADER = 2, 1
_JPEG_START_OF_SCAN = 0xDA

# The headers of a synthetic 80 px image written by Pillow 12 (libavif 1.4.2 at speed 4, quality 20
# and 60; libjpeg-turbo optimised, quality 10, 30, 50, 70, 90), concatenated. Fixed: see above.
DICTIONARIES = {
    "avif": base64.b64decode(
        "AAAAIGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZk1BMUIAAADrbWV0YQAAAAAAAAAhaGRscgAAAAAAAAAAcGljdAAAAAAAAAAAAAAA"
        "AAAAAAAOcGl0bQAAAAAAAQAAAB5pbG9jAAAAAEQAAAEAAQAAAAEAAAETAAAAOQAAAChpaW5mAAAAAAABAAAAGmluZmUCAAAAAAEA"
        "AGF2MDFDb2xvcgAAAABqaXBycAAAAEtpcGNvAAAAFGlzcGUAAAAAAAAAUAAAAFAAAAAQcGl4aQAAAAADCAgIAAAADGF2MUOBAAwA"
        "AAAAE2NvbHJuY2x4AAEADQAGgAAAABdpcG1hAAAAAAAAAAEAAQQBAoMEAAAAQW1kYXQSAAoJGBmnz2yAhoNCAAAAIGZ0eXBhdmlm"
        "AAAAAGF2aWZtaWYxbWlhZk1BMUIAAADrbWV0YQAAAAAAAAAhaGRscgAAAAAAAAAAcGljdAAAAAAAAAAAAAAAAAAAAAAOcGl0bQAA"
        "AAAAAQAAAB5pbG9jAAAAAEQAAAEAAQAAAAEAAAETAAABegAAAChpaW5mAAAAAAABAAAAGmluZmUCAAAAAAEAAGF2MDFDb2xvcgAA"
        "AABqaXBycAAAAEtpcGNvAAAAFGlzcGUAAAAAAAAAUAAAAFAAAAAQcGl4aQAAAAADCAgIAAAADGF2MUOBAAwAAAAAE2NvbHJuY2x4"
        "AAEADQAGgAAAABdpcG1hAAAAAAAAAAEAAQQBAoMEAAABgm1kYXQSAAoJGBmnz2yAhoNC"
    ),
    "jpeg": base64.b64decode(
        "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAFA3PEY8MlBGQUZaVVBfeMiCeG5uePWvuZHI////////////////////////////////"
        "////////////////////2wBDAVVaWnhpeOuCguv/////////////////////////////////////////////////////////////"
        "////////////wAARCABQAFADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAAAAEC/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/E"
        "ABYBAQEBAAAAAAAAAAAAAAAAAAABAv/EABQRAQAAAAAAAAAAAAAAAAAAAAD/2gAMAwEAAhEDEQA/AP/Y/+AAEEpGSUYAAQEAAAEA"
        "AQAA/9sAQwAbEhQXFBEbFxYXHhwbIChCKyglJShROj0wQmBVZWRfVV1baniZgWpxkHNbXYW1hpCeo6utq2eAvMm6pseZqKuk/9sA"
        "QwEcHh4oIyhOKytOpG5dbqSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSkpKSk/8AAEQgAUABQ"
        "AwEiAAIRAQMRAf/EABcAAQEBAQAAAAAAAAAAAAAAAAABAgP/xAAYEAEBAQEBAAAAAAAAAAAAAAAAEQExcf/EABcBAQEBAQAAAAAA"
        "AAAAAAAAAAEAAgP/xAAVEQEBAAAAAAAAAAAAAAAAAAAAAf/aAAwDAQACEQMRAD8A/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABAL"
        "DA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8a"
        "Gi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCABQAFADASIAAhEBAxEB"
        "/8QAFwABAQEBAAAAAAAAAAAAAAAAAQACA//EACAQAAMAAAYDAQAAAAAAAAAAAAABESExQVFxgWGRofD/xAAYAQEBAQEBAAAAAAAA"
        "AAAAAAACAAEEA//EABYRAQEBAAAAAAAAAAAAAAAAAAABEf/aAAwDAQACEQMRAD8A/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAoH"
        "BwgHBgoICAgLCgoLDhgQDg0NDh0VFhEYIx8lJCIfIiEmKzcvJik0KSEiMEExNDk7Pj4+JS5ESUM8SDc9Pjv/2wBDAQoLCw4NDhwQ"
        "EBw7KCIoOzs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozv/wAARCABQAFADASIAAhEBAxEB"
        "/8QAFwABAQEBAAAAAAAAAAAAAAAAAgEABP/EACUQAAICAQQCAwADAQAAAAAAAAERACExEkFRYQJxgZGhIrHx0f/EABkBAAMBAQEA"
        "AAAAAAAAAAAAAAABAwUCBP/EABYRAQEBAAAAAAAAAAAAAAAAAAABEf/aAAwDAQACEQMRAD8A/9j/4AAQSkZJRgABAQAAAQABAAD/"
        "2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQME"
        "BAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCABQAFADASIA"
        "AhEBAxEB/8QAGgABAQADAQEAAAAAAAAAAAAAAwIAAQQGBf/EAC0QAQACAQMCBAYCAwEBAAAAAAECESEAAxIxQSJRYfATcYGRobEy"
        "wULR4fEU/8QAGwEBAAIDAQEAAAAAAAAAAAAABAECAAMHBgX/xAAeEQADAQABBQEAAAAAAAAAAAAAAQIRIQMSMUFRYf/aAAwDAQAC"
        "EQMRAD8A"
    ),
}


def pack(data: bytes, base: str) -> bytes:
    """The file ``data`` of the base codec ``base`` with its header deflated."""
    end = header_end(data, base)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=DICTIONARIES[base])
    return bytes([TAG, BASE_IDS[base]]) + deflater.compress(data[:end]) + deflater.flush() + data[end:]


def unpack(payload: bytes) -> bytes:
    """The base codec's file, byte for byte; a plain file is returned as it is."""
    if not payload or payload[0] != TAG:
        return payload
    base = packed_base(payload)
    inflater = zlib.decompressobj(-15, zdict=DICTIONARIES[base])
    try:
        header = inflater.decompress(payload[2:], MAX_HEADER_BYTES + 1)
    except zlib.error as exc:
        raise FzFormatError(f"the payload's deflated {base} header is corrupt: {exc}") from None
    if len(header) > MAX_HEADER_BYTES or not inflater.eof:
        raise FzFormatError(f"the payload's deflated {base} header is truncated or over {MAX_HEADER_BYTES} bytes")
    return header + inflater.unused_data


def packed_base(payload: bytes) -> str:
    """The base codec of a packed payload, from its id byte."""
    if len(payload) < 2 or payload[1] not in BASE_NAMES:
        raise FzFormatError(f"packed payload names no known base codec (id {payload[1] if len(payload) > 1 else None})")
    return BASE_NAMES[payload[1]]


def header_end(data: bytes, base: str) -> int:
    """Where the header ends: after the mdat box header and the leading AV1 temporal delimiter and
    sequence header OBUs (AVIF), after the start-of-scan segment (JPEG)."""
    try:
        return _avif_header_end(data) if base == "avif" else _jpeg_header_end(data)
    except (struct.error, IndexError, FzFormatError):
        return 0  # not the layout expected: everything is stored as it is


def _avif_header_end(data: bytes) -> int:
    pos = 0
    while True:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"mdat":
            pos += 8
            break
        if size < 8:
            return 0
        pos += size
    while pos < len(data) and (data[pos] >> 3) & 0xF in (_AV1_TEMPORAL_DELIMITER, _AV1_SEQUENCE_HEADER):
        if not data[pos] >> 1 & 1:  # an OBU without its size field: its end is not known here
            break
        size, pos = read_varint(data, pos + 1 + (data[pos] >> 2 & 1), "AV1 OBU size")  # AV1's leb128
        pos += size
    return pos


def _jpeg_header_end(data: bytes) -> int:
    pos = 2  # after SOI
    while data[pos] == 0xFF:
        marker, (length,) = data[pos + 1], struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
        if marker == _JPEG_START_OF_SCAN:
            return pos
    return 0
