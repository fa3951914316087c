"""``facezip detect SRC DEST``: MTCNN face crops of a face database (stage ``detect``)."""

from __future__ import annotations

import argparse
import json
import sys

from facezip.cli.common import CommandError, add_config_arguments, load
from facezip.infra.readers import layouts


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect", help="keep the images with a face, as MTCNN face crops in Parquet",
        description="Detect faces in SRC (a CelebA or LFW folder, a folder or glob of images, or a Parquet "
                    "dataset; local or s3://) and write face crops, rejections with reasons and stats under "
                    "DEST. Settings: detect.* keys, e.g. detect.min_probability=0.95 detect.keep_all=true.")
    parser.add_argument("src", metavar="SRC")
    parser.add_argument("dest", metavar="DEST")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--layout", choices=layouts(), help="layout of SRC (default: detect.layout, i.e. auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(parser)
    parser.set_defaults(func=_detect)


def _detect(args: argparse.Namespace) -> int:
    from facezip.tasks.detect import AccountingError, run_detect

    overrides = [*args.overrides, *([f"detect.layout={args.layout}"] if args.layout else [])]
    cfg = load(args, overrides)
    try:
        summary = run_detect(cfg, args.src, args.dest, progress=not args.quiet)
    except ValueError as exc:  # ReaderError (bad SRC) or a device that is not there
        raise CommandError(str(exc)) from None
    except AccountingError as exc:
        print(f"facezip detect: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    reasons = ", ".join(f"{n} {reason}" for reason, n in summary["rejected_by_reason"].items()) or "none"
    print(f"kept {summary['kept_images']} of {summary['inputs']} images ({summary['faces']} faces) in "
          f"{summary['duration_s']:.1f} s; rejected: {reasons}", file=sys.stderr)
    return 0
