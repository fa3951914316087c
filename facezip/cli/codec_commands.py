"""``facezip compress``, ``decompress`` and ``info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from facezip.cli.common import (
    CommandError,
    add_config_arguments,
    add_effort_argument,
    add_rate_arguments,
    apply_rate_arguments,
    load,
    report_failures,
    split_overrides,
)
from facezip.infra.device import resolve_device
from facezip.infra.storage import Storage
from facezip.models.coding import bits_per_pixel, decode_file, encode_images
from facezip.models.container import FzFormatError
from facezip.models.loading import BUNDLED
from facezip.models.metrics import psnr
from facezip.models.quality_search import check_bpp_target
from facezip.models.registry import Codec, codec_class
from facezip.models.store import CodecStore
from facezip.tasks.compress import BppTarget, compress_files, decompress_files, describe_file, sample_face


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
        if name == "compress":
            add_rate_arguments(parser, target=True)
            add_effort_argument(parser)
        else:
            parser.add_argument("--raw", action="store_true",
                                help="write each file's payload untouched where it is a standard image file "
                                     "(comcnn-reccnn: the JPEG or AVIF it stores, named .jpg/.avif) instead of "
                                     "facezip's decoding")
        add_config_arguments(parser)
        parser.set_defaults(func=func)
    sample = subparsers.add_parser(
        "sample", help="compress and restore a sample face (shipped with scikit-image); print bpp and PSNR")
    sample.add_argument("-o", "--output", default="facezip-sample", metavar="DIR",
                        help="where the original, .fz and restored images are written (default: %(default)s)")
    sample.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_rate_arguments(sample)
    add_effort_argument(sample)
    add_config_arguments(sample)
    sample.set_defaults(func=_sample)
    info = subparsers.add_parser("info", help="print the header and bpp of .fz files")
    info.add_argument("files", nargs="+", metavar="FILE")
    info.set_defaults(func=_info)


def _config(args: argparse.Namespace, overrides: list[str]):
    return apply_rate_arguments(args, load(args, overrides))


def _store(cfg) -> CodecStore:
    return CodecStore(resolve_device(cfg.device), Storage.from_config(cfg.storage))


def _load_codec(cfg) -> Codec:
    try:
        return _store(cfg).load(cfg.codec.name, cfg.codec.weights, cfg.codec.level, cfg.codec.quality)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _encoder(cfg) -> Codec:
    """The configured codec, refining each image's latents for ``codec.effort`` steps."""
    codec = _load_codec(cfg)
    try:
        return codec.with_effort(cfg.codec.effort)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _decoder(cfg) -> CodecStore:
    """Each file's codec found by the weights hash in its header: any bundled rung (no --level to
    remember) or the configured weights."""
    store = _store(cfg)
    return store if cfg.codec.weights == BUNDLED else store.add(_load_codec(cfg))


def _run(args: argparse.Namespace, work, codec_from_config) -> int:
    inputs, overrides = split_overrides(args.inputs)
    if not inputs:
        raise CommandError("no input files given")
    cfg = _config(args, overrides)
    storage = Storage.from_config(cfg.storage)
    codec = codec_from_config(cfg)
    results = work(codec, inputs, args.output, storage, cfg, not args.quiet)
    for result in results:
        if result.ok:
            notes = f" ({'; '.join(result.notes)})" if result.notes else ""
            print(f"{result.source} -> {result.output}  {result.bpp:.3f} bpp{notes}")
    return report_failures(args.command, [(r.source, r.error) for r in results if not r.ok], len(results))


def _compress(args: argparse.Namespace) -> int:
    return _run(args, lambda codec, inputs, out, storage, cfg, progress:
                compress_files(codec, inputs, out, storage, progress=progress,
                               accept_damaged=cfg.compress.accept_damaged, target=_bpp_target(cfg)), _encoder)


def _bpp_target(cfg) -> BppTarget | None:
    """``--bpp`` (codec.bpp), refused for a fixed-rate codec, with a level or quality, or ≤ 0."""
    try:
        check_bpp_target(codec_class(cfg.codec.name), cfg.codec.bpp, cfg.codec.level, cfg.codec.quality)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return None if cfg.codec.bpp is None else BppTarget(cfg.codec.bpp, cfg.codec.bpp_steps)


def _decompress(args: argparse.Namespace) -> int:
    return _run(args, lambda decoder, inputs, out, storage, cfg, progress:
                decompress_files(decoder, inputs, out, storage, progress=progress,
                                 max_pixels=cfg.codec.max_decode_pixels, raw=args.raw),
                _decoder if not args.raw else lambda cfg: None)


def _sample(args: argparse.Namespace) -> int:
    cfg = _config(args, args.overrides)
    codec = _encoder(cfg)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    face = sample_face()
    Image.fromarray(face).save(out / "original.png")
    fz = encode_images(codec, [face])[0]
    (out / "face.fz").write_bytes(fz)
    restored = decode_file(codec, (out / "face.fz").read_bytes())
    Image.fromarray(restored).save(out / "restored.png")
    level = f", level {codec.level}" if codec.level is not None else ""
    level += f", effort {codec.effort}" if codec.effort else ""
    print(f"codec {codec.name} (weights {codec.weights_hash()}{level}), {face.shape[0]}×{face.shape[1]} face")
    print(f"{len(fz)} bytes = {bits_per_pixel(len(fz), *face.shape[:2]):.3f} bpp, "
          f"PSNR {psnr(face, restored):.2f} dB, ratio {face.nbytes / len(fz):.1f}:1 vs raw RGB")
    print(f"wrote {out / 'original.png'}, {out / 'face.fz'}, {out / 'restored.png'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    failures = []
    bundled = CodecStore()
    for path in args.files:
        try:
            with open(path, "rb") as handle:
                print(json.dumps({"file": path, **describe_file(handle.read(), bundled)}))
        except (OSError, FzFormatError) as exc:
            failures.append((path, str(exc)))
    return report_failures("info", failures, len(args.files)) if failures else 0
