#!/usr/bin/env python3
"""Compute per-file facts for the capture fixtures and write expected.json + README.md.

usage: DAMAGE_JSON=WORK/damage.json facts.py DIR FILE...   (run by make.sh after the captures)
Writes DIR/expected.json and regenerates the table between the TABLE markers of DIR/README.md.

Packet counts/timestamps come from this script's own minimal pcap/pcapng parser and are
cross-checked against capinfos; protocol/flow counts come from tshark."""

import collections
import gzip
import hashlib
import json
import os
import re
import struct
import subprocess
import sys

LINKTYPE_NAMES = {
    0: "NULL",
    1: "ETHERNET",
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    147: "USER0",
    276: "LINUX_SLL2",
}
NSEC_PCAP, USEC_PCAP = 0xA1B23C4D, 0xA1B2C3D4


def parse_pcap(b):
    e = next(
        (
            x
            for x in "<>"
            if len(b) >= 4 and struct.unpack_from(x + "I", b)[0] in (NSEC_PCAP, USEC_PCAP)
        ),
        None,
    )
    if e is None:
        return None
    nsec = struct.unpack_from(e + "I", b)[0] == NSEC_PCAP
    r = dict(
        format="pcap",
        byte_order="little" if e == "<" else "big",
        ts_precision="nsec" if nsec else "usec",
    )
    if len(b) < 24:
        r.update(error="short global header", packets=0)
        return r
    major, minor, _, _, snaplen, lt = struct.unpack_from(e + "HHiIII", b, 4)
    r.update(version=f"{major}.{minor}", snaplen=snaplen, linktypes=[lt])
    ts, off, err = [], 24, None
    while off < len(b):
        if off + 16 > len(b):
            err = f"truncated record header at {off}"
            break
        s, f, cl, ol = struct.unpack_from(e + "IIII", b, off)
        if cl > snaplen:
            err = f"caplen {cl} > snaplen {snaplen} at {off}"
            break
        if off + 16 + cl > len(b):
            err = f"truncated record data at {off}"
            break
        ts.append(s * 10**9 + (f if nsec else f * 1000))
        off += 16 + cl
    r["packets"] = len(ts)
    r["_ts_ns"] = ts
    if err:
        r["error"] = err
    return r


def parse_pcapng(b):
    if len(b) < 12 or b[:4] != b"\x0a\x0d\x0d\x0a":
        return None
    e = "<" if b[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    r = dict(format="pcapng", byte_order="little" if e == "<" else "big")
    ifaces, ts, off, err, sections = [], [], 0, None, 0
    while off < len(b):
        if off + 12 > len(b):
            err = f"truncated block header at {off}"
            break
        btype, blen = struct.unpack_from(e + "II", b, off)
        if blen < 12 or off + blen > len(b):
            err = f"truncated block at {off}"
            break
        body = b[off + 8 : off + blen - 4]
        if btype == 0x0A0D0D0A:
            sections += 1
            ifaces = []  # interface ids are per section
        elif btype == 1:
            lt, _, snap = struct.unpack_from(e + "HHI", body)
            tsres, o = 6, 8
            while o + 4 <= len(body):
                code, ln = struct.unpack_from(e + "HH", body, o)
                if code == 0:
                    break
                if code == 9:
                    tsres = body[o + 4]
                o += 4 + ((ln + 3) & ~3)
            units = 2 ** (tsres & 0x7F) if tsres & 0x80 else 10**tsres
            ifaces.append(dict(linktype=lt, snaplen=snap, if_tsresol=tsres, units_per_s=units))
        elif btype == 6:
            iid, hi, lo = struct.unpack_from(e + "III", body)
            t = (hi << 32) | lo
            ts.append(t * 10**9 // ifaces[iid]["units_per_s"])
        elif btype == 3:
            ts.append(None)
        off += blen
    r.update(
        sections=sections,
        interfaces=[{k: v for k, v in i.items() if k != "units_per_s"} for i in ifaces],
        linktypes=[i["linktype"] for i in ifaces],
        packets=len(ts),
        _ts_ns=[t for t in ts if t is not None],
    )
    r["ts_precision"] = sorted(
        {
            (
                "nsec"
                if i["if_tsresol"] == 9
                else "usec"
                if i["if_tsresol"] == 6
                else f"tsresol={i['if_tsresol']}"
            )
            for i in ifaces
        }
    )
    if err:
        r["error"] = err
    return r


def run(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.stdout


def capinfos_count(path):
    m = re.search(r"Number of packets:\s*(\d+)", run("capinfos", "-c", "-M", path))
    return int(m.group(1)) if m else None


FIELDS = [
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "icmp.type",
    "icmp.ident",
    "icmpv6.type",
    "icmpv6.echo.identifier",
    "tcp.stream",
    "udp.stream",
    "vlan.id",
    "ieee8021ad.id",
    "ip.flags.mf",
    "ip.frag_offset",
    "ip.opt.type",
    "ipv6.fraghdr.offset",
]


def tshark_counts(path):
    out = run(
        "tshark",
        "-n",
        "-r",
        path,
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
        *sum((["-e", f] for f in FIELDS), []),
    )
    c = collections.Counter()
    tcp, udp, echo4, echo6 = set(), set(), set(), set()
    vlan_ids, svlan_ids = set(), set()
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t"), strict=False))
        first = {k: (x.split("|")[0] if x else "") for k, x in v.items()}
        protos = v["frame.protocols"].split(":")
        c["frames"] += 1
        for key, name in (
            ("ip", "ipv4"),
            ("ipv6", "ipv6"),
            ("arp", "arp"),
            ("tcp", "tcp"),
            ("udp", "udp"),
            ("icmp", "icmp"),
            ("icmpv6", "icmpv6"),
            ("dns", "dns"),
            ("http", "http"),
            ("vlan", "vlan_tagged"),
            ("ipv6.hopopts", "ipv6_hopopts"),
            ("ipv6.dstopts", "ipv6_dstopts"),
            ("ipv6.routing", "ipv6_routing"),
            ("ipv6.fraghdr", "ipv6_fraghdr"),
        ):
            if key in protos:
                c[name + "_packets"] += 1
        if "ieee8021ad" in protos:
            c["ieee8021ad_packets"] += 1
        if protos.count("vlan") + protos.count("ieee8021ad") >= 2:
            c["double_tagged_packets"] += 1
        vlan_ids.update(int(x) for x in v["vlan.id"].split("|") if x)
        svlan_ids.update(int(x) for x in v["ieee8021ad.id"].split("|") if x)
        if first["tcp.stream"]:
            tcp.add(first["tcp.stream"])
        if first["udp.stream"]:
            udp.add(first["udp.stream"])
        if first["ip.flags.mf"] in ("1", "True") or first["ip.frag_offset"] not in ("", "0"):
            c["ipv4_fragment_packets"] += 1
        if first["ip.opt.type"]:
            c["ipv4_options_packets"] += 1
        if first["icmp.type"] in ("0", "8") and "icmp" in protos:
            echo4.add((frozenset((first["ip.src"], first["ip.dst"])), first["icmp.ident"]))
            c["icmp_echo_packets"] += 1
        if first["icmpv6.type"] in ("128", "129"):
            echo6.add(
                (frozenset((first["ipv6.src"], first["ipv6.dst"])), first["icmpv6.echo.identifier"])
            )
            c["icmpv6_echo_packets"] += 1
    conv = run("tshark", "-n", "-r", path, "-q", "-z", "conv,tcp", "-z", "conv,udp")
    sections = re.split(r"^(TCP|UDP) Conversations", conv, flags=re.M)
    conv_n = {
        sections[i]: sum(1 for ln in sections[i + 1].splitlines() if "<->" in ln)
        for i in range(1, len(sections) - 1, 2)
    }
    res = dict(sorted(c.items()))
    res.update(
        tcp_conversations=conv_n.get("TCP", 0),
        udp_conversations=conv_n.get("UDP", 0),
        icmp_echo_flows=len(echo4),
        icmpv6_echo_flows=len(echo6),
    )
    if len(tcp) != res["tcp_conversations"] or len(udp) != res["udp_conversations"]:
        res["note"] = f"tcp.stream/udp.stream distinct = {len(tcp)}/{len(udp)}"
    if vlan_ids:
        res["vlan_ids"] = sorted(vlan_ids)  # 802.1Q (TPID 0x8100) ids
    if svlan_ids:
        res["svlan_ids"] = sorted(svlan_ids)  # 802.1ad (TPID 0x88a8) ids
    return res


def us(ns):
    return None if ns is None else ns // 1000


def facts_for(path, damage):
    raw = open(path, "rb").read()
    name = os.path.basename(path)
    f = dict(size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    data, wrapper = raw, None
    if raw[:2] == b"\x1f\x8b":
        data, wrapper = gzip.decompress(raw), "gzip"
    p = parse_pcap(data) or parse_pcapng(data) or dict(format="unknown", packets=0, linktypes=[])
    if wrapper:
        p["compression"] = wrapper
    ts = p.pop("_ts_ns", [])
    p["first_ts_us"] = us(ts[0]) if ts else None
    p["last_ts_us"] = us(ts[-1]) if ts else None
    if p.get("ts_precision") == "nsec" or "nsec" in (p.get("ts_precision") or []):
        p["first_ts_ns"] = ts[0] if ts else None
        p["last_ts_ns"] = ts[-1] if ts else None
    p["linktype_names"] = [LINKTYPE_NAMES.get(x, str(x)) for x in p.get("linktypes", [])]
    f.update(p)
    if name in damage:
        f["damage"] = damage[name]
    if p["format"] != "unknown" and "error" not in p and name not in ("bad-linktype.pcap",):
        n = capinfos_count(path)
        if n != p["packets"]:
            raise SystemExit(f"{name}: capinfos says {n} packets, own parser {p['packets']}")
        if p["packets"]:
            f["counts"] = tshark_counts(path)
    return f


DESCR = {
    "eth-le-usec.pcap": (
        "tcpdump -i va -w (veth a<->b)",
        "Ethernet; ARP/ND, ICMP echo x2, ICMPv6 echo x2, HTTP over TCP v4+v6 "
        "(curl -> python http.server, full handshake+FIN), DNS over UDP v4+v6 (dig -> dnsmasq), one nc UDP datagram",
    ),
    "eth-nsec.pcap": (
        "tcpdump --time-stamp-precision=nano",
        "same traffic mix as eth-le-usec.pcap, nanosecond magic 0xa1b23c4d",
    ),
    "eth-be-usec.pcap": (
        "swap_endian.py eth-le-usec.pcap",
        "byte-swapped headers of eth-le-usec.pcap (big-endian, usec); packet bytes identical",
    ),
    "eth-be-nsec.pcap": (
        "swap_endian.py eth-nsec.pcap",
        "byte-swapped headers of eth-nsec.pcap (big-endian, nsec)",
    ),
    "vlan.pcap": (
        "tcpdump on veth whose frames are tagged by vlan_bpf.py (tcx eBPF vlan_push 0x8100:100)",
        "every frame 802.1Q VLAN 100: ARP, ND, ICMP, ICMPv6, HTTP v4+v6, DNS v4+v6, nc UDP",
    ),
    "qinq.pcap": (
        "same, vlan_bpf.py push 0x8100:300 then 0x88a8:200",
        "every frame 802.1ad outer VLAN 200 + 802.1Q inner VLAN 300; same traffic as vlan.pcap",
    ),
    "sll.pcap": (
        "tcpdump -i any -y LINUX_SLL in namespace a",
        "cooked v1 (16-byte header); lo (ping 127.0.0.1, ::1) + veth traffic mix",
    ),
    "sll2.pcap": (
        "tcpdump -i any -y LINUX_SLL2 in namespace a",
        "cooked v2 (20-byte header, ifindex); same mix as sll.pcap",
    ),
    "raw-ip.pcap": (
        "tcpdump -i tun0 on a TUN pair joined by tunpair.py",
        "raw IPv4/IPv6 (no L2): ICMP, ICMPv6, HTTP v4+v6, DNS v4+v6, nc UDP",
    ),
    "lo-eth.pcap": (
        "tcpdump -i lo in namespace a",
        "Linux loopback (Ethernet, zero MACs): ping 127.0.0.1 x2, ping ::1 x2, HTTP to 127.0.0.1, UDP v4+v6; source of the two BSD-loopback files",
    ),
    "null-loopback.pcap": (
        "convert_null.py --linktype null --af6 30 lo-eth.pcap",
        "LINKTYPE_NULL, 4-byte AF in file (host, little-endian) order: 2=IPv4, 30=IPv6 (Darwin)",
    ),
    "loop.pcap": (
        "convert_null.py --linktype loop --af6 24 lo-eth.pcap",
        "LINKTYPE_LOOP, 4-byte AF big-endian: 2=IPv4, 24=IPv6 (OpenBSD)",
    ),
    "multi-if.pcapng": (
        "mergecap -F pcapng eth-le-usec.pcap sll2.pcap raw-ip.pcap",
        "pcapng, 3 IDBs: Ethernet, LINUX_SLL2, RAW; packets interleaved by time",
    ),
    "single.pcapng": (
        "dumpcap -i va -w (native pcapng)",
        "pcapng from dumpcap (SHB/IDB options, ISB), Ethernet, traffic mix as eth-le-usec.pcap",
    ),
    "nsec.pcapng": ("editcap -F pcapng eth-nsec.pcap", "pcapng with if_tsresol=9 (nanoseconds)"),
    "eth-le-usec.pcap.gz": ("gzip -9 -n eth-le-usec.pcap", "gzip of eth-le-usec.pcap"),
    "frag4.pcap": (
        "ping -s 3000 -M want; one 4000-byte UDP datagram (python socket)",
        "IPv4 fragments (MTU 1500): 3-fragment echo request + 3-fragment reply, 3-fragment UDP",
    ),
    "frag6.pcap": (
        "ping -6 -s 3000; one 4000-byte UDP datagram over IPv6",
        "IPv6 fragment headers, echo request/reply and UDP, each 3 fragments",
    ),
    "ipv4-options.pcap": (
        "ping -R; ping -T tsonly; ping -T tsandaddr",
        "IPv4 header options: record route, timestamp (2 flavours)",
    ),
    "ipv6-exthdr.pcap": (
        "capture on server side, client link up (MLD), then exthdr_send.py (sticky IPV6_HOPOPTS/DSTOPTS/RTHDR socket options)",
        "MLDv2 with hop-by-hop router alert; UDP with DST(8), DST(16), HBH, SRv6 RH type 4 (segments_left=1: IPv6 dst is the active "
        "segment fd00:e::3, final fd00:e::2), chain HBH/RH/DST; 3000-byte UDP with DST + fragments; TCP (HTTP) with DST on client segments; "
        "ICMPv6 port unreachable quoting those packets (UDP sent to closed port 9)",
    ),
    "truncated.pcap": ("damage.py", "eth-le-usec.pcap cut in the middle of a record's data"),
    "truncated-header.pcap": ("damage.py", "eth-le-usec.pcap cut 8 bytes into a record header"),
    "garbage.bin": ("damage.py", "2048 random bytes, seed 20240601"),
    "bad-linktype.pcap": ("damage.py", "eth-le-usec.pcap with global linktype 147 (USER0)"),
    "zero-len-record.pcap": (
        "damage.py",
        "eth-le-usec.pcap with the middle record's caplen 0 (data removed, origlen kept)",
    ),
    "oversized-record.pcap": (
        "damage.py",
        "eth-le-usec.pcap with the middle record's caplen field = 300000",
    ),
    "empty.pcap": ("damage.py", "24-byte global header of eth-le-usec.pcap, no records"),
    "truncated.pcapng": (
        "damage.py",
        "multi-if.pcapng cut in the middle of an Enhanced Packet Block",
    ),
}


TABLE_START, TABLE_END = "<!-- TABLE START (generated by facts.py) -->", "<!-- TABLE END -->"


def fmt_counts(c):
    if not c:
        return ""
    keys = [
        "tcp_conversations",
        "udp_conversations",
        "icmp_echo_flows",
        "icmpv6_echo_flows",
        "vlan_ids",
        "svlan_ids",
        "vlan_tagged_packets",
        "ieee8021ad_packets",
        "double_tagged_packets",
        "ipv4_fragment_packets",
        "ipv6_fraghdr_packets",
        "ipv4_options_packets",
        "ipv6_hopopts_packets",
        "ipv6_dstopts_packets",
        "ipv6_routing_packets",
    ]
    return ", ".join(f"{k.replace('_packets', '')}={c[k]}" for k in keys if c.get(k))


def main():
    d, names = sys.argv[1], sys.argv[2:]
    damage = json.load(open(os.environ["DAMAGE_JSON"])) if os.environ.get("DAMAGE_JSON") else {}
    facts = {n: facts_for(os.path.join(d, n), damage) for n in names}
    doc = {
        "_about": "Generated by make.sh/facts.py. Timestamps: integer microseconds since the epoch (floor), "
        "of the first and last record in file order; *_ns variants for nanosecond files. "
        "linktypes: pcap header linktype, or one per pcapng IDB. counts: tshark 4.0 (see README).",
        "files": facts,
    }
    json.dump(doc, open(os.path.join(d, "expected.json"), "w"), indent=1, sort_keys=False)
    rows = [
        "| File | Made by | Format | Link type(s) | Pkts | First ts (µs) | Last ts (µs) | Bytes | Contents | Expected counts / damage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, f in facts.items():
        how, what = DESCR.get(n, ("", ""))
        fmt = f["format"] + (f"+{f['compression']}" if f.get("compression") else "")
        if f["format"] != "unknown":
            fmt += f", {f['byte_order'][0]}e"
            tp = f.get("ts_precision")
            fmt += f", {','.join(tp) if isinstance(tp, list) else tp}"
        lts = ", ".join(
            f"{x} ({y})" for x, y in zip(f.get("linktypes", []), f.get("linktype_names", []), strict=False)
        )
        extra = fmt_counts(f.get("counts"))
        if "damage" in f:
            dm = f["damage"]
            extra = f"damage_offset={dm['damage_offset']}, good_packets={dm['good_packets']}" + (
                f", cut_at={dm['cut_at']}" if "cut_at" in dm else ""
            )
        rows.append(
            f"| `{n}` | {how} | {fmt} | {lts} | {f['packets']} | {f['first_ts_us']} | {f['last_ts_us']} | "
            f"{f['size']} | {what} | {extra} |"
        )
    readme = os.path.join(d, "README.md")
    text = open(readme).read()
    a, b = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    open(readme, "w").write(text[:a] + "\n" + "\n".join(rows) + "\n" + text[b:])


if __name__ == "__main__":
    main()
