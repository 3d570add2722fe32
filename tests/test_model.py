"""The ONNX model stage: contract checks, ONNX == PyTorch, alert aggregation, shipped model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from replay_helpers import assert_eve_schema, replay

from sensor import features
from sensor.capture.pcap import PcapSource
from sensor.config import Config, ConfigError, ModelConfig, WindowConfig, load_config
from sensor.detect.model import (
    DEFAULT_MODEL,
    AlertAggregator,
    ModelContract,
    ModelError,
    ModelStage,
    build_model_stage,
    dedupe_windows,
    explain_window,
    explain_windows,
    load_model,
)
from sensor.pipeline import Pipeline
from sensor.windows import FLOW_FIELDS, WindowBatch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
N, M = 32, 64


def _edited(tmp_path, edit) -> Path:
    onnx = pytest.importorskip("onnx")
    mp = onnx.load(str(DEFAULT_MODEL))
    edit(mp)
    out = tmp_path / "edited.onnx"
    onnx.save(mp, str(out))
    return out


def _set_meta(key: str, value: str):
    def edit(mp):
        for p in mp.metadata_props:
            if p.key == key:
                p.value = value
                return
        p = mp.metadata_props.add()
        p.key, p.value = key, value
    return edit


# -- contract -------------------------------------------------------------------------------

def test_importing_the_stage_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, sensor.detect.model, sensor.train, sensor.features; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"model .*nope\.onnx: no such file"):
        load_model(tmp_path / "nope.onnx")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(bad)
    half = tmp_path / "half.onnx"
    half.write_bytes(DEFAULT_MODEL.read_bytes()[: DEFAULT_MODEL.stat().st_size // 2])
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(half)


def test_wrong_feature_spec(tmp_path):
    p = _edited(tmp_path, _set_meta("netsensor.feature_spec", "netsensor-features/0"))
    with pytest.raises(ModelError) as exc:
        load_model(p)
    msg = str(exc.value)
    assert "'netsensor-features/0'" in msg and features.FEATURE_SPEC in msg
    assert "\n" not in msg


def test_not_a_netsensor_model(tmp_path):
    def strip(mp):
        del mp.metadata_props[:]
    with pytest.raises(ModelError, match="metadata lacks netsensor.feature_spec"):
        load_model(_edited(tmp_path, strip))


def test_wrong_input_shape(tmp_path):
    # the graph takes 64 bytes per packet; a model whose contract says 48 must be refused
    p = _edited(tmp_path, _set_meta("netsensor.window",
                                    json.dumps({"packets": 32, "bytes": 48, "seconds": 10.0})))
    with pytest.raises(ModelError, match=r"input 'image' has shape .*64.*feeds .*48"):
        load_model(p)

    def wrong_graph(mp):
        mp.graph.input[1].type.tensor_type.shape.dim[2].dim_value = features.N_SEQ + 1
    with pytest.raises(ModelError, match=r"input 'sequence'|not a loadable"):
        load_model(_edited(tmp_path, wrong_graph))


def test_bad_classes_and_thresholds(tmp_path):
    p = _edited(tmp_path, _set_meta("netsensor.classes", json.dumps(["port-scan", "benign"])))
    with pytest.raises(ModelError, match="classes must be a list starting with 'benign'"):
        load_model(p)
    p = _edited(tmp_path, _set_meta("netsensor.thresholds", json.dumps({"flood": 0.5})))
    with pytest.raises(ModelError, match="thresholds must give each attack class"):
        load_model(p)
    p = _edited(tmp_path, _set_meta("netsensor.thresholds", "{not json"))
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(p)


def test_window_config_must_match(tmp_path):
    with pytest.raises(ModelError, match=r"packets 16 \(model: 32\)"):
        load_model(DEFAULT_MODEL, window=WindowConfig(packets=16))
    with pytest.raises(ModelError, match=r"seconds 5 \(model: 10\)"):
        load_model(DEFAULT_MODEL, window=WindowConfig(seconds=5.0))
    cfg = dataclasses.replace(Config(), model=ModelConfig(enabled=True),
                              windows=WindowConfig(bytes=128))
    with pytest.raises(ModelError, match=r"bytes 128 \(model: 64\)"):
        build_model_stage(cfg)


def test_config_section(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  enabled: true\n  threads: 2\n  aggregate_seconds: 30\n")
    cfg = load_config(str(f))
    assert cfg.model == ModelConfig(enabled=True, threads=2, aggregate_seconds=30.0)
    f.write_text("model:\n  treads: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'model.treads'"):
        load_config(str(f))
    assert build_model_stage(Config()) is None  # disabled by default
    missing = dataclasses.replace(Config(), model=ModelConfig(enabled=True,
                                                              path=str(tmp_path / "x.onnx")))
    with pytest.raises(ModelError, match="no such file"):
        build_model_stage(missing)


# -- ONNX == PyTorch ------------------------------------------------------------------------

def test_onnx_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from sensor.train import export_onnx, make_model

    torch.manual_seed(3)
    classes = ["benign", "flood", "port-scan"]
    model = make_model(N, M, features.N_SEQ, len(classes)).eval()
    meta = {
        "netsensor.model_name": "t", "netsensor.model_version": "0",
        "netsensor.feature_spec": features.FEATURE_SPEC,
        "netsensor.inputs": json.dumps({"image": ["batch", "packets", M],
                                        "sequence": ["batch", "packets", features.N_SEQ]}),
        "netsensor.classes": json.dumps(classes),
        "netsensor.thresholds": json.dumps({"flood": 0.5, "port-scan": 0.9}),
        "netsensor.window": json.dumps({"packets": N, "bytes": M, "seconds": 10.0}),
    }
    path = str(tmp_path / "m.onnx")
    export_onnx(model, path, N, M, meta)
    sess, contract = load_model(path, window=WindowConfig())
    assert contract.classes == tuple(classes) and contract.thresholds["port-scan"] == 0.9
    rng = np.random.default_rng(0)
    b = 37
    npk = rng.integers(1, N + 1, b)
    img = rng.random((b, N, M), dtype=np.float32)
    seq = rng.random((b, N, features.N_SEQ), dtype=np.float32)
    valid = np.arange(N)[None, :] < npk[:, None]
    img[~valid] = 0
    seq[~valid] = 0
    seq[:, :, 0] = valid
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(img), torch.from_numpy(seq)), 1).numpy()
    got = sess.run(None, {"image": img, "sequence": seq})[0]
    assert np.abs(got - ref).max() < 1e-4
    # the stage's length-trimmed scoring gives the same numbers
    stage = ModelStage(Config(), sess, contract, batch_size=8)
    trimmed = stage.predict(img, seq, npk)
    assert np.abs(trimmed - ref).max() < 1e-4
    assert stage.stats["ml.batches"] == 5


# -- aggregation ----------------------------------------------------------------------------

def test_aggregator_periods():
    agg = AlertAggregator(60_000_000)
    key = ("10.0.0.1", "port-scan")
    out = [agg.offer(key, t * 1_000_000) for t in (0, 1, 2, 59, 60, 61, 200)]
    assert out == [1, None, None, None, 4, None, 2]
    assert agg.offer(("10.0.0.2", "port-scan"), 1_000_000) == 1  # other source
    assert agg.offer((key[0], "flood"), 1_000_000) == 1  # other class


def test_aggregator_needs_evidence_first():
    """min_windows 2: a lone window never alerts; the second within the period does and
    counts both; evidence older than the period is forgotten."""
    agg = AlertAggregator(60_000_000, min_windows=2)
    s = 1_000_000
    assert agg.offer(("a", "port-scan"), 0) is None
    assert agg.offer(("a", "port-scan"), 70 * s) is None  # the first is stale by now
    assert agg.offer(("a", "port-scan"), 71 * s) == 2
    assert [agg.offer(("a", "port-scan"), t * s) for t in (72, 100, 131, 132)] == [
        None, None, None, 4]  # 72, 100 suppressed; 131 pending; 132 alerts for all four
    assert agg.offer(("b", "port-scan"), 71 * s) is None  # another source starts afresh
    cfg = dataclasses.replace(Config(), model=ModelConfig(min_windows=2))
    stage = ModelStage(cfg, FakeSession([0.1, 0.1, 0.8]), _contract())
    stage.collected.append(_windows(1, 1000))
    assert stage._score(None) == []  # one odd window: no alert
    stage.collected.append(_windows(1, 1000))
    lines = stage._score(None)
    assert len(lines) == 1 and json.loads(lines[0])["alert"]["metadata"]["window_count"] == ["2"]


def test_offer_many_equals_offer_one_by_one():
    """The batch path of the aggregator (skips a running period in one step) decides exactly
    what offering each window in turn decides."""
    rng = np.random.default_rng(7)
    for min_windows, quiet in ((1, 0), (2, 0), (3, 0), (2, 1_000_000), (1, 300_000)):
        ts = np.sort(rng.integers(0, 400_000_000, 3000)).astype(np.int64)
        ts[100:400] = ts[100]  # a burst of windows ending together
        ts[1000:] += 5_000_000  # and a quiet gap
        one, many = (AlertAggregator(60_000_000, min_windows=min_windows, quiet_us=quiet)
                     for _ in range(2))
        want = [(i, c) for i, t in enumerate(ts.tolist())
                if (c := one.offer(("a", "flood"), t)) is not None]
        pos, counts, suppressed = many.offer_many(("a", "flood"), ts)
        assert list(zip(pos, counts, strict=True)) == want and len(want) >= 3
        assert suppressed + sum(1 for _ in want) <= len(ts)
        assert one.state == many.state


def test_dedupe_windows_is_exact(monkeypatch):
    """Equal windows share one representative; different ones never do, even when every
    hash collides (the byte comparison splits them; colliding windows are then scored on
    their own)."""
    rng = np.random.default_rng(3)
    masked = rng.integers(0, 256, (6, 2, M), dtype=np.uint8)
    seq = rng.random((6, 2, features.N_SEQ), dtype=np.float32)
    masked[3], seq[3] = masked[0], seq[0]
    masked[5], seq[5] = masked[1], seq[1]
    seq[4] = seq[2]
    seq[4, 1, 3] += np.float32(1e-6)  # one timing feature apart from window 2
    masked[4] = masked[2]
    for words in (None, np.zeros(32 * 64, np.uint64)):
        if words is not None:
            monkeypatch.setattr("sensor.detect.model._HASH_WORDS", words)
        reps, inverse = dedupe_windows(masked, seq)
        assert len(reps) == (4 if words is None else 5)
        assert inverse[0] == inverse[3] and inverse[2] != inverse[4]
        for i in range(6):
            r = reps[inverse[i]]
            assert np.array_equal(masked[r], masked[i]) and np.array_equal(seq[r], seq[i])


def test_repeated_windows_are_scored_once():
    """A flood of identical windows costs one onnxruntime row per chunk, and every window
    still gets its score."""
    rows = []

    class Counting(FakeSession):
        def run(self, names, feeds):
            rows.append(len(feeds["image"]))
            return super().run(names, feeds)

    stage = ModelStage(Config(), Counting([0.1, 0.1, 0.8]), _contract(), batch_size=512)
    stage.collected.append(_windows(2000, 1000))
    stage._score(None)
    assert rows[:4] == [1, 1, 1, 1]  # 4 chunks of 512 (the rest: the alerts' explanation)
    c = stage.counters()
    assert c["ml.windows_scored"] == 2000 and c["ml.windows_inferred"] == 4
    assert stage.last_scores.shape == (2000, 3) and np.allclose(stage.last_scores[:, 2], 0.8)


def test_explain_windows_equals_one_at_a_time():
    """Stacked, padded explanations give what explaining each window alone gives."""
    sess, contract = load_model(DEFAULT_MODEL)
    rng = np.random.default_rng(5)
    wins = []
    for p in (1, 3, 7):
        img = rng.integers(0, 256, (p, M)).astype(np.float32) / 255
        img[:, 0] = 0x45 / 255
        seq = rng.random((p, features.N_SEQ), dtype=np.float32)
        seq[:, 0] = 1.0
        wins.append((img, seq))
    cls = [1, 4, 5]
    many = explain_windows(lambda im, sq: sess.run(None, {"image": im, "sequence": sq})[0],
                           wins, columns=cls, max_rows=16)
    for (img, seq), k, got in zip(wins, cls, many, strict=True):
        one = explain_window(lambda im, sq, k=k: sess.run(None, {"image": im,
                                                                  "sequence": sq})[0][:, k],
                             img, seq)
        assert got == one


def test_aggregator_quiet_gap_starts_a_new_episode():
    """Two scans from one source 20 s apart inside one 60 s period: one alert without the
    quiet rule, two with it (each after its own 2 windows of evidence); a scan running
    without a gap still gives one alert per period."""
    s = 1_000_000
    first = [0, s // 2, s, 2 * s]
    second = [22 * s, 22 * s + s // 2, 23 * s]
    for quiet, want in ((0, [2]), (10 * s, [2, 4])):  # 4: the 2 suppressed are counted
        agg = AlertAggregator(60 * s, min_windows=2, quiet_us=quiet)
        got = [c for t in first + second if (c := agg.offer(("a", "port-scan"), t))]
        assert got == want
    agg = AlertAggregator(60 * s, min_windows=2, quiet_us=10 * s)
    steady = np.arange(0, 150 * s, 2 * s)  # a window every 2 s for 150 s
    pos, counts, _ = agg.offer_many(("a", "port-scan"), steady)
    assert [int(steady[p]) // s for p in pos] == [2, 64, 126]


class FakeSession:
    """Stands in for onnxruntime: every window scores `probs`."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype=np.float32)
        self.calls = 0

    def run(self, _names, feeds):
        self.calls += 1
        return [np.tile(self.probs, (len(feeds["image"]), 1))]


def _contract(**kw) -> ModelContract:
    base = dict(name="netsensor-cnnlstm", version="t1", feature_spec=features.FEATURE_SPEC,
                classes=("benign", "flood", "port-scan"),
                thresholds={"flood": 0.9, "port-scan": 0.6}, packets=N, bytes=M, seconds=10.0,
                meta={})
    base.update(kw)
    return ModelContract(**base)


def _windows(n_win: int, step_us: int, src_lo: int = 0x0A000001) -> WindowBatch:
    b = n_win
    pk = {"ts_us": np.zeros((b, N), np.int64), "size": np.zeros((b, N), np.int32),
          "to_server": np.zeros((b, N), np.int8), "tcp_flags": np.zeros((b, N), np.uint8),
          "payload_len": np.zeros((b, N), np.int32), "tcp_win": np.zeros((b, N), np.int32),
          "ttl": np.zeros((b, N), np.uint8), "proto": np.full((b, N), 6, np.uint8)}
    start = 1_700_000_000_000_000 + np.arange(b, dtype=np.int64) * step_us
    pk["ts_us"][:, 0] = start
    pk["ts_us"][:, 1] = start + 100
    data = np.zeros((b, N, M), np.uint8)
    data[:, :2, 0] = 0x45
    flow = {k: np.zeros(b, np.int64) for k in FLOW_FIELDS}
    flow["flow_id"] = np.arange(1, b + 1)
    flow["ipver"][:] = 4
    flow["proto"][:] = 6
    flow["cli_lo"][:] = src_lo
    flow["srv_lo"][:] = 0x0A000002
    flow["cli_port"][:] = 40000 + np.arange(b)
    flow["srv_port"][:] = np.arange(b) + 1
    return WindowBatch(np.full(b, 2), start, start + 100, np.zeros(b, np.int64), pk, data, flow)


def test_stage_aggregates_a_scan():
    """10,000 scan windows over 150 s from one source: 3 alerts, the rest counted."""
    cfg = dataclasses.replace(Config(), model=ModelConfig(aggregate_seconds=60.0,
                                                          min_windows=1))
    sess = FakeSession([0.1, 0.1, 0.8])
    stage = ModelStage(cfg, sess, _contract(), batch_size=4096)
    wb = _windows(10_000, 15_000)  # one window every 15 ms: 150 s
    stage.collected.append(wb)
    lines = stage._score(None)
    assert len(lines) == 3
    evs = [json.loads(x) for x in lines]
    counts = [int(e["alert"]["metadata"]["window_count"][0]) for e in evs]
    assert sum(counts) == 1 + 4000 + 4000  # alerts at 0 s, 60 s, 120 s; the tail is pending
    assert counts[0] == 1
    c = stage.counters()
    assert c["ml.windows_scored"] == 10_000 and c["ml.alerts"] == 3
    assert c["ml.alerts_aggregated"] == 9_997 and c["ml.windows_over_threshold"] == 10_000
    # scored in batches, not per window: 3 batches + 1 occlusion call for the raised alerts
    assert sess.calls == 3 + 1
    e = evs[0]
    assert e["event_type"] == "alert" and e["src_ip"] == "10.0.0.1"
    assert e["dest_ip"] == "10.0.0.2" and e["proto"] == "TCP" and e["pkt_src"] == "wire/pcap"
    a = e["alert"]
    assert a["gid"] == 9000 and a["signature_id"] == 9000001  # port-scan
    assert a["signature"] == "NETSENSOR ML port-scan pattern" and a["rev"] == 1
    assert all(isinstance(v, list) and all(isinstance(s, str) for s in v)
               for v in a["metadata"].values())
    assert a["metadata"]["score"] == ["0.800"] and a["metadata"]["class"] == ["port-scan"]
    assert e["community_id"].startswith("1:")
    assert e["timestamp"].endswith("+0000")


def test_below_threshold_no_alert():
    stage = ModelStage(Config(), FakeSession([0.05, 0.85, 0.10]), _contract())
    stage.collected.append(_windows(50, 1000))
    assert stage._score(None) == []  # flood 0.85 < 0.9
    assert stage.counters()["ml.windows_over_threshold"] == 0


# -- the shipped model on the sample --------------------------------------------------------

def test_shipped_model_scores_the_sample():
    sess, contract = load_model(DEFAULT_MODEL, window=WindowConfig())
    assert DEFAULT_MODEL.stat().st_size < 1_000_000
    assert contract.feature_spec == features.FEATURE_SPEC
    cfg = dataclasses.replace(Config(), model=ModelConfig(enabled=True))
    sink, pipe = replay(SAMPLE, cfg, stages=[build_model_stage(cfg)])
    evs = sink.events()
    c = pipe.all_counters()
    assert c["ml.windows_scored"] > 100
    flows = [e for e in evs if e["event_type"] == "flow"]
    alerts = [e for e in evs if e["event_type"] == "alert"]
    scored = [e for e in flows if "metadata" in e]
    assert len(scored) > 0.9 * len(flows)
    for e in scored:
        fv = {d["key"]: d["value"] for d in e["metadata"]["flowvars"]}
        assert fv["ml_class"] in contract.classes
        assert 0 <= float(fv["ml_score"]) <= 1
        assert set(e["metadata"]["flowints"]) == {"ml_score_permille", "ml_windows"}
        assert set(e["flow"]) <= {"pkts_toserver", "pkts_toclient", "bytes_toserver",
                                  "bytes_toclient", "start", "end", "age", "state", "reason",
                                  "alerted", "emergency"}
    assert alerts, "the shipped model should flag the sample's attacks"
    attackers = [a for a in alerts if a["src_ip"] in ("10.77.0.66", "10.77.0.67")]
    assert len(attackers) >= 0.5 * len(alerts)
    for a in alerts:  # every alert says why: top packets and feature groups by occlusion
        md = a["alert"]["metadata"]
        assert a["alert"]["signature"] == f"NETSENSOR ML {md['class'][0]} pattern"
        assert a["alert"]["category"] and a["alert"]["severity"] in (1, 2, 3)
        assert md["model"] == [contract.name] and md["model_version"] == [contract.version]
        assert float(md["score"][0]) >= float(md["threshold"][0])
        assert int(md["window_count"][0]) >= 1 and md["window_start"][0].endswith("+0000")
        assert 1 <= len(md["explain_packets"]) <= 3 and 1 <= len(md["explain_features"]) <= 3
        for item in md["explain_packets"]:
            assert item == "none" or 1 <= int(item.split(":")[0]) <= int(
                md["window_packets"][0])
    assert any(md != ["none"] for md in (a["alert"]["metadata"]["explain_features"]
                                         for a in alerts))
    alerted_ids = {a["flow_id"] for a in alerts}
    assert all(f["flow"]["alerted"] for f in flows if f["flow_id"] in alerted_ids)
    assert c["ml.alerts"] == len(alerts)
    # the replay summary's "alerts by signature" counts the model's alerts too
    ml_sigs = {k: v for k, v in pipe.alerts_by_sig.items() if k.startswith("[9000:")}
    assert sum(ml_sigs.values()) == len(alerts)
    assert_eve_schema(alerts + flows[:200])


def test_replay_refuses_a_bad_model_in_one_line(tmp_path, capsys):
    """`netsensor replay -c CFG` with a missing, corrupt or mismatched model: exit 2 and one
    line naming the file and what is wrong, no traceback, no output written."""
    from sensor.cli import main

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all" * 8)
    cases = [(tmp_path / "missing.onnx", "no such file"), (bad, "not a loadable ONNX model")]
    for path, needle in cases:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"windows: {{enabled: true}}\nmodel: {{enabled: true, path: '{path}'}}\n")
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        rc = main(["replay", str(SAMPLE), "-q", "-l", str(out), "-c", str(cfg)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and needle in err and str(path) in err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
    cfg.write_text("windows: {enabled: true, packets: 16}\nmodel: {enabled: true}\n")
    assert main(["replay", str(SAMPLE), "-q", "-l", str(out), "-c", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "packets 16 (model: 32)" in err and len(err.splitlines()) == 1


def test_bulk_flow_lines_equal_the_dict_path():
    """The model's flow lines (bulk writer + spliced metadata, what replay writes) are byte
    for byte the per-flow dict path's, classifier and site-baseline keys included."""
    from sensor.output.eve import flow_events_dicts

    baseline = REPO / "models" / "site-baseline.onnx"
    cfg = dataclasses.replace(Config(), model=ModelConfig(enabled=True,
                                                          baselines=(str(baseline),)))
    stage = build_model_stage(cfg)
    seen = []
    plain = stage.flow_extra

    def recording(ended):
        fn = plain(ended)
        seen.append((ended, fn))
        return fn

    stage.flow_extra = recording
    pipe = Pipeline(cfg, None, [stage])
    for b in PcapSource(str(REPO / "pcaps" / "model" / "bn-5101.pcap.gz")).batches():
        pipe.process(b)
    pipe.finish()
    with_meta = 0
    for ended, fn in seen:
        for cid, seed in ((True, 0), (False, 0), (True, 7)):
            bulk = fn.flow_lines(cid, seed)
            assert bulk == flow_events_dicts(ended, fn, cid, seed)
        with_meta += sum('"ml_anomaly_permille"' in x for x in bulk)
    assert with_meta > 100


def test_flow_verdicts_fold_windows_as_one_by_one():
    """update_flow_verdicts (all windows at once) leaves the ml_* columns exactly as the
    window-by-window rule does, on random batches with repeated flows, ties and flows that
    already had windows or were already over a threshold."""
    from sensor.detect.model import update_flow_verdicts

    rng = np.random.default_rng(3)
    for trial in range(300):
        nflows, nwin = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        cols = {"ml_windows": rng.integers(0, 2, nflows).astype(np.int32),
                "ml_score": rng.choice([0.1, 0.5, 0.9], nflows).astype(np.float32),
                "ml_over": rng.random(nflows) < 0.3,
                "ml_class": rng.integers(0, 4, nflows).astype(np.int16)}
        cols["ml_score"][cols["ml_windows"] == 0] = -1.0
        rows = rng.integers(-1, nflows, nwin)
        score = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], nwin).astype(np.float32)
        over = rng.random(nwin) < 0.3
        alert_cls = rng.integers(1, 4, nwin)
        top = rng.integers(1, 4, nwin)
        want = {k: v.copy() for k, v in cols.items()}
        for j in range(nwin):  # the rule, window by window
            r = rows[j]
            if r < 0:
                continue
            if want["ml_windows"][r] == 0 or score[j] > want["ml_score"][r]:
                want["ml_score"][r] = score[j]
                if not want["ml_over"][r] or over[j]:
                    want["ml_class"][r] = alert_cls[j] if over[j] else top[j]
            if over[j] and not want["ml_over"][r]:
                want["ml_over"][r] = True
                want["ml_class"][r] = alert_cls[j]
            want["ml_windows"][r] += 1
        update_flow_verdicts(cols, rows, score, over, alert_cls, top)
        for k in want:
            assert cols[k].dtype == want[k].dtype and np.array_equal(cols[k], want[k]), (trial, k)
