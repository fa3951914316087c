"""The long fuzz run: the CI fuzz test's harness (``tests/fuzz_support.py``) on as many inputs as
asked, with another seed by default. Prints outcomes per parser, the most frequent errors, and
every finding (a native crash, a hang over ``--hang`` seconds, an undocumented error type).

    python benchmarks/fuzz.py --fz 20000 --record 6000 --index 4000 [--seed 1] [--hang 1.0]

Exit status 1 if there is any finding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz_support  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fz", type=int, default=20000, help="mutated .fz files")
    parser.add_argument("--record", type=int, default=6000, help="mutated archive records")
    parser.add_argument("--index", type=int, default=4000, help="mutated index parts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hang", type=float, default=1.0, help="seconds without an answer that count as a hang")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write each finding's input here")
    args = parser.parse_args()
    started = time.monotonic()
    items = fuzz_support.corpus(fuzz_support.seeds(fuzz_support.codecs()),
                                {"fz": args.fz, "record": args.record, "index": args.index}, seed=args.seed)
    report = fuzz_support.run(items, hang_s=args.hang)
    print(fuzz_support.summary(report, verbose=True))
    print(f"{report.inputs / (time.monotonic() - started):.0f} inputs/s")
    for index, target, _, _ in report.findings if args.save else []:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / f"{index:06d}.{target}").write_bytes(items[index][2])
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
