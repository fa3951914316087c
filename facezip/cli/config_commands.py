"""``facezip config``: print the resolved configuration."""

from __future__ import annotations

import argparse

from facezip.cli.common import add_config_arguments, load
from facezip.infra.config import config_to_yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="print the resolved config (defaults + files + overrides)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_config_arguments(parser)
    parser.set_defaults(func=lambda args: print(config_to_yaml(load(args, args.overrides)), end="") or 0)
