"""Build a random-source SYN flood capture with legitimate sessions interleaved.

The flood is what hping3 --flood --rand-source -S sends: one bare SYN per packet, each from
a new random IPv4 address and port, so every packet opens a new flow and tries to exhaust
the flow table. Legitimate sessions (a full TCP exchange: handshake, request, response,
FIN both ways; and a UDP DNS query and answer) are built with scapy and sit between flood
packets, each lasting a few milliseconds of packet time, as a real client's would. The
flood packets are stamped out with numpy from one scapy-built template (addresses, ports,
sequence numbers and both checksums filled in per packet), because scapy builds only a few
thousand packets a second and the bench needs a million.

    python3 bench/make_flood_pcap.py                        # -> bench/data/synflood.pcap
    python3 bench/make_flood_pcap.py --flood 20000 --legit 40 -o /tmp/flood.pcap

The legitimate sessions are written next to the capture as JSON (`<out>.legit.json`):
their 5-tuples and packet counts, so a test or bench can check each one was logged.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
from dataclasses import asdict, dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0_US = 1_700_000_000_000_000
SERVER = "10.98.0.1"
DNS_SERVER = "10.98.0.53"


@dataclass
class LegitFlow:
    """One legitimate session: what its EVE flow event must say."""

    proto: str
    src_ip: str
    src_port: int
    dest_ip: str
    dest_port: int
    pkts_toserver: int
    pkts_toclient: int


def _ones_sum(words: np.ndarray) -> np.ndarray:
    """One's complement sum of big-endian 16-bit words, row by row ([n, k] uint16)."""
    s = words.astype(np.uint64).sum(axis=1)
    while (s >> 16).any():
        s = (s & 0xFFFF) + (s >> 16)
    return (~s & 0xFFFF).astype(np.uint16)


def flood_frames(n: int, rng: np.random.Generator) -> np.ndarray:
    """n bare SYN frames from random sources to SERVER:80, as [n, 54] uint8."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    tmpl = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src="1.1.1.1", dst=SERVER, ttl=64, id=1)
                 / TCP(sport=1024, dport=80, flags="S", seq=1, window=512))
    frames = np.tile(np.frombuffer(tmpl, dtype=np.uint8), (n, 1))
    # sources outside 10.0.0.0/8, so none collides with a legitimate session
    src = rng.integers(0x0B000000, 0xDF000000, size=n, dtype=np.uint32)
    frames[:, 26:30] = src.astype(">u4").view(np.uint8).reshape(n, 4)
    frames[:, 18:20] = rng.integers(0, 65536, size=n, dtype=np.uint16).astype(
        ">u2").view(np.uint8).reshape(n, 2)  # IP id
    frames[:, 34:36] = rng.integers(1024, 65536, size=n, dtype=np.uint16).astype(
        ">u2").view(np.uint8).reshape(n, 2)  # source port
    frames[:, 38:42] = rng.integers(0, 2**32, size=n, dtype=np.uint32).astype(
        ">u4").view(np.uint8).reshape(n, 4)  # sequence number
    frames[:, 24:26] = 0
    ip_words = frames[:, 14:34].copy().view(">u2")
    frames[:, 24:26] = _ones_sum(ip_words).astype(">u2").view(np.uint8).reshape(n, 2)
    frames[:, 50:52] = 0
    pseudo = np.zeros((n, 12), dtype=np.uint8)
    pseudo[:, 0:8] = frames[:, 26:34]
    pseudo[:, 9] = 6
    pseudo[:, 11] = 20
    tcp_words = np.concatenate([pseudo, frames[:, 34:54]], axis=1).view(">u2")
    frames[:, 50:52] = _ones_sum(tcp_words).astype(">u2").view(np.uint8).reshape(n, 2)
    return frames


def legit_sessions(count: int) -> list[tuple[LegitFlow, list[bytes]]]:
    """`count` sessions, alternating TCP request/response and UDP DNS (long names)."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    eth_c = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
    eth_s = Ether(src="02:00:00:00:00:0b", dst="02:00:00:00:00:0a")
    out = []
    for i in range(count):
        cli = f"10.99.{i // 250}.{i % 250 + 1}"
        port = 40000 + i
        if i % 2 == 0:
            c, s = IP(src=cli, dst=SERVER), IP(src=SERVER, dst=cli)
            a, b = 1000 + i, 5000 + i
            pkts = [
                (0, eth_c / c / TCP(sport=port, dport=80, flags="S", seq=a)),
                (1, eth_s / s / TCP(sport=80, dport=port, flags="SA", seq=b, ack=a + 1)),
                (0, eth_c / c / TCP(sport=port, dport=80, flags="A", seq=a + 1, ack=b + 1)),
                (0, eth_c / c / TCP(sport=port, dport=80, flags="PA", seq=a + 1, ack=b + 1)
                 / (b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)),
                (1, eth_s / s / TCP(sport=80, dport=port, flags="PA", seq=b + 1, ack=a + 31)
                 / (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")),
                (0, eth_c / c / TCP(sport=port, dport=80, flags="FA", seq=a + 31, ack=b + 41)),
                (1, eth_s / s / TCP(sport=80, dport=port, flags="FA", seq=b + 41, ack=a + 32)),
                (0, eth_c / c / TCP(sport=port, dport=80, flags="A", seq=a + 32, ack=b + 42)),
            ]
            flow = LegitFlow("TCP", cli, port, SERVER, 80, 5, 3)
        else:
            # a query name of 4 x 63-byte labels (253 characters, the most DNS allows)
            name = ".".join([f"{i:05d}" + "a" * 58] * 4)
            q = DNS(id=i, rd=1, qd=DNSQR(qname=name))
            c, s = IP(src=cli, dst=DNS_SERVER), IP(src=DNS_SERVER, dst=cli)
            pkts = [
                (0, eth_c / c / UDP(sport=port, dport=53) / q),
                (1, eth_s / s / UDP(sport=53, dport=port)
                 / DNS(id=i, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.1.2.3"))),
            ]
            flow = LegitFlow("UDP", cli, port, DNS_SERVER, 53, 1, 1)
        out.append((flow, [bytes(p) for _, p in pkts]))
    return out


def write_pcap(path: str, flood: np.ndarray, sessions: list[tuple[LegitFlow, list[bytes]]],
               rate_pps: float) -> int:
    """Flood frames at `rate_pps` (packet time), sessions spread evenly between them."""
    n = len(flood)
    step_us = 1e6 / rate_pps
    ts = (T0_US + np.arange(n) * step_us).astype(np.int64)
    rec = np.zeros((n, 16), dtype=np.uint8)
    hdr = np.stack([ts // 1_000_000, ts % 1_000_000, np.full(n, flood.shape[1]),
                    np.full(n, flood.shape[1])], axis=1).astype("<u4")
    rec[:] = hdr.view(np.uint8).reshape(n, 16)
    records = np.concatenate([rec, flood], axis=1)
    # each session gets a slot; its packets go 16 flood packets apart from there on
    slots = np.linspace(0, max(n - 1, 0), num=len(sessions) + 2)[1:-1].astype(np.int64) \
        if len(sessions) else np.zeros(0, dtype=np.int64)
    inserts: list[tuple[int, bytes]] = []
    for (_, frames), at in zip(sessions, slots.tolist(), strict=True):
        for k, frame in enumerate(frames):
            pos = min(n - 1, at + 16 * k) if n else 0
            t = int(ts[pos]) if n else T0_US + k
            inserts.append((pos, struct.pack("<IIII", t // 1_000_000, t % 1_000_000,
                                             len(frame), len(frame)) + frame))
    inserts.sort(key=lambda x: x[0])
    total = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        done = 0
        for pos, blob in inserts:
            f.write(records[done:pos + 1].tobytes())
            total += pos + 1 - done
            done = pos + 1
            f.write(blob)
            total += 1
        f.write(records[done:].tobytes())
        total += n - done
    return total


def build(path: str, n_flood: int, n_legit: int, rate_pps: float = 100_000.0,
          seed: int = 7) -> list[LegitFlow]:
    """Write the capture and its `.legit.json`; return the legitimate sessions."""
    rng = np.random.default_rng(seed)
    sessions = legit_sessions(n_legit)
    write_pcap(path, flood_frames(n_flood, rng), sessions, rate_pps)
    flows = [f for f, _ in sessions]
    with open(path + ".legit.json", "w") as f:
        json.dump([asdict(x) for x in flows], f)
    return flows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default=os.path.join(ROOT, "bench", "data", "synflood.pcap"))
    ap.add_argument("--flood", type=int, default=1_000_000, help="flood packets")
    ap.add_argument("--legit", type=int, default=400, help="legitimate sessions")
    ap.add_argument("--rate", type=float, default=100_000.0,
                    help="flood packets per second of packet time")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    flows = build(a.out, a.flood, a.legit, a.rate, a.seed)
    print(f"{a.out}: {a.flood} flood packets, {len(flows)} legitimate sessions")


if __name__ == "__main__":
    main()
