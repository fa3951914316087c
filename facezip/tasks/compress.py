"""``facezip compress / decompress / info``: single images to and from ``.fz`` files.

Many files at once, in batches; a bad file is reported and skipped, the rest still done.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from facezip.infra.images import ImageError, decode_image
from facezip.infra.storage import Storage, is_remote, join
from facezip.models.coding import bits_per_pixel, check_known, decode_file, encode_images, pack_file
from facezip.models.container import DEFAULT_MAX_DECODE_PIXELS, PAYLOAD_STORED, FzFormatError, read_header, unpack_fz
from facezip.models.quality_search import encode_within_bpp
from facezip.models.registry import Codec, available_codecs, codec_class
from facezip.models.store import Codecs, CodecStore


@dataclass
class CompressConfig:
    """Config section ``compress``: ``facezip compress`` of single images (a command, not a pipeline stage)."""

    accept_damaged: bool = False  # true: compress damaged JPEG/PNG inputs (see detect.accept_damaged), with a note


@dataclass
class FileResult:
    source: str
    output: str | None = None
    error: str | None = None
    bpp: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_outputs(inputs: Sequence[str], output: str, suffix: str) -> list[str]:
    """One input and an output that is not a directory → that file; else ``output/<stem><suffix>``."""
    single_file = len(inputs) == 1 and not output.endswith("/") and not (
        not is_remote(output) and os.path.isdir(output)) and PurePosixPath(output).suffix != ""
    if single_file:
        return [output]
    return [join(output, PurePosixPath(src).stem + suffix) for src in inputs]


@dataclass(frozen=True)
class BppTarget:
    """``--bpp``: each file at the highest quality of a variable-rate codec within ``bpp``."""

    bpp: float
    steps: int  # rounds of bisection (codec.bpp_steps)


def compress_files(codec: Codec, inputs: Sequence[str], output: str, storage: Storage,
                   batch_size: int = 16, progress: bool = True, accept_damaged: bool = False,
                   target: BppTarget | None = None) -> list[FileResult]:
    results = [FileResult(src, out) for src, out in zip(inputs, plan_outputs(inputs, output, ".fz"))]
    _flag_collisions(results)
    with tqdm(total=len(results), desc="compress", unit="img", disable=not progress) as bar:
        for chunk in _chunks([r for r in results if r.ok], batch_size):
            images = [_read_image(r, storage, accept_damaged) for r in chunk]
            readable = [(r, img) for r, img in zip(chunk, images) if img is not None]
            files = _encode(codec, [img for _, img in readable], batch_size, target) if readable else []
            for (result, image), (data, notes) in zip(readable, files):
                result.notes.extend(notes)
                _write(result, data, storage)
                result.bpp = bits_per_pixel(len(data), *image.shape[:2])
            bar.update(len(chunk))
    return results


def _encode(codec: Codec, images: list[np.ndarray], batch_size: int,
            target: BppTarget | None) -> list[tuple[bytes, list[str]]]:
    """Each image's ``.fz`` file, and with a target what to note: the quality it chose."""
    if target is None:
        return [(data, []) for data in encode_images(codec, images, batch_size)]
    container = partial(pack_file, codec)
    choices = encode_within_bpp(codec, images, target.bpp, target.steps, batch_size, container)
    return [(container(image, c.payload), [f"quality {c.quality:g}" + ("" if c.within else
             f": over the {target.bpp:g} bpp target even at the lowest quality")]) for image, c in zip(images, choices)]


def decompress_files(codecs: Codecs | CodecStore | None, inputs: Sequence[str], output: str,
                     storage: Storage, progress: bool = True, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
                     raw: bool = False) -> list[FileResult]:
    """Each file decoded by the codec its header names, found in ``codecs`` by weights hash (a
    store that searches the bundled models: each file's own rung of the bundled ladder). With
    ``raw``, each payload that is a standard image file is written out untouched instead (no
    weights needed), named with its format's suffix unless one output file was named."""
    results = [FileResult(src, out) for src, out in zip(inputs, plan_outputs(inputs, output, "" if raw else ".png"))]
    _flag_collisions(results)
    store = None if raw else CodecStore.of(codecs)
    for result in tqdm([r for r in results if r.ok], desc="decompress", unit="img", disable=not progress):
        try:
            data = storage.read_bytes(result.source)
            if raw:
                payload, suffix, result.bpp = _raw_payload(data, max_pixels)
                result.output += "" if result.output == output else suffix  # a named output keeps its name
                _write(result, payload, storage)
                continue
            header = read_header(data)[0]
            pixels = decode_file(store.find(header.codec, header.weights_hash), data, max_pixels)
        except (OSError, FzFormatError) as exc:
            result.error = _describe(exc)
            continue
        _write(result, _encode_output(pixels, result.output), storage)
        result.bpp = bits_per_pixel(len(data), *pixels.shape[:2])
    return results


def _raw_payload(data: bytes, max_pixels: int) -> tuple[bytes, str, float]:
    """``(the standard image file its payload holds, its suffix, bpp)`` of a file of such a codec;
    FzFormatError for one whose payload only its codec reads."""
    header, payload = unpack_fz(data, max_pixels)
    check_known(header.codec)
    raw = codec_class(header.codec).raw_file(payload)
    if raw is None:
        raise FzFormatError(f"written by {header.codec}, whose payload is not a standard image file: --raw needs "
                            "a codec that stores one (comcnn-reccnn)")
    return *raw, bits_per_pixel(len(data), header.height, header.width)


def describe_file(data: bytes, store: CodecStore | None = None) -> dict[str, object]:
    """The header of a ``.fz`` file and its rate, for ``facezip info``; with ``store``, when it has the
    weights that wrote the file, the bundled rung they are (if any) and their ``coding_notes``."""
    header, stream, coding = read_header(data)
    known = header.codec in available_codecs(fixed=True)  # info still describes files of codecs it lacks
    codec = _writer(store, header.codec, header.weights_hash) if store and known else None
    level = getattr(codec, "level", None)
    raw = codec_class(header.codec).raw_file(stream) if coding == PAYLOAD_STORED and known else None
    return {"codec": header.codec, "weights_hash": header.weights_hash,
            **({"bundled_level": level} if level is not None else {}), "height": header.height,
            "width": header.width, "file_bytes": len(data), "payload_bytes": len(stream),
            "payload_coding": "stored (entropy-coded by the codec)" if coding == PAYLOAD_STORED else "xz",
            **({"payload_file": raw[1].lstrip(".")} if raw else {}),
            "bpp": round(bits_per_pixel(len(data), header.height, header.width), 4),
            **(codec.coding_notes() if codec else {})}


def _writer(store: CodecStore, name: str, weights_hash: str) -> Codec | None:
    """The weights that wrote a file, when the store has them."""
    try:
        return store.find(name, weights_hash)
    except FzFormatError:
        return None


def _read_image(result: FileResult, storage: Storage, accept_damaged: bool) -> np.ndarray | None:
    try:
        decoded = decode_image(storage.read_bytes(result.source), accept_damaged=accept_damaged)
    except (OSError, ImageError) as exc:
        result.error = _describe(exc)
        return None
    result.notes.extend(decoded.notes)
    return decoded.rgb


def _write(result: FileResult, data: bytes, storage: Storage) -> None:
    try:
        storage.write_bytes_atomic(result.output, data)
    except OSError as exc:
        result.error = f"cannot write {result.output}: {_describe(exc)}"


def _encode_output(pixels: np.ndarray, name: str) -> bytes:
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(PurePosixPath(name).suffix.lower(), "PNG")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 95} if fmt != "PNG" else {}))
    return buffer.getvalue()


def _flag_collisions(results: list[FileResult]) -> None:
    counts = Counter(r.output for r in results)
    for result in results:
        if counts[result.output] > 1:
            result.error = f"another input also maps to {result.output}; give inputs with distinct names"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return str(exc) or type(exc).__name__


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sample_face() -> np.ndarray:
    """A 160×160 face crop (MTCNN's box, centred) from scikit-image's bundled astronaut photo."""
    from skimage import data

    return data.astronaut()[37:197, 144:304].copy()
