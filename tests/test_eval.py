"""`netsensor eval`: label matching on hand-checked EVE lines, and real replays of sample.pcap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensor.cli import main as cli_main
from sensor.detect.model import GID
from sensor.eval import (
    MODEL_GID,
    EvalError,
    evaluate,
    read_eve,
    read_labels,
    score_drift,
)
from sensor.output.eve import fmt_ts

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
SAMPLE_LABELS = REPO / "pcaps" / "sample.labels.csv"

T0 = 1_800_000_000_000_000  # microseconds; the hand-written capture starts here
ATK, SRV, CLI = "10.77.0.66", "10.77.0.10", "10.77.0.21"
ATK6, SRV6 = "fd00:77::66", "fd00:77::10"  # labels use the short form, EVE the exploded one
ATK6_X = "fd00:0077:0000:0000:0000:0000:0000:0066"
SRV6_X = "fd00:0077:0000:0000:0000:0000:0000:0010"
HEADER = "name,family,attacker_ip,victim_ip,start,end,start_ts,end_ts\n"


def _label(name: str, family: str, atk: str, vic: str, start_s: float, end_s: float) -> str:
    s, e = (T0 / 1e6 + start_s), (T0 / 1e6 + end_s)
    return f"{name},{family},{atk},{vic},x,y,{s:.6f},{e:.6f}\n"


def _alert(t_s: float, src: str, dst: str, gid: int = 1, sid: int = 1000001,
           flow_id: int = 1) -> str:
    return json.dumps({
        "timestamp": fmt_ts(T0 + int(t_s * 1e6)), "flow_id": flow_id, "event_type": "alert",
        "src_ip": src, "dest_ip": dst, "proto": "TCP",
        "alert": {"gid": gid, "signature_id": sid, "signature": f"sig {gid}:{sid}"}})


def _flow(start_s: float, end_s: float, src: str, dst: str, flow_id: int, alerted: bool = False,
          ml_class: str | None = None) -> str:
    ev = {"timestamp": fmt_ts(T0 + int(end_s * 1e6)), "flow_id": flow_id, "event_type": "flow",
          "src_ip": src, "dest_ip": dst, "proto": "TCP",
          "flow": {"start": fmt_ts(T0 + int(start_s * 1e6)), "end": fmt_ts(T0 + int(end_s * 1e6)),
                   "alerted": alerted}}
    if ml_class:
        ev["metadata"] = {"flowvars": [{"key": "ml_class", "value": ml_class},
                                       {"key": "ml_score", "value": "0.900"}]}
    return json.dumps(ev)


@pytest.fixture
def hand_case(tmp_path: Path) -> tuple[Path, Path]:
    """Three slots (scan 10-20 s, IPv6 brute force 40-50 s, an undetected flood 70-75 s) in a
    capture from 0 to 360 s, with alerts at the edges that the matching must get right."""
    labels = tmp_path / "labels.csv"
    labels.write_text(HEADER + _label("scan-syn", "port-scan", ATK, SRV, 10, 20)
                      + _label("brute-ssh", "brute-force", ATK6, SRV6, 40, 50)
                      + _label("flood-udp", "flood", ATK, SRV, 70, 75))
    eve = tmp_path / "eve.json"
    eve.write_text("\n".join([
        _flow(0, 1, CLI, SRV, 100),  # the capture's first instant: 0 s
        _alert(9.0, ATK, SRV, sid=1000001, flow_id=11),  # 1 s early: inside the 2 s grace
        _alert(12.5, SRV, ATK, gid=GID, sid=9000001, flow_id=11),  # reverse direction, model
        _alert(15.0, CLI, SRV, sid=1000002, flow_id=101),  # in the slot, other hosts: false
        _alert(21.999, ATK, SRV, sid=1000001, flow_id=11),  # end + grace - 1 ms: matched
        _alert(22.001, ATK, SRV, sid=1000001, flow_id=11),  # end + grace + 1 ms: false
        _alert(41.0, ATK6_X, SRV6_X, gid=GID, sid=9000004, flow_id=12),  # IPv6, exploded
        _alert(200.0, CLI, SRV, gid=GID, sid=9000002, flow_id=102),  # outside every slot
        _flow(10, 20, ATK, SRV, 11, alerted=True),  # attack flow
        _flow(41, 49, SRV6_X, ATK6_X, 12, alerted=True),  # attack flow (reverse orientation)
        _flow(14, 16, CLI, SRV, 101),  # benign, alerted by a rule alert with its flow_id
        _flow(199, 201, CLI, SRV, 102),  # benign, alerted by a model alert with its flow_id
        _flow(100, 110, CLI, SRV, 103, alerted=True),  # benign, flow.alerted
        _flow(120, 130, CLI, SRV, 104, ml_class="flood"),  # benign, model class not benign
        _flow(130, 140, CLI, SRV, 105, ml_class="benign"),  # benign, not flagged
        _flow(300, 360, CLI, SRV, 106),  # benign; the capture's last instant: 360 s
    ]) + "\n")
    return labels, eve


def test_matching_by_pair_and_time_on_hand_checked_lines(hand_case):
    labels, eve = hand_case
    res = evaluate(list(read_eve(str(eve))), read_labels(str(labels)), grace_s=2.0)
    assert res["capture_s"] == 360.0
    scan, brute, flood = res["attacks"]
    assert scan["detected"] and scan["alerts"] == 3  # 9.0, 12.5, 21.999
    assert scan["alerts_rules"] == 2 and scan["alerts_model"] == 1
    assert scan["time_to_first_alert_s"] == -1.0  # first alert 1 s before the slot
    assert brute["detected"] and brute["alerts"] == 1 and brute["time_to_first_alert_s"] == 1.0
    assert not flood["detected"] and flood["time_to_first_alert_s"] is None
    fams = res["families"]
    assert fams["port-scan"]["recall"] == 1.0 and fams["flood"]["recall"] == 0.0
    assert fams["brute-force"]["recall_model"] == 1.0 and fams["brute-force"]["recall_rules"] == 0
    assert res["summary"] == {"attacks": 3, "detected": 2, "recall": 0.6667, "alerts": 7}
    b = res["benign"]
    assert (b["false_alerts"], b["false_outside_slots"], b["false_in_slot_other_hosts"]) == \
        (3, 2, 1)  # 22.001 and 200.0 outside; 15.0 between client and server
    assert b["false_alerts_per_hour"] == 30.0  # 3 false alerts in 360 s
    assert (b["flows"], b["flows_alerted"]) == (7, 4)  # 101, 102, 103, 104 of 100..106
    assert b["flows_alerted_share"] == 0.571429
    assert res["attack_flows"] == {"flows": 2, "flows_alerted": 2}
    assert res["sources"] == {"rules": {"alerts": 4, "matched": 2, "false": 2},
                              "model": {"alerts": 3, "matched": 2, "false": 1}}


def test_grace_is_configurable(hand_case):
    labels, eve = hand_case
    res = evaluate(list(read_eve(str(eve))), read_labels(str(labels)), grace_s=0.0)
    scan = res["attacks"][0]
    assert scan["alerts"] == 1 and scan["time_to_first_alert_s"] == 2.5  # only 12.5 is inside
    assert res["benign"]["false_outside_slots"] == 4  # 9.0, 21.999, 22.001, 200.0


def test_cli_table_json_and_plot(hand_case, tmp_path, capsys):
    labels, eve = hand_case
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = cli_main(["eval", "--labels", str(labels), str(eve), "--json", str(out),
                   "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "scan-syn" in text and "false alerts: 3 (2 outside slots, 1 in a slot" in text
    assert "30.0 per hour" in text and "rules 4 (2 on attacks, 2 false)" in text
    res = json.loads(out.read_text())
    assert res["summary"]["detected"] == 2 and len(res["timeline"]) == 7
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_missing_labels_file_is_one_line(tmp_path, capsys):
    eve = tmp_path / "eve.json"
    eve.write_text("")
    rc = cli_main(["eval", "--labels", str(tmp_path / "nope.csv"), str(eve)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "nope.csv: cannot read labels" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("body,expect", [
    ("name,family,attacker_ip\n", "labels.csv:1: labels header lacks column(s) victim_ip, "
                                  "start_ts/end_ts (or start/end)"),
    (HEADER + "a,flood,10.0.0.1,10.0.0.2,x,y,12,11\n", "labels.csv:2: end is before start"),
    (HEADER + "a,flood,10.0.0.1,10.0.0.2,x,y,1,2\nb,flood,10.0.0.999,10.0.0.2,x,y,1,2\n",
     "labels.csv:3: bad attacker_ip '10.0.0.999'"),
    (HEADER + "a,flood,10.0.0.1,10.0.0.2,x,y,soon,2\n", "labels.csv:2: bad start_ts 'soon'"),
])
def test_bad_labels_name_file_and_line(tmp_path, body, expect):
    path = tmp_path / "labels.csv"
    path.write_text(body)
    with pytest.raises(EvalError) as exc:
        read_labels(str(path))
    assert str(exc.value) == f"{tmp_path}/{expect}"


def test_bad_eve_line_names_file_and_line(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text(HEADER)
    eve = tmp_path / "eve.json"
    eve.write_text(_flow(0, 1, CLI, SRV, 1) + "\n{broken\n")
    rc = cli_main(["eval", "--labels", str(labels), str(eve)])
    err = capsys.readouterr().err
    assert rc == 1 and err == f"netsensor: {eve}:2: not a JSON object\n"


def test_plot_without_matplotlib_says_so(hand_case, tmp_path):
    labels, eve = hand_case
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from sensor.cli import main\n"
            f"sys.exit(main(['eval', '--labels', {str(labels)!r}, {str(eve)!r}, '--plot', "
            f"{str(tmp_path / 'x.png')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr == ("netsensor: --plot needs matplotlib, which is not installed: "
                        "pip install 'netsensor[plot]'\n")
    assert not (tmp_path / "x.png").exists()


def test_model_gid_matches_the_model_stage():
    assert MODEL_GID == GID


def test_score_drift_separates_shift_from_noise():
    rng = np.random.default_rng(4)
    ref = rng.beta(2, 8, 5000)
    same = score_drift(ref, rng.beta(2, 8, 3000))
    moved = score_drift(ref, rng.beta(4, 6, 3000))
    assert same["shift"] == "stable" and same["psi"] < 0.05 and same["ks"] < 0.05
    assert moved["shift"] == "large" and moved["psi"] > 0.25 and moved["ks"] > 0.3
    assert moved["current"]["p50"] > moved["reference"]["p50"]


def _replay_flow_count(tmp_path: Path, config: Path | None) -> int:
    """Flow events of a plain `netsensor replay` of sample.pcap (same config)."""
    logdir = tmp_path / "replay"
    argv = ["replay", "-q", "-l", str(logdir), str(SAMPLE)]
    if config:
        argv += ["-c", str(config)]
    assert cli_main(argv) == 0
    lines = (logdir / "eve.json").read_text().splitlines()
    return sum(json.loads(x)["event_type"] == "flow" for x in lines)


def test_replay_of_sample_pcap_matches_replay_flows(tmp_path, capsys):
    """A pcap input goes through the replay code path: the same flows as `netsensor replay`,
    the attack flows found in every labelled slot, and no alerts without rules or model."""
    out = tmp_path / "r.json"
    rc = cli_main(["eval", "-q", "--labels", str(SAMPLE_LABELS), str(SAMPLE), "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    flows = res["benign"]["flows"] + res["attack_flows"]["flows"]
    assert flows == _replay_flow_count(tmp_path, None)
    assert [a["name"] for a in res["attacks"]] == \
        ["dns-tunnel", "brute-ssh", "slowloris", "scan-syn", "flood-syn"]
    assert res["attack_flows"]["flows"] >= 1000  # the SYN scan alone opens ~1000 flows
    assert res["summary"]["alerts"] == 0 and res["summary"]["recall"] == 0.0
    assert 95 < res["capture_s"] < 130


SMALL_RULES = """\
alert tcp any any -> 10.77.0.0/24 any (msg:"TEST SYN scan"; flags:S,12; dsize:0; \
threshold: type both, track by_src, count 100, seconds 5; sid:1000901; rev:1;)
alert tcp any any -> 10.77.0.0/24 22 (msg:"TEST ssh brute force"; flow:to_server,established; \
content:"SSH-"; depth:4; detection_filter: track by_src, count 4, seconds 60; sid:1000902; rev:1;)
"""


def test_replay_with_rules_and_model_counts_alerts_by_source(tmp_path, capsys):
    """Real detection on sample.pcap: a small rules file and the shipped model, both enabled
    in one config. Eval's per-source counts equal the gid counts of a plain replay with the
    same config, and the rules find the SYN scan and the ssh brute force in their slots."""
    rules = tmp_path / "small.rules"
    rules.write_text(SMALL_RULES)
    config = tmp_path / "eval.yaml"
    config.write_text(f"windows:\n  enabled: true\nmodel:\n  enabled: true\n"
                      f"rules:\n  files: [{rules}]\n")
    out = tmp_path / "r.json"
    rc = cli_main(["eval", "-q", "--labels", str(SAMPLE_LABELS), str(SAMPLE), "-c", str(config),
                   "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    logdir = tmp_path / "replay"
    assert cli_main(["replay", "-q", "-l", str(logdir), "-c", str(config), str(SAMPLE)]) == 0
    alerts = [json.loads(x)["alert"] for x in (logdir / "eve.json").read_text().splitlines()
              if '"event_type":"alert"' in x]
    by_gid = {g: sum(a["gid"] == g for a in alerts) for g in (1, GID)}
    assert res["sources"]["rules"]["alerts"] == by_gid[1] > 0
    assert res["sources"]["model"]["alerts"] == by_gid[GID]
    assert res["summary"]["alerts"] == len(alerts)
    attacks = {a["name"]: a for a in res["attacks"]}
    for name, sig in (("scan-syn", "TEST SYN scan"), ("brute-ssh", "TEST ssh brute force")):
        a = attacks[name]
        assert a["detected"] and a["alerts_rules"] >= 1 and sig in a["signatures"]
        assert 0 <= a["time_to_first_alert_s"] <= a["slot_s"]
    assert res["families"]["port-scan"]["recall_rules"] == 1.0
    # a benign client's ssh logins can trip the brute-force rule (a true false alert); the
    # SYN-scan rule never fires on the benign mix, and no false alert involves the attacker
    assert "TEST SYN scan" not in res["benign"]["false_signatures"]
    false = [e for e in res["timeline"] if e["kind"] != "attack"]
    assert len(false) == res["benign"]["false_alerts"]
    assert all("10.77.0.66" not in (e["src"], e["dst"]) for e in false)
    assert not attacks["dns-tunnel"]["alerts_rules"]  # no rule for it in this file
