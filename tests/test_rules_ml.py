"""Rule keywords on the model's verdict (`ml.class`, `ml.score`): parsing, load-time checks,
and the shipped model on pcaps/sample.pcap through the real replay path (build_stages)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from replay_helpers import assert_eve_schema, require_eve_schema

from sensor.cli import main
from sensor.config import Config, ModelConfig, RulesConfig
from sensor.detect.model import ModelStage
from sensor.detect.rules.check import check_rules_main
from sensor.detect.rules.engine import RuleStage
from sensor.detect.rules.loader import load_rules
from sensor.detect.rules.mlverdict import MlClass, MlScore
from sensor.detect.rules.parser import parse_rule
from sensor.stages import StageError, build_stages

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
HEAD = "alert ip any any -> any any"

SCAN_LIMITED = (f'{HEAD} (msg:"ml portscan"; ml.class:port-scan; ml.score:>0.9; '
                "threshold:type limit, track by_src, count 1, seconds 60; sid:1900001;)")
IMPOSSIBLE = f'{HEAD} (msg:"ml impossible"; ml.class:port-scan; ml.score:>1.0; sid:1900002;)'
SCAN_ALL = f'{HEAD} (msg:"ml portscan all"; ml.class:port-scan; ml.score:>0.9; sid:1900003;)'
FLOOD = f'{HEAD} (msg:"ml flood"; ml.class:flood,slow-dos; sid:1900004;)'
HTTP = 'alert tcp any any -> any any (msg:"http"; content:"HTTP"; sid:1900005;)'
HTTP_ML = ('alert tcp any any -> any any (msg:"http, scored"; content:"HTTP"; ml.score:>=0; '
           "sid:1900006;)")


def _rule(opts: str):
    return parse_rule(f"{HEAD} ({opts} sid:1900100;)")


def test_parse_forms():
    r = _rule("ml.class:port-scan,flood; ml.score:>=0.75;")
    assert r.ml_class == MlClass(("port-scan", "flood"), False)
    assert r.ml_score == MlScore("ge", 0.75)
    assert _rule("ml.class:!benign, !flood;").ml_class == MlClass(("benign", "flood"), True)
    for text, want in (("0.5", MlScore("eq", 0.5)), ("=1", MlScore("eq", 1.0)),
                       ("<.2", MlScore("lt", 0.2)), ("<=0.3", MlScore("le", 0.3)),
                       ("> 0.9", MlScore("gt", 0.9)), ("0.2-0.8", MlScore("range", 0.2, 0.8))):
        assert _rule(f"ml.score:{text};").ml_score == want, text
    plain = _rule("ml.score:0.2-0.8;").ml_score
    assert plain.mask(np.array([0.2, 0.5, 0.8], np.float32)).tolist() == [False, True, False]


@pytest.mark.parametrize("opts, needle", [
    ("ml.score:>1.5;", "outside 0..1"),
    ("ml.score:0.8-0.2;", "empty"),
    ("ml.score:high;", "invalid ml.score"),
    ("ml.score:>-0.1;", "invalid ml.score"),
    ("ml.class:;", "invalid ml.class"),
    ("ml.class:!flood,benign;", "mixes negated"),
    ("ml.class:port scan;", "invalid ml.class name"),
    ("ml.class:flood; ml.class:benign;", "duplicate 'ml.class'"),
])
def test_bad_values_are_rejected_with_file_and_line(tmp_path, opts, needle):
    f = tmp_path / "bad.rules"
    f.write_text(f"# comment\n{HEAD} ({opts} sid:1900200;)\n")
    rs = load_rules([f])
    assert not rs.rules and len(rs.errors) == 1
    assert str(rs.errors[0]).startswith(f"{f}:2: ") and needle in str(rs.errors[0])
    assert str(rs.errors[0]).endswith("in sid 1900200")


def test_check_rules_accepts_them(tmp_path, capsys):
    f = tmp_path / "ml.rules"
    f.write_text("\n".join((SCAN_LIMITED, IMPOSSIBLE, FLOOD)) + "\n")
    assert check_rules_main([str(f)]) == 0
    assert "3 rules loaded, 0 rejected" in capsys.readouterr().err


def _cfg(tmp_path: Path, rules: list[str], model: bool) -> Config:
    f = tmp_path / "ml.rules"
    f.write_text("\n".join(rules) + "\n")
    return dataclasses.replace(Config(), rules=RulesConfig(files=(str(f),)),
                               model=ModelConfig(enabled=model))


def test_model_off_rejects_them_at_load(tmp_path, capsys):
    plain = f'{HEAD} (msg:"plain"; ttl:1; sid:1000001;)'
    cfg = _cfg(tmp_path, [plain, SCAN_LIMITED], model=False)
    with pytest.raises(StageError, match=r"ml\.rules:2: ml\.class needs the model "
                                         r"\(model\.enabled: true\) in sid 1900001"):
        build_stages(cfg)  # the daemon (strict): the set is refused
    stages = build_stages(cfg, strict=False)  # replay: reported, the other rules run
    err = capsys.readouterr().err
    assert "ml.rules:2: ml.class needs the model" in err
    [stage] = stages
    assert stage.counters()["detect.engines.rules_loaded"] == 1
    assert stage.counters()["detect.engines.rules_failed"] == 1


def test_model_on_checks_class_names_and_runs_first(tmp_path, capsys):
    cfg = _cfg(tmp_path, [SCAN_LIMITED, f'{HEAD} (msg:"x"; ml.class:worm; sid:1900300;)'],
               model=True)
    with pytest.raises(StageError, match=r"ml\.rules:2: ml\.class 'worm' is not a class of "
                                         r"the model \(benign, .*port-scan"):
        build_stages(cfg)
    stages = build_stages(cfg, strict=False)
    capsys.readouterr()
    # the model scores a batch's closed windows before the rules look at the batch
    assert [type(s) for s in stages] == [ModelStage, RuleStage]
    [cr] = stages[1].rules
    assert not cr.iponly  # a verdict changes during the flow: every packet is looked at


def test_sample_alerts_follow_the_flow_verdict(tmp_path, capsys):
    """On the sample with the shipped model: ml.* rules fire exactly on the flows whose
    final flow event says so (packets, or the flow-end look for verdicts reached at flow
    end), thresholds still apply, an impossible score never fires, alerts are valid EVE."""
    cfg = tmp_path / "c.yaml"
    rules = tmp_path / "ml.rules"
    rules.write_text("\n".join((SCAN_LIMITED, IMPOSSIBLE, SCAN_ALL, FLOOD, HTTP, HTTP_ML))
                     + "\n")
    cfg.write_text(f"model: {{enabled: true}}\nrules: {{files: ['{rules}']}}\n")
    assert main(["replay", str(SAMPLE), "-q", "-l", str(tmp_path), "-c", str(cfg)]) == 0
    assert "rejected" not in capsys.readouterr().err
    evs = [json.loads(x) for x in (tmp_path / "eve.json").read_text().splitlines()]
    flows = {e["flow_id"]: e for e in evs if e["event_type"] == "flow"}
    alerts = [e for e in evs if e["event_type"] == "alert"]
    by_sid: dict[int, list[dict]] = {}
    for a in alerts:
        by_sid.setdefault(a["alert"]["signature_id"], []).append(a)

    def verdict(fid: int) -> tuple[str, int]:
        md = flows[fid].get("metadata")
        if not md:
            return "", -1
        fv = {d["key"]: d["value"] for d in md["flowvars"]}
        return fv["ml_class"], md["flowints"]["ml_score_permille"]

    # the flow event rounds the score; permille 900 may be just over 0.9 (the rule
    # compares the unrounded probability), 901 and up surely is
    scan_sure = {f for f in flows if verdict(f)[0] == "port-scan" and verdict(f)[1] > 900}
    scan_maybe = {f for f in flows if verdict(f)[0] == "port-scan" and verdict(f)[1] >= 900}
    assert len(scan_sure) > 100
    all_ids = {a["flow_id"] for a in by_sid[1900003]}
    assert scan_sure <= all_ids <= scan_maybe
    limited = by_sid[1900001]
    assert 0 < len(limited) < 10  # one per source per 60 s
    assert {a["flow_id"] for a in limited} <= scan_maybe
    srcs = [a["src_ip"] for a in limited]
    assert len(srcs) == len(set(srcs))
    assert 1900002 not in by_sid
    # flood verdicts are reached when the flow's last window closes at its end
    floods = {f for f in flows if verdict(f)[0] in ("flood", "slow-dos")}
    assert len(floods) > 100
    assert {a["flow_id"] for a in by_sid[1900004]} == floods
    assert {a["pkt_src"] for a in by_sid[1900004]} <= {"wire/pcap", "flow end (model verdict)"}
    assert any(a["pkt_src"] == "flow end (model verdict)" for a in by_sid[1900004])
    # payload rules: only packets whose flow had a verdict by then; the flow-end stream
    # pseudo packets see the final verdict
    http, http_ml = by_sid[1900005], by_sid[1900006]
    assert 0 < len(http_ml) < len(http)
    assert all(verdict(a["flow_id"])[1] >= 0 for a in http_ml)
    assert any(a["pkt_src"] == "stream (flow timeout)" for a in http_ml)
    assert all(flows[a["flow_id"]]["flow"]["alerted"] for a in alerts)
    assert any(a["alert"]["gid"] == 9000 for a in alerts)  # the model's own alerts remain
    sample = limited + by_sid[1900003][:100] + by_sid[1900004][:100]
    sample += [a for a in by_sid[1900004] if a["pkt_src"] != "wire/pcap"][:100]
    require_eve_schema()
    assert_eve_schema(sample)
