"""Where the model-on replay spends its time: cProfile over `netsensor replay` in-process.

    .venv/bin/python bench/model_profile.py [--pcap bench/data/mixed.pcap] [--baseline ONNX]

Runs the replay with `windows` + `model` enabled under cProfile and prints the seconds spent
in each part of the model path (cumulative, so nested calls count in their caller): the
window stage, feature extraction, onnxruntime, flow-event writing, alert explanations, and
ModelStage._score's own bookkeeping. Profiling slows Python code more than numpy and
onnxruntime, so compare parts with each other, not with bench/model_bench.py's wall times.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model_bench import add_pcap_arg, write_model_config  # noqa: E402

from sensor.cli import main as cli_main  # noqa: E402

# part -> (file suffix, function name, "cum" or "own")
PARTS = {
    "window stage (WindowStage hooks)": [("sensor/windows.py", f, "cum") for f in
                                         ("on_batch", "on_flows_ended", "finish")],
    "features + dedupe (ModelStage._chunks)": [("sensor/detect/model.py", "_chunks", "cum")],
    "onnxruntime (predict_session)": [("sensor/detect/model.py", "predict_session", "cum")],
    "flow events, dict path (flow_events_dicts)": [("sensor/output/eve.py",
                                                   "flow_events_dicts", "cum")],
    "flow events, bulk path (flow_lines)": [("sensor/output/eve.py", "flow_lines", "cum")],
    "alert explanations (ModelStage._explain_all)": [("sensor/detect/model.py",
                                                      "_explain_all", "cum")],
    "alert aggregation (ModelStage._aggregate)": [("sensor/detect/model.py", "_aggregate",
                                                   "cum")],
    "ModelStage._score, own time": [("sensor/detect/model.py", "_score", "own")],
    "ModelStage._flow_lines, own time": [("sensor/detect/model.py", "_flow_lines", "own")],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pcap_arg(ap)
    ap.add_argument("--baseline", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "on.yaml")
        write_model_config(cfg, a.baseline, "false")
        prof = cProfile.Profile()
        prof.enable()
        rc = cli_main(["replay", a.pcap, "-q", "-l", d, "-c", cfg])
        prof.disable()
    if rc:
        return rc
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _, ct, _) in stats.values())
    print(f"{os.path.relpath(a.pcap, REPO)}: replay under cProfile {total:.2f} s")
    for part, keys in PARTS.items():
        secs = 0.0
        for (fname, _line, func), (_cc, _nc, tt, ct, _callers) in stats.items():
            for suffix, name, kind in keys:
                if fname.endswith(suffix) and func == name:
                    secs += ct if kind == "cum" else tt
        print(f"  {part:58s} {secs:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
