"""Flow events agree with real Suricata 7.0.10's on the bundled sample.

pcaps/sample.suricata-flows.json was made once by pcaps/make-suricata-reference.sh (real
Suricata, no rules, the config in pcaps/suricata-flows.yaml) and committed, so this test
needs no Suricata. tools/compare_suricata_flows.py holds the comparison and runs the same
check with Suricata over the conformance corpus (see docs/replay.md for its figures).
"""

from __future__ import annotations

import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

from replay_helpers import replay

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from compare_suricata_flows import compare, flow_events, flow_keys  # noqa: E402

SAMPLE = ROOT / "pcaps" / "sample.pcap"
REFERENCE = ROOT / "pcaps" / "sample.suricata-flows.json"


def reference() -> list[dict]:
    with open(REFERENCE, encoding="utf-8") as f:
        return flow_events(f)


@lru_cache(maxsize=1)
def _ours() -> tuple[tuple[dict, ...], dict[str, int]]:
    sink, pipe = replay(SAMPLE)
    return tuple(flow_events(sink.lines)), pipe.all_counters()


def ours() -> tuple[list[dict], dict[str, int]]:
    events, counters = _ours()
    return list(events), counters


def test_reference_belongs_to_this_sample() -> None:
    """The committed reference is Suricata's output for the sample as it is now: every
    IP packet of the sample is in exactly one of its flows, and its flows lie within the
    capture's time span."""
    ref = reference()
    _, counters = ours()
    ip_packets = counters["decoder.ipv4"] + counters.get("decoder.ipv6", 0)
    assert sum(e["flow"]["pkts_toserver"] + e["flow"]["pkts_toclient"] for e in ref) == \
        ip_packets - counters.get("decoder.other_ip_proto", 0)
    first = min(e["flow"]["start"] for e in ref)
    last = max(e["flow"]["end"] for e in ref)
    from sensor.capture.pcap import PcapSource

    ts = [int(t) for b in PcapSource(str(SAMPLE)).batches() for t in (b.ts_us[0], b.ts_us[-1])]
    from sensor.output.eve import fmt_ts

    assert fmt_ts(min(ts)) <= first <= last <= fmt_ts(max(ts))


def test_flows_and_counters_match_suricata() -> None:
    mine, _ = ours()
    ref = reference()
    c = compare(mine, ref)
    assert c.only_ours == [] and c.only_theirs == []
    assert c.matched == len(ref) == len(mine) > 1000


def test_state_matches_and_reason_differs_only_by_suricatas_wall_clock() -> None:
    """States agree on every flow. Reasons agree except where Suricata's flow manager,
    which runs on wall-clock time in pcap mode, had not yet timed out a flow that packet
    time says is over (it then logs it at shutdown): netsensor says `timeout`, Suricata
    `shutdown`, never the other way, and for a few flows only."""
    mine, _ = ours()
    c = compare(mine, reference())
    assert c.state_differs == []
    assert {(a, b) for _, a, b in c.reason_differs} <= {("timeout", "shutdown")}
    assert len(c.reason_differs) <= 0.02 * c.matched


def test_protocol_mix_matches() -> None:
    mine, _ = ours()
    assert Counter(e["proto"] for e in mine) == Counter(e["proto"] for e in reference())
    assert flow_keys(mine) == flow_keys(reference())
