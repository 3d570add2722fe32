"""sensor.decode: every link type and header the fast path reads, checked field by field
against scapy's own parse of the packets it built (and dpkt for the on-disk captures).

Packets go through a real pcap file (written by dpkt) and sensor.capture.pcap, so the
decoder sees exactly what replay feeds it.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import dpkt
import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Packet, Raw

from sensor.capture.pcap import PcapSource
from sensor.decode import DecodedBatch, decode_batch

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ROOT / "pcaps" / "formats"
EXPECTED = json.loads((FORMATS / "expected.json").read_text())["files"]
T0 = 1_717_945_476.123456
# explicit addresses: without them scapy looks up routes and ARP for every Ether()
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def write_pcap(path: Path, frames: list[bytes], linktype: int) -> None:
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype)
        for i, fr in enumerate(frames):
            w.writepkt(fr, ts=T0 + i * 0.001)


def decode_frames(tmp_path: Path, frames: list[bytes], linktype: int,
                  name: str = "x.pcap") -> DecodedBatch:
    path = tmp_path / name
    write_pcap(path, frames, linktype)
    batches = list(PcapSource(str(path)).batches())
    assert len(batches) == 1
    return decode_batch(batches[0])


def decode_file(path: Path) -> tuple[DecodedBatch, list[bytes]]:
    (batch,) = list(PcapSource(str(path)).batches())
    return decode_batch(batch), [batch.frame(i) for i in range(len(batch))]


def addr_halves(text: str) -> tuple[int, int]:
    v = int(ipaddress.ip_address(text))
    return v >> 64, v & ((1 << 64) - 1)


def expected_columns(pkt: Packet) -> dict[str, int]:
    """What the decoder must find in `pkt`, from scapy's parse of it."""
    pkt = pkt.__class__(bytes(pkt))  # parse the bytes, as a reader would
    out: dict[str, int] = {}
    tags = [layer for layer in (Dot1AD, Dot1Q) if pkt.haslayer(layer)]
    vids = []
    layer = pkt
    while layer is not None and not isinstance(layer, IP | IPv6):
        if isinstance(layer, Dot1Q | Dot1AD):
            vids.append(layer.vlan)
        layer = layer.payload if layer.payload else None
    del tags
    out["vlan0"] = vids[0] if vids else 0
    out["vlan1"] = vids[1] if len(vids) > 1 else 0
    ip = pkt[IP] if pkt.haslayer(IP) else pkt[IPv6]
    out["ipver"] = 4 if isinstance(ip, IP) else 6
    out["src_hi"], out["src_lo"] = addr_halves(ip.src)
    out["dst_hi"], out["dst_lo"] = addr_halves(ip.dst)
    if out["ipver"] == 4:
        out.update(ttl=ip.ttl, tos=ip.tos, ip_id=ip.id, iplen=ip.len, proto=ip.proto)
    else:
        out.update(ttl=ip.hlim, tos=ip.tc, iplen=ip.plen + 40)
    if pkt.haslayer(TCP):
        t = pkt[TCP]
        out.update(proto=6, sport=t.sport, dport=t.dport, tcp_flags=int(t.flags), tcp_seq=t.seq,
                   tcp_ack=t.ack, tcp_win=t.window, plen=len(t.payload))
    elif pkt.haslayer(UDP):
        u = pkt[UDP]
        out.update(proto=17, sport=u.sport, dport=u.dport, plen=u.len - 8)
    elif pkt.haslayer(ICMP):
        c = pkt[ICMP]
        out.update(proto=1, icmp_type=c.type, icmp_code=c.code, plen=len(c.payload))
        if c.type in (0, 8):
            out.update(icmp_id=c.id, icmp_seq=c.seq)
    elif pkt.haslayer(ICMPv6EchoRequest) or pkt.haslayer(ICMPv6EchoReply):
        c = pkt[ICMPv6EchoRequest] if pkt.haslayer(ICMPv6EchoRequest) else pkt[ICMPv6EchoReply]
        out.update(proto=58, icmp_type=c.type, icmp_code=c.code, icmp_id=c.id, icmp_seq=c.seq,
                   plen=len(c.data))
    return out


def assert_columns(d: DecodedBatch, i: int, want: dict[str, int]) -> None:
    assert bool(d.ok[i]), f"packet {i} not decoded: {d.counters}"
    got = {k: int(getattr(d, k)[i]) for k in want}
    assert got == want


TCP_V4 = IP(src="10.1.2.3", dst="192.0.2.80", ttl=61, tos=0x28, id=4242) / TCP(
    sport=43210, dport=443, flags="PA", seq=123456789, ack=987654321, window=501,
    options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]) / Raw(b"GET / HTTP/1.1\r\n\r\n")
UDP_V6 = IPv6(src="2001:db8::1", dst="2001:db8:ffff::53", hlim=33, tc=0xb8) / UDP(
    sport=5353, dport=53) / Raw(b"\x12\x34" + b"q" * 30)
ICMP_V4 = IP(src="10.9.9.9", dst="10.8.8.8") / ICMP(type=8, code=0, id=0x1234, seq=7) / Raw(
    b"p" * 56)
ICMP_V6 = IPv6(src="fe80::1", dst="fe80::2") / ICMPv6EchoReply(id=99, seq=3, data=b"e" * 16)
L3 = [TCP_V4, UDP_V6, ICMP_V4, ICMP_V6]


def test_ethernet_all_protocols(tmp_path: Path) -> None:
    pkts = [Ether(**MACS) / p for p in L3]
    d = decode_frames(tmp_path, [bytes(p) for p in pkts], 1)
    for i, p in enumerate(pkts):
        assert_columns(d, i, expected_columns(p))
    assert d.counters["decoder.ethernet"] == 4
    assert d.counters["decoder.tcp"] == 1 and d.counters["decoder.udp"] == 1
    assert d.counters["decoder.icmpv4"] == 1 and d.counters["decoder.icmpv6"] == 1


def test_icmp_flow_key_ports() -> None:
    """ICMP flows are keyed as Suricata keys them: (type, code) of the packet and of the
    expected answer, so an echo request and its reply share a flow."""
    d = decode_batch(next(iter(PcapSource(str(FORMATS / "eth-le-usec.pcap")).batches())))
    icmp = np.flatnonzero(d.ok & (d.proto == 1))
    assert len(icmp) == EXPECTED["eth-le-usec.pcap"]["counts"]["icmp_packets"]
    for i in icmp:
        t, c = int(d.icmp_type[i]), int(d.icmp_code[i])
        assert int(d.sport[i]) == t | (c << 8)
        assert int(d.dport[i]) == {8: 0, 0: 8}[t]


@pytest.mark.parametrize("tags", [[100], [200, 300]])
def test_vlan_and_qinq(tmp_path: Path, tags: list[int]) -> None:
    def tagged(p: Packet) -> Packet:
        if len(tags) == 1:
            return Ether(**MACS) / Dot1Q(vlan=tags[0], prio=5) / p
        return Ether(**MACS) / Dot1AD(vlan=tags[0]) / Dot1Q(vlan=tags[1]) / p

    pkts = [tagged(p) for p in L3]
    d = decode_frames(tmp_path, [bytes(p) for p in pkts], 1)
    for i, p in enumerate(pkts):
        want = expected_columns(p)
        assert want["vlan0"] == tags[0]
        assert_columns(d, i, want)
    assert d.counters["decoder.vlan"] == 4
    assert d.counters.get("decoder.vlan_qinq", 0) == (4 if len(tags) == 2 else 0)


def test_three_vlan_tags_are_invalid_not_fatal(tmp_path: Path) -> None:
    p = Ether(**MACS) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / TCP_V4
    d = decode_frames(tmp_path, [bytes(p), bytes(Ether(**MACS) / TCP_V4)], 1)
    assert list(d.ok) == [False, True]
    assert d.counters["decoder.event.vlan.too_many_layers"] == 1
    assert d.counters["decoder.invalid"] == 1


def test_vlan_and_qinq_captures_against_expected() -> None:
    """Real kernel-tagged captures: the tag ids the decoder reads are those tshark saw."""
    for name, outer, inner in (("vlan.pcap", EXPECTED["vlan.pcap"]["counts"]["vlan_ids"], None),
                               ("qinq.pcap", EXPECTED["qinq.pcap"]["counts"]["svlan_ids"],
                                EXPECTED["qinq.pcap"]["counts"]["vlan_ids"])):
        d, frames = decode_file(FORMATS / name)
        assert sorted(set(d.vlan0.tolist())) == outer
        assert sorted(set(d.vlan1.tolist())) == (inner or [0])
        for i, fr in enumerate(frames):
            eth = dpkt.ethernet.Ethernet(fr)
            if isinstance(eth.data, dpkt.ip.IP | dpkt.ip6.IP6):
                assert d.ok[i] or d.fragment[i]
                assert int(d.iplen[i]) == len(bytes(eth.data))


@pytest.mark.parametrize("kind", ["sll", "sll2"])
def test_linux_cooked(tmp_path: Path, kind: str) -> None:
    def cooked(p: Packet) -> Packet:
        proto = 0x0800 if isinstance(p, IP) else 0x86DD
        if kind == "sll":
            return CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=b"\x02" * 6,
                               proto=proto) / p
        return CookedLinuxV2(proto=proto, ifindex=3, pkttype=0, lladdrtype=1,
                             lladdrlen=6, src=b"\x02" * 6) / p

    pkts = [cooked(p) for p in L3]
    d = decode_frames(tmp_path, [bytes(p) for p in pkts], 113 if kind == "sll" else 276)
    for i, p in enumerate(pkts):
        assert_columns(d, i, expected_columns(p))
    assert d.counters["decoder.sll"] == 4


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip(tmp_path: Path, linktype: int) -> None:
    d = decode_frames(tmp_path, [bytes(p) for p in L3], linktype)
    for i, p in enumerate(L3):
        assert_columns(d, i, expected_columns(p))


def test_raw_ipv4_and_ipv6_linktypes(tmp_path: Path) -> None:
    d4 = decode_frames(tmp_path, [bytes(TCP_V4), bytes(ICMP_V4)], 228, "v4.pcap")
    d6 = decode_frames(tmp_path, [bytes(UDP_V6), bytes(ICMP_V6)], 229, "v6.pcap")
    assert_columns(d4, 0, expected_columns(TCP_V4))
    assert_columns(d4, 1, expected_columns(ICMP_V4))
    assert_columns(d6, 0, expected_columns(UDP_V6))
    assert_columns(d6, 1, expected_columns(ICMP_V6))


@pytest.mark.parametrize("af6", [24, 28, 30])
def test_bsd_null_and_loop(tmp_path: Path, af6: int) -> None:
    """DLT_NULL stores the address family in host (here little-endian) order, LOOP in
    network order; BSDs use 24, 28 or 30 for IPv6."""
    for linktype, order in ((0, "little"), (108, "big")):
        frames = [(2 if isinstance(p, IP) else af6).to_bytes(4, order) + bytes(p) for p in L3]
        d = decode_frames(tmp_path, frames, linktype, f"n{linktype}.pcap")
        for i, p in enumerate(L3):
            assert_columns(d, i, expected_columns(p))
        assert d.counters["decoder.null"] == 4
    # scapy's own Loopback layer (DLT_NULL, host order) gives the same
    d = decode_frames(tmp_path, [bytes(Loopback(type=2) / TCP_V4)], 0, "scapy.pcap")
    assert_columns(d, 0, expected_columns(TCP_V4))


def test_bsd_null_capture_matches_its_ethernet_source() -> None:
    """null-loopback.pcap and loop.pcap were converted from lo-eth.pcap: same headers."""
    eth, _ = decode_file(FORMATS / "lo-eth.pcap")
    for name in ("null-loopback.pcap", "loop.pcap"):
        d, _ = decode_file(FORMATS / name)
        ip_eth = np.flatnonzero(eth.ipver > 0)
        assert d.n == len(ip_eth)
        for col in ("ok", "ipver", "proto", "src_lo", "dst_lo", "src_hi", "dst_hi", "sport",
                    "dport", "iplen", "plen", "tcp_flags"):
            assert np.array_equal(getattr(d, col), getattr(eth, col)[ip_eth]), (name, col)


def test_ipv4_options(tmp_path: Path) -> None:
    pkts = [Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR(routers=[
        "1.1.1.1", "2.2.2.2"])]) / TCP(sport=1000, dport=80, flags="S"),
        Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_Router_Alert()]) /
        UDP(sport=9, dport=10) / Raw(b"abc")]
    d = decode_frames(tmp_path, [bytes(p) for p in pkts], 1)
    for i, p in enumerate(pkts):
        assert_columns(d, i, expected_columns(p))
        assert int(d.l4[i]) - int(d.l3[i]) == IP(bytes(p[IP])).ihl * 4 > 20


def test_ipv4_options_capture() -> None:
    d, frames = decode_file(FORMATS / "ipv4-options.pcap")
    assert d.ok.all()
    for i, fr in enumerate(frames):
        ip = dpkt.ethernet.Ethernet(fr).data
        assert len(ip.opts) > 0
        assert int(d.l4[i]) - int(d.l3[i]) == ip.hl * 4
        assert int(d.icmp_id[i]) == ip.data.data.id


def test_ipv6_extension_headers(tmp_path: Path) -> None:
    base = IPv6(src="2001:db8::a", dst="2001:db8::b")
    tcp = TCP(sport=5555, dport=22, flags="S", seq=1)
    pkts = [
        Ether(**MACS) / base / IPv6ExtHdrHopByHop() / tcp,
        Ether(**MACS) / base / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2) / Raw(b"zz"),
        Ether(**MACS) / base / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::c"]) /
        IPv6ExtHdrDestOpt() / tcp,
        Ether(**MACS) / base / AH(nh=6, payloadlen=4, spi=1, icv=b"\x00" * 12) / tcp,
        Ether(**MACS) / base / IPv6ExtHdrDestOpt() / ICMPv6EchoRequest(id=5, seq=6, data=b"hi"),
    ]
    d = decode_frames(tmp_path, [bytes(p) for p in pkts], 1)
    for i, p in enumerate(pkts):
        want = expected_columns(p)
        assert_columns(d, i, want)
        layer = p[IPv6].payload
        hdrs = 0
        while not isinstance(layer, TCP | UDP | ICMPv6EchoRequest):
            hdrs += len(bytes(layer)) - len(bytes(layer.payload))
            layer = layer.payload
        assert int(d.l4[i]) - int(d.l3[i]) == 40 + hdrs


def test_ipv6_extension_header_capture() -> None:
    """Kernel-built hop-by-hop, destination options and SRv6 routing headers."""
    d, frames = decode_file(FORMATS / "ipv6-exthdr.pcap")
    counts = EXPECTED["ipv6-exthdr.pcap"]["counts"]
    assert int(np.count_nonzero(d.ok & (d.proto == 6))) == counts["tcp_packets"]
    assert int(np.count_nonzero(d.fragment)) == counts["ipv6_fraghdr_packets"]
    for i, fr in enumerate(frames):
        ip6 = dpkt.ethernet.Ethernet(fr).data
        if not d.ok[i]:
            continue
        assert int(d.proto[i]) == ip6.p  # dpkt walks the extension headers too
        if ip6.p in (6, 17):
            assert int(d.sport[i]) == ip6.data.sport and int(d.dport[i]) == ip6.data.dport


def test_fragments_are_flagged_for_defrag(tmp_path: Path) -> None:
    from scapy.layers.inet import fragment
    from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6

    v4 = fragment(IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(b"x" * 3000), 1000)
    v6 = fragment6(IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment() / UDP() /
                   Raw(b"y" * 3000), 1280)
    frames = [bytes(Ether(**MACS) / f) for f in v4 + v6]
    d = decode_frames(tmp_path, frames, 1)
    assert d.fragment.all() and not d.ok.any()


def test_other_ip_protocols_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    """Suricata 7 opens no flow for IGMP, PIM or unknown protocols (checked: it logs no flow
    event for them); netsensor counts them in decoder.other_ip_proto."""
    pkts = [IP(src="10.0.0.1", dst="224.0.0.1", proto=2) / Raw(b"\x11\x00" + b"x" * 6),
            IP(src="10.0.0.1", dst="224.0.0.13", proto=103) / Raw(b"z" * 10),
            IPv6(src="fd00::1", dst="ff02::d", nh=103) / Raw(b"y" * 20),
            TCP_V4]
    d = decode_frames(tmp_path, [bytes(Ether(**MACS) / p) for p in pkts], 1)
    assert list(d.ok) == [False, False, False, True], d.counters
    assert d.counters["decoder.other_ip_proto"] == 3, d.counters
    assert list(d.proto[:3]) == [2, 103, 103]
    assert d.counters.get("decoder.invalid", 0) == 0


def test_non_ip_frames_are_counted(tmp_path: Path) -> None:
    from scapy.layers.l2 import ARP

    frames = [bytes(Ether(**MACS) / ARP(pdst="10.0.0.1")),
              bytes(Ether(type=0x88CC, **MACS) / Raw(b"l" * 40))]
    d = decode_frames(tmp_path, frames, 1)
    assert not d.ok.any()
    assert d.counters["decoder.arp"] == 1 and d.counters["decoder.unknown_ethertype"] == 1


def _malformed() -> list[tuple[str, bytes, int]]:
    eth = bytes(Ether(type=0x0800, **MACS))
    tcp = bytes(Ether(**MACS) / TCP_V4)
    ip6 = bytes(Ether(**MACS) / UDP_V6)
    bad_doff = bytearray(tcp)
    bad_doff[14 + 20 + 12] = 0x30  # data offset 12 bytes < 20
    big_doff = bytearray(tcp)
    big_doff[14 + 20 + 12] = 0xF0  # 60 bytes > segment
    bad_ver = bytearray(tcp)
    bad_ver[14] = 0x55
    short_ihl = bytearray(tcp)
    short_ihl[14] = 0x44
    bad_udp = bytearray(bytes(Ether(**MACS) / IP() / UDP() / Raw(b"abcd")))
    bad_udp[14 + 20 + 4 : 14 + 20 + 6] = (200).to_bytes(2, "big")
    return [
        ("decoder.event.ethernet.pkt_too_small", eth[:10], 1),
        ("decoder.event.ipv4.pkt_too_small", eth + b"\x45\x00", 1),
        ("decoder.event.ipv4.trunc_pkt", tcp[:-5], 1),
        ("decoder.event.ipv4.wrong_ip_version", bytes(bad_ver), 1),
        ("decoder.event.ipv4.hlen_too_small", bytes(short_ihl), 1),
        ("decoder.event.tcp.hlen_too_small", bytes(bad_doff), 1),
        ("decoder.event.tcp.hlen_too_small", bytes(big_doff), 1),
        ("decoder.event.udp.hlen_invalid", bytes(bad_udp), 1),
        ("decoder.event.ipv6.trunc_pkt", ip6[:-4], 1),
        ("decoder.event.ipv6.pkt_too_small", eth[:12] + b"\x86\xdd" + b"\x60" * 10, 1),
        ("decoder.event.sll.pkt_too_small", b"\x00" * 10, 113),
        ("decoder.event.ltnull.pkt_too_small", b"\x02\x00", 0),
        ("decoder.invalid_linktype", tcp, 147),
    ]


@pytest.mark.parametrize("counter,frame,linktype", _malformed(),
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(_malformed())])
def test_malformed_packets_are_counted_not_fatal(tmp_path: Path, counter: str, frame: bytes,
                                                 linktype: int) -> None:
    d = decode_frames(tmp_path, [frame], linktype)
    assert not d.ok[0]
    assert d.counters[counter] == 1
    assert d.counters["decoder.invalid"] == 1


def test_malformed_in_a_batch_leaves_neighbours_intact(tmp_path: Path) -> None:
    """One bad frame among good ones: only it is invalid, the others decode as alone."""
    cases = _malformed()
    good = [bytes(Ether(**MACS) / p) for p in L3]
    path = tmp_path / "mixed.pcap"
    frames = []
    for _, bad, lt in cases:
        if lt == 1:
            frames += [bad] + good
    write_pcap(path, frames, 1)
    (batch,) = list(PcapSource(str(path)).batches())
    d = decode_batch(batch)
    n_bad = sum(1 for _, _, lt in cases if lt == 1)
    assert int(np.count_nonzero(d.ok)) == n_bad * len(good)
    assert d.counters["decoder.invalid"] == n_bad
    alone = decode_frames(tmp_path, good, 1, "good.pcap")
    ok_idx = np.flatnonzero(d.ok)
    for col in ("proto", "sport", "dport", "src_lo", "dst_lo", "plen", "tcp_flags", "icmp_id"):
        assert np.array_equal(getattr(d, col)[ok_idx],
                              np.tile(getattr(alone, col), n_bad)), col


def test_short_frame_at_end_of_buffer_does_not_read_out_of_bounds(tmp_path: Path) -> None:
    """The last frame is a 1-byte stub: vectorised reads past it must stay in the pad."""
    d = decode_frames(tmp_path, [bytes(Ether(**MACS) / TCP_V4), b"\x45"], 101)
    assert not d.ok[1]
    assert d.counters["decoder.invalid"] >= 1


@pytest.mark.parametrize("name", ["eth-le-usec.pcap", "sll.pcap", "sll2.pcap", "raw-ip.pcap",
                                  "qinq.pcap", "single.pcapng"])
def test_capture_protocol_counts_match_tshark(name: str) -> None:
    """Counts of the real captures agree with tshark's (expected.json)."""
    counts = EXPECTED[name]["counts"]
    d, _ = decode_file(FORMATS / name)
    assert int(np.count_nonzero(d.ok & (d.proto == 6))) == counts["tcp_packets"]
    assert int(np.count_nonzero(d.ok & (d.proto == 17))) == counts["udp_packets"]
    assert int(np.count_nonzero(d.ok & (d.proto == 1))) == counts["icmp_packets"]
    assert int(np.count_nonzero(d.ok & (d.proto == 58))) == counts["icmpv6_packets"]
    assert int(np.count_nonzero(d.ipver == 4)) == counts["ipv4_packets"]
    assert int(np.count_nonzero(d.ipver == 6)) == counts["ipv6_packets"]
    assert d.counters.get("decoder.invalid", 0) == 0
