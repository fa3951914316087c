"""Images/s of the Ray detect stage against a plain single-process batched MTCNN loop over the
same 218×178 CelebA-like images, measured in the same run; prints the ratio.

    python benchmarks/detect_speed.py --images 512

The images are CelebA in-the-wild photos (../shared/data) centre-cropped and resized to
CelebA's aligned size, or scikit-image's astronaut when that data is absent. Goal (not a
test): Ray overhead ≤ 20 %, ≥ 60 images/s on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from facezip.infra.images import decode_image
from facezip.infra.ray_runtime import init_ray
from facezip.models.face_detector import FaceDetector, crop_face
from facezip.pipelines.config import load_config
from facezip.tasks.detect import run_detect, select_faces

CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-wild-sample" / "images"


def make_images(folder: Path, count: int) -> list[Path]:
    """``count`` CelebA-sized JPEGs (sources repeat when there are fewer)."""
    sources = sorted(SHARED.glob("*.jpg")) if SHARED.is_dir() else []
    if not sources:
        from skimage import data

        sources = [Image.fromarray(data.astronaut())]
    paths = []
    for index, source in zip(range(count), itertools.cycle(sources)):
        image = Image.open(source).convert("RGB") if isinstance(source, Path) else source
        path = folder / f"{index:06d}.jpg"
        ImageOps.fit(image, CELEBA_SIZE).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def plain_loop(paths: list[Path], cfg) -> tuple[float, int]:
    """Read, decode, detect in batches, crop: the stage's work without Ray. (seconds, kept)"""
    started = time.perf_counter()
    detector = FaceDetector("cpu", cfg.detect.min_face_size, cfg.detect.thresholds)
    kept = 0
    for start in range(0, len(paths), cfg.detect.batch_size):
        images = [decode_image(p.read_bytes()).rgb for p in paths[start:start + cfg.detect.batch_size]]
        for image, faces in zip(images, detector.detect(images)):
            chosen, _ = select_faces(faces, cfg.detect.min_probability, cfg.detect.keep_all)
            for face in chosen:
                crop_face(image, face.box, cfg.detect.image_size, cfg.detect.margin)
                kept += 1
    return time.perf_counter() - started, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. detect.num_actors=2")
    args = parser.parse_args()
    cfg = load_config([], ["tracking.enabled=false", "ray.log_to_driver=false", "ray.progress_bars=false",
                           *args.overrides])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "images").mkdir()
        paths = make_images(Path(tmp) / "images", args.images)
        init_ray(cfg.ray)  # started outside the timing: a pipeline starts Ray once for all stages
        plain_s, plain_kept = plain_loop(paths, cfg)
        summary = run_detect(cfg, str(Path(tmp) / "images"), str(Path(tmp) / "out"))
    ray_s = summary["duration_s"]
    plain_ips, ray_ips = len(paths) / plain_s, len(paths) / ray_s
    print(f"{len(paths)} images {CELEBA_SIZE[0]}×{CELEBA_SIZE[1]}, batch {cfg.detect.batch_size}, "
          f"{summary['actors']} actor(s) × {cfg.detect.cpus_per_actor} CPU")
    print(f"plain loop : {plain_ips:7.1f} images/s ({plain_s:.1f} s, kept {plain_kept})")
    print(f"Ray stage  : {ray_ips:7.1f} images/s ({ray_s:.1f} s, kept {summary['kept_images']}, "
          f"incl. actor start-up and Parquet writes)")
    print(f"ratio Ray/plain = {ray_ips / plain_ips:.2f}  (Ray overhead {100 * (1 - ray_ips / plain_ips):.0f} %)")
    if ray_ips < 60:
        print("below the 60 images/s goal on this machine")


if __name__ == "__main__":
    main()
