"""Random-source SYN flood at full replay speed: are legitimate flows still logged, and
does memory stay under the limit?

Builds bench/data/synflood.pcap (bench/make_flood_pcap.py: 1M flood SYNs, each from a new
random source, with 400 legitimate sessions interleaved) unless it exists, then replays it
as fast as the sensor goes (that is the highest rate it sustains) in a child process, once
per flow-table size. Reports packets/s, peak resident memory (wait4's rusage of the child)
against the daemon's memory limit (MemoryMax= in systemd/netsensor.service), and how many
legitimate sessions came out with exactly their packet counts.

    python3 bench/flood_bench.py                 # 1M flood, max_flows 262144 and 65536
    python3 bench/flood_bench.py --flood 200000 --max-flows 262144
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from make_flood_pcap import build  # noqa: E402


def memory_max_mb() -> int:
    """MemoryMax= of the shipped unit, in MiB (the limit the daemon runs under)."""
    unit = open(os.path.join(ROOT, "systemd", "netsensor.service")).read()
    m = re.search(r"^MemoryMax=(\d+)([KMG]?)$", unit, re.M)
    if not m:
        return 0
    return int(m.group(1)) * {"": 1 / (1 << 20), "K": 1 / 1024, "M": 1, "G": 1024}[m.group(2)]


def run(pcap: str, max_flows: int, legit: list[dict]) -> dict:
    with tempfile.TemporaryDirectory(prefix="flood-bench-") as tmp:
        cfg = os.path.join(tmp, "netsensor.yaml")
        with open(cfg, "w") as f:
            f.write(f"flow:\n  max-flows: {max_flows}\noutputs:\n  stats:\n    interval: 1\n")
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sensor.cli", "replay", "-q", "-l", tmp, "-c", cfg, pcap],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.monotonic() - start
        err = proc.stderr.read()
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0:
            raise SystemExit(f"replay failed ({rc}): {err}")
        # keep only the legitimate sessions' events: this process must stay small, or the
        # next child (spawned from it) would start with its size in ru_maxrss
        want = {(lf["proto"], lf["src_ip"], lf["src_port"], lf["dest_ip"], lf["dest_port"])
                for lf in legit}
        flows = {}
        active_max = 0
        packets = 0
        last = {}
        with open(os.path.join(tmp, "eve.json")) as f:
            for line in f:
                e = json.loads(line)
                if e["event_type"] == "flow":
                    key = (e["proto"], e["src_ip"], e.get("src_port"), e["dest_ip"],
                           e.get("dest_port"))
                    if key in want:
                        flows[key] = e["flow"]
                elif e["event_type"] == "stats":
                    last = e["stats"]
                    active_max = max(active_max, last["flow"].get("active", 0))
                    packets = last["decoder"]["pkts"]
        ok = sum(1 for lf in legit
                 if (got := flows.get((lf["proto"], lf["src_ip"], lf["src_port"], lf["dest_ip"],
                                       lf["dest_port"]))) is not None
                 and (got["pkts_toserver"], got["pkts_toclient"]) == (
                     lf["pkts_toserver"], lf["pkts_toclient"]))
    cpu = usage.ru_utime + usage.ru_stime
    return {"max_flows": max_flows, "packets": packets, "seconds": round(secs, 2),
            "pps": round(packets / secs), "cpu_seconds": round(cpu, 2),
            "pps_per_cpu_second": round(packets / cpu),
            "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "legit_ok": ok, "legit": len(legit), "flows_active_max": active_max,
            "evicted": last.get("flow", {}).get("get_used", 0),
            "emergency_entered": last.get("flow", {}).get("emerg_mode_entered", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", default=os.path.join(ROOT, "bench", "data", "synflood.pcap"))
    ap.add_argument("--flood", type=int, default=1_000_000)
    ap.add_argument("--legit", type=int, default=400)
    ap.add_argument("--max-flows", type=int, nargs="+", default=[262144, 65536])
    a = ap.parse_args()
    legit_file = a.pcap + ".legit.json"
    if not (os.path.exists(a.pcap) and os.path.exists(legit_file)):
        os.makedirs(os.path.dirname(a.pcap), exist_ok=True)
        build(a.pcap, a.flood, a.legit)
    with open(legit_file) as f:
        legit = json.load(f)
    limit = memory_max_mb()
    print(f"capture: {a.pcap} ({os.path.getsize(a.pcap) >> 20} MiB); memory limit "
          f"(MemoryMax of systemd/netsensor.service): {limit:.0f} MiB")
    for mf in a.max_flows:
        r = run(a.pcap, mf, legit)
        verdict = "ok" if r["legit_ok"] == r["legit"] and r["peak_rss_mb"] < limit else "FAIL"
        print(f"max_flows {mf:>7}: {r['packets']:,} packets in {r['seconds']} s = "
              f"{r['pps']:,} packets/s ({r['cpu_seconds']} CPU s: "
              f"{r['pps_per_cpu_second']:,} packets per CPU second); peak RSS "
              f"{r['peak_rss_mb']} MiB; legitimate sessions "
              f"logged exactly {r['legit_ok']}/{r['legit']}; flows active at most "
              f"{r['flows_active_max']:,}; evicted {r['evicted']:,}  [{verdict}]")


if __name__ == "__main__":
    main()
