"""The shipped ruleset (rules/): loads cleanly, sane sids/classtypes, and real-traffic cover.

Cover: every shipped rule fires in at least one end-to-end case on real attack traffic
(per real Suricata's expected events, tests/e2e) and none fires on the benign case; the
same cases replayed through netsensor live in tests/test_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.cli import main as netsensor_main
from sensor.config import load_config
from sensor.detect.rules import load_classification, load_rules, load_threshold_config

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "netsensor.rules"
CLASSIFICATION = ROOT / "rules" / "classification.config"
THRESHOLD = ROOT / "rules" / "threshold.config"
E2E = ROOT / "tests" / "e2e"
BENIGN_CASE = "benign-mix"


def test_check_rules_exit_zero_no_problems(capsys: pytest.CaptureFixture[str]) -> None:
    assert netsensor_main(["check-rules", str(RULES)]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    n = len(load_rules([RULES]).rules)
    assert f"{n} rules loaded, 0 rejected" in out.err


def test_check_rules_command_line() -> None:
    """The installed entry point, as an operator runs it."""
    r = subprocess.run([sys.executable, "-m", "sensor.cli", "check-rules", str(RULES)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (r.returncode, r.stdout) == (0, ""), r.stderr


def test_sids_local_unique_and_labelled() -> None:
    rs = load_rules([RULES])
    assert not rs.errors and not rs.file_errors
    assert len(rs.rules) >= 15
    sids = [r.sid for r in rs.rules]
    assert len(set(sids)) == len(sids)
    classes = load_classification(CLASSIFICATION)
    assert not classes.errors
    for r in rs.rules:
        assert 1_000_000 <= r.sid <= 1_999_999, r.sid
        assert r.gid == 1 and r.rev >= 1, r.sid
        assert r.msg.startswith("NETSENSOR "), r.sid
        assert r.classtype in classes.classes, f"sid {r.sid}: unknown classtype {r.classtype}"
        meta = dict(r.metadata)
        assert meta.get("family") in {"port-scan", "flood", "brute-force", "dns-tunnel"}, r.sid


def test_rules_cover_the_issue_families() -> None:
    """Scans (SYN/FIN/NULL/XMAS/UDP), floods (SYN/UDP/ICMP), sweeps, brute force, DNS."""
    rs = load_rules([RULES])
    text = " ".join(r.msg for r in rs.rules)
    for words in ("SYN scan", "FIN scan", "NULL scan", "XMAS scan", "UDP scan", "SYN flood",
                  "UDP flood", "ICMP echo flood", "ICMP echo sweep", "BRUTE SSH", "BRUTE FTP",
                  "BRUTE HTTP", "DNS query with a very long", "DNS high query rate"):
        assert words in text, words
    for r in rs.rules:  # every shipped rule is rate-limited or alerts once per source
        assert r.threshold is not None or r.detection_filter is not None, r.sid


def test_threshold_config_loads_and_names_shipped_sids() -> None:
    cfg = load_threshold_config(THRESHOLD)
    assert not cfg.errors
    active = [*cfg.suppress, *cfg.thresholds, *cfg.rate_filters]
    assert active, "at least one active entry"
    sids = {r.sid for r in load_rules([RULES]).rules}
    assert all(e.sid in sids and e.gid == 1 for e in active)


def test_demo_config_uses_shipped_rules() -> None:
    cfg = load_config(str(ROOT / "netsensor.yaml"))
    assert [ROOT / f for f in cfg.rules.files] == [RULES]
    assert ROOT / cfg.rules.classification_file == CLASSIFICATION
    assert ROOT / cfg.rules.threshold_file == THRESHOLD
    assert cfg.windows.enabled and cfg.model.enabled
    assert cfg.vars.address_groups["HOME_NET"] and cfg.vars.address_groups["EXTERNAL_NET"]


def _expected(case: str) -> dict:
    return json.loads((E2E / case / "expected-events.json").read_text())


def test_every_shipped_rule_fires_on_real_attack_traffic() -> None:
    """Per real Suricata on the e2e cases: each shipped sid fires somewhere, with the
    shipped rule file and threshold.config (the cases' copies are checked in test_e2e)."""
    shipped = {r.sid for r in load_rules([RULES]).rules}
    fired: set[int] = set()
    for exp in E2E.glob("*/expected-events.json"):
        if (exp.parent / "test.rules").read_text() == RULES.read_text() \
                and exp.parent.name != BENIGN_CASE:
            fired |= {a["signature_id"] for a in json.loads(exp.read_text())["alerts"]}
    assert shipped - fired == set()


def test_shipped_rules_silent_on_benign_traffic() -> None:
    case = E2E / BENIGN_CASE
    assert (case / "test.rules").read_text() == RULES.read_text()
    exp = _expected(BENIGN_CASE)
    assert exp["alerts"] == [] and exp["flow_events"] >= 50


def test_netsensor_fires_every_shipped_rule_and_stays_silent_on_benign(tmp_path: Path) -> None:
    """The same cases through netsensor itself: each shipped sid fires on attack traffic,
    none on benign-mix (exact agreement with Suricata is tests/test_e2e.py's job)."""
    from test_e2e import _replay

    shipped = {r.sid for r in load_rules([RULES]).rules}
    fired: set[int] = set()
    for exp in sorted(E2E.glob("*/expected-events.json")):
        case = exp.parent
        if (case / "test.rules").read_text() != RULES.read_text():
            continue
        out = tmp_path / case.name
        out.mkdir()
        sids = {e["alert"]["signature_id"] for e in _replay(case, out)
                if e["event_type"] == "alert"}
        if case.name == BENIGN_CASE:
            assert sids == set()
        else:
            fired |= sids
    assert shipped - fired == set()
