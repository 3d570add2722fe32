"""LiveCapture against real traffic between two network namespaces joined by a veth pair.

The test process enters a namespace with setns(2) only to create sockets there: a socket
stays in the namespace it was created in, so capture and traffic sockets are then used
from the original namespace. Needs root and iproute2 `ip netns`.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from netns_lab import VethLab, netns

from sensor.capture import BATCH_PAD, CaptureError, PacketBatch
from sensor.capture.live import LiveCapture, compile_bpf

IP_A, IP_B = "10.77.0.1", "10.77.0.2"
REPO = Path(__file__).resolve().parents[1]

if os.geteuid() != 0:
    pytest.skip("live capture tests need root (AF_PACKET, ip netns)", allow_module_level=True)
if not shutil.which("ip"):
    pytest.skip("iproute2 `ip` not installed", allow_module_level=True)

class Pair(VethLab):
    """Namespaces ns_a and ns_b, veth va (in ns_a, IP_A) <-> vb (in ns_b, IP_B)."""

    def __init__(self) -> None:
        super().__init__("nsen", "v", IP_A, IP_B)

    def capture(self, **kw) -> LiveCapture:
        with netns(self.ns_b):
            return LiveCapture(self.vb, **kw)

    def udp_socket(self, ns: str, addr: str, port: int = 0) -> socket.socket:
        with netns(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, port))
        s.settimeout(2.0)
        return s

    def ping(self, count: int, target: str = IP_B) -> None:
        self.ip("netns", "exec", self.ns_a, "ping", "-c", str(count), "-i", "0.05", "-W", "2",
                "-q", target)


@pytest.fixture
def pair():
    with Pair().running() as p:
        yield p


# -- helpers -------------------------------------------------------------------------------


def collect(cap: LiveCapture, want, timeout: float = 5.0) -> list[PacketBatch]:
    """Read batches until want(frames so far) is true or the timeout passes."""
    batches: list[PacketBatch] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batches.append(cap.next_batch())
        if want(frames(batches)):
            break
    return batches


def frames(batches: list[PacketBatch]) -> list[dict]:
    """Each frame decoded to the fields the tests look at."""
    out = []
    for b in batches:
        for i in range(len(b)):
            raw = b.frame(i)
            f = {"raw": raw, "caplen": int(b.caplen[i]), "wirelen": int(b.wirelen[i]),
                 "ts": int(b.ts_us[i]), "ethertype": struct.unpack_from("!H", raw, 12)[0]}
            l3 = 14
            while f["ethertype"] in (0x8100, 0x88A8):
                f.setdefault("vlans", []).append(struct.unpack_from("!H", raw, l3)[0] & 0xFFF)
                f["ethertype"] = struct.unpack_from("!H", raw, l3 + 2)[0]
                l3 += 4
            if f["ethertype"] == 0x0800:
                ihl = (raw[l3] & 0x0F) * 4
                f["l3"] = l3
                f["iplen"] = struct.unpack_from("!H", raw, l3 + 2)[0]
                f["frag"] = struct.unpack_from("!H", raw, l3 + 6)[0] & 0x3FFF
                f["proto"] = raw[l3 + 9]
                f["src"] = socket.inet_ntoa(raw[l3 + 12 : l3 + 16])
                f["dst"] = socket.inet_ntoa(raw[l3 + 16 : l3 + 20])
                l4 = l3 + ihl
                if f["proto"] == 17 and not f["frag"] & 0x1FFF and len(raw) >= l4 + 8:
                    f["sport"], f["dport"] = struct.unpack_from("!HH", raw, l4)
                    f["payload"] = raw[l4 + 8 :]
                elif f["proto"] == 1 and len(raw) >= l4 + 2:
                    f["icmp_type"] = raw[l4]
            out.append(f)
    return out


def udp(fs: list[dict], port: int | None = None) -> list[dict]:
    return [f for f in fs if "sport" in f and (port is None or port in (f["sport"], f["dport"]))]


def check_batch_layout(batches: list[PacketBatch], first: int = 1) -> None:
    """Array shapes and dtypes, running first_cnt, and the zero pad after the last frame."""
    expect_cnt = first
    for b in batches:
        n = len(b)
        assert b.first_cnt == expect_cnt
        expect_cnt += n
        assert b.data.dtype == np.uint8
        assert b.offset.dtype == np.int64 and b.caplen.dtype == np.int32
        assert b.wirelen.dtype == np.int32 and b.ts_us.dtype == np.int64
        assert b.linktype.dtype == np.uint16 and b.iface is not None
        for arr in (b.offset, b.caplen, b.wirelen, b.ts_us, b.linktype, b.iface):
            assert arr.shape == (n,)
        assert (b.linktype == 1).all() and (b.iface == 0).all()
        end = int(b.offset[-1] + b.caplen[-1]) if n else 0
        assert len(b.data) - end >= BATCH_PAD
        assert not b.data[end:].any()
        if n:
            assert b.offset[0] == 0
            assert (b.offset[1:] == b.offset[:-1] + b.caplen[:-1]).all()


# -- tests ---------------------------------------------------------------------------------


def test_icmp_and_udp_frames(pair):
    t0 = time.time_ns() // 1000
    with pair.capture(batch_packets=8, batch_ms=50) as cap:
        pair.ping(5)
        tx = pair.udp_socket(pair.ns_a, IP_A, 40001)
        rx = pair.udp_socket(pair.ns_b, IP_B, 9999)
        sizes = [0, 1, 100, 1000, 1472]
        for size in sizes:
            tx.sendto(bytes([size % 251]) * size, (IP_B, 9999))
            assert len(rx.recvfrom(2000)[0]) == size
        tx.close()
        rx.close()

        def done(fs):
            icmp = [f for f in fs if f.get("proto") == 1]
            return len(icmp) >= 10 and len(udp(fs, 9999)) >= len(sizes)

        batches = collect(cap, done)
    t1 = time.time_ns() // 1000
    check_batch_layout(batches)
    assert all(len(b) <= 8 for b in batches)
    fs = frames(batches)

    requests = [f for f in fs if f.get("icmp_type") == 8]
    replies = [f for f in fs if f.get("icmp_type") == 0]
    assert len(requests) == 5 and len(replies) == 5
    assert all((f["src"], f["dst"]) == (IP_A, IP_B) for f in requests)
    assert all((f["src"], f["dst"]) == (IP_B, IP_A) for f in replies)

    datagrams = udp(fs, 9999)
    assert [len(f["payload"]) for f in datagrams] == sizes
    for f, size in zip(datagrams, sizes, strict=True):
        assert (f["src"], f["dst"], f["sport"], f["dport"]) == (IP_A, IP_B, 40001, 9999)
        assert f["payload"] == bytes([size % 251]) * size

    for f in fs:
        assert f["caplen"] == f["wirelen"] == len(f["raw"])
        if "iplen" in f:
            assert f["wirelen"] == 14 + f["iplen"]
    stamps = [f["ts"] for f in fs]
    assert stamps == sorted(stamps)
    assert t0 - 1_000_000 <= stamps[0] and stamps[-1] <= t1 + 1_000_000


def test_snaplen_truncates_but_keeps_wire_length(pair):
    # Without a filter the socket cuts the copy; with one the BPF return value cuts the
    # packet in the kernel, and the original length must still come through.
    with pair.capture(snaplen=128, batch_ms=50) as plain, \
            pair.capture(snaplen=128, bpf="udp", batch_ms=50) as filtered:
        tx = pair.udp_socket(pair.ns_a, IP_A)
        tx.sendto(b"z" * 1400, (IP_B, 9999))
        tx.sendto(b"y" * 10, (IP_B, 9999))
        tx.close()
        for cap in (plain, filtered):
            batches = collect(cap, lambda fs: len(udp(fs, 9999)) >= 2)
            check_batch_layout(batches)
            big, small = udp(frames(batches), 9999)
            assert (big["caplen"], big["wirelen"]) == (128, 14 + 20 + 8 + 1400)
            assert big["iplen"] == 20 + 8 + 1400 and big["payload"] == b"z" * (128 - 42)
            assert (small["caplen"], small["wirelen"]) == (52, 52)


def test_batch_limits_and_running_count(pair):
    with pair.capture(bpf="udp port 9999", batch_packets=4, batch_ms=300) as cap:
        tx = pair.udp_socket(pair.ns_a, IP_A)
        for i in range(10):
            tx.sendto(struct.pack("!I", i), (IP_B, 9999))
        tx.close()
        time.sleep(0.2)  # all ten queued before the first read
        batches = [cap.next_batch() for _ in range(3)]
        assert [len(b) for b in batches] == [4, 4, 2]
        assert [b.first_cnt for b in batches] == [1, 5, 9]
        payloads = [struct.unpack("!I", f["payload"])[0] for f in frames(batches)]
        assert payloads == list(range(10))
        check_batch_layout(batches)

        t = time.monotonic()
        idle = cap.next_batch()  # nothing more arrives: an empty batch after batch_ms
        elapsed = time.monotonic() - t
        assert len(idle) == 0 and idle.first_cnt == 11
        assert 0.25 <= elapsed < 1.5
        check_batch_layout([idle], first=11)
        assert cap.packets_read == 10
        assert cap.stats() == {"kernel_packets": 10, "kernel_drops": 0}
        assert cap.stats() == {"kernel_packets": 10, "kernel_drops": 0}  # accumulated


def test_bpf_filter_keeps_only_matching(pair):
    program = compile_bpf("udp port 9999")
    assert program and all(len(ins) == 4 for ins in program)
    with pair.capture(bpf="udp port 9999", batch_ms=50) as by_expr, \
            pair.capture(bpf=program, batch_ms=50) as by_program, \
            pair.capture(batch_ms=50) as everything:
        tx = pair.udp_socket(pair.ns_a, IP_A, 40002)
        for port in (9999, 9998, 9999, 9997, 9999):
            tx.sendto(b"payload", (IP_B, port))
        tx.close()
        pair.ping(2)
        all_frames = frames(collect(everything, lambda fs: len(udp(fs)) >= 5
                                    and sum(f.get("proto") == 1 for f in fs) >= 4))
        assert len(udp(all_frames)) == 5
        for cap in (by_expr, by_program):
            fs = frames(collect(cap, lambda fs: len(fs) >= 3))
            fs += frames(collect(cap, lambda fs: False, timeout=0.3))  # nothing else arrives
            assert len(fs) == 3
            assert all(f["proto"] == 17 and f["dport"] == 9999 for f in fs)
            assert cap.stats()["kernel_packets"] == 3


def test_fanout_keeps_each_flow_on_one_socket(pair):
    group = os.getpid() & 0xFFFF
    flows, rounds = 24, 3
    with pair.capture(fanout_group=group, bpf="udp", batch_ms=50) as c1, \
            pair.capture(fanout_group=group, bpf="udp", batch_ms=50) as c2:
        server = pair.udp_socket(pair.ns_b, IP_B, 9999)
        clients = [pair.udp_socket(pair.ns_a, IP_A, 41000 + i) for i in range(flows)]
        for r in range(rounds):
            for c in clients:  # request A -> B and echo B -> A: both directions of a flow
                c.sendto(bytes([r]) * 20, (IP_B, 9999))
                data, peer = server.recvfrom(100)
                server.sendto(data, peer)
                assert c.recvfrom(100)[0] == data
        for s in [server, *clients]:
            s.close()
        total = flows * rounds * 2
        got: dict[int, list[dict]] = {1: [], 2: []}
        deadline = time.monotonic() + 5
        while len(got[1]) + len(got[2]) < total and time.monotonic() < deadline:
            got[1] += frames([c1.next_batch()])
            got[2] += frames([c2.next_batch()])
    assert len(got[1]) + len(got[2]) == total

    owner: dict[int, set[int]] = {}
    for sock_id, fs in got.items():
        for f in fs:
            client_port = f["sport"] if f["src"] == IP_A else f["dport"]
            owner.setdefault(client_port, set()).add(sock_id)
    assert sorted(owner) == [41000 + i for i in range(flows)]
    assert all(len(s) == 1 for s in owner.values()), owner
    assert {next(iter(s)) for s in owner.values()} == {1, 2}  # the load is actually shared


@pytest.mark.parametrize("defrag", [True, False])
def test_fanout_defrag(pair, defrag):
    # With FLAG_DEFRAG the kernel reassembles IPv4 fragments before hashing and hands the
    # member the whole datagram; without it the fragments arrive as they are.
    with pair.capture(fanout_group=(os.getpid() + 1) & 0xFFFF, fanout_defrag=defrag,
                      bpf="udp", batch_ms=50) as cap:
        tx = pair.udp_socket(pair.ns_a, IP_A, 40004)
        tx.sendto(b"f" * 3000, (IP_B, 9999))
        tx.close()
        want = 1 if defrag else 3
        fs = frames(collect(cap, lambda fs: len(fs) >= want))
        fs += frames(collect(cap, lambda fs: False, timeout=0.3))
    if defrag:
        assert len(fs) == 1
        assert fs[0]["iplen"] == 3028 and fs[0]["payload"] == b"f" * 3000
        assert fs[0]["caplen"] == fs[0]["wirelen"] == 14 + 3028
    else:
        assert len(fs) == 3
        assert sum(f["iplen"] - 20 for f in fs) == 3008
        assert [f["frag"] & 0x2000 != 0 for f in fs] == [True, True, False]


def test_promiscuous_mode_follows_socket(pair):
    def promiscuity() -> int:
        out = pair.ip("-n", pair.ns_b, "-d", "link", "show", pair.vb).stdout.split()
        return int(out[out.index("promiscuity") + 1])

    assert promiscuity() == 0
    cap = pair.capture(promisc=True)
    try:
        assert promiscuity() == 1
    finally:
        cap.close()
    assert promiscuity() == 0
    with pair.capture(promisc=False):
        assert promiscuity() == 0


def _ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp_part = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp_part), 1, 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    words = sum(struct.unpack("!10H", hdr))
    words = (words & 0xFFFF) + (words >> 16)
    csum = ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + udp_part


def test_vlan_tags_restored(pair):
    # The receive path moves the outer 802.1Q/802.1ad tag into packet metadata before
    # packet sockets see the frame; the capture must put it back. Frames are injected
    # raw from the peer, so this needs no 8021q module.
    ip_pkt = _ipv4_udp(IP_A, IP_B, 40003, 9999, b"tagged")
    eth = b"\xff" * 6 + bytes.fromhex("020000000001")
    single = eth + struct.pack("!HH", 0x8100, 0x2064) + struct.pack("!H", 0x0800) + ip_pkt
    qinq = (eth + struct.pack("!HHHH", 0x88A8, 0x00C8, 0x8100, 0x0064)
            + struct.pack("!H", 0x0800) + ip_pkt)
    with pair.capture(batch_ms=50) as cap:
        with netns(pair.ns_a):
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        raw.bind((pair.va, 0))
        raw.send(single)
        raw.send(qinq)
        raw.close()
        fs = [f for f in frames(collect(cap, lambda fs: len(udp(fs)) >= 2)) if "sport" in f]
    assert [f["raw"] for f in fs] == [single, qinq]
    assert fs[0]["vlans"] == [100] and fs[0]["l3"] == 18
    assert fs[1]["vlans"] == [200, 100] and fs[1]["l3"] == 22
    assert all(f["caplen"] == f["wirelen"] == len(f["raw"]) for f in fs)
    assert (fs[0]["src"], fs[0]["dst"], fs[0]["sport"], fs[0]["payload"]) == (
        IP_A, IP_B, 40003, b"tagged")


def test_link_down_then_interface_removed(pair):
    with pair.capture(bpf="udp", batch_ms=50) as cap:
        pair.ip("-n", pair.ns_b, "link", "set", pair.vb, "down")
        assert len(cap.next_batch()) == 0  # a downed link is not an error
        pair.ip("-n", pair.ns_b, "link", "set", pair.vb, "up")
        time.sleep(0.2)
        tx = pair.udp_socket(pair.ns_a, IP_A)
        deadline = time.monotonic() + 5
        got: list[dict] = []
        while not got and time.monotonic() < deadline:  # the peer may need a moment
            tx.sendto(b"again", (IP_B, 9999))
            got = udp(frames([cap.next_batch()]))
        tx.close()
        assert got and got[0]["payload"] == b"again"

        pair.ip("-n", pair.ns_b, "link", "del", pair.vb)
        with pytest.raises(CaptureError) as info:
            for _ in range(20):
                cap.next_batch()
        assert info.value.source == pair.vb and info.value.offset is None
        assert "interface disappeared" in info.value.message


def test_errors_name_the_interface(pair):
    with netns(pair.ns_b), pytest.raises(CaptureError) as info:
        LiveCapture("nosuchdev0")
    assert (info.value.source, info.value.offset) == ("nosuchdev0", None)
    assert info.value.message == "no such interface"

    with pytest.raises(CaptureError) as info:
        pair.capture(bpf="udp port")
    assert info.value.source == pair.vb and "bad BPF filter" in info.value.message

    with pytest.raises(ValueError):
        pair.capture(batch_packets=0)


def test_permission_denied_without_cap_net_raw():
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) not installed")
    code = (
        "from sensor.capture import CaptureError\n"
        "from sensor.capture.live import LiveCapture\n"
        "try:\n"
        "    LiveCapture('lo')\n"
        "except CaptureError as e:\n"
        "    print(e.source, '|', e.message)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(
        [setpriv, "--inh-caps=-net_raw", "--bounding-set=-net_raw", sys.executable, "-c", code],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        "lo | permission denied: live capture needs root or CAP_NET_RAW"
    )


def test_compilers_agree():
    if not shutil.which("tcpdump"):
        pytest.skip("tcpdump not installed")
    from sensor.capture import live

    try:
        via_libpcap = live._compile_bpf_libpcap("tcp port 80 or icmp", 1, 1500)
    except ValueError as e:
        pytest.skip(f"libpcap unavailable: {e}")
    assert compile_bpf("tcp port 80 or icmp", snaplen=1500) == via_libpcap
    for compiler in (compile_bpf, lambda e: live._compile_bpf_libpcap(e, 1, 1500)):
        with pytest.raises(ValueError, match="bad BPF filter"):
            compiler("tcp port")
