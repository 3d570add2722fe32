#!/usr/bin/env python3
"""Slim a full-frame lab capture for committing: zero every frame byte past KEEP, gzip -n.

The model's features read only the first 64 bytes of each IP packet plus header fields, and
sizes come from the IP header (not from the captured length), so zeroing the rest of each
frame leaves every window, label and feature identical while gzip shrinks the file ~8x.
(Truncating with a snaplen would not: the sensor, like Suricata, drops IP packets longer
than what was captured - `decoder.event.ipv4.trunc_pkt` - so big packets would vanish.)
Checksums no longer match the zeroed payloads; nothing in the sensor verifies them.

    python3 pcaps/model/slim.py SRC.pcap DST.pcap.gz [--keep 96]
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys


def slim(src: str, dst: str, keep: int = 96) -> int:
    """Write the slimmed copy; returns the number of frames."""
    with open(src, "rb") as fh:
        data = bytearray(fh.read())
    magic = bytes(data[:4])
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise SystemExit(f"{src}: not a classic pcap file")
    off, frames = 24, 0
    while off + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, off + 8)[0]
        start = off + 16
        if caplen > keep:
            data[start + keep:start + caplen] = bytes(caplen - keep)
        off = start + caplen
        frames += 1
    with open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9,
                                               mtime=0, filename="") as gz:
        gz.write(bytes(data))
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--keep", type=int, default=96, help="frame bytes kept (default 96)")
    a = ap.parse_args()
    n = slim(a.src, a.dst, a.keep)
    print(f"{a.dst}: {n} frames", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
