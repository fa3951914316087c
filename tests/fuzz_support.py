"""A seeded mutation fuzzer for facezip's three parsers of stored bytes: the ``.fz`` file, the
archive record and the index part. Used by ``tests/test_fuzz.py`` (a few thousand inputs) and
``benchmarks/fuzz.py`` (as many as asked).

Each input is decoded in a child process that decodes many inputs in turn and reports one line
per input (its outcome, CPU seconds and peak RSS), so a native crash or a hang is caught, counted
and the rest of the batch goes on in a new child. Allowed outcomes: decoded, or the parser's
documented error (``FzFormatError`` for ``.fz`` files, ``RecordError``/a decode failure for
records, ``IndexPartError`` or ``RecordError`` for index parts). Anything else is a finding.

Half of the mutated ``.fz`` files and records get their length and CRC32 recomputed, as a
hostile writer would, so mutations reach the entropy decoder and not only the framing checks.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

DOCUMENTED = {"fz": ("FzFormatError",), "record": ("RecordError", "decode_failed"),
              "index": ("IndexPartError", "RecordError")}
_INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 1 << 16, 1 << 24, 1 << 31, (1 << 32) - 1]


@dataclass
class Report:
    outcomes: Counter = field(default_factory=Counter)  # (target, outcome) → count
    messages: Counter = field(default_factory=Counter)  # (target, error message without numbers) → count
    # (input number, target, seed, outcome) of the inputs whose outcome is not allowed
    findings: list[tuple[int, str, str, str]] = field(default_factory=list)
    max_cpu_s: float = 0.0
    max_wall_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def inputs(self) -> int:
        return sum(self.outcomes.values())


# --- the corpus --------------------------------------------------------------------------------

def codecs():
    """The models the fuzzed inputs name: binarized-cae (seeded random weights) and a bundled
    hyperprior rung (the rANS decoder)."""
    import torch

    from facezip.models import create_codec
    from facezip.models.loading import load_codec

    torch.manual_seed(0)
    return [create_codec("binarized-cae").freeze(), load_codec("mean-scale-hyperprior", "bundled", "cpu", level=1)]


def seeds(models) -> dict[str, list[tuple[str, bytes, dict]]]:
    """Valid inputs per target: (name, bytes, context) — a record's context is its index row."""
    import numpy as np
    import pyarrow as pa

    from archive_support import legacy_record  # archives written before record version 3 still read
    from facezip.infra.storage import parquet_bytes
    from facezip.models.coding import encode_images, encode_payloads
    from facezip.models.container import FzHeader
    from facezip.models.lossless import LOSSLESS_WEIGHTS_HASH
    from facezip.tasks.archive.layout import INDEX_SCHEMA, pack_record

    rng = np.random.default_rng(0)
    face = np.clip(rng.normal(128, 40, (32, 48, 3)), 0, 255).astype(np.uint8)
    fz = [(f"{m.name}.fz", data, {}) for m, data in zip(models, (encode_images(m, [face])[0] for m in models))]
    with open(os.path.join(os.path.dirname(__file__), "data", "astronaut-face-hyperprior-release1.fz"), "rb") as f:
        fz.append(("release1-v2.fz", f.read(), {}))
    records = []
    for model in models:
        header = FzHeader(model.name, model.weights_hash(), *face.shape[:2])
        payload = encode_payloads(model, [face])[0]
        records.append((f"{model.name}.record", pack_record(header, payload, model.xz_options,
                                                             stored=model.entropy_coded), _row(header)))
        records.append((f"{model.name}-v2.record", legacy_record(header, payload, model.xz_options,
                                                                 stored=model.entropy_coded), _row(header)))
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(face).save(png, "PNG")
    lossless = FzHeader("png", LOSSLESS_WEIGHTS_HASH, *face.shape[:2])
    records.append(("lossless.record", pack_record(lossless, png.getvalue(), stored=True), _row(lossless)))
    rows = [{**_row(FzHeader(models[0].name, models[0].weights_hash(), 32, 48)), "id": f"face{i}",
             "offset": 100 * i, "length": 100, "version": 1, "source_uri": f"/in/face{i}.png"} for i in range(4)]
    index = [("index.parquet", parquet_bytes(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)), {})]
    return {"fz": fz, "record": records, "index": index}


def _row(header) -> dict:
    return {"id": "fuzzed", "shard": 0, "offset": 0, "length": 0, "height": header.height, "width": header.width,
            "codec": header.codec, "weights_hash": header.weights_hash, "sha256": ""}


# --- mutations ---------------------------------------------------------------------------------

def mutate(data: bytes, rng: random.Random, donors: list[bytes]) -> bytes:
    """One to four random edits: bit flips, interesting bytes and integers, cuts, inserts, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        at = rng.randrange(len(out)) if out else 0
        if kind == 0 and out:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:
            out[at] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        elif kind == 2 and len(out) >= at + 4:
            out[at : at + 4] = struct.pack("<I", rng.choice(_INTERESTING))
        elif kind == 3:
            del out[at : at + rng.randint(1, max(1, len(out) // 4))]
        elif kind == 4:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif kind == 5:
            out = out[: rng.randrange(len(out) + 1)]
        else:
            donor = rng.choice(donors)
            out[at:] = donor[rng.randrange(len(donor) + 1) :]
    return bytes(out)


def fix_framing(target: str, data: bytes, context: dict) -> bytes:
    """Recompute the payload length and CRC32 a mutated ``.fz`` file carries, or a stored record's
    chunk length and CRC32 (of the header its index row ``context`` gives), as a hostile writer
    would: the mutation then reaches the payload's decoder."""
    from facezip.models.container import MAGIC, crc32
    from facezip.tasks.archive.layout import row_header

    if target == "fz" and data[:4] == MAGIC and len(data) > 7 and data[4] in (2, 3):
        sizes = 7 + data[6] + 8
        crc = 4 if data[4] == 3 else 0
        if len(data) >= sizes + 12 + crc:
            head = data[: sizes + 8] + struct.pack("<I", len(data) - sizes - 12 - crc)
            stream = data[sizes + 12 + crc :]
            return head + (struct.pack("<I", crc32(head, stream)) if crc else b"") + stream
    if target == "record" and data[:3] == b"FZR" and len(data) > 5 and data[3] == 2:
        end = 5 + data[4] + 8 + 8
        if len(data) >= end + 4:
            return data[:end] + struct.pack("<I", crc32(data[:end], data[end + 4 :])) + data[end + 4 :]
    if target == "record" and data[:1] == b"\x01" and 8 < len(data) <= 3 + (1 << 16):  # one uncompressed chunk
        body = data[3:]
        crc = crc32(row_header(context).identity(), body[:1], body[5:])
        return b"\x01" + (len(body) - 1).to_bytes(2, "big") + body[:1] + struct.pack("<I", crc) + body[5:]
    return data


def corpus(seed_sets: dict[str, list], counts: dict[str, int], seed: int) -> list[tuple[str, str, bytes, dict]]:
    """``counts[target]`` mutated inputs per target: (target, seed name, bytes, context)."""
    rng = random.Random(seed)
    items = []
    for target, count in counts.items():
        donors = [data for _, data, _ in seed_sets[target]]
        for _ in range(count):
            name, data, context = rng.choice(seed_sets[target])
            mutated = mutate(data, rng, donors)
            if rng.random() < 0.5:
                mutated = fix_framing(target, mutated, context)
            items.append((target, name, mutated, context))
    return items


# --- decoding one input, in the child ------------------------------------------------------------

class Decoders:
    def __init__(self) -> None:
        from facezip.infra.storage import Storage
        from facezip.models.store import CodecStore

        self.models = codecs()
        self.store = CodecStore(codecs=self.models)  # what `facezip decompress` uses: each file's own rung
        self.storage = Storage()
        self._warm_up()

    def _warm_up(self) -> None:
        """Load what decoding loads lazily (every bundled rung, the rANS helper process) before the
        first input, so no input is charged for it."""
        import numpy as np

        from facezip.models.coding import decode_file, encode_images

        for model in self.models:
            self.store.bundled(model.name)
            decode_file(model, encode_images(model, [np.zeros((16, 16, 3), np.uint8)])[0])

    def decode(self, target: str, data: bytes, context: dict) -> str:
        """The outcome: ``ok`` or the name of the error raised (or returned, for records)."""
        from facezip.infra.storage import join
        from facezip.models.coding import decode_file
        from facezip.models.container import FzFormatError, read_header
        from facezip.tasks.archive.integrity import IndexPartError, read_trusted_part
        from facezip.tasks.archive.restore import RecordError, check_span, decode_opened, open_record

        try:
            if target == "fz":
                header = read_header(data)[0]
                decode_file(self.store.find(header.codec, header.weights_hash), data)
            elif target == "record":
                opened = open_record(self.store, data, context)
                decoded = decode_opened(self.store, [opened])[0]
                if isinstance(decoded, str):
                    return f"decode_failed:{decoded}"
            else:
                root = "memory://fuzz-archive"
                fs, _ = self.storage.fs(root)
                fs.pipe(join(root, "index", "00000.parquet"), data)
                fs.pipe(join(root, "stats", "00000.json"), b"{}")  # an archive from before index checksums
                for row in read_trusted_part(root, 0, self.storage).to_pylist():
                    check_span(row)
        except (FzFormatError, RecordError, IndexPartError) as exc:
            return f"{type(exc).__name__}:{exc}"
        return "ok"


def child_main(batch_file: str, start: int, stop: int) -> None:
    """Decode inputs ``start``…``stop - 1`` of the batch, one line per input: ``start i`` then
    ``done i cpu rss outcome``."""
    with open(batch_file, "rb") as handle:
        items = pickle.load(handle)
    import torch

    torch.set_num_threads(1)  # one input at a time, each on one core: timings comparable under load
    decoders = Decoders()
    print("ready", flush=True)
    for i in range(start, stop):
        target, _, data, context = items[i]
        print(f"start {i}", flush=True)
        cpu = time.process_time()
        try:
            outcome = decoders.decode(target, data, context)
        except Exception as exc:  # noqa: BLE001 — an undocumented error type is a finding, reported
            outcome = f"undocumented:{type(exc).__name__}:{exc}"
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        outcome = " ".join(outcome.split())[:200]  # one line
        print(f"done {i} {time.process_time() - cpu:.4f} {rss_mb:.0f} {outcome}", flush=True)


# --- the parent ----------------------------------------------------------------------------------

def run(items: list[tuple[str, str, bytes, dict]], hang_s: float = 1.0, ready_s: float = 300.0) -> Report:
    """Decode ``items`` in child processes; a crash or a hang (no answer within ``hang_s``) costs
    one input and one child. An input that hangs is tried once more alone, so a busy machine's
    pause is not a finding; a real hang hangs again."""
    report = Report()
    with tempfile.NamedTemporaryFile(suffix=".pkl") as batch:
        pickle.dump(items, batch)
        batch.flush()
        start = 0
        while start < len(items):
            start = _run_child(batch.name, items, start, len(items), report, hang_s, ready_s)
    return report


def _run_child(batch_file: str, items: list, start: int, stop: int, report: Report, hang_s: float,
               ready_s: float, retry: bool = True) -> int:
    """Decode inputs from ``start`` in one child until it ends, dies or hangs; the next input to do."""
    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import fuzz_support; " \
           f"fuzz_support.child_main({batch_file!r}, {start}, {stop})"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, bufsize=1)
    current, started = None, time.monotonic()
    try:
        while True:
            line = _readline(child, ready_s if current is None else hang_s)
            if line is None:  # a hang: the child is killed, the input tried alone once more, or counted
                child.kill()
                if retry and current is not None:
                    return _run_child(batch_file, items, current, current + 1, report, hang_s, ready_s, retry=False)
                return _record_failure(report, items, current, "hang")
            if line == "":  # the child died: a native crash
                status = child.wait()
                return _record_failure(report, items, current, f"crash(signal {-status})")
            words = line.split(" ", 4)
            if words[0] == "start":
                current, started = int(words[1]), time.monotonic()
            elif words[0] == "done":
                _record(report, items, int(words[1]), words[4].strip(), float(words[2]), float(words[3]),
                        time.monotonic() - started)
                current = None  # between inputs: a pause here is not the input's
                if int(words[1]) == stop - 1:
                    return stop
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


def _readline(child: subprocess.Popen, timeout_s: float) -> str | None:
    ready = select.select([child.stdout], [], [], timeout_s)[0]
    return child.stdout.readline() if ready else None


def _record(report: Report, items: list, index: int, outcome: str, cpu_s: float, rss_mb: float,
            wall_s: float) -> None:
    target, seed_name = items[index][0], items[index][1]
    kind, _, message = outcome.partition(":")
    report.outcomes[(target, kind)] += 1
    report.messages[(target, re.sub(r"[0-9a-f]{16}|\d+", "N", message)[:70])] += 1
    if kind not in ("ok", *DOCUMENTED[target]):
        report.findings.append((index, target, seed_name, outcome))
    report.max_cpu_s = max(report.max_cpu_s, cpu_s)
    report.max_wall_s = max(report.max_wall_s, wall_s)
    report.peak_rss_mb = max(report.peak_rss_mb, rss_mb)


def _record_failure(report: Report, items: list, current: int | None, outcome: str) -> int:
    if current is None:
        raise RuntimeError(f"the fuzz child failed before decoding anything ({outcome})")
    target, seed_name = items[current][0], items[current][1]
    report.outcomes[(target, outcome)] += 1
    report.findings.append((current, target, seed_name, outcome))
    return current + 1


def summary(report: Report, verbose: bool = False) -> str:
    lines = [f"{report.inputs} inputs; findings (crash, hang, undocumented error): {len(report.findings)}; "
             f"max CPU per input {report.max_cpu_s:.3f} s, max wall {report.max_wall_s:.2f} s, "
             f"child peak RSS {report.peak_rss_mb:.0f} MB"]
    lines += [f"  {target:7s} {outcome:24s} {count}" for (target, outcome), count in sorted(report.outcomes.items())]
    if verbose:
        lines += ["  most frequent outcomes in words:"]
        frequent = report.messages.most_common(30)
        lines += [f"    {count:6d}  {target:7s} {message}" for (target, message), count in frequent]
    lines += [f"  finding: input {i}, {t} from {s}: {o}" for i, t, s, o in report.findings[:20]]
    return "\n".join(lines)


if __name__ == "__main__":  # a quick look: python tests/fuzz_support.py
    models = codecs()
    print(summary(run(corpus(seeds(models), {"fz": 200, "record": 200, "index": 100}, seed=0)), verbose=True))
