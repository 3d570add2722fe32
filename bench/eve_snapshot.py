"""Replay captures with a fixed flow-hash seed and save or compare their eve.json.

Hot-path optimizations must not change a single output byte. `netsensor replay` seeds its
flow hash (and so `flow_id`) at random per run, so this runs the same replay path with a
fixed seed: two runs of unchanged code give identical files, and any difference after a
change is a real one.

    python3 bench/eve_snapshot.py save  DIR PCAP...   # before a change
    python3 bench/eve_snapshot.py check DIR PCAP...   # after: exit 1 and a diff line if not
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sensor.pipeline as pipeline_mod  # noqa: E402
from sensor import cli  # noqa: E402
from sensor.config import FlowConfig  # noqa: E402
from sensor.flow import FlowTable  # noqa: E402

FIXED_SEED = 0x5EED


class _SeededFlowTable(FlowTable):
    def __init__(self, config: FlowConfig, seed: int | None = None):
        super().__init__(config, seed=FIXED_SEED)


def replay_to(pcap: str, logdir: str, config: str | None = None) -> str:
    """Run `netsensor replay -q` on one file with the fixed seed; return the eve.json path."""
    pipeline_mod.FlowTable = _SeededFlowTable  # type: ignore[misc]
    argv = ["replay", "-q", "-l", logdir, pcap] + (["-c", config] if config else [])
    cli.main(argv)
    return os.path.join(logdir, "eve.json")


def snapshot_name(pcap: str) -> str:
    tail = os.path.basename(os.path.dirname(pcap)) + "__" + os.path.basename(pcap)
    return tail + "." + hashlib.sha1(os.path.abspath(pcap).encode()).hexdigest()[:8] + ".json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("save", "check"))
    ap.add_argument("dir")
    ap.add_argument("pcaps", nargs="+")
    ap.add_argument("-c", "--config")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    bad = 0
    for pcap in args.pcaps:
        ref = os.path.join(args.dir, snapshot_name(pcap))
        with tempfile.TemporaryDirectory() as tmp:
            got_path = replay_to(pcap, tmp, args.config)
            got = open(got_path, "rb").read() if os.path.exists(got_path) else b""
        if args.mode == "save":
            with open(ref, "wb") as f:
                f.write(got)
            continue
        want = open(ref, "rb").read()
        if got != want:
            bad += 1
            g, w = got.splitlines(), want.splitlines()
            pairs = enumerate(zip(g, w, strict=False))
            first = next((i for i, (a, b) in pairs if a != b), min(len(g), len(w)))
            print(f"DIFFERS {pcap}: line {first + 1} ({len(g)} vs {len(w)} lines)\n"
                  f"  got:  {g[first][:300] if first < len(g) else b'<none>'!r}\n"
                  f"  want: {w[first][:300] if first < len(w) else b'<none>'!r}")
    if args.mode == "check":
        print(f"{len(args.pcaps) - bad}/{len(args.pcaps)} identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
