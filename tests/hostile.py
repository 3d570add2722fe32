"""Helpers for the hardening tests: write hostile captures, replay them, read what came out.

Captures are built with scapy (real packet bytes, as a hostile host would send them) and
written as classic pcap. Replay runs `python -m sensor.cli replay` as a child process, so
its peak resident memory can be read from the kernel (wait4's rusage) and a crash is a
non-zero exit with a traceback on stderr, not a test-process crash.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from make_flood_pcap import T0_US, LegitFlow, legit_sessions  # noqa: E402
from make_flood_pcap import build as build_flood  # noqa: E402

__all__ = ["T0_US", "LegitFlow", "Replay", "build_flood", "legit_sessions", "replay", "write_pcap",
           "check_legit", "interleave"]


def write_pcap(path: Path, packets: list[tuple[int, bytes]], linktype: int = 1) -> None:
    """(timestamp in microseconds, frame) pairs to a classic little-endian pcap."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for ts, frame in packets:
            f.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(frame),
                                len(frame)))
            f.write(frame)


def interleave(hostile: list[bytes], n_legit: int, step_us: int = 100,
               ) -> tuple[list[tuple[int, bytes]], list[LegitFlow]]:
    """Hostile frames `step_us` apart, with legitimate sessions spread between them."""
    sessions = legit_sessions(n_legit)
    out = [(T0_US + i * step_us, f) for i, f in enumerate(hostile)]
    span = max(len(hostile), 1) * step_us
    for k, (_, frames) in enumerate(sessions):
        start = T0_US + span * (k + 1) // (n_legit + 1)
        out += [(start + j * 3 + 1, f) for j, f in enumerate(frames)]
    out.sort(key=lambda x: x[0])
    return out, [f for f, _ in sessions]


@dataclass
class Replay:
    rc: int
    stderr: str
    peak_rss_mb: float
    seconds: float
    events: list[dict] = field(default_factory=list)

    @property
    def stats(self) -> dict:
        """The counters of the last stats event, flattened to dotted names."""
        last = [e for e in self.events if e["event_type"] == "stats"][-1]["stats"]
        return _flatten(last)

    def all_stats(self) -> list[dict]:
        return [_flatten(e["stats"]) for e in self.events if e["event_type"] == "stats"]

    def flows(self) -> list[dict]:
        return [e for e in self.events if e["event_type"] == "flow"]


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# `netsensor replay` that writes its own peak RSS (VmHWM) at exit: the kernel's rusage of a
# child also counts the parent's size at fork time (carried over by exec), this does not
PEAK_RSS_WRAPPER = """
import atexit, os, sys
def _hwm():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["NETSENSOR_HWM_FILE"], "w") as out:
        out.write(kb)
atexit.register(_hwm)
from sensor.cli import main
sys.argv[0] = "netsensor"
sys.exit(main())
"""


def replay(pcap: Path, workdir: Path, config: dict | None = None,
           timeout: float = 120) -> Replay:
    """Replay `pcap` in a child process; every EVE line must be one whole JSON object."""
    logdir = workdir / "log"
    logdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "netsensor.yaml"
    cfg.write_text(yaml.safe_dump(config or {}))
    cfg.chmod(0o644)
    err = workdir / "replay.stderr"
    start = time.monotonic()
    with open(err, "w") as ferr:
        hwm = workdir / "peak_rss_kb"
        proc = subprocess.Popen(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, "replay", "-q", "-l", str(logdir), "-c",
             str(cfg), str(pcap)], cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=ferr,
            env=dict(os.environ, PYTHONPATH=str(REPO), NETSENSOR_HWM_FILE=str(hwm)))
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"replay of {pcap} did not finish in {timeout} s")
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    secs = time.monotonic() - start
    events = []
    eve = logdir / "eve.json"
    if eve.exists():
        raw = eve.read_bytes()
        assert not raw or raw.endswith(b"\n"), "eve.json ends in a half-written line"
        for n, line in enumerate(raw.decode().splitlines(), 1):
            try:
                events.append(json.loads(line))
            except ValueError as exc:
                raise AssertionError(f"eve.json line {n} is not JSON: {line[:200]!r}") from exc
    peak_kb = int(hwm.read_text()) if hwm.exists() else usage.ru_maxrss
    return Replay(proc.returncode, err.read_text(), peak_kb / 1024, secs, events)


def check_legit(result: Replay, legit: list[LegitFlow]) -> None:
    """Every legitimate session has exactly one flow event with its packet counts."""
    flows = {(f["proto"], f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"]): f
             for f in result.flows()}
    for lf in legit:
        key = (lf.proto, lf.src_ip, lf.src_port, lf.dest_ip, lf.dest_port)
        assert key in flows, f"legitimate flow {key} was not logged"
        got = flows[key]["flow"]
        assert (got["pkts_toserver"], got["pkts_toclient"]) == (
            lf.pkts_toserver, lf.pkts_toclient), f"{key}: {got}"
