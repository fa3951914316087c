"""CompressAI's rANS decoder behind a process boundary.

Its C++ loop trusts the stream: a string that does not fit the shape it is decoded into (a
damaged or hostile payload) makes it read past the end of its buffer, and the process dies with
a segmentation fault. Decoding therefore runs in a helper process (``rans_worker.py``: compressai's
``ans`` extension alone, no torch, started in milliseconds, reused across calls). A string that
kills the helper or keeps it busy past a timeout raises ``EntropyDecodeError`` for that string;
the next call starts a new helper. The pixels are the same: it is the same decoder.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
from array import array
from contextlib import contextmanager
from pathlib import Path

_LENGTH = struct.Struct("<Q")
WORKER = Path(__file__).with_name("rans_worker.py")
DECODE_TIMEOUT_S = 60.0  # a 4096×4096 image decodes in seconds; the C++ loop is bounded, this is a backstop


class EntropyDecodeError(ValueError):
    """A rANS string the decoder could not decode (it crashed or hung on it)."""


class _Helper:
    """One helper process and the CDF tables it already holds."""

    def __init__(self) -> None:
        import compressai.ans

        self.process = subprocess.Popen([sys.executable, "-S", str(WORKER), compressai.ans.__file__],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.tables: set[bytes] = set()

    def decode(self, key: bytes, tables: tuple, string: bytes, indexes: list[int], timeout_s: float) -> list[int]:
        request = pickle.dumps((key, None if key in self.tables else tables, string, indexes))
        self.process.stdin.write(_LENGTH.pack(len(request)) + request)
        self.process.stdin.flush()
        self.tables.add(key)
        (length,) = _LENGTH.unpack(self._read(_LENGTH.size, timeout_s))
        return array("i", self._read(length, timeout_s)).tolist()

    def _read(self, size: int, timeout_s: float) -> bytes:
        chunks, remaining, fd = [], size, self.process.stdout.fileno()
        while remaining:
            if not select.select([fd], [], [], timeout_s)[0]:
                raise TimeoutError
            chunk = os.read(fd, remaining)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def close(self) -> int | None:
        """Stop the helper; its exit status (negative: the signal that killed it)."""
        if self.process.poll() is None:
            self.process.kill()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()
        return self.process.wait()


_helper: _Helper | None = None
_lock = threading.Lock()


def decode_with_indexes(string: bytes, indexes: list[int], cdfs: list, cdf_lengths: list[int],
                        offsets: list[int], tables_key: bytes | None = None,
                        timeout_s: float = DECODE_TIMEOUT_S) -> list[int]:
    """``RansDecoder.decode_with_indexes``, run in the helper process."""
    global _helper
    tables = (cdfs, cdf_lengths, offsets)
    key = tables_key or hashlib.sha1(pickle.dumps(tables)).digest()
    with _lock:
        if _helper is None:
            _helper = _Helper()
        try:
            return _helper.decode(key, tables, string, indexes, timeout_s)
        except (EOFError, BrokenPipeError, TimeoutError) as exc:
            status = _helper.close()
            _helper = None
            raise EntropyDecodeError(_describe(exc, status, len(string), len(indexes), timeout_s)) from None
        except BaseException:  # e.g. Ctrl-C mid-reply: the helper's stream is out of step, start afresh
            _helper.close()
            _helper = None
            raise


def _describe(exc: Exception, status: int | None, length: int, symbols: int, timeout_s: float) -> str:
    what = f"a {length}-byte rANS string of {symbols} symbols"
    if isinstance(exc, TimeoutError):
        return f"the entropy decoder did not finish {what} in {timeout_s:g} s: the payload is damaged or hostile"
    cause = signal.Signals(-status).name if status is not None and status < 0 else f"exit status {status}"
    return f"the entropy decoder crashed ({cause}) on {what}: the payload is damaged or hostile"


class _GuardedCoder:
    """Stands in for an entropy model's coder while it decodes: the same interface, the helper behind it."""

    def __init__(self) -> None:
        self.key: bytes | None = None  # the tables are the same for every string of one decompress call

    def decode_with_indexes(self, string, indexes, cdfs, cdf_lengths, offsets):
        if self.key is None:
            self.key = hashlib.sha1(pickle.dumps((cdfs, cdf_lengths, offsets))).digest()
        return decode_with_indexes(string, indexes, cdfs, cdf_lengths, offsets, self.key)


@contextmanager
def guarded_decoding(*entropy_models):
    """Within the block, ``entropy_models`` (CompressAI EntropyModels) decode in the helper process."""
    saved = [model.entropy_coder for model in entropy_models]
    try:
        for model in entropy_models:
            model.entropy_coder = _GuardedCoder()
        yield
    finally:
        for model, coder in zip(entropy_models, saved):
            model.entropy_coder = coder
