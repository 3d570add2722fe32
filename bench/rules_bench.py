"""Rules benchmark: netsensor replay vs suricata -r, same rule files, same pcap, alternating.

Rule files: the ET Open rules netsensor loads (the "loadable subset": every active rule of
../shared/rulesets/et-open-2024-04.tar.gz that sensor.detect.rules.load_rules accepts,
written to one file) plus rules/netsensor.rules. Both engines run single-threaded on the
same pcap, alternating, N times each. Each run records the wall time of the whole command
(start-up with rule loading included) and the engine's own processing time, printed by
the engine after the last packet: Suricata's `time elapsed` (-v; from engine start to
shutdown), netsensor's `time:` summary line (from the first batch to the end). So

    packets/s = packets / median processing time

(ET Open 2024-04 ships a `suricata.rules` with local sids 1000002/1000004; ET rules whose
sid collides with a shipped rule are left out, so both engines load the same set.)

Results go to bench/results/rules.json (and are quoted in docs/rules.md).

    nice python bench/rules_bench.py [--pcap PCAP] [--first N] [--runs N] [--no-et]
                                     [--before TREE]

--first N benches the first N packets of PCAP (cut with editcap). --before TREE also runs
`python -m sensor.cli` from TREE (a directory holding another `sensor` package, e.g. the
engine before a change), as a third engine in the same alternation ("netsensor_before").
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ET_TARBALL = Path("/work/shared/rulesets/et-open-2024-04.tar.gz")
SHIPPED = ROOT / "rules" / "netsensor.rules"
CLASSIFICATION = ROOT / "rules" / "classification.config"
SURICATA_YAML = ROOT / "tests" / "e2e" / "suricata.yaml"
OUT = ROOT / "bench" / "results" / "rules.json"


def et_loadable_subset(workdir: Path) -> tuple[Path, dict[str, int]]:
    """One rule file with every ET Open rule netsensor's loader accepts."""
    sys.path.insert(0, str(ROOT))
    from sensor.detect.rules import load_rules

    with tarfile.open(ET_TARBALL) as tar:
        tar.extractall(workdir, filter="data")
    files = sorted(glob.glob(str(workdir / "rules" / "*.rules")))
    rs = load_rules(files)
    shipped = {(r.gid, r.sid) for r in load_rules([SHIPPED]).rules}
    keep = [r for r in rs.rules if (r.gid, r.sid) not in shipped]
    out = workdir / "et-loadable.rules"
    out.write_text("".join(r.raw.strip() + "\n" for r in keep))
    return out, {"et_rules_loaded": len(keep), "et_rules_rejected": rs.rejected,
                 "et_rules_dropped_sid_collision": rs.loaded - len(keep)}


def pcap_packets(pcap: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from sensor.capture.pcap import PcapSource

    src = PcapSource(str(pcap))
    return sum(len(b) for b in src.batches())


def suricata_cmd(rules: list[Path], pcap: Path, logdir: str) -> list[str]:
    (rule_file,) = rules  # suricata -S takes one file: the bench joins them into one
    return ["suricata", "-v", "-c", str(SURICATA_YAML), "-S", str(rule_file), "-r", str(pcap),
            "-l", logdir, "-k", "none", "--runmode", "single", "--init-errors-fatal",
            "--set", f"classification-file={CLASSIFICATION}", "--set", "threshold-file=/dev/null",
            "--set", "reference-config-file=/etc/suricata/reference.config"]


def netsensor_cmd(rules: list[Path], pcap: Path, logdir: str) -> list[str]:
    cfg = Path(logdir) / "netsensor.yaml"
    cfg.write_text(
        "rules:\n"
        f"  files: {json.dumps([str(r) for r in rules])}\n"
        f"  classification_file: {json.dumps(str(CLASSIFICATION))}\n"
        "replay:\n  progress: false\n")
    return [sys.executable, "-m", "sensor.cli", "replay", "-c", str(cfg), "-l", logdir,
            str(pcap)]


PROCESSING_TIME = {  # engine -> pattern of its own processing-time line
    "suricata": re.compile(r"time elapsed ([0-9.]+)s"),
    "netsensor": re.compile(r"^time: ([0-9.]+) s", re.M),
}


def timed(name: str, cmd_for: Any, rules: list[Path], pcap: Path,
          cwd: Path = ROOT) -> tuple[float, float, int]:
    """Wall seconds, the engine's processing seconds and the alerts of one run."""
    with tempfile.TemporaryDirectory() as logdir:
        cmd = cmd_for(rules, pcap, logdir)
        t0 = time.perf_counter()
        run = subprocess.run(cmd, check=True, cwd=cwd, capture_output=True, text=True,
                             env={**os.environ, "TZ": "UTC"})
        secs = time.perf_counter() - t0
        m = PROCESSING_TIME[name.split("_")[0]].search(run.stdout + run.stderr)
        if m is None:
            raise SystemExit(f"{name}: no processing time in its output:\n{run.stderr[-2000:]}")
        eve = Path(logdir) / "eve.json"
        alerts = 0
        if eve.exists():
            with open(eve) as f:
                alerts = sum('"event_type":"alert"' in line.replace(" ", "") for line in f)
        return secs, float(m.group(1)), alerts


def bench(rules: list[Path], pcap: Path, runs: int, before: Path | None = None,
          ) -> dict[str, Any]:
    engines = {"netsensor": netsensor_cmd, "suricata": suricata_cmd}
    if before is not None:
        engines["netsensor_before"] = netsensor_cmd
    wall: dict[str, list[float]] = {k: [] for k in engines}
    proc: dict[str, list[float]] = {k: [] for k in engines}
    alerts: dict[str, int] = {}
    for _ in range(runs):  # alternate engines so drifting machine load hits both alike
        for name, fn in engines.items():
            cwd = before if name == "netsensor_before" and before is not None else ROOT
            w, p, n = timed(name, fn, rules, pcap, cwd)
            wall[name].append(w)
            proc[name].append(p)
            alerts[name] = n
    packets = pcap_packets(pcap)
    res: dict[str, Any] = {}
    for name in engines:
        p = statistics.median(proc[name])
        res[name] = {"wall_s": round(statistics.median(wall[name]), 3),
                     "processing_s": round(p, 3),
                     "packets_per_s": round(packets / max(p, 1e-6)),
                     "alerts": alerts[name], "wall_runs_s": [round(x, 3) for x in wall[name]],
                     "processing_runs_s": [round(x, 3) for x in proc[name]]}
    res["ratio_suricata_over_netsensor_pps"] = round(
        res["suricata"]["packets_per_s"] / max(res["netsensor"]["packets_per_s"], 1), 2)
    if before is not None:
        res["speedup_netsensor_over_before"] = round(
            res["netsensor"]["packets_per_s"] /
            max(res["netsensor_before"]["packets_per_s"], 1), 2)
    res["packets"] = packets
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", type=Path, default=ROOT / "pcaps" / "sample.pcap")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-et", action="store_true", help="only the shipped rules")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--first", type=int, default=0, help="only the first N packets")
    ap.add_argument("--before", type=Path, help="tree with the `sensor` package to compare")
    args = ap.parse_args()
    pcap_name = os.path.relpath(args.pcap.resolve(), ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        if args.first:
            cut = Path(tmp) / f"first-{args.first}.pcap"
            subprocess.run(["editcap", "-F", "pcap", "-r", str(args.pcap), str(cut),
                            f"1-{args.first}"], check=True)
            args.pcap = cut
            pcap_name += f" (first {args.first:,} packets)"
        joined = Path(tmp) / "bench.rules"
        info: dict[str, Any] = {}
        text = SHIPPED.read_text()
        if not args.no_et:
            et, info = et_loadable_subset(Path(tmp))
            text = et.read_text() + text
        joined.write_text(text)
        load_before = os.getloadavg()[0]
        res = bench([joined], args.pcap.resolve(), args.runs,
                    args.before.resolve() if args.before else None)
        res["load_avg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    res.update(info)
    res.update({
        "pcap": pcap_name, "runs": args.runs,
        "rule_files": (["rules/netsensor.rules"] if args.no_et
                       else ["ET Open loadable subset", "rules/netsensor.rules"]),
        "suricata": {**res["suricata"],
                     "version": subprocess.run(["suricata", "-V"], capture_output=True,
                                               text=True).stdout.strip()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "command": "nice python bench/rules_bench.py " + " ".join(sys.argv[1:]),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for name in ("netsensor", "netsensor_before", "suricata"):
        if name not in res:
            continue
        r = res[name]
        print(f"{name:16s} wall {r['wall_s']:7.2f} s  processing {r['processing_s']:7.2f} s  "
              f"{r['packets_per_s']:>10,} packets/s  {r['alerts']} alerts")
    print(f"packets {res['packets']:,}; suricata/netsensor packets/s ratio "
          f"{res['ratio_suricata_over_netsensor_pps']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
