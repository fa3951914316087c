"""Damage a decoder shrugs off: a JPEG or PNG that Pillow decodes although its decoder reports
it damaged (corrupt entropy-coded data, a premature end, chunk CRC errors), so wrong pixels are
not archived as if they were right.

PNG carries a CRC32 per chunk, which Pillow does not check for image data: every chunk's CRC is
checked here, and the file must end with IEND. JPEG has no checksum; libjpeg reports what it
notices (corrupt data, extraneous bytes, premature end) as warnings that Pillow drops, so the
JPEG is decoded once more by torchvision's libjpeg with its warnings captured. That finds damage
libjpeg can see, not every flipped bit: a JPEG can be wrong and still look consistent.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
import warnings
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")
_STDERR_LOCK = threading.Lock()
_LIBJPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")  # its warnings that mean wrong pixels


def find_damage(data: bytes, image_format: str | None) -> str | None:
    """What the format's decoder reports as damage in ``data``, or None."""
    if image_format == "PNG":
        return png_damage(data)
    if image_format in ("JPEG", "MPO"):
        return jpeg_damage(data)
    return None


def png_damage(data: bytes) -> str | None:
    """A chunk whose CRC32 is wrong, one that runs past the end, or no IEND chunk."""
    pos = len(PNG_SIGNATURE)
    while pos + _CHUNK_HEAD.size <= len(data):
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        end = pos + _CHUNK_HEAD.size + length + 4
        name = kind.decode("latin-1")
        if end > len(data):
            return f"premature end: the {name!r} chunk at byte {pos} runs past the end of the file"
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return f"CRC error in the {name!r} chunk at byte {pos}"
        if kind == b"IEND":
            return None
        pos = end
    return "premature end: no IEND chunk"


def jpeg_damage(data: bytes) -> str | None:
    """libjpeg's warnings (or error) decoding ``data``, as one line; None when it is silent."""
    import torch
    from torchvision.io import decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)  # libjpeg prints its warnings to the C stderr
        try:
            with warnings.catch_warnings():  # torchvision's notes about its image API are not about the file
                warnings.simplefilter("ignore")
                decode_jpeg(encoded)
            error = None
        except RuntimeError as exc:
            error = str(exc)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        printed = [line.strip() for line in capture.read().decode(errors="replace").splitlines()
                    if line.strip()]
    reports = [w for w in printed if w.startswith(_LIBJPEG_DAMAGE)] + ([error] if error else [])
    return "libjpeg reports: " + "; ".join(dict.fromkeys(reports)) if reports else None
