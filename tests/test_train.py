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


def _tcp_row(options: bytes, payload: bytes) -> tuple[bytes, int]:
    """An IPv4/TCP packet's bytes (ACK+PSH, the given options) and its IP length."""
    from scapy.layers.inet import IP, TCP

    opts = []
    if options:
        opts = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))]
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=7) / TCP(sport=40000, dport=80, flags="PA",
                                                         seq=1000, ack=2000, window=502,
                                                         options=opts) / payload
    raw = bytes(pkt)
    return raw, len(raw)


def test_strip_tcp_timestamps_equals_a_packet_sent_without_them():
    """The augmentation turns a Linux segment (NOP, NOP, timestamp) into what the sensor
    computes for the same segment from a stack without timestamps; other packets stay."""
    import numpy as np

    from sensor import features
    from sensor.train import strip_tcp_timestamps

    def window(raw: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
        row = np.frombuffer(raw[:64].ljust(64, b"\0"), np.uint8)[None, :]
        img = features.mask_packets(row)[None]  # [1 window, 1 packet, 64]
        p = {"to_server": np.array([1]), "size": np.array([size]), "tcp_flags": np.array([0x18]),
             "payload_len": np.array([12]), "tcp_win": np.array([502]), "proto": np.array([6])}
        seq = features.packet_sequence(p, np.zeros(1), np.zeros(1))[None]
        return img, seq

    with_ts = window(*_tcp_row(b"ts", b"GET / HTTP/1"))
    without = window(*_tcp_row(b"", b"GET / HTTP/1"))
    assert with_ts[0][0, 0, 32] >> 4 == 8 and without[0][0, 0, 32] >> 4 == 5
    img, seq = strip_tcp_timestamps(*with_ts)
    assert np.array_equal(img, without[0])
    assert np.allclose(seq, without[1], atol=1e-6)
    img2, seq2 = strip_tcp_timestamps(*without)  # nothing to strip
    assert np.array_equal(img2, without[0]) and np.array_equal(seq2, without[1])


def test_augment_rtt_delays_answers_only():
    """A round trip is added where the direction turns (split between the two sides), the
    window's clock follows, padding stays zero; p = 0 changes nothing."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from sensor import features
    from sensor.train import augment_rtt

    dirs = [1, 0, 0, 1, 1, 0]  # client, server x2, client x2, server; then 2 padding rows
    iat_us = np.array([0, 10, 20, 30, 40, 50], np.float64)
    p = {"to_server": np.array(dirs), "size": np.full(6, 60), "tcp_flags": np.full(6, 0x10),
         "payload_len": np.zeros(6, np.int64), "tcp_win": np.full(6, 502),
         "proto": np.full(6, 6)}
    rows = features.packet_sequence(p, iat_us, np.cumsum(iat_us))
    seq = torch.zeros(1, 8, features.N_SEQ)
    seq[0, :6] = torch.from_numpy(rows)
    gen = torch.Generator().manual_seed(3)
    assert augment_rtt(seq, gen, 1000.0, 1000.0, 0.0) is seq
    out = augment_rtt(seq, gen, 1000.0, 1000.0, 1.0)
    scale = features._LOG_TIME
    iat_col, t_col = features.SEQ_FEATURES.index("log_iat"), features.SEQ_FEATURES.index("log_t")
    new_iat = torch.expm1(out[0, :6, iat_col].double() * scale).numpy()
    added = new_iat - iat_us
    turns = np.array([False, True, False, True, False, True])
    assert np.allclose(added[~turns], 0, atol=0.05)
    assert (added[turns] >= -0.05).all() and added[turns].sum() > 999  # one round trip+
    # server answers get one share, client answers the other: they add up to the round trip
    assert abs(added[1] + added[3] - 1000.0) < 0.5
    new_t = torch.expm1(out[0, :6, t_col].double() * scale).numpy()
    assert np.allclose(new_t, np.cumsum(new_iat), rtol=1e-4, atol=0.05)
    assert torch.equal(out[0, 6:], torch.zeros(2, features.N_SEQ))
    other = [c for c in range(features.N_SEQ) if c not in (iat_col, t_col)]
    assert torch.equal(out[:, :, other], seq[:, :, other])
