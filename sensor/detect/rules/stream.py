"""TCP stream data for payload rules, the way Suricata's raw stream inspection sees it.

For a TCP session (handshake seen, or picked up midstream when `rules.midstream` is on),
Suricata matches stream-capable payload rules against the reassembled stream of the
packet's direction, not against each segment. When that stream is inspected is driven by
its app-layer: once the peer acknowledges data, the parser sees it, and a completed
message (an HTTP request/response, an SMB record...) triggers raw inspection on the next
packet of that direction, over everything received so far. We have no app-layer, so:
  * a stream that opens like HTTP triggers when the peer's acknowledgement completes an
    HTTP message (headers plus Content-Length / chunked body), or acknowledges this
    side's FIN (a response without length ends with the connection);
  * a stream of NetBIOS session records carrying SMB triggers on each acknowledged
    complete record;
  * any other stream (no parser to complete anything) is inspected on its own FIN or
    RST, or once a chunk (2560 bytes) of acknowledged data waits;
  * with `rules.async_oneside` and only one side seen, data counts as acknowledged and
    is inspected each time a chunk (2560 bytes) is waiting.
Data still not inspected when the flow ends is inspected on a flow-end pseudo packet
(`pkt_src: "stream (flow timeout)"`, no pcap_cnt). docs/rules.md gives the measurement
behind this model. Reassembly itself is simple: in-order data is appended, overlapping
retransmissions add only their new tail, out-of-order segments wait for the gap, SYN data
counts only with TCP Fast Open, and stream.reassembly.depth (1 MiB) caps what is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10
MASK32 = 0xFFFFFFFF
HALF = 1 << 31
REASSEMBLY_DEPTH = 1 << 20
KEEP = 1 << 16  # inspected bytes are dropped from memory beyond this
HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                b"CONNECT ", b"TRACE ")
_CLEN = re.compile(rb"(?:^|\n)content-length:\s*(\d+)")
_NOBODY = re.compile(rb"http/\d\.\d (1\d\d|204|304)")
SMB_MAGIC = (b"\xffSMB", b"\xfeSMB", b"\xfdSMB")
CHUNK_SIZE = 2560  # Suricata's stream.reassembly.toserver/toclient-chunk-size default


@dataclass
class Direction:
    """One direction of a session: data from `base` (absolute seq of buf[0]) on."""

    base: int | None = None
    buf: bytearray = field(default_factory=bytearray)
    dropped: int = 0  # bytes removed from the front after inspection
    progress: int = 0  # buf offset inspected so far
    acked: int = 0  # buf offset acknowledged by the peer
    pending: dict[int, bytes] = field(default_factory=dict)
    trigger: bool = False  # the peer acknowledged new data: inspect on the next packet
    kind: str | None = None  # "http" when the stream opens like HTTP, else "other"
    msg_end: int = 0  # buf offset after the last complete HTTP message
    scan: int = 0  # where the HTTP message scan goes on
    fin: int | None = None  # buf offset of this side's FIN (its sequence number)

    @property
    def total(self) -> int:
        return self.dropped + len(self.buf)

    def add(self, seq: int, data: bytes) -> bool:
        """Queue a segment; False when it lies before the stream start (out of window:
        Suricata does not add it, the packet's own payload is inspected instead)."""
        if self.base is None:
            self.base = seq
        rel = (seq - self.base) & MASK32
        if rel >= HALF:
            return False
        rel -= self.dropped
        if rel < 0:
            if -rel >= len(data):
                return True
            data, rel = data[-rel:], 0
        if rel > len(self.buf):
            if len(self.pending) < 256:
                self.pending[rel] = data
            return True
        self._append(data[len(self.buf) - rel:])
        while self.pending:
            ready = [k for k in self.pending if k <= len(self.buf)]
            if not ready:
                break
            for k in sorted(ready):
                d = self.pending.pop(k)
                if k + len(d) > len(self.buf):
                    self._append(d[len(self.buf) - k:])
        return True

    def _append(self, data: bytes) -> None:
        room = REASSEMBLY_DEPTH - self.total
        if room > 0 and data:
            self.buf += data[:room]

    def ack(self, ack: int) -> None:
        if self.base is None:
            return
        rel = (ack - self.base) & MASK32
        if rel >= HALF:
            return
        if self.fin is not None and rel - self.dropped > self.fin:
            # the peer acknowledged our FIN: the application saw the end of the stream
            if self.progress < len(self.buf):
                self.trigger = True
        acked = min(rel - self.dropped, len(self.buf))
        if acked > self.acked:
            self.acked = acked
            kind = self._kind()
            before = self.msg_end
            if kind == "http":
                self._scan_http()
            elif kind == "smb":
                self._scan_nbss()
            if kind in ("http", "smb"):
                # the parser completed a message with this acknowledgement
                if self.acked >= self.msg_end > before:
                    self.trigger = True
            elif self.acked - self.progress >= CHUNK_SIZE:
                self.trigger = True

    def _kind(self) -> str | None:
        if self.kind is None and len(self.buf) + self.dropped >= 8:
            head = bytes(self.buf[:8])
            if self.dropped:
                self.kind = "other"
            elif head.startswith(HTTP_METHODS) or head.startswith(b"HTTP/"):
                self.kind = "http"
            elif head[0] == 0 and head[4:8] in SMB_MAGIC:
                self.kind = "smb"
            else:
                self.kind = "other"
        return self.kind

    def _scan_nbss(self) -> None:
        """Advance msg_end over acknowledged NetBIOS session records (SMB over TCP)."""
        buf = self.buf
        while self.scan + 4 <= self.acked:
            end = self.scan + 4 + int.from_bytes(buf[self.scan + 1:self.scan + 4], "big")
            if end > self.acked:
                return
            self.scan = self.msg_end = end

    def _scan_http(self) -> None:
        """Advance msg_end over acknowledged complete HTTP messages (headers + body)."""
        buf = self.buf
        while True:
            hend = buf.find(b"\r\n\r\n", self.scan, self.acked)
            if hend < 0:
                return
            head = bytes(buf[self.scan:hend]).lower()
            body = hend + 4
            m = _CLEN.search(head)
            if b"transfer-encoding: chunked" in head:
                last = buf.find(b"0\r\n\r\n", body, self.acked)
                if last < 0:
                    return
                end = last + 5
            elif m is not None:
                end = body + int(m.group(1))
            elif head.startswith(b"http/") and not _NOBODY.match(head):
                return  # a response without length ends with the connection
            else:
                end = body
            if end > self.acked:
                return
            self.scan = self.msg_end = end

    def take(self, upto: int) -> bytes | None:
        """Data from the inspection point up to buf offset `upto`, or None if nothing new."""
        if upto <= self.progress:
            return None
        chunk = bytes(self.buf[self.progress:upto])
        self.progress = upto
        if self.progress > KEEP:
            cut = self.progress
            del self.buf[:cut]
            self.dropped += cut
            self.progress -= cut
            self.acked = max(0, self.acked - cut)
            self.msg_end = max(0, self.msg_end - cut)
            self.scan = max(0, self.scan - cut)
            if self.fin is not None:
                self.fin = max(0, self.fin - cut)
            self.pending = {k - cut: v for k, v in self.pending.items() if k - cut >= 0}
        return chunk


@dataclass
class Session:
    """Both directions of a TCP session; index 0 to_server, 1 to_client."""

    dirs: tuple[Direction, Direction] = field(
        default_factory=lambda: (Direction(), Direction()))


def on_packet(sess: Session, to_server: bool, flags: int, seq: int, ack: int,
              payload: bytes, async_oneside: bool = False) -> tuple[bytes | None, bool]:
    """Feed one packet: (stream chunk to inspect on it or None, payload went to stream).

    `payload` of a SYN is only passed for TCP Fast Open (else the caller inspects it as a
    packet, as Suricata does).
    """
    d = sess.dirs[0 if to_server else 1]
    o = sess.dirs[1 if to_server else 0]
    took = False
    if flags & TH_SYN:
        if d.base is None:
            d.base = (seq + 1) & MASK32
            if payload:
                took = d.add((seq + 1) & MASK32, payload)
    elif payload:
        took = d.add(seq, payload)
    elif d.base is None:
        d.base = seq
    if flags & TH_FIN and d.base is not None:
        rel = ((seq + len(payload) - d.base) & MASK32) - d.dropped
        if 0 <= rel < HALF:
            d.fin = rel
    if flags & TH_ACK and not flags & TH_SYN:
        o.ack(ack)
    if async_oneside and o.base is None:
        # only one side is ever seen: its data counts as acknowledged, and is inspected
        # once a chunk's worth (stream.reassembly.to*-chunk-size) is waiting
        if len(d.buf) - d.progress < CHUNK_SIZE:
            return None, took
        d.acked = len(d.buf)
        return d.take(d.acked), took
    if flags & (TH_FIN | TH_RST) and d._kind() not in ("http", "smb"):
        d.trigger = True  # no parser to wait for: the stream ends, inspect it
    if not d.trigger:
        return None, took
    d.trigger = False
    return d.take(len(d.buf)), took


def flush(sess: Session) -> list[tuple[bool, bytes]]:
    """Everything not inspected yet, per direction (flow end pseudo packets)."""
    out = []
    for i, d in enumerate(sess.dirs):
        chunk = d.take(len(d.buf))
        if chunk:
            out.append((i == 0, chunk))
    return out
