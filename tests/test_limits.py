"""Every resource bound is configurable, has a safe default, and is enforced.

Flows (flow.max_flows), IP reassembly (defrag.*), packets of windows awaiting scoring
(windows.max_pending) and output buffers (the network outputs' queues and what the EVE file
holds while the disk is full: outputs.eve.max_pending_bytes). Each test drives real
packets (scapy-built, or the numpy-stamped flood of bench/make_flood_pcap.py) through the
real component and checks the bound after every step, and that what was refused is counted.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from sensor.capture import BATCH_PAD, LINKTYPE_ETHERNET, PacketBatch
from sensor.config import Config, DefragLimits, load_config
from sensor.defrag import DefragConfig, Defragmenter
from sensor.output.sinks import EveFileSink, SinkError, UnixStreamSink
from sensor.pipeline import Pipeline
from sensor.windows import WindowStage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from make_flood_pcap import flood_frames  # noqa: E402

T0 = 1_700_000_000_000_000


def frames_batch(frames: list[bytes], ts_us: np.ndarray, first_cnt: int = 1) -> PacketBatch:
    sizes = [len(f) for f in frames]
    data = np.frombuffer(b"".join(frames) + bytes(BATCH_PAD), dtype=np.uint8)
    return PacketBatch(
        data=data, offset=np.cumsum([0] + sizes[:-1]).astype(np.int64),
        caplen=np.asarray(sizes, dtype=np.int32), wirelen=np.asarray(sizes, dtype=np.int32),
        ts_us=np.asarray(ts_us, dtype=np.int64),
        linktype=np.full(len(frames), LINKTYPE_ETHERNET, dtype=np.uint16), first_cnt=first_cnt)


def flood_batch(n: int, seed: int, t0: int) -> PacketBatch:
    rows = flood_frames(n, np.random.default_rng(seed))
    return frames_batch([r.tobytes() for r in rows], t0 + np.arange(n) * 10)


def test_defaults_are_bounded_and_keys_load(tmp_path: Path) -> None:
    c = Config()
    assert c.flow.max_flows == 262144
    assert c.defrag == DefragLimits(65536, 256, 32 << 20, 60)
    assert c.windows.max_pending == 65536
    assert c.outputs.eve.max_pending_bytes == 64 << 20
    assert c.outputs.unix_stream.queue == c.outputs.syslog.queue == c.outputs.redis.queue == 65536
    cfg = tmp_path / "limits.yaml"
    cfg.write_text("flow: {max-flows: 10}\ndefrag: {max-trackers: 5, max-fragments: 3, "
                   "max-bytes: 4096, timeout: 2}\nwindows: {max-pending: 7}\n"
                   "outputs: {eve: {max-pending-bytes: 100}, unix-stream: {queue: 9}}\n")
    got = load_config(str(cfg))
    assert got.defrag == DefragLimits(5, 3, 4096, 2)
    assert (got.flow.max_flows, got.windows.max_pending) == (10, 7)
    assert got.outputs.eve.max_pending_bytes == 100 and got.outputs.unix_stream.queue == 9


def test_flow_table_never_exceeds_max_flows() -> None:
    cfg = dataclasses.replace(Config(), flow=dataclasses.replace(Config().flow, max_flows=500))
    pipe = Pipeline(cfg, None, flow_seed=1)
    # one batch of 5000 new flows: ten times the table (this crashed before batches were
    # cut to what the table can take), then more batches
    for k in range(4):
        pipe.process(flood_batch(5000, k, T0 + k * 100_000))
        assert pipe.flows.active_count <= 500
        assert pipe.flows.capacity <= 500
    c = pipe.all_counters()
    assert c["flow.total"] == 20000
    assert c["flow.get_used"] >= 20000 - 500  # evicted, each logged as reason "forced"
    assert c["flow.emerg_mode_entered"] >= 1


def _fragments(i: int, n_frags: int, size: int = 64) -> list[bytes]:
    """The first `n_frags` fragments (more-fragments set) of datagram id `i`."""
    out = []
    for k in range(n_frags):
        ip = IP(src=f"10.5.{i // 250 % 250}.{i % 250 + 1}", dst="10.6.0.1", id=i % 65536,
                flags="MF", frag=k * (size // 8), proto=17)
        out.append(bytes(Ether() / ip / Raw(b"f" * size)))
    return out


def _run_defrag(limits: DefragConfig, frames: list[bytes], step_us: int = 1000,
                t0: int = T0) -> tuple[Pipeline, list[int]]:
    cfg = Config()
    cfg = dataclasses.replace(cfg, defrag=DefragLimits(
        limits.max_trackers, limits.max_fragments, limits.max_bytes,
        limits.timeout_us // 1_000_000))
    pipe = Pipeline(cfg, None, flow_seed=1)
    held = []
    for lo in range(0, len(frames), 100):
        chunk = frames[lo:lo + 100]
        pipe.process(frames_batch(chunk, t0 + (lo + np.arange(len(chunk))) * step_us))
        d: Defragmenter = pipe.defrag
        assert len(d.trackers) <= limits.max_trackers
        assert d.held_bytes <= limits.max_bytes
        assert all(len(t.parts) <= limits.max_fragments for t in d.trackers.values())
        assert d.held_bytes == sum(t.size for t in d.trackers.values())
        held.append(len(d.trackers))
    return pipe, held


def test_defrag_max_trackers() -> None:
    frames = [f for i in range(1000) for f in _fragments(i, 1)]
    pipe, _ = _run_defrag(DefragConfig(max_trackers=200, timeout_us=3_600_000_000), frames)
    assert len(pipe.defrag.trackers) == 200
    assert pipe.defrag.counters["defrag.max_frag_hits"] == 800


def test_defrag_max_fragments_per_datagram() -> None:
    frames = _fragments(1, 40, size=8)
    pipe, _ = _run_defrag(DefragConfig(max_fragments=16), frames)
    # the 17th fragment drops the datagram; the rest start it again and stop at 16
    assert pipe.defrag.counters["decoder.event.ipv4.frag_ignored"] >= 1


def test_defrag_max_bytes() -> None:
    frames = [f for i in range(300) for f in _fragments(i, 2, size=512)]
    pipe, _ = _run_defrag(DefragConfig(max_bytes=64 << 10, timeout_us=3_600_000_000), frames)
    assert pipe.defrag.held_bytes <= 64 << 10
    assert pipe.defrag.held_bytes > (64 << 10) - 1024  # it filled up to the cap
    assert pipe.defrag.counters["defrag.max_frag_hits"] > 0


def test_defrag_timeout_frees_trackers() -> None:
    frames = [f for i in range(400) for f in _fragments(i, 1)]
    # 400 datagrams over 40 s of packet time, each abandoned; timeout 5 s
    pipe, held = _run_defrag(DefragConfig(timeout_us=5_000_000), frames, step_us=100_000)
    assert max(held) <= 5 * 10 + 100  # 10 new per second live 5 s (+ one batch)
    assert pipe.defrag.counters["defrag.ipv4.timeouts"] >= 300


def test_windows_awaiting_scoring_are_bounded() -> None:
    scored: list[int] = []

    def consumer(wb) -> list[str]:
        scored.append(len(wb))
        return []

    wcfg = dataclasses.replace(Config().windows, enabled=True, packets=32, seconds=600.0,
                               max_pending=1000)
    stage = WindowStage(wcfg, consumer)
    pipe = Pipeline(Config(), None, [stage], flow_seed=1)
    # 20000 flows of one packet each: no window fills or times out on its own
    for k in range(4):
        pipe.process(flood_batch(5000, 10 + k, T0 + k * 100_000))
        assert stage.pending_packets <= 1000
    assert stage.stats["windows_forced"] > 0
    assert sum(scored) == stage.stats["windows"]  # forced windows were scored, not lost


def test_network_output_queue_is_bounded(tmp_path: Path) -> None:
    sink = UnixStreamSink(str(tmp_path / "nobody-listens.sock"), queue=100)
    sink.start()
    try:
        sink.write([f'{{"n":{i}}}' for i in range(1000)])
        assert len(sink.q) <= 100
        assert sink.counters()["dropped"] >= 900
    finally:
        sink.close(timeout=0.2)


def test_eve_file_holds_at_most_max_pending_bytes_on_a_full_disk() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full missing")
    sink = EveFileSink("/dev/full", max_pending_bytes=10_000)  # every write: ENOSPC
    line = '{"event_type":"flow","pad":"' + "x" * 80 + '"}'
    for _ in range(50):
        sink.write([line] * 20)
        with pytest.raises(SinkError, match="No space left on device"):
            sink.flush()
        assert sink._pending_bytes <= 10_000
    assert sink.pending == 10_000 // (len(line) + 1)
    assert sink.dropped == 50 * 20 - sink.pending
