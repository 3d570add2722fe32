"""Model cost: windows/s scored by onnxruntime, and replay packets/s with the model off vs on.

    .venv/bin/python bench/model_bench.py [--pcap bench/data/mixed.pcap] [--repeat 3]
        [--baseline models/site-baseline.onnx] [--json OUT]

1. Scoring: every window of the capture is cut by the sensor's own Pipeline + WindowStage,
   then timed separately: feature extraction (`sensor.features.extract`, padded) and scoring
   of every window (`ModelStage.predict`: batches of 512, shortest windows first, trimmed
   padding; one onnxruntime thread), then both as the replay runs them
   (`ModelStage._chunks` + `_run_chunks`: features from the flat packet rows, windows whose
   features repeat within a chunk scored once). The report says how many windows were
   distinct: the bench capture replays the sample many times, so its windows repeat far
   more than most traffic's; the "every window" rate is the one for all-distinct traffic.
2. Replay: `netsensor replay` as a subprocess (what a user runs), the median of --repeat wall
   times, with the built-in config (model off) and with `windows` + `model` enabled (plus the
   site baseline when --baseline is given), off and on runs interleaved so that load from
   other jobs on the machine hits both alike. Slowdown = 1 - pps(on) / pps(off).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sensor import features  # noqa: E402
from sensor.capture.pcap import PcapSource  # noqa: E402
from sensor.config import Config, ModelConfig  # noqa: E402
from sensor.detect.model import build_model_stage  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from sensor.windows import WindowStage  # noqa: E402


def collect(pcap: str, cfg: Config) -> tuple[list, int]:
    """All closed windows of `pcap` (WindowBatch list) and the packet count."""
    got: list = []
    stage = WindowStage(cfg.windows, lambda wb: got.append(wb) or [])
    pipe = Pipeline(cfg, None, [stage], flow_seed=1)
    packets = 0
    for b in PcapSource(pcap, batch_size=65536).batches():
        packets += len(b)
        pipe.process(b)
    pipe.finish()
    stage.finish()
    return got, packets


def scoring(pcap: str, baseline: str | None) -> dict:
    cfg = dataclasses.replace(Config(), windows=dataclasses.replace(Config().windows,
                                                                     enabled=True),
                              model=ModelConfig(enabled=True,
                                                baselines=(baseline,) if baseline else ()))
    stage = build_model_stage(cfg)
    wbs, packets = collect(pcap, cfg)
    for wb in wbs:  # the padded views training uses, built before the clock starts
        _ = wb.data, wb.pkts
    t0 = time.perf_counter()
    feats = [features.extract(wb, stage.contract.packets, stage.contract.bytes) for wb in wbs]
    t_feat = time.perf_counter() - t0
    n = sum(len(wb) for wb in wbs)
    t0 = time.perf_counter()
    for wb, (img, seq) in zip(wbs, feats, strict=True):
        stage.predict(img, seq, wb.n_packets)
    t_model = time.perf_counter() - t0
    out = {"windows": n, "packets": packets, "feature_s": t_feat, "score_s": t_model,
           "features_per_s": n / t_feat if t_feat else 0.0,
           "windows_per_s": n / t_model if t_model else 0.0,
           "mean_packets_per_window": float(np.mean([x for wb in wbs
                                                     for x in wb.n_packets.tolist()]))}
    # as the replay scores them: flat features per batch, identical windows scored once
    t0 = time.perf_counter()
    for wb in wbs:
        stage._run_chunks(stage.sess, stage._chunks(wb), len(wb), len(stage.classes))
    t_stage = time.perf_counter() - t0
    out["stage_s"] = t_stage
    out["stage_windows_per_s"] = n / t_stage if t_stage else 0.0
    out["windows_inferred"] = stage.stats["ml.windows_inferred"]
    if stage.baselines:
        b = stage.baselines[0]
        t0 = time.perf_counter()
        for wb, (img, seq) in zip(wbs, feats, strict=True):
            stage.predict_baseline(b, img, seq, wb.n_packets)
        t_b = time.perf_counter() - t0
        out["baseline_windows_per_s"] = n / t_b if t_b else 0.0
    return out


def replay(pcap: str, config: str | None) -> float:
    """Wall seconds of one `netsensor replay` run."""
    exe = [sys.executable, "-m", "sensor.cli", "replay", pcap, "-q"]
    with tempfile.TemporaryDirectory() as d:
        cmd = [*exe, "-l", d] + (["-c", config] if config else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        return time.perf_counter() - t0


def add_pcap_arg(ap: argparse.ArgumentParser) -> None:
    """--pcap: the bench capture where it was made (bench/make_bench_pcap.py), else the
    sample (also bench/model_profile.py's)."""
    default = REPO / "bench" / "data" / "mixed.pcap"
    ap.add_argument("--pcap", default=str(default if default.exists() else
                                          REPO / "pcaps" / "sample.pcap"))


def write_model_config(path: str, baseline: str | None) -> None:
    """The model-on config: windows + the shipped model (+ the site baseline if given)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("windows:\n  enabled: true\nmodel:\n  enabled: true\n")
        if baseline:
            fh.write(f"  baselines: [{os.path.abspath(baseline)}]\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pcap_arg(ap)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", default=None, help="also score with this site baseline")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = {"pcap": os.path.relpath(a.pcap, REPO), "cpu": os.cpu_count()}
    res["scoring"] = scoring(a.pcap, a.baseline)
    s = res["scoring"]
    print(f"{res['pcap']}: {s['packets']} packets, {s['windows']} windows "
          f"({s['mean_packets_per_window']:.1f} packets/window)")
    print(f"features: {s['features_per_s']:,.0f} windows/s; classifier: "
          f"{s['windows_per_s']:,.0f} windows/s (every window, 1 onnxruntime thread); "
          f"features + classifier as the replay runs them: {s['stage_windows_per_s']:,.0f} "
          f"windows/s ({s['windows_inferred']:,} of {s['windows']:,} windows distinct within "
          f"their scoring chunk, the rest repeats)"
          + (f"; baseline: {s['baseline_windows_per_s']:,.0f} windows/s"
             if "baseline_windows_per_s" in s else ""))
    with tempfile.TemporaryDirectory() as d:
        on = os.path.join(d, "on.yaml")
        write_model_config(on, a.baseline)
        runs_off, runs_on = [], []
        for _ in range(a.repeat):
            runs_off.append(replay(a.pcap, None))
            runs_on.append(replay(a.pcap, on))
    t_off, t_on = float(np.median(runs_off)), float(np.median(runs_on))
    pk = s["packets"]
    res["replay"] = {"off_s": t_off, "on_s": t_on, "off_pps": pk / t_off, "on_pps": pk / t_on,
                     "slowdown": 1.0 - t_off / t_on, "runs_off_s": runs_off,
                     "runs_on_s": runs_on, "statistic": f"median of {a.repeat}"}
    r = res["replay"]
    print(f"replay: model off {r['off_pps']:,.0f} packets/s ({t_off:.2f} s), model on "
          f"{r['on_pps']:,.0f} packets/s ({t_on:.2f} s): {100 * r['slowdown']:.1f}% slower "
          f"(median of {a.repeat}; off runs {', '.join(f'{t:.2f}' for t in runs_off)} s, "
          f"on runs {', '.join(f'{t:.2f}' for t in runs_on)} s)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
