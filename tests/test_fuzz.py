"""Fuzzing in CI: a bounded, seeded corpus of mutated ``.fz`` files, archive records and index
parts, each decoded in a child process (``fuzz_support``). Every input must end decoded or with
the parser's documented error: no native crash, no hang over a second, no undocumented error,
and the decoding process stays within a memory bound. ``benchmarks/fuzz.py`` runs longer."""

from __future__ import annotations

import fuzz_support

COUNTS = {"fz": 1400, "record": 1000, "index": 600}  # 3,000 inputs, about a minute
PEAK_RSS_MB = 3000  # the child holds torch and the models (~1 GB); no input may take it far beyond


def test_fuzzed_inputs_decode_or_fail_with_the_documented_error():
    items = fuzz_support.corpus(fuzz_support.seeds(fuzz_support.codecs()), COUNTS, seed=20)
    report = fuzz_support.run(items, hang_s=1.0)
    assert report.inputs == sum(COUNTS.values())
    assert report.findings == [], fuzz_support.summary(report, verbose=True)
    assert report.peak_rss_mb < PEAK_RSS_MB, fuzz_support.summary(report)
