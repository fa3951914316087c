"""``facezip evaluate DATA DEST``: facezip against JPEG / WebP / AVIF on rate, quality and identity."""

from __future__ import annotations

import argparse
import sys

from facezip.cli.common import (
    CommandError,
    add_config_arguments,
    add_effort_argument,
    add_rate_arguments,
    apply_rate_arguments,
    load,
)
from facezip.infra.readers import ReaderError, layouts
from facezip.tasks.evaluate.baselines import baseline_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="rate, quality and identity of facezip vs JPEG/WebP/AVIF; tables, plots, BD-rate",
        description="Compress the faces of DATA (an LFW folder with pairs.txt, CelebA, a folder of crops, or "
                    "detect output) with each facezip model and each baseline level, over the whole image and "
                    "inside the face mask (from detect's landmarks, else a centre ellipse); write rows.csv/json, "
                    "summary.csv/json, report.md, bjontegaard.csv and plots under DEST and log one MLflow run. "
                    "Settings: evaluate.* keys, e.g. evaluate.center_crop=160 evaluate.max_images=300.")
    parser.add_argument("data", metavar="DATA")
    parser.add_argument("dest", metavar="DEST")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--codec", action="append", default=[], metavar="MODEL",
                        help="facezip model(s) to evaluate (repeatable; evaluate.models entries): "
                             "'mean-scale-hyperprior:ladder' (every bundled rung, one curve), "
                             "'mean-scale-hyperprior:l2', 'binarized-cae:bundled', 'CODEC:PATH', or plain "
                             "weights of codec.name; default: codec.*")
    add_rate_arguments(parser)
    add_effort_argument(parser)
    parser.add_argument("--baselines", metavar="LIST",
                        help=f"comma-separated baselines among {','.join(baseline_names())}, or 'none' "
                             "(default: evaluate.baselines)")
    parser.add_argument("--judge", action="append", default=[], metavar="JUDGE",
                        help="identity judge (repeatable; evaluate.judges, default dlib-resnet and facenet): "
                             "'dlib-resnet' (independent: no codec trains against it), 'facenet' (the network the "
                             "identity loss trains against) or a TorchScript / InceptionResnetV1 state-dict file")
    parser.add_argument("--layout", choices=layouts(), help="layout of DATA (default: evaluate.layout, i.e. auto)")
    add_config_arguments(parser)
    parser.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from facezip.models.metrics import metrics
    from facezip.tasks.evaluate import run_evaluate

    cfg = apply_rate_arguments(args, load(args, args.overrides))
    if args.codec:
        cfg.evaluate.models = list(args.codec)
    if args.baselines:
        cfg.evaluate.baselines = [] if args.baselines == "none" else [b.strip() for b in args.baselines.split(",")]
    if args.judge:
        cfg.evaluate.judges = list(args.judge)
    if args.layout:
        cfg.evaluate.layout = args.layout
    try:
        summary = run_evaluate(cfg, args.data, args.dest)
    except (ReaderError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    shown = [("bpp_mean", "bpp", 3), *((f"{m.name}_mean", m.title, m.digits) for m in metrics() if m.headline),
             *_headline_columns(summary)]
    for judge in summary["judges"]:
        print(f"judge {judge['name']}{' (headline)' if judge['name'] == summary['headline_judge'] else ''}: "
              f"{judge['description']}")
    widths = [max(10, len(title)) for _, title, _ in shown]
    print("  ".join([f"{'level':>10}", *(f"{title:>{width}}" for (_, title, _), width in zip(shown, widths))]))
    for level in summary["levels"]:
        cells = [_cell(level[key], digits) for key, _, digits in shown]
        print("  ".join([f"{level['label']:>10}", *(f"{cell:>{width}}" for cell, width in zip(cells, widths))]))
    print(f"report: {summary['outputs']['report.md']}")
    failed = sum(level["failed"] for level in summary["levels"])
    if failed:
        print(f"facezip evaluate: {failed} face×level rows failed (see rows.csv, column error)", file=sys.stderr)
    return 1 if failed else 0


def _headline_columns(summary: dict) -> list[tuple[str, str, int]]:
    """The headline judge's mean measure and verification (or 1-NN) accuracy."""
    from facezip.models.recognizer import identity_key

    judge = next(j for j in summary["judges"] if j["name"] == summary["headline_judge"])
    name, measure = judge["name"], judge["measure"]
    accuracy = "verification_accuracy" if summary["pairs"] else "nn_accuracy"
    return [(identity_key(name, f"mean_{measure}"), measure[:10], 4),
            (identity_key(name, accuracy), "verif.acc" if summary["pairs"] else "1-NN acc", 4)]


def _cell(value, digits: int) -> str:
    if value is None:
        return "–"
    return value if isinstance(value, str) else f"{value:.{digits}f}"
