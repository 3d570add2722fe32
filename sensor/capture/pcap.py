"""Offline sources: pcap (both byte orders, micro/nano seconds), pcapng, gzip, stdin.

Records are walked with one struct read per record (the only per-packet Python work);
every other field is gathered with numpy from the record positions. Frames stay in the
chunk buffer they were read into, so a batch costs one copy of the file, not one per frame.
"""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from . import BATCH_PAD, CaptureError, PacketBatch

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1),
    b"\x4d\x3c\xb2\xa1": ("<", 1000),  # little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1000),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

# libpcap refuses records larger than this (or the file's snaplen, if larger).
MAX_RECORD = 262144
MAX_SNAPLEN = 1 << 24
MAX_WIRELEN = (1 << 31) - 1  # a wire length field is 32 bits; PacketBatch keeps int32
CHUNK = 4 << 20


class _Reader:
    """Blocking reads of exact sizes from a file, a pipe or a gzip stream."""

    def __init__(self, fileobj: BinaryIO):
        self.f = fileobj
        # a gzip stream read with readinto() loses what it decompressed in the call that
        # hits the damage; readinto1() returns every decompressed piece before the error
        self.readinto = fileobj.readinto1 if isinstance(fileobj, gzip.GzipFile) \
            else fileobj.readinto

    def read_into(self, mv: memoryview) -> int:
        got = 0
        while got < len(mv):
            try:
                n = self.readinto(mv[got:])
            except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
                raise _StreamError(got, f"compressed stream is damaged ({exc})") from exc
            if not n:
                break
            got += n
        return got


class _StreamError(Exception):
    def __init__(self, got: int, message: str):
        super().__init__(message)
        self.got = got
        self.message = message


class PcapSource:
    """Iterates PacketBatch objects from one pcap/pcapng file, gzip file or stdin ('-').

    After iteration, `error` holds the CaptureError that stopped reading early (None when the
    file was read to its end) and `packets` the number of records delivered.
    """

    def __init__(self, path: str, batch_size: int = 65536, first_cnt: int = 1):
        self.path = path
        self.name = "<stdin>" if path == "-" else path
        self.batch_size = batch_size
        self.next_cnt = first_cnt
        self.packets = 0
        self.offset = 0  # bytes of the (decompressed) input consumed so far
        self.error: CaptureError | None = None
        self.linktypes: set[int] = set()

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> BinaryIO:
        if self.path == "-":
            raw: BinaryIO = sys.stdin.buffer
        else:
            try:
                raw = open(self.path, "rb")  # noqa: SIM115 - closed in batches()
            except OSError as exc:
                raise CaptureError(self.name, None, f"cannot open: {exc.strerror}") from None
        head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        if head == GZIP_MAGIC:
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        return raw

    def batches(self) -> Iterator[PacketBatch]:
        try:
            f = self._open()
        except CaptureError as exc:
            self.error = exc
            return
        try:
            reader = _Reader(f)
            head = bytearray(4)
            try:
                n = reader.read_into(memoryview(head))
            except _StreamError as exc:
                self.error = CaptureError(self.name, 0, exc.message)
                return
            if n == 0:
                self.error = CaptureError(self.name, 0, "empty input: no capture file header")
                return
            if n < 4:
                self.error = CaptureError(self.name, 0, "truncated capture file header")
                return
            magic = bytes(head)
            try:
                if magic in PCAP_MAGICS:
                    yield from self._pcap(reader, magic)
                elif magic == PCAPNG_SHB:
                    yield from self._pcapng(reader, magic)
                else:
                    self.error = CaptureError(
                        self.name, 0, f"not a pcap or pcapng file (magic {magic.hex()})"
                    )
            except _StreamError as exc:  # damage inside the file header (gzip)
                self.error = CaptureError(self.name, 4 + exc.got, exc.message)
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    # -- chunking ----------------------------------------------------------------------------
    def _chunks(
        self, reader: _Reader, carry: bytes, base: int
    ) -> Iterator[tuple[bytearray, int, int, bool]]:
        """Yield (buffer, valid_len, file_offset_of_buffer, at_eof) with BATCH_PAD spare bytes.

        The caller reports how many bytes it consumed through self._consumed.
        """
        pending = carry
        size = CHUNK
        while True:
            buf = bytearray(len(pending) + size + BATCH_PAD)
            buf[: len(pending)] = pending
            try:
                got = reader.read_into(memoryview(buf)[len(pending) : len(pending) + size])
                stream_error = None
            except _StreamError as exc:
                got = exc.got
                stream_error = exc.message
            valid = len(pending) + got
            eof = got < size
            self._consumed = 0
            yield buf, valid, base, eof
            if stream_error is not None:
                self.error = CaptureError(self.name, base + valid, stream_error)
                self._stop = True
            if self._stop:
                return
            used = self._consumed
            self.offset = base + used
            if eof:
                if used < valid and self.error is None:
                    self._truncated(base + used, valid - used)
                return
            pending = bytes(buf[used:valid])
            base += used
            # a record larger than the chunk: grow so it fits next time
            size = max(CHUNK, self._need)

    def _truncated(self, offset: int, have: int) -> None:
        self.error = CaptureError(
            self.name, offset, f"truncated record: file ends {have} bytes into it"
        )

    def _emit(
        self,
        buf: bytearray,
        data_pos: np.ndarray,
        caplen: np.ndarray,
        wirelen: np.ndarray,
        ts_us: np.ndarray,
        linktype: np.ndarray,
        iface: np.ndarray | None,
    ) -> Iterator[PacketBatch]:
        data = np.frombuffer(buf, dtype=np.uint8)
        n = len(data_pos)
        for lo in range(0, n, self.batch_size):
            hi = min(n, lo + self.batch_size)
            batch = PacketBatch(
                data=data,
                offset=data_pos[lo:hi],
                caplen=caplen[lo:hi],
                wirelen=wirelen[lo:hi],
                ts_us=ts_us[lo:hi],
                linktype=linktype[lo:hi],
                first_cnt=self.next_cnt,
                iface=None if iface is None else iface[lo:hi],
            )
            self.next_cnt += hi - lo
            self.packets += hi - lo
            yield batch

    # -- classic pcap ----------------------------------------------------------------------------
    def _pcap(self, reader: _Reader, magic: bytes) -> Iterator[PacketBatch]:
        endian, ts_div = PCAP_MAGICS[magic]
        rest = bytearray(20)
        if reader.read_into(memoryview(rest)) < 20:
            self.error = CaptureError(self.name, 4, "truncated pcap global header")
            return
        _vmaj, _vmin, _zone, _sig, snaplen, linktype = struct.unpack(endian + "HHiIII", rest)
        linktype &= 0xFFFF  # upper bits carry FCS information
        self.linktypes.add(linktype)
        # a crafted snaplen must not let one record claim gigabytes (libpcap caps it too)
        limit = max(MAX_RECORD, min(snaplen, MAX_SNAPLEN))
        self._stop = False
        self._need = 0
        incl_at = struct.Struct(endian + "I").unpack_from
        rec_dtype = np.dtype(endian + "u4")
        for buf, valid, base, _eof in self._chunks(reader, b"", 24):
            positions: list[int] = []
            append = positions.append
            pos = 0
            end16 = valid - 16
            while pos <= end16:
                incl = incl_at(buf, pos + 8)[0]
                if incl > limit:
                    self.error = CaptureError(
                        self.name, base + pos,
                        f"record claims {incl} captured bytes, more than the limit {limit}",
                    )
                    self._stop = True
                    break
                nxt = pos + 16 + incl
                if nxt > valid:
                    self._need = 16 + incl
                    break
                append(pos)
                pos = nxt
            self._consumed = pos
            if not positions:
                continue
            rec = np.asarray(positions, dtype=np.int64)
            data = np.frombuffer(buf, dtype=np.uint8)
            hdr = data[rec[:, None] + np.arange(16)].copy().view(rec_dtype).reshape(-1, 4)
            hdr = hdr.astype(np.int64)
            ts_us = hdr[:, 0] * 1_000_000 + hdr[:, 1] // ts_div
            caplen = hdr[:, 2].astype(np.int32)
            wirelen = np.minimum(hdr[:, 3], MAX_WIRELEN).astype(np.int32)
            lt = np.full(len(rec), linktype, dtype=np.uint16)
            yield from self._emit(buf, rec + 16, caplen, wirelen, ts_us, lt, None)

    # -- pcapng ---------------------------------------------------------------------------
    def _pcapng(self, reader: _Reader, magic: bytes) -> Iterator[PacketBatch]:
        self._stop = False
        self._need = 0
        endian = "<"
        ifaces: list[tuple[int, int, int, int]] = []  # linktype, snaplen, resolution, offset_s
        # interfaces of every section so far: a packet's interface is section_base + its id,
        # so packets of an earlier section in the same chunk keep their own interface
        all_ifaces: list[tuple[int, int, int, int]] = []
        section_base = 0
        for buf, valid, base, _eof in self._chunks(reader, magic, 0):
            pos = 0
            data_pos: list[int] = []
            caps: list[int] = []
            wires: list[int] = []
            ts_raw: list[int] = []
            if_ids: list[int] = []
            while pos + 12 <= valid:
                if bytes(buf[pos : pos + 4]) == PCAPNG_SHB:
                    bom = bytes(buf[pos + 8 : pos + 12])
                    if bom == b"\x4d\x3c\x2b\x1a":
                        endian = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        endian = ">"
                    else:
                        self._fail(base + pos, "pcapng section header has a bad byte-order magic")
                        break
                btype, blen = struct.unpack_from(endian + "II", buf, pos)
                if blen < 12 or blen % 4:
                    self._fail(base + pos, f"pcapng block of type {btype} has bad length {blen}")
                    break
                if blen > MAX_RECORD + 4096 and btype in (2, 3, 6) or blen > MAX_SNAPLEN + 4096:
                    # a packet block past libpcap's limit, or any block that would make the
                    # reader buffer gigabytes of a pipe before finding out it is damaged
                    self._fail(base + pos, f"pcapng block claims {blen} bytes, over the limit")
                    break
                if pos + blen > valid:
                    self._need = blen
                    break
                body = pos + 8
                if btype == 0x0A0D0D0A:
                    ifaces = []
                    section_base = len(all_ifaces)
                elif btype == 1:
                    ifaces.append(self._idb(buf, body, pos + blen - 4, endian))
                    all_ifaces.append(ifaces[-1])
                elif btype in (6, 2, 3):
                    rec = self._packet_block(buf, btype, body, blen, endian, ifaces, base + pos)
                    if rec is None:
                        break
                    data_pos.append(rec[0])
                    caps.append(rec[1])
                    wires.append(min(rec[2], MAX_WIRELEN))
                    ts_raw.append(rec[3])
                    if_ids.append(section_base + rec[4])
                pos += blen
            self._consumed = pos
            if not data_pos:
                continue
            ifid = np.asarray(if_ids, dtype=np.int32)
            table = np.asarray(all_ifaces, dtype=np.int64).reshape(-1, 4)
            raw = np.asarray(ts_raw, dtype=np.uint64)
            ts_us = np.empty(len(raw), dtype=np.int64)
            for i, (_lt, _snap, res, off) in enumerate(table):
                sel = ifid == i
                if not sel.any():
                    continue
                ts_us[sel] = _to_usec(raw[sel], int(res)) + int(off) * 1_000_000
            lt = table[ifid, 0].astype(np.uint16)
            self.linktypes.update(int(x) for x in np.unique(lt))
            yield from self._emit(
                buf, np.asarray(data_pos, dtype=np.int64), np.asarray(caps, dtype=np.int32),
                np.asarray(wires, dtype=np.int32), ts_us, lt, ifid,
            )

    def _fail(self, offset: int, message: str) -> None:
        self.error = CaptureError(self.name, offset, message)
        self._stop = True

    @staticmethod
    def _idb(buf: bytearray, body: int, end: int, endian: str) -> tuple[int, int, int, int]:
        linktype, _res, snaplen = struct.unpack_from(endian + "HHI", buf, body)
        resolution = 6
        offset = 0
        opt = body + 8
        while opt + 4 <= end:
            code, olen = struct.unpack_from(endian + "HH", buf, opt)
            if code == 0:
                break
            if code == 9 and olen >= 1:
                resolution = buf[opt + 4] | 0  # high bit set: power of two
            elif code == 14 and olen >= 8:
                offset = struct.unpack_from(endian + "q", buf, opt + 4)[0]
                offset = max(-(1 << 32), min(offset, 1 << 32))  # seconds; int64 us fits
            opt += 4 + ((olen + 3) & ~3)
        return linktype, snaplen, resolution, offset

    def _packet_block(
        self, buf: bytearray, btype: int, body: int, blen: int, endian: str,
        ifaces: list[tuple[int, int, int, int]], offset: int,
    ) -> tuple[int, int, int, int, int] | None:
        room = blen - 12
        if btype == 6:
            if room < 20:
                self._fail(offset, "pcapng enhanced packet block too short")
                return None
            ifid, hi, lo, cap, wire = struct.unpack_from(endian + "IIIII", buf, body)
            data, room = body + 20, room - 20
        elif btype == 2:
            if room < 20:
                self._fail(offset, "pcapng packet block too short")
                return None
            ifid, _drops, hi, lo, cap, wire = struct.unpack_from(endian + "HHIIII", buf, body)
            data, room = body + 20, room - 20
        else:
            if room < 4:
                self._fail(offset, "pcapng simple packet block too short")
                return None
            ifid, hi, lo = 0, 0, 0
            wire = struct.unpack_from(endian + "I", buf, body)[0]
            snap = ifaces[0][1] if ifaces else 0
            cap = min(wire, room - 4, snap or wire)
            data, room = body + 4, room - 4
        if ifid >= len(ifaces):
            self._fail(offset, f"packet refers to interface {ifid}, but only {len(ifaces)} defined")
            return None
        if cap > room:
            self._fail(offset, f"packet claims {cap} captured bytes in a {room}-byte block")
            return None
        return data, cap, wire, (hi << 32) | lo, ifid


def _to_usec(raw: np.ndarray, resolution: int) -> np.ndarray:
    """Convert pcapng timestamp units (if_tsresol) to microseconds."""
    if resolution & 0x80:
        shift = resolution & 0x7F
        return ((raw.astype(np.float64) / (1 << shift)) * 1e6).astype(np.int64)
    if resolution >= 26:  # 10**20 units a second: every uint64 timestamp is below 1 us
        return np.zeros(len(raw), dtype=np.int64)
    if resolution >= 6:
        return (raw // np.uint64(10 ** (resolution - 6))).astype(np.int64)
    return raw.astype(np.int64) * 10 ** (6 - resolution)
