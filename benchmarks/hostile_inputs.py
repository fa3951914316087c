"""The hostile-input table: every kind of bad or unusual image through each stage's decoding, as
kept / kept with a note / rejected with its reason, by default and with ``accept_damaged``.

    python benchmarks/hostile_inputs.py

detect runs its Ray actor's code in-process (MTCNN, no Ray), compress its real function, archive
the decoding its encoder actor applies to each input. Inputs: ``tests/detect_samples.py``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.simplefilter("ignore")

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402

from facezip.infra.images import ImageError, decode_image  # noqa: E402
from facezip.infra.readers import IMAGE_COLUMN, REF_SCHEMA  # noqa: E402
from facezip.infra.storage import Storage  # noqa: E402
from facezip.models import create_codec  # noqa: E402
from facezip.pipelines.config import load_config  # noqa: E402
from facezip.tasks.compress import compress_files  # noqa: E402
from facezip.tasks.detect.faces import DetectFaces  # noqa: E402
from tests import detect_samples as samples  # noqa: E402


def hostile_inputs() -> dict[str, bytes]:
    return {
        "zero-byte": b"", "text named .jpg": b"not a JPEG\n", "truncated JPEG": samples.truncated_jpeg(),
        "JPEG header + noise": samples.corrupt_jpeg(), "JPEG, corrupt middle": samples.damaged_jpeg(),
        "PNG, IDAT CRC error": samples.png_with_bad_crc(),
        "PNG without IEND": samples.encode(samples.astronaut(), "PNG")[:-12], "CMYK JPEG": samples.cmyk_jpeg(),
        "16-bit PNG": samples.png_16bit(), "RGBA PNG": samples.rgba_png(), "animated GIF": samples.animated_gif(),
        "EXIF-rotated JPEG": samples.exif_rotated_jpeg(), "60000×60000 PNG bomb": samples.decompression_bomb_png(60000),
        "12×9 PNG": samples.encode(Image.new("RGB", (12, 9), "grey"), "PNG"),
        "no face": samples.encode(samples.no_face()), "a face": samples.encode(samples.astronaut()),
    }


def detect(inputs: dict[str, bytes], accept: bool) -> dict[str, str]:
    cfg = load_config([], [f"detect.accept_damaged={str(accept).lower()}"]).detect
    refs = pa.Table.from_pylist([{"id": k, "source_uri": k, "identity": None, "split": None} for k in inputs],
                                schema=REF_SCHEMA)
    batch = refs.append_column(IMAGE_COLUMN, pa.array(list(inputs.values()), pa.binary())).append_column(
        "read_error", pa.array([None] * len(inputs), pa.string()))
    rows = DetectFaces(OmegaConf.to_object(cfg), "cpu")(batch).to_pylist()
    return {r["image_id"]: f"rejected: {r['reason']}" if r["reason"] else _kept(r["notes"]) for r in rows}


def compress(inputs: dict[str, bytes], accept: bool) -> dict[str, str]:
    torch.manual_seed(0)
    codec = create_codec("binarized-cae").freeze()
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, data in enumerate(inputs.values()):
            paths.append(Path(folder, f"in{i}"))
            paths[-1].write_bytes(data)
        results = compress_files(codec, [str(p) for p in paths], f"{folder}/out/", Storage(), progress=False,
                                 accept_damaged=accept)
    return {name: _kept(r.notes) if r.ok else "rejected: " + r.error.split(":")[0] for name, r in zip(inputs, results)}


def archive(inputs: dict[str, bytes], accept: bool) -> dict[str, str]:
    limit = load_config([], []).archive.max_image_pixels
    outcomes = {}
    for name, data in inputs.items():
        try:
            outcomes[name] = _kept(decode_image(data, limit, accept).notes)
        except ImageError as exc:
            outcomes[name] = f"rejected: {exc.reason}"
    return outcomes


def _kept(notes) -> str:
    return "kept, noted" if notes else "kept"


def main() -> None:
    inputs = hostile_inputs()
    columns = {"detect": detect(inputs, False), "detect accept_damaged": detect(inputs, True),
               "compress": compress(inputs, False), "compress accept_damaged": compress(inputs, True),
               "archive": archive(inputs, False), "archive accept_damaged": archive(inputs, True)}
    print("| input | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in inputs:
        print(f"| {name} | " + " | ".join(column[name] for column in columns.values()) + " |")


if __name__ == "__main__":
    main()
