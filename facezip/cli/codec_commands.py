"""``facezip compress``, ``decompress`` and ``info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from facezip.cli.common import CommandError, add_config_arguments, load, report_failures, split_overrides
from facezip.infra.device import resolve_device
from facezip.infra.storage import Storage
from facezip.models.container import FzFormatError
from facezip.models.loading import load_codec
from facezip.models.coding import bits_per_pixel, decode_file, encode_images
from facezip.models.registry import Codec
from facezip.tasks.compress import compress_files, decompress_files, describe_file, psnr, sample_face


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text, in_help in (
        ("compress", _compress, "compress images to .fz files", "images (local paths or s3:// URLs)"),
        ("decompress", _decompress, "decompress .fz files to PNG (or .jpg/.webp by -o suffix)", ".fz files"),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("inputs", nargs="+", metavar="IN", help=f"{in_help}, then optional key=value overrides")
        parser.add_argument("-o", "--output", required=True, metavar="OUT",
                            help="output directory, or a file name when there is one input")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        add_config_arguments(parser)
        parser.set_defaults(func=func)
    sample = subparsers.add_parser(
        "sample", help="compress and restore a sample face (shipped with scikit-image); print bpp and PSNR")
    sample.add_argument("-o", "--output", default="facezip-sample", metavar="DIR",
                        help="where the original, .fz and restored images are written (default: %(default)s)")
    sample.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_config_arguments(sample)
    sample.set_defaults(func=_sample)
    info = subparsers.add_parser("info", help="print the header and bpp of .fz files")
    info.add_argument("files", nargs="+", metavar="FILE")
    info.set_defaults(func=_info)


def _load_codec(cfg) -> Codec:
    try:
        return load_codec(cfg.codec.name, cfg.codec.weights, resolve_device(cfg.device),
                          Storage.from_config(cfg.storage))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _run(args: argparse.Namespace, work) -> int:
    inputs, overrides = split_overrides(args.inputs)
    if not inputs:
        raise CommandError("no input files given")
    cfg = load(args, overrides)
    storage = Storage.from_config(cfg.storage)
    codec = _load_codec(cfg)
    results = work(codec, inputs, args.output, storage, not args.quiet)
    for result in results:
        if result.ok:
            notes = f" ({'; '.join(result.notes)})" if result.notes else ""
            print(f"{result.source} -> {result.output}  {result.bpp:.3f} bpp{notes}")
    return report_failures(args.command, [(r.source, r.error) for r in results if not r.ok], len(results))


def _compress(args: argparse.Namespace) -> int:
    return _run(args, lambda codec, inputs, out, storage, progress:
                compress_files(codec, inputs, out, storage, progress=progress))


def _decompress(args: argparse.Namespace) -> int:
    return _run(args, lambda codec, inputs, out, storage, progress:
                decompress_files(codec, inputs, out, storage, progress=progress))


def _sample(args: argparse.Namespace) -> int:
    cfg = load(args, args.overrides)
    codec = _load_codec(cfg)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    face = sample_face()
    Image.fromarray(face).save(out / "original.png")
    fz = encode_images(codec, [face])[0]
    (out / "face.fz").write_bytes(fz)
    restored = decode_file(codec, (out / "face.fz").read_bytes())
    Image.fromarray(restored).save(out / "restored.png")
    print(f"codec {codec.name} (weights {codec.weights_hash()}), {face.shape[0]}×{face.shape[1]} face")
    print(f"{len(fz)} bytes = {bits_per_pixel(len(fz), *face.shape[:2]):.3f} bpp, "
          f"PSNR {psnr(face, restored):.2f} dB, ratio {face.nbytes / len(fz):.1f}:1 vs raw RGB")
    print(f"wrote {out / 'original.png'}, {out / 'face.fz'}, {out / 'restored.png'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    failures = []
    for path in args.files:
        try:
            with open(path, "rb") as handle:
                print(json.dumps({"file": path, **describe_file(handle.read())}))
        except (OSError, FzFormatError) as exc:
            failures.append((path, str(exc)))
    return report_failures("info", failures, len(args.files)) if failures else 0
