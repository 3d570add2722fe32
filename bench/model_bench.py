"""Model cost: windows/s scored by onnxruntime, and replay packets/s with the model off vs on.

    .venv/bin/python bench/model_bench.py [--pcap bench/data/mixed.pcap] [--repeat 3]
        [--baseline models/site-baseline.onnx] [--json OUT] [--replay-only]

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
   site baseline when --baseline is given), as configured by default (`replay.model_process:
   auto`: windows and scoring in a second process where this process may use 2 cores) and
   in one process (`model_process: false`); the three runs interleaved so that load from
   other jobs on the machine hits them alike. Slowdown = 1 - pps(on) / pps(off). CPU seconds
   (user + system of the replay and its helper process) are reported beside: the second
   process makes the replay faster, not cheaper.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
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


def replay(pcap: str, config: str | None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the replay and its helper processes) of
    one `netsensor replay` run."""
    exe = [sys.executable, "-m", "sensor.cli", "replay", pcap, "-q"]
    with tempfile.TemporaryDirectory() as d:
        cmd = [*exe, "-l", d] + (["-c", config] if config else [])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def add_pcap_arg(ap: argparse.ArgumentParser) -> None:
    """--pcap: the bench capture where it was made (bench/make_bench_pcap.py), else the
    sample (also bench/model_profile.py's)."""
    default = REPO / "bench" / "data" / "mixed.pcap"
    ap.add_argument("--pcap", default=str(default if default.exists() else
                                          REPO / "pcaps" / "sample.pcap"))


def write_model_config(path: str, baseline: str | None, model_process: str = "auto") -> None:
    """The model-on config: windows + the shipped model (+ the site baseline if given), the
    model in its own process or not (`replay.model_process`)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("windows:\n  enabled: true\nmodel:\n  enabled: true\n")
        if baseline:
            fh.write(f"  baselines: [{os.path.abspath(baseline)}]\n")
        fh.write(f"replay:\n  model_process: {model_process}\n")


def report_scoring(pcap: str, s: dict) -> None:
    print(f"{pcap}: {s['packets']} packets, {s['windows']} windows "
          f"({s['mean_packets_per_window']:.1f} packets/window)")
    print(f"features: {s['features_per_s']:,.0f} windows/s; classifier: "
          f"{s['windows_per_s']:,.0f} windows/s (every window, 1 onnxruntime thread); "
          f"features + classifier as the replay runs them: {s['stage_windows_per_s']:,.0f} "
          f"windows/s ({s['windows_inferred']:,} of {s['windows']:,} windows distinct within "
          f"their scoring chunk, the rest repeats)"
          + (f"; baseline: {s['baseline_windows_per_s']:,.0f} windows/s"
             if "baseline_windows_per_s" in s else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pcap_arg(ap)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", default=None, help="also score with this site baseline")
    ap.add_argument("--json", default=None)
    ap.add_argument("--replay-only", action="store_true", help="skip the scoring part (1.)")
    a = ap.parse_args()
    res: dict = {"pcap": os.path.relpath(a.pcap, REPO), "cpu": os.cpu_count()}
    if a.replay_only:
        res["scoring"] = {"packets": sum(len(b) for b in PcapSource(a.pcap).batches())}
    else:
        res["scoring"] = scoring(a.pcap, a.baseline)
    s = res["scoring"]
    if not a.replay_only:
        report_scoring(res["pcap"], s)
    # off, on (the default: windows and scoring in a second process where 2 cores are
    # free), on in one process; interleaved, so that other jobs' load hits all alike
    modes = {"off": None, "on": "auto", "on_in_process": "false"}
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as d:
        configs = {}
        for mode, proc in modes.items():
            if proc is not None:
                configs[mode] = os.path.join(d, f"{mode}.yaml")
                write_model_config(configs[mode], a.baseline, proc)
        for _ in range(a.repeat):
            for mode in modes:
                runs[mode].append(replay(a.pcap, configs.get(mode)))
    pk = s["packets"]
    rep: dict = {"statistic": f"median of {a.repeat}", "cores": len(os.sched_getaffinity(0))}
    for mode in modes:
        wall = float(np.median([w for w, _ in runs[mode]]))
        cpu = float(np.median([c for _, c in runs[mode]]))
        rep[mode] = {"wall_s": wall, "cpu_s": cpu, "pps": pk / wall,
                     "runs_wall_s": [w for w, _ in runs[mode]],
                     "runs_cpu_s": [c for _, c in runs[mode]]}
    off = rep["off"]
    for mode in ("on", "on_in_process"):
        rep[mode]["slowdown"] = 1.0 - off["wall_s"] / rep[mode]["wall_s"]
        rep[mode]["cpu_ratio"] = rep[mode]["cpu_s"] / off["cpu_s"]
    res["replay"] = rep
    print(f"replay, median of {a.repeat} ({rep['cores']} cores):")
    for mode, label in (("off", "model off"), ("on", "model on (model_process auto)"),
                        ("on_in_process", "model on, one process")):
        r = rep[mode]
        extra = (f"  {100 * r['slowdown']:.1f}% slower, {r['cpu_ratio']:.2f}x the CPU"
                 if mode != "off" else "")
        print(f"  {label:32s} {r['pps']:>9,.0f} packets/s ({r['wall_s']:.2f} s wall, "
              f"{r['cpu_s']:.2f} s CPU){extra}; runs "
              f"{', '.join(f'{w:.2f}' for w in r['runs_wall_s'])} s")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
