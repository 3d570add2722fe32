"""The site baseline: threshold calibration, ONNX export, a smoke `netsensor learn`, its alerts
with occlusion explanations in a real replay, and the drift report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from replay_helpers import assert_eve_schema, replay

from sensor import features
from sensor.cli import main as cli_main
from sensor.config import Config, ModelConfig, WindowConfig
from sensor.detect.model import (
    BASELINE_SID,
    BASELINE_SIGNATURE,
    DEFAULT_MODEL,
    ModelError,
    build_model_stage,
    load_model,
)
from sensor.learn import (
    QUANTILES,
    calibrate_threshold,
    drift_lines,
    drift_report,
    score_quantiles,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
BENIGN = REPO / "pcaps" / "model" / "bn-5101.pcap.gz"  # a benign-only lab run (slimmed)
N, M = 32, 64


# -- calibration on synthetic score distributions -------------------------------------------

@pytest.mark.parametrize("dist", ["exponential", "lognormal", "gamma"])
def test_tail_fit_meets_the_false_alarm_target(dist):
    """Held back: 3,000 windows; the rate allows 1 in 20,000: far past the sample, so the
    tail is extrapolated. On a million fresh windows of the same distribution the threshold
    must give about the target (not 10x over) and not be absurdly conservative."""
    rng = np.random.default_rng(7)

    def draw(n):
        if dist == "exponential":
            return rng.exponential(1.0, n)
        if dist == "lognormal":
            return rng.lognormal(0.0, 0.5, n)
        return rng.gamma(3.0, 1.0, n)

    rate, target = 20_000.0, 1.0
    cal = calibrate_threshold(draw(3000), rate, target)
    assert cal["method"] in ("exponential tail fit", "highest held-back score")
    assert cal["heldout_over"] == 0  # never below the highest held-back score
    fresh = draw(1_000_000)
    per_hour = float((fresh > cal["threshold"]).mean()) * rate
    assert per_hour <= 3.0 * target, (dist, cal, per_hour)
    assert per_hour >= target / 50, (dist, cal, per_hour)  # not absurdly high


def test_empirical_quantile_when_enough_data():
    rng = np.random.default_rng(1)
    s = rng.normal(10.0, 1.0, 100_000)
    cal = calibrate_threshold(s, windows_per_hour=1000.0, target_per_hour=10.0)  # p = 1%
    assert cal["method"] == "empirical quantile"
    assert abs(cal["threshold"] - np.quantile(s, 0.99)) < 1e-9
    assert abs(cal["expected_false_alerts_per_hour"] - 10.0) < 0.2


def test_calibration_rejects_nonsense():
    with pytest.raises(ValueError, match="at least 10"):
        calibrate_threshold(np.ones(3), 100.0)
    with pytest.raises(ValueError, match="positive"):
        calibrate_threshold(np.ones(100), 0.0)


def test_drift_report_flags_a_shifted_distribution():
    rng = np.random.default_rng(3)
    held = rng.lognormal(0.0, 0.4, 5000)
    cal = calibrate_threshold(held, 5000.0)
    meta = {"netsensor.baseline": json.dumps({
        "threshold": cal["threshold"], "quantiles": score_quantiles(held),
        "allowed_fraction": cal["allowed_fraction"], "heldout_over_fraction": 0.0})}
    same = drift_report(meta, rng.lognormal(0.0, 0.4, 3000))
    assert not same["relearn"] and same["ks"] < 0.1
    moved = drift_report(meta, rng.lognormal(0.6, 0.4, 3000))
    assert moved["relearn"] and "KS" in moved["reason"] and moved["ks"] > 0.3
    assert len(score_quantiles(held)) == len(QUANTILES)


# -- ONNX export -----------------------------------------------------------------------------

def _baseline_meta(threshold: float) -> dict[str, str]:
    return {
        "netsensor.kind": "baseline", "netsensor.model_name": "t", "netsensor.model_version": "0",
        "netsensor.feature_spec": features.FEATURE_SPEC,
        "netsensor.inputs": json.dumps({"image": ["batch", "packets", M],
                                        "sequence": ["batch", "packets", features.N_SEQ]}),
        "netsensor.classes": json.dumps(["benign", "anomalous"]),
        "netsensor.thresholds": json.dumps({"anomalous": threshold}),
        "netsensor.window": json.dumps({"packets": N, "bytes": M, "seconds": 10.0}),
        "netsensor.baseline": json.dumps({"threshold": threshold, "quantiles": [0.0] * 21,
                                          "allowed_fraction": 1e-4}),
    }


def test_baseline_onnx_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from sensor.learn import export_baseline, make_baseline

    torch.manual_seed(5)
    model = make_baseline(N, M, features.N_SEQ).eval()
    path = str(tmp_path / "b.onnx")
    export_baseline(model, path, N, M, _baseline_meta(3.5))
    sess, contract = load_model(path, window=WindowConfig())
    assert contract.kind == "baseline" and contract.thresholds == {"anomalous": 3.5}
    rng = np.random.default_rng(0)
    b = 29
    npk = rng.integers(1, N + 1, b)
    valid = np.arange(N)[None, :] < npk[:, None]
    img = rng.random((b, N, M), dtype=np.float32) * valid[:, :, None]
    seq = rng.random((b, N, features.N_SEQ), dtype=np.float32) * valid[:, :, None]
    seq[:, :, 0] = valid
    with torch.no_grad():
        ref, ref_pe = (t.numpy() for t in model(torch.from_numpy(img), torch.from_numpy(seq)))
    got, got_pe = sess.run(None, {"image": img, "sequence": seq})
    assert got.shape == (b,) and got_pe.shape == (b, N)
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(ref.max()))
    assert np.abs(got_pe - ref_pe).max() < 1e-4 * max(1.0, float(ref_pe.max()))
    assert not got_pe[~valid].any()  # padding adds no error
    # trimming trailing padding (what the sensor does) leaves the scores unchanged
    short = sess.run(None, {"image": img[:5, :3], "sequence": seq[:5, :3]})[0]
    full3 = np.where(npk[:5] <= 3)[0]
    assert np.allclose(short[full3], got[:5][full3], atol=1e-5)


def test_baseline_and_classifier_not_swapped(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from sensor.learn import export_baseline, make_baseline

    torch.manual_seed(1)
    path = str(tmp_path / "b.onnx")
    export_baseline(make_baseline(N, M, features.N_SEQ), path, N, M, _baseline_meta(1.0))
    as_classifier = dataclasses.replace(Config(), model=ModelConfig(enabled=True, path=path))
    with pytest.raises(ModelError, match="is a site baseline; list it under model.baselines"):
        build_model_stage(as_classifier)
    swapped = dataclasses.replace(Config(), model=ModelConfig(
        enabled=True, baselines=(str(DEFAULT_MODEL),)))
    with pytest.raises(ModelError, match=r"model.baselines\[0\] is a classifier"):
        build_model_stage(swapped)
    bad = _baseline_meta(-1.0)
    export_baseline(make_baseline(N, M, features.N_SEQ), path, N, M, bad)
    with pytest.raises(ModelError, match="positive 'anomalous' threshold"):
        load_model(path)


# -- smoke learn + a real replay with explanations ------------------------------------------

def _set_threshold(path: Path, out: Path, threshold: float) -> None:
    import onnx

    mp = onnx.load(str(path))
    for p in mp.metadata_props:
        if p.key == "netsensor.thresholds":
            p.value = json.dumps({"anomalous": threshold})
    onnx.save(mp, str(out))


def test_smoke_learn_then_alerts_explained(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    out = tmp_path / "site.onnx"
    section = tmp_path / "baseline.md"
    rc = cli_main(["learn", str(BENIGN), "-o", str(out), "--steps", "40",
                   "--eval", str(SAMPLE), "--card-section", str(section)])
    assert rc == 0
    text = capsys.readouterr().out
    for needle in ("windows learned", "held back", "threshold", "false alerts/hour",
                   "eval sample.pcap"):
        assert needle in text
    sess, contract = load_model(out, window=WindowConfig())
    assert contract.kind == "baseline" and contract.name == "netsensor-site-baseline"
    base = json.loads(contract.meta["netsensor.baseline"])
    assert base["threshold"] == contract.thresholds["anomalous"] >= base["quantiles"][-1]
    assert base["windows_per_hour"] > 0
    assert "Per-family recall" in section.read_text()

    # drift (what `netsensor eval --drift` prints): the learning capture vs the sample
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"model:\n  enabled: true\n  baselines: [{out}]\n")
    line = drift_lines(str(cfg_file), [str(SAMPLE)], str(SAMPLE.with_suffix(".labels.csv")))
    assert len(line) == 1 and line[0].startswith("drift site.onnx: ")
    assert "windows, median" in line[0] and ("ok" in line[0] or "LEARN AGAIN" in line[0])

    # a threshold at the learnt median makes this tiny baseline alert on the sample: every
    # alert must carry score, over-threshold factor and the occlusion explanation
    low = tmp_path / "low.onnx"
    _set_threshold(out, low, float(base["quantiles"][10]))
    cfg = dataclasses.replace(Config(), model=ModelConfig(enabled=True,
                                                          baselines=(str(low),)))
    sink, pipe = replay(SAMPLE, cfg, stages=[build_model_stage(cfg)])
    evs = sink.events()
    alerts = [e for e in evs if e["event_type"] == "alert"]
    base_alerts = [e for e in alerts if e["alert"]["signature"] == BASELINE_SIGNATURE]
    assert base_alerts
    c = pipe.all_counters()
    assert c["ml.baseline_alerts"] == len(base_alerts)
    assert c["ml.baseline_windows_over_threshold"] > len(base_alerts)  # aggregated
    for e in base_alerts:
        a = e["alert"]
        assert a["gid"] == 9000 and a["signature_id"] == BASELINE_SID
        md = a["metadata"]
        assert float(md["score"][0]) > float(md["threshold"][0])
        assert md["over_threshold"][0].endswith("x") and float(md["over_threshold"][0][:-1]) > 1
        assert md["model"] == ["netsensor-site-baseline"] and md["class"] == ["anomalous"]
        npk = int(md["window_packets"][0])
        for item in md["explain_packets"]:
            if item != "none":
                idx, delta = item.split(":")
                assert 1 <= int(idx) <= npk and float(delta) > 0
        groups = {"ip_header", "transport_header", "payload", "timing", "sizes", "tcp_flags",
                  "tcp_window", "direction", "protocol"}
        for item in md["explain_features"]:
            if item != "none":
                assert item.split(":")[0] in groups
    assert any(md != ["none"] for md in (e["alert"]["metadata"]["explain_packets"]
                                         for e in base_alerts))
    flows = [e for e in evs if e["event_type"] == "flow" and "metadata" in e]
    assert any("ml_anomaly_permille" in e["metadata"]["flowints"] for e in flows)
    anomalous = [e for e in flows if e["metadata"]["flowints"].get("ml_anomaly_permille", 0)
                 > 1000]
    assert anomalous
    assert_eve_schema(base_alerts[:50] + flows[:100])


def test_learn_user_errors(tmp_path, capsys):
    pytest.importorskip("torch")
    assert cli_main(["learn", str(tmp_path / "none.pcap"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["learn", str(BENIGN), "--holdout", "0.9",
                     "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--holdout" in capsys.readouterr().err
