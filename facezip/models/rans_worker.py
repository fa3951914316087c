"""The helper process of ``facezip.models.rans_guard``, run as a script (not imported): it loads
only compressai's ``ans`` extension (no torch, so it starts in milliseconds) and decodes the rANS
strings it is sent. A hostile string may crash it; that costs this process, not facezip.

Frames on stdin/stdout: an 8-byte little-endian length, then a pickle (requests) or int32 bytes
(replies). Exits when stdin closes, i.e. when its parent does.
"""

import importlib.util
import pickle
import struct
import sys
from array import array

_LENGTH = struct.Struct("<Q")


def read_frame(stream) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    return stream.read(_LENGTH.unpack(head)[0])


def main(ans_path: str) -> None:
    spec = importlib.util.spec_from_file_location("compressai.ans", ans_path)
    ans = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ans)
    decoder = ans.RansDecoder()
    tables: dict[bytes, tuple] = {}
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (frame := read_frame(stdin)) is not None:
        key, new_tables, string, indexes = pickle.loads(frame)
        if new_tables is not None:
            tables[key] = new_tables
        values = array("i", decoder.decode_with_indexes(string, indexes, *tables[key])).tobytes()
        stdout.write(_LENGTH.pack(len(values)) + values)
        stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
