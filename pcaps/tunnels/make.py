"""Build pcaps/tunnels/tunnels.pcap: packets in each tunnel and encapsulation Suricata decodes.

Run: .venv/bin/python pcaps/tunnels/make.py  (scapy builds the frames; deterministic)
Then pcaps/tunnels/make-suricata-reference.sh records real Suricata's flow events for it.
"""

from pathlib import Path

from scapy.all import GRE, ICMP, IP, PPP, TCP, UDP, Dot1Q, Ether, IPv6, PPPoE, Raw, wrpcap
from scapy.contrib.geneve import GENEVE
from scapy.contrib.mpls import MPLS
from scapy.layers.vxlan import VXLAN

OUT = Path(__file__).with_name("tunnels.pcap")
E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
OUTER_A, OUTER_B = "198.51.100.1", "198.51.100.2"


def pkts():
    t = 1700000000.0
    frames = []

    def add(frame):
        nonlocal t
        frame.time = t
        t += 0.01
        frames.append(frame)

    in_a, in_b = "10.1.0.1", "10.1.0.2"
    syn = IP(src=in_a, dst=in_b) / TCP(sport=40000, dport=80, flags="S", seq=1)
    synack = IP(src=in_b, dst=in_a) / TCP(sport=80, dport=40000, flags="SA", seq=7, ack=2)
    ping = IP(src=in_a, dst=in_b) / ICMP(id=7, seq=1) / Raw(b"x" * 32)
    pong = IP(src=in_b, dst=in_a) / ICMP(type=0, id=7, seq=1) / Raw(b"x" * 32)
    # VXLAN: inner Ethernet, UDP 4789
    for inner in (syn, synack):
        fwd = inner[IP].src == in_a
        s, d = (OUTER_A, OUTER_B) if fwd else (OUTER_B, OUTER_A)
        add(Ether(**E) / IP(src=s, dst=d) / UDP(sport=50000 if fwd else 50001, dport=4789)
            / VXLAN(vni=42) / Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02") / inner)
    # GRE carrying IPv4, with a key (optional header field)
    for inner in (ping, pong):
        fwd = inner[IP].src == in_a
        s, d = (OUTER_A, OUTER_B) if fwd else (OUTER_B, OUTER_A)
        add(Ether(**E) / IP(src=s, dst=d) / GRE(key_present=1, key=5) / inner)
    # GRE transparent Ethernet bridging (0x6558): inner frame keeps its Ethernet header
    add(Ether(**E) / IP(src=OUTER_A, dst=OUTER_B) / GRE(proto=0x6558)
        / Ether(src="02:00:00:00:02:01", dst="02:00:00:00:02:02")
        / IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=1234, dport=53) / Raw(b"q" * 20))
    # IPv4 in IPv4 and IPv6 in IPv4
    add(Ether(**E) / IP(src=OUTER_A, dst=OUTER_B, proto=4)
        / IP(src="10.3.0.1", dst="10.3.0.2") / UDP(sport=5000, dport=5001) / Raw(b"a" * 10))
    add(Ether(**E) / IP(src=OUTER_A, dst=OUTER_B, proto=41)
        / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5000, dport=5001)
        / Raw(b"b" * 10))
    # Geneve carrying Ethernet, and Teredo (IPv6 in UDP 3544)
    add(Ether(**E) / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=50002, dport=6081)
        / GENEVE(vni=9, proto=0x6558) / Ether(src="02:00:00:00:03:01", dst="02:00:00:00:03:02")
        / IP(src="10.4.0.1", dst="10.4.0.2") / TCP(sport=1, dport=2, flags="S"))
    add(Ether(**E) / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=3544, dport=50003)
        / IPv6(src="2001::1", dst="2001:db8::9") / UDP(sport=7, dport=8) / Raw(b"t" * 8))
    # the same inner tuple as an outer flow: must stay a separate flow
    add(Ether(**E) / IP(src=in_a, dst=in_b) / TCP(sport=40000, dport=80, flags="S", seq=1))
    # tunnel inside a VLAN: the inner packet inherits the VLAN id
    add(Ether(**E) / Dot1Q(vlan=100) / IP(src=OUTER_A, dst=OUTER_B) / GRE()
        / IP(src="10.5.0.1", dst="10.5.0.2") / ICMP(id=9, seq=1))
    # IPv6 outer: IPv4-in-IPv6, IPv6-in-IPv6, GRE over IPv6; GRE carrying IPv6; Geneve with IPv4
    v6a, v6b = "2001:db8:ff::1", "2001:db8:ff::2"
    add(Ether(**E) / IPv6(src=v6a, dst=v6b, nh=4) / IP(src="10.6.0.1", dst="10.6.0.2")
        / UDP(sport=1, dport=2) / Raw(b"c" * 4))
    add(Ether(**E) / IPv6(src=v6a, dst=v6b, nh=41) / IPv6(src="2001:db8:1::1", dst="2001:db8:1::2")
        / UDP(sport=3, dport=4) / Raw(b"d" * 4))
    add(Ether(**E) / IPv6(src=v6a, dst=v6b) / GRE() / IP(src="10.7.0.1", dst="10.7.0.2")
        / UDP(sport=5, dport=6))
    add(Ether(**E) / IP(src=OUTER_A, dst=OUTER_B) / GRE(proto=0x86DD)
        / IPv6(src="2001:db8:2::1", dst="2001:db8:2::2") / UDP(sport=7, dport=8))
    add(Ether(**E) / IP(src=OUTER_A, dst=OUTER_B) / UDP(sport=12, dport=6081)
        / GENEVE(proto=0x0800) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=13, dport=14))
    # PPPoE sessions and MPLS label stacks (decoded inline: same packet, no pseudo packet)
    back = dict(src=E["dst"], dst=E["src"])
    add(Ether(**E) / PPPoE(sessionid=1) / PPP(proto=0x0021) / IP(src="10.10.0.1", dst="10.10.0.2")
        / TCP(sport=1, dport=80, flags="S"))
    add(Ether(**back) / PPPoE(sessionid=1) / PPP(proto=0x0021)
        / IP(src="10.10.0.2", dst="10.10.0.1") / TCP(sport=80, dport=1, flags="SA"))
    add(Ether(**E) / PPPoE(sessionid=1) / PPP(proto=0x0057)
        / IPv6(src="2001:db8:3::1", dst="2001:db8:3::2") / UDP(sport=5, dport=6))
    add(Ether(**E) / MPLS(label=100, s=0) / MPLS(label=200, s=1)
        / IP(src="10.11.0.1", dst="10.11.0.2") / UDP(sport=7, dport=8) / Raw(b"x" * 5))
    add(Ether(**E) / MPLS(label=2, s=1) / IPv6(src="2001:db8:4::5", dst="2001:db8:4::6")
        / UDP(sport=9, dport=10))
    add(Ether(**E) / Dot1Q(vlan=7) / MPLS(label=300, s=1) / IP(src="10.12.0.1", dst="10.12.0.2")
        / ICMP())
    return frames


if __name__ == "__main__":
    wrpcap(str(OUT), pkts())
    print(f"wrote {OUT}")
