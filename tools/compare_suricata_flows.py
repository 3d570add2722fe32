"""Compare netsensor's EVE flow events with Suricata's on the same pcaps.

Flow counts and per-flow packet/byte counters are the contract with Suricata (issue 2), so
this is the yardstick: the multiset of (proto, src, dst, sport, dport, pkts_toserver,
pkts_toclient, bytes_toserver, bytes_toclient) of both engines, plus state and reason where
both engines saw the same flow. `tests/test_suricata_flows.py` uses `flow_keys`/`compare`
on the committed reference; run this script (needs Suricata) on the conformance corpus:

    python tools/compare_suricata_flows.py ../shared/conformance/suricata-verify/*/input.pcap*

It prints one line per pcap and a total; exit status 0 whatever the agreement (a report).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SURICATA_YAML = ROOT / "pcaps" / "suricata-flows.yaml"

FlowKey = tuple[str, str, str, int, int, int, int, int, int]


def flow_events(lines: Iterable[str]) -> list[dict]:
    """The `flow` events of an EVE stream (other event types are skipped)."""
    out = []
    for line in lines:
        if '"flow"' not in line:
            continue
        ev = json.loads(line)
        if ev.get("event_type") == "flow":
            out.append(ev)
    return out


def flow_key(ev: dict) -> FlowKey:
    """What must agree between the engines for one flow."""
    f = ev["flow"]
    return (ev["proto"], ev["src_ip"], ev["dest_ip"], ev.get("src_port", 0),
            ev.get("dest_port", 0), f["pkts_toserver"], f["pkts_toclient"],
            f["bytes_toserver"], f["bytes_toclient"])


def flow_keys(events: Iterable[dict]) -> Counter[FlowKey]:
    return Counter(flow_key(ev) for ev in events)


@dataclass
class Comparison:
    """Agreement of two engines' flow events on one input."""

    ours: int
    theirs: int
    matched: int
    only_ours: list[FlowKey] = field(default_factory=list)
    only_theirs: list[FlowKey] = field(default_factory=list)
    state_differs: list[tuple[FlowKey, str, str]] = field(default_factory=list)
    reason_differs: list[tuple[FlowKey, str, str]] = field(default_factory=list)


def compare(ours: list[dict], theirs: list[dict]) -> Comparison:
    """Match flows on their key; compare state/reason on flows both engines logged."""
    a, b = flow_keys(ours), flow_keys(theirs)
    common = a & b
    res = Comparison(len(ours), len(theirs), sum(common.values()),
                     sorted((a - b).elements()), sorted((b - a).elements()))
    # state and reason: compare only keys that occur once on each side (unambiguous)
    by_a = {flow_key(e): e for e in ours if a[flow_key(e)] == 1}
    by_b = {flow_key(e): e for e in theirs if b[flow_key(e)] == 1}
    for k in by_a.keys() & by_b.keys():
        fa, fb = by_a[k]["flow"], by_b[k]["flow"]
        if fa["state"] != fb["state"]:
            res.state_differs.append((k, fa["state"], fb["state"]))
        if fa["reason"] != fb["reason"]:
            res.reason_differs.append((k, fa["reason"], fb["reason"]))
    return res


def run_suricata(pcap: str, logdir: str) -> list[dict]:
    """Suricata's flow events for `pcap`, with the reference config (no rules)."""
    cmd = ["suricata", "-c", str(SURICATA_YAML), "-S", "/dev/null", "-k", "none",
           "--runmode", "single", "--set", "pcap-file.checksum-checks=no", "-r", pcap,
           "-l", logdir]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
    if proc.returncode != 0:
        lines = (proc.stderr + proc.stdout).strip().splitlines()
        first_error = [x for x in lines if x.startswith("E: ")][:1] or lines[-1:] or ["?"]
        raise RuntimeError(f"suricata exit {proc.returncode}: {first_error[0]}")
    with open(os.path.join(logdir, "eve.json"), encoding="utf-8") as f:
        return flow_events(f)


def run_netsensor(pcap: str, logdir: str) -> tuple[list[dict], int]:
    """netsensor's flow events for `pcap` and its exit status."""
    proc = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "-q",
                           os.path.abspath(pcap), "-l",
                           logdir], capture_output=True, text=True, cwd=ROOT)
    path = os.path.join(logdir, "eve.json")
    if not os.path.exists(path):
        return [], proc.returncode
    with open(path, encoding="utf-8") as f:
        return flow_events(f), proc.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcaps", nargs="+")
    ap.add_argument("-v", "--verbose", action="store_true", help="print differing flows")
    args = ap.parse_args(argv)
    if shutil.which("suricata") is None:
        print("suricata not installed (bash ../shared/tools/install-suricata.sh)",
              file=sys.stderr)
        return 2
    tot = Counter()
    for pcap in args.pcaps:
        name = f"{Path(pcap).parent.name}/{Path(pcap).name}"
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            try:
                theirs = run_suricata(pcap, d1)
            except RuntimeError as exc:
                print(f"skip  {name}: {exc}")
                tot["skipped"] += 1
                continue
            ours, rc = run_netsensor(pcap, d2)
        c = compare(ours, theirs)
        ok = not c.only_ours and not c.only_theirs
        print(f"{'same' if ok else 'DIFF'}  {name}: suricata {c.theirs} flows, netsensor "
              f"{c.ours} (exit {rc}), matched {c.matched}, state differs "
              f"{len(c.state_differs)}, reason differs {len(c.reason_differs)}")
        if args.verbose:
            for k in c.only_theirs:
                print(f"      only suricata:  {k}")
            for k in c.only_ours:
                print(f"      only netsensor: {k}")
            for k, s1, s2 in c.state_differs:
                print(f"      state {s1} (netsensor) vs {s2} (suricata): {k}")
        tot["pcaps"] += 1
        tot["same"] += ok
        tot["theirs"] += c.theirs
        tot["ours"] += c.ours
        tot["matched"] += c.matched
        tot["state"] += len(c.state_differs)
        tot["reason"] += len(c.reason_differs)
    print(f"total: {tot['same']}/{tot['pcaps']} pcaps agree on every flow; flows: suricata "
          f"{tot['theirs']}, netsensor {tot['ours']}, matched {tot['matched']} "
          f"({100 * tot['matched'] / max(1, tot['theirs']):.1f}% of suricata's); "
          f"state differs {tot['state']}, reason differs {tot['reason']}; "
          f"{tot['skipped']} pcaps suricata could not read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
