"""Save or compare the eve.json (alerts + flows) of rule-engine runs, byte for byte.

Rule-engine speed work must not change one output byte. This replays, with the fixed
flow-hash seed of bench/eve_snapshot.py (so flow_id is stable):
  - every suricata-verify case of ../shared/conformance (its rules, vars and settings, as
    tests/test_rules_conformance.py runs it), with stream inspection and packet-only;
  - every tests/e2e case (its rules and threshold.config);
  - the ET Open loadable subset + rules/netsensor.rules over pcaps/sample.pcap,
    pcaps/lab/data/*.pcap* and any extra pcaps given with --pcap (e.g. a slice of
    bench/data/mixed.pcap: `editcap -r bench/data/mixed.pcap /tmp/m.pcap 1-200000`).

    nice python bench/rules_snapshot.py save  DIR [--pcap P ...]   # before a change
    nice python bench/rules_snapshot.py check DIR [--pcap P ...]   # after: exit 1 on a diff

Other people's changes to decode/flow code also change the output; to compare only the
engine, save with RULES_SNAPSHOT_TREE=DIR pointing at a copy of today's `sensor` package
whose sensor/detect/rules is the old engine (`git archive HEAD sensor/detect/rules`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
if os.environ.get("RULES_SNAPSHOT_TREE"):  # another copy of `sensor` (e.g. the engine before)
    sys.path.insert(0, os.environ["RULES_SNAPSHOT_TREE"])
import sensor  # noqa: E402,F401,I001  (first, so the helpers below use this copy)
from eve_snapshot import replay_to  # noqa: E402
from rules_bench import CLASSIFICATION, SHIPPED, et_loadable_subset  # noqa: E402
from test_rules_conformance import case_config, cases, e2e_config  # noqa: E402


def _jobs(workdir: Path, extra_pcaps: list[str]) -> list[tuple[str, str, dict]]:
    """(name, pcap, config) of every run."""
    out: list[tuple[str, str, dict]] = []
    for case in cases():
        for mode, extra in (("stream", {}), ("packet", {"stream_inspection": False})):
            pcap, cfg = case_config(case, extra)
            out.append((f"conf-{mode}-{case.name}", str(pcap), cfg))
    for case in sorted(p.parent for p in (ROOT / "tests" / "e2e").glob("*/expected-events.json")):
        out.append((f"e2e-{case.name}", str(case / "input.pcap"),
                    e2e_config(case, ["alert", "flow"])))
    et, _ = et_loadable_subset(workdir)
    pcaps = [str(ROOT / "pcaps" / "sample.pcap")]
    pcaps += sorted(glob.glob(str(ROOT / "pcaps" / "lab" / "data" / "*.pcap*")))
    pcaps += extra_pcaps
    for pcap in pcaps:
        out.append((f"et-{os.path.basename(pcap)}", pcap, {
            "rules": {"files": [str(et), str(SHIPPED)],
                      "classification_file": str(CLASSIFICATION)},
            "outputs": {"eve": {"types": ["alert", "flow"]}}}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("save", "check"))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--pcap", action="append", default=[], help="extra pcap for the ET run")
    ap.add_argument("--only", default="", help="only runs whose name contains this")
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    bad = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, pcap, cfg in _jobs(Path(tmp), args.pcap):
            if args.only not in name:
                continue
            total += 1
            cfg = {**cfg, "outputs": {**cfg["outputs"], "stats": {"interval": 0}},
                   "replay": {"progress": False}}
            with tempfile.TemporaryDirectory() as logdir:
                cfg_path = Path(logdir) / "c.yaml"
                cfg_path.write_text(yaml.safe_dump(cfg))
                t0 = time.perf_counter()
                with contextlib.redirect_stderr(io.StringIO()):
                    eve = replay_to(pcap, logdir, str(cfg_path))
                secs = time.perf_counter() - t0
                got = Path(eve).read_bytes() if os.path.exists(eve) else b""
            ref = args.dir / f"{name}.json"
            if args.mode == "save":
                ref.write_bytes(got)
                alerts = got.count(b'"event_type":"alert"')
                print(f"saved {name} ({alerts} alerts, {secs:.2f} s)")
                continue
            want = ref.read_bytes()
            if got != want:
                bad += 1
                g, w = got.splitlines(), want.splitlines()
                first = next((i for i, (a, b) in enumerate(zip(g, w, strict=False)) if a != b),
                             min(len(g), len(w)))
                print(f"DIFFERS {name}: line {first + 1} ({len(g)} vs {len(w)} lines)\n"
                      f"  got:  {g[first][:300] if first < len(g) else b'<none>'!r}\n"
                      f"  want: {w[first][:300] if first < len(w) else b'<none>'!r}")
            elif secs > 1:
                print(f"same {name} ({secs:.2f} s)")
    if args.mode == "check":
        print(f"{total - bad}/{total} identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
