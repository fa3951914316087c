"""What every subcommand shares: config arguments and how results are reported."""

from __future__ import annotations

import argparse
import re
import sys

from omegaconf import DictConfig

from facezip.pipelines.config import load_config

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.\[\]-]*=")  # keys may hold dashes: evaluate.qualities.avif-speed4


class CommandError(Exception):
    """A usage problem reported as one line, exit status 2."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file layered over the defaults (repeatable)")


def add_rate_arguments(parser: argparse.ArgumentParser, target: bool = False) -> None:
    """``--level N`` / ``--quality Q``: the point of the codec's rate curve to encode at; with
    ``target``, also ``--bpp B``: each image's own point, by its size."""
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--level", type=int, metavar="N",
                      help="named rate N of the codec, 1 = fewest bytes (codec.level): a rung of its bundled rate "
                           "ladder (mean-scale-hyperprior 1…8) or a named quality of a variable-rate codec "
                           "(comcnn-reccnn 1…8)")
    rate.add_argument("--quality", type=float, metavar="Q",
                      help="a variable-rate codec's quality, higher = more bytes (codec.quality; comcnn-reccnn: the "
                           "base codec's 1…100)")
    if target:
        rate.add_argument("--bpp", type=float, metavar="B",
                          help="a variable-rate codec's rate target (codec.bpp): each image at the highest quality "
                               "whose file or record is at most B bits per pixel, found by bisection; the lowest "
                               "quality, noted, where even that is larger")


def apply_rate_arguments(args: argparse.Namespace, cfg: DictConfig) -> DictConfig:
    """The config with ``--level`` / ``--quality`` / ``--bpp`` applied over it (one replaces the others)."""
    for flag in ("level", "quality", "bpp"):
        if getattr(args, flag, None) is not None:
            cfg.codec.level = cfg.codec.quality = cfg.codec.bpp = None
            cfg.codec[flag] = getattr(args, flag)
    return cfg


def is_override(item: str) -> bool:
    return bool(_OVERRIDE.match(item))


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments → (plain arguments, key=value overrides)."""
    return [item for item in items if not is_override(item)], [item for item in items if is_override(item)]


def load(args: argparse.Namespace, overrides: list[str]) -> DictConfig:
    """The config of a command: defaults, ``--config`` files, every key=value override, then ``--effort``."""
    cfg = load_config(args.config, [*overrides, *getattr(args, "extra_overrides", [])])
    if getattr(args, "effort", None) is not None:
        cfg.codec.effort = args.effort
    return cfg


def report_failures(command: str, failures: list[tuple[str, str]], total: int) -> int:
    """Print one line per failed input and a summary; the exit status (1 if any failed)."""
    for source, error in failures:
        print(f"facezip {command}: {source}: {error}", file=sys.stderr)
    done = total - len(failures)
    print(f"{done} of {total} done" + (f", {len(failures)} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def add_effort_argument(parser: argparse.ArgumentParser) -> None:
    """``--effort N``: refinement steps per face at encode time (``codec.effort``)."""
    parser.add_argument("--effort", type=int, metavar="N",
                        help="refine each face's latents for N gradient steps on the codec's own rate + λ·distortion "
                             "before coding them (codec.effort, 0…1000, default 0: the encoder's output): fewer bytes "
                             "at equal quality for more encode time; decoding is unchanged (mean-scale-hyperprior)")
