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


def test_leave_out_drops_families_and_refuses_unknown_ones(tmp_path, capsys):
    """`--leave-out a,b` trains without those families (no such class, said in the card);
    a name that is no family of the labels is a one-line error, not a silent no-op."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    p = argparse.ArgumentParser()
    add_train_parser(p.add_subparsers(dest="cmd"))
    base = ["train", "--train", str(SAMPLE), "--val", str(SAMPLE), "--test", str(SAMPLE),
            "--epochs", "1", "--no-plots", "-o", str(tmp_path / "m.onnx"),
            "--card", str(tmp_path / "README.md")]
    args = p.parse_args([*base, "--leave-out", "nosuch"])
    assert args.fn(args) == 2
    err = capsys.readouterr().err
    assert "--leave-out nosuch: not an attack family" in err and "Traceback" not in err
    args = p.parse_args([*base, "--leave-out", "slow-dos,flood"])
    assert args.fn(args) == 0
    _, contract = load_model(tmp_path / "m.onnx", window=WindowConfig())
    assert "slow-dos" not in contract.classes and "flood" not in contract.classes
    assert "port-scan" in contract.classes
    assert "Left out of training and validation: slow-dos, flood" in (
        tmp_path / "README.md").read_text()


def test_shipped_recipe_captures_exist_with_labels():
    """models/train-args.txt (the shipped recipe, also read by models/lofo.py and
    models/eval_test.py) names captures that exist, each with its labels file, and no
    capture sits in two splits."""
    import importlib.util
    import shlex

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("eval_test", root / "models" / "eval_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    test = mod.test_captures()
    assert len(test) >= 5
    words = shlex.split((root / "models" / "train-args.txt").read_text())
    caps = [w for w in words if w.endswith((".pcap", ".pcap.gz"))]
    assert len(caps) == len(set(caps)) and set(test) <= set(caps)
    for c in caps:
        pcap, labels = parse_capture(str(root / c))
        assert Path(pcap).is_file() and labels is not None and Path(labels).is_file(), c
