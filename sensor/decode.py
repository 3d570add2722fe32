"""Frames to header arrays: link layer, IPv4/IPv6, TCP/UDP/ICMP, for a whole batch at once.

Every field is read with numpy fancy indexing over all frames of the batch, then masked by
what the frame really holds. Frames the fast path cannot take (IPv4/IPv6 fragments) are
handed to sensor.defrag, which reassembles them in Python; they are rare on real links.

Validity follows Suricata's decoder: an IP packet whose length field says more than was
captured is invalid (Suricata: ipv4.trunc_pkt) and opens no flow; so is a TCP header whose
data offset points past the packet. Each reason has its own counter, named as Suricata's
stats (decoder.event.*), and all of them add to decoder.invalid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_DLT12,
    LINKTYPE_RAW_DLT14,
    PacketBatch,
)

SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_RAW_DLT12, LINKTYPE_RAW_DLT14,
    LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2,
}
RAW_LINKTYPES = (LINKTYPE_RAW, LINKTYPE_RAW_DLT12, LINKTYPE_RAW_DLT14, LINKTYPE_IPV4,
                 LINKTYPE_IPV6)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
ETH_PPPOE_SESSION = 0x8864
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
ETH_MPLS = (0x8847, 0x8848)
MAX_MPLS_LABELS = 8
MAX_VLAN_LAYERS = 2  # Suricata's flow key holds two VLAN ids

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_ESP = 50
PROTO_SCTP = 132
TUNNEL_IP_PROTOS = (4, 41, 47)  # IPv4-in-IP, IPv6-in-IP, GRE: see sensor.tunnel
FLOW_PROTOS = (PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6, PROTO_ESP, PROTO_SCTP)
# IPv6 extension headers walked to reach the upper-layer protocol
IPV6_EXT_GENERIC = (0, 43, 60, 135, 139, 140, 253, 254)
IPV6_EXT_FRAGMENT = 44
IPV6_EXT_AH = 51
MAX_IPV6_EXT = 8

# Echo-like ICMP types and their counterparts: Suricata keys ICMP flows on
# (type, code) of the packet and of the expected answer, so a request and its reply
# fall into one flow.
ICMP4_COUNTERPART = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17, 10: 9, 9: 10}
ICMP6_COUNTERPART = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135,
                     130: 131, 131: 130, 139: 140, 140: 139, 144: 145, 145: 144,
                     146: 147, 147: 146}
ICMP4_ECHO_TYPES = (0, 8, 13, 14, 15, 16, 17, 18)
ICMP6_ECHO_TYPES = (128, 129)


def counterpart_table(mapping: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A type -> counterpart type mapping as lookup arrays (value, has one) over 0..255."""
    table = np.zeros(256, dtype=np.uint16)
    has = np.zeros(256, dtype=bool)
    for k, v in mapping.items():
        table[k] = v
        has[k] = True
    return table, has


ICMP4_CP, ICMP4_HAS_CP = counterpart_table(ICMP4_COUNTERPART)
ICMP6_CP, ICMP6_HAS_CP = counterpart_table(ICMP6_COUNTERPART)


@dataclass
class DecodedBatch:
    """Header fields of every frame of a batch, one array per field.

    `ok` marks frames decoded far enough to belong to a flow. Addresses are 128-bit values
    split in two uint64 halves; IPv4 addresses sit in the low half with the high half 0.
    `sport`/`dport` are the flow key ports: TCP/UDP ports, and for ICMP the (type, code)
    of the packet and of its expected answer, as in Suricata. Offsets index batch.data.
    """

    n: int
    ok: np.ndarray
    ipver: np.ndarray
    l3: np.ndarray
    iplen: np.ndarray
    proto: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    l4: np.ndarray
    poff: np.ndarray
    plen: np.ndarray
    tcp_flags: np.ndarray
    tcp_seq: np.ndarray
    tcp_ack: np.ndarray
    tcp_win: np.ndarray
    icmp_type: np.ndarray
    icmp_code: np.ndarray
    icmp_id: np.ndarray
    icmp_seq: np.ndarray
    ttl: np.ndarray
    ip_id: np.ndarray
    tos: np.ndarray
    frag_bits: np.ndarray  # IPv4 flag bits: 0x4 reserved, 0x2 don't fragment, 0x1 more
    frag_off: np.ndarray
    vlan0: np.ndarray
    vlan1: np.ndarray
    fragment: np.ndarray  # frames holding an IP fragment: for sensor.defrag
    counters: dict[str, int] = field(default_factory=dict)
    depth: int = 0  # tunnel depth of the batch: part of the flow key, as in Suricata
    # ICMPv4 errors (None when the batch has none): Suricata opens no flow for them, and
    # counts a destination-unreachable that quotes a TCP/UDP header in the quoted flow.
    # icmp_err marks every ICMPv4 error; icmp_emb holds the quoted tuple (keys ok, src,
    # dst, sport, dport, proto; full-length arrays, meaningful where "ok")
    icmp_err: np.ndarray | None = None
    icmp_emb: dict[str, np.ndarray] | None = None


class _Reader:
    """Bounded big-endian reads at many positions of one buffer."""

    def __init__(self, data: np.ndarray):
        self.d = data
        self.last = len(data) - 8

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.d[np.minimum(pos, self.last)].astype(np.uint32)

    def u16(self, pos: np.ndarray) -> np.ndarray:
        p = np.minimum(pos, self.last)
        return (self.d[p].astype(np.uint32) << 8) | self.d[p + 1]

    def u32(self, pos: np.ndarray) -> np.ndarray:
        p = np.minimum(pos, self.last)
        d = self.d
        return (
            (d[p].astype(np.uint32) << 24) | (d[p + 1].astype(np.uint32) << 16)
            | (d[p + 2].astype(np.uint32) << 8) | d[p + 3]
        )

    def u64(self, pos: np.ndarray) -> np.ndarray:
        hi = self.u32(pos).astype(np.uint64)
        lo = self.u32(pos + 4).astype(np.uint64)
        return (hi << np.uint64(32)) | lo


def _count(counters: dict[str, int], name: str, mask: np.ndarray) -> None:
    c = int(np.count_nonzero(mask))
    if c:
        counters[name] = counters.get(name, 0) + c


def _invalid(counters: dict[str, int], name: str, mask: np.ndarray) -> None:
    c = int(np.count_nonzero(mask))
    if c:
        counters[name] = counters.get(name, 0) + c
        counters["decoder.invalid"] = counters.get("decoder.invalid", 0) + c


def decode_batch(batch: PacketBatch) -> DecodedBatch:
    """Decode link, network and transport headers of all frames of a batch."""
    n = len(batch)
    r = _Reader(batch.data)
    counters: dict[str, int] = {}
    off = batch.offset.astype(np.int64)
    cap = batch.caplen.astype(np.int64)
    end = off + cap
    lt = batch.linktype
    counters["decoder.pkts"] = n
    counters["decoder.bytes"] = int(cap.sum())

    # ---- link layer --------------------------------------------------------------------
    l3 = off.copy()
    etype = np.zeros(n, dtype=np.uint32)
    link_ok = np.zeros(n, dtype=bool)
    vlan0 = np.zeros(n, dtype=np.uint16)
    vlan1 = np.zeros(n, dtype=np.uint16)

    eth = lt == LINKTYPE_ETHERNET
    if eth.any():
        _count(counters, "decoder.ethernet", eth)
        short = eth & (cap < 14)
        _invalid(counters, "decoder.event.ethernet.pkt_too_small", short)
        m = eth & ~short
        etype[m] = r.u16(off[m] + 12)
        l3[m] = off[m] + 14
        link_ok |= m
    sll = lt == LINKTYPE_LINUX_SLL
    if sll.any():
        _count(counters, "decoder.sll", sll)
        short = sll & (cap < 16)
        _invalid(counters, "decoder.event.sll.pkt_too_small", short)
        m = sll & ~short
        etype[m] = r.u16(off[m] + 14)
        l3[m] = off[m] + 16
        link_ok |= m
    sll2 = lt == LINKTYPE_LINUX_SLL2
    if sll2.any():
        _count(counters, "decoder.sll", sll2)
        short = sll2 & (cap < 20)
        _invalid(counters, "decoder.event.sll.pkt_too_small", short)
        m = sll2 & ~short
        etype[m] = r.u16(off[m])
        l3[m] = off[m] + 20
        link_ok |= m
    raw = np.isin(lt, RAW_LINKTYPES)
    if raw.any():
        _count(counters, "decoder.raw", raw)
        short = raw & (cap < 1)
        _invalid(counters, "decoder.event.ipraw.invalid_ip_version", short)
        m = raw & ~short
        ver = r.u8(off[m]) >> 4
        etype[m] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
        link_ok |= m
    null = (lt == LINKTYPE_NULL) | (lt == LINKTYPE_LOOP)
    if null.any():
        _count(counters, "decoder.null", null)
        short = null & (cap < 4)
        _invalid(counters, "decoder.event.ltnull.pkt_too_small", short)
        m = null & ~short
        # DLT_NULL stores the family in the capturing host's byte order; LOOP in network order
        b0 = r.u8(off[m])
        b3 = r.u8(off[m] + 3)
        fam = np.where((lt[m] == LINKTYPE_NULL) & (b0 != 0), b0, b3)
        etype[m] = np.where(fam == 2, ETH_IPV4,
                            np.where(np.isin(fam, (10, 24, 28, 30)), ETH_IPV6, 0))
        l3[m] = off[m] + 4
        link_ok |= m
    unsupported = ~np.isin(lt, list(SUPPORTED_LINKTYPES))
    _invalid(counters, "decoder.invalid_linktype", unsupported)

    # 802.1Q / 802.1ad tags (Ethernet and cooked captures)
    for layer in range(MAX_VLAN_LAYERS + 1):
        tagged = link_ok & np.isin(etype, VLAN_TPIDS)
        if not tagged.any():
            break
        if layer == MAX_VLAN_LAYERS:
            _invalid(counters, "decoder.event.vlan.too_many_layers", tagged)
            link_ok &= ~tagged
            break
        short = tagged & (l3 + 4 > end)
        _invalid(counters, "decoder.event.vlan.header_too_small", short)
        link_ok &= ~short
        m = tagged & ~short
        vid = (r.u16(l3[m]) & 0x0FFF).astype(np.uint16)
        if layer == 0:
            vlan0[m] = vid
            _count(counters, "decoder.vlan", m)
        else:
            vlan1[m] = vid
            _count(counters, "decoder.vlan_qinq", m)
        etype[m] = r.u16(l3[m] + 2)
        l3[m] += 4

    # PPPoE sessions and MPLS label stacks are stripped inline, as Suricata's decoder does
    pppoe = link_ok & (etype == ETH_PPPOE_SESSION)
    if pppoe.any():
        _count(counters, "decoder.pppoe", pppoe)
        short = pppoe & (l3 + 8 > end)
        _invalid(counters, "decoder.event.pppoe.pkt_too_small", short)
        link_ok &= ~short
        m = pppoe & ~short
        ppp = r.u16(l3[m] + 6)
        etype[m] = np.where(ppp == PPP_IPV4, ETH_IPV4, np.where(ppp == PPP_IPV6, ETH_IPV6, 0))
        l3[m] += 8
    mpls = link_ok & np.isin(etype, ETH_MPLS)
    if mpls.any():
        _count(counters, "decoder.mpls", mpls)
    for _ in range(MAX_MPLS_LABELS):
        if not mpls.any():
            break
        short = mpls & (l3 + 5 > end)
        _invalid(counters, "decoder.event.mpls.header_too_small", short)
        link_ok &= ~short
        m = mpls & ~short
        word = r.u32(l3[m])
        l3[m] += 4
        bottom = ((word >> 8) & 1) == 1
        label = word >> 12
        # explicit-null labels name the payload; otherwise the IP version nibble does
        nib = r.u8(l3[m]) >> 4
        guess = np.where(label == 0, ETH_IPV4, np.where(label == 2, ETH_IPV6, np.where(
            nib == 4, ETH_IPV4, np.where(nib == 6, ETH_IPV6, 0))))
        rows = np.flatnonzero(m)
        etype[rows[bottom]] = guess[bottom]
        mpls = np.zeros(n, dtype=bool)
        mpls[rows[~bottom]] = True
    else:
        _invalid(counters, "decoder.event.mpls.too_many_labels", mpls)
        link_ok &= ~mpls

    _count(counters, "decoder.arp", link_ok & (etype == ETH_ARP))
    other = link_ok & (etype != ETH_IPV4) & (etype != ETH_IPV6) & (etype != ETH_ARP)
    _count(counters, "decoder.unknown_ethertype", other & ~raw)
    _invalid(counters, "decoder.event.ipraw.invalid_ip_version", other & raw)

    # ---- IPv4 ----------------------------------------------------------------------------
    avail = end - l3
    ipver = np.zeros(n, dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    iplen = np.zeros(n, dtype=np.int32)
    proto = np.zeros(n, dtype=np.uint8)
    src_hi = np.zeros(n, dtype=np.uint64)
    src_lo = np.zeros(n, dtype=np.uint64)
    dst_hi = np.zeros(n, dtype=np.uint64)
    dst_lo = np.zeros(n, dtype=np.uint64)
    l4 = np.zeros(n, dtype=np.int64)
    ttl = np.zeros(n, dtype=np.uint8)
    ip_id = np.zeros(n, dtype=np.uint32)
    tos = np.zeros(n, dtype=np.uint8)
    frag_bits = np.zeros(n, dtype=np.uint8)
    frag_off = np.zeros(n, dtype=np.uint16)
    fragment = np.zeros(n, dtype=bool)

    v4 = link_ok & (etype == ETH_IPV4)
    if v4.any():
        idx = np.flatnonzero(v4)
        p = l3[idx]
        av = avail[idx]
        vhl = r.u8(p)
        hl = (vhl & 0x0F).astype(np.int64) * 4
        tot = r.u16(p + 2).astype(np.int64)
        bad = np.zeros(len(idx), dtype=bool)
        checks = (
            ("decoder.event.ipv4.pkt_too_small", av < 20),
            ("decoder.event.ipv4.wrong_ip_version", (vhl >> 4) != 4),
            ("decoder.event.ipv4.hlen_too_small", hl < 20),
            ("decoder.event.ipv4.iplen_smaller_than_hlen", tot < hl),
            ("decoder.event.ipv4.trunc_pkt", tot > av),
        )
        for name, cond in checks:
            cond = cond & ~bad
            _invalid(counters, name, cond)
            bad |= cond
        good = idx[~bad]
        p = p[~bad]
        hl = hl[~bad]
        tot = tot[~bad]
        _count(counters, "decoder.ipv4", np.ones(len(good), dtype=bool))
        ipver[good] = 4
        iplen[good] = tot
        proto[good] = r.u8(p + 9)
        ttl[good] = r.u8(p + 8)
        tos[good] = r.u8(p + 1)
        ip_id[good] = r.u16(p + 4)
        fw = r.u16(p + 6)
        frag_bits[good] = fw >> 13
        frag_off[good] = fw & 0x1FFF
        src_lo[good] = r.u32(p + 12)
        dst_lo[good] = r.u32(p + 16)
        l4[good] = p + hl
        fragment[good] = ((fw & 0x2000) != 0) | ((fw & 0x1FFF) != 0)
        ok[good] = True

    # ---- IPv6 ----------------------------------------------------------------------------
    v6 = link_ok & (etype == ETH_IPV6)
    if v6.any():
        idx = np.flatnonzero(v6)
        p = l3[idx]
        av = avail[idx]
        first = r.u32(p)
        tot = r.u16(p + 4).astype(np.int64) + 40
        bad = np.zeros(len(idx), dtype=bool)
        for name, cond in (
            ("decoder.event.ipv6.pkt_too_small", av < 40),
            ("decoder.event.ipv6.wrong_ip_version", (first >> 28) != 6),
            ("decoder.event.ipv6.trunc_pkt", tot > av),
        ):
            cond = cond & ~bad
            _invalid(counters, name, cond)
            bad |= cond
        nh = r.u8(p + 6)
        q = p + 40
        stop = p + tot
        frag = np.zeros(len(idx), dtype=bool)
        fid = np.zeros(len(idx), dtype=np.uint32)
        foff = np.zeros(len(idx), dtype=np.uint16)
        fmore = np.zeros(len(idx), dtype=bool)
        for _ in range(MAX_IPV6_EXT):
            gen = ~bad & np.isin(nh, IPV6_EXT_GENERIC)
            fr = ~bad & (nh == IPV6_EXT_FRAGMENT)
            ah = ~bad & (nh == IPV6_EXT_AH)
            walk = gen | fr | ah
            if not walk.any():
                break
            hlen = np.where(gen, (r.u8(q + 1).astype(np.int64) + 1) * 8,
                            np.where(ah, (r.u8(q + 1).astype(np.int64) + 2) * 4, 8))
            over = walk & (q + np.maximum(hlen, 2) > stop)
            _invalid(counters, "decoder.event.ipv6.trunc_exthdr", over)
            bad |= over
            walk &= ~over
            fr &= ~over
            if fr.any():
                fw = r.u16(q + 2)
                foff[fr] = (fw[fr] >> 3).astype(np.uint16)
                fmore[fr] = (fw[fr] & 1) != 0
                fid[fr] = r.u32(q + 4)[fr]
                frag[fr] = True
            nh = np.where(walk, r.u8(q), nh)
            q = np.where(walk, q + hlen, q)
        else:
            deep = ~bad & np.isin(nh, IPV6_EXT_GENERIC + (IPV6_EXT_FRAGMENT, IPV6_EXT_AH))
            _invalid(counters, "decoder.too_many_layers", deep)
            bad |= deep
        good = idx[~bad]
        sel = ~bad
        p = p[sel]
        _count(counters, "decoder.ipv6", sel)
        ipver[good] = 6
        iplen[good] = tot[sel]
        proto[good] = nh[sel]
        ttl[good] = r.u8(p + 7)
        tos[good] = ((first[sel] >> 20) & 0xFF).astype(np.uint8)
        src_hi[good] = r.u64(p + 8)
        src_lo[good] = r.u64(p + 16)
        dst_hi[good] = r.u64(p + 24)
        dst_lo[good] = r.u64(p + 32)
        l4[good] = q[sel]
        ip_id[good] = fid[sel]
        frag_off[good] = foff[sel]
        frag_bits[good] = fmore[sel].astype(np.uint8)
        fragment[good] = frag[sel] & ((foff[sel] != 0) | fmore[sel])
        ok[good] = True

    ok &= ~fragment
    # Suricata tracks flows only for these; other IP protocols are counted, not tracked
    # (tunnels, IP-in-IP and GRE, are opened by sensor.tunnel and counted there)
    other_proto = ok & ~np.isin(proto, FLOW_PROTOS + TUNNEL_IP_PROTOS)
    # Suricata also opens a flow (no ports) for an IPv4 packet carrying IPv6 (6in4)
    ok &= np.isin(proto, FLOW_PROTOS) | ((ipver == 4) & (proto == 41))
    _count(counters, "decoder.other_ip_proto", other_proto)
    out = _decode_l4(r, counters, ok, ipver, l3, iplen, proto, l4)
    return DecodedBatch(
        n=n, ok=out["ok"], ipver=ipver, l3=l3, iplen=iplen, proto=proto,
        src_hi=src_hi, src_lo=src_lo, dst_hi=dst_hi, dst_lo=dst_lo,
        sport=out["sport"], dport=out["dport"], l4=l4, poff=out["poff"], plen=out["plen"],
        tcp_flags=out["tcp_flags"], tcp_seq=out["tcp_seq"], tcp_ack=out["tcp_ack"],
        tcp_win=out["tcp_win"], icmp_type=out["icmp_type"], icmp_code=out["icmp_code"],
        icmp_id=out["icmp_id"], icmp_seq=out["icmp_seq"], ttl=ttl, ip_id=ip_id, tos=tos,
        frag_bits=frag_bits, frag_off=frag_off, vlan0=vlan0, vlan1=vlan1, fragment=fragment,
        counters=counters, depth=batch.tunnel_depth,
        icmp_err=out.get("icmp_err"), icmp_emb=out.get("icmp_emb"),
    )


def _decode_l4(
    r: _Reader, counters: dict[str, int], ok: np.ndarray, ipver: np.ndarray,
    l3: np.ndarray, iplen: np.ndarray, proto: np.ndarray, l4: np.ndarray,
) -> dict[str, np.ndarray]:
    """TCP, UDP, ICMP and ICMPv6 headers; other IP protocols keep ports 0."""
    n = len(ok)
    ok = ok.copy()
    ipend = l3 + iplen
    l4len = ipend - l4
    sport = np.zeros(n, dtype=np.uint16)
    dport = np.zeros(n, dtype=np.uint16)
    poff = l4.copy()
    plen = np.maximum(l4len, 0).astype(np.int32)
    tcp_flags = np.zeros(n, dtype=np.uint8)
    tcp_seq = np.zeros(n, dtype=np.uint32)
    tcp_ack = np.zeros(n, dtype=np.uint32)
    tcp_win = np.zeros(n, dtype=np.uint16)
    icmp_type = np.zeros(n, dtype=np.uint8)
    icmp_code = np.zeros(n, dtype=np.uint8)
    icmp_id = np.zeros(n, dtype=np.uint16)
    icmp_seq = np.zeros(n, dtype=np.uint16)
    extra: dict = {}

    tcp = ok & (proto == PROTO_TCP)
    if tcp.any():
        idx = np.flatnonzero(tcp)
        q = l4[idx]
        ln = l4len[idx]
        doff = (r.u8(q + 12) >> 4).astype(np.int64) * 4
        small = ln < 20
        _invalid(counters, "decoder.event.tcp.pkt_too_small", small)
        badh = ~small & ((doff < 20) | (doff > ln))
        _invalid(counters, "decoder.event.tcp.hlen_too_small", badh)
        ok[idx[small | badh]] = False
        g = ~(small | badh)
        good = idx[g]
        q = q[g]
        _count(counters, "decoder.tcp", g)
        sport[good] = r.u16(q)
        dport[good] = r.u16(q + 2)
        tcp_seq[good] = r.u32(q + 4)
        tcp_ack[good] = r.u32(q + 8)
        tcp_flags[good] = r.u8(q + 13)
        tcp_win[good] = r.u16(q + 14)
        poff[good] = q + doff[g]
        plen[good] = (ln[g] - doff[g]).astype(np.int32)

    udp = ok & (proto == PROTO_UDP)
    if udp.any():
        idx = np.flatnonzero(udp)
        q = l4[idx]
        ln = l4len[idx]
        ulen = r.u16(q + 4).astype(np.int64)
        small = ln < 8
        _invalid(counters, "decoder.event.udp.pkt_too_small", small)
        badl = ~small & ((ulen < 8) | (ulen > ln))
        _invalid(counters, "decoder.event.udp.hlen_invalid", badl)
        ok[idx[small | badl]] = False
        g = ~(small | badl)
        good = idx[g]
        q = q[g]
        _count(counters, "decoder.udp", g)
        sport[good] = r.u16(q)
        dport[good] = r.u16(q + 2)
        poff[good] = q + 8
        plen[good] = (ulen[g] - 8).astype(np.int32)

    for pnum, name, cp, has_cp, echo in (
        (PROTO_ICMP, "icmpv4", ICMP4_CP, ICMP4_HAS_CP, ICMP4_ECHO_TYPES),
        (PROTO_ICMPV6, "icmpv6", ICMP6_CP, ICMP6_HAS_CP, ICMP6_ECHO_TYPES),
    ):
        m = ok & (proto == pnum)
        if pnum == PROTO_ICMP:
            wrong = m & (ipver == 6)
            _invalid(counters, "decoder.event.ipv6.ipv4_in_ipv6_wrong_version", wrong)
            ok &= ~wrong
            m &= ~wrong
        if not m.any():
            continue
        idx = np.flatnonzero(m)
        q = l4[idx]
        small = l4len[idx] < 8
        _invalid(counters, f"decoder.event.{name}.pkt_too_small", small)
        ok[idx[small]] = False
        good = idx[~small]
        q = q[~small]
        _count(counters, f"decoder.{name}", ~small)
        t = r.u8(q)
        c = r.u8(q + 1)
        icmp_type[good] = t
        icmp_code[good] = c
        is_echo = np.isin(t, echo)
        icmp_id[good] = np.where(is_echo, r.u16(q + 4), 0)
        icmp_seq[good] = np.where(is_echo, r.u16(q + 6), 0)
        # Suricata's flow key: (type, code) of this packet and of its expected answer,
        # stored little-endian in the port fields
        sport[good] = (t | (c << 8)).astype(np.uint16)
        dport[good] = np.where(has_cp[t], cp[t], 0).astype(np.uint16)
        poff[good] = q + 8
        plen[good] = (l4len[good] - 8).astype(np.int32)
        if pnum == PROTO_ICMP:
            err = np.isin(t, ICMP4_ERROR_TYPES)
            if err.any():
                extra.update(_icmp4_errors(r, n, good[err], q[err], t[err], l4len[good[err]]))

    plen = np.where(ok, plen, 0).astype(np.int32)
    return {**extra,
        "ok": ok, "sport": sport, "dport": dport, "poff": poff, "plen": plen,
        "tcp_flags": tcp_flags, "tcp_seq": tcp_seq, "tcp_ack": tcp_ack, "tcp_win": tcp_win,
        "icmp_type": icmp_type, "icmp_code": icmp_code, "icmp_id": icmp_id,
        "icmp_seq": icmp_seq,
    }


# ICMPv4 error messages (ICMPV4_IS_ERROR_MSG in Suricata): unreachable, source quench,
# redirect, time exceeded, parameter problem
ICMP4_ERROR_TYPES = (3, 4, 5, 11, 12)


def _icmp4_errors(r: _Reader, n: int, rows: np.ndarray, q: np.ndarray, t: np.ndarray,
                  l4len: np.ndarray) -> dict:
    """The packet an ICMPv4 error quotes, as Suricata reads it (DecodePartialIPV4): a
    destination unreachable whose quoted IPv4 header is followed by a whole TCP (20 bytes)
    or UDP (8 bytes) header is keyed on that tuple."""
    err = np.zeros(n, dtype=bool)
    err[rows] = True
    e = q + 8  # the quoted IPv4 header
    room = l4len - 8
    vhl = r.u8(e)
    ihl = (vhl & 0x0F).astype(np.int64) * 4
    eproto = r.u8(e + 9)
    need = np.where(eproto == PROTO_TCP, 20, np.where(eproto == PROTO_UDP, 8, 1 << 20))
    valid = (t == 3) & (room >= 20) & ((vhl >> 4) == 4) & (ihl >= 20) & (room >= ihl + need)
    emb = {name: np.zeros(n, dtype=dt) for name, dt in (
        ("ok", bool), ("src", np.uint64), ("dst", np.uint64), ("sport", np.uint16),
        ("dport", np.uint16), ("proto", np.uint8))}
    v = rows[valid]
    ev = e[valid]
    eh = ev + ihl[valid]
    emb["ok"][v] = True
    emb["src"][v] = r.u32(ev + 12)
    emb["dst"][v] = r.u32(ev + 16)
    emb["sport"][v] = r.u16(eh)
    emb["dport"][v] = r.u16(eh + 2)
    emb["proto"][v] = eproto[valid]
    return {"icmp_err": err, "icmp_emb": emb}
