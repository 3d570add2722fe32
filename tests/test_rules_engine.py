"""Rule engine semantics on packets built with scapy, written to a pcap and replayed.

Every test writes real pcap files (scapy's wrpcap), runs `netsensor replay` in-process with
a rule file, and reads the EVE alerts back, so parser, flow table, stream, matcher,
thresholds and EVE formatting are exercised together.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml
from replay_helpers import assert_eve_schema, require_eve_schema
from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, wrpcap  # type: ignore[attr-defined]

from sensor.cli import main as cli_main
from sensor.config import Config, RulesConfig
from sensor.stages import StageError, build_stages

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0

C, S = "10.0.0.1", "192.0.2.10"  # client (HOME_NET), server (outside HOME_NET)
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def pkt(src: str, dst: str, layer, payload: bytes = b"", t: float = 0.0):  # noqa: ANN001, ANN201
    p = Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst, ttl=64) / layer
    if payload:
        p = p / Raw(payload)
    p.time = T0 + t
    return p


class Tcp:
    """A TCP conversation with correct sequence numbers (client C:40000 -> server S:80)."""

    def __init__(self, sport: int = 40000, dport: int = 80, t: float = 0.0):
        self.sport, self.dport, self.t = sport, dport, t
        self.cseq, self.sseq = 1000, 5000
        self.pkts: list = []

    def _add(self, from_client: bool, flags: str, data: bytes = b"") -> None:
        self.t += 0.01
        if from_client:
            layer = TCP(sport=self.sport, dport=self.dport, flags=flags, seq=self.cseq,
                        ack=self.sseq if "A" in flags else 0)
            self.pkts.append(pkt(C, S, layer, data, self.t))
            self.cseq += len(data) + (1 if ("S" in flags or "F" in flags) else 0)
        else:
            layer = TCP(sport=self.dport, dport=self.sport, flags=flags, seq=self.sseq,
                        ack=self.cseq)
            self.pkts.append(pkt(S, C, layer, data, self.t))
            self.sseq += len(data) + (1 if ("S" in flags or "F" in flags) else 0)

    def handshake(self) -> Tcp:
        self._add(True, "S")
        self._add(False, "SA")
        self._add(True, "A")
        return self

    def client(self, data: bytes) -> Tcp:
        self._add(True, "PA", data)
        return self

    def server(self, data: bytes) -> Tcp:
        self._add(False, "PA", data)
        return self

    def ack_client(self) -> Tcp:  # the client acknowledges server data
        self._add(True, "A")
        return self

    def ack_server(self) -> Tcp:  # the server acknowledges client data
        self._add(False, "A")
        return self

    def close(self) -> Tcp:
        self._add(True, "FA")
        self._add(False, "FA")
        self._add(True, "A")
        return self


def replay(tmp: Path, packets: list, rules: str, rules_cfg: dict | None = None,
           extra_files: dict[str, str] | None = None) -> tuple[list[dict], str]:
    """Replay packets with rules; returns (EVE events, stderr)."""
    wrpcap(str(tmp / "in.pcap"), packets)
    (tmp / "test.rules").write_text(rules)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    cfg = {"rules": {"files": [str(tmp / "test.rules")], **(rules_cfg or {})},
           "outputs": {"eve": {"types": ["alert", "flow", "stats"]}},
           "replay": {"progress": False}}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp / "eve.json").unlink(missing_ok=True)  # the sink appends
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli_main(["replay", "-c", str(tmp / "c.yaml"), "-l", str(tmp), str(tmp / "in.pcap")])
    assert rc == 0, err.getvalue()
    events = [json.loads(line) for line in (tmp / "eve.json").read_text().splitlines()]
    return events, err.getvalue()


def alerts(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event_type"] == "alert"]


def sids(events: list[dict]) -> list[int]:
    return sorted(a["alert"]["signature_id"] for a in alerts(events))


def test_content_modifiers(tmp_path: Path) -> None:
    payload = b"GET /admin/login.php?user=Root HTTP/1.0\r\n\x00\x01\x02\r\n"
    rules = "\n".join([
        'alert udp any any -> any any (msg:"plain"; content:"admin"; sid:1;)',
        'alert udp any any -> any any (msg:"case"; content:"ROOT"; sid:2;)',
        'alert udp any any -> any any (msg:"nocase"; content:"ROOT"; nocase; sid:3;)',
        'alert udp any any -> any any (msg:"depth ok"; content:"GET"; depth:3; sid:4;)',
        'alert udp any any -> any any (msg:"depth miss"; content:"admin"; depth:5; sid:5;)',
        'alert udp any any -> any any (msg:"offset"; content:"GET"; offset:1; sid:6;)',
        'alert udp any any -> any any (msg:"dist+within"; content:"admin"; '
        'content:"login"; distance:1; within:5; sid:7;)',
        'alert udp any any -> any any (msg:"within miss"; content:"admin"; '
        'content:"user"; distance:0; within:4; sid:8;)',
        'alert udp any any -> any any (msg:"hex"; content:"|00 01 02|"; sid:9;)',
        'alert udp any any -> any any (msg:"negated"; content:"GET"; content:!"POST"; sid:10;)',
        'alert udp any any -> any any (msg:"negated hit"; content:!"admin"; sid:11;)',
        'alert udp any any -> any any (msg:"backtrack"; content:"/"; '
        'content:"login"; distance:0; within:5; sid:12;)',
        'alert udp any any -> any any (msg:"pcre"; content:"user="; '
        'pcre:"/^[a-z]+ HTTP/Ri"; sid:13;)',
        'alert udp any any -> any any (msg:"isdataat"; content:"HTTP/1.0"; '
        'isdataat:2,relative; sid:14;)',
        'alert udp any any -> any any (msg:"dsize"; dsize:>40; content:"GET"; sid:15;)',
        'alert udp any any -> any any (msg:"dsize miss"; dsize:<10; content:"GET"; sid:16;)',
        'alert udp any any -> any any (msg:"fp chop"; content:"xxlogin.php"; '
        'fast_pattern:2,5; sid:17;)',
    ]) + "\n"
    events, _ = replay(tmp_path, [pkt(C, S, UDP(sport=5000, dport=53), payload)], rules)
    assert sids(events) == [1, 3, 4, 7, 9, 10, 12, 13, 14, 15]


def test_header_keywords(tmp_path: Path) -> None:
    packets = [
        pkt(C, S, TCP(sport=1234, dport=22, flags="S", seq=77, window=1024), t=0),
        pkt(C, S, ICMP(type=8, code=0, id=4321, seq=9), b"ping", t=1),
        Ether(src=MAC_A, dst=MAC_B) / IP(src=C, dst=C, tos=0x10, id=999, flags="DF", ttl=3) / UDP(
            sport=1, dport=2) / Raw(b"x"),
    ]
    packets[-1].time = T0 + 2
    rules = "\n".join([
        "alert tcp any any -> any any (flags:S; sid:1;)",
        "alert tcp any any -> any any (flags:SA; sid:2;)",
        "alert tcp any any -> any any (flags:S,12; window:1024; seq:77; sid:3;)",
        "alert tcp any any -> any any (window:!1024; sid:4;)",
        "alert icmp any any -> any any (itype:8; icode:0; icmp_id:4321; icmp_seq:9; sid:5;)",
        "alert icmp any any -> any any (itype:0; sid:6;)",
        "alert ip any any -> any any (ip_proto:1; sid:7;)",
        "alert ip any any -> any any (ttl:<5; sid:8;)",
        "alert ip any any -> any any (sameip; sid:9;)",
        "alert ip any any -> any any (tos:16; id:999; fragbits:D; sid:10;)",
        "alert ip any any -> any any (fragbits:M; sid:11;)",
        "alert ip any any -> any any (ip_proto:!6; ttl:64; sid:12;)",
    ]) + "\n"
    events, _ = replay(tmp_path, packets, rules)
    assert sids(events) == [1, 3, 5, 7, 8, 9, 10, 12]


def test_addresses_ports_negation_and_bidirectional(tmp_path: Path) -> None:
    packets = [pkt(C, S, UDP(sport=5353, dport=53), b"q", t=0),
               pkt(S, C, UDP(sport=53, dport=5353), b"r", t=0.1)]
    rules = "\n".join([
        "alert udp $HOME_NET any -> $EXTERNAL_NET 53 (sid:1;)",
        "alert udp $HOME_NET any -> !$EXTERNAL_NET any (sid:2;)",
        "alert udp any ![53,54] -> any any (sid:3;)",
        "alert udp 192.0.2.0/24 53 <> 10.0.0.0/8 any (sid:4;)",
        "alert udp [10.0.0.0/8,!10.0.0.1] any -> any any (sid:5;)",
        "alert udp any any -> any 1000:6000 (sid:6;)",
    ]) + "\n"
    events, _ = replay(tmp_path, packets, rules)
    got = sorted((a["alert"]["signature_id"], a["src_ip"], a["direction"])
                 for a in alerts(events))
    assert got == [(1, C, "to_server"), (3, C, "to_server"),
                   (4, C, "to_server"), (4, S, "to_client"), (6, S, "to_client")]


def test_flow_keywords_and_stream_inspection(tmp_path: Path) -> None:
    conv = Tcp().handshake().client(b"GET /?USER=alice HTTP/1.0\r\n\r\n").ack_server().server(
        b"HTTP/1.0 331 password please\r\nContent-Length: 0\r\n\r\n").ack_client().close()
    rules = "\n".join([
        "alert tcp any any -> any any (flow:to_server,established; content:\"USER\"; sid:1;)",
        "alert tcp any any -> any any (flow:to_client; content:\"331\"; sid:2;)",
        "alert tcp any any -> any any (flow:not_established; flags:S; sid:3;)",
        "alert tcp any any -> any any (flow:established,to_client; flags:SA; sid:4;)",
        "alert tcp any any -> any any (flow:stateless; flags:SA; sid:5;)",
        "alert tcp any any -> any any (flow:no_stream; content:\"alice\"; sid:6;)",
        "alert tcp any any -> any any (flow:only_stream; content:\"alice\"; sid:7;)",
    ]) + "\n"
    events, _ = replay(tmp_path, conv.pkts, rules)
    got = {a["alert"]["signature_id"]: a for a in alerts(events)}
    assert sorted(got) == [1, 2, 3, 5, 6, 7]
    # stream rules see the data once the peer acknowledged it, on the next packet of the
    # same direction (4 client data, 5 server ACK -> 7 client ACK; 6 server data, 7 client
    # ACK -> 9 server FIN)
    assert got[1]["pcap_cnt"] == 7 and got[1]["direction"] == "to_server"
    assert got[2]["pcap_cnt"] == 9 and got[2]["src_ip"] == S
    assert got[6]["pcap_cnt"] == 4  # no_stream: the packet's own payload
    assert got[7]["pcap_cnt"] == 7
    assert got[3]["pcap_cnt"] == 1 and got[5]["pcap_cnt"] == 2


def test_unacknowledged_stream_data_alerts_at_flow_end(tmp_path: Path) -> None:
    conv = Tcp().handshake().client(b"EVIL payload")
    events, _ = replay(tmp_path, conv.pkts,
                       'alert tcp any any -> any any (content:"EVIL"; sid:1;)\n')
    (a,) = alerts(events)
    assert "pcap_cnt" not in a and a["pkt_src"] == "stream (flow timeout)"
    assert a["src_ip"] == C and a["timestamp"].startswith("2023-11-14T22:13:20.04")


def test_midstream_pickup_and_policy(tmp_path: Path) -> None:
    conv = Tcp().handshake().client(b"GET /EVIL HTTP/1.0\r\n\r\n").ack_server().client(
        b"more").ack_server()
    mid = conv.pkts[3:]  # no handshake
    rule = 'alert tcp any any -> any any (content:"EVIL"; sid:1;)\n'
    events, _ = replay(tmp_path, mid, rule)  # midstream off: packets inspected one by one
    assert [a["pcap_cnt"] for a in alerts(events)] == [1]
    events, _ = replay(tmp_path, mid, rule, {"midstream": True})  # a stream from there
    assert [a["pcap_cnt"] for a in alerts(events)] == [3]
    events, _ = replay(tmp_path, mid, rule, {"midstream_policy": "pass-flow"})
    assert alerts(events) == []


def test_flowbits_in_packet_order(tmp_path: Path) -> None:
    packets = [pkt(C, S, UDP(sport=1, dport=2), b"login", t=0),
               pkt(C, S, UDP(sport=1, dport=2), b"cmd", t=1),
               pkt(C, S, UDP(sport=1, dport=2), b"logout", t=2),
               pkt(C, S, UDP(sport=1, dport=2), b"cmd", t=3),
               pkt(C, S, UDP(sport=9, dport=2), b"cmd", t=4)]  # other flow: no bit
    rules = "\n".join([
        # reader listed first: the setter still runs first within a packet (Suricata)
        'alert udp any any -> any any (content:"login"; flowbits:isset,auth; sid:5;)',
        'alert udp any any -> any any (content:"login"; flowbits:set,auth; '
        'flowbits:noalert; sid:1;)',
        'alert udp any any -> any any (content:"cmd"; flowbits:isset,auth; sid:2;)',
        'alert udp any any -> any any (content:"cmd"; flowbits:isnotset,auth; sid:3;)',
        'alert udp any any -> any any (content:"logout"; flowbits:unset,auth; sid:4;)',
        'alert udp any any -> any any (content:"cmd"; flowbits:toggle,t; sid:6;)',
        'alert udp any any -> any any (content:"cmd"; flowbits:isset,t; sid:7;)',
    ]) + "\n"
    events, _ = replay(tmp_path, packets, rules)
    got = sorted((a["pcap_cnt"], a["alert"]["signature_id"]) for a in alerts(events))
    assert got == [(1, 5), (2, 2), (2, 6), (2, 7), (3, 4), (4, 3), (4, 6), (5, 3), (5, 6),
                   (5, 7)]


def _syns(n: int, src: str = C, step: float = 0.1) -> list:
    return [pkt(src, S, TCP(sport=20000 + i, dport=80, flags="S"), t=i * step)
            for i in range(n)]


@pytest.mark.parametrize(("kw", "expected"), [
    ("threshold:type limit, track by_src, count 3, seconds 60", [1, 2, 3]),
    ("threshold:type threshold, track by_src, count 3, seconds 60", [3, 6, 9]),
    ("threshold:type both, track by_src, count 3, seconds 60", [3]),
    ("detection_filter:track by_src, count 8, seconds 60", [9, 10, 11]),
    ("threshold:type limit, track by_dst, count 1, seconds 1", [1, 11]),
])
def test_thresholds(tmp_path: Path, kw: str, expected: list[int]) -> None:
    packets = _syns(10) + [pkt(C, S, TCP(sport=30000, dport=80, flags="S"), t=2.5)]
    events, _ = replay(tmp_path, packets, f"alert tcp any any -> any any (flags:S; {kw}; "
                                          "sid:1;)\n")
    assert sorted(a["pcap_cnt"] for a in alerts(events)) == expected


def test_threshold_config_suppress_and_override(tmp_path: Path) -> None:
    packets = _syns(5) + _syns(5, src="10.0.0.2")
    for i, p in enumerate(packets):
        p.time = T0 + i * 0.1
    rules = ("alert tcp any any -> any any (flags:S; sid:1;)\n"
             "alert tcp any any -> any any (flags:S; sid:2;)\n")
    tcfg = ("suppress gen_id 1, sig_id 1, track by_src, ip 10.0.0.2\n"
            "threshold gen_id 1, sig_id 2, type limit, track by_src, count 2, seconds 60\n")
    events, _ = replay(tmp_path, packets, rules, {"threshold_file": str(tmp_path / "t.cfg")},
                       {"t.cfg": tcfg})
    got = sorted((a["alert"]["signature_id"], a["src_ip"]) for a in alerts(events))
    assert got == [(1, C)] * 5 + [(2, C)] * 2 + [(2, "10.0.0.2")] * 2


def test_pass_first_and_drop_logged_as_allowed(tmp_path: Path) -> None:
    packets = [pkt(C, S, UDP(sport=1, dport=2), b"hello", t=0),
               pkt(C, S, UDP(sport=1, dport=2), b"world", t=1)]
    rules = "\n".join([
        'alert udp any any -> any any (content:"hello"; sid:1;)',
        'drop udp any any -> any any (content:"o"; sid:3;)',
        'pass udp any any -> any any (content:"world"; sid:2;)',
    ]) + "\n"
    events, _ = replay(tmp_path, packets, rules)
    got = sorted((a["pcap_cnt"], a["alert"]["signature_id"], a["alert"]["action"])
                 for a in alerts(events))
    assert got == [(1, 1, "allowed"), (1, 3, "allowed")]


def test_iponly_rule_once_per_direction_and_pass_of_flow(tmp_path: Path) -> None:
    conv = Tcp().handshake().client(b"a").ack_server()
    events, _ = replay(tmp_path, conv.pkts, "alert ip any any -> any any (sid:1;)\n")
    assert sorted(a["pcap_cnt"] for a in alerts(events)) == [1, 2]
    rules = ("pass tcp any any -> any 80 (sid:1;)\n"
             "alert tcp any any -> any any (flow:stateless; sid:2;)\n")
    events, _ = replay(tmp_path, conv.pkts, rules)
    assert alerts(events) == []  # a like-IP-only pass passes the whole flow


def test_alert_event_format_and_schema(tmp_path: Path) -> None:
    packets = [pkt(C, S, UDP(sport=5000, dport=53), b"attack", t=0),
               pkt(S, C, UDP(sport=53, dport=5000), b"reply", t=0.5),
               pkt(C, S, ICMP(type=8, id=1, seq=1), b"x", t=1)]
    rules = ('alert udp any any -> any any (msg:"m1"; content:"attack"; classtype:bad-unknown; '
             'metadata:created_at 2024_01_01, tag x, tag y; sid:1000001; rev:3;)\n'
             'alert icmp any any -> any any (msg:"m2"; itype:8; priority:1; sid:1000002;)\n'
             'alert udp any any -> any any (msg:"bad"; http.uri; content:"x"; sid:1000003;)\n')
    events, stderr = replay(tmp_path, packets, rules)
    assert f"{tmp_path / 'test.rules'}:3: unsupported keyword 'http.uri' in sid 1000003" \
        in stderr
    require_eve_schema()
    assert_eve_schema(events)
    a1, a2 = alerts(events)
    assert list(a1)[:10] == ["timestamp", "flow_id", "pcap_cnt", "event_type", "src_ip",
                             "src_port", "dest_ip", "dest_port", "proto", "pkt_src"]
    assert a1["alert"] == {
        "action": "allowed", "gid": 1, "signature_id": 1000001, "rev": 3, "signature": "m1",
        "category": "Potentially Bad Traffic", "severity": 2,
        "metadata": {"created_at": ["2024_01_01"], "tag": ["y", "x"]}}  # as Suricata
    assert a1["flow"] == {"pkts_toserver": 1, "pkts_toclient": 0, "bytes_toserver": 48,
                          "bytes_toclient": 0, "start": a1["timestamp"], "src_ip": C,
                          "dest_ip": S, "src_port": 5000, "dest_port": 53}
    assert a1["community_id"].startswith("1:") and a1["pkt_src"] == "wire/pcap"
    assert a2["proto"] == "ICMP" and a2["icmp_type"] == 8 and a2["alert"]["severity"] == 1
    assert a2["alert"]["category"] == "" and "src_port" not in a2
    flows = {e["flow_id"]: e for e in events if e["event_type"] == "flow"}
    assert flows[a1["flow_id"]]["flow"]["alerted"] is True
    assert flows[a1["flow_id"]]["community_id"] == a1["community_id"]
    stats = [e for e in events if e["event_type"] == "stats"][-1]["stats"]
    eng = stats["detect"]["engines"][0]
    assert (eng["rules_loaded"], eng["rules_failed"]) == (2, 1)
    assert stats["detect"]["alert"] == 2


def test_summary_counts_alerts_by_signature(tmp_path: Path) -> None:
    packets = _syns(3)
    wrpcap(str(tmp_path / "in.pcap"), packets)
    (tmp_path / "r.rules").write_text('alert tcp any any -> any any (msg:"syn"; flags:S; '
                                      'sid:7;)\n')
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"rules": {"files": [
        str(tmp_path / "r.rules")]}, "replay": {"progress": False}}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli_main(["replay", "-c", str(tmp_path / "c.yaml"), "-l", str(tmp_path),
                       str(tmp_path / "in.pcap")])
    assert rc == 0
    assert "alerts by signature:" in err.getvalue()
    assert "3  [1:7:0] syn" in err.getvalue()


def test_strict_build_refuses_rejected_rules_and_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text("alert udp any any -> any any (sid:1;)\n"
                   "alert udp any any -> any any (nosuchkeyword; sid:2;)\n")
    cfg = Config(rules=RulesConfig(files=(str(bad),)))
    with pytest.raises(StageError, match="nosuchkeyword"):
        build_stages(cfg)  # the daemon: start and reload
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        stages = build_stages(cfg, strict=False)  # replay: the other rules run
    assert len(stages) == 1 and f"{bad}:2: unsupported keyword 'nosuchkeyword' in sid 2" \
        in err.getvalue()
    missing = Config(rules=RulesConfig(files=(str(tmp_path / "none.rules"),)))
    with pytest.raises(StageError, match="cannot read rule file"):
        build_stages(missing, strict=False)


def test_packet_with_broken_tcp_header_still_sees_ip_rules(tmp_path: Path) -> None:
    """A TCP data offset past the packet: no flow, but IP rules alert (ports 0, no flow
    fields), as Suricata does (suricata-verify mac-eve-packet)."""
    bad = pkt(C, S, TCP(sport=1, dport=2, flags="S", dataofs=15), t=0)
    rules = ("alert ip any any -> any any (msg:\"ip\"; sid:1;)\n"
             "alert tcp any any -> any any (flow:to_server; sid:2;)\n")
    events, _ = replay(tmp_path, [bad], rules)
    # Suricata 7.0.10 also counts such a packet as to_server (checked side by side)
    assert sids(events) == [1, 2]
    for a in alerts(events):
        assert a["src_port"] == 0 and a["dest_port"] == 0
        assert "flow_id" not in a and "flow" not in a and "direction" not in a
    assert [e for e in events if e["event_type"] == "flow"] == []


def test_ip_reputation_lists_through_the_address_index(tmp_path: Path) -> None:
    """IP-only rules with address lists (the ET reputation rules) are found through the
    interval index; the result must equal the plain header test's."""
    packets = [pkt(C, S, UDP(sport=1111, dport=53), b"q", t=0),
               pkt(S, C, UDP(sport=53, dport=1111), b"r", t=0.1),
               pkt("10.0.0.7", "198.51.100.9", UDP(sport=1, dport=2), b"x", t=0.2)]
    rules = "\n".join([
        "alert ip [192.0.2.10,198.51.100.0/24] any -> $HOME_NET any (sid:1;)",
        "alert ip $HOME_NET any -> [192.0.2.0/28,203.0.113.5] any (sid:2;)",
        "alert ip [203.0.113.0/24] any -> any any (sid:3;)",
        "alert ip any any -> [198.51.100.0/25] any (sid:4;)",
        "alert udp [192.0.2.10] any -> [10.0.0.0/8] any (sid:5;)",
        "alert ip [192.0.2.10] any -> ![10.0.0.0/8] any (sid:6;)",
    ]) + "\n"
    events, _ = replay(tmp_path, packets, rules)
    got = sorted((a["alert"]["signature_id"], a["pcap_cnt"]) for a in alerts(events))
    assert got == [(1, 2), (2, 1), (4, 3), (5, 2)]


def test_stream_without_known_protocol_is_inspected_at_its_fin(tmp_path: Path) -> None:
    """No app-layer parser to complete a message: Suricata inspects the raw stream when
    that side closes (or at flow end), over all its data, segments joined."""
    conv = Tcp(dport=9999).handshake().client(b"\x01\x02part-one|").ack_server().client(
        b"part-two\x03").ack_server().close()
    rules = 'alert tcp any any -> any any (content:"one|7c|part-two"; sid:1;)\n'
    events, _ = replay(tmp_path, conv.pkts, rules)
    assert [a["pcap_cnt"] for a in alerts(events)] == [8]  # the client's FIN


@pytest.mark.parametrize(("new_action", "expected"), [
    ("alert", [(1, "allowed"), (2, "allowed"), (3, "allowed"), (4, "allowed")]),
    ("drop", [(1, "allowed"), (2, "allowed"), (3, "blocked"), (4, "blocked")]),
    ("pass", [(1, "allowed"), (2, "allowed")]),
])
def test_rate_filter(tmp_path: Path, new_action: str, expected: list) -> None:
    """Once more than `count` events came within `seconds`, the action changes; checked
    side by side with Suricata 7.0.10 (which logs "blocked" for drop even in IDS mode)."""
    tcfg = (f"rate_filter gen_id 1, sig_id 1, track by_src, count 2, seconds 60, "
            f"new_action {new_action}, timeout 60\n")
    events, _ = replay(tmp_path, _syns(4), "alert tcp any any -> any any (flags:S; sid:1;)\n",
                       {"threshold_file": str(tmp_path / "t.cfg")}, {"t.cfg": tcfg})
    assert sorted((a["pcap_cnt"], a["alert"]["action"]) for a in alerts(events)) == expected


def test_target_adds_source_and_target(tmp_path: Path) -> None:
    packets = [pkt(C, S, UDP(sport=5000, dport=53), b"q", t=0)]
    rules = ("alert udp any any -> any any (target:dest_ip; sid:1;)\n"
             "alert udp any any -> any any (target:src_ip; sid:2;)\n")
    events, _ = replay(tmp_path, packets, rules)
    got = {a["alert"]["signature_id"]: a["alert"] for a in alerts(events)}
    assert got[1]["source"] == {"ip": C, "port": 5000}
    assert got[1]["target"] == {"ip": S, "port": 53}
    assert got[2]["source"] == {"ip": S, "port": 53}
    assert got[2]["target"] == {"ip": C, "port": 5000}


# --- stream_size ---------------------------------------------------------------------------

E2E = ROOT / "tests" / "e2e"


def _size_rules(top: int) -> str:
    """One rule per value: sid 1+N for client == N, 100001+N for server == N."""
    return "".join(
        f'alert tcp any any -> any any (msg:"{side} {n}"; stream_size:{side},=,{n}; '
        f"sid:{base + n};)\n"
        for side, base in (("client", 1), ("server", 100_001)) for n in range(top + 1))


def _sizes(events: list[dict]) -> dict[int, tuple[int | None, int | None]]:
    """pcap_cnt -> (client, server) values read off the alerts of _size_rules."""
    got: dict[int, list[int | None]] = {}
    for a in alerts(events):
        sid = a["alert"]["signature_id"]
        got.setdefault(a["pcap_cnt"], [None, None])[sid > 100_000] = sid % 100_000 - 1
    return {k: (v[0], v[1]) for k, v in got.items()}


# (client, server) after each packet of the first two connections of the e2e
# content-modifiers capture (curl against python http.server), read off real Suricata
# 7.0.10 with the same one-rule-per-value rules: the SYN counts 1; the server closes first
# in the first connection (its FIN counts at once: 216 -> 217; the client's FIN only once
# acknowledged: 98 -> 99 on packet 12), the client first in the second (111 -> 112 and
# 198 -> 199 on the acknowledgements).
SURICATA_SIZES = {
    1: (1, 0), 2: (1, 1), 3: (1, 1), 4: (98, 1), 5: (98, 1), 6: (98, 186), 7: (98, 186),
    8: (98, 216), 9: (98, 216), 10: (98, 217), 11: (98, 217), 12: (99, 217),
    13: (1, 0), 14: (1, 1), 15: (1, 1), 16: (111, 1), 17: (111, 1), 18: (111, 186),
    19: (111, 186), 20: (111, 198), 21: (111, 198), 22: (111, 198), 23: (112, 198),
    24: (112, 199)}


def test_stream_size_values_on_a_real_capture(tmp_path: Path) -> None:
    """next_seq - isn per side, packet by packet, as Suricata 7.0.10 has it; the UDP and
    ICMP packets of the capture (no TCP session) never match."""
    from scapy.all import rdpcap  # type: ignore[attr-defined]

    packets = rdpcap(str(E2E / "content-modifiers" / "input.pcap"))
    events, err = replay(tmp_path, list(packets), _size_rules(400))
    assert "rejected" not in err
    got = _sizes(events)
    assert {k: got[k] for k in SURICATA_SIZES} == SURICATA_SIZES
    assert {a["proto"] for a in alerts(events)} == {"TCP"}


def test_stream_size_midstream_pickup(tmp_path: Path) -> None:
    """Without the handshake a session exists only with rules.midstream; picked up on the
    client's data packet, the client counts len + 1 and the server 1; picked up on a
    SYN/ACK, both count 1; a bare FIN (a FIN scan) and the RST it gets open none (values
    of Suricata 7.0.10 with stream.midstream: true on the same packets)."""
    data = Tcp().handshake().client(b"x" * 50).server(b"y" * 70).ack_client().pkts[3:]
    synack = Tcp(sport=40001, t=1.0).handshake().client(b"a" * 10).pkts[1:]
    fin = [pkt(C, S, TCP(sport=40002, dport=81, flags="F", seq=7), t=2.0),
           pkt(S, C, TCP(sport=81, dport=40002, flags="RA", seq=0, ack=8), t=2.01)]
    packets = data + synack + fin
    events, _ = replay(tmp_path, packets, _size_rules(100))
    assert alerts(events) == []  # midstream off: no session, no match
    events, _ = replay(tmp_path, packets, _size_rules(100), {"midstream": True})
    assert _sizes(events) == {1: (51, 1), 2: (51, 71), 3: (51, 71), 4: (1, 1), 5: (1, 1),
                              6: (11, 1)}


def test_stream_size_does_not_depend_on_batches(tmp_path: Path) -> None:
    """The per-flow state carries over batch boundaries: 7-packet batches give the alerts
    of one batch for the whole stream-size e2e capture (gaps, RSTs, FIN orders)."""
    case = E2E / "stream-size"
    runs = []
    for batch in (7, 65536):
        out = tmp_path / str(batch)
        out.mkdir()
        (out / "c.yaml").write_text(yaml.safe_dump({
            "rules": {"files": [str(case / "test.rules")]},
            "outputs": {"eve": {"types": ["alert"]}},
            "replay": {"progress": False, "batch_size": batch}}))
        assert cli_main(["replay", "-q", "-c", str(out / "c.yaml"), "-l", str(out),
                         str(case / "input.pcap")]) == 0
        lines = (out / "eve.json").read_text().splitlines()
        runs.append(sorted((e["pcap_cnt"], e["alert"]["signature_id"])
                           for e in map(json.loads, lines)))
    assert runs[0] == runs[1] and len(runs[0]) > 300


def test_stream_size_without_stream_rules_keeps_no_reassembly(tmp_path: Path) -> None:
    """stream_size reads the sequence numbers of each packet (per-flow columns), not the
    reassembled stream: with only stream_size rules loaded no TCP session buffer is built
    (the engine's stream skip, commit f068f11), and the values are still there."""
    from sensor.detect.rules.engine import RuleStage

    rules = tmp_path / "r.rules"
    rules.write_text('alert tcp any any -> any any (stream_size:client,>,90; sid:1;)\n')
    stage = RuleStage(Config(rules=RulesConfig(files=(str(rules),))))
    assert stage.stream_rules == [] and not stage.stream_always
    conv = Tcp().handshake().client(b"x" * 100).server(b"y" * 10).close()
    events, _ = replay(tmp_path, conv.pkts, rules.read_text())
    assert [a["pcap_cnt"] for a in alerts(events)] == [4, 5, 6, 7, 8]
