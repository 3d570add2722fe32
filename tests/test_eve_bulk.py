"""sensor.output.eve bulk flow lines: byte for byte what the one-dict-per-flow path writes.

Replay writes flow events with flow_lines() (f-strings over columns, for speed); the
dict + json path (flow_events_dicts) is the readable reference. Both run here on the same
flows, random ones that reach every branch (IPv4/IPv6, every protocol kind, VLAN layers,
eviction, alerted, ICMP with and without replies) and real ones from the bundled sample,
and community_ids() is checked against the spec-tested community_id().
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sensor.capture.pcap import PcapSource
from sensor.community_id import community_id
from sensor.config import Config
from sensor.flow import EndedFlows, FlowTable
from sensor.output.eve import community_ids, flow_events_dicts, flow_lines, ip_bytes
from sensor.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent


def _random_ended(n: int, reason: str, seed: int) -> EndedFlows:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for name, dtype in FlowTable.COLUMNS.items():
        info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
        if info is not None:
            cols[name] = rng.integers(0, int(info.max), n, dtype=dtype, endpoint=True)
        else:
            cols[name] = rng.random(n) < 0.5
    ipver = rng.choice([4, 6], n).astype(np.uint8)
    cols["ipver"] = ipver
    cols["proto"] = rng.choice([6, 17, 1, 58, 132, 50, 47, 2], n).astype(np.uint8)
    for a in ("cli", "srv"):
        cols[f"{a}_hi"] = np.where(ipver == 6, cols[f"{a}_hi"], 0).astype(np.uint64)
        cols[f"{a}_lo"] = np.where(ipver == 6, cols[f"{a}_lo"],
                                   cols[f"{a}_lo"] & 0xFFFFFFFF).astype(np.uint64)
    # same address on both sides (ports decide the order) and small addresses (leading 0s)
    cols["srv_hi"][:20], cols["srv_lo"][:20] = cols["cli_hi"][:20], cols["cli_lo"][:20]
    cols["cli_lo"][20:40] = np.arange(20)
    # ICMP: (type, code) in the port, echo types among them
    icmp = np.isin(cols["proto"], (1, 58))
    types = rng.choice([0, 3, 8, 11, 128, 129, 133, 135, 136, 146, 255], n)
    cols["cli_port"] = np.where(icmp, types | (rng.integers(0, 4, n) << 8),
                                cols["cli_port"]).astype(np.uint16)
    cols["pkts_tc"] = np.where(rng.random(n) < 0.3, 0, cols["pkts_tc"] % 10_000)
    for k in ("pkts_ts", "bytes_ts", "bytes_tc"):
        cols[k] = cols[k] % 10_000_000
    cols["vlan0"] = np.where(rng.random(n) < 0.5, 0, cols["vlan0"] & 0xFFF).astype(np.uint16)
    cols["vlan1"] = np.where(rng.random(n) < 0.7, 0, cols["vlan1"] & 0xFFF).astype(np.uint16)
    cols["state"] %= 3
    cols["flow_id"] &= np.uint64((1 << 51) - 1)
    first = rng.integers(1_600_000_000_000_000, 1_800_000_000_000_000, n)
    cols["first_ts"] = first
    cols["last_ts"] = first + rng.integers(0, 10**9, n)
    ts = cols["last_ts"] + rng.integers(0, 10**8, n)
    return EndedFlows(cols, reason, ts, np.arange(n))


def test_flow_lines_equal_dict_path_on_random_flows() -> None:
    for seed, reason in enumerate(("timeout", "forced", "shutdown")):
        ended = _random_ended(3000, reason, seed)
        for cid, cid_seed in ((True, 0), (True, 77), (False, 0)):
            fast = flow_lines(ended, cid, cid_seed)
            ref = flow_events_dicts(ended, None, cid, cid_seed)
            assert len(fast) == len(ref) == 3000
            for got, want in zip(fast, ref, strict=True):
                assert got == want


def test_flow_lines_equal_dict_path_on_sample_capture() -> None:
    pipe = Pipeline(Config(), None, flow_seed=3)
    for batch in PcapSource(str(ROOT / "pcaps" / "sample.pcap"), batch_size=2000).batches():
        pipe.process(batch)
    (ended,) = pipe.flows.flush(pipe.now_us)
    assert len(ended) > 100
    assert flow_lines(ended) == flow_events_dicts(ended)
    empty = EndedFlows({k: v[:0] for k, v in ended.cols.items()}, "timeout", ended.ts_us[:0],
                       ended.slots[:0])
    assert flow_lines(empty) == []


def test_community_ids_match_community_id() -> None:
    ended = _random_ended(4000, "timeout", 9)
    c = ended.cols
    proto = c["proto"]
    icmp = np.isin(proto, (1, 58))
    ports = np.isin(proto, (6, 17, 132))
    sport = np.where(icmp, c["cli_port"] & 0xFF, np.where(ports, c["cli_port"], 0))
    dport = np.where(icmp, c["cli_port"] >> 8, np.where(ports, c["srv_port"], 0))
    for seed in (0, 1, 65535):
        got = community_ids(c["ipver"], proto, c["cli_hi"], c["cli_lo"], c["srv_hi"],
                            c["srv_lo"], sport, dport, seed)
        for i in range(len(ended)):
            v = int(c["ipver"][i])
            want = community_id(
                ip_bytes(v, int(c["cli_hi"][i]), int(c["cli_lo"][i])),
                ip_bytes(v, int(c["srv_hi"][i]), int(c["srv_lo"][i])),
                int(proto[i]), int(sport[i]), int(dport[i]), seed)
            assert got[i] == want, i
