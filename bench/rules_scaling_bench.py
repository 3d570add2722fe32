"""Cost of 10, 1,000 and 10,000 content rules on the same capture (issue 3's speed target).

The rules are synthetic but shaped like real ones: each has one to three contents (6 to 16
random bytes, a third of them `nocase`), half are restricted to a destination port (80, 53,
22, 443 or a random one), a quarter are UDP. None of the random patterns occurs in the
capture, so the rules cost what a ruleset costs on traffic it does not match: the prefilter
and header tests, not alert building. Rules are loaded before timing (load time is printed
apart); each rule count replays the whole capture `--runs` times (fresh engine state each
time) and the median is reported, side by side in one run.

    nice python bench/rules_scaling_bench.py [--pcap P] [--runs 5] [--counts 10,1000,10000]

Target (issue 3): 10,000 rules cost less than 3x the replay time of 10.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from rules_engine_bench import _replay, _stage  # noqa: E402

DEFAULT_PCAP = ROOT / "pcaps" / "lab" / "data" / "test-s4401.pcap.gz"
ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-=?&"


def _content(rng: random.Random) -> str:
    n = rng.randint(6, 16)
    if rng.random() < 0.3:  # some binary patterns, written as hex
        return "|" + " ".join(f"{rng.randrange(256):02x}" for _ in range(n)) + "|"
    return bytes(rng.choice(ALPHABET) for _ in range(n)).decode()


def make_rules(count: int, seed: int = 1) -> str:
    """`count` content rules, deterministic for a seed."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        proto = "udp" if rng.random() < 0.25 else "tcp"
        port = rng.choice(["80", "53", "22", "443", str(rng.randint(1024, 65535))]) \
            if rng.random() < 0.5 else "any"
        opts = []
        for _ in range(rng.randint(1, 3)):
            opts.append(f'content:"{_content(rng)}";')
            if rng.random() < 0.33:
                opts.append("nocase;")
        lines.append(f'alert {proto} any any -> any {port} (msg:"synthetic {i}"; '
                     f'{" ".join(opts)} sid:{5000000 + i}; rev:1;)')
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", default=str(DEFAULT_PCAP))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--counts", default="10,1000,10000")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    pcap = Path(args.pcap)
    counts = [int(c) for c in args.counts.split(",")]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            path = Path(tmp) / f"{count}.rules"
            path.write_text(make_rules(count))
            stage, load_s, loaded = _stage([str(path)])
            times = []
            for _ in range(args.runs):
                fresh = type(stage)(stage.cfg, stage.ruleset)
                secs, packets, alerts = _replay(pcap, fresh)
                times.append(secs)
            med = statistics.median(times)
            results[str(count)] = {"rules_loaded": loaded, "load_seconds": round(load_s, 2),
                                   "replay_seconds": round(med, 3), "packets": packets,
                                   "packets_per_second": int(packets / med),
                                   "alerts": alerts, "runs": [round(t, 3) for t in times]}
            print(f"{count:6d} rules  loaded {loaded:6d}  load {load_s:6.2f} s  "
                  f"replay {med:7.3f} s  {packets / med:10,.0f} packets/s  alerts {alerts}")
    lo, hi = str(min(counts)), str(max(counts))
    ratio = results[hi]["replay_seconds"] / results[lo]["replay_seconds"]
    print(f"replay time {hi} rules / {lo} rules: {ratio:.2f}x (target < 3x)")
    doc = {"pcap": str(pcap.relative_to(ROOT)) if pcap.is_relative_to(ROOT) else str(pcap),
           "runs": args.runs, "results": results, f"ratio_{hi}_vs_{lo}": round(ratio, 2)}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
