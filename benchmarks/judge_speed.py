"""Embedding speed of the identity judges: dlib-resnet (batched and one face at a time) vs FaceNet.

160×160 face crops (LFW-dev centre crops when present, else generated). Prints ms per face of each
judge and the ratio to FaceNet (the training network, batched), all measured in this run.

    python benchmarks/judge_speed.py [--images 64] [--batch 32] [--repeats 2]
"""

from __future__ import annotations

import argparse

from codec_speed import best_rate, face_crops

from facezip.models.recognizer import load_recognizer


def best_ms_per_face(work, count: int, repeats: int) -> float:
    return 1000 / best_rate(work, count, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    crops, source = face_crops(args.images)
    facenet, dlib = load_recognizer("facenet"), load_recognizer("dlib-resnet")
    for judge in (facenet, dlib):  # warm-up: model files, first-call allocations
        judge.embed(crops[:1])
    timings = {
        "facenet, batched": best_ms_per_face(lambda: facenet.embed(crops, args.batch), len(crops), args.repeats),
        "dlib-resnet, batched": best_ms_per_face(lambda: dlib.embed(crops, args.batch), len(crops), args.repeats),
        "dlib-resnet, one face per call": best_ms_per_face(
            lambda: [dlib.embed([crop]) for crop in crops], len(crops), args.repeats),
    }
    base = timings["facenet, batched"]
    print(f"{source}, batch {args.batch}")
    for name, ms in timings.items():
        print(f"{name:32s} {ms:8.1f} ms/face  {ms / base:5.2f}× FaceNet")


if __name__ == "__main__":
    main()
