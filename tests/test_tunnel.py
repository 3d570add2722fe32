"""Tunnels and encapsulations against real Suricata's flow events on the same capture."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from replay_helpers import assert_eve_schema, replay, require_eve_schema

from sensor.capture.pcap import PcapSource
from sensor.decode import decode_batch
from sensor.pipeline import Pipeline
from sensor.tunnel import Decapsulator

ROOT = Path(__file__).resolve().parents[1]
PCAP = ROOT / "pcaps/tunnels/tunnels.pcap"
REFERENCE = ROOT / "pcaps/tunnels/tunnels.suricata-flows.json"


def _replay() -> tuple[list[dict], Pipeline]:
    sink, pipe = replay(PCAP)
    return sink.events(), pipe


def _flow_key(e: dict) -> tuple:
    f = e["flow"]
    return (e["proto"], e["src_ip"], e.get("src_port"), e["dest_ip"], e.get("dest_port"),
            str(e.get("vlan")), f["pkts_toserver"], f["pkts_toclient"], f["bytes_toserver"],
            f["bytes_toclient"])


def test_flows_match_suricata() -> None:
    events, _ = _replay()
    ours = Counter(_flow_key(e) for e in events if e["event_type"] == "flow")
    ref = Counter(_flow_key(json.loads(line)) for line in REFERENCE.open())
    assert ours == ref


def test_inner_flow_is_separate_from_outer_flow_with_same_tuple() -> None:
    events, _ = _replay()
    same = [e for e in events if e["event_type"] == "flow" and e["src_ip"] == "10.1.0.1"
            and e.get("dest_port") == 80]
    assert len(same) == 2  # the VXLAN inner handshake, and the plain SYN outside the tunnel
    assert len({e["flow_id"] for e in same}) == 2


def test_counters_name_each_decoder() -> None:
    _, pipe = _replay()
    c = pipe.all_counters()
    assert c["decoder.vxlan"] == 2
    assert c["decoder.gre"] == 6
    assert c["decoder.geneve"] == 2
    assert c["decoder.teredo"] == 1
    assert c["decoder.ipv4_in_ipv6"] == 1
    assert c["decoder.ipv6_in_ipv6"] == 1
    assert c["decoder.pppoe"] == 3
    assert c["decoder.mpls"] == 3


def test_inner_batches_carry_the_outer_packet_for_eve() -> None:
    batch = next(PcapSource(str(PCAP)).batches())
    d = decode_batch(batch)
    inner = Decapsulator().decapsulate(batch, d)
    by_src = {b.pkt_src: b for b in inner}
    vx = by_src["vxlan encapsulation"]
    assert vx.first_cnt == 0 and vx.tunnel_depth == 1
    assert vx.parents.outer[0] == {
        "src_ip": "198.51.100.1", "src_port": 50000, "dest_ip": "198.51.100.2",
        "dest_port": 4789, "proto": "UDP", "depth": 1, "pcap_cnt": 1, "pkt_src": "wire/pcap"}
    gre = by_src["gre encapsulation"]
    assert "src_port" not in gre.parents.outer[0]
    assert gre.parents.outer[0]["proto"] == "GRE"
    # inner timestamps are the outer packets'
    assert np.isin(vx.ts_us, batch.ts_us).all()


def test_alert_on_inner_packet_names_its_outer_packet(tmp_path: Path) -> None:
    from sensor.cli import main

    rules = tmp_path / "t.rules"
    rules.write_text('alert icmp any any -> any any (msg:"ping"; itype:8; sid:1;)\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"rules:\n  files: [{rules}]\n")
    assert main(["replay", str(PCAP), "-c", str(cfg), "-l", str(tmp_path), "-q"]) == 0
    alerts = [json.loads(line) for line in (tmp_path / "eve.json").open()
              if '"event_type":"alert"' in line]
    by_src = {a["src_ip"]: a for a in alerts}
    gre = by_src["10.1.0.1"]  # the ping inside GRE, outer packet 3 of the capture
    assert gre["pkt_src"] == "gre encapsulation" and "pcap_cnt" not in gre
    assert gre["tunnel"] == {"src_ip": "198.51.100.1", "dest_ip": "198.51.100.2",
                             "proto": "GRE", "depth": 1, "pcap_cnt": 3, "pkt_src": "wire/pcap"}
    plain = by_src["10.12.0.1"]  # MPLS is decoded inline: no tunnel, the packet's own pcap_cnt
    assert "tunnel" not in plain and plain["pcap_cnt"] > 0
    require_eve_schema()
    assert_eve_schema(alerts)
