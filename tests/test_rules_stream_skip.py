"""Flows no stream rule can see get no TCP session (sensor/detect/rules/engine.py:
stream_rules, flows_need_stream, RuleStage._stream_decision), and alerts stay the same."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import numpy as np
import pytest
from scapy.all import wrpcap  # type: ignore[attr-defined]
from test_rules_engine import Tcp, alerts, replay, sids

from sensor.capture.pcap import PcapSource
from sensor.config import Config
from sensor.detect.rules.engine import (
    STREAM_NEEDED,
    STREAM_SKIPPED,
    RuleStage,
    flows_need_stream,
    stream_rules,
)
from sensor.detect.rules.loader import RuleSet, load_rules
from sensor.detect.rules.parser import parse_rule
from sensor.pipeline import Pipeline

VARS = {"address-groups": {"HOME_NET": "[10.0.0.0/8,192.168.0.0/16]",
                           "EXTERNAL_NET": "!$HOME_NET"},
        "port-groups": {"HTTP_PORTS": "[80,8080]"}}


def _cols(flows: list[tuple[str, int, str, int]]) -> tuple[np.ndarray, ...]:
    """(ipver, src_hi, src_lo, dst_hi, dst_lo, sport, dport) of one packet per flow."""
    ipver, shi, slo, dhi, dlo, sp, dp = [], [], [], [], [], [], []
    for src, sport, dst, dport in flows:
        a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        ipver.append(a.version)
        for addr, hi, lo in ((a, shi, slo), (b, dhi, dlo)):
            v = int(addr)
            hi.append(v >> 64 if addr.version == 6 else 0)
            lo.append(v & ((1 << 64) - 1))
        sp.append(sport)
        dp.append(dport)
    return (np.asarray(ipver, np.uint8), np.asarray(shi, np.uint64), np.asarray(slo, np.uint64),
            np.asarray(dhi, np.uint64), np.asarray(dlo, np.uint64), np.asarray(sp, np.uint16),
            np.asarray(dp, np.uint16))


def need(rule_text: str, flows: list[tuple[str, int, str, int]]) -> list[bool]:
    rule = parse_rule(rule_text, VARS)
    return flows_need_stream([rule], *_cols(flows)).tolist()


# (client, cport, server, sport) flows, seen from either side's packet
WEB = ("10.1.1.1", 40000, "8.8.8.8", 80)
WEB_BACK = ("8.8.8.8", 80, "10.1.1.1", 40000)  # a packet of the same flow, to_client
TLS = ("10.1.1.1", 40001, "8.8.8.8", 443)
ALT = ("10.1.1.1", 40002, "8.8.8.8", 8080)
INBOUND = ("8.8.8.8", 50000, "10.1.1.1", 80)
V6 = ("2001:db8::1", 40003, "2001:db8::2", 80)


@pytest.mark.parametrize("rule, flows, expected", [
    # a destination port: either packet orientation of the flow decides the same
    ('alert tcp any any -> any 80 (content:"x"; sid:1;)',
     [WEB, WEB_BACK, TLS, V6], [True, True, False, True]),
    # a source port 80 rule sees the server's packets of a port 80 flow
    ('alert tcp any 80 -> any any (content:"x"; sid:1;)', [WEB, TLS], [True, False]),
    # <> and address sets with negation (WEB's home side is the client, not port 80)
    ('alert tcp $EXTERNAL_NET any <> $HOME_NET 80 (content:"x"; sid:1;)',
     [WEB, INBOUND, WEB_BACK, TLS], [False, True, False, False]),
    ('alert tcp $HOME_NET any <> $EXTERNAL_NET 80 (content:"x"; sid:1;)',
     [WEB, WEB_BACK, INBOUND], [True, True, False]),
    ('alert tcp $HOME_NET any -> !$HOME_NET any (content:"x"; sid:1;)',
     [WEB, INBOUND, ("10.1.1.1", 1, "192.168.1.1", 2)], [True, True, False]),
    # port groups, lists, ranges and negated ports
    ('alert tcp any any -> any $HTTP_PORTS (content:"x"; sid:1;)',
     [WEB, ALT, TLS], [True, True, False]),
    ('alert tcp any any -> any ![1:1024] (content:"x"; sid:1;)',
     [WEB, TLS, ("10.1.1.1", 80, "8.8.8.8", 80)], [True, True, False]),
    ('alert tcp any any -> any [443,8000:8100] (content:"x"; sid:1;)',
     [WEB, TLS, ALT], [False, True, True]),
    # proto ip rules with addresses
    ('alert ip 8.8.8.8 any -> any any (content:"x"; sid:1;)', [WEB, V6], [True, False]),
    ('alert tcp any any -> 2001:db8::/32 any (content:"x"; sid:1;)', [WEB, V6], [False, True]),
])
def test_header_decides_both_orientations(rule: str, flows: list, expected: list) -> None:
    assert need(rule, flows) == expected


def test_only_stream_rules_count() -> None:
    """udp/icmp rules, header-only rules and packet-only payload rules (dsize,
    flow:no_stream) need no session; content on tcp/ip (also with depth) does."""
    texts = ['alert udp any any -> any any (content:"x"; sid:1;)',
             'alert icmp any any -> any any (content:"x"; sid:2;)',
             'alert tcp any any -> any any (flags:S; sid:3;)',
             'alert tcp any any -> any any (dsize:>5; content:"x"; sid:4;)',
             'alert tcp any any -> any any (flow:no_stream; content:"x"; sid:5;)',
             'alert tcp any any -> any 22 (content:"SSH-"; depth:4; sid:6;)',
             'alert ip any any -> any 21 (content:"USER"; sid:7;)',
             'alert tcp any any -> any 25 (flow:only_stream; content:"x"; sid:8;)']
    rules = [parse_rule(t) for t in texts]
    cfg = Config()
    stage = RuleStage(cfg, ruleset=dataclasses.replace(_ruleset(), rules=rules))
    assert sorted(r.sid for r in stream_rules(stage.rules)) == [6, 7, 8]
    assert not stage.stream_always


def _ruleset() -> RuleSet:
    return load_rules([], {})


RULES = ('alert tcp any any -> any 80 (msg:"evil on 80"; flow:to_server; content:"evil"; '
         'sid:1;)\n'
         'alert tcp any any -> any 8080 (msg:"SYN to 8080"; flags:S; sid:2;)\n')


def _conversations() -> list:
    pkts: list = []
    for dport, t in ((80, 0.0), (443, 1.0), (8080, 2.0)):
        c = Tcp(sport=41000 + dport % 1000, dport=dport, t=t).handshake()
        pkts += c.client(b"GET /evil HTTP/1.0\r\n\r\n").ack_server().close().pkts
    return pkts


def test_sessions_only_for_flows_a_stream_rule_sees(tmp_path: Path) -> None:
    """Real pcap through the real pipeline: the port 80 flow is reassembled (its stream
    alert comes), the 443 and 8080 flows carry the same payload but get no Session."""
    wrpcap(str(tmp_path / "in.pcap"), _conversations())
    rule_file = tmp_path / "t.rules"
    rule_file.write_text(RULES)
    cfg = Config()
    cfg = dataclasses.replace(cfg, rules=dataclasses.replace(cfg.rules,
                                                             files=(str(rule_file),)))
    stage = RuleStage(cfg)
    assert not stage.stream_always
    pipe = Pipeline(cfg, None, [stage])
    for batch in PcapSource(str(tmp_path / "in.pcap")).batches():
        pipe.process(batch)
    c = pipe.flows.cols
    live = np.flatnonzero(c["flow_id"] != 0)
    decided = {int(c["srv_port"][s]): int(c["rs_stream"][s]) for s in live.tolist()
               if c["rs_stream"][s]}
    assert decided == {80: STREAM_NEEDED, 443: STREAM_SKIPPED, 8080: STREAM_SKIPPED}
    assert len(stage.sessions) == 1
    # a reload brings other rules: their stage decides every live flow again
    reloaded = RuleStage(cfg)
    reloaded._ensure_cols(pipe.flows)
    assert not c["rs_stream"].any()
    pipe.finish()
    assert not stage.sessions


def test_alerts_with_skipped_sessions(tmp_path: Path) -> None:
    """The replay still alerts on the stream of the port 80 flow and the header rule of
    the 8080 flow (whose session was skipped)."""
    events, _ = replay(tmp_path, _conversations(), RULES)
    got = [(a["alert"]["signature_id"], a["dest_port"]) for a in alerts(events)]
    assert sorted(got) == [(1, 80), (2, 8080)]
    assert sorted(sids(events)) == [1, 2]
