"""Side-by-side replay benchmark: `netsensor replay` against `suricata -r` on the same capture.

Each round runs every variant once, in turn (so load from other users of the machine hits
all of them alike), for N rounds; the report gives the median wall seconds, packets/s, CPU
seconds (user + system, all threads) and peak RSS of each variant, and the ratio of
netsensor's packets/s to Suricata's. Wall time and RSS come from the child process itself
(os.wait4), so interpreter start-up and Suricata's rule/engine set-up are included for both.

Variants: netsensor with built-in defaults (flow + stats EVE); the same with flow lines
formatted and written by a second process (`replay.eve_process`,
bench/netsensor-eve-process.yaml); netsensor with `--config` (rules and model stages),
when given; Suricata 7 with flow + stats EVE only and no rules
(bench/suricata-bench.yaml), `-k none --runmode single`, and the same in Suricata's default
autofp runmode; with `-w N`, netsensor with N replay worker processes
(sensor.replay_parallel). Suricata variants are left out (and said so) where it is not
installed. CPU seconds of a variant with workers include the workers (os.wait4 counts the
children a process has waited for); its peak RSS is the largest single process.

    python3 bench/make_bench_pcap.py                  # once: bench/data/mixed.pcap
    python3 bench/replay_bench.py                     # 5 rounds -> bench/results/replay.json
    python3 bench/replay_bench.py --config netsensor.yaml --runs 3
    python3 bench/replay_bench.py -w 2                # adds `netsensor replay -w 2`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_PCAP = os.path.join(ROOT, "bench", "data", "mixed.pcap")
DEFAULT_JSON = os.path.join(ROOT, "bench", "results", "replay.json")
SURICATA_YAML = os.path.join(ROOT, "bench", "suricata-bench.yaml")
EVE_PROCESS_YAML = os.path.join(ROOT, "bench", "netsensor-eve-process.yaml")


@dataclass
class Variant:
    """One program and its arguments; `{pcap}` and `{logdir}` are filled in per run."""

    name: str
    argv: list[str]
    runs: list[dict[str, float]] = field(default_factory=list)
    flow_events: int = 0


def count_packets(pcap: str) -> int:
    """Records in the capture, read with the sensor's own reader."""
    from sensor.capture.pcap import PcapSource

    src = PcapSource(pcap)
    n = sum(len(b) for b in src.batches())
    if src.error is not None:
        raise SystemExit(f"replay_bench: {src.error}")
    return n


def run_once(argv: list[str], env: dict[str, str]) -> dict[str, float] | str:
    """Run a command to its end; wall seconds, CPU seconds and peak RSS (KiB) of the child,
    or why it failed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=ROOT)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        return f"{' '.join(argv)} exited {proc.returncode}: {last[:300]}"
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_kib": float(usage.ru_maxrss)}


def count_flow_events(logdir: str) -> int:
    path = os.path.join(logdir, "eve.json")
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if b'"event_type":"flow"' in line)


def variants(args: argparse.Namespace) -> tuple[list[Variant], list[str]]:
    notes: list[str] = []
    ns = [sys.executable, "-m", "sensor.cli", "replay", "-q", "-l", "{logdir}", "{pcap}"]
    out = [Variant("netsensor", ns)]
    if not args.no_eve_process:
        out.append(Variant("netsensor, EVE process", ns + ["-c", EVE_PROCESS_YAML]))
    for n in args.workers:  # sensor.replay_parallel: the packets spread over n processes
        out.append(Variant(f"netsensor -w {n}", ns + ["-w", str(n)]))
    if args.config:
        out.append(Variant(f"netsensor -c {os.path.basename(args.config)}",
                           ns + ["-c", os.path.abspath(args.config)]))
    suricata = None if args.no_suricata else shutil.which(args.suricata)
    if suricata is None:
        notes.append("Suricata not run: " + ("--no-suricata given" if args.no_suricata
                                             else f"{args.suricata} not found"))
        return out, notes
    base = [suricata, "-c", SURICATA_YAML, "-S", "/dev/null", "-k", "none", "-r", "{pcap}",
            "-l", "{logdir}"]
    out.append(Variant("suricata --runmode single", base + ["--runmode", "single"]))
    if not args.single_only:
        out.append(Variant("suricata (autofp)", base))
    return out, notes


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_before": os.getloadavg()}


def suricata_version(variants_: list[Variant]) -> str | None:
    for v in variants_:
        if v.name.startswith("suricata"):
            out = subprocess.run([v.argv[0], "-V"], capture_output=True, text=True).stdout
            return out.strip().splitlines()[0] if out.strip() else None
    return None


def summarize(v: Variant, packets: int) -> dict[str, object]:
    wall = statistics.median(r["wall_s"] for r in v.runs)
    return {
        "variant": v.name,
        "runs": len(v.runs),
        "median_wall_s": round(wall, 3),
        "min_wall_s": round(min(r["wall_s"] for r in v.runs), 3),
        "max_wall_s": round(max(r["wall_s"] for r in v.runs), 3),
        "median_packets_per_s": round(packets / wall),
        "median_cpu_s": round(statistics.median(r["cpu_s"] for r in v.runs), 3),
        "median_peak_rss_mib": round(statistics.median(r["peak_rss_kib"] for r in v.runs)
                                     / 1024, 1),
        "flow_events": v.flow_events,
        "wall_s": [round(r["wall_s"], 3) for r in v.runs],
    }


def markdown(rows: list[dict[str, object]], ratios: dict[str, float]) -> str:
    out = ["| variant | median wall s | packets/s | CPU s | peak RSS MiB | flow events |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['variant']} | {r['median_wall_s']:.2f} | "
                   f"{r['median_packets_per_s']:,} | {r['median_cpu_s']:.2f} | "
                   f"{r['median_peak_rss_mib']:.0f} | {r['flow_events']:,} |")
    if ratios:
        out.append("")
    for name, ratio in ratios.items():
        out.append(f"- {name}: **{ratio:.2f}x**")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcap", nargs="?", default=DEFAULT_PCAP)
    ap.add_argument("-n", "--runs", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("-c", "--config", help="also run netsensor with this config (rules, model)")
    ap.add_argument("--json", default=DEFAULT_JSON, help="where to write the results")
    ap.add_argument("--suricata", default="suricata", help="Suricata binary (default: on PATH)")
    ap.add_argument("--no-suricata", action="store_true", help="netsensor only")
    ap.add_argument("--single-only", action="store_true", help="no autofp Suricata run")
    ap.add_argument("-w", "--workers", type=int, action="append", default=[], metavar="N",
                    help="also run `netsensor replay -w N` (repeatable)")
    ap.add_argument("--no-eve-process", action="store_true",
                    help="leave out the netsensor run with replay.eve_process on")
    args = ap.parse_args(argv)
    if not os.path.exists(args.pcap):
        print(f"replay_bench: {args.pcap}: no such file (make it with "
              f"python3 bench/make_bench_pcap.py)", file=sys.stderr)
        return 2
    pcap = os.path.abspath(args.pcap)
    packets = count_packets(pcap)
    vs, notes = variants(args)
    env = dict(os.environ, TZ="UTC", PYTHONPATH=ROOT + os.pathsep + os.environ.get(
        "PYTHONPATH", ""))
    info = machine()
    for round_no in range(args.runs):
        for v in vs:
            with tempfile.TemporaryDirectory(prefix="replay-bench-") as logdir:
                cmd = [a.replace("{pcap}", pcap).replace("{logdir}", logdir) for a in v.argv]
                got = run_once(cmd, env)
                if isinstance(got, str):  # reported, and the round left out of the medians
                    notes.append(f"round {round_no + 1} {v.name} failed: {got}")
                    print(f"round {round_no + 1}/{args.runs} {v.name}: FAILED", file=sys.stderr)
                    continue
                v.runs.append(got)
                if not v.flow_events:
                    v.flow_events = count_flow_events(logdir)
            print(f"round {round_no + 1}/{args.runs} {v.name}: {v.runs[-1]['wall_s']:.2f} s",
                  file=sys.stderr)
    info["load_avg_after"] = os.getloadavg()
    rows = [summarize(v, packets) for v in vs if v.runs]
    ratios: dict[str, float] = {}
    for r in rows:
        if not str(r["variant"]).startswith("netsensor"):
            continue
        for s in rows:
            if str(s["variant"]).startswith("suricata"):
                ratios[f"{r['variant']} / {s['variant']} packets/s"] = round(
                    float(r["median_packets_per_s"]) / float(s["median_packets_per_s"]), 2)
    result = {
        "pcap": os.path.relpath(pcap, ROOT) if pcap.startswith(ROOT) else pcap,
        "pcap_bytes": os.path.getsize(pcap), "packets": packets,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python3 bench/replay_bench.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:]),
        "machine": info, "suricata": suricata_version(vs), "results": rows,
        "ratios": ratios, "notes": notes, "variants": {v.name: v.argv for v in vs},
    }
    table = markdown(rows, ratios)
    print(f"{result['pcap']}: {packets:,} packets, {result['pcap_bytes']:,} bytes; "
          f"median of {args.runs} rounds; {info['cores']} cores ({info['cpu']}), load "
          f"{info['load_avg_before'][0]:.1f} before / {info['load_avg_after'][0]:.1f} after")
    print(table)
    for note in notes:
        print(note)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
