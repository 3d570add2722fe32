"""EVE output of replay: every event schema-valid (Suricata 7.0.10's schema), timestamps,
flow_id and community_id as Suricata writes them, the stats event."""

from __future__ import annotations

import ipaddress
import json
import re
from functools import cache
from pathlib import Path

import pytest
from replay_helpers import ListSink, assert_eve_schema, replay, require_eve_schema

from sensor.community_id import community_id
from sensor.config import Config
from sensor.output.eve import fmt_ts

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ROOT / "pcaps" / "formats"
SAMPLE = ROOT / "pcaps" / "sample.pcap"
EXPECTED = json.loads((FORMATS / "expected.json").read_text())["files"]
READABLE = sorted(n for n, f in EXPECTED.items() if "error" not in f and n != "garbage.bin")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000$")
PORT_PROTOS = ("TCP", "UDP", "SCTP")


@cache
def events_of(path: str) -> tuple[tuple[dict, ...], int]:
    sink, pipe = replay(Path(path))
    return tuple(sink.events()), pipe.all_counters().get("decoder.pkts", 0)


def check_event(ev: dict) -> None:
    require_eve_schema()
    assert_eve_schema([ev])
    assert TS_RE.match(ev["timestamp"]), ev["timestamp"]
    if ev["event_type"] != "flow":
        return
    f = ev["flow"]
    assert TS_RE.match(f["start"]) and TS_RE.match(f["end"])
    assert f["start"] <= f["end"] <= ev["timestamp"] or f["reason"] == "forced"
    assert isinstance(ev["flow_id"], int) and 0 < ev["flow_id"] < 2 ** 53
    for key in ("pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient", "age"):
        assert isinstance(f[key], int) and not isinstance(f[key], bool)
    assert f["pkts_toserver"] + f["pkts_toclient"] > 0
    assert f["state"] in ("new", "established", "closed")
    assert f["reason"] in ("timeout", "forced", "shutdown")
    for ip in (ev["src_ip"], ev["dest_ip"]):
        addr = ipaddress.ip_address(ip)
        assert ip == (addr.exploded if addr.version == 6 else str(addr))
    assert ("src_port" in ev) == (ev["proto"] in PORT_PROTOS)
    check_community_id(ev)


def check_community_id(ev: dict) -> None:
    """community_id is the spec's (tested against its vectors in test_community_id.py) of
    the flow's own tuple, whichever side Suricata calls the client."""
    src = ipaddress.ip_address(ev["src_ip"]).packed
    dst = ipaddress.ip_address(ev["dest_ip"]).packed
    proto = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPv6-ICMP": 58, "SCTP": 132}.get(ev["proto"])
    if proto is None:
        return
    if proto in (1, 58):
        sport, dport = ev["icmp_type"], ev["icmp_code"]
    else:
        sport, dport = ev["src_port"], ev["dest_port"]
    assert ev["community_id"] == community_id(src, dst, proto, sport, dport, 0)
    assert ev["community_id"].startswith("1:")


def test_every_sample_event_is_schema_valid() -> None:
    events, pkts = events_of(str(SAMPLE))
    assert pkts > 7000
    kinds = {e["event_type"] for e in events}
    assert kinds == {"flow", "stats"}
    for ev in events:
        check_event(ev)


@pytest.mark.parametrize("name", READABLE)
def test_every_format_capture_event_is_schema_valid(name: str) -> None:
    events, _ = events_of(str(FORMATS / name))
    for ev in events:
        check_event(ev)
    flows = [e for e in events if e["event_type"] == "flow"]
    counts = EXPECTED[name].get("counts", {})
    if counts.get("tcp_conversations") is not None and name not in ("bad-linktype.pcap",):
        assert sum(e["proto"] == "TCP" for e in flows) == counts["tcp_conversations"]


def test_flow_ids_unique_and_stable_per_flow() -> None:
    events, _ = events_of(str(SAMPLE))
    flows = [e for e in events if e["event_type"] == "flow"]
    ids = [e["flow_id"] for e in flows]
    assert len(set(ids)) == len(ids)
    # flow ids are per run (a keyed hash, as Suricata's), community_ids are not
    sink, _ = replay(SAMPLE)
    again = sink.events("flow")
    assert sorted(e["community_id"] for e in again) == sorted(e["community_id"] for e in flows)


def test_community_id_same_for_both_directions() -> None:
    """Two flows that are each other's mirror (client and server swapped) share one
    community_id: the spec orders the endpoints."""
    events, _ = events_of(str(SAMPLE))
    flows = [e for e in events if e["event_type"] == "flow" and e["proto"] in ("TCP", "UDP")]
    ev = flows[0]
    mirror = dict(ev, src_ip=ev["dest_ip"], dest_ip=ev["src_ip"], src_port=ev["dest_port"],
                  dest_port=ev["src_port"])
    check_community_id(mirror)


def test_timestamp_format() -> None:
    assert fmt_ts(1717945476123456) == "2024-06-09T15:04:36.123456+0000"
    assert fmt_ts(0) == "1970-01-01T00:00:00.000000+0000"
    assert fmt_ts(1717945476000001) == "2024-06-09T15:04:36.000001+0000"


def test_stats_event() -> None:
    events, pkts = events_of(str(SAMPLE))
    stats = [e for e in events if e["event_type"] == "stats"]
    # sample.pcap spans ~100 s of packet time: one periodic (60 s) and the final event
    assert len(stats) == 2
    last = stats[-1]["stats"]
    assert last["decoder"]["pkts"] == pkts
    assert last["decoder"]["bytes"] == SAMPLE.stat().st_size - 24 - 16 * pkts
    assert last["decoder"]["ethernet"] == pkts
    assert last["decoder"].get("invalid", 0) == 0
    flows = sum(1 for e in events if e["event_type"] == "flow")
    assert last["flow"]["total"] == flows
    assert last["flow"]["tcp"] + last["flow"]["udp"] + last["flow"].get("icmpv4", 0) == flows
    assert isinstance(last["uptime"], int) and 90 <= last["uptime"] <= 120
    assert stats[0]["stats"]["decoder"]["pkts"] < pkts
    assert stats[0]["timestamp"] < stats[1]["timestamp"]


def test_stats_interval_zero_writes_only_the_final_event() -> None:
    from dataclasses import replace

    cfg = Config()
    cfg = replace(cfg, outputs=replace(cfg.outputs, stats=replace(cfg.outputs.stats,
                                                                  interval=0)))
    sink, _ = replay(SAMPLE, cfg)
    assert len(sink.events("stats")) == 1


def test_event_types_filter() -> None:
    from dataclasses import replace

    cfg = Config()
    cfg = replace(cfg, outputs=replace(cfg.outputs, eve=replace(cfg.outputs.eve,
                                                                types=("stats",))))
    sink, pipe = replay(FORMATS / "eth-le-usec.pcap", cfg)
    assert {e["event_type"] for e in sink.events()} == {"stats"}
    assert pipe.all_counters()["flow.total"] > 0


def test_malformed_and_other_protocols_show_in_stats(tmp_path: Path) -> None:
    """Packets the decoder rejects are in the stats event; IP protocols without flow
    tracking are in the replay summary (the schema has no stats key for them)."""
    from replay_helpers import MACS, write_pcap
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    good = bytes(Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="S"))
    igmp = bytes(Ether(**MACS) / IP(src="10.0.0.1", dst="224.0.0.1", proto=2) / Raw(b"x" * 8))
    frames = [good, igmp, good[:45]]  # the last one: IPv4 total length past the capture
    path = write_pcap(tmp_path / "m.pcap", frames, [1.7e9, 1.7e9 + 1, 1.7e9 + 2])
    sink: ListSink
    sink, pipe = replay(path)
    (stats,) = sink.events("stats")
    check_event(stats)
    dec = stats["stats"]["decoder"]
    assert dec["pkts"] == 3 and dec["invalid"] == 1
    assert dec["event"]["ipv4"]["trunc_pkt"] == 1
    assert dec["ipv4"] == 2 and dec["tcp"] == 1
    assert pipe.all_counters()["decoder.other_ip_proto"] == 1
