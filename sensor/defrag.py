"""IPv4 and IPv6 fragment reassembly, the slow path beside the batch decoder.

Fragments are rare on real links, so they are parsed here in Python. A datagram whose
fragments are all in is rebuilt as one raw IP packet; those packets form a small batch
(`pkt_src` "defrag", no pcap_cnt) that goes through the same decoder and flow table, as
Suricata's reassembled pseudo packets do. Overlaps keep the data that came first (Suricata's
default "bsd" policy keeps the first data for most overlaps); every tracker is bounded in
count, size and time so a fragment flood cannot grow memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .capture import BATCH_PAD, LINKTYPE_RAW, PacketBatch
from .decode import DecodedBatch

MAX_DATAGRAM = 65535


@dataclass
class _Tracker:
    first_ts: int
    last_ts: int
    header: bytes = b""  # unfragmentable part of the first fragment (offset 0)
    next_header_at: int = -1  # IPv6: where in `header` the next-header byte to patch sits
    proto: int = 0
    end: int = -1  # total payload length, known once the last fragment arrived
    parts: list[tuple[int, bytes]] = field(default_factory=list)
    link: tuple[bytes, int] = (b"", LINKTYPE_RAW)
    size: int = 0


@dataclass(frozen=True)
class DefragConfig:
    max_trackers: int = 65536
    timeout_us: int = 60_000_000
    max_fragments: int = 256
    max_bytes: int = 32 << 20  # payload bytes held by all trackers (Suricata's defrag.memcap)


class Defragmenter:
    """Collects fragments across batches and hands back reassembled packets."""

    def __init__(self, cfg: DefragConfig | None = None):
        self.cfg = cfg or DefragConfig()
        self.trackers: dict[tuple, _Tracker] = {}
        self.counters: dict[str, int] = {}
        self.next_expire = 0  # packet time of the next timeout check
        self.held_bytes = 0  # payload bytes of all trackers, bounded by cfg.max_bytes

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def add(self, batch: PacketBatch, d: DecodedBatch) -> PacketBatch | None:
        """Take the fragments of a batch; return a batch of completed datagrams, if any."""
        idx = np.flatnonzero(d.fragment)
        if not len(idx):
            return None
        out: list[tuple[bytes, int, int]] = []
        data = batch.data
        for i in idx.tolist():
            l3 = int(d.l3[i])
            ip = data[l3 : l3 + int(d.iplen[i])].tobytes()
            ts = int(batch.ts_us[i])
            link = (data[int(batch.offset[i]) : l3].tobytes(), int(batch.linktype[i]))
            done = self._v4(ip, ts, link) if d.ipver[i] == 4 else self._v6(ip, ts, link)
            if done is not None:
                out.append(done + (ts,))
        self.expire(int(batch.ts_us[-1]))
        if not out:
            return None
        return _frames_batch(out)

    def expire(self, now: int) -> None:
        """Drop (and count) datagrams still incomplete `timeout_us` after their first
        fragment; checked at most once per second of packet time."""
        if now < self.next_expire or not self.trackers:
            return
        self.next_expire = now + 1_000_000
        stale = [k for k, t in self.trackers.items() if now - t.first_ts > self.cfg.timeout_us]
        for k in stale:
            self._count(f"defrag.ipv{k[0]}.timeouts")
            self._drop(k)

    def _drop(self, key: tuple) -> None:
        self.held_bytes -= self.trackers.pop(key).size

    def _tracker(self, key: tuple, ts: int) -> _Tracker | None:
        t = self.trackers.get(key)
        if t is None:
            if len(self.trackers) >= self.cfg.max_trackers:
                self._count("defrag.max_frag_hits")
                return None
            t = self.trackers[key] = _Tracker(ts, ts)
        t.last_ts = ts
        return t

    def _v4(self, ip: bytes, ts: int, link: tuple[bytes, int]) -> tuple[bytes, int] | None:
        self._count("defrag.ipv4.fragments")
        hl = (ip[0] & 0x0F) * 4
        fw = struct.unpack_from("!H", ip, 6)[0]
        off = (fw & 0x1FFF) * 8
        more = bool(fw & 0x2000)
        key = (4, ip[12:16], ip[16:20], ip[4:6], ip[9])
        t = self._tracker(key, ts)
        if t is None:
            return None
        if off == 0:
            t.header = ip[:hl]
            t.proto = ip[9]
            t.link = link
        return self._place(key, t, off, more, ip[hl:], 4)

    def _v6(self, ip: bytes, ts: int, link: tuple[bytes, int]) -> tuple[bytes, int] | None:
        self._count("defrag.ipv6.fragments")
        nh = ip[6]
        pos = 40
        nh_at = 6
        while nh in (0, 43, 60) and pos + 2 <= len(ip):
            nh_at = pos
            nh = ip[pos]
            pos += (ip[pos + 1] + 1) * 8
        if nh != 44 or pos + 8 > len(ip):
            self._count("decoder.event.ipv6.frag_ignored")
            return None
        frag_nh = ip[pos]
        fw, ident = struct.unpack_from("!HI", ip, pos + 2)
        off = (fw >> 3) * 8
        more = bool(fw & 1)
        key = (6, ip[8:24], ip[24:40], ident)
        t = self._tracker(key, ts)
        if t is None:
            return None
        if off == 0:
            t.header = ip[:pos]
            t.next_header_at = nh_at
            t.proto = frag_nh
            t.link = link
        return self._place(key, t, off, more, ip[pos + 8 :], 6)

    def _place(self, key: tuple, t: _Tracker, off: int, more: bool, payload: bytes,
               ver: int) -> tuple[bytes, int] | None:
        """Add a fragment; return (frame, linktype) once the datagram is complete."""
        if off + len(payload) > MAX_DATAGRAM:
            self._count(f"decoder.event.ipv{ver}.frag_pkt_too_large")
            self._drop(key)
            return None
        if len(t.parts) >= self.cfg.max_fragments:
            self._count(f"decoder.event.ipv{ver}.frag_ignored")
            self._drop(key)
            return None
        if self.held_bytes + len(payload) > self.cfg.max_bytes:
            self._count("defrag.max_frag_hits")  # memcap: this fragment is not kept
            if not t.parts:
                self._drop(key)
            return None
        if not more:
            t.end = off + len(payload)
        for o, p in t.parts:
            if off < o + len(p) and o < off + len(payload):
                self._count(f"decoder.event.ipv{ver}.frag_overlap")
                break
        t.parts.append((off, payload))
        t.size += len(payload)
        self.held_bytes += len(payload)
        if t.end < 0 or not t.header:
            return None
        # complete when the parts cover [0, end) without a hole
        filled = 0
        for o, p in sorted(t.parts, key=lambda x: x[0]):
            if o > filled:
                return None
            filled = max(filled, o + len(p))
        if filled < t.end:
            return None
        buf = bytearray(filled)
        for o, p in reversed(t.parts):  # earliest arrival written last: first data wins
            buf[o : o + len(p)] = p
        self._drop(key)
        self._count(f"defrag.ipv{ver}.reassembled")
        body = bytes(buf[: t.end])
        if ver == 4:
            hdr = bytearray(t.header)
            struct.pack_into("!H", hdr, 2, len(hdr) + len(body))
            struct.pack_into("!H", hdr, 6, 0)  # no more fragments, offset 0
            hdr[10:12] = b"\x00\x00"
        else:
            hdr = bytearray(t.header)
            hdr[t.next_header_at] = t.proto
            struct.pack_into("!H", hdr, 4, len(hdr) - 40 + len(body))
        # the frame keeps the first fragment's link header (and VLAN tags), as Suricata's
        # reassembled packet does, so flow byte counts agree
        return t.link[0] + bytes(hdr) + body, t.link[1]


def _frames_batch(frames: list[tuple[bytes, int, int]]) -> PacketBatch:
    sizes = [len(f) for f, _, _ in frames]
    offsets = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    data = np.frombuffer(b"".join(f for f, _, _ in frames) + bytes(BATCH_PAD), dtype=np.uint8)
    return PacketBatch(
        data=data, offset=offsets, caplen=np.asarray(sizes, dtype=np.int32),
        wirelen=np.asarray(sizes, dtype=np.int32),
        ts_us=np.asarray([t for _, _, t in frames], dtype=np.int64),
        linktype=np.asarray([lt for _, lt, _ in frames], dtype=np.uint16), first_cnt=0,
        pkt_src="defrag",
    )
