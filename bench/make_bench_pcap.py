"""Build the replay benchmark capture from the bundled real captures, deterministically.

Real traffic is what the benchmark must measure, but a 1M-packet lab run takes many minutes,
needs root and differs on every run. So this script multiplies the committed real captures
instead: every *replica* of a template capture gets its own IPv4/IPv6 addresses (the
replica number sits in the address; the host part is kept), a random start time within the
span, and for some replicas an 802.1Q tag; IP and TCP/UDP/ICMPv6 checksums are updated to
match the new addresses (RFC 1624), so a checksum that was right stays right. Replicas are
merged in time order and written as one classic pcap (Ethernet, microseconds), chunk by
chunk, so memory stays flat however large the output.

Templates (all real kernel captures, see pcaps/README.md and pcaps/formats/README.md):
sample.pcap (web, DNS, ssh, bulk downloads, iperf3, ping, scans, floods, brute force) for
80 % of the packets; small captures with IPv6, extension headers, ICMP, IPv4/IPv6
fragments, 802.1Q and QinQ for the rest (TEMPLATES). The same seed and options give the
same bytes. Only the SRv6 packets of ipv6-exthdr.pcap keep a now wrong TCP/UDP checksum:
their pseudo header holds the final segment, not the rewritten destination.

    python3 bench/make_bench_pcap.py                     # -> bench/data/mixed.pcap
    python3 bench/make_bench_pcap.py --packets 20000 -o /tmp/small.pcap
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sensor.capture import LINKTYPE_ETHERNET  # noqa: E402
from sensor.capture.pcap import PcapSource  # noqa: E402
from sensor.decode import PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, decode_batch  # noqa: E402

# (capture, share of the output's packets): the lab sample for most, small captures for the
# protocol variety; fragments at about 0.5 % of packets
TEMPLATES = (
    ("pcaps/sample.pcap", 0.80),  # web, DNS, ssh, bulk, iperf3, ping, scans, floods
    ("pcaps/formats/eth-le-usec.pcap", 0.08),  # IPv4/IPv6 TCP, UDP, ICMP, ICMPv6, ARP
    ("pcaps/formats/vlan.pcap", 0.035),  # 802.1Q
    ("pcaps/formats/qinq.pcap", 0.035),  # 802.1ad + 802.1Q
    ("pcaps/formats/lo-eth.pcap", 0.03),  # loopback traffic on Ethernet
    ("pcaps/formats/ipv6-exthdr.pcap", 0.01),  # hop-by-hop, dest options, routing, fragment
    ("pcaps/formats/ipv4-options.pcap", 0.004),  # IPv4 options
    ("pcaps/formats/frag4.pcap", 0.003),  # IPv4 fragments
    ("pcaps/formats/frag6.pcap", 0.003),  # IPv6 fragment header
)
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET)
CHUNK_PACKETS = 65536
VLAN_TPID = 0x8100


@dataclass
class Template:
    """One real capture, decoded once: frames plus where its addresses and checksums are."""

    path: str
    data: np.ndarray  # uint8, frames back to back
    offset: np.ndarray  # frame start in data
    caplen: np.ndarray
    wirelen: np.ndarray
    rel_us: np.ndarray  # time since the template's first packet
    ipver: np.ndarray  # 0: leave the frame alone
    l3: np.ndarray  # relative to the frame start
    csum_l4: np.ndarray  # relative to the frame start, -1: none to fix
    csum_udp: np.ndarray  # that checksum is UDP's (where 0 means "not computed")
    src_host: np.ndarray  # host part kept in the new address (uint64)
    dst_host: np.ndarray
    has_vlan: bool  # already tagged: no tag pushed (a third layer would be invalid)

    @property
    def duration_us(self) -> int:
        return int(self.rel_us.max()) if len(self.rel_us) else 0


def load_template(path: str) -> Template:
    """Read and decode one Ethernet capture with the sensor's own reader and decoder."""
    src = PcapSource(path, batch_size=1 << 30)
    batches = list(src.batches())
    if src.error is not None or len(batches) != 1:
        raise SystemExit(f"{path}: cannot use as a template: {src.error or 'no packets'}")
    b = batches[0]
    if set(b.linktype.tolist()) != {LINKTYPE_ETHERNET}:
        raise SystemExit(f"{path}: template must be Ethernet")
    d = decode_batch(b)
    # the decoder marks fragments not ok but still fills their addresses
    ipver = np.where((d.ipver == 4) | (d.ipver == 6), d.ipver, 0).astype(np.int64)
    off = b.offset.astype(np.int64)
    frame_end = b.caplen.astype(np.int64)
    l3 = d.l3.astype(np.int64) - off
    l4 = d.l4.astype(np.int64) - off
    first_frag = ~d.fragment | (d.frag_off == 0)
    csum = np.full(len(b), -1, dtype=np.int64)
    csum_udp = np.zeros(len(b), dtype=bool)
    for proto, at, need in ((PROTO_TCP, 16, 18), (PROTO_UDP, 6, 8), (PROTO_ICMPV6, 2, 4)):
        m = (ipver > 0) & (d.proto == proto) & first_frag & (l4 + need <= frame_end)
        if proto == PROTO_UDP:  # UDP checksum 0: none was computed, keep it so
            pos = np.where(m, off + l4 + at, 0)
            m &= (b.data[pos].astype(np.int64) << 8 | b.data[pos + 1]) != 0
            csum_udp |= m
        csum[m] = l4[m] + at
    src_host, dst_host = _host_parts(ipver, d.src_lo, d.dst_lo)
    data = b.data
    return Template(
        path=path, data=data, offset=off, caplen=b.caplen.astype(np.int64),
        wirelen=b.wirelen.astype(np.int64), rel_us=b.ts_us - b.ts_us.min(), ipver=ipver,
        l3=l3, csum_l4=csum, csum_udp=csum_udp, src_host=src_host, dst_host=dst_host,
        has_vlan=bool((d.vlan0 != 0).any()),
    )


def _host_parts(ipver: np.ndarray, src_lo: np.ndarray, dst_lo: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Host part of each address: the last octet (IPv4) / the low 64 bits (IPv6) when those
    tell the template's hosts apart, else the host's rank, so replicas never collide."""
    out = []
    for lo in (src_lo, dst_lo):
        out.append(np.zeros(len(lo), dtype=np.uint64))
    for ver, keep in ((4, np.uint64(0xFF)), (6, np.uint64(0xFFFFFFFFFFFFFFFF))):
        m = ipver == ver
        if not m.any():
            continue
        addrs = np.unique(np.r_[src_lo[m], dst_lo[m]])
        hosts = addrs & keep
        if len(np.unique(hosts)) != len(addrs) or (ver == 4 and (hosts == 0).any()):
            hosts = np.arange(1, len(addrs) + 1, dtype=np.uint64)
        for arr, lo in zip(out, (src_lo, dst_lo), strict=True):
            arr[m] = hosts[np.searchsorted(addrs, lo[m])]
    return out[0], out[1]


def new_v4(replica: np.ndarray, host: np.ndarray) -> np.ndarray:
    """10.R.R.host: the replica number in the middle two octets."""
    return (np.uint64(10) << np.uint64(24)) | ((replica.astype(np.uint64) & np.uint64(0xFFFF))
                                               << np.uint64(8)) | (host & np.uint64(0xFF))


def new_v6(replica: np.ndarray, host: np.ndarray) -> np.ndarray:
    """fd4e:5300:0:R::host (a ULA prefix per replica), as [n, 16] bytes."""
    hi = np.uint64(0xFD4E530000000000) | replica.astype(np.uint64)
    words = np.stack([hi, host.astype(np.uint64)], axis=1).astype(">u8")
    return words.view(np.uint8).reshape(-1, 16)


def _words(b: np.ndarray) -> np.ndarray:
    """[n, 2k] bytes -> [n, k] big-endian 16-bit words."""
    return (b[:, 0::2].astype(np.int64) << 8) | b[:, 1::2]


def _fold(s: np.ndarray) -> np.ndarray:
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _csum_update(old_csum: np.ndarray, old_words: np.ndarray, new_words: np.ndarray,
                 ) -> np.ndarray:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), over all changed words."""
    s = (~old_csum & 0xFFFF) + (~old_words & 0xFFFF).sum(axis=1) + new_words.sum(axis=1)
    return ~_fold(s) & 0xFFFF


@dataclass
class Plan:
    """Every output packet, in time order: which template frame, which replica, which tag."""

    tpl: np.ndarray  # template number
    pkt: np.ndarray  # frame number within the template
    replica: np.ndarray  # global replica number (unique addresses)
    vlan: np.ndarray  # 802.1Q id to push, 0: none
    ts_us: np.ndarray


def make_plan(templates: list[Template], shares: list[float], packets: int, span_s: float,
              vlan_share: float, seed: int, start_us: int) -> Plan:
    """Choose replicas and start times so about `packets` packets fall within the span."""
    rng = np.random.default_rng(seed)
    total_share = sum(shares)
    parts = []
    replica_base = 1
    for t_no, tpl in enumerate(templates):
        want = packets * shares[t_no] / total_share
        reps = max(1, int(np.ceil(want / len(tpl.offset))))
        room = max(0, int(span_s * 1_000_000) - tpl.duration_us)
        starts = rng.integers(0, room + 1, size=reps)
        tags = np.where(rng.random(reps) < vlan_share, rng.integers(2, 4095, size=reps), 0)
        if tpl.has_vlan:
            tags[:] = 0
        n = len(tpl.offset)
        rep = np.repeat(np.arange(reps), n)
        pkt = np.tile(np.arange(n), reps)
        parts.append((np.full(reps * n, t_no), pkt, rep + replica_base, tags[rep],
                      start_us + starts[rep] + tpl.rel_us[pkt]))
        replica_base += reps
    if replica_base > 0xFFFF:
        raise SystemExit(f"{replica_base} replicas: more than the 65535 the addresses hold")
    tpl, pkt, rep, vlan, ts = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.lexsort((pkt, rep, ts))
    return Plan(tpl[order], pkt[order], rep[order], vlan[order], ts[order])


def render(templates: list[Template], plan: Plan, lo: int, hi: int) -> bytes:
    """The pcap records of plan[lo:hi], addresses rewritten, tags pushed, all at once."""
    n = hi - lo
    tno, pno = plan.tpl[lo:hi], plan.pkt[lo:hi]
    rep, vlan, ts = plan.replica[lo:hi], plan.vlan[lo:hi], plan.ts_us[lo:hi]
    # one pool holding every template's bytes: a frame is pool[start : start + caplen]
    bases = np.cumsum([0] + [len(t.data) for t in templates[:-1]])
    pool = np.concatenate([t.data for t in templates])

    def col(name: str) -> np.ndarray:
        out = np.zeros(n, dtype=getattr(templates[0], name).dtype)
        for i, t in enumerate(templates):
            m = tno == i
            if m.any():
                out[m] = getattr(t, name)[pno[m]]
        return out

    start = col("offset") + bases[tno]
    cap, wire, ipver, l3, csum = col("caplen"), col("wirelen"), col("ipver"), col("l3"), \
        col("csum_l4")
    tagged = vlan > 0
    tag = 4 * tagged.astype(np.int64)
    rec_len = 16 + cap + tag
    rec_off = np.r_[0, np.cumsum(rec_len)[:-1]]
    total = int(rec_len.sum())
    # record = pcap header | MAC addresses | [802.1Q tag] | rest of the frame
    hdr = np.zeros((n, 4), dtype="<u4")
    hdr[:, 0] = ts // 1_000_000
    hdr[:, 1] = ts % 1_000_000
    hdr[:, 2] = cap + tag
    hdr[:, 3] = wire + tag
    tags = np.zeros((n, 4), dtype=np.uint8)
    tags[:, 0], tags[:, 1] = VLAN_TPID >> 8, VLAN_TPID & 0xFF
    tags[:, 2], tags[:, 3] = vlan >> 8, vlan & 0xFF
    src = np.concatenate([hdr.view(np.uint8).ravel(), tags.ravel(), pool])
    hdr_at, tag_at, pool_at = 0, 16 * n, 20 * n
    head = np.minimum(cap, 12)
    seg_src = np.stack([hdr_at + 16 * np.arange(n), pool_at + start, tag_at + 4 * np.arange(n),
                        pool_at + start + head], axis=1)
    seg_len = np.stack([np.full(n, 16), head, tag, cap - head], axis=1)
    seg_out = rec_off[:, None] + np.c_[np.zeros(n, dtype=np.int64), np.full(n, 16),
                                       16 + head, 16 + head + tag]
    flat_len = seg_len.ravel()
    gather = np.repeat(seg_src.ravel() - seg_out.ravel(), flat_len) + np.arange(total)
    out = src[gather]

    l3_out = rec_off + 16 + tag + l3  # where the IP header starts in `out`
    for ver in (4, 6):
        m = ipver == ver
        if not m.any():
            continue
        idx = np.flatnonzero(m)
        p = l3_out[idx]
        if ver == 4:
            old = np.zeros((len(idx), 8), dtype=np.uint8)
            old[:, :4] = out[p[:, None] + 12 + np.arange(4)]
            old[:, 4:] = out[p[:, None] + 16 + np.arange(4)]
            s_host, d_host = col("src_host")[idx], col("dst_host")[idx]
            new = np.stack([new_v4(rep[idx], s_host), new_v4(rep[idx], d_host)], axis=1)
            new_b = new.astype(">u4").view(np.uint8).reshape(-1, 8)
            out[p[:, None] + 12 + np.arange(8)] = new_b
            # IPv4 header checksum
            cpos = p + 10
            old_c = (out[cpos].astype(np.int64) << 8) | out[cpos + 1]
            c = _csum_update(old_c, _words(old), _words(new_b))
            out[cpos], out[cpos + 1] = c >> 8, c & 0xFF
        else:
            old = out[p[:, None] + 8 + np.arange(32)]
            s_host, d_host = col("src_host")[idx], col("dst_host")[idx]
            new_b = np.concatenate([new_v6(rep[idx], s_host), new_v6(rep[idx], d_host)], axis=1)
            out[p[:, None] + 8 + np.arange(32)] = new_b
        fix = csum[idx] >= 0
        if fix.any():
            # TCP, UDP and ICMPv6 checksums cover the addresses through the pseudo header
            cpos = rec_off[idx[fix]] + 16 + tag[idx[fix]] + csum[idx[fix]]
            old_c = (out[cpos].astype(np.int64) << 8) | out[cpos + 1]
            c = _csum_update(old_c, _words(old[fix]), _words(new_b[fix]))
            c = np.where((c == 0) & col("csum_udp")[idx[fix]], 0xFFFF, c)  # 0 is "none"
            out[cpos], out[cpos + 1] = c >> 8, c & 0xFF
    return out.tobytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default=os.path.join(ROOT, "bench", "data", "mixed.pcap"))
    ap.add_argument("--packets", type=int, default=1_100_000,
                    help="about this many packets (default 1,100,000)")
    ap.add_argument("--span", type=float, default=600.0,
                    help="seconds of traffic the replicas are spread over (default 600)")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--vlan-share", type=float, default=0.25,
                    help="share of replicas pushed onto an 802.1Q VLAN (default 0.25)")
    ap.add_argument("--start", type=int, default=1_717_945_476,
                    help="unix time of the span's start (default 2024-06-09 15:04:36 UTC)")
    ap.add_argument("--template", action="append", metavar="PCAP[=SHARE]",
                    help="Ethernet capture to use instead of the defaults, with its share of "
                         "the packets (default 1); repeat the option")
    args = ap.parse_args(argv)
    chosen = TEMPLATES
    if args.template:
        chosen = tuple((t.rpartition("=")[0] or t, float(t.rpartition("=")[2]) if "=" in t
                        else 1.0) for t in args.template)
    templates = [load_template(p if os.path.isabs(p) else os.path.join(ROOT, p))
                 for p, _ in chosen]
    plan = make_plan(templates, [share for _, share in chosen], args.packets, args.span,
                     args.vlan_share, args.seed, args.start * 1_000_000)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    tmp = args.out + ".part"
    size = len(PCAP_HEADER)
    with open(tmp, "wb") as f:
        f.write(PCAP_HEADER)
        for lo in range(0, len(plan.ts_us), CHUNK_PACKETS):
            chunk = render(templates, plan, lo, min(len(plan.ts_us), lo + CHUNK_PACKETS))
            f.write(chunk)
            size += len(chunk)
    os.replace(tmp, args.out)
    replicas = len(np.unique(plan.replica))
    print(f"{args.out}: {len(plan.ts_us):,} packets, {size:,} bytes, {replicas:,} replicas of "
          f"{len(templates)} real captures, {args.span:g} s, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
