"""``facezip compress / decompress / info``: single images to and from ``.fz`` files.

Many files at once, in batches; a bad file is reported and skipped, the rest still done.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from facezip.infra.images import ImageError, decode_image
from facezip.infra.storage import Storage, is_remote, join
from facezip.models.coding import bits_per_pixel, decode_file, encode_images
from facezip.models.container import DEFAULT_MAX_DECODE_PIXELS, PAYLOAD_STORED, FzFormatError, FzHeader, read_header
from facezip.models.loading import BUNDLED, load_codec, load_ladder
from facezip.models.registry import Codec, available_codecs


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


def compress_files(codec: Codec, inputs: Sequence[str], output: str, storage: Storage,
                   batch_size: int = 16, progress: bool = True, accept_damaged: bool = False) -> list[FileResult]:
    results = [FileResult(src, out) for src, out in zip(inputs, plan_outputs(inputs, output, ".fz"))]
    _flag_collisions(results)
    with tqdm(total=len(results), desc="compress", unit="img", disable=not progress) as bar:
        for chunk in _chunks([r for r in results if r.ok], batch_size):
            images = [_read_image(r, storage, accept_damaged) for r in chunk]
            readable = [(r, img) for r, img in zip(chunk, images) if img is not None]
            files = encode_images(codec, [img for _, img in readable], batch_size) if readable else []
            for (result, image), data in zip(readable, files):
                _write(result, data, storage)
                result.bpp = bits_per_pixel(len(data), *image.shape[:2])
            bar.update(len(chunk))
    return results


class BundledModels:
    """Bundled weights found by the hash a ``.fz`` header carries: every rung of a codec's rate
    ladder (or its one bundled model), loaded once and only for codecs that files name."""

    def __init__(self, device) -> None:
        self.device = device
        self._by_hash: dict[str, dict[str, tuple[int | None, Codec]]] = {}

    def candidates(self, codec_name: str) -> dict[str, tuple[int | None, Codec]]:
        """``{weights hash: (level, codec)}`` of ``codec_name``'s bundled weights."""
        if codec_name not in self._by_hash:
            codecs = list(load_ladder(codec_name, self.device).values()) or self._single_bundled(codec_name)
            self._by_hash[codec_name] = {codec.weights_hash(): (codec.level, codec) for codec in codecs}
        return self._by_hash[codec_name]

    def _single_bundled(self, codec_name: str) -> list[Codec]:
        try:
            return [load_codec(codec_name, BUNDLED, self.device)]
        except ValueError:  # this codec ships no weights: nothing to match
            return []

    def level_of(self, header: FzHeader) -> int | None:
        if header.codec not in available_codecs():
            return None
        return self.candidates(header.codec).get(header.weights_hash, (None, None))[0]

    def codec_for(self, header: FzHeader) -> Codec:
        """The bundled model that wrote ``header``'s file, whatever ``--level`` it was written at."""
        if header.codec not in available_codecs():
            raise FzFormatError(f"unknown codec '{header.codec}' (this facezip knows {', '.join(available_codecs())})")
        found = self.candidates(header.codec)
        if header.weights_hash in found:
            return found[header.weights_hash][1]
        levels = sorted(level for level, _ in found.values() if level is not None)
        shipped = f"bundled levels {', '.join(map(str, levels))}" if levels else "its bundled weights"
        raise FzFormatError(f"written by {header.codec} with weights {header.weights_hash}, which match none of "
                            f"{shipped}; give codec.weights=PATH of the weights that wrote it")


def decompress_files(decoder: Codec | Callable[[FzHeader], Codec], inputs: Sequence[str], output: str,
                     storage: Storage, progress: bool = True,
                     max_pixels: int = DEFAULT_MAX_DECODE_PIXELS) -> list[FileResult]:
    """``decoder``: one codec for every file, or a function from a file's header to its codec
    (``BundledModels.codec_for``: each file's own rung of the bundled ladder)."""
    codec_for = decoder if not isinstance(decoder, Codec) else (lambda header: decoder)
    results = [FileResult(src, out) for src, out in zip(inputs, plan_outputs(inputs, output, ".png"))]
    _flag_collisions(results)
    for result in tqdm([r for r in results if r.ok], desc="decompress", unit="img", disable=not progress):
        try:
            data = storage.read_bytes(result.source)
            pixels = decode_file(codec_for(read_header(data)[0]), data, max_pixels)
        except (OSError, FzFormatError) as exc:
            result.error = _describe(exc)
            continue
        _write(result, _encode_output(pixels, result.output), storage)
        result.bpp = bits_per_pixel(len(data), *pixels.shape[:2])
    return results


def describe_file(data: bytes, bundled: BundledModels | None = None) -> dict[str, object]:
    """The header of a ``.fz`` file and its rate, for ``facezip info``; with ``bundled``, the
    level of the bundled rate ladder that wrote it (when one did)."""
    header, stream, coding = read_header(data)
    level = bundled.level_of(header) if bundled else None
    return {"codec": header.codec, "weights_hash": header.weights_hash,
            **({"bundled_level": level} if level is not None else {}), "height": header.height,
            "width": header.width, "file_bytes": len(data), "payload_bytes": len(stream),
            "payload_coding": "stored (entropy-coded by the codec)" if coding == PAYLOAD_STORED else "xz",
            "bpp": round(bits_per_pixel(len(data), header.height, header.width), 4)}


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
