"""Compress/decompress throughput of a bundled codec (default: facezip's default codec) vs Pillow's
JPEG (quality 75) and AVIF (quality 50), same images, same run.

160×160 face crops: centre crops of ../shared/data/lfw-dev when present, else generated images.
Prints images/s and ms per image of each, the facezip/JPEG and facezip/AVIF ratios, and mean bpp.

    python benchmarks/codec_speed.py [--codec NAME] [--images 256] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facezip.models.coding import bits_per_pixel, decode_files, encode_images
from facezip.models.store import CodecStore
from facezip.pipelines.config import default_config
from facezip.tasks.evaluate.baselines import get_baseline

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", default=default_config().codec.name)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    crops, source = face_crops(args.images)
    codec = CodecStore().load(args.codec)
    files = encode_images(codec, crops, args.batch)
    rates = {"facezip compress": best_rate(lambda: encode_images(codec, crops, args.batch), len(crops), args.repeats),
             "facezip decompress": best_rate(lambda: decode_files(codec, files, args.batch), len(crops), args.repeats)}
    sizes = {"facezip": files}
    for name, quality in (("jpeg", 75), ("avif", 50)):
        baseline = get_baseline(name)
        coded = sizes[name] = [baseline.encode(c, quality) for c in crops]
        rates[f"{name} q{quality} encode"] = best_rate(lambda: [baseline.encode(c, quality) for c in crops],
                                                       len(crops), args.repeats)
        rates[f"{name} q{quality} decode"] = best_rate(lambda: [baseline.decode(f) for f in coded], len(crops),
                                                       args.repeats)
    print(f"{source}, {SIZE}×{SIZE}, codec {args.codec}, torch threads {torch.get_num_threads()}, batch {args.batch}")
    for name, rate in rates.items():
        print(f"  {name:20s} {rate:9.1f} images/s {1000 / rate:8.2f} ms/image")
    for name in ("jpeg q75", "avif q50"):
        print(f"  compress ratio vs {name}:   {rates['facezip compress'] / rates[name + ' encode']:.3f}×")
        print(f"  decompress ratio vs {name}: {rates['facezip decompress'] / rates[name + ' decode']:.3f}×")
    print("  mean bpp: " + ", ".join(f"{name} {np.mean([bits_per_pixel(len(f), SIZE, SIZE) for f in coded]):.3f}"
                                    for name, coded in sizes.items()))


if __name__ == "__main__":
    main()
