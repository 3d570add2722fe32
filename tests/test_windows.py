"""sensor.windows: flows cut into windows by time, by packet count and at flow end, with the
per-packet facts the feature stage reads; the same windows whatever the batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from replay_helpers import MACS, ListSink, write_pcap
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from sensor.capture.pcap import PcapSource
from sensor.config import Config, WindowConfig
from sensor.pipeline import Pipeline
from sensor.windows import WindowBatch, WindowStage

SAMPLE = Path(__file__).resolve().parents[1] / "pcaps" / "sample.pcap"

T0 = 1_700_000_000.0
CLI, SRV = "10.0.0.1", "10.0.0.2"


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return bytes(Ether(**MACS) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) /
                 Raw(payload))


def run_windows(path: Path, wcfg: WindowConfig, batch_size: int = 65536,
                cfg: Config | None = None) -> tuple[list[dict], list[int]]:
    """Replay with a WindowStage; return every closed window as a dict, and how many
    windows had closed before the end of input (pipe.finish)."""
    got: list[dict] = []

    def consumer(wb: WindowBatch) -> list[str]:
        for i in range(len(wb)):
            k = int(wb.n_packets[i])
            got.append({
                "n": k, "start": int(wb.start_us[i]), "end": int(wb.end_us[i]),
                "flow_id": int(wb.flow["flow_id"][i]),
                "cli_port": int(wb.flow["cli_port"][i]),
                **{f: wb.pkts[f][i, :k].tolist() for f in wb.pkts},
                "data": wb.data[i, :k].tobytes(),
                "pad_zero": bool((wb.pkts["ts_us"][i, k:] == 0).all()
                                 and (wb.data[i, k:] == 0).all()),
            })
        return []

    stage = WindowStage(wcfg, consumer)
    pipe = Pipeline(cfg or Config(), ListSink(), [stage])  # type: ignore[arg-type]
    for b in PcapSource(str(path), batch_size=batch_size).batches():
        pipe.process(b)
    before_finish = len(got)
    pipe.finish()
    stage_rest = stage.finish()
    assert stage_rest == []
    return got, [before_finish]


def test_window_closes_after_w_seconds(tmp_path: Path) -> None:
    frames = [udp(CLI, SRV, 5000, 53) for _ in range(25)]
    times = [T0 + i for i in range(25)]  # one packet a second
    path = write_pcap(tmp_path / "w.pcap", frames, times)
    wins, _ = run_windows(path, WindowConfig(enabled=True, seconds=10, packets=1000))
    assert [w["n"] for w in wins] == [10, 10, 5]
    for w in wins:
        assert w["end"] - w["start"] < 10_000_000
        assert w["ts_us"][0] == w["start"] and w["ts_us"][-1] == w["end"]


def test_window_closes_after_n_packets(tmp_path: Path) -> None:
    frames = [udp(CLI, SRV, 5000, 53) for _ in range(25)]
    path = write_pcap(tmp_path / "n.pcap", frames, [T0 + i * 0.001 for i in range(25)])
    wins, _ = run_windows(path, WindowConfig(enabled=True, seconds=60, packets=8))
    assert [w["n"] for w in wins] == [8, 8, 8, 1]
    flat = [t for w in wins for t in w["ts_us"]]
    assert flat == sorted(flat) and len(set(flat)) == 25


def test_window_closes_at_flow_end(tmp_path: Path) -> None:
    """A UDP flow times out (30 s) while another flow keeps the clock going: its window is
    handed over when the flow ends, before the end of input."""
    a = [udp(CLI, SRV, 5000, 53) for _ in range(3)]
    b = [udp("10.0.0.9", SRV, 6000, 53) for _ in range(3)]
    times = [T0, T0 + 0.1, T0 + 0.2, T0 + 10, T0 + 40, T0 + 80]
    path = write_pcap(tmp_path / "e.pcap", a + b, times)
    wins, (before_finish,) = run_windows(path, WindowConfig(enabled=True, seconds=1000,
                                                            packets=1000))
    first = [w for w in wins if w["cli_port"] == 5000]
    assert len(first) == 1 and first[0]["n"] == 3
    assert wins.index(first[0]) < before_finish


def test_per_packet_fields(tmp_path: Path) -> None:
    m = 48
    pkts = [IP(src=CLI, dst=SRV, ttl=60) / TCP(sport=40000, dport=80, flags="S", window=1000),
            IP(src=SRV, dst=CLI, ttl=50) / TCP(sport=80, dport=40000, flags="SA", window=2000),
            IP(src=CLI, dst=SRV, ttl=60) / TCP(sport=40000, dport=80, flags="PA", window=1000) /
            Raw(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")]
    frames = [bytes(Ether(**MACS) / p) for p in pkts]
    times = [T0, T0 + 0.25, T0 + 0.5]
    path = write_pcap(tmp_path / "f.pcap", frames, times)
    (w,), _ = run_windows(path, WindowConfig(enabled=True, seconds=10, packets=16, bytes=m))
    assert w["n"] == 3 and w["pad_zero"]
    assert w["ts_us"] == [int(t * 1e6) for t in times]
    assert w["size"] == [len(bytes(p)) for p in pkts]
    assert w["to_server"] == [1, 0, 1]
    assert w["tcp_flags"] == [0x02, 0x12, 0x18]
    assert w["payload_len"] == [0, 0, len(pkts[2][Raw].load)]
    assert w["tcp_win"] == [1000, 2000, 1000]
    assert w["ttl"] == [60, 50, 60]
    data = np.frombuffer(w["data"], dtype=np.uint8).reshape(3, m)
    for i, p in enumerate(pkts):
        ip = bytes(p)[:m]
        assert data[i, : len(ip)].tobytes() == ip
        assert not data[i, len(ip):].any()  # zero past the packet's end


def test_batch_size_independence(tmp_path: Path) -> None:
    frames, times = [], []
    for i in range(120):
        port = 5000 + i % 4
        frames.append(udp(CLI, SRV, port, 53, bytes([i]) * (10 + i % 7)) if i % 3 else
                      udp(SRV, CLI, 53, port, b"r" * (5 + i % 11)))
        times.append(T0 + i * 0.37)
    path = write_pcap(tmp_path / "b.pcap", frames, times)
    wcfg = WindowConfig(enabled=True, seconds=5, packets=6, bytes=32)

    def norm(wins: list[dict]) -> list:
        return sorted((w["cli_port"], w["start"], w["n"], w["ts_us"], w["size"],
                       w["to_server"], w["data"]) for w in wins)

    ref = norm(run_windows(path, wcfg)[0])
    assert sum(x[2] for x in ref) == 120
    for bs in (1, 4, 17):
        assert norm(run_windows(path, wcfg, batch_size=bs)[0]) == ref, bs


def test_pending_packets_are_bounded(tmp_path: Path) -> None:
    """Many open windows: once more than max_pending packets wait, the oldest windows are
    closed early (counted), so a flood of flows cannot hold unbounded packets."""
    frames = [udp(f"10.1.{i // 250}.{i % 250}", SRV, 1000 + i, 53) for i in range(400)]
    path = write_pcap(tmp_path / "p.pcap", frames, [T0 + i * 1e-4 for i in range(400)])
    wcfg = WindowConfig(enabled=True, seconds=100, packets=100, max_pending=50)
    seen: list[int] = []

    def consumer(wb: WindowBatch) -> list[str]:
        seen.extend(wb.n_packets.tolist())
        return []

    stage = WindowStage(wcfg, consumer)
    pipe = Pipeline(Config(), ListSink(), [stage])  # type: ignore[arg-type]
    for b in PcapSource(str(path), batch_size=20).batches():
        pipe.process(b)
        assert stage.pending_packets <= wcfg.max_pending + 20
    pipe.finish()
    assert sum(seen) == 400
    assert stage.stats["windows_forced"] > 0


def test_tcp_port_reuse_in_one_batch_gives_separate_windows(tmp_path: Path) -> None:
    """Two TCP sessions on the same ports in one batch are two flows: their packets never
    share a window, and the first session's window closes when it ends."""
    def seg(src: str, dst: str, sp: int, dp: int, flags: str) -> bytes:
        return bytes(Ether(**MACS) / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp,
                                                                flags=flags))

    one = [seg(CLI, SRV, 40000, 80, "S"), seg(SRV, CLI, 80, 40000, "SA"),
           seg(CLI, SRV, 40000, 80, "A"), seg(CLI, SRV, 40000, 80, "FA"),
           seg(SRV, CLI, 80, 40000, "FA"), seg(CLI, SRV, 40000, 80, "A")]
    frames = one + one
    path = write_pcap(tmp_path / "reuse.pcap", frames, [T0 + i * 0.01 for i in range(12)])
    for bs in (65536, 1):
        wins, _ = run_windows(path, WindowConfig(enabled=True, seconds=100, packets=100),
                              batch_size=bs)
        assert [w["n"] for w in wins] == [6, 6], bs
        assert wins[0]["flow_id"] != wins[1]["flow_id"]
        assert wins[0]["tcp_flags"] == wins[1]["tcp_flags"] == [0x02, 0x12, 0x10, 0x11, 0x11,
                                                                0x10]


def _greedy_windows(ts: list[int], span_us: int, npk: int) -> list[list[int]]:
    """The window rule for one flow seen in one batch, packet by packet: a window starts at
    packet p and takes the packets before the first one at or after ts[p] + span (numpy's
    binary search over the flow's times, so also for out-of-order times) and at most npk."""
    arr = np.asarray(ts)
    out, p = [], 0
    while p < len(ts):
        lim = min(len(ts), p + npk, int(np.searchsorted(arr, ts[p] + span_us)))
        lim = max(lim, p + 1)
        out.append(ts[p:lim])
        p = lim
    return out


def test_interleaved_flows_and_out_of_order_times_follow_the_window_rule(
        tmp_path: Path) -> None:
    """Five flows interleaved in one batch, cut by time and by count at once; one flow's
    capture times jump backwards. The batched cutter gives each flow the windows of the
    packet-by-packet rule; the flows in time order get the same windows whatever the batch
    size (a backward time is compared with the window's start only when both are in one
    batch, so the out-of-order flow may be cut differently across batches)."""
    rng = np.random.default_rng(7)
    frames, times, port_of = [], [], []
    t = T0
    for i in range(600):
        port = 7000 + int(rng.integers(0, 5))
        t += float(rng.exponential(0.03))
        jitter = -float(rng.uniform(0, 0.4)) if port == 7000 and i % 7 == 3 else 0.0
        frames.append(udp(CLI, SRV, port, 53, bytes([i % 256]) * 4))
        times.append(round(t + jitter, 6))
        port_of.append(port)
    path = write_pcap(tmp_path / "mix.pcap", frames, times)
    wcfg = WindowConfig(enabled=True, seconds=0.5, packets=7, bytes=32)
    got, _ = run_windows(path, wcfg)
    ts_us = [int(round(x * 1e6)) for x in times]
    assert any(b < a for a, b in zip(ts_us, ts_us[1:], strict=False)), "needs times backwards"
    for port in range(7000, 7005):
        flow_ts = [x for x, p in zip(ts_us, port_of, strict=True) if p == port]
        want = _greedy_windows(flow_ts, 500_000, 7)
        have = sorted((w["ts_us"] for w in got if w["cli_port"] == port),
                      key=lambda w: flow_ts.index(w[0]))
        assert have == want, port
    ref = sorted((w["cli_port"], w["ts_us"], w["data"]) for w in got if w["cli_port"] != 7000)
    for bs in (1, 50):
        again = sorted((w["cli_port"], w["ts_us"], w["data"])
                       for w in run_windows(path, wcfg, batch_size=bs)[0]
                       if w["cli_port"] != 7000)
        assert again == ref, bs


def test_flat_rows_and_padded_views_agree() -> None:
    """The stage emits flat packet rows; the padded views built from them, the flat rows
    read back from those, and features computed from the flat rows all agree (on the
    sample's 1,419 windows)."""
    from sensor import features
    from sensor.windows import concat_windows

    got: list[WindowBatch] = []
    stage = WindowStage(WindowConfig(enabled=True), lambda wb: got.append(wb) or [])
    pipe = Pipeline(Config(), ListSink(), [stage])  # type: ignore[arg-type]
    for b in PcapSource(str(SAMPLE), batch_size=4096).batches():
        pipe.process(b)
    pipe.finish()
    stage.finish()
    wb = concat_windows(got)
    assert len(wb) > 1000 and wb._rows is not None  # flat all the way
    padded = WindowBatch(wb.n_packets, wb.start_us, wb.end_us, wb.slot, wb.pkts, wb.data,
                         wb.flow)
    for k in wb.rows:
        assert np.array_equal(padded.rows[k], wb.rows[k])
    assert np.array_equal(padded.raw, wb.raw)
    assert (wb.data[~padded._valid()] == 0).all()
    n, m = 32, 64
    iat, rel = features.packet_times(wb.rows["ts_us"], wb.first, wb.counts)
    seq_flat = features.packet_sequence(wb.rows, iat, rel)
    seq = features.sequence(wb.pkts, wb.n_packets, n)
    assert np.array_equal(seq[padded._valid()], seq_flat)
    img = features.masked_bytes(wb.data, wb.n_packets, n, m)
    assert np.array_equal(img[padded._valid()], features.mask_packets(wb.raw))
