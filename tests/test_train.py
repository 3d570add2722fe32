"""A short smoke training run on the bundled sample (needs the `train` extra)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from sensor.config import WindowConfig
from sensor.detect.model import load_model
from sensor.train import add_train_parser, collect_windows, parse_capture, read_labels

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"


def test_labels_follow_endpoints_and_time():
    pcap, lab = parse_capture(str(SAMPLE))
    assert lab == str(REPO / "pcaps" / "sample.labels.csv")
    rows = read_labels(lab)
    ws = collect_windows(pcap, rows, WindowConfig(enabled=True))
    fams = set(ws.family.tolist())
    assert "benign" in fams and {r.family for r in rows} <= fams
    attack = ws.family != "benign"
    attackers = {r.attacker for r in rows}
    assert set(ws.src[attack].tolist()) <= attackers | {r.victim for r in rows}
    for i in range(len(ws)):
        if ws.inst[i] >= 0:
            r = rows[ws.inst[i]]
            assert ws.start_us[i] <= r.end_us and ws.end_us[i] >= r.start_us
    assert ws.captures[0]["seconds"] > 10


def test_parser_registers_train():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    add_train_parser(sub)
    args = p.parse_args(["train", "--train", "a.pcap", "--val", "b.pcap:b.csv"])
    assert callable(args.fn) and args.output == "models/netsensor-cnnlstm.onnx"
    assert parse_capture("b.pcap:b.csv") == ("b.pcap", "b.csv")


def test_missing_input_is_an_error(tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_train_parser(p.add_subparsers(dest="cmd"))
    pytest.importorskip("torch")
    args = p.parse_args(["train", "--train", str(tmp_path / "x.pcap"), "--val", str(SAMPLE)])
    assert args.fn(args) == 2
    assert "no such file" in capsys.readouterr().err


def test_smoke_training_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    p = argparse.ArgumentParser()
    add_train_parser(p.add_subparsers(dest="cmd"))
    out = tmp_path / "m.onnx"
    card = tmp_path / "README.md"
    args = p.parse_args(["train", "--train", str(SAMPLE), "--val", str(SAMPLE), "--test",
                         str(SAMPLE), "--epochs", "2", "-o", str(out), "--card", str(card),
                         "--no-plots", "--report-json", str(tmp_path / "r.json")])
    assert args.fn(args) == 0
    sess, contract = load_model(out, window=WindowConfig())
    assert contract.classes[0] == "benign" and len(contract.classes) >= 3
    assert set(contract.thresholds) == set(contract.classes[1:])
    training = json.loads(contract.meta["netsensor.training"])
    assert training["seed"] == 1 and training["train"]["captures"] == ["sample.pcap"]
    assert "test" in json.loads(contract.meta["netsensor.metrics"])
    text = card.read_text()
    for needle in ("## Data and splits", "## Thresholds", "Confusion matrix",
                   "false alert", "netsensor train"):
        assert needle in text
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["onnx_diff"] < 1e-4
