"""sensor.flow: keys, direction, TCP state, timeouts, port reuse, counters, the hard cap.

Small cases are scapy packets replayed through a real pcap and the whole pipeline (their
EVE flow events are what users see); the SYN flood is built with numpy straight into a
PacketBatch, hundreds of thousands of packets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from replay_helpers import MACS, ListSink, replay_frames
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from sensor.capture import BATCH_PAD, PacketBatch
from sensor.config import Config, load_config
from sensor.flow import STATE_NAMES
from sensor.pipeline import Pipeline

T0 = 1_700_000_000.0
CLI, SRV = "10.0.0.1", "10.0.0.2"


def eth(pkt: object) -> bytes:
    return bytes(Ether(**MACS) / pkt)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, payload: bytes = b"",
        seq: int = 1000) -> bytes:
    p = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq)
    return eth(p / Raw(payload) if payload else p)


def session(sport: int = 40000, dport: int = 80, close: str | None = "fin",
            cli: str = CLI, srv: str = SRV) -> list[bytes]:
    """A TCP session: handshake, request, response, then FIN/FIN, RST, or left open."""
    out = [tcp(cli, srv, sport, dport, "S"), tcp(srv, cli, dport, sport, "SA"),
           tcp(cli, srv, sport, dport, "A"), tcp(cli, srv, sport, dport, "PA", b"GET /\r\n"),
           tcp(srv, cli, dport, sport, "PA", b"HTTP/1.0 200 OK\r\n\r\nhello")]
    if close == "fin":
        out += [tcp(cli, srv, sport, dport, "FA"), tcp(srv, cli, dport, sport, "FA"),
                tcp(cli, srv, sport, dport, "A")]
    elif close == "rst":
        out += [tcp(srv, cli, dport, sport, "R")]
    return out


def times(n: int, start: float = T0, step: float = 0.01) -> list[float]:
    return [start + i * step for i in range(n)]


def flows_of(sink: ListSink) -> list[dict]:
    return sink.events("flow")


def cfg_from(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "netsensor.yaml"
    p.write_text(text)
    return load_config(str(p))


def test_bidirectional_and_client_is_first_sender(tmp_path: Path) -> None:
    # the first packet comes from the *server* port: Suricata makes its sender the client
    frames = [tcp(SRV, CLI, 80, 40000, "A", b"late"), tcp(CLI, SRV, 40000, 80, "A", b"ack")]
    sink, _ = replay_frames(tmp_path, frames, times(2))
    (f,) = flows_of(sink)
    assert (f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"]) == (SRV, 80, CLI, 40000)
    assert f["flow"]["pkts_toserver"] == 1 and f["flow"]["pkts_toclient"] == 1


def test_vlan_is_part_of_the_key(tmp_path: Path) -> None:
    base = IP(src=CLI, dst=SRV) / UDP(sport=5000, dport=53) / Raw(b"q")
    back = IP(src=SRV, dst=CLI) / UDP(sport=53, dport=5000) / Raw(b"a")
    frames = [bytes(Ether(**MACS) / Dot1Q(vlan=v) / p) for v in (10, 20) for p in (base, back)]
    frames.append(bytes(Ether(**MACS) / base))
    sink, _ = replay_frames(tmp_path, frames, times(len(frames)))
    flows = flows_of(sink)
    assert sorted(tuple(f.get("vlan", [])) for f in flows) == [(), (10,), (20,)]
    for f in flows:
        both = f["flow"]["pkts_toserver"], f["flow"]["pkts_toclient"]
        assert both == ((1, 1) if f.get("vlan") else (1, 0))


@pytest.mark.parametrize("close,state", [(None, "established"), ("fin", "closed"),
                                         ("rst", "closed")])
def test_tcp_states(tmp_path: Path, close: str | None, state: str) -> None:
    frames = session(close=close)
    sink, _ = replay_frames(tmp_path, frames, times(len(frames)))
    (f,) = flows_of(sink)
    assert f["flow"]["state"] == state
    assert f["flow"]["reason"] == "shutdown"


def test_tcp_syn_only_is_new_and_midstream_stays_new(tmp_path: Path) -> None:
    """A lone SYN is `new`; a session picked up without its SYN stays `new` even after
    FIN/FIN (Suricata tracks TCP state only from a SYN; agreed on suricata-verify's
    midstream pcaps)."""
    frames = [tcp(CLI, SRV, 40001, 80, "S")] + session(40002, close="fin")[3:]
    sink, _ = replay_frames(tmp_path, frames, times(len(frames)))
    states = {f["src_port"]: f["flow"]["state"] for f in flows_of(sink)}
    assert states == {40001: "new", 40002: "new"}


def test_udp_and_icmp_state(tmp_path: Path) -> None:
    frames = [eth(IP(src=CLI, dst=SRV) / UDP(sport=1, dport=2)),
              eth(IP(src=CLI, dst=SRV) / UDP(sport=3, dport=4)),
              eth(IP(src=SRV, dst=CLI) / UDP(sport=4, dport=3)),
              eth(IP(src=CLI, dst=SRV) / ICMP(type=8, id=1, seq=1)),
              eth(IP(src=SRV, dst=CLI) / ICMP(type=0, id=1, seq=1))]
    sink, _ = replay_frames(tmp_path, frames, times(len(frames)))
    by = {(f["proto"], f.get("src_port")): f["flow"] for f in flows_of(sink)}
    assert by[("UDP", 1)]["state"] == "new"
    assert by[("UDP", 3)]["state"] == "established"
    icmp = by[("ICMP", None)]
    assert icmp["state"] == "established" and icmp["pkts_toclient"] == 1


def test_counters_and_flags_per_direction(tmp_path: Path) -> None:
    frames = session(close="fin")
    sink, _ = replay_frames(tmp_path, frames, times(len(frames), step=0.5))
    (f,) = flows_of(sink)
    to_server = [0, 2, 3, 5, 7]
    assert f["flow"]["pkts_toserver"] == 5 and f["flow"]["pkts_toclient"] == 3
    assert f["flow"]["bytes_toserver"] == sum(len(frames[i]) for i in to_server)
    assert f["flow"]["bytes_toclient"] == sum(len(frames[i]) for i in (1, 4, 6))
    assert f["flow"]["start"] == "2023-11-14T22:13:20.000000+0000"
    assert f["flow"]["end"] == "2023-11-14T22:13:23.500000+0000"
    assert f["flow"]["age"] == 3
    # client sent S, A, PA, FA: 0x1b; server SA, PA, FA: 0x1b
    assert f["tcp"] == {"tcp_flags": "1b", "tcp_flags_ts": "1b", "tcp_flags_tc": "1b",
                        "syn": True, "fin": True, "psh": True, "ack": True}


def test_default_timeouts_are_suricatas() -> None:
    t = Config().flow.timeouts
    assert (t.tcp.new, t.tcp.established, t.tcp.closed) == (60, 600, 60)
    assert (t.udp.new, t.udp.established) == (30, 300)
    assert (t.icmp.new, t.icmp.established) == (30, 300)
    assert (t.default.new, t.default.established) == (30, 300)


def test_udp_timeout_from_config(tmp_path: Path) -> None:
    """flow.timeouts.udp.new: 5 -> a gap of 6 s ends the flow (reason timeout) and the next
    packet opens a new one; the established timeout keeps its default."""
    cfg = cfg_from(tmp_path, "flow:\n  timeouts:\n    udp:\n      new: 5\n")
    assert cfg.flow.timeouts.udp.established == 300
    q = eth(IP(src=CLI, dst=SRV) / UDP(sport=7, dport=8))
    a = eth(IP(src=SRV, dst=CLI) / UDP(sport=8, dport=7))
    # flow 1: one packet then 6 s of silence; flow 2 (same tuple): established, 200 s gap
    frames = [q, q, a, q]
    ts = [T0, T0 + 6, T0 + 6.1, T0 + 206]
    sink, pipe = replay_frames(tmp_path, frames, ts, cfg)
    flows = flows_of(sink)
    assert [(f["flow"]["reason"], f["flow"]["pkts_toserver"], f["flow"]["pkts_toclient"])
            for f in flows] == [("timeout", 1, 0), ("shutdown", 2, 1)]
    assert flows[0]["flow_id"] != flows[1]["flow_id"]
    # a timed-out flow is logged at its deadline (last packet + timeout)
    assert flows[0]["timestamp"] == "2023-11-14T22:13:25.000000+0000"
    assert pipe.all_counters()["flow_mgr.flows_timeout"] == 1


def test_tcp_state_timeouts_from_config(tmp_path: Path) -> None:
    cfg = cfg_from(tmp_path, "flow:\n  timeouts:\n    tcp:\n      new: 5\n      closed: 2\n")
    assert cfg.flow.timeouts.tcp.established == 600
    syn = [tcp(CLI, SRV, 41000, 80, "S")]
    closed = session(41001, close="fin")
    est = session(41002, close=None)
    frames = syn + closed + est + [tcp(CLI, SRV, 41003, 80, "S")]
    ts = [T0] + times(len(closed), T0 + 0.1) + times(len(est), T0 + 1) + [T0 + 100]
    sink, _ = replay_frames(tmp_path, frames, ts, cfg)
    by = {f["src_port"]: f["flow"] for f in flows_of(sink)}
    assert by[41000]["reason"] == "timeout" and by[41000]["state"] == "new"
    assert by[41001]["reason"] == "timeout" and by[41001]["state"] == "closed"
    # established: 600 s default not reached at T0 + 100
    assert by[41002]["reason"] == "shutdown" and by[41002]["state"] == "established"
    assert by[41003]["reason"] == "shutdown"


def test_tcp_port_reuse_starts_a_new_flow(tmp_path: Path) -> None:
    first = session(42000, close="fin")
    second = session(42000, close="fin")
    frames = first + second
    for batch_size in (65536, 3, 1):
        sink, pipe = replay_frames(tmp_path, frames, times(len(frames)), batch_size=batch_size,
                                   name=f"r{batch_size}.pcap")
        flows = flows_of(sink)
        assert len(flows) == 2, batch_size
        for f in flows:
            assert (f["flow"]["pkts_toserver"], f["flow"]["pkts_toclient"]) == (5, 3)
            assert f["flow"]["state"] == "closed"
        assert flows[0]["flow_id"] != flows[1]["flow_id"]
        assert pipe.all_counters()["flow.tcp_reuse"] == 1


def test_batch_size_does_not_change_flows(tmp_path: Path) -> None:
    frames = session(43000) + session(43001, close="rst") + session(43002, close=None)
    frames += [eth(IP(src=CLI, dst=SRV) / UDP(sport=9, dport=9))] * 3
    ts = times(len(frames), step=0.3)
    ref = None
    for bs in (65536, 7, 2, 1):
        sink, _ = replay_frames(tmp_path, frames, ts, batch_size=bs, name=f"b{bs}.pcap")
        got = sorted((f["src_port"], f["flow"]["pkts_toserver"], f["flow"]["pkts_toclient"],
                      f["flow"]["bytes_toserver"], f["flow"]["state"], f["flow"]["start"],
                      f["flow"]["end"]) for f in flows_of(sink))
        ref = ref or got
        assert got == ref, bs


def test_cap_evicts_with_reason_forced_and_logs_every_flow(tmp_path: Path) -> None:
    cfg = cfg_from(tmp_path, "flow:\n  max_flows: 100\n")
    frames = [eth(IP(src=CLI, dst=SRV) / UDP(sport=10000 + i, dport=53)) for i in range(400)]
    sink, pipe = replay_frames(tmp_path, frames, times(400, step=0.001), cfg, batch_size=50)
    flows = flows_of(sink)
    assert len(flows) == 400  # every flow is logged, evicted or not
    forced = [f for f in flows if f["flow"]["reason"] == "forced"]
    assert len(forced) >= 300
    assert all(f["flow"].get("emergency") is True for f in forced)
    c = pipe.all_counters()
    assert c["flow.get_used"] == len(forced)
    assert c["flow.emerg_mode_entered"] >= 1
    assert pipe.flows.capacity <= 100


def syn_flood_batches(n: int, batch: int, seed: int = 1) -> list[PacketBatch]:
    """n SYNs from random sources to one server, built with numpy: 54-byte frames."""
    template = np.frombuffer(tcp("0.0.0.0", SRV, 0, 80, "S"), dtype=np.uint8)
    size = len(template)
    rng = np.random.default_rng(seed)
    src = rng.integers(1 << 24, 0xDFFFFFFF, n, dtype=np.uint32)
    sport = rng.integers(1024, 65535, n, dtype=np.uint16)
    out = []
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        k = hi - lo
        frames = np.tile(template, (k, 1))
        frames[:, 26:30] = src[lo:hi, None].view(np.uint8).reshape(k, 4)[:, ::-1]
        frames[:, 34:36] = sport[lo:hi, None].view(np.uint8).reshape(k, 2)[:, ::-1]
        data = np.concatenate([frames.ravel(), np.zeros(BATCH_PAD, dtype=np.uint8)])
        out.append(PacketBatch(
            data=data, offset=np.arange(k, dtype=np.int64) * size,
            caplen=np.full(k, size, dtype=np.int32), wirelen=np.full(k, size, dtype=np.int32),
            ts_us=(int(T0 * 1e6) + np.arange(lo, hi, dtype=np.int64) * 10),
            linktype=np.ones(k, dtype=np.uint16), first_cnt=lo + 1))
    return out


def test_syn_flood_keeps_table_at_cap(tmp_path: Path) -> None:
    """300k SYNs from random sources (3 s of packet time, far below any timeout): the
    table never holds more than max_flows, every flow is still logged, and a real session
    in the middle of the flood is counted whole."""
    cap = 20000
    cfg = cfg_from(tmp_path, f"flow:\n  max_flows: {cap}\n")
    sink = ListSink()
    pipe = Pipeline(cfg, sink)  # type: ignore[arg-type]
    n = 300_000
    peak = 0
    for b in syn_flood_batches(n, 65536):
        pipe.process(b)
        peak = max(peak, pipe.flows.active_count)
        assert pipe.flows.capacity <= cap
    pipe.finish()
    assert peak <= cap
    c = pipe.all_counters()
    assert c["decoder.pkts"] == n
    logged = sum(1 for x in sink.lines if '"event_type":"flow"' in x)
    assert logged == c["flow.total"]
    assert c["flow.get_used"] >= c["flow.total"] - cap
    assert c["flow.get_used"] > 0
    reasons = {}
    for x in sink.lines:
        if '"reason":"forced"' in x:
            reasons["forced"] = reasons.get("forced", 0) + 1
    assert reasons["forced"] == c["flow.get_used"]


def test_state_names() -> None:
    assert STATE_NAMES == ("new", "established", "closed")


def test_sample_flows_do_not_depend_on_batch_size() -> None:
    """Every field of every flow event of the bundled sample (except the per-run flow_id)
    is the same with one big batch and with batches of 61 frames."""
    from replay_helpers import replay

    sample = Path(__file__).resolve().parent.parent / "pcaps" / "sample.pcap"
    out = []
    for bs in (65536, 61):
        sink, _ = replay(sample, batch_size=bs)
        out.append(sorted(json_without_id(x) for x in sink.lines
                          if '"event_type":"flow"' in x))
    assert out[0] == out[1] and len(out[0]) > 1000


def json_without_id(line: str) -> str:
    import json

    ev = json.loads(line)
    del ev["flow_id"]
    return json.dumps(ev, sort_keys=True)


def test_icmp4_errors_join_the_quoted_flow_or_open_none(tmp_path: Path) -> None:
    """As Suricata 7.0.10 does (checked with it on these very packets): a port unreachable
    quoting a UDP packet counts as a to-client packet of that UDP flow; ICMPv4 errors with
    no flow to join (time exceeded, unreachable for an unknown flow) open no flow; an
    ICMPv6 unreachable is an ICMPv6 flow of its own."""
    from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

    u = IP(src=CLI, dst=SRV) / UDP(sport=5555, dport=9) / Raw(b"hello")
    u_other = IP(src=CLI, dst="10.0.0.3") / UDP(sport=5556, dport=9) / Raw(b"hello")
    t = IP(src=CLI, dst=SRV) / TCP(sport=4444, dport=80, flags="S")
    u6 = IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=7777, dport=9) / Raw(b"x")
    frames = [eth(u),
              eth(IP(src=SRV, dst=CLI) / ICMP(type=3, code=3) / bytes(u)[:28]),
              eth(IP(src="10.0.0.5", dst=CLI) / ICMP(type=3, code=1) / bytes(u_other)[:28]),
              eth(t),
              eth(IP(src="10.0.0.9", dst=CLI) / ICMP(type=11, code=0) / bytes(t)[:28]),
              eth(u6),
              eth(IPv6(src="fd00::2", dst="fd00::1") / ICMPv6DestUnreach(code=4) / bytes(u6))]
    for batch_size in (65536, 1):
        sink, _ = replay_frames(tmp_path, frames, times(len(frames)), batch_size=batch_size,
                                name=f"e{batch_size}.pcap")
        got = sorted((f["proto"], f.get("src_port", -1), f["flow"]["pkts_toserver"],
                      f["flow"]["pkts_toclient"], f["flow"]["bytes_toserver"],
                      f["flow"]["bytes_toclient"]) for f in flows_of(sink))
        assert got == sorted([("UDP", 5555, 1, 1, len(frames[0]), len(frames[1])),
                              ("TCP", 4444, 1, 0, len(frames[3]), 0),
                              ("UDP", 7777, 1, 0, len(frames[5]), 0),
                              ("IPv6-ICMP", -1, 1, 0, len(frames[6]), 0)]), batch_size
        # the quoted error does not count as an answer: the UDP flow stays "new"
        (udp,) = [f for f in flows_of(sink) if f.get("src_port") == 5555]
        assert udp["flow"]["state"] == "new"
    # a real answer after the error does establish it
    frames.append(eth(IP(src=SRV, dst=CLI) / UDP(sport=9, dport=5555) / Raw(b"late")))
    sink, _ = replay_frames(tmp_path, frames, times(len(frames)), batch_size=1, name="l.pcap")
    (udp,) = [f for f in flows_of(sink) if f.get("src_port") == 5555]
    assert udp["flow"]["state"] == "established" and udp["flow"]["pkts_toclient"] == 2


def test_icmp4_error_without_flow_before_one_with_flow(tmp_path: Path) -> None:
    """An error that opens nothing, then a UDP flow, its unreachable and a real answer, all
    in one batch: the dropped error must not shift which packets count as quoted."""
    u = IP(src=CLI, dst=SRV) / UDP(sport=6000, dport=53) / Raw(b"q")
    other = IP(src=CLI, dst="10.0.0.7") / UDP(sport=6001, dport=53) / Raw(b"q")
    frames = [eth(IP(src="10.0.0.7", dst=CLI) / ICMP(type=3, code=3) / bytes(other)[:28]),
              eth(u), eth(IP(src=SRV, dst=CLI) / ICMP(type=3, code=3) / bytes(u)[:28]),
              eth(IP(src=SRV, dst=CLI) / UDP(sport=53, dport=6000) / Raw(b"a"))]
    sink, _ = replay_frames(tmp_path, frames, times(len(frames)))
    (f,) = flows_of(sink)
    assert (f["src_port"], f["flow"]["pkts_toserver"], f["flow"]["pkts_toclient"]) == (6000, 1, 2)
    assert f["flow"]["state"] == "established"
