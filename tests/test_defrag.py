"""sensor.defrag: IPv4/IPv6 reassembly of fragments built by scapy's fragment()/fragment6(),
fed through a real pcap file, the batch decoder and the defragmenter as replay does."""

from __future__ import annotations

import random
from pathlib import Path

import dpkt
import numpy as np
from replay_helpers import ListSink
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from sensor.capture import PacketBatch
from sensor.capture.pcap import PcapSource
from sensor.config import Config, DefragLimits
from sensor.decode import decode_batch
from sensor.defrag import DefragConfig, Defragmenter
from sensor.pipeline import Pipeline

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
T0 = 1_700_000_000.0


def to_batch(tmp_path: Path, frames: list[bytes], times: list[float] | None = None,
             name: str = "f.pcap") -> PacketBatch:
    path = tmp_path / name
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        for i, fr in enumerate(frames):
            w.writepkt(fr, ts=T0 + i * 0.001 if times is None else times[i])
    (batch,) = list(PcapSource(str(path)).batches())
    return batch


def reassemble(defrag: Defragmenter, batch: PacketBatch) -> list[bytes]:
    d = decode_batch(batch)
    out = defrag.add(batch, d)
    if out is None:
        return []
    assert out.pkt_src == "defrag" and out.first_cnt == 0
    return [out.frame(i) for i in range(len(out))]


def ip_of(frame: bytes) -> bytes:
    return frame[14:]


def v4_datagram(size: int = 3000, ident: int = 77) -> Packet:
    return IP(src="10.0.0.1", dst="10.0.0.2", id=ident) / UDP(sport=4000, dport=5000) / Raw(
        bytes(random.Random(size).randbytes(size)))


def v6_datagram(size: int = 3000, ident: int = 0x1234) -> Packet:
    return IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(id=ident) / UDP(
        sport=4000, dport=5000) / Raw(bytes(random.Random(size).randbytes(size)))


def normalised_v4(pkt: Packet) -> bytes:
    """The datagram as the defragmenter rebuilds it: no fragment bits, checksum zeroed."""
    ip = IP(bytes(pkt))
    ip.flags = 0
    ip.frag = 0
    ip.chksum = 0
    raw = bytearray(bytes(ip))
    raw[10:12] = b"\x00\x00"
    return bytes(raw)


def test_ipv4_in_order(tmp_path: Path) -> None:
    pkt = v4_datagram()
    frags = fragment(pkt, fragsize=1000)
    assert len(frags) == 4
    out = reassemble(Defragmenter(), to_batch(tmp_path, [bytes(Ether(**MACS) / f)
                                                          for f in frags]))
    assert len(out) == 1
    assert out[0][:14] == bytes(Ether(type=0x0800, **MACS))[:14]  # first fragment's link header
    assert ip_of(out[0]) == normalised_v4(pkt)
    # the rebuilt datagram decodes as a whole UDP packet with the original payload
    d = decode_batch(to_batch(tmp_path, out, name="r.pcap"))
    assert d.ok[0] and int(d.dport[0]) == 5000 and int(d.plen[0]) == 3000


def test_ipv4_out_of_order(tmp_path: Path) -> None:
    pkt = v4_datagram(4000)
    frags = fragment(pkt, fragsize=512)
    frags = frags[::-1]
    assert IP(bytes(frags[0])).frag != 0  # the first fragment does not come first
    defrag = Defragmenter()
    out = reassemble(defrag, to_batch(tmp_path, [bytes(Ether(**MACS) / f) for f in frags]))
    assert len(out) == 1 and ip_of(out[0]) == normalised_v4(pkt)
    assert defrag.counters["defrag.ipv4.fragments"] == len(frags)
    assert defrag.counters["defrag.ipv4.reassembled"] == 1
    assert not defrag.trackers


def test_ipv4_across_batches(tmp_path: Path) -> None:
    pkt = v4_datagram()
    frames = [bytes(Ether(**MACS) / f) for f in fragment(pkt, fragsize=1000)]
    defrag = Defragmenter()
    assert reassemble(defrag, to_batch(tmp_path, frames[:2], name="a.pcap")) == []
    assert len(defrag.trackers) == 1
    out = reassemble(defrag, to_batch(tmp_path, frames[2:], name="b.pcap"))
    assert len(out) == 1 and ip_of(out[0]) == normalised_v4(pkt)


def test_ipv4_overlap_first_data_wins(tmp_path: Path) -> None:
    """Overlapping fragments: the data that came first is kept and the overlap counted."""
    head = IP(src="10.0.0.1", dst="10.0.0.2", id=9, proto=17, flags="MF", frag=0)
    udp = bytes(UDP(sport=1, dport=2, len=8 + 48)) + b"A" * 16  # payload bytes 0..24
    f1 = head / Raw(udp)
    f2 = IP(src="10.0.0.1", dst="10.0.0.2", id=9, proto=17, flags="MF", frag=2) / Raw(
        b"B" * 24)  # bytes 16..40: overlaps 16..24 of f1
    f3 = IP(src="10.0.0.1", dst="10.0.0.2", id=9, proto=17, flags=0, frag=4) / Raw(
        b"C" * 24)  # bytes 32..56: overlaps 32..40 of f2
    defrag = Defragmenter()
    out = reassemble(defrag, to_batch(tmp_path, [bytes(Ether(**MACS) / f)
                                                 for f in (f1, f2, f3)]))
    assert len(out) == 1
    payload = ip_of(out[0])[20:]
    assert payload[8:24] == b"A" * 16
    assert payload[24:40] == b"B" * 16  # f1's 16..24 kept over f2's, f2's 32..40 over f3's
    assert payload[40:56] == b"C" * 16
    assert defrag.counters["decoder.event.ipv4.frag_overlap"] == 2


def test_ipv6_in_and_out_of_order(tmp_path: Path) -> None:
    pkt = v6_datagram()
    frags = fragment6(pkt, 1280)
    assert len(frags) == 3
    for order in (list(range(3)), [2, 0, 1]):
        defrag = Defragmenter()
        batch = to_batch(tmp_path, [bytes(Ether(**MACS) / frags[i]) for i in order])
        out = reassemble(defrag, batch)
        assert len(out) == 1
        rebuilt = IPv6(ip_of(out[0]))
        assert rebuilt.nh == 17 and rebuilt[UDP].dport == 5000
        assert bytes(rebuilt[UDP].payload) == bytes(pkt[Raw])
        assert rebuilt.plen == 8 + 3000
        assert defrag.counters["defrag.ipv6.reassembled"] == 1


def test_ipv6_with_extension_header_before_fragment(tmp_path: Path) -> None:
    pkt = IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(
        id=5) / UDP(sport=7, dport=8) / Raw(b"q" * 2500)
    frags = fragment6(pkt, 1280)
    out = reassemble(Defragmenter(), to_batch(tmp_path, [bytes(Ether(**MACS) / f)
                                                         for f in frags]))
    assert len(out) == 1
    d = decode_batch(to_batch(tmp_path, out, name="r.pcap"))
    assert d.ok[0] and int(d.proto[0]) == 17 and int(d.plen[0]) == 2500


def test_incomplete_datagram_times_out_and_is_counted(tmp_path: Path) -> None:
    frames = [bytes(Ether(**MACS) / f) for f in fragment(v4_datagram(), fragsize=1000)]
    defrag = Defragmenter(DefragConfig(timeout_us=5_000_000))
    assert reassemble(defrag, to_batch(tmp_path, frames[:-1], name="a.pcap")) == []
    assert len(defrag.trackers) == 1
    defrag.expire(int((T0 + 4) * 1e6))
    assert len(defrag.trackers) == 1
    defrag.expire(int((T0 + 6) * 1e6))
    assert not defrag.trackers
    assert defrag.counters["defrag.ipv4.timeouts"] == 1
    # the last fragment, arriving after the timeout, completes nothing
    late = to_batch(tmp_path, frames[-1:], times=[T0 + 7], name="b.pcap")
    assert reassemble(defrag, late) == []


def test_pipeline_counts_timeout_without_further_fragments(tmp_path: Path) -> None:
    """In replay, a datagram that never completes is counted even when no fragment follows
    (other traffic moves the packet clock)."""
    frames = [bytes(Ether(**MACS) / f) for f in fragment(v4_datagram(), fragsize=1000)][:2]
    other = bytes(Ether(**MACS) / IP(src="10.0.0.5", dst="10.0.0.6") / UDP() / Raw(b"x"))
    frames += [other] * 3
    times = [T0, T0 + 0.1, T0 + 10, T0 + 40, T0 + 70]
    cfg = Config()
    pipe = Pipeline(cfg, None)
    for i in range(len(frames)):  # one batch per packet: the clock moves between batches
        pipe.process(to_batch(tmp_path, frames[i:i + 1], times=times[i:i + 1],
                              name=f"p{i}.pcap"))
    pipe.finish()
    c = pipe.all_counters()
    assert c["defrag.ipv4.fragments"] == 2
    assert c["defrag.ipv4.timeouts"] == 1
    assert c.get("defrag.ipv4.reassembled", 0) == 0


def test_tracker_count_is_bounded(tmp_path: Path) -> None:
    """A flood of first fragments that never complete cannot grow the table past its cap."""
    frames = []
    for ident in range(300):
        frames.append(bytes(Ether(**MACS) / fragment(v4_datagram(1200, ident), 800)[0]))
    defrag = Defragmenter(DefragConfig(max_trackers=100))
    assert reassemble(defrag, to_batch(tmp_path, frames)) == []
    assert len(defrag.trackers) == 100
    assert defrag.counters["defrag.max_frag_hits"] == 200


def test_fragments_per_datagram_are_bounded(tmp_path: Path) -> None:
    pkt = v4_datagram(6000)
    frags = fragment(pkt, fragsize=64)  # ~94 fragments
    defrag = Defragmenter(DefragConfig(max_fragments=20))
    out = reassemble(defrag, to_batch(tmp_path, [bytes(Ether(**MACS) / f) for f in frags]))
    assert out == []
    assert defrag.counters["decoder.event.ipv4.frag_ignored"] >= 1
    assert len(defrag.trackers) <= 1
    assert all(len(t.parts) <= 20 for t in defrag.trackers.values())


def test_held_bytes_are_bounded(tmp_path: Path) -> None:
    frames = [bytes(Ether(**MACS) / fragment(v4_datagram(3000, i), 1400)[0]) for i in range(50)]
    limits = DefragLimits()
    defrag = Defragmenter(DefragConfig(max_bytes=10_000, max_trackers=limits.max_trackers))
    reassemble(defrag, to_batch(tmp_path, frames))
    assert defrag.held_bytes <= 10_000
    assert sum(t.size for t in defrag.trackers.values()) == defrag.held_bytes
    assert defrag.counters["defrag.max_frag_hits"] > 0


def test_reassembled_flow_counts_in_pipeline(tmp_path: Path) -> None:
    """A fragmented ping and its fragmented reply form one ICMP flow, counted as Suricata
    counts it (the rebuilt datagram, not the fragments: see pcaps/formats frag4 agreement)."""
    req = IP(src="10.0.0.1", dst="10.0.0.2", id=1) / ICMP(type=8, id=3, seq=1) / Raw(b"p" * 2000)
    rep = IP(src="10.0.0.2", dst="10.0.0.1", id=2) / ICMP(type=0, id=3, seq=1) / Raw(b"p" * 2000)
    frames = [bytes(Ether(**MACS) / f) for f in fragment(req, 1000) + fragment(rep, 1000)]
    sink = ListSink()
    pipe = Pipeline(Config(), sink)  # type: ignore[arg-type]
    pipe.process(to_batch(tmp_path, frames))
    pipe.finish()
    flows = sink.events("flow")
    assert len(flows) == 1
    f = flows[0]
    assert f["proto"] == "ICMP" and f["src_ip"] == "10.0.0.1"
    assert f["flow"]["pkts_toserver"] == 1 and f["flow"]["pkts_toclient"] == 1
    assert f["flow"]["bytes_toserver"] == 14 + 20 + 8 + 2000
    assert np.isclose(pipe.all_counters()["defrag.ipv4.reassembled"], 2)
