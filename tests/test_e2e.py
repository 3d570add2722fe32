"""End-to-end: replay each tests/e2e/<case> through netsensor and compare with real Suricata.

Every case folder holds input.pcap, test.rules, optionally threshold.config, and
expected-events.json: the alerts Suricata 7.0.10 logged for that pcap and rules and the
flows it marked `alerted` (tests/e2e/make_expected.sh). netsensor must log the same
multiset of alerts, compared on signature_id, gid, action, pcap_cnt and the packet's
5-tuple, and mark the same flows alerted. Cases that test the shipped ruleset carry a copy
of rules/netsensor.rules; a stale copy fails here, so expectations follow rule changes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sensor.cli import main as netsensor_main
from sensor.config import Config, RulesConfig, VarsConfig, load_config
from sensor.stages import build_stages

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "tests" / "e2e"
CASES = sorted(p.parent.name for p in E2E.glob("*/expected-events.json"))
SHIPPED_RULES = ROOT / "rules" / "netsensor.rules"
SHIPPED_THRESHOLD = ROOT / "rules" / "threshold.config"
ALERT_KEYS = ("signature_id", "gid", "action", "pcap_cnt", "src_ip", "src_port", "dest_ip",
              "dest_port", "proto")
FLOW_KEYS = ("proto", "src_ip", "src_port", "dest_ip", "dest_port")
# the site port group the shipped rules use (netsensor.yaml; tests/e2e/suricata.yaml too)
BULK_PORTS = load_config(str(ROOT / "netsensor.yaml")).vars.port_groups["BULK_PORTS"]


def _has_rule_stage() -> bool:
    """True once sensor/stages.py builds a rule-matching stage from cfg.rules."""
    cfg = Config(rules=RulesConfig(files=(str(SHIPPED_RULES),)),
                 vars=VarsConfig(port_groups={"BULK_PORTS": BULK_PORTS}))
    return any("rules" in type(s).__module__ for s in build_stages(cfg))


RULE_ENGINE = _has_rule_stage()

# Cases where netsensor's engine (sensor/detect/rules) still differs from Suricata, with
# the cause seen in the diff. strict xfail: once the engine matches, the case XPASSes and
# this test fails until the entry is removed. Measured 2026-11-23 13:13 UTC.
KNOWN_ENGINE_DIFFERENCES: dict[str, str] = {
    # "scan-udp" (ICMP port unreachable attached to the quoted UDP flow) agrees since
    # sensor.flow keys ICMPv4 errors on the packet they quote, as Suricata does
}


def _config(case: Path, tmp: Path) -> Path:
    """netsensor config for a case: its rules and threshold file, Suricata's default vars."""
    thr = case / "threshold.config"
    cfg = tmp / "netsensor.yaml"
    cfg.write_text(
        "rules:\n"
        f"  files: [{json.dumps(str(case / 'test.rules'))}]\n"
        f"  classification_file: {json.dumps(str(ROOT / 'rules' / 'classification.config'))}\n"
        f"  threshold_file: {json.dumps(str(thr) if thr.exists() else '')}\n"
        "vars:\n  address_groups:\n"
        "    HOME_NET: \"[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]\"\n"
        "    EXTERNAL_NET: \"!$HOME_NET\"\n"
        f"  port_groups:\n    BULK_PORTS: {json.dumps(BULK_PORTS)}\n"
        "outputs:\n  eve:\n    types: [alert, flow]\n"
        "replay:\n  progress: false\n")
    return cfg


def _replay(case: Path, tmp: Path) -> list[dict[str, Any]]:
    rc = netsensor_main(["replay", "-q", "-c", str(_config(case, tmp)), "-l", str(tmp),
                         str(case / "input.pcap")])
    assert rc == 0, f"netsensor replay exited {rc}"
    with open(tmp / "eve.json") as f:
        return [json.loads(line) for line in f]


def _alert_key(a: dict[str, Any]) -> tuple:
    return tuple(a.get(k) for k in ALERT_KEYS)


def _describe(keys: Counter) -> str:
    rows = sorted(keys.elements(), key=lambda k: tuple(str(x) for x in k))
    return "\n".join("  " + " ".join(f"{n}={v}" for n, v in zip(ALERT_KEYS, k, strict=True))
                     for k in rows[:15]) + ("\n  ..." if len(rows) > 15 else "")


def test_cases_present() -> None:
    """The committed cases cover the shipped rules and the rule-language features."""
    assert len(CASES) >= 14, CASES
    for name in CASES:
        case = E2E / name
        assert (case / "input.pcap").stat().st_size <= 300_000, name
        assert (case / "test.rules").exists(), name


@pytest.mark.parametrize("name", CASES)
def test_shipped_copy_is_current(name: str) -> None:
    """A case made from the shipped ruleset must carry today's rules (else: regenerate)."""
    case = E2E / name
    rules = (case / "test.rules").read_text()
    if not rules.startswith("# netsensor's own ruleset"):
        return
    assert rules == SHIPPED_RULES.read_text(), \
        f"{name}: run bash tests/e2e/make_expected.sh {name} (rules/netsensor.rules changed)"
    assert (case / "threshold.config").read_text() == SHIPPED_THRESHOLD.read_text(), name


def _case_param(name: str) -> Any:
    if not RULE_ENGINE:
        why = "no rule stage in sensor/stages.py build_stages yet"
    else:
        why = KNOWN_ENGINE_DIFFERENCES.get(name, "")
    marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_case_param(n) for n in CASES])
def test_case_matches_suricata(name: str, tmp_path: Path) -> None:
    case = E2E / name
    expected = json.loads((case / "expected-events.json").read_text())
    events = _replay(case, tmp_path)
    got = Counter(_alert_key(e | e["alert"]) for e in events if e["event_type"] == "alert")
    want = Counter(_alert_key(a) for a in expected["alerts"])
    missing, extra = want - got, got - want
    assert not missing and not extra, (
        f"{name}: {sum(want.values())} alerts expected, {sum(got.values())} logged\n"
        f"missing (Suricata logged, netsensor did not):\n{_describe(missing)}\n"
        f"extra (netsensor logged, Suricata did not):\n{_describe(extra)}")
    got_flows = {tuple(e.get(k) for k in FLOW_KEYS) for e in events
                 if e["event_type"] == "flow" and e["flow"].get("alerted")}
    want_flows = {tuple(f[k] for k in FLOW_KEYS) for f in expected["alerted_flows"]}
    assert got_flows == want_flows, (
        f"{name}: alerted flows differ; only Suricata: {sorted(want_flows - got_flows)[:5]}, "
        f"only netsensor: {sorted(got_flows - want_flows)[:5]}")
