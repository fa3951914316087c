"""Scale benchmark: detect then archive over growing inputs; driver peak RSS and throughput per size.

    python benchmarks/scale.py [--sizes 10000 30000 100000] [--side 96] [--workdir DIR]

Inputs: the demo's faces (the astronaut's eight views and lfw_subset's portraits, 28 images,
shrunk to ``--side`` px so MTCNN's pyramid stays small) repeated under new names as hard links,
in a plain folder, so every size is real detection and real encoding, with one file per input.
Each stage of each size runs in a fresh process, so ``ru_maxrss`` is that stage's driver alone
(Ray's workers are other processes). Printed per size: seconds, images/s, driver peak RSS; then
the RSS of the largest size against the smallest (flat: ≤ 1.10×), seconds per input against the
smallest (linear: ≈ 1.0×), and the linear estimate for 1,000,000 inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

CONFIG = ["tracking.enabled=false", "device=cpu", "ray.progress_bars=false", "ray.log_to_driver=false",
          "ray.address=local", "detect.image_size=64"]


def write_inputs(folder: Path, count: int, side: int) -> None:
    """``count`` hard links to a pool of face photos, 1000 per sub-folder."""
    from facezip.pipelines.demo import _people

    pool_dir = folder.parent / f"pool-{side}"
    if not pool_dir.exists():
        pool_dir.mkdir(parents=True)
        views = [view for views in _people(10).values() for view in views]
        for number, view in enumerate(views):
            view.resize((side, side)).save(pool_dir / f"{number:02d}.jpg", quality=90)
    pool = sorted(pool_dir.glob("*.jpg"))
    for i in range(count):
        target = folder / f"{i // 1000:04d}" / f"img{i:07d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(pool[i % len(pool)], target)


def run_stage(stage: str, size: int, workdir: Path) -> dict:
    """One stage of one size, in this (fresh) process."""
    from facezip.pipelines.config import load_config

    cfg = load_config([], CONFIG)
    src = workdir / (f"inputs-{size}" if stage == "detect" else f"faces-{size}")
    dest = workdir / (f"faces-{size}" if stage == "detect" else f"archive-{size}")
    if stage == "detect":
        from facezip.tasks.detect import run_detect as run
    else:
        from facezip.tasks.archive import run_archive as run
    started = time.perf_counter()
    done = run(cfg, str(src), str(dest), progress=False)["inputs"]
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kB, this process only
    return {"stage": stage, "size": size, "inputs": done, "seconds": round(seconds, 1),
            "images_per_s": round(done / seconds, 1), "driver_peak_rss_mb": round(peak_kb / 1024)}


def report(results: list[dict]) -> None:
    print(f"\n{'stage':>8} {'size':>8} {'seconds':>8} {'img/s':>7} {'driver RSS MB':>13}")
    for r in results:
        print(f"{r['stage']:>8} {r['size']:>8} {r['seconds']:>8.1f} {r['images_per_s']:>7.1f} "
              f"{r['driver_peak_rss_mb']:>13}")
    for stage in ("detect", "archive"):
        runs = [r for r in results if r["stage"] == stage]
        if len(runs) < 2:
            continue
        first, last = runs[0], runs[-1]
        per_input = lambda r: r["seconds"] / r["size"]  # noqa: E731
        estimate = per_input(last) * 1_000_000
        print(f"{stage}: driver RSS {last['size']} vs {first['size']}: "
              f"{last['driver_peak_rss_mb'] / first['driver_peak_rss_mb']:.2f}x; seconds per input "
              f"{per_input(last) / per_input(first):.2f}x; 1,000,000 inputs ≈ {estimate / 3600:.1f} h on this "
              f"machine at {last['images_per_s']:.0f} img/s, driver RSS ≈ {last['driver_peak_rss_mb']} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--side", type=int, default=96, help="side of the input photos")
    parser.add_argument("--workdir", type=Path, help="inputs and outputs (default: a temp dir)")
    parser.add_argument("--stage", choices=("detect", "archive"), help=argparse.SUPPRESS)  # internal
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="facezip-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.size, workdir)))
        return
    results = []
    for size in args.sizes:
        write_inputs(workdir / f"inputs-{size}", size, args.side)  # here, so the stages' RSS is their own
        for stage in ("detect", "archive"):
            out = subprocess.run([sys.executable, __file__, "--stage", stage, "--size", str(size),
                                  "--workdir", str(workdir)], check=True, stdout=subprocess.PIPE, text=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    report(results)


if __name__ == "__main__":
    main()
