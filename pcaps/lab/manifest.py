#!/usr/bin/env python3
"""Writes MANIFEST.md for a traffic-lab dataset directory (make-dataset.sh calls it).

For every SPLIT-sSEED.pcap[.gz] + SPLIT-sSEED.labels.csv it lists the split, seed, the
exact generator command (from the staging dir's .cmd file), the capture's duration and
packet count, its attacks, and the attacker packets found inside each labelled slot. It
fails when a slot holds no packet from its attacker: such a label would be a lie.

    python3 pcaps/lab/manifest.py [--stage STAGE_DIR] DATA_DIR

Stdlib only (runs as root outside the venv).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import os
import re
import socket
import struct
import sys
from collections.abc import Iterator

NAME_RE = re.compile(r"^(?P<split>[a-z-]+)-s(?P<seed>\d+)\.pcap(?:\.gz)?$")
SPLIT_ORDER = ("train", "val", "test", "benign-train", "benign-val", "benign-test")


def records(path: str) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) of a classic pcap, plain or gzip'ed (the lab writes only these)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(24)
        if len(head) < 24:
            return
        magic = head[:4]
        endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        div = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
        rec = struct.Struct(endian + "IIII")
        while True:
            h = fh.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _orig = rec.unpack(h)
            yield sec + frac / div, fh.read(incl)


def read_labels(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def summarize(pcap: str, labels: list[dict]) -> dict:
    """Packets, first/last timestamp, attacker packets per slot (IPv4 over Ethernet)."""
    slots = [(row["name"], socket.inet_aton(row["attacker_ip"]), float(row["start_ts"]),
              float(row["end_ts"])) for row in labels]
    per_slot = {row["name"]: 0 for row in labels}
    n, first, last = 0, None, None
    for ts, frame in records(pcap):
        n += 1
        first = ts if first is None else first
        last = ts
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        src, dst = frame[26:30], frame[30:34]
        for name, ip, start, end in slots:
            if start <= ts <= end and ip in (src, dst):
                per_slot[name] += 1
    return {"packets": n, "seconds": (last - first) if n else 0.0, "per_slot": per_slot}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--stage", help="make-dataset.sh staging dir holding NAME.cmd files")
    args = ap.parse_args(argv)
    entries = []
    for fname in os.listdir(args.data_dir):
        m = NAME_RE.match(fname)
        if not m:
            continue
        pcap = os.path.join(args.data_dir, fname)
        stem = re.sub(r"\.pcap(\.gz)?$", "", fname)
        labels_path = os.path.join(args.data_dir, stem + ".labels.csv")
        labels = read_labels(labels_path) if os.path.exists(labels_path) else []
        cmd = ""
        cmd_path = os.path.join(args.stage or "", stem + ".cmd")
        if args.stage and os.path.exists(cmd_path):
            with open(cmd_path) as fh:
                cmd = fh.read().strip()
        else:
            old = os.path.join(args.data_dir, "MANIFEST.md")
            if os.path.exists(old):  # keep the command recorded by the run that made it
                with open(old) as fh:
                    for line in fh:
                        if line.startswith(f"| {fname} ") and "`" in line:
                            cmd = line.split("`")[1]
        s = summarize(pcap, labels)
        empty = [k for k, v in s["per_slot"].items() if v == 0]
        if empty:
            print(f"{pcap}: no attacker packet inside the slot of {', '.join(empty)}",
                  file=sys.stderr)
            return 1
        entries.append({"file": fname, "split": m["split"], "seed": int(m["seed"]),
                        "cmd": cmd, "labels": labels, "bytes": os.path.getsize(pcap),
                        "sha256": sha256(pcap), **s})
    if not entries:
        print(f"{args.data_dir}: no SPLIT-sSEED.pcap[.gz] files", file=sys.stderr)
        return 1
    entries.sort(key=lambda e: (SPLIT_ORDER.index(e["split"]) if e["split"] in SPLIT_ORDER
                                else 99, e["seed"]))
    total = sum(e["bytes"] for e in entries)
    out = [
        "# Traffic-lab dataset manifest",
        "",
        "Written by `pcaps/lab/manifest.py` (called by `pcaps/lab/make-dataset.sh`); every",
        "split comes from its own generator run with its own seed. Each capture was written",
        "by the command shown (as root, into make-dataset.sh's staging dir) and copied here",
        "by make-dataset.sh, gzip'ed with `gzip -n -9`. Labels: `NAME.labels.csv` next to",
        "each capture (header only = benign-only run). Captures are classic pcap, Ethernet,",
        "microsecond stamps, whole frames (`netsensor replay`, `eval` and `train` read",
        "`.pcap.gz` directly).",
        "",
        f"Total: {len(entries)} captures, {total / 1e6:.2f} MB compressed.",
        "",
        "| file | split | seed | duration s | packets | attacks | MB (gz) | command |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for e in entries:
        out.append(f"| {e['file']} | {e['split']} | {e['seed']} | {e['seconds']:.0f} | "
                   f"{e['packets']} | {len(e['labels'])} | {e['bytes'] / 1e6:.2f} | "
                   f"`{e['cmd']}` |")
    out += ["", "## Attacks per capture", "",
            "Attacker packets = packets to or from the attacker address inside the slot.", ""]
    for e in entries:
        if not e["labels"]:
            continue
        out += [f"### {e['file']}", "",
                "| attack | family | attacker | slot s | attacker packets |",
                "| --- | --- | --- | ---: | ---: |"]
        for row in e["labels"]:
            dur = float(row["end_ts"]) - float(row["start_ts"])
            out.append(f"| {row['name']} | {row['family']} | {row['attacker_ip']} | {dur:.1f} | "
                       f"{e['per_slot'][row['name']]} |")
        out.append("")
    out += ["## SHA-256", ""] + [f"    {e['sha256']}  {e['file']}" for e in entries] + [""]
    with open(os.path.join(args.data_dir, "MANIFEST.md"), "w") as fh:
        fh.write("\n".join(out))
    print(f"wrote {os.path.join(args.data_dir, 'MANIFEST.md')}: {len(entries)} captures, "
          f"{total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
