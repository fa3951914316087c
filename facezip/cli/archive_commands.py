"""``facezip archive``, ``restore`` and ``verify``."""

from __future__ import annotations

import argparse
import json
import sys

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
from facezip.tasks.archive import restore_records, run_archive, run_verify
from facezip.tasks.archive.ladder import decoding_store


def register(subparsers: argparse._SubParsersAction) -> None:
    archive = subparsers.add_parser("archive", help="compress a face dataset into xz shards with a Parquet index",
                                    description="SRC: a detect output (its face crops) or any image dataset "
                                                "(whole images). DEST: the archive root, local or s3://.")
    archive.add_argument("args", nargs="+", metavar="SRC DEST [KEY=VALUE ...]")
    archive.add_argument("--incremental", action="store_true",
                         help="nightly mode: add only inputs whose source URI and content are not archived yet")
    add_rate_arguments(archive, target=True)
    add_effort_argument(archive)
    archive.add_argument("--min-identity", nargs="*", metavar="JUDGE[=T]",
                         help="identity floor: faces whose decode some judge finds too far from the original go up "
                              "the rate ladder, after the top rung lossless PNG. Alone: archive.judges (default "
                              "dlib-resnet, the independent judge) at archive.thresholds; or name the judges, each "
                              "with its own threshold in its own measure: dlib-resnet=0.3 (distance, at most), "
                              "facenet=0.85 (cosine, at least). A variable-rate codec (comcnn-reccnn) bisects its "
                              "quality instead, from the lowest (or --level/--quality) up, archive.floor_steps rounds")
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
    (src, dest), cfg = _positional(args, ("SRC", "DEST"), _floor_options(args.min_identity))
    cfg = apply_rate_arguments(args, cfg)
    try:
        summary = run_archive(cfg, src, dest, incremental=args.incremental, progress=not args.quiet)
    except ValueError as exc:  # bad SRC, weights or config values: one line, not a traceback
        raise CommandError(str(exc)) from None
    print(json.dumps(summary, indent=1))
    print(f"added {summary['archived']}, skipped {summary['skipped']} (already archived), "
          f"rejected {summary['rejected']} {summary['failures'] or ''}; details in {summary['manifest']}",
          file=sys.stderr)
    if summary["min_identity"] is not None:
        reached = "; ".join(f"{judge} {s['measure']} mean {s['mean']}, worst {s['worst']}"
                            for judge, s in summary["identity"].items())
        print(f"identity floor {summary['min_identity']}: faces per level {summary['faces_per_level']}, "
              f"{summary['raised_faces']} needed a higher level (by judge: {summary['raised_by_judge']}), "
              f"{summary['lossless_fallbacks']} stored lossless; {reached}", file=sys.stderr)
    if summary["qualities"] is not None:
        q = summary["qualities"]
        print(f"qualities of {q['faces']} faces: median {q['median']:g} (p10 {q['p10']:g}, p90 {q['p90']:g}; "
              f"{q['min']:g}…{q['max']:g})", file=sys.stderr)
    return 1 if summary["rejected"] else 0


def _floor_options(specs: list[str] | None) -> tuple[str, ...]:
    """``--min-identity [JUDGE[=T] ...]`` as config overrides: the floor on; named judges replace
    archive.judges, a given T sets that judge's threshold."""
    if specs is None:
        return ()
    options = ["archive.identity_floor=true"]
    judges = []
    for spec in specs:
        judge, _, value = spec.partition("=")
        if _is_number(judge):
            raise CommandError(f"--min-identity {spec}: name the judge whose threshold this is, in its own measure "
                               f"(e.g. --min-identity dlib-resnet=0.3 for a distance, facenet={judge} for a cosine)")
        if value and not _is_number(value):
            raise CommandError(f"--min-identity {spec}: the threshold '{value}' is not a number")
        judges.append(judge)
        if value:
            options.append(f"archive.thresholds.{judge}={value}")
    if judges:
        options.append(f"archive.judges=[{','.join(judges)}]")
    return tuple(options)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _restore(args: argparse.Namespace) -> int:
    (dest,), cfg = _positional(args, ("DEST",))
    storage = Storage.from_config(cfg.storage)
    try:
        codecs = decoding_store(cfg, storage, resolve_device(cfg.device))
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
