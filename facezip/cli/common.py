"""What every subcommand shares: config arguments and how results are reported."""

from __future__ import annotations

import argparse
import re
import sys

from omegaconf import DictConfig

from facezip.infra.config import load_config

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.\[\]]*=")


class CommandError(Exception):
    """A usage problem reported as one line, exit status 2."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file layered over the defaults (repeatable)")


def is_override(item: str) -> bool:
    return bool(_OVERRIDE.match(item))


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments → (plain arguments, key=value overrides)."""
    return [item for item in items if not is_override(item)], [item for item in items if is_override(item)]


def load(args: argparse.Namespace, overrides: list[str]) -> DictConfig:
    """The config of a command: defaults, ``--config`` files, then every key=value override."""
    return load_config(args.config, [*overrides, *getattr(args, "extra_overrides", [])])


def report_failures(command: str, failures: list[tuple[str, str]], total: int) -> int:
    """Print one line per failed input and a summary; the exit status (1 if any failed)."""
    for source, error in failures:
        print(f"facezip {command}: {source}: {error}", file=sys.stderr)
    done = total - len(failures)
    print(f"{done} of {total} done" + (f", {len(failures)} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0
