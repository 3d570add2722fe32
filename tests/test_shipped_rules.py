"""The shipped ruleset (rules/): loads cleanly, sane sids/classtypes, and real-traffic cover.

Cover: every shipped rule fires in at least one end-to-end case on real attack traffic
(per real Suricata's expected events, tests/e2e) and none fires on the benign case; the
same cases replayed through netsensor live in tests/test_e2e.py. The upload policy rule
(sid 1000050) needs uploads far bigger than an e2e pcap: it is checked on the committed
lab captures instead, against real Suricata's alerts (tests/data/upload-rule.suricata.json)
and the captures' attack labels.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime
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
DEMO_CONFIG = ROOT / "netsensor.yaml"
UPLOAD_SID = 1000050
UPLOAD_REFERENCE = ROOT / "tests" / "data" / "upload-rule.suricata.json"
LAB_CAPTURES = sorted([*(ROOT / "pcaps" / "lab" / "data").glob("*.pcap.gz"),
                       *(ROOT / "pcaps" / "model").glob("*.pcap.gz")])
EXFIL_PORTS = {4444, 31337, 6667, 8081}  # pcaps/lab/generate.py exfil_upload


def _vars() -> dict:
    """The rule variables of the demo config (netsensor.yaml), $BULK_PORTS included."""
    cfg = load_config(str(DEMO_CONFIG))
    return {"address-groups": dict(cfg.vars.address_groups),
            "port-groups": dict(cfg.vars.port_groups)}


def _shipped():  # noqa: ANN202 - a RuleSet
    return load_rules([RULES], _vars())


def _upload_rule():  # noqa: ANN202 - a Rule
    return next(r for r in _shipped().rules if r.sid == UPLOAD_SID)


def test_check_rules_exit_zero_no_problems(capsys: pytest.CaptureFixture[str]) -> None:
    assert netsensor_main(["check-rules", "-c", str(DEMO_CONFIG), str(RULES)]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    n = len(_shipped().rules)
    assert f"{n} rules loaded, 0 rejected" in out.err


def test_check_rules_without_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped rules load with the built-in config too: $BULK_PORTS (not a Suricata
    default) has a built-in value, so the upload rule does not need a site config to load."""
    assert netsensor_main(["check-rules", str(RULES)]) == 0
    assert capsys.readouterr().out == ""


def test_check_rules_command_line() -> None:
    """The installed entry point, as an operator runs it."""
    r = subprocess.run([sys.executable, "-m", "sensor.cli", "check-rules", "-c",
                        str(DEMO_CONFIG), str(RULES)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (r.returncode, r.stdout) == (0, ""), r.stderr


def test_sids_local_unique_and_labelled() -> None:
    rs = _shipped()
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
        assert meta.get("family") in {"port-scan", "flood", "brute-force", "dns-tunnel",
                                      "exfil"}, r.sid


def test_rules_cover_the_issue_families() -> None:
    """Scans (SYN/FIN/NULL/XMAS/UDP), floods (SYN/UDP/ICMP), sweeps, brute force, DNS,
    large uploads."""
    rs = _shipped()
    text = " ".join(r.msg for r in rs.rules)
    for words in ("SYN scan", "FIN scan", "NULL scan", "XMAS scan", "UDP scan", "SYN flood",
                  "UDP flood", "ICMP echo flood", "ICMP echo sweep", "BRUTE SSH", "BRUTE FTP",
                  "BRUTE HTTP", "DNS query with a very long", "DNS high query rate",
                  "large upload"):
        assert words in text, words
    for r in rs.rules:  # every shipped rule is rate-limited or alerts once per source
        assert r.threshold is not None or r.detection_filter is not None, r.sid


def test_threshold_config_loads_and_names_shipped_sids() -> None:
    cfg = load_threshold_config(THRESHOLD)
    assert not cfg.errors
    active = [*cfg.suppress, *cfg.thresholds, *cfg.rate_filters]
    assert active, "at least one active entry"
    sids = {r.sid for r in _shipped().rules}
    assert all(e.sid in sids and e.gid == 1 for e in active)


def test_demo_config_uses_shipped_rules() -> None:
    cfg = load_config(str(ROOT / "netsensor.yaml"))
    assert [ROOT / f for f in cfg.rules.files] == [RULES]
    assert ROOT / cfg.rules.classification_file == CLASSIFICATION
    assert ROOT / cfg.rules.threshold_file == THRESHOLD
    assert cfg.windows.enabled and cfg.model.enabled
    assert cfg.vars.address_groups["HOME_NET"] and cfg.vars.address_groups["EXTERNAL_NET"]
    assert cfg.vars.port_groups["BULK_PORTS"]  # the upload rule's site port group


def _expected(case: str) -> dict:
    return json.loads((E2E / case / "expected-events.json").read_text())


def test_every_shipped_rule_fires_on_real_attack_traffic() -> None:
    """Per real Suricata on the e2e cases: each shipped sid fires somewhere, with the
    shipped rule file and threshold.config (the cases' copies are checked in test_e2e);
    the upload rule per real Suricata on the lab captures."""
    shipped = {r.sid for r in _shipped().rules}
    fired: set[int] = {a["signature_id"] for alerts in _reference()["captures"].values()
                       for a in alerts}
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

    shipped = {r.sid for r in _shipped().rules}
    fired: set[int] = {UPLOAD_SID} if _lab_alerts(tmp_path)["test-s4401"] else set()
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


# --- the upload policy rule on the lab captures -----------------------------------------

def _reference() -> dict:
    return json.loads(UPLOAD_REFERENCE.read_text())


_LAB_ALERTS: dict[str, list[dict]] = {}


def _lab_alerts(tmp: Path) -> dict[str, list[dict]]:
    """netsensor's alerts for the upload rule alone (netsensor.yaml's vars) on every lab
    capture, replayed once per test session."""
    if _LAB_ALERTS:
        return _LAB_ALERTS
    rule = tmp / "upload.rules"
    rule.write_text(_upload_rule().raw + "\n")
    bulk = load_config(str(DEMO_CONFIG)).vars.port_groups["BULK_PORTS"]
    cfg = tmp / "upload.yaml"
    cfg.write_text(f"rules:\n  files: [{json.dumps(str(rule))}]\n  threshold_file: ''\n"
                   f"vars:\n  port_groups:\n    BULK_PORTS: {json.dumps(bulk)}\n"
                   "outputs:\n  eve:\n    types: [alert]\nreplay:\n  progress: false\n")
    for pcap in LAB_CAPTURES:
        name = pcap.name.removesuffix(".pcap.gz")
        out = tmp / f"lab-{name}"
        out.mkdir()
        assert netsensor_main(["replay", "-q", "-c", str(cfg), "-l", str(out), str(pcap)]) == 0
        with open(out / "eve.json") as f:
            _LAB_ALERTS[name] = [json.loads(line) for line in f]
    return _LAB_ALERTS


def test_upload_reference_is_current() -> None:
    """The Suricata reference was made with today's rule (else run
    bash tests/data/make-upload-reference.sh) and covers every lab capture."""
    ref = _reference()
    assert ref["rule"] == _upload_rule().raw
    assert sorted(ref["captures"]) == sorted(p.name.removesuffix(".pcap.gz")
                                             for p in LAB_CAPTURES)


def test_upload_rule_matches_suricata_on_lab_captures(tmp_path: Path) -> None:
    """Side by side with real Suricata 7.0.10: the same alerts (packet, 5-tuple) on all 13
    committed lab captures, benign-only runs included."""
    got = _lab_alerts(tmp_path)
    keys = ("signature_id", "pcap_cnt", "src_ip", "src_port", "dest_ip", "dest_port")
    for name, want in _reference()["captures"].items():
        mine = [tuple((e | e["alert"]).get(k) for k in keys) for e in got[name]]
        assert sorted(mine) == sorted(tuple(a[k] for k in keys) for a in want), name


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def test_upload_rule_fires_on_each_exfil_upload_and_nowhere_else(tmp_path: Path) -> None:
    """Per the captures' labels: one alert inside each exfil-upload slot, from its
    attacker to the victim's exfil port; nothing on benign traffic (the benign-only runs,
    and everything outside the exfil slots of the attack runs: web, DNS, ssh/scp, iperf3
    uploads to 5201-5203)."""
    got = _lab_alerts(tmp_path)
    exfil_runs = 0
    for pcap in LAB_CAPTURES:
        name = pcap.name.removesuffix(".pcap.gz")
        with open(pcap.with_name(f"{name}.labels.csv"), newline="") as f:
            slots = [row for row in csv.DictReader(f) if row["family"] == "exfil"]
        alerts = got[name]
        assert len(alerts) == len(slots), (name, alerts)
        for row, e in zip(slots, sorted(alerts, key=lambda e: e["timestamp"]), strict=True):
            assert float(row["start_ts"]) <= _ts(e["timestamp"]) <= float(row["end_ts"]), name
            assert (e["src_ip"], e["dest_ip"]) == (row["attacker_ip"], row["victim_ip"]), name
            assert e["dest_port"] in EXFIL_PORTS, name
        exfil_runs += bool(slots)
    assert exfil_runs == 7  # pcaps/lab/data/*-s4*.pcap.gz and pcaps/model/{tr,rl,te}-*
