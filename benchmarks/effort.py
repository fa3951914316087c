"""Encode-time latent refinement (``--effort N``) of mean-scale-hyperprior against effort 0: same faces, same run.

    python benchmarks/effort.py [FACES] [--faces 50] [--levels 2,4,6] [--efforts 0,10,50,200] [--batch 16]

FACES: a detect output folder (its face crops) or a folder of images; default tests/data's face.
Per effort and bundled rung: mean bpp of the real files, PSNR and dlib-resnet identity distance
(the independent judge) of their real decodes, and encode seconds per face, batched: wall-clock and
the process's CPU seconds (on a busy machine wall time counts the others' load; CPU time divided
by the threads is what an idle machine would take). Per effort against effort 0 over the same
rungs: the BD-rate at equal PSNR and at equal identity distance (negative = fewer bytes;
facezip/tasks/evaluate/bdrate.py) and the encode-time ratio; per rung, the bytes ratio and the
PSNR and distance deltas.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from facezip.infra.images import decode_image
from facezip.infra.readers import open_reader
from facezip.models.coding import bits_per_pixel, decode_files, encode_images
from facezip.models.loading import BUNDLED, load_codec
from facezip.models.metrics import psnr
from facezip.models.recognizer import Recognizer, load_recognizer
from facezip.tasks.evaluate.bdrate import bd_rate

CODEC = "mean-scale-hyperprior"
JUDGE = "dlib-resnet"
DEFAULT_FACES = Path(__file__).resolve().parents[1] / "tests" / "data"


def load_faces(src: str, count: int) -> list[np.ndarray]:
    faces = []
    for row in open_reader(src).rows():
        if row["image_bytes"] is not None:
            faces.append(decode_image(row["image_bytes"]).rgb)
        if len(faces) == count:
            break
    return faces


def measure(codec, faces: list[np.ndarray], judge: Recognizer, originals: np.ndarray, batch: int) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    files = encode_images(codec, faces, batch)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    decoded = decode_files(codec, files, batch)
    return {"bpp": np.mean([bits_per_pixel(len(f), *face.shape[:2]) for f, face in zip(files, faces)]),
            "psnr": np.mean([psnr(face, d) for face, d in zip(faces, decoded)]),
            "distance": float(judge.compare(originals, judge.embed(decoded)).mean()),
            "seconds": seconds / len(faces), "cpu_seconds": cpu_seconds / len(faces)}


def report_rung(effort: int, level: int, row: dict, than: dict) -> None:
    print(f"{effort:6d}  l{level}  {row['bpp']:7.4f}  {row['psnr']:6.2f}  {row['distance']:9.4f}  "
          f"{row['seconds']:10.3f}  {row['cpu_seconds']:9.3f}   ×{row['bpp'] / than['bpp']:.3f}  "
          f"{row['psnr'] - than['psnr']:+.2f}  {row['distance'] - than['distance']:+.4f}", flush=True)


def report_effort(effort: int, rows: dict[int, dict], base: dict[int, dict]) -> None:
    """The effort's deltas against effort 0 over the rungs."""
    curve = [[row[key] for row in rows.values()] for key in ("bpp", "psnr", "distance")]
    anchor = [[row[key] for row in base.values()] for key in ("bpp", "psnr", "distance")]
    by_psnr = bd_rate(anchor[0], anchor[1], curve[0], curve[1])
    by_identity = bd_rate(anchor[0], [-d for d in anchor[2]], curve[0], [-d for d in curve[2]])
    slower = np.mean([row["seconds"] for row in rows.values()]) / np.mean([row["seconds"] for row in base.values()])
    print(f"effort {effort} vs 0: BD-rate {by_psnr:+.1f} % at equal PSNR, {by_identity:+.1f} % at equal {JUDGE} "
          f"distance; encode time ×{slower:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faces", nargs="?", default=str(DEFAULT_FACES), metavar="FACES")
    parser.add_argument("--faces", dest="count", type=int, default=50, help="at most this many (default 50)")
    parser.add_argument("--levels", default="2,4,6", help="bundled rungs (default 2,4,6)")
    parser.add_argument("--efforts", default="0,10,50,200", help="the first is the baseline (default 0,10,50,200)")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    faces = load_faces(args.faces, args.count)
    judge = load_recognizer(JUDGE)
    originals = judge.embed(faces)
    codecs = {level: load_codec(CODEC, BUNDLED, level=level) for level in map(int, args.levels.split(","))}
    encode_images(next(iter(codecs.values())).with_effort(1), faces[:1])  # lazy initialisation, untimed
    sizes = sorted({f"{face.shape[0]}×{face.shape[1]}" for face in faces})
    print(f"{len(faces)} faces from {args.faces} ({', '.join(sizes)}), {CODEC}, torch threads "
          f"{torch.get_num_threads()}, batch {args.batch}")
    print(f"{'effort':>6}  lvl  {'bpp':>7}  {'PSNR':>6}  {'dlib dist':>9}  {'enc s/face':>10}  {'cpu s/face':>9}   "
          "vs effort 0: bytes, dB, distance")
    base: dict[int, dict] = {}
    for effort in map(int, args.efforts.split(",")):
        rows = {}
        for level, codec in codecs.items():
            rows[level] = measure(codec.with_effort(effort), faces, judge, originals, args.batch)
            report_rung(effort, level, rows[level], base.get(level, rows[level]))
        if base:
            report_effort(effort, rows, base)
        base = base or rows


if __name__ == "__main__":
    main()
