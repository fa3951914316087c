"""Face crops of detect outputs → one compact Parquet file, to train where the data is not (a GPU machine).

    python scripts/pack_faces.py runs/faces.parquet runs/train-lfw-tight runs/train-lfw-margin32 \
        runs/train-celeba-tight [--quality 95] [--max-mib 64]

Each crop is re-encoded as WebP at ``--quality`` (95: about 6.5 KB for a 160 px face, over 40 dB,
where detect's PNGs take 36 KB), beside what training reads of it: ``id`` and ``split`` (the
validation split follows them), ``face_box_in_crop``, ``landmarks`` and ``crop_box``. The same
photo cropped two ways keeps its id in both, so both land on the same side of the split. The file
is ``facezip train``'s finetune data as it is, and ``scripts/train_on_gpu.py``'s. A file over
``--max-mib`` is refused (exit 1) with the size it would have, so that it still fits a transfer limit.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

COLUMNS = ("id", "split", "face_box_in_crop", "landmarks", "crop_box")


def face_tables(source: Path) -> list[pa.Table]:
    """The face rows of a detect output (its ``faces/`` folder) or of a folder of such Parquet files."""
    folder = source / "faces" if (source / "faces").is_dir() else source
    parts = sorted(folder.glob("*.parquet"))
    if not parts:
        raise SystemExit(f"{source}: no Parquet files of face crops (a detect output or its faces/ folder)")
    return [pq.read_table(part) for part in parts]


def repacked(table: pa.Table, quality: int) -> pa.Table:
    missing = {"image_bytes", "face_box_in_crop"} - set(table.column_names)
    if missing:
        raise SystemExit(f"not face crops from detect: missing column(s) {', '.join(sorted(missing))}")
    images = [_webp(data, quality) for data in table.column("image_bytes").to_pylist()]
    kept = {name: table.column(name) for name in COLUMNS if name in table.column_names}
    return pa.table({**kept, "image_bytes": pa.array(images, pa.binary())})


def _webp(data: bytes, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="WEBP", quality=quality)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the Parquet file to write")
    parser.add_argument("sources", type=Path, nargs="+", help="detect outputs (or folders of their faces Parquet)")
    parser.add_argument("--quality", type=int, default=95, help="WebP quality of the crops (default 95)")
    parser.add_argument("--max-mib", type=float, default=64.0, help="refuse a larger file (default 64)")
    args = parser.parse_args()
    tables = [repacked(table, args.quality) for source in args.sources for table in face_tables(source)]
    packed = pa.concat_tables(tables, promote_options="permissive")
    buffer = io.BytesIO()
    pq.write_table(packed, buffer, compression="zstd")
    mib = len(buffer.getvalue()) / 2**20
    if mib > args.max_mib:
        sys.exit(f"{args.out}: {packed.num_rows} faces would take {mib:.1f} MiB, over --max-mib {args.max_mib:g}; "
                 "lower --quality or pack fewer sources")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(buffer.getvalue())
    print(f"{args.out}: {packed.num_rows} faces from {len(args.sources)} source(s), {mib:.1f} MiB")


if __name__ == "__main__":
    main()
