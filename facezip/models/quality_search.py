"""Picking each image's quality of a variable-rate codec by bisection, batched over images.

A search runs over a grid of the codec's qualities, lowest first. Each image has a bracket: the
candidate at ``below`` was checked to hold a property, the one at ``above`` to lack it (``-1`` and
``len(grid)``: none checked yet). A step checks the middle of every open bracket, all images at
once (one encode per distinct quality). The property should hold at low qualities only (a payload
within a size; a decode that some judge fails); where it does not, the answer is still a candidate
that was checked. Everything is deterministic: the same images give the same payloads.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from facezip.models.coding import bits_per_pixel, encode_payloads
from facezip.models.registry import Codec

Probe = tuple[int, int]  # (image, grid index)
Check = Callable[[list[Probe]], list[bool]]  # whether the property holds at each probe


def quality_grid(codec: Codec, low: float | None = None, points: int = 65) -> list[float]:
    """The qualities a search picks among, from ``low`` (default: the bottom of the codec's range)
    to the top: ``quality_step`` apart, or ``points`` evenly spaced for a continuous quality."""
    if codec.quality_range is None:
        raise ValueError(f"codec '{codec.name}' codes one rate per weights: it has no quality to search")
    bottom, top = codec.quality_range
    low = bottom if low is None else low
    step = codec.quality_step
    if step is None:
        return [float(q) for q in np.linspace(low, top, points)]
    first = math.ceil((low - bottom) / step - 1e-9)  # on the codec's own steps: no two candidates code alike
    return [bottom + k * step for k in range(first, math.floor((top - bottom) / step + 1e-9) + 1)]


@dataclass
class Bracket:
    below: int  # the highest candidate checked to hold the property (-1: none)
    above: int  # the lowest candidate checked to lack it (the grid's length: none)

    def middle(self) -> int | None:
        return (self.below + self.above) // 2 if self.above - self.below > 1 else None


class QualitySearch:
    """One batch of images, their brackets over ``grid`` and the payload of every candidate checked."""

    def __init__(self, codec: Codec, images: Sequence[np.ndarray], grid: Sequence[float], batch_size: int) -> None:
        self.codec, self.images, self.grid, self.batch_size = codec, images, list(grid), batch_size
        self.brackets = [Bracket(-1, len(self.grid)) for _ in images]
        self.payloads: dict[Probe, bytes] = {}

    def at(self, index: int) -> Codec:
        return self.codec.at_quality(self.grid[index])

    def encode(self, probes: list[Probe]) -> list[bytes]:
        """The payload at each probe, kept for the answer: one encode per distinct quality."""
        by_index: dict[int, list[int]] = defaultdict(list)
        for image, index in probes:
            by_index[index].append(image)
        for index, images in sorted(by_index.items()):
            coded = encode_payloads(self.at(index), [self.images[i] for i in images], self.batch_size)
            self.payloads.update(((i, index), payload) for i, payload in zip(images, coded))
        return [self.payloads[probe] for probe in probes]

    def check(self, probes: list[Probe], holds: Check) -> None:
        """Check ``probes`` in one batch and narrow their images' brackets."""
        if not probes:
            return
        for (image, index), result in zip(probes, holds(probes)):
            if result:
                self.brackets[image].below = index
            else:
                self.brackets[image].above = index

    def bisect(self, holds: Check, steps: int) -> None:
        """Up to ``steps`` rounds, each checking the middle of every open bracket."""
        for _ in range(steps):
            probes = [(i, b.middle()) for i, b in enumerate(self.brackets) if b.middle() is not None]
            if not probes:
                return
            self.check(probes, holds)


@dataclass(frozen=True)
class RateChoice:
    """An image coded for a rate target: its payload, the quality, and whether it met the target."""

    payload: bytes
    quality: float
    within: bool  # False: over the target even at the lowest quality, which it is coded at


def encode_within_bpp(codec: Codec, images: Sequence[np.ndarray], bpp: float, steps: int, batch_size: int,
                      container: Callable[[np.ndarray, bytes], bytes]) -> list[RateChoice]:
    """Each image at the highest quality whose ``container(image, payload)`` (a ``.fz`` file, an
    archive record) is at most ``bpp`` bits per pixel of the image, by ``steps`` rounds of
    bisection; an image over the target even at the lowest quality is coded at that quality."""
    search = QualitySearch(codec, images, quality_grid(codec, points=2**steps + 1), batch_size)

    def fits(probes: list[Probe]) -> list[bool]:
        return [bits_per_pixel(len(container(images[i], payload)), *images[i].shape[:2]) <= bpp
                for (i, _), payload in zip(probes, search.encode(probes))]

    search.bisect(fits, steps)
    search.check([(i, 0) for i, b in enumerate(search.brackets) if b.below < 0 < b.above], fits)
    chosen = [max(b.below, 0) for b in search.brackets]
    return [RateChoice(search.payloads[(i, index)], search.grid[index], b.below >= 0)
            for i, (index, b) in enumerate(zip(chosen, search.brackets))]


def check_bpp_target(codec: type[Codec], bpp: float | None, level: int | None, quality: float | None) -> None:
    """A ``--bpp`` target (``codec.bpp``) needs a variable-rate codec, a positive value and no
    named level or quality beside it: ValueError naming the flag otherwise."""
    if bpp is None:
        return
    if bpp <= 0:
        raise ValueError(f"--bpp {bpp:g} (codec.bpp): a rate target must be > 0 bits per pixel")
    if codec.quality_range is None:
        raise ValueError(f"--bpp (codec.bpp): codec '{codec.name}' codes one rate per weights and has no quality "
                         "to search; give --level N, or a variable-rate codec (comcnn-reccnn)")
    if level is not None or quality is not None:
        raise ValueError("--bpp (codec.bpp) picks each image's quality: give it without --level/--quality "
                         "(codec.level, codec.quality)")
