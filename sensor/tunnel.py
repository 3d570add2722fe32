"""Tunnel decapsulation: GRE, IP-in-IP, VXLAN, Geneve and Teredo, as Suricata decodes them.

Suricata turns the inner packet of a tunnel into a pseudo packet of its own:
- it is tracked in its own flow: the flow key holds the tunnel depth, so an inner flow never
  merges with an outer one (Suricata 7.0.10 does not copy the outer VLAN ids to it);
- it has no pcap_cnt, and its EVE `pkt_src` names the decoder ("vxlan encapsulation", ...);
- its bytes start at the inner IP header, or at the inner Ethernet header for GRE
  transparent bridging and Geneve carrying Ethernet: that is what the inner flow counts.
Checked against Suricata 7.0.10 on pcaps/tunnels/tunnels.pcap (tests/test_tunnel.py). One
known difference: VXLAN carrying a VLAN-tagged frame, where Suricata's inner packet starts at
the tag and ours at the inner Ethernet header (14 more bytes per packet in that inner flow).

Tunnelled packets are rare on most links, so the outer packets are found with numpy and the
inner ones are cut out in Python; GRE's variable header (checksum, key, sequence, routing,
PPTP's version 1) is parsed with dpkt, the fast path's fallback for what it does not read.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .capture import BATCH_PAD, LINKTYPE_ETHERNET, LINKTYPE_RAW, PacketBatch
from .decode import PROTO_UDP, TUNNEL_IP_PROTOS, DecodedBatch
from .output.eve import PORT_PROTOS, ip_str, proto_name

# Suricata's default ports (suricata.yaml decoder.vxlan/geneve/teredo)
VXLAN_PORT = 4789
GENEVE_PORT = 6081
TEREDO_PORT = 3544
PROTO_IPIP, PROTO_IPV6, PROTO_GRE = TUNNEL_IP_PROTOS
# Suricata's decoder.max-layers default bounds nesting; deeper tunnels are counted, not opened
MAX_DEPTH = 16

ETH_IPV4, ETH_IPV6, ETH_BRIDGE = 0x0800, 0x86DD, 0x6558


@dataclass
class TunnelParents:
    """Per inner packet: its outer packet, as the EVE `tunnel` object of alerts shows it."""

    outer: list[dict]


class Decapsulator:
    """Finds tunnel packets in a decoded batch and returns their inner packets as batches."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def decapsulate(self, batch: PacketBatch, d: DecodedBatch) -> list[PacketBatch]:
        """Inner packets of `batch`, one batch per decoder (their pkt_src differs)."""
        if batch.tunnel_depth >= MAX_DEPTH:
            return []
        ip = (d.ipver > 0) & ~d.fragment
        by_ip = ip & np.isin(d.proto, TUNNEL_IP_PROTOS)
        udp = d.ok & (d.proto == PROTO_UDP)
        by_udp = udp & (np.isin(d.dport, (VXLAN_PORT, GENEVE_PORT))
                        | (d.sport == TEREDO_PORT) | (d.dport == TEREDO_PORT))
        cand = np.flatnonzero(by_ip | by_udp)
        if not len(cand):
            return []
        groups: dict[str, list[tuple[bytes, int, int]]] = {}
        data = batch.data
        for i in cand.tolist():
            if d.proto[i] == PROTO_UDP:
                start = int(d.poff[i])
                body = data[start:start + int(d.plen[i])].tobytes()
                dport = int(d.dport[i])
                if dport == VXLAN_PORT:
                    got = _vxlan(body)
                elif dport == GENEVE_PORT:
                    got = _geneve(body)
                else:
                    got = _teredo(body)
                src = {VXLAN_PORT: "vxlan", GENEVE_PORT: "geneve"}.get(dport, "teredo")
            else:
                start = int(d.l4[i])
                end = int(d.l3[i]) + int(d.iplen[i])
                body = data[start:end].tobytes()
                proto = int(d.proto[i])
                if proto == PROTO_GRE:
                    got, src = _gre(body), "gre"
                elif d.ipver[i] == 4 and proto == PROTO_IPIP:
                    continue  # Suricata 7 opens IPv4-in-IPv4 only when IPv6 carries it
                else:
                    got = (body, LINKTYPE_RAW) if body else None
                    src = "ipv4" if d.ipver[i] == 4 else "ipv6"
                    if d.ipver[i] == 6:
                        inner = "ipv4_in_ipv6" if proto == PROTO_IPIP else "ipv6_in_ipv6"
                        self.counters[f"decoder.{inner}"] += 1
            if got is None:
                continue
            if src in ("gre", "vxlan", "geneve", "teredo"):
                self.counters[f"decoder.{src}"] += 1
            frame, linktype = got
            groups.setdefault(src, []).append((frame, linktype, i))
        return [_inner_batch(batch, d, f"{src} encapsulation", frames)
                for src, frames in groups.items()]


def _inner_batch(batch: PacketBatch, d: DecodedBatch, pkt_src: str,
                 frames: list[tuple[bytes, int, int]]) -> PacketBatch:
    rows = np.asarray([i for _, _, i in frames], dtype=np.int64)
    sizes = np.asarray([len(f) for f, _, _ in frames], dtype=np.int32)
    offsets = np.concatenate(([0], np.cumsum(sizes[:-1], dtype=np.int64)))
    buf = b"".join(f for f, _, _ in frames) + bytes(BATCH_PAD)
    depth = batch.tunnel_depth + 1
    outer = [_describe(batch, d, int(i), depth) for i in rows.tolist()]
    return PacketBatch(
        data=np.frombuffer(buf, dtype=np.uint8), offset=offsets, caplen=sizes,
        wirelen=sizes.copy(), ts_us=batch.ts_us[rows],
        linktype=np.asarray([lt for _, lt, _ in frames], dtype=np.uint16),
        first_cnt=0, iface=None if batch.iface is None else batch.iface[rows],
        pkt_src=pkt_src, tunnel_depth=depth,
        parents=TunnelParents(outer),
    )


def _describe(batch: PacketBatch, d: DecodedBatch, i: int, depth: int) -> dict:
    """The EVE `tunnel` object Suricata writes on alerts for an inner packet."""
    ver = int(d.ipver[i])
    out: dict = {"src_ip": ip_str(ver, int(d.src_hi[i]), int(d.src_lo[i]))}
    proto = int(d.proto[i])
    has_ports = proto in PORT_PROTOS
    if has_ports:
        out["src_port"] = int(d.sport[i])
    out["dest_ip"] = ip_str(ver, int(d.dst_hi[i]), int(d.dst_lo[i]))
    if has_ports:
        out["dest_port"] = int(d.dport[i])
    out["proto"] = proto_name(proto)
    out["depth"] = depth
    if batch.first_cnt:
        out["pcap_cnt"] = int(batch.cnt_at(i))
    out["pkt_src"] = batch.pkt_src
    return out


def _inner_ethernet(body: bytes) -> tuple[bytes, int] | None:
    """VXLAN/Geneve carry Ethernet; Suricata's inner packet starts after its header."""
    if len(body) < 14:
        return None
    etype = struct.unpack_from("!H", body, 12)[0]
    if etype in (ETH_IPV4, ETH_IPV6):
        return body[14:], LINKTYPE_RAW
    if etype in (0x8100, 0x88A8, 0x9100):
        return body, LINKTYPE_ETHERNET
    return None  # ARP and others: Suricata opens no inner packet


def _vxlan(body: bytes) -> tuple[bytes, int] | None:
    if len(body) < 8 or not body[0] & 0x08:
        return None
    return _inner_ethernet(body[8:])


def _geneve(body: bytes) -> tuple[bytes, int] | None:
    if len(body) < 8 or body[0] >> 6 != 0:
        return None
    hlen = 8 + (body[0] & 0x3F) * 4
    ptype = struct.unpack_from("!H", body, 2)[0]
    inner = body[hlen:]
    if ptype == ETH_BRIDGE and len(inner) >= 14:
        return inner, LINKTYPE_ETHERNET  # unlike VXLAN, Suricata keeps this Ethernet header
    if ptype in (ETH_IPV4, ETH_IPV6) and inner:
        return inner, LINKTYPE_RAW
    return None


def _teredo(body: bytes) -> tuple[bytes, int] | None:
    """IPv6 in UDP, optionally after an authentication and/or an origin indication."""
    if len(body) >= 4 and body[0] == 0 and body[1] == 1:  # authentication
        skip = 4 + body[2] + body[3] + 8 + 1
        body = body[skip:]
    if len(body) >= 8 and body[0] == 0 and body[1] == 0:  # origin indication
        body = body[8:]
    if len(body) < 40 or body[0] >> 4 != 6:
        return None
    # Suricata checks that the payload length fits before calling it IPv6
    if struct.unpack_from("!H", body, 4)[0] + 40 != len(body):
        return None
    return body, LINKTYPE_RAW


def _gre(body: bytes) -> tuple[bytes, int] | None:
    import dpkt  # only when GRE shows up: the import costs more than most replays of it

    try:
        gre = dpkt.gre.GRE(body)
    except (dpkt.UnpackError, struct.error, IndexError):
        return None
    inner = gre.data
    hlen = len(gre) - len(inner)
    payload = body[hlen:]
    if gre.v != 0 or not payload:
        return None
    if gre.p in (ETH_IPV4, ETH_IPV6):
        return payload, LINKTYPE_RAW
    if gre.p == ETH_BRIDGE:
        return payload, LINKTYPE_ETHERNET
    return None
