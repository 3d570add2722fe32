"""Measure the shipped ruleset on the labelled lab captures: hits on attacks, hits on benign.

Runs real Suricata 7 (and, with --engine netsensor, netsensor replay) over each capture
with rules/netsensor.rules + classification/threshold config, then assigns each alert to
a labelled attack slot (its time lies in the slot and the slot's attacker is one of the
alert's addresses) or to benign traffic (everything else: attackers send nothing outside
their slots, see pcaps/lab/README.md). Prints a per-rule table and writes JSON.

    python bench/ruleset_eval.py [--engine suricata|netsensor] [--out FILE] [PCAP ...]

Without PCAP arguments: pcaps/sample.pcap, every pcaps/lab/out/*.pcap that has a
*.labels.csv next to it, and the benign-only lab captures pcaps/lab/out/bn-*.pcap (no
labels: every alert there is a false alert).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "netsensor.rules"
CLASSIFICATION = ROOT / "rules" / "classification.config"
THRESHOLD = ROOT / "rules" / "threshold.config"
SURICATA_YAML = ROOT / "tests" / "e2e" / "suricata.yaml"
NETSENSOR_YAML = ROOT / "netsensor.yaml"


def default_pcaps() -> list[Path]:
    """sample.pcap, every lab capture that has labels, and the benign-only ones."""
    out = [ROOT / "pcaps" / "sample.pcap"]
    for p in sorted(glob.glob(str(ROOT / "pcaps" / "lab" / "out" / "*.pcap"))):
        if Path(p).with_suffix(".labels.csv").exists() or Path(p).name.startswith("bn-"):
            out.append(Path(p))
    return out


def labels_for(pcap: Path) -> list[dict[str, Any]]:
    """The attack slots of a capture (empty for a capture without a labels file)."""
    path = pcap.with_suffix(".labels.csv")
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{**row, "start_ts": float(row["start_ts"]), "end_ts": float(row["end_ts"])}
                for row in csv.DictReader(f)]


def run_suricata(pcap: Path, rules: Path, logdir: str) -> Path:
    """Real Suricata over one capture; returns its eve.json."""
    cmd = ["suricata", "-c", str(SURICATA_YAML), "-S", str(rules), "-r", str(pcap),
           "-l", logdir, "-k", "none", "--runmode", "single", "--init-errors-fatal",
           "--set", f"classification-file={CLASSIFICATION}",
           "--set", f"threshold-file={THRESHOLD}",
           "--set", "reference-config-file=/etc/suricata/reference.config"]
    subprocess.run(cmd, check=True, env={**os.environ, "TZ": "UTC"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Path(logdir) / "eve.json"


def run_netsensor(pcap: Path, rules: Path, logdir: str) -> Path:
    """netsensor replay with the demo config (its rules, vars and threshold file)."""
    cfg = Path(logdir) / "netsensor.yaml"
    cfg.write_text(
        "rules:\n"
        f"  files: [{json.dumps(str(rules))}]\n"
        f"  classification_file: {json.dumps(str(CLASSIFICATION))}\n"
        f"  threshold_file: {json.dumps(str(THRESHOLD))}\n"
        "vars:\n  address_groups:\n"
        "    HOME_NET: \"[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]\"\n"
        "    EXTERNAL_NET: \"!$HOME_NET\"\n")
    subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "-q", "-c", str(cfg),
                    "-l", logdir, str(pcap)], check=True, cwd=ROOT)
    return Path(logdir) / "eve.json"


def alerts_of(eve: Path) -> list[dict[str, Any]]:
    with open(eve) as f:
        return [e for e in map(json.loads, f) if e.get("event_type") == "alert"]


def eve_time(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def slot_of(alert: dict[str, Any], slots: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The labelled attack slot the alert belongs to, None for benign traffic."""
    t = eve_time(alert["timestamp"])
    ips = {alert.get("src_ip"), alert.get("dest_ip")}
    for s in slots:
        if s["start_ts"] <= t <= s["end_ts"] and s["attacker_ip"] in ips:
            return s
    return None


def evaluate(pcaps: list[Path], engine: str) -> dict[str, Any]:
    """Per capture and per rule: alerts on each labelled attack and on benign traffic."""
    per_rule: dict[int, dict[str, Any]] = {}
    captures = []
    for pcap in pcaps:
        slots = labels_for(pcap)
        with tempfile.TemporaryDirectory() as tmp:
            run = run_suricata if engine == "suricata" else run_netsensor
            alerts = alerts_of(run(pcap, RULES, tmp))
        detected: dict[str, set[int]] = defaultdict(set)
        benign: Counter[int] = Counter()
        for a in alerts:
            sid = a["alert"]["signature_id"]
            r = per_rule.setdefault(sid, {"signature": a["alert"]["signature"],
                                          "attack_alerts": Counter(), "benign_alerts": 0,
                                          "benign_by_capture": Counter()})
            s = slot_of(a, slots)
            if s is None:
                r["benign_alerts"] += 1
                r["benign_by_capture"][pcap.name] += 1
                benign[sid] += 1
            else:
                r["attack_alerts"][s["name"]] += 1
                detected[s["name"]].add(sid)
        captures.append({
            "pcap": str(pcap.relative_to(ROOT)) if pcap.is_relative_to(ROOT) else str(pcap),
            "attacks": {s["name"]: sorted(detected.get(s["name"], ())) for s in slots},
            "benign_alerts": dict(sorted(benign.items())),
            "alerts": len(alerts)})
    by_attack: dict[str, dict[str, Any]] = {}
    for c in captures:
        for name, sids in c["attacks"].items():
            d = by_attack.setdefault(name, {"captures": 0, "detected": 0, "sids": set()})
            d["captures"] += 1
            d["detected"] += bool(sids)
            d["sids"] |= set(sids)
    return {"engine": engine, "rules": str(RULES.relative_to(ROOT)), "captures": captures,
            "by_attack": {k: {**v, "sids": sorted(v["sids"])}
                          for k, v in sorted(by_attack.items())},
            "per_rule": {sid: {**v, "attack_alerts": dict(v["attack_alerts"]),
                               "benign_by_capture": dict(v["benign_by_capture"])}
                         for sid, v in sorted(per_rule.items())}}


def print_report(res: dict[str, Any]) -> None:
    print(f"engine: {res['engine']}")
    for c in res["captures"]:
        print(f"\n{c['pcap']}: {c['alerts']} alerts; benign alerts by sid: "
              f"{c['benign_alerts'] or 'none'}")
        for name, sids in c["attacks"].items():
            print(f"  {name:14s} {' '.join(map(str, sids)) or '-'}")
    print("\nattack         detected  sids")
    for name, d in res["by_attack"].items():
        sids = " ".join(map(str, d["sids"])) or "-"
        print(f"  {name:14s} {d['detected']}/{d['captures']}  {sids}")
    print("\nsid      benign  attack alerts (label: count)")
    for sid, r in res["per_rule"].items():
        att = ", ".join(f"{k}:{v}" for k, v in sorted(r["attack_alerts"].items()))
        print(f"{sid}  {r['benign_alerts']:6d}  {att or '-'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcaps", nargs="*", type=Path)
    ap.add_argument("--engine", choices=("suricata", "netsensor"), default="suricata")
    ap.add_argument("--out", type=Path, help="write the JSON result here")
    args = ap.parse_args()
    res = evaluate([p.resolve() for p in args.pcaps] or default_pcaps(), args.engine)
    print_report(res)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
