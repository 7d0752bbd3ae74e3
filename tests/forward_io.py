#!/usr/bin/env python3
"""Inputs and outputs of `segtrain forward` for the shell tests (standard library only):

  forward_io.py input OUT N SIZE      write N random 1 x SIZE x SIZE slices (seeded) as tensor "x"
  forward_io.py compare A B TOL       the "logits" of A and B agree: max |a - b| / max |a| <= TOL
"""
import json
import random
import struct
import sys


def write_input(path, n, size):
    random.seed(1)
    count = n * size * size
    data = struct.pack(f"<{count}f", *[random.uniform(-1, 1) for _ in range(count)])
    h = json.dumps({"x": {"dtype": "F32", "shape": [n, 1, size, size], "data_offsets": [0, len(data)]}}).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def load_logits(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    o = json.loads(b[8:8 + n])["logits"]["data_offsets"]
    d = b[8 + n + o[0]:8 + n + o[1]]
    return struct.unpack(f"<{len(d) // 4}f", d)


def main(argv):
    if len(argv) == 5 and argv[1] == "input":
        write_input(argv[2], int(argv[3]), int(argv[4]))
        return 0
    if len(argv) == 5 and argv[1] == "compare":
        a, b = load_logits(argv[2]), load_logits(argv[3])
        m = max(abs(x) for x in a)
        e = max(abs(x - y) for x, y in zip(a, b)) / m if len(a) == len(b) else float("inf")
        print(f"rel err {e:.2e}")
        return 0 if e <= float(argv[4]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
