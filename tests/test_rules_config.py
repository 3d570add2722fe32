"""classification.config and threshold.config readers."""

from __future__ import annotations

from pathlib import Path

from sensor.detect.rules import (
    load_classification,
    parse_classification,
    parse_rule,
    parse_threshold_config,
)

SHIPPED = Path(__file__).resolve().parents[1] / "rules" / "classification.config"


def test_shipped_classification() -> None:
    table = load_classification(SHIPPED)
    assert table.errors == []
    assert table.category("bad-unknown") == "Potentially Bad Traffic"
    assert table.severity("bad-unknown") == 2
    assert table.severity("trojan-activity") == 1
    assert table.category("not-suspicious") == "Not Suspicious Traffic"
    assert len(table.classes) >= 38


def test_rule_priority_overrides_and_unknown_class() -> None:
    table = parse_classification("config classification: web-application-attack,"
                                 "Web Application Attack,1\nbogus line\n", "c.config")
    r = parse_rule("alert tcp any any -> any any (classtype:Web-Application-Attack; "
                   "priority:3; sid:1;)")
    assert table.category(r.classtype) == "Web Application Attack"
    assert table.severity(r.classtype, r.priority) == 3
    assert table.severity("nonexistent") == 3 and table.category("nonexistent") is None
    assert [str(e) for e in table.errors] == ["c.config:2: invalid classification line "
                                              "'bogus line'"]


def test_threshold_config() -> None:
    cfg = parse_threshold_config(
        "# comment\n"
        "suppress gen_id 1, sig_id 2002087\n"
        "suppress gen_id 1, sig_id 2003614, track by_src, ip [10.0.0.0/8,1.2.3.4]\n"
        "suppress gen_id 1, sig_id 1, track by_dst, ip $HOME_NET\n"
        "threshold gen_id 1, sig_id 10, type limit, track by_src, count 1, seconds 60\n"
        "event_filter gen_id 1, sig_id 11, type both, track by_rule, count 2, seconds 5\n"
        "rate_filter gen_id 1, sig_id 1000, track by_rule, count 100, seconds 60, "
        "new_action alert, timeout 30\n"
        "threshold gen_id 1, sig_id 10, type sometimes, track by_src, count 1, seconds 60\n"
        "suppress gen_id 1, sig_id 5, track by_flow, ip 1.2.3.4\n"
        "frobnicate gen_id 1\n"
        "threshold gen_id 1, sig_id 10, track by_src, type limit, count 1, seconds 60\n",
        "threshold.config")
    assert [(s.gid, s.sid, s.track) for s in cfg.suppress] == [
        (1, 2002087, None), (1, 2003614, "by_src"), (1, 1, "by_dst")]
    assert cfg.suppress[1].ip.contains(0x01020304, False)
    assert cfg.suppress[2].ip.contains(0x0A000001, False)
    assert [(t.sid, t.type, t.track, t.count, t.seconds) for t in cfg.thresholds] == [
        (10, "limit", "by_src", 1, 60), (11, "both", "by_rule", 2, 5)]
    rf = cfg.rate_filters[0]
    assert (rf.sid, rf.count, rf.new_action, rf.timeout) == (1000, 100, "alert", 30)
    errs = [str(e) for e in cfg.errors]
    assert errs[0] == "threshold.config:8: invalid threshold type 'sometimes'"
    assert errs[1] == "threshold.config:9: invalid suppress track 'by_flow'"
    assert errs[2].startswith("threshold.config:10: unknown threshold.config entry")
    assert errs[3].startswith("threshold.config:11: expected fields")
