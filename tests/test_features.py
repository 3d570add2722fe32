"""Feature image and sequence on hand-made packets (scapy -> pcap -> the sensor's windows)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from sensor import features
from sensor.capture.pcap import PcapSource
from sensor.config import Config, WindowConfig
from sensor.pipeline import Pipeline
from sensor.windows import WindowBatch, WindowStage

N, M = 32, 64


def windows_of(tmp_path, pkts, wcfg: WindowConfig | None = None) -> list[WindowBatch]:
    path = tmp_path / "t.pcap"
    wrpcap(str(path), pkts)
    wcfg = wcfg or WindowConfig(enabled=True)
    got: list[WindowBatch] = []
    stage = WindowStage(wcfg, lambda wb: got.append(wb) or [])
    pipe = Pipeline(dataclasses.replace(Config(), windows=wcfg), None, [stage], flow_seed=1)
    for b in PcapSource(str(path)).batches():
        pipe.process(b)
    pipe.finish()
    stage.finish()
    return got


def tcp_conv(cli: str, srv: str, sport: int, dport: int, ttl: int, ipid: int, t0: float,
             seq: int = 1000):
    """SYN, SYN-ACK, ACK, PSH data: a small handshake with given host-specific fields."""
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    er = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    pk = [
        e / IP(src=cli, dst=srv, ttl=ttl, id=ipid) / TCP(sport=sport, dport=dport, flags="S",
                                                         seq=seq, window=64240),
        er / IP(src=srv, dst=cli, ttl=ttl + 1, id=ipid + 7) / TCP(
            sport=dport, dport=sport, flags="SA", seq=seq * 3, ack=seq + 1, window=65160),
        e / IP(src=cli, dst=srv, ttl=ttl, id=ipid + 1) / TCP(
            sport=sport, dport=dport, flags="A", seq=seq + 1, ack=seq * 3 + 1, window=502),
        e / IP(src=cli, dst=srv, ttl=ttl, id=ipid + 2) / TCP(
            sport=sport, dport=dport, flags="PA", seq=seq + 1, ack=seq * 3 + 1,
            window=502) / b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for i, p in enumerate(pk):
        p.time = t0 + 0.001 * (2 ** i)  # iat 1, 2, 4 ms
    return pk


def test_masking_removes_host_identity(tmp_path):
    a = windows_of(tmp_path, tcp_conv("10.0.0.1", "10.0.0.2", 40000, 80, 64, 100, 1000.0))
    b = windows_of(tmp_path, tcp_conv("192.168.7.9", "172.16.3.4", 51515, 80, 128, 9999,
                                      5000.0, seq=777777))
    assert len(a) == len(b) == 1
    ia, sa = features.extract(a[0], N, M)
    ib, sb = features.extract(b[0], N, M)
    assert ia.shape == (1, N, M) and sa.shape == (1, N, features.N_SEQ)
    # same behaviour from different hosts/ports/ids/ttls/ISNs: identical inputs
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(sa, sb, atol=1e-7)
    # raw bytes did differ in exactly those fields
    assert not np.array_equal(a[0].data, b[0].data)
    img = ia[0]
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    # IPv4 header: version/IHL kept, id, ttl, checksum, addresses zero
    assert img[0, 0] == pytest.approx(0x45 / 255)
    assert not img[0, [4, 5, 8, 10, 11]].any() and not img[0, 12:20].any()
    assert img[0, 9] == pytest.approx(6 / 255)  # protocol is behaviour, kept
    # TCP: ports, seq, ack, checksum zero; data offset/flags/window kept
    assert not img[0, 20:32].any() and not img[0, 36:38].any()
    assert img[0, 33] == pytest.approx(0x02 / 255)  # SYN
    assert img[0, 34] == pytest.approx((64240 >> 8) / 255)
    # payload bytes of the 4th packet are visible
    assert img[3, 40] == pytest.approx(ord("G") / 255)


def test_tcp_timestamp_option_masked(tmp_path):
    """TSval/TSecr are a host clock: masked wherever the option sits; MSS, SACK-ok, window
    scale and NOPs (behaviour of the stack) stay visible."""
    def syn(opts, tsval):
        p = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(
            sport=1234, dport=80, flags="S", options=[
                (k, (tsval, tsval ^ 0x5A5A) if k == "Timestamp" else v) for k, v in opts])
        p.time = 10.0
        return p

    layouts = [[("MSS", 1460), ("SAckOK", b""), ("Timestamp", None), ("NOP", None),
                ("WScale", 7)],
               [("NOP", None), ("NOP", None), ("Timestamp", None)]]
    for opts in layouts:
        a = windows_of(tmp_path, [syn(opts, 111111)])
        b = windows_of(tmp_path, [syn(opts, 987654321)])
        ia, _ = features.extract(a[0], N, M)
        ib, _ = features.extract(b[0], N, M)
        np.testing.assert_array_equal(ia, ib)
        both = np.concatenate([a[0].data, b[0].data])  # a batch of two windows, as served
        np.testing.assert_array_equal(features.image(both, np.array([1, 1]), N, M)[1], ia[0])
        raw = a[0].data[0, 0]
        q = np.rint(ia[0, 0] * 255).astype(np.uint8)
        k = 40
        while raw[k] != 8:  # find the option the way a stack would
            k += 1 if raw[k] == 1 else int(raw[k + 1])
        assert raw[k + 1] == 10 and not q[k + 2:k + 10].any() and q[k] == 8
        changed = np.flatnonzero(raw[:60] != q[:60])
        assert set(changed.tolist()) <= (set(range(0, 40)) | set(range(k + 2, k + 10)))
        if opts[0][0] == "MSS":
            assert q[40] == 2 and q[42:44].tolist() == [1460 >> 8, 1460 & 0xFF]


def test_sequence_features(tmp_path):
    wb = windows_of(tmp_path, tcp_conv("10.0.0.1", "10.0.0.2", 40000, 80, 64, 100, 1000.0))[0]
    _, seq = features.extract(wb, N, M)
    s = seq[0]
    col = {name: i for i, name in enumerate(features.SEQ_FEATURES)}
    assert s[:4, col["valid"]].tolist() == [1, 1, 1, 1]
    assert s[:4, col["to_server"]].tolist() == [1, 0, 1, 1]
    assert s[:4, col["syn"]].tolist() == [1, 1, 0, 0]
    assert s[:4, col["ack"]].tolist() == [0, 1, 1, 1]
    assert s[:4, col["psh"]].tolist() == [0, 0, 0, 1]
    assert s[:4, col["tcp"]].tolist() == [1, 1, 1, 1]
    assert s[:4, col["udp"]].sum() == 0
    assert s[0, col["log_size"]] == pytest.approx(np.log1p(40) / np.log1p(65535), rel=1e-5)
    assert s[0, col["log_iat"]] == 0
    assert s[1, col["log_iat"]] == pytest.approx(np.log1p(1000) / np.log1p(1e7), rel=1e-4)
    assert s[3, col["log_payload"]] == pytest.approx(
        np.log1p(len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) / np.log1p(65535), rel=1e-5)
    assert s[0, col["tcp_win"]] == pytest.approx(64240 / 65535, rel=1e-5)
    # padding rows are all zero
    assert not s[4:].any()


def test_ipv6_udp_icmp_masks(tmp_path):
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    p6 = e / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=33, fl=0xABCDE, tc=0) / \
        UDP(sport=5353, dport=53) / b"abcdefgh"
    p6.time = 10.0
    p4 = e / IP(src="10.0.0.5", dst="10.0.0.6", ttl=50) / ICMP(type=8, id=7, seq=1) / (b"x" * 8)
    p4.time = 10.5
    wbs = windows_of(tmp_path, [p6, p4])
    img = features.image(np.concatenate([w.data for w in wbs]),
                         np.concatenate([w.n_packets for w in wbs]), N, M)
    v6 = next(i for i in range(len(img)) if round(img[i, 0, 0] * 255) >> 4 == 6)
    v4 = 1 - v6
    r = np.round(img[v6, 0] * 255).astype(int)
    assert r[0] == 0x60 and r[1] == 0 and r[2] == 0 and r[3] == 0  # flow label gone
    assert r[6] == 17 and r[7] == 0 and not r[8:40].any()  # hop limit, addresses gone
    assert not r[40:44].any() and r[44:46].tolist() == [0, 16]  # ports gone, length kept
    assert not r[46:48].any() and r[48] == ord("a")  # checksum gone, payload kept
    q = np.round(img[v4, 0] * 255).astype(int)
    assert q[20] == 8 and not q[22:24].any()  # ICMP type kept, checksum gone


def test_padding_and_truncation():
    rng = np.random.default_rng(0)
    b = 3
    data = rng.integers(0, 256, (b, 40, 80), dtype=np.uint8)
    data[:, :, 0] = 0x45
    npk = np.array([40, 5, 1])
    img = features.image(data, npk, N, M)
    assert img.shape == (b, N, M)
    # window 0 is truncated to the first 32 packets and 64 bytes
    ref = features.image(data[:, :N, :M], np.minimum(npk, N), N, M)
    np.testing.assert_array_equal(img, ref)
    assert not img[1, 5:].any() and not img[2, 1:].any()
    # narrower input is zero padded
    small = features.image(data[:, :8, :20], np.array([8, 5, 1]), N, M)
    assert small.shape == (b, N, M) and not small[:, :, 20:].any() and not small[:, 8:].any()
    pk = {"ts_us": np.tile(np.arange(40, dtype=np.int64) * 1000, (b, 1)),
          "size": np.full((b, 40), 60), "to_server": np.ones((b, 40), np.int8),
          "tcp_flags": np.full((b, 40), 0x10, np.uint8), "payload_len": np.zeros((b, 40)),
          "tcp_win": np.full((b, 40), 1000), "ttl": np.full((b, 40), 64, np.uint8),
          "proto": np.full((b, 40), 6, np.uint8)}
    seq = features.sequence(pk, npk, N)
    assert seq.shape == (b, N, features.N_SEQ)
    assert seq[0, :, 0].sum() == N and seq[1, :, 0].sum() == 5 and seq[2, :, 0].sum() == 1
    assert not seq[1, 5:].any() and not seq[2, 1:].any()


def test_window_packet_limit_is_model_n(tmp_path):
    """A flow of 40 packets gives a full window of N and a second of 8 (WindowStage cuts)."""
    e = Ether()
    pk = []
    for i in range(40):
        p = e / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=2000) / b"z"
        p.time = 100 + i * 0.01
        pk.append(p)
    wbs = windows_of(tmp_path, pk)
    counts = sorted(int(c) for w in wbs for c in w.n_packets)
    assert counts == [8, 32]


def test_packet_times_restart_at_each_window():
    """Inter-arrival and time since the window's first packet, per window of flat rows: the
    first packet of a window has 0 for both, and out-of-order times clip to 0."""
    ts = np.array([100, 150, 400, 7, 50, 40], dtype=np.int64)  # windows of 3, 1, 2 packets
    counts = np.array([3, 1, 2])
    iat, rel = features.packet_times(ts, np.cumsum(counts) - counts, counts)
    assert iat.tolist() == [0, 50, 250, 0, 0, 0]
    assert rel.tolist() == [0, 50, 300, 0, 0, 0]
