"""Highest replay rate with no kernel drops: netsensor (1 and 2 workers) vs Suricata af-packet.

Creates two namespaces joined by a veth pair, runs the capture on one end and tcpreplay on
the other at increasing packet rates, and reads the kernel's drop counter
(PACKET_STATISTICS) after each run: netsensor's final stats event, Suricata's exit stats.
No packet leaves the namespaces. Needs root, tcpreplay, and Suricata for its column.

    sudo .venv/bin/python bench/live_bench.py [--pcap pcaps/sample.pcap] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATES = [2000, 5000, 10000, 20000, 30000, 40000, 50000, 60000, 80000, 100000, 120000,
         160000, 240000, 320000]
NS_CAP, NS_GEN, V_CAP, V_GEN = "nsdbenchcap", "nsdbenchgen", "nsdbcap", "nsdbgen"


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def setup() -> None:
    teardown()
    for ns in (NS_CAP, NS_GEN):
        sh("ip", "netns", "add", ns)
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    sh("ip", "link", "add", V_CAP, "netns", NS_CAP, "type", "veth", "peer", "name", V_GEN,
       "netns", NS_GEN)
    for ns, dev in ((NS_CAP, V_CAP), (NS_GEN, V_GEN)):
        sh("ip", "-n", ns, "link", "set", dev, "mtu", "9000")
        sh("ip", "-n", ns, "link", "set", dev, "up")


def teardown() -> None:
    for ns in (NS_CAP, NS_GEN):
        sh("ip", "netns", "del", ns, check=False)


def replay(pcap: str, pps: int, seconds: float) -> tuple[int, float]:
    """Send pps * seconds packets from the generator end; return how many went out and
    the rate tcpreplay reports it reached (it may fall short on a busy machine)."""
    res = sh("ip", "netns", "exec", NS_GEN, "tcpreplay", "-i", V_GEN, f"--pps={pps}",
             "--loop=100000", f"--limit={int(pps * seconds)}", pcap, check=False,
             timeout=seconds * 4 + 30)
    m = re.search(r"Successful packets:\s+(\d+)", res.stdout)
    rated = re.search(r"Rated: .*?([\d.]+) pps", res.stdout)
    achieved = float(rated.group(1)) if rated else 0.0
    return (int(m.group(1)) if m else 0), achieved


def _wait_ready(sock: socket.socket, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < end and proc.poll() is None:
        try:
            if b"READY=1" in sock.recv(4096):
                return
        except TimeoutError:
            continue
    raise RuntimeError("netsensor did not become ready")


def run_netsensor(pcap: str, pps: int, seconds: float,
                  workers: int) -> tuple[int, float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        # started as root, the daemon runs as nobody once capturing: let it reach its
        # notify socket and the directory, as systemd's /run/systemd/notify allows
        os.chmod(tmp, 0o755)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(f"{tmp}/notify")
        os.chmod(f"{tmp}/notify", 0o666)
        cfg = Path(tmp, "c.yaml")
        cfg.write_text("outputs:\n  stats:\n    interval: 0\nlive:\n  batch_ms: 50\n")
        env = dict(os.environ, NOTIFY_SOCKET=f"{tmp}/notify", PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", NS_CAP, sys.executable, "-m", "sensor.daemon", "run",
             "-i", V_CAP, "-l", tmp, "-S", f"{tmp}/ctl", "-c", str(cfg), "-w", str(workers)],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(notify, proc, 60)
            sent, achieved = replay(pcap, pps, seconds)
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            notify.close()
        stats = [json.loads(x) for x in Path(tmp, "eve.json").read_text().splitlines()
                 if '"event_type":"stats"' in x][-1]["stats"]["capture"]
        return sent, achieved, stats["kernel_packets"], stats["kernel_drops"]


def run_suricata(pcap: str, pps: int, seconds: float,
                 workers: int) -> tuple[int, float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", NS_CAP, "suricata", f"--af-packet={V_CAP}", "-S",
             "/dev/null", "-l", tmp, "-k", "none", "--runmode", "workers",
             "--set", f"af-packet.0.interface={V_CAP}",
             "--set", f"af-packet.0.threads={workers}",
             "--set", "af-packet.0.cluster-type=cluster_flow",
             "--set", "af-packet.0.cluster-id=77"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = Path(tmp, "suricata.log")
        end = time.monotonic() + 90
        while time.monotonic() < end and proc.poll() is None:
            if log.exists() and "engine started" in log.read_text().lower():
                break
            time.sleep(0.2)
        try:
            sent, achieved = replay(pcap, pps, seconds)
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        text = log.read_text()
        pairs = re.findall(r"packets: (\d+), drops: (\d+)", text)
        pkts = sum(int(p) for p, _ in pairs)
        drops = sum(int(d) for _, d in pairs)
        return sent, achieved, pkts, drops


def ladder(name: str, fn, pcap: str, seconds: float, workers: int) -> tuple[int, str]:
    """Highest rate tcpreplay actually reached with every packet captured and no kernel
    drop, and what ended the ladder: drops, or the generator falling short of the target
    (on a small machine tcpreplay competes with the capture for the cores)."""
    best = 0
    for pps in RATES:
        sent, achieved, pkts, drops = fn(pcap, pps, seconds, workers)
        print(f"{name:>20} workers={workers} target={pps:>7} reached={achieved:>9,.0f} pps: "
              f"sent {sent:>8} captured {pkts:>8} kernel drops {drops}", flush=True)
        if drops or pkts < sent * 0.99:
            return best, f"drops at {achieved:,.0f} pps"
        best = max(best, int(achieved))
        if achieved < pps * 0.9:
            return best, "generator limit"
    return best, "top of the ladder"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", default=str(REPO / "pcaps" / "sample.pcap"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--no-suricata", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("live_bench: needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    if not shutil.which("tcpreplay"):
        print("live_bench: tcpreplay not installed (apt-get install tcpreplay)", file=sys.stderr)
        return 2
    setup()
    results = []
    try:
        for workers in (1, 2):
            results.append(("netsensor", workers,
                            *ladder("netsensor", run_netsensor, args.pcap, args.seconds,
                                    workers)))
        if shutil.which("suricata") and not args.no_suricata:
            for workers in (1, 2):
                results.append(("suricata af-packet", workers,
                                *ladder("suricata", run_suricata, args.pcap, args.seconds,
                                        workers)))
    finally:
        teardown()
    print(f"\nhighest rate with no kernel drops ({args.seconds:g} s per step, "
          f"{os.path.basename(args.pcap)}):")
    for name, workers, best, why in results:
        print(f"  {name:<20} {workers} worker(s): {best:>7,} packets/s  (then: {why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
