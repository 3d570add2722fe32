"""bench/: the benchmark capture generator and the side-by-side replay benchmark script.

The generator must give the same bytes for the same seed (the published figures depend on
it), and its rewritten frames must still be valid packets: IPv4 header checksums right, no
decoder errors, tagged replicas on their VLAN. The benchmark script is run for real on a
small capture (and against Suricata too where it is installed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from sensor.capture.pcap import PcapSource
from sensor.decode import decode_batch

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "bench" / "make_bench_pcap.py"
BENCH = ROOT / "bench" / "replay_bench.py"


def _make(out: Path, *extra: str) -> str:
    proc = subprocess.run([sys.executable, str(GEN), "--packets", "3000", "-o", str(out),
                           *extra], capture_output=True, text=True, check=True, timeout=60)
    return proc.stdout


def test_generator_is_deterministic_and_writes_valid_traffic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    _make(a)
    _make(b)
    _make(c, "--seed", "3")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()

    src = PcapSource(str(a), batch_size=1 << 20)
    (batch,) = list(src.batches())
    assert src.error is None and len(batch) >= 3000
    assert np.all(np.diff(batch.ts_us) >= 0), "records must be in time order"
    d = decode_batch(batch)
    assert d.counters.get("decoder.invalid", 0) == 0
    assert (d.vlan0 != 0).any() and (d.vlan1 != 0).any()  # pushed tags and QinQ template
    assert (d.ipver == 6).any() and d.fragment.any()
    assert set(np.unique(d.proto[d.ok]).tolist()) >= {1, 6, 17, 58}
    # every IPv4 header still sums to 0xFFFF after the address rewrite
    v4 = np.flatnonzero(d.ipver == 4)
    hdr = batch.data[d.l3[v4][:, None] + np.arange(60)].astype(np.int64)
    hdr[np.arange(60) >= (hdr[:, :1] & 0x0F) * 4] = 0  # options included, nothing after
    s = ((hdr[:, 0::2] << 8) | hdr[:, 1::2]).sum(axis=1)
    while (s >> 16).any():
        s = (s & 0xFFFF) + (s >> 16)
    assert np.all(s == 0xFFFF)
    # replicas got their own addresses: 10.R.R.host
    assert len(np.unique(d.src_lo[v4] >> 8)) > 10
    assert np.all(d.src_lo[v4] >> 24 == 10)


def test_replay_bench_prints_table_and_writes_json(tmp_path: Path) -> None:
    pcap = ROOT / "pcaps" / "formats" / "eth-le-usec.pcap"
    out = tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, str(BENCH), str(pcap), "--runs", "1",
                           "--single-only", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| variant | median wall s | packets/s |" in proc.stdout
    res = json.loads(out.read_text())
    assert res["packets"] == 42
    rows = {r["variant"]: r for r in res["results"]}
    ns = rows["netsensor"]
    assert ns["runs"] == 1 and ns["median_packets_per_s"] > 0 and ns["flow_events"] > 0
    assert ns["median_peak_rss_mib"] > 10  # the child's own peak: Python with numpy
    assert rows["netsensor, EVE process"]["flow_events"] == ns["flow_events"]
    if shutil.which("suricata"):
        sur = rows["suricata --runmode single"]
        assert sur["flow_events"] == ns["flow_events"]
        assert "netsensor / suricata --runmode single packets/s" in res["ratios"]
    else:
        assert any("Suricata not run" in n for n in res["notes"])


def test_replay_bench_reports_a_failing_variant_and_keeps_the_rest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("replay:\n  no_such_key: 1\n")
    out = tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, str(BENCH), str(ROOT / "pcaps" / "formats" /
                                                           "vlan.pcap"),
                           "--runs", "1", "--no-suricata", "--no-eve-process", "-c", str(bad),
                           "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert [r["variant"] for r in res["results"]] == ["netsensor"]
    assert any("failed" in n and "no_such_key" in n for n in res["notes"]), res["notes"]
