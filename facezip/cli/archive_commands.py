"""``facezip archive``, ``restore`` and ``verify``."""

from __future__ import annotations

import argparse
import json
import sys

from facezip.cli.common import CommandError, add_config_arguments, load, report_failures, split_overrides
from facezip.infra.device import resolve_device
from facezip.infra.storage import Storage
from facezip.tasks.archive import restore_records, run_archive, run_verify
from facezip.tasks.archive.ladder import decoding_codecs


def register(subparsers: argparse._SubParsersAction) -> None:
    archive = subparsers.add_parser("archive", help="compress a face dataset into xz shards with a Parquet index",
                                    description="SRC: a detect output (its face crops) or any image dataset "
                                                "(whole images). DEST: the archive root, local or s3://.")
    archive.add_argument("args", nargs="+", metavar="SRC DEST [KEY=VALUE ...]")
    archive.add_argument("--incremental", action="store_true",
                         help="nightly mode: add only inputs whose source URI and content are not archived yet")
    archive.add_argument("--level", type=int, metavar="N", help="rung of the codec's rate ladder (codec.level)")
    archive.add_argument("--min-identity", type=float, metavar="S",
                         help="identity floor, 0 < S <= 1: faces whose decode has a FaceNet cosine below S to the "
                              "original go up the rate ladder, after the top rung lossless PNG "
                              "(archive.min_identity)")
    archive.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(archive)
    archive.set_defaults(func=_archive)

    restore = subparsers.add_parser("restore", help="restore archived images by id as PNG files")
    restore.add_argument("args", nargs="+", metavar="DEST [KEY=VALUE ...]")
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", nargs="+", dest="ids", metavar="ID", help="ids to restore (latest version)")
    which.add_argument("--all", action="store_true", help="restore every id")
    restore.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (local or s3://)")
    restore.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(restore)
    restore.set_defaults(func=_restore)

    verify = subparsers.add_parser("verify", help="check every record and the index/shard consistency")
    verify.add_argument("args", nargs="+", metavar="DEST [KEY=VALUE ...]")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(verify)
    verify.set_defaults(func=_verify)


def _positional(args: argparse.Namespace, names: tuple[str, ...], options: tuple[str, ...] = ()):
    plain, overrides = split_overrides(args.args)
    if len(plain) != len(names):
        raise CommandError(f"expected {' '.join(names)} then optional key=value overrides, got {plain}")
    return plain, load(args, [*overrides, *options])


def _archive(args: argparse.Namespace) -> int:
    options = ((f"codec.level={args.level}",) if args.level is not None else ()) + (
        (f"archive.min_identity={args.min_identity}",) if args.min_identity is not None else ())
    (src, dest), cfg = _positional(args, ("SRC", "DEST"), options)
    try:
        summary = run_archive(cfg, src, dest, incremental=args.incremental, progress=not args.quiet)
    except ValueError as exc:  # bad SRC, weights or config values: one line, not a traceback
        raise CommandError(str(exc)) from None
    print(json.dumps(summary, indent=1))
    print(f"added {summary['archived']}, skipped {summary['skipped']} (already archived), "
          f"rejected {summary['rejected']} {summary['failures'] or ''}; details in {summary['manifest']}",
          file=sys.stderr)
    if summary["min_identity"] is not None:
        print(f"identity floor {summary['min_identity']}: faces per level {summary['faces_per_level']}, "
              f"{summary['raised_faces']} needed a higher level, {summary['lossless_fallbacks']} stored lossless; "
              f"similarity mean {summary['identity_similarity_mean']}, min {summary['identity_similarity_min']}",
              file=sys.stderr)
    return 1 if summary["rejected"] else 0


def _restore(args: argparse.Namespace) -> int:
    (dest,), cfg = _positional(args, ("DEST",))
    storage = Storage.from_config(cfg.storage)
    try:
        codecs = [codec.to(resolve_device(cfg.device)) for codec in decoding_codecs(cfg, storage)]
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    restored = restore_records(codecs, dest, None if args.all else args.ids, args.output, storage,
                               progress=not args.quiet, max_pixels=cfg.codec.max_decode_pixels)
    failed = report_failures("restore", [(r.id, r.error) for r in restored.results if r.error], len(restored.results))
    for item in restored.problems:
        print(f"facezip restore: {dest}: {describe_problem(item)}", file=sys.stderr)
    if restored.problems:
        print(f"the archive has {len(restored.problems)} problem(s): not everything it held was restored "
              "(facezip verify checks it all)", file=sys.stderr)
    return 1 if failed or restored.problems else 0


def describe_problem(item: dict) -> str:
    return f"shard {item['shard']}: {item['problem']}" if item["shard"] is not None else item["problem"]


def _verify(args: argparse.Namespace) -> int:
    (dest,), cfg = _positional(args, ("DEST",))
    summary = run_verify(cfg, dest, progress=not args.quiet)
    for item in summary["damaged"]:
        print(f"damaged record {item['id']!r} (version {item['version']}, shard {item['shard']}, "
              f"offset {item['offset']}): {item['problem']}", file=sys.stderr)
    for item in summary["shard_problems"]:
        print(describe_problem(item), file=sys.stderr)
    print(f"{summary['records']} records in {summary['shards']} shards: "
          + ("ok" if summary["ok"] else f"{len(summary['damaged'])} damaged records, "
             f"{len(summary['shard_problems'])} archive problems"), file=sys.stderr)
    return 0 if summary["ok"] else 1
