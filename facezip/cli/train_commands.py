"""``facezip train --phase pretrain|finetune DATA DEST``: train the codec on Ray Train (stage ``train``)."""

from __future__ import annotations

import argparse
import json
import sys

from facezip.cli.common import CommandError, add_config_arguments, load
from facezip.infra.readers import ReaderError
from facezip.tasks.train.phases import phase_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train the codec: pretrain on photos, then finetune on detect's face crops",
        description="Train cfg.codec.name on DATA and write DEST/weights/<codec>.pt, Ray Train checkpoints "
                    "(DEST/ray unless train.storage_path) and DEST/_SUCCESS.json; run again to resume. "
                    "pretrain: DATA is any folder of photos (local or s3://), loss L1 + (1 - MS-SSIM). "
                    "finetune: DATA is a detect output (its faces/ Parquet) or one Parquet file of face crops, "
                    "loss pixel L2 + FaceNet L2, on crops varied by train.augment.*. "
                    "masked-cvae trains in either phase on its own loss: face-masked L1 + KL (train.masked.*). "
                    "Settings: train.* keys, e.g. train.epochs=20 train.num_workers=2 train.cpus_per_worker=0.5; "
                    "train.max_minutes=M stops, checkpointed, after M minutes of training.")
    parser.add_argument("data", metavar="DATA")
    parser.add_argument("dest", metavar="DEST")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--phase", required=True, choices=phase_names())
    parser.add_argument("--init", metavar="WEIGHTS",
                        help="starting weights: a weights file, s3:// URI or models:/<name>/<version>, "
                             "or 'scratch' for an untrained model (finetune default: codec.weights at codec.level)")
    add_config_arguments(parser)
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from facezip.tasks.train import run_train

    cfg = load(args, args.overrides)
    try:
        summary = run_train(cfg, args.data, args.dest, args.phase, init_weights=args.init)
    except (ReaderError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    metrics = summary["metrics"]
    print(f"trained {args.phase} to epoch {metrics.get('epoch')} (step {metrics.get('step')}): val_loss "
          f"{metrics.get('val_loss', float('nan')):.4f}, val_psnr {metrics.get('val_psnr', float('nan')):.2f} dB, "
          f"val_bpp {metrics.get('val_bpp', float('nan')):.3f}; weights {summary['weights']}"
          + (f", registered {summary['model_uri']}" if summary["model_uri"] else ""), file=sys.stderr)
    return 0
