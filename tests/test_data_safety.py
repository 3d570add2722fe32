"""No event lost or half-written: SIGTERM, SIGHUP, a full disk, a worker killed with -9.

Replay cases run `python -m sensor.cli replay` on a SYN-flood capture with legitimate
sessions (bench/make_flood_pcap.py) and signal it while it writes. Daemon cases run
`python -m sensor.daemon run` on a veth pair between two namespaces this test creates
(prefix nsh), with real UDP traffic, and a log directory on a small tmpfs for the full
disk. After each, every line of every EVE file must be one whole JSON object, and the
flow events must add up (count of flow events = flow.total of the last stats event).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from netns_lab import VethLab, reachable_tmpdir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from make_flood_pcap import build as build_flood  # noqa: E402

IS_ROOT = os.geteuid() == 0
# the capture: 200k flood SYNs, 100 TCP sessions of 8 packets, 100 DNS exchanges of 2
TOTAL_PKTS = 200_000 + 100 * 8 + 100 * 2
# small batches: the first lines come early and the rest takes a while, so the signal
# always lands mid-replay; a small flow table keeps the final flush short
REPLAY_CFG = {"replay": {"batch_size": 8192}, "flow": {"max_flows": 20000}}


def read_eve(*paths: Path) -> list[dict]:
    """Every line of the files, parsed; fails on a half-written or non-JSON line."""
    out = []
    for p in paths:
        raw = p.read_bytes()
        assert not raw or raw.endswith(b"\n"), f"{p} ends in a half-written line"
        for n, line in enumerate(raw.decode().splitlines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise AssertionError(f"{p}:{n} is not one JSON object: {line[:120]!r}") from exc
    return out


def flows_add_up(events: list[dict]) -> None:
    stats = [e for e in events if e["event_type"] == "stats"]
    assert stats, "no stats event"
    flows = [e for e in events if e["event_type"] == "flow"]
    assert len(flows) == stats[-1]["stats"]["flow"]["total"]
    assert events[-1]["event_type"] == "stats"  # the final stats event came last


@pytest.fixture(scope="module")
def flood_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flood") / "flood.pcap"
    build_flood(str(path), 200_000, 200)
    return path


def start_replay(pcap: Path, logdir: Path, cfg: dict | None = None) -> subprocess.Popen:
    conf = logdir.parent / f"{logdir.name}.yaml"
    conf.write_text(yaml.safe_dump(cfg or REPLAY_CFG))
    return subprocess.Popen(
        [sys.executable, "-m", "sensor.cli", "replay", "-q", "-l", str(logdir), "-c",
         str(conf), str(pcap)], cwd=str(REPO), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))


def wait_for_lines(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size > 0:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    raise AssertionError(f"{path} stayed empty")


def test_replay_sigterm_logs_every_flow_whole(flood_pcap: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    proc = start_replay(flood_pcap, logdir)
    wait_for_lines(logdir / "eve.json", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.strip() == "netsensor: stopped by SIGTERM; flows so far were logged"
    events = read_eve(logdir / "eve.json")
    flows_add_up(events)
    # it stopped early: not every packet was read
    assert events[-1]["stats"]["decoder"]["pkts"] < TOTAL_PKTS


def test_replay_sighup_reopens_after_rotation(flood_pcap: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    proc = start_replay(flood_pcap, logdir)
    wait_for_lines(logdir / "eve.json", proc)
    os.rename(logdir / "eve.json", logdir / "eve.json.1")  # logrotate's `create` rotation
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    old, new = read_eve(logdir / "eve.json.1"), read_eve(logdir / "eve.json")
    assert old and new, "both files got events"
    flows_add_up(old + new)
    assert new[-1]["stats"]["decoder"]["pkts"] == TOTAL_PKTS


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                          str(where)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(fs: Path) -> Path:
    """Fill the filesystem to the last byte; return the file to delete to free it."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    return filler


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_replay_disk_full_is_one_line_and_leaves_no_half_line(flood_pcap: Path,
                                                               tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", "256k") as fs:
        proc = start_replay(flood_pcap, fs / "log")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        lines = err.strip().splitlines()
        assert lines and all(re.fullmatch(
            r"netsensor: .*eve\.json: write failed: No space left on device; .*", x)
            for x in lines), err
        assert "Traceback" not in err
        events = read_eve(fs / "log" / "eve.json")
        assert len(events) > 100  # it wrote until the disk was full


# -- the daemon ------------------------------------------------------------------------------

needs_netns = pytest.mark.skipif(not IS_ROOT or not shutil.which("ip"),
                                 reason="daemon tests need root and iproute2 (CI has both)")


class Lab(VethLab):
    """Namespaces nshA*/nshB* joined by a veth pair; removed afterwards, also on failure."""

    def __init__(self) -> None:
        super().__init__("nsh", "h", "10.81.0.1", "10.81.0.2")

    def send_udp(self, ports: range, payload: bytes = b"hello") -> None:
        """One UDP flow per source port, B -> A (A answers with ICMP unreachable)."""
        code = textwrap.dedent(f"""
            import socket, time
            for p in {list(ports)!r}:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("{self.ip_b}", p))
                s.sendto({payload!r}, ("{self.ip_a}", 9999))
                s.close()
                time.sleep(0.002)
        """)
        subprocess.run(["ip", "netns", "exec", self.ns_b, sys.executable, "-c", code],
                       check=True, timeout=30)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab().running() as lab:
        yield lab


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory the daemon can still reach after it dropped root (tmp_path is 0700)."""
    with reachable_tmpdir("nsh-") as path:
        yield path


class Daemon:
    def __init__(self, lab: Lab, work: Path, logdir: Path, workers: int = 1):
        cfg = {"flow": {"timeouts": {"udp": {"new": 1, "established": 1}}},
               "outputs": {"stats": {"interval": 1}}, "live": {"batch_ms": 50}}
        conf = work / "netsensor.yaml"
        conf.write_text(yaml.safe_dump(cfg))
        self.stderr_path = work / "daemon.stderr"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns_a, sys.executable, "-m", "sensor.daemon", "run",
             "-i", lab.va, "-l", str(logdir), "-S", str(work / "ctl.sock"), "-c", str(conf),
             "-w", str(workers)], cwd=str(REPO), stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "w"),  # noqa: SIM115
            env={k: v for k, v in dict(os.environ, PYTHONPATH=str(REPO)).items()
                 if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")})

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_log(self, pattern: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.stderr()):
                return
            assert self.proc.poll() is None, self.stderr()
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the daemon's log: {self.stderr()}")

    def workers(self) -> list[int]:
        kids: list[int] = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            kids += map(int, Path(f"/proc/{self.proc.pid}/task/{task}/children")
                        .read_text().split())
        return kids

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def udp_flows(events: list[dict], lab: Lab) -> set[int]:
    return {e["src_port"] for e in events if e["event_type"] == "flow"
            and e["proto"] == "UDP" and e["src_ip"] == lab.ip_b}


@needs_netns
def test_daemon_disk_full_reports_holds_and_resumes(lab: Lab, work: Path) -> None:
    with small_tmpfs(work / "log", "512k") as logdir:
        d = Daemon(lab, work, logdir)
        try:
            d.wait_log("capturing on")
            filler = fill(logdir)
            lab.send_udp(range(20000, 20040))  # their flow events come while it is full
            d.wait_log(r"eve\.json: write failed: No space left on device")
            time.sleep(2.5)  # the flows time out (1 s) and are logged into the hold
            filler.unlink()
            d.wait_log(r"eve\.json: writing again; 0 event\(s\) were dropped")
            lab.send_udp(range(21000, 21040))
            time.sleep(2.5)
            assert d.stop() == 0, d.stderr()
        finally:
            d.kill()
        events = read_eve(logdir / "eve.json")
        assert d.stderr().count("write failed") == 1, d.stderr()  # reported once
    got = udp_flows(events, lab)
    assert set(range(20000, 20040)) <= got, "flows logged while the disk was full were lost"
    assert set(range(21000, 21040)) <= got
    flows_add_up(events)


@needs_netns
def test_daemon_worker_killed_with_sigkill(lab: Lab, work: Path) -> None:
    logdir = work / "log"
    d = Daemon(lab, work, logdir, workers=2)
    try:
        d.wait_log("capturing on")
        lab.send_udp(range(22000, 22100))
        time.sleep(2.5)  # flows of both workers time out and are logged
        victim = d.workers()[0]
        os.kill(victim, signal.SIGKILL)
        d.wait_log(r"worker \d exited unexpectedly")
        try:
            rc = d.proc.wait(20)  # it stops on its own: systemd's Restart=on-failure
            assert rc == 1, d.stderr()
        except subprocess.TimeoutExpired:
            lab.send_udp(range(23000, 23010))  # or it carried on: still capturing
            time.sleep(2.5)
            assert d.stop() == 0, d.stderr()
    finally:
        d.kill()
    assert "Traceback" not in d.stderr(), d.stderr()
    events = read_eve(logdir / "eve.json")
    assert events and events[-1]["event_type"] == "stats"
    assert len(udp_flows(events, lab)) >= 50  # what was logged before the kill is whole
    unit = (REPO / "systemd" / "netsensor.service").read_text()
    assert re.search(r"^Restart=on-failure$", unit, re.M)
