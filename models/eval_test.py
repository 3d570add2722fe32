#!/usr/bin/env python3
"""Model and rules together on the model card's held-out test split, as the sensor runs.

For every test capture of the shipped recipe (`--test` in models/train-args.txt) this runs
`netsensor eval --labels CAPTURE.labels.csv CAPTURE -c netsensor.yaml` (a real replay with
the shipped rules and model) and sums the per-attack results: an attack instance counts as
detected when at least one alert (rule or model) from its attacker to its victim falls
inside its slot (plus eval's grace); every other alert is a false alert. Writes
models/eval.md, which `netsensor train` inlines in the model card (models/README.md), and
refreshes that section of the card when it is there.

    .venv/bin/python models/eval_test.py [--config netsensor.yaml] [--out models/eval.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sensor.train import add_train_parser, parse_capture  # noqa: E402


def test_captures() -> list[str]:
    """The `--test` captures of models/train-args.txt, in order, read by `netsensor train`'s
    own parser (as models/lofo.py reads the recipe)."""
    p = argparse.ArgumentParser()
    add_train_parser(p.add_subparsers(dest="cmd"))
    recipe = shlex.split((REPO / "models" / "train-args.txt").read_text())
    return list(p.parse_args(["train", *recipe]).test)


def run_eval(pcap: str, labels: str, config: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        rep = Path(d) / "eval.json"
        subprocess.run([sys.executable, "-m", "sensor.cli", "eval", "--labels", labels, pcap,
                        "-c", config, "--json", str(rep), "-q"], check=True, cwd=REPO)
        return json.loads(rep.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="netsensor.yaml")
    ap.add_argument("--out", default=str(REPO / "models" / "eval.md"))
    a = ap.parse_args()
    fam: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows, missed = [], []
    seconds = false = 0.0
    for spec in test_captures():
        pcap, labels = parse_capture(str(REPO / spec))  # the recipe's paths are repo-relative
        if labels is None:
            print(f"eval_test: {pcap}: no labels file beside it", file=sys.stderr)
            return 2
        r = run_eval(pcap, labels, a.config)
        atk = r["attacks"]
        det = sum(1 for x in atk if x["detected"])
        for x in atk:
            f = fam[x["family"]]
            f["instances"] += 1
            f["detected"] += bool(x["detected"])
            f["rules"] += x["alerts_rules"] > 0
            f["model"] += x["alerts_model"] > 0
            if not x["detected"]:
                missed.append(f"{Path(pcap).name} {x['name']}")
        b = r["benign"]
        seconds += r["capture_s"]
        false += b["false_alerts"]
        rows.append(f"| `{spec}` | {len(atk)} | {det} | {b['false_alerts']} | "
                    f"{r['capture_s']:.0f} |")
        print(f"{spec}: {det}/{len(atk)} detected, {b['false_alerts']} false alerts",
              file=sys.stderr)
    n = sum(f["instances"] for f in fam.values())
    d = sum(f["detected"] for f in fam.values())
    hours = seconds / 3600
    w = ["## Model and rules together (held-out test split)\n",
         f"The shipped detection as the sensor runs it (`{a.config}`: rules/netsensor.rules "
         "and this model), replayed over each test capture by `netsensor eval` "
         "(`python models/eval_test.py`). An attack counts as detected when an alert (rule "
         "or model) from its attacker to its victim falls inside its slot; any other alert is "
         "false. Model alerts are aggregated as in production (one per source, class and "
         "60 s), so an attack that follows another of the same class from the same source "
         "within a minute shows no new model alert.\n",
         f"- Attack instances detected: **{d}/{n} = {100 * d / max(1, n):.1f}%**.",
         f"- False alerts: **{int(false)} in {seconds / 60:.1f} min of captures = "
         f"{false / max(hours, 1e-9):.2f}/hour** (all traffic of the captures, attacks "
         "included, counts as time).",
         "- Missed: " + (", ".join(missed) if missed else "none") + ".\n",
         "| capture | attacks | detected | false alerts | seconds |",
         "|---|---|---|---|---|", *rows, "",
         "| family | instances | detected | alerted by rules | alerted by the model |",
         "|---|---|---|---|---|"]
    for k in sorted(fam):
        f = fam[k]
        w.append(f"| {k} | {f['instances']} | {f['detected']} | {f['rules']} | {f['model']} |")
    text = "\n".join(w) + "\n"
    Path(a.out).write_text(text, encoding="utf-8")
    print(f"wrote {a.out}: {d}/{n} detected, {int(false)} false alerts", file=sys.stderr)
    card = Path(a.out).parent / "README.md"
    if card.is_file():  # the card inlines this section (sensor.train._extra_sections)
        old = card.read_text(encoding="utf-8")
        head = old.find(w[0].rstrip("\n"))
        if head >= 0:
            nxt = old.find("\n## ", head + 1)
            card.write_text(old[:head] + text + (old[nxt:] if nxt >= 0 else ""),
                            encoding="utf-8")
            print(f"updated {card}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
