"""Every suricata-verify case in ../shared/conformance: our alerts vs Suricata 7.0.10's.

Each case is replayed in-process through `netsensor replay` (cli.main) with the case's
rules and variables; the multiset of (sid, pcap_cnt, 5-tuple) must equal
expected-alerts.json. The pass rate must stay >= 90% and the failing cases must be
exactly those in tests/data/conformance-failing.txt (one line each: `case: reason`), so a
regression and an unexplained fix both fail. Run as a script to print the per-case diff:
    python tests/test_rules_conformance.py [CASE...]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sensor.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "conformance" / "suricata-verify"
FAILING = ROOT / "tests" / "data" / "conformance-failing.txt"
MIN_PASS_RATE = 0.90
CLASSIFICATION = ROOT / "rules" / "classification.config"
E2E_VARS = {"HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
            "EXTERNAL_NET": "!$HOME_NET"}


def cases() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if (p / "expected-alerts.json").is_file())


def _suricata_settings(case: Path, meta: dict) -> dict:
    """The Suricata settings of the case that our config models (docs/rules.md)."""
    sets = dict(s.split("=", 1) for s in meta.get("suricata_set", []))
    doc: dict = {}
    own = case / "suricata.yaml"
    if own.is_file():
        text = own.read_text(errors="replace")
        text = text.replace("%YAML 1.1", "").replace("---", "", 1)
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            doc = {}
    master = doc.get("exception-policy") if isinstance(doc, dict) else None
    policy = sets.get("stream.midstream-policy") or (
        master if isinstance(master, str) else "ignore")
    out = {"midstream": sets.get("stream.midstream", "false") in ("true", "yes", "1"),
           "midstream_policy": policy,
           "async_oneside": sets.get("stream.async-oneside", "false") in ("true", "yes", "1")}
    if isinstance(doc, dict) and isinstance(doc.get("packet-alert-max"), int):
        out["packet_alert_max"] = doc["packet-alert-max"]
    return out


def _logs_alerts(case: Path) -> bool:
    """False when the case's own suricata.yaml has an eve-log without `alert` in types."""
    own = case / "suricata.yaml"
    if not own.is_file():
        return True
    text = own.read_text(errors="replace").replace("%YAML 1.1", "").replace("---", "", 1)
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return True
    for out in doc.get("outputs") or []:
        eve = out.get("eve-log") if isinstance(out, dict) else None
        if isinstance(eve, dict) and isinstance(eve.get("types"), list):
            names = [t if isinstance(t, str) else next(iter(t)) for t in eve["types"]]
            return "alert" in names
    return True


def case_config(case: Path, extra: dict | None = None) -> tuple[Path, dict]:
    """A suricata-verify case's pcap and the netsensor config that replays it as Suricata
    ran it: its rules, address and port vars, the settings we model, its EVE types (also
    bench/rules_snapshot.py's runs)."""
    meta = json.loads((case / "meta.json").read_text())
    pcap = case / meta.get("pcap_file", "input.pcap")
    if not pcap.is_file():
        pcap = next(case.glob("input.pcap*"))
    addr = {k: v for k, v in meta.get("vars", {}).items() if not k.endswith("_PORTS")}
    ports = {k: v for k, v in meta.get("vars", {}).items() if k.endswith("_PORTS")}
    types = ["alert", "flow"] if _logs_alerts(case) else ["flow"]
    return pcap, {
        "rules": {"files": [str(case / "test.rules")],
                  "classification_file": str(CLASSIFICATION),
                  **_suricata_settings(case, meta), **(extra or {})},
        "vars": {"address_groups": addr, "port_groups": ports},
        "outputs": {"eve": {"types": types}},
    }


def e2e_config(case: Path, types: list[str], extra: dict | None = None) -> dict:
    """The netsensor config of a tests/e2e case: its rules and threshold.config, the
    HOME_NET its capture was recorded with, EVE `types`."""
    thr = case / "threshold.config"
    return {"rules": {"files": [str(case / "test.rules")],
                      "classification_file": str(CLASSIFICATION),
                      "threshold_file": str(thr) if thr.exists() else "", **(extra or {})},
            "vars": {"address_groups": E2E_VARS}, "outputs": {"eve": {"types": types}}}


def run_case(case: Path, workdir: Path, extra: dict | None = None) -> tuple[Counter, Counter]:
    """(expected, got) multisets of (sid, pcap_cnt, src, sport, dst, dport, proto)."""
    pcap, cfg = case_config(case, extra)
    cfg["outputs"]["stats"] = {"interval": 0}
    cfg["replay"] = {"progress": False}
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli_main(["replay", "-q", "-c", str(cfg_path), "-l", str(workdir), str(pcap)])
    assert rc in (0, 1), f"{case.name}: replay exit {rc}: {err.getvalue()}"

    def key(a: dict) -> tuple:
        return (a["signature_id"], a.get("pcap_cnt"), a["src_ip"], a.get("src_port"),
                a["dest_ip"], a.get("dest_port"), a["proto"])

    expected = Counter(key(a) for a in json.loads((case / "expected-alerts.json").read_text()))
    got: Counter = Counter()
    eve = workdir / "eve.json"
    if eve.is_file():
        for line in eve.read_text().splitlines():
            ev = json.loads(line)
            if ev.get("event_type") == "alert":
                got[key({"signature_id": ev["alert"]["signature_id"], **ev})] += 1
    return expected, got


def read_failing() -> dict[str, str]:
    out = {}
    for line in FAILING.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(":")
            out[name.strip()] = reason.strip()
    return out


@pytest.mark.skipif(not CORPUS.is_dir(), reason="conformance corpus not present")
def test_conformance_corpus() -> None:
    results = {}
    for case in cases():
        with tempfile.TemporaryDirectory() as tmp:
            expected, got = run_case(case, Path(tmp))
        results[case.name] = expected == got
    passed = sorted(n for n, ok in results.items() if ok)
    failed = sorted(n for n, ok in results.items() if not ok)
    print(f"conformance: {len(passed)}/{len(results)} cases pass")
    assert len(passed) / len(results) >= MIN_PASS_RATE, failed
    listed = read_failing()
    assert sorted(listed) == failed, (
        f"newly failing: {sorted(set(failed) - set(listed))}; "
        f"now passing (remove from {FAILING.name}): {sorted(set(listed) - set(failed))}")
    assert all(listed.values()), "every failing case needs a reason"


def run_e2e_case(case: Path, workdir: Path, extra: dict | None = None,
                 ) -> tuple[Counter, Counter]:
    """The same comparison on a tests/e2e case (Suricata's alerts in expected-events.json)."""
    cfg = {**e2e_config(case, ["alert"], extra), "replay": {"progress": False}}
    (workdir / "c.yaml").write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stderr(io.StringIO()):
        cli_main(["replay", "-q", "-c", str(workdir / "c.yaml"), "-l", str(workdir),
                  str(case / "input.pcap")])

    def key(a: dict) -> tuple:
        return (a["signature_id"], a.get("pcap_cnt"), a["src_ip"], a.get("src_port"),
                a["dest_ip"], a.get("dest_port"), a["proto"])

    expected = Counter(key(a) for a in json.loads(
        (case / "expected-events.json").read_text())["alerts"])
    got: Counter = Counter()
    for line in (workdir / "eve.json").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event_type") == "alert":
            got[key({"signature_id": ev["alert"]["signature_id"], **ev})] += 1
    return expected, got


if __name__ == "__main__":
    # python tests/test_rules_conformance.py [--packet-only] [--e2e] [CASE...]
    args = sys.argv[1:]
    extra = {"stream_inspection": False} if "--packet-only" in args else None
    e2e = "--e2e" in args
    names = [a for a in args if not a.startswith("--")]
    ok = 0
    pool = sorted((ROOT / "tests" / "e2e").glob("*/expected-events.json")) if e2e else []
    todo = [p.parent for p in pool] if e2e else cases()
    todo = [c for c in todo if not names or c.name in names]
    for case in todo:
        with tempfile.TemporaryDirectory() as tmp:
            runner = run_e2e_case if e2e else run_case
            expected, got = runner(case, Path(tmp), extra)
        good = expected == got
        ok += good
        print(f"{'PASS' if good else 'FAIL'} {case.name}")
        if not good:
            for k in sorted(set(expected) | set(got), key=str):
                if expected[k] != got[k]:
                    print(f"    {k}: expected {expected[k]} got {got[k]}")
    print(f"{ok}/{len(todo)} pass")
