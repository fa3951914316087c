"""The ``facezip`` command line: one module per command group, each adding its subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from facezip import __version__
from facezip.cli import (
    archive_commands,
    codec_commands,
    config_commands,
    detect_commands,
    evaluate_commands,
    pipeline_commands,
    train_commands,
)
from facezip.cli.common import CommandError, is_override
from facezip.infra.config import ConfigError
from facezip.infra.storage import storage_failure

COMMAND_MODULES = [codec_commands, config_commands, detect_commands, archive_commands, pipeline_commands,
                   train_commands, evaluate_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facezip",
        description="Learned compression for face-image archives. Every command takes "
                    "--config FILE (repeatable) and key=value overrides, e.g. device=cpu.",
    )
    parser.add_argument("--version", action="version", version=f"facezip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may follow options (`compress a.png -o out device=cpu`), which argparse
    # cannot give to a positional once it has been filled: collect them here instead.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if not is_override(item)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.extra_overrides = extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, CommandError) as exc:
        print(f"facezip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # storage that fails (down, no credentials, full) is one line, not a traceback
        message = storage_failure(exc)
        if message is None or args.verbose:
            raise
        print(f"facezip {args.command}: error: {message} (-v for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"facezip {args.command}: interrupted", file=sys.stderr)
        return 130
