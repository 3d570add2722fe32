"""Live capture from a Linux interface through an AF_PACKET socket, as PacketBatch objects.

A plain SOCK_RAW packet socket read with recvmsg: no libpcap needed at run time, and the
kernel does the parts that must happen before user space sees a packet (BPF filtering,
fanout load balancing across worker processes, promiscuous mode, the receive queue).
Each call to next_batch() returns whatever arrived within the batch window, possibly
nothing, so the caller's loop keeps running its timers on an idle link.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import select
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence

import numpy as np

from sensor.capture import (
    BATCH_PAD,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    CaptureError,
    PacketBatch,
)

# Linux ABI constants (include/uapi/linux/if_packet.h, asm-generic/socket.h, if_ether.h,
# if_arp.h); Python's socket module exports only a few of them.
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: struct timespec of the native word size
SIOCGIFINDEX = 0x8933
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534  # tun, wireguard: frames start at the IP header

_LINKTYPE_BY_ARPHRD = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,  # lo carries an all-zero Ethernet header
    ARPHRD_NONE: LINKTYPE_RAW,
}
_TCPDUMP_DLT = {LINKTYPE_ETHERNET: "EN10MB", LINKTYPE_RAW: "RAW"}
_PCAP_DLT = {LINKTYPE_ETHERNET: 1, LINKTYPE_RAW: 12}

_TIMESPEC = struct.Struct("@qq")
_AUXDATA = struct.Struct("@IIIHHHH")  # struct tpacket_auxdata
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUXDATA.size) + 64
_VLAN_ROOM = 4  # a VLAN tag the kernel stripped into metadata is put back into the frame

BpfProgram = list[tuple[int, int, int, int]]


def compile_bpf(expr: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = 65535) -> BpfProgram:
    """Compile a pcap filter expression to classic BPF (code, jt, jf, k) instructions.

    Uses `tcpdump -ddd` (no root or device needed with -y), else libpcap through scapy.
    Accepted packets are cut to snaplen by the filter itself, so large frames take less
    room in the socket's receive queue; the original length still comes with each packet.
    """
    if linktype not in _TCPDUMP_DLT:
        raise ValueError(f"no BPF compilation for linktype {linktype}")
    tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/usr/bin:/sbin")
    if tcpdump:
        cmd = [tcpdump, "-y", _TCPDUMP_DLT[linktype], "-s", str(snaplen), "-ddd", "--", expr]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["tcpdump failed"]
            raise ValueError(f"bad BPF filter {expr!r}: {lines[-1]}")
        nums = [int(w) for w in proc.stdout.split()]
        if not nums or len(nums) != 1 + 4 * nums[0]:
            raise ValueError(f"unexpected tcpdump -ddd output for {expr!r}")
        return [(nums[i], nums[i + 1], nums[i + 2], nums[i + 3]) for i in range(1, len(nums), 4)]
    return _compile_bpf_libpcap(expr, linktype, snaplen)


def _compile_bpf_libpcap(expr: str, linktype: int, snaplen: int) -> BpfProgram:
    try:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception
    except ImportError as e:
        raise ValueError("cannot compile BPF: neither tcpdump nor scapy+libpcap found") from e
    try:
        prog = compile_filter(expr, linktype=_PCAP_DLT[linktype])
    except (ImportError, OSError) as e:
        raise ValueError(f"cannot compile BPF: neither tcpdump nor libpcap found ({e})") from e
    except Scapy_Exception as e:
        raise ValueError(f"bad BPF filter {expr!r}: {e}") from e
    try:
        insns = [
            (int(ins.code), int(ins.jt), int(ins.jf), int(ins.k))
            for ins in (prog.bf_insns[i] for i in range(prog.bf_len))
        ]
    finally:
        free_filter(prog)
    # scapy compiles with its own snap length; accepting returns become our snaplen.
    return [(c, jt, jf, snaplen if c == 0x06 and k else k) for c, jt, jf, k in insns]


def _sock_fprog(insns: Sequence[tuple[int, int, int, int]]) -> tuple[bytes, object]:
    """Pack struct sock_fprog; the returned buffer holding the instructions must stay alive
    until setsockopt has copied them."""
    raw = b"".join(struct.pack("@HBBI", *ins) for ins in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    return struct.pack("@HP", len(insns), ctypes.addressof(buf)), buf


class LiveCapture:
    """Batches of frames from one interface (or one share of it, with fanout).

    iface         interface name, in the network namespace of the calling thread
    promisc       put the interface in promiscuous mode while the socket is open
    bpf           pcap filter expression, or precompiled (code, jt, jf, k) instructions
    fanout_group  join this PACKET_FANOUT group (hash mode): the processes that open the
                  same interface with the same group id share its packets, and the
                  symmetric flow hash keeps both directions of a flow in one process.
                  Members should use the same filter: the kernel picks the member first
                  and applies only that member's filter.
    fanout_defrag with fanout, reassemble IPv4 fragments before hashing
                  (PACKET_FANOUT_FLAG_DEFRAG) so all of a datagram goes to one member;
                  the member then receives the reassembled datagram, not the fragments
    rcvbuf        socket receive buffer in bytes (SO_RCVBUFFORCE, else SO_RCVBUF)
    batch_packets return after this many packets ...
    batch_ms      ... or once this many milliseconds have passed since the call
    snaplen       bytes kept per frame; wirelen keeps the full length
    buffer_bytes  frame buffer size; a batch also ends when it is full

    Frames carry linktype 1 (Ethernet) for Ethernet-like interfaces and loopback, 101
    (raw IP) for tun-style interfaces. Both received and sent packets are captured, as
    tcpdump does; on loopback only one copy of each is kept. An outer VLAN tag that the
    kernel moved into packet metadata is put back into the frame (caplen may then reach
    snaplen + 4). The kernel runs the BPF filter before that, on the untagged frame: a
    filter such as "udp" also matches tagged UDP, and "vlan" matches only inner tags.
    """

    def __init__(
        self,
        iface: str,
        *,
        promisc: bool = True,
        bpf: str | Sequence[tuple[int, int, int, int]] | None = None,
        fanout_group: int | None = None,
        fanout_defrag: bool = True,
        rcvbuf: int | None = None,
        batch_packets: int = 256,
        batch_ms: float = 100.0,
        snaplen: int = 65535,
        buffer_bytes: int = 4 << 20,
    ):
        if batch_packets < 1:
            raise ValueError("batch_packets must be at least 1")
        if batch_ms < 0:
            raise ValueError("batch_ms must not be negative")
        if not 64 <= snaplen <= 262144:
            raise ValueError("snaplen must be in 64..262144")
        if fanout_group is not None and not 0 <= fanout_group <= 0xFFFF:
            raise ValueError("fanout_group must be in 0..65535")
        self.iface = iface
        self.promisc = promisc
        self.fanout_group = fanout_group
        self.fanout_defrag = fanout_defrag
        self.batch_packets = batch_packets
        self.batch_ms = batch_ms
        self.snaplen = snaplen
        self.linktype = LINKTYPE_ETHERNET
        self._buf = bytearray(max(buffer_bytes, snaplen + _VLAN_ROOM))
        self._view = memoryview(self._buf)
        self._count = 0
        self._skip_outgoing = False
        self._kernel_packets = 0
        self._kernel_drops = 0
        self._sock: socket.socket | None = None
        self._sock = self._open(bpf, rcvbuf)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)

    # -- setup -------------------------------------------------------------------------

    def _fail(self, what: str, e: OSError | None = None) -> CaptureError:
        reason = what if e is None else f"{what}: {e.strerror or e}"
        return CaptureError(self.iface, None, reason)

    def _open(self, bpf: str | Sequence[tuple[int, int, int, int]] | None,
              rcvbuf: int | None) -> socket.socket:
        # Protocol 0 receives nothing until bind(), so no packet from another interface,
        # or one the filter would reject, is queued before the setup below is complete.
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as e:
            raise self._fail("permission denied: live capture needs root or CAP_NET_RAW") from e
        except OSError as e:
            raise self._fail("cannot open AF_PACKET socket", e) from e
        try:
            self._configure(sock, bpf, rcvbuf)
        except BaseException:
            sock.close()
            raise
        return sock

    def _configure(self, sock: socket.socket,
                   bpf: str | Sequence[tuple[int, int, int, int]] | None,
                   rcvbuf: int | None) -> None:
        ifindex = self._ifindex(sock)
        # Binding with protocol 0 selects the interface (and so its link type, which the
        # filter is compiled for) without starting delivery; the second bind starts it.
        try:
            sock.bind((self.iface, 0))
        except OSError as e:
            raise self._fail("cannot bind to interface", e) from e
        hatype = sock.getsockname()[3]
        if hatype not in _LINKTYPE_BY_ARPHRD:
            raise self._fail(f"unsupported link type (ARPHRD {hatype})")
        self.linktype = _LINKTYPE_BY_ARPHRD[hatype]
        if bpf is not None:
            self._attach_filter(sock, bpf)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if hatype == ARPHRD_LOOPBACK:
            try:  # loopback shows each packet twice: once sent, once received
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:  # kernels before 4.20: skip them while reading instead
                self._skip_outgoing = True
        if rcvbuf is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.bind((self.iface, ETH_P_ALL))
        except OSError as e:
            raise self._fail("cannot bind to interface", e) from e
        if self.promisc:
            mreq = struct.pack("@iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
            try:
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            except OSError as e:
                raise self._fail("cannot enable promiscuous mode", e) from e
        if self.fanout_group is not None:  # only a bound, running socket can join
            flags = PACKET_FANOUT_FLAG_DEFRAG if self.fanout_defrag else 0
            arg = self.fanout_group | ((PACKET_FANOUT_HASH | flags) << 16)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("@I", arg))
            except OSError as e:
                raise self._fail(f"cannot join fanout group {self.fanout_group}", e) from e
        sock.setblocking(False)

    def _ifindex(self, sock: socket.socket) -> int:
        """Interface index, looked up through the socket so it uses the socket's network
        namespace; also the first check that the interface exists."""
        name = self.iface.encode()
        if not name or len(name) > 15 or b"\0" in name:
            raise self._fail("invalid interface name")
        try:
            res = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, struct.pack("16s24x", name))
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise self._fail("no such interface") from e
            raise self._fail("cannot look up interface", e) from e
        return struct.unpack_from("@i", res, 16)[0]

    def _attach_filter(self, sock: socket.socket,
                       bpf: str | Sequence[tuple[int, int, int, int]]) -> None:
        if isinstance(bpf, str):
            try:
                insns = compile_bpf(bpf, self.linktype, self.snaplen)
            except (ValueError, OSError, subprocess.SubprocessError) as e:
                raise self._fail(str(e)) from e
        else:
            insns = [tuple(int(v) for v in ins) for ins in bpf]
        if not insns:
            raise self._fail("empty BPF program")
        fprog, _keep_alive = _sock_fprog(insns)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        except OSError as e:
            raise self._fail("kernel rejected BPF program", e) from e

    # -- reading -----------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket descriptor, for callers that poll several sources."""
        if self._sock is None:
            raise self._fail("capture is closed")
        return self._sock.fileno()

    def next_batch(self) -> PacketBatch:
        """Frames received until batch_packets arrived or batch_ms passed (maybe none)."""
        sock = self._sock
        if sock is None:
            raise self._fail("capture is closed")
        deadline = time.monotonic() + self.batch_ms / 1000.0
        view = self._view
        limit = len(self._buf) - self.snaplen - _VLAN_ROOM
        snaplen = self.snaplen
        insert_vlan = self.linktype == LINKTYPE_ETHERNET
        offsets: list[int] = []
        caplens: list[int] = []
        wirelens: list[int] = []
        stamps: list[int] = []
        cursor = 0
        while len(offsets) < self.batch_packets and cursor <= limit:
            try:
                nbytes, anc, _flags, addr = sock.recvmsg_into(
                    [view[cursor : cursor + snaplen]], _ANC_SIZE, socket.MSG_TRUNC
                )
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._poll.poll(max(1, int(remaining * 1000.0 + 0.999)))
                continue
            except OSError as e:
                if e.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                    if not sock.getsockname()[0]:  # the kernel unbound a removed device
                        self.close()
                        raise self._fail("interface disappeared", e) from e
                    continue  # link went down; the socket resumes when it comes back up
                raise self._fail("receive failed", e) from e
            if self._skip_outgoing and addr[2] == socket.PACKET_OUTGOING:
                continue
            caplen = min(nbytes, snaplen)
            wirelen = nbytes
            ts_us = 0
            status = tci = tpid = 0
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(data)
                    ts_us = sec * 1_000_000 + nsec // 1000
                elif level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, tp_len, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(data)
                    wirelen = max(tp_len, nbytes)  # original length, even if BPF cut it
            if ts_us <= 0:
                ts_us = time.time_ns() // 1000
            if insert_vlan and status & TP_STATUS_VLAN_VALID and caplen >= 12:
                if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                    tpid = ETH_P_8021Q
                start = cursor + 12
                view[start + 4 : cursor + caplen + 4] = self._buf[start : cursor + caplen]
                struct.pack_into("!HH", self._buf, start, tpid, tci)
                caplen += 4
                wirelen += 4
            offsets.append(cursor)
            caplens.append(caplen)
            wirelens.append(wirelen)
            stamps.append(ts_us)
            cursor += caplen
        return self._batch(cursor, offsets, caplens, wirelens, stamps)

    def _batch(self, used: int, offsets: list[int], caplens: list[int], wirelens: list[int],
               stamps: list[int]) -> PacketBatch:
        # The frame buffer is reused by the next call, so the batch gets its own copy.
        n = len(offsets)
        data = np.zeros(used + BATCH_PAD, dtype=np.uint8)
        data[:used] = np.frombuffer(self._buf, dtype=np.uint8, count=used)
        batch = PacketBatch(
            data=data,
            offset=np.array(offsets, dtype=np.int64),
            caplen=np.array(caplens, dtype=np.int32),
            wirelen=np.array(wirelens, dtype=np.int32),
            ts_us=np.array(stamps, dtype=np.int64),
            linktype=np.full(n, self.linktype, dtype=np.uint16),
            first_cnt=self._count + 1,
            iface=np.zeros(n, dtype=np.int32),
        )
        self._count += n
        return batch

    def __iter__(self) -> Iterator[PacketBatch]:
        """Batches until the capture is closed; empty ones mark idle batch windows."""
        while self._sock is not None:
            yield self.next_batch()

    # -- accounting and teardown -------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Kernel counters since open: packets that passed the filter (dropped ones
        included, as libpcap's ps_recv) and packets dropped for a full receive queue."""
        if self._sock is not None:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            packets, drops = struct.unpack("@II", raw)  # the kernel resets them on read
            self._kernel_packets += packets
            self._kernel_drops += drops
        return {"kernel_packets": self._kernel_packets, "kernel_drops": self._kernel_drops}

    @property
    def packets_read(self) -> int:
        """Frames returned so far (the next batch's first_cnt is this + 1)."""
        return self._count

    def close(self) -> None:
        """Close the socket; promiscuous mode and fanout membership end with it."""
        if self._sock is not None:
            self.stats()
            self._poll.unregister(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
