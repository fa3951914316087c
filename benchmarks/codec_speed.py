"""Compress/decompress throughput of the bundled codec vs Pillow JPEG (quality 75), same images, same run.

160×160 face crops: centre crops of ../shared/data/lfw-dev when present, else generated images.
Prints images/s of each, the facezip/JPEG ratios, and the mean bpp of both.

    python benchmarks/codec_speed.py [--images 256] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facezip.models.coding import bits_per_pixel, decode_files, encode_images
from facezip.models.loading import load_codec

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw-dev" / "images"
SIZE = 160


def face_crops(count: int) -> tuple[list[np.ndarray], str]:
    files = sorted(LFW.glob("*/*.jpg"))[:count] if LFW.is_dir() else []
    if len(files) == count:
        crops = [np.asarray(Image.open(f).convert("RGB"))[45:205, 45:205].copy() for f in files]
        return crops, f"{count} LFW-dev centre crops"
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, SIZE * SIZE * 3).reshape(SIZE, SIZE, 3)
    crops = [np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(count)]
    return crops, f"{count} generated images (lfw-dev not found)"


def best_rate(work, count: int, repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` runs (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return count / best


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    crops, source = face_crops(args.images)
    codec = load_codec("binarized-cae", "bundled", "cpu")
    files = encode_images(codec, crops, args.batch)
    jpegs = [jpeg_bytes(c) for c in crops]
    rates = {
        "facezip compress": best_rate(lambda: encode_images(codec, crops, args.batch), len(crops), args.repeats),
        "facezip decompress": best_rate(lambda: decode_files(codec, files, args.batch), len(crops), args.repeats),
        "jpeg q75 encode": best_rate(lambda: [jpeg_bytes(c) for c in crops], len(crops), args.repeats),
        "jpeg q75 decode": best_rate(lambda: [np.asarray(Image.open(io.BytesIO(j))) for j in jpegs], len(crops),
                                     args.repeats),
    }
    print(f"{source}, {SIZE}×{SIZE}, torch threads {torch.get_num_threads()}, batch {args.batch}")
    for name, rate in rates.items():
        print(f"  {name:20s} {rate:9.1f} images/s")
    print(f"  compress ratio vs JPEG:   {rates['facezip compress'] / rates['jpeg q75 encode']:.3f}×")
    print(f"  decompress ratio vs JPEG: {rates['facezip decompress'] / rates['jpeg q75 decode']:.3f}×")
    print(f"  mean bpp: facezip {np.mean([bits_per_pixel(len(f), SIZE, SIZE) for f in files]):.3f}, "
          f"jpeg q75 {np.mean([bits_per_pixel(len(j), SIZE, SIZE) for j in jpegs]):.3f}")


if __name__ == "__main__":
    main()
