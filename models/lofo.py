#!/usr/bin/env python3
"""Leave-one-family-out: how does the classifier do on an attack family it never saw?

For each attack family, trains the shipped model's recipe (models/train-args.txt, the same
splits and seed) with that family dropped from train and validation (`netsensor train
--leave-out FAMILY`), then reads the held-out test split's result for that family: was each
instance still flagged, by any class, at the calibrated thresholds? Writes models/lofo.md,
which `netsensor train` includes in the model card (models/README.md).

    nice .venv/bin/python models/lofo.py [--epochs 12] [--families a,b]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sensor.train import add_train_parser  # noqa: E402

FAMILIES = ("brute-force", "dns-tunnel", "exfil", "flood", "port-scan", "slow-dos")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--out", default=str(REPO / "models" / "lofo.md"))
    a = ap.parse_args()
    recipe = shlex.split((REPO / "models" / "train-args.txt").read_text())
    # families the shipped recipe already leaves out (exfil) stay out in every run
    base_out: list[str] = []
    while "--leave-out" in recipe:
        i = recipe.index("--leave-out")
        base_out += [f for f in recipe[i + 1].split(",") if f]
        del recipe[i:i + 2]
    rows = []
    for fam in [f for f in a.families.split(",") if f not in base_out]:
        with tempfile.TemporaryDirectory() as d:
            p = argparse.ArgumentParser()
            add_train_parser(p.add_subparsers(dest="cmd"))
            rep = Path(d) / "r.json"
            args = p.parse_args(["train", *recipe, "-o", str(Path(d) / "m.onnx"), "--card",
                                 "none", "--no-plots", "--leave-out",
                                 ",".join([*base_out, fam]), "--epochs",
                                 str(a.epochs), "--report-json", str(rep)])
            if args.fn(args) != 0:
                print(f"lofo {fam}: training failed", file=sys.stderr)
                return 1
            r = json.loads(rep.read_text())
        pf = r["test"]["per_family"].get(fam, {"instances": 0, "detected": 0})
        others = [v for k, v in r["test"]["per_family"].items()
                  if k != fam and k not in base_out]
        rows.append({"family": fam, "instances": pf["instances"], "detected": pf["detected"],
                     "others_detected": sum(v["detected"] for v in others),
                     "others": sum(v["instances"] for v in others),
                     "fa_per_hour": r["test"]["false_alerts_per_hour"]})
        print(f"lofo {fam}: {pf['detected']}/{pf['instances']} still flagged", file=sys.stderr)
    w = ["## Leave-one-family-out\n",
         "Each row: the model retrained without that family in train and validation "
         f"(`python models/lofo.py --epochs {a.epochs}`, otherwise the shipped recipe), "
         "scored on the same held-out test split. *Flagged* = detected by any class as in "
         "the card (an alert on a window of the instance, or 2+ windows over the "
         "calibrated thresholds while an earlier alert covered the period)."
         + (f" The shipped recipe never trains on {', '.join(base_out)} (see the card), so "
            "it has no row and its instances are left out of the other-families column."
            if base_out else "") + "\n",
         "| left out | its instances flagged | other families flagged | false alerts/hour |",
         "|---|---|---|---|"]
    for x in rows:
        w.append(f"| {x['family']} | {x['detected']}/{x['instances']} | "
                 f"{x['others_detected']}/{x['others']} | {x['fa_per_hour']:.1f} |")
    Path(a.out).write_text("\n".join(w) + "\n", encoding="utf-8")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
