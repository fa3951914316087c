"""Archive benchmark: throughput, container overhead, peak RSS and random-restore latency.

    python benchmarks/archive.py --sizes 10000 100000 [--crop 64] [--weights PATH] [--workdir DIR]

Inputs are generated face-crop-like PNGs (a pool of distinct images under distinct ids) in
the detect stage's Parquet layout. Each size runs in a fresh process so the driver's peak RSS
(ru_maxrss) is its own; the encoder actors hold one batch at a time.
Baselines measured in the same run: ``facezip compress`` (one ``.fz`` file per image, one
process) for throughput, and reading + decoding one ``.fz`` file for restore latency.

Overhead is measured on a sample of records against the smallest possible encoding of the same
codec payload (raw LZMA2, no framing), and the alternatives are measured the same way.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

POOL = 2000  # distinct generated crops; larger sizes reuse them under new ids


def generate_detect_output(folder: Path, count: int, crop: int) -> None:
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(min(POOL, count)):
        coarse = (rng.random((5, 5, 3)) * 255).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((crop, crop), Image.BICUBIC), dtype=np.float64)
        image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        with tempfile.SpooledTemporaryFile() as buffer:
            Image.fromarray(image).save(buffer, "PNG")
            buffer.seek(0)
            pool.append(buffer.read())
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    rows_per_file = 10_000
    for start in range(0, count, rows_per_file):
        ids = range(start, min(count, start + rows_per_file))
        pq.write_table(pa.table({
            "id": [f"img{i:07d}" for i in ids], "source_uri": [f"gen://{i}" for i in ids],
            "identity": [f"p{i % 500}" for i in ids], "split": ["train"] * len(ids),
            "image_bytes": [pool[i % len(pool)] for i in ids]}), folder / "faces" / f"part-{start:07d}.parquet")
    (folder / "_SUCCESS.json").write_text("{}")


def overhead(dest: str, sample: int) -> dict:
    """Bytes of each layout for the same sampled records, against raw LZMA2 of the codec payload."""
    from facezip.infra.storage import Storage
    from facezip.models.container import XZ_FILTERS
    from facezip.tasks.archive import ArchiveReader
    from facezip.tasks.archive.layout import unpack_record

    reader = ArchiveReader(dest, Storage())
    rows = reader.index.slice(0, sample).to_pylist()
    sizes = {"raw_lzma2_payload": 0, "xz_record_crc32 (chosen)": 0, "xz_record_no_check": 0,
             "raw_lzma2_record": 0, "one_xz_stream_per_shard": 0}
    records = []
    for row in rows:
        header, payload = unpack_record(reader.read_record(row), row["height"], row["width"])
        plain = lzma.decompress(reader.read_record(row))
        records.append(plain)
        sizes["raw_lzma2_payload"] += len(lzma.compress(payload, format=lzma.FORMAT_RAW, filters=XZ_FILTERS))
        sizes["xz_record_crc32 (chosen)"] += row["length"]
        sizes["xz_record_no_check"] += len(lzma.compress(plain, check=lzma.CHECK_NONE, filters=XZ_FILTERS))
        sizes["raw_lzma2_record"] += len(lzma.compress(plain, format=lzma.FORMAT_RAW, filters=XZ_FILTERS))
    sizes["one_xz_stream_per_shard"] = len(lzma.compress(b"".join(records), filters=XZ_FILTERS))
    base = sizes["raw_lzma2_payload"]
    return {"records_sampled": len(rows), **{f"{k}_overhead_pct": round(100 * (v / base - 1), 2)
                                             for k, v in sizes.items() if k != "raw_lzma2_payload"}}


def restore_latency(dest: str, weights: str, repeats: int = 100) -> dict:
    from facezip.infra.storage import Storage
    from facezip.models.loading import load_codec
    from facezip.tasks.archive import ArchiveReader

    codec = load_codec("binarized-cae", weights)
    started = time.perf_counter()
    reader = ArchiveReader(dest, Storage())
    load_s = time.perf_counter() - started
    ids = reader.ids()
    reader.restore(codec, ids[0])  # warm-up: first call initialises torch kernels
    times = []
    for image_id in random.Random(0).sample(ids, repeats):
        started = time.perf_counter()
        reader.restore(codec, image_id)
        times.append(time.perf_counter() - started)
    return {"index_load_s": round(load_s, 3), "restore_median_ms": round(1000 * statistics.median(times), 2),
            "restore_p95_ms": round(1000 * sorted(times)[int(0.95 * repeats) - 1], 2)}


def baselines(src: Path, weights: str, count: int, out: Path) -> dict:
    """``facezip compress`` on ``count`` of the same crops (one process, one .fz per image), and a
    single .fz read + decode: what users would do without the archive."""
    from facezip.infra.images import decode_image
    from facezip.models.coding import decode_file, encode_images
    from facezip.models.loading import load_codec

    codec = load_codec("binarized-cae", weights)
    table = pq.read_table(sorted((src / "faces").glob("*.parquet"))[0]).slice(0, count)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = table["image_bytes"].to_pylist()
    for start in range(0, count, 32):
        images = [decode_image(b).rgb for b in data[start : start + 32]]
        for i, fz in enumerate(encode_images(codec, images, 32)):
            (out / f"{start + i}.fz").write_bytes(fz)
    rate = count / (time.perf_counter() - started)
    files = sorted(out.glob("*.fz"))
    decode_file(codec, files[0].read_bytes())
    times = []
    for path in random.Random(0).sample(files, min(100, len(files))):
        started = time.perf_counter()
        decode_file(codec, path.read_bytes())
        times.append(time.perf_counter() - started)
    return {"images_per_s": round(rate, 1), "restore_median_ms": round(1000 * statistics.median(times), 2)}


def run_one(size: int, crop: int, weights: str, workdir: Path) -> dict:
    """One size, in this (fresh) process."""
    from facezip.infra.config import load_config
    from facezip.tasks.archive import run_archive

    src, dest = workdir / f"src-{size}", workdir / f"archive-{size}"
    generate_detect_output(src, size, crop)
    cfg = load_config([], [f"codec.weights={weights}", "tracking.enabled=false", "device=cpu",
                           "ray.progress_bars=false", "ray.log_to_driver=false", "ray.address=local"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = run_archive(cfg, str(src), str(dest), progress=False)
    peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kB, this process only
    index_bytes = sum(p.stat().st_size for p in (dest / "index").glob("*.parquet"))
    result = {"size": size, "images_per_s": summary["images_per_s"], "duration_s": summary["duration_s"],
              "archived": summary["archived"], "shard_bytes": summary["bytes"], "index_bytes": index_bytes,
              "index_pct_of_shards": round(100 * index_bytes / summary["bytes"], 2),
              "peak_rss_driver_mb": round(peak_rss_kb / 1024), "rss_before_archive_mb": round(rss_before / 1024),
              **overhead(str(dest), 2000), **restore_latency(str(dest), weights)}
    result["baseline"] = baselines(src, weights, min(size, 1000), workdir / f"fz-{size}")
    return result


def default_weights(workdir: Path) -> str:
    from facezip.models.loading import bundled_weights_path, weights_to_bytes
    from facezip.models.registry import create_codec

    bundled = bundled_weights_path("binarized-cae")
    if bundled.is_file():
        return str(bundled)
    path = workdir / "random-weights.pt"
    path.write_bytes(weights_to_bytes(create_codec("binarized-cae").freeze()))
    print("bundled weights not found: using random weights (payloads compress differently)", file=sys.stderr)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--crop", type=int, default=64, help="side of the generated crops")
    parser.add_argument("--weights", help="codec weights (default: bundled, else random)")
    parser.add_argument("--workdir", type=Path, help="where inputs and archives go (default: a temp dir)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="facezip-archive-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(run_one(args.one, args.crop, args.weights, workdir)))
        return
    weights = args.weights or default_weights(workdir)
    results = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--crop", str(args.crop),
                              "--weights", weights, "--workdir", str(workdir)], check=True, stdout=subprocess.PIPE,
                             text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    first, last = results[0], results[-1]
    print(f"\n{'size':>8} {'img/s':>8} {'vs compress':>11} {'overhead%':>9} {'index%':>7} "
          f"{'driver RSS MB':>13} {'restore ms':>10} {'vs .fz':>7}")
    for r in results:
        print(f"{r['size']:>8} {r['images_per_s']:>8.1f} {r['images_per_s'] / r['baseline']['images_per_s']:>10.2f}x "
              f"{r['xz_record_crc32 (chosen)_overhead_pct']:>9.2f} {r['index_pct_of_shards']:>7.2f} "
              f"{r['peak_rss_driver_mb']:>13} {r['restore_median_ms']:>10.2f} "
              f"{r['restore_median_ms'] / r['baseline']['restore_median_ms']:>6.2f}x")
    if len(results) > 1:
        print(f"peak driver RSS {last['size']} vs {first['size']}: "
              f"{last['peak_rss_driver_mb'] / first['peak_rss_driver_mb']:.2f}x")


if __name__ == "__main__":
    main()
