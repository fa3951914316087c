"""Identity floor bytes: bisection over a variable-rate codec's quality vs climbing its named levels.

    python benchmarks/floor.py [SRC] [--faces 100] [--judge dlib-resnet=0.3 ...] [--steps 6]

SRC: held-out face crops, as a detect output (e.g. runs/eval-lfw-tight) or a folder of images
(default: tests/data). Both strategies code the same faces for the same judges and thresholds, in
this process as archive's actors do (no Ray): the baseline climbs the codec's named levels from
level 1 (what ``--min-identity`` did before), then lossless PNG; bisection starts at the lowest
quality, ``--steps`` rounds. Batches alternate between the two so both see the same machine load.
Prints each one's total record bytes, lossless faces, chosen qualities and encode seconds per face,
and bisection's ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import facezip.tasks  # noqa: F401  (registers detect outputs as readable sources)
from facezip.infra.images import ImageError, decode_image
from facezip.infra.readers import open_reader
from facezip.infra.storage import Storage
from facezip.models.loading import BUNDLED
from facezip.models.recognizer import RecognizerOptions, load_recognizers
from facezip.models.registry import codec_class
from facezip.models.store import CodecStore
from facezip.tasks.archive.floor import Floor, RatePlan, encode_faces
from facezip.tasks.archive.ladder import Rung

DEFAULT_SRC = Path(__file__).resolve().parents[1] / "tests" / "data"


@dataclass
class Totals:
    bytes: int = 0
    seconds: float = 0.0
    lossless: int = 0
    qualities: list[float] = field(default_factory=list)

    def add(self, plan: RatePlan, faces: list[np.ndarray], batch: int) -> None:
        started = time.perf_counter()
        coded = encode_faces(plan, faces, batch)
        self.seconds += time.perf_counter() - started
        self.bytes += sum(len(face.record) for face in coded)
        self.lossless += sum(face.lossless_fallback for face in coded)
        self.qualities += [face.quality for face in coded if face.quality is not None]

    def row(self, faces: int) -> dict:
        spread = np.percentile(self.qualities, [10, 50, 90]).round(1).tolist() if self.qualities else None
        return {"bytes": self.bytes, "bytes_per_face": round(self.bytes / faces, 1), "lossless": self.lossless,
                "quality_p10_median_p90": spread, "encode_s_per_face": round(self.seconds / faces, 3)}


def held_out_faces(src: str, count: int) -> list[np.ndarray]:
    faces = []
    for row in open_reader(src, Storage()).rows():
        try:
            faces.append(decode_image(row["image_bytes"] or b"").rgb)
        except ImageError:  # unreadable inputs are not faces to judge
            continue
        if len(faces) == count:
            break
    return faces


def parse_judges(specs: list[str]) -> Floor:
    thresholds = {name: float(value) for name, _, value in (spec.partition("=") for spec in specs)}
    return Floor(load_recognizers(list(thresholds), RecognizerOptions()), thresholds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default=str(DEFAULT_SRC), help="detect output or image folder")
    parser.add_argument("--faces", type=int, default=100)
    parser.add_argument("--judge", nargs="+", default=["dlib-resnet=0.3"], metavar="JUDGE=T")
    parser.add_argument("--steps", type=int, default=6, help="bisection rounds (archive.floor_steps)")
    parser.add_argument("--codec", default="comcnn-reccnn", help="a variable-rate codec with bundled weights")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    faces = held_out_faces(args.src, args.faces)
    floor = parse_judges(args.judge)
    for judge in floor.judges:  # warm-up: model files, first-call allocations
        judge.embed(faces[:1])
    store = CodecStore()
    levels = RatePlan([Rung(n, BUNDLED, codec) for n, codec in store.ladder(args.codec).items()], floor)
    lowest = store.load(args.codec, quality=codec_class(args.codec).quality_range[0])
    bisection = RatePlan([Rung(None, BUNDLED, lowest)], floor, args.steps)
    climbed, bisected = Totals(), Totals()
    for start in range(0, len(faces), args.batch):
        chunk = faces[start : start + args.batch]
        climbed.add(levels, chunk, args.batch)
        bisected.add(bisection, chunk, args.batch)
    result = {"src": args.src, "faces": len(faces), "codec": args.codec, "floor": floor.thresholds,
              "steps": args.steps, "named_levels": climbed.row(len(faces)), "bisection": bisected.row(len(faces))}
    print(json.dumps(result))
    print(f"\n{len(faces)} faces of {args.src}, floor {floor.thresholds}, {args.codec}")
    print(f"{'':>14} {'bytes':>9} {'B/face':>8} {'lossless':>8} {'quality p10/50/90':>18} {'s/face':>7}")
    for name, totals in (("named levels", climbed), (f"bisection ×{args.steps}", bisected)):
        row = totals.row(len(faces))
        spread = "/".join(f"{q:g}" for q in row["quality_p10_median_p90"] or [])
        print(f"{name:>14} {row['bytes']:>9} {row['bytes_per_face']:>8} {row['lossless']:>8} {spread:>18} "
              f"{row['encode_s_per_face']:>7}")
    print(f"bisection vs named levels: {bisected.bytes / climbed.bytes:.3f}× the bytes, "
          f"{bisected.seconds / climbed.seconds:.2f}× the encode time")


if __name__ == "__main__":
    main()
