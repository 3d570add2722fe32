"""Rule engine throughput: replay of one pcap through the pipeline with and without rules.

Rules are loaded once, before timing (load time is printed apart); each configuration runs
the whole pcap through Pipeline (decode, flows, rule stage, EVE formatting into a null
sink) `--runs` times, and the median is reported as packets/s. Configurations:
  none         no rule stage (the pipeline's own cost)
  et-open      every rule of ../shared/rulesets/et-open-2024-04.tar.gz the loader accepts
  conformance  the rules of every case in ../shared/conformance/suricata-verify (pass
               rules left out, sids renumbered: 70 rules, many alert on every packet)

    nice python bench/rules_engine_bench.py [--pcap pcaps/sample.pcap] [--runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import re
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sensor.capture.pcap import PcapSource  # noqa: E402
from sensor.config import Config  # noqa: E402
from sensor.detect.rules.engine import RuleStage  # noqa: E402
from sensor.detect.rules.loader import load_rules  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402

SHARED = ROOT.parent / "shared"
ET_TARBALL = SHARED / "rulesets" / "et-open-2024-04.tar.gz"
CORPUS = SHARED / "conformance" / "suricata-verify"


def _replay(pcap: Path, stage: RuleStage | None) -> tuple[float, int, int]:
    cfg = Config()
    cfg = dataclasses.replace(cfg, outputs=dataclasses.replace(
        cfg.outputs, eve=dataclasses.replace(cfg.outputs.eve, types=("alert", "flow"))))
    pipe = Pipeline(cfg, None, [stage] if stage is not None else [], flow_seed=1)
    src = PcapSource(str(pcap), batch_size=cfg.replay.batch_size)
    batches = list(src.batches())
    packets = sum(len(b) for b in batches)
    start = time.perf_counter()
    for b in batches:
        pipe.process(b)
    pipe.finish()
    secs = time.perf_counter() - start
    return secs, packets, pipe.events["alert"]


def _stage(files: list[str]) -> tuple[RuleStage, float, int]:
    start = time.perf_counter()
    rs = load_rules(files)
    cfg = dataclasses.replace(Config(), rules=dataclasses.replace(Config().rules,
                                                                  files=tuple(files)))
    stage = RuleStage(cfg, rs)
    return stage, time.perf_counter() - start, rs.loaded


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", default=str(ROOT / "pcaps" / "sample.pcap"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    pcap = Path(args.pcap)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(ET_TARBALL) as tar:
            tar.extractall(tmp, filter="data")
        et_files = sorted(glob.glob(f"{tmp}/rules/*.rules"))
        conf = Path(tmp) / "conformance.rules"
        lines = []
        for f in sorted(CORPUS.glob("*/test.rules")):
            for line in f.read_text().splitlines():
                # pass rules would pass whole flows and hide the others' work
                if line.strip() and not line.startswith(("#", "pass")):
                    lines.append(re.sub(r"sid: *\d+", f"sid:{len(lines) + 1}", line))
        conf.write_text("\n".join(lines) + "\n")
        configs = {"none": None, "et-open": et_files, "conformance": [str(conf)]}
        for name, files in configs.items():
            stage, load_s, loaded = (None, 0.0, 0) if files is None else _stage(files)
            times = []
            for _ in range(args.runs):
                if files is not None:
                    stage = RuleStage(stage.cfg, stage.ruleset)  # fresh state per run
                secs, packets, alerts = _replay(pcap, stage)
                times.append(secs)
            med = statistics.median(times)
            results[name] = {"rules_loaded": loaded, "load_seconds": round(load_s, 2),
                             "replay_seconds": round(med, 3),
                             "packets": packets, "packets_per_second": int(packets / med),
                             "alerts": alerts}
            print(f"{name:12s} rules {loaded:5d}  load {load_s:5.2f} s  replay {med:6.3f} s  "
                  f"{packets / med:10,.0f} packets/s  alerts {alerts}")
    print(json.dumps({"pcap": str(pcap.relative_to(ROOT)) if pcap.is_relative_to(ROOT)
                      else str(pcap), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
