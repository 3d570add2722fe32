"""`netsensor learn`: learn this site's normal traffic; flag windows that depart from it.

    netsensor learn BENIGN.pcap... -o models/site-baseline.onnx [--target-fa-per-hour 1]

A classifier knows only the attacks it was shown. The site baseline is trained on normal
windows only (the same feature image and sequence as the classifier, `sensor.features`, cut
by the sensor's own `WindowStage`) as a *next-packet predictor*: a CNN embeds each packet's
masked bytes, an LSTM reads the packets of the window in order and predicts every packet from
the ones before it (the first from nothing), bytes and sequence features alike. A window's
anomaly score is its mean prediction error per packet (x100): traffic like the learning data
is predictable, traffic of a kind never seen there is not.

The threshold is calibrated on held-back normal windows (the last `--holdout` fraction of
each capture's time, never trained on) to a false-alarm rate: at most `--target-fa-per-hour`
windows over threshold per hour at the window rate measured on the learning captures. When
the held-back set is too small to read that quantile directly (the usual case: 1/hour is a
tiny fraction of windows), an exponential tail is fitted to the top 10% of held-back scores
(peaks over threshold) and the threshold is never below the highest held-back score.

The ONNX file carries the same contract metadata as the classifier (feature spec, inputs,
window geometry), `netsensor.kind = baseline`, the threshold, and the held-back score
quantiles, which `drift_report()` compares new normal traffic against (`netsensor eval
--drift -c CONFIG`). PyTorch is only needed to learn: `pip install -e .[train]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

from . import features
from .train import DEFAULT_MIN_WINDOWS

MODEL_NAME = "netsensor-site-baseline"
DEFAULT_OUT = "models/site-baseline.onnx"
KIND = "baseline"
SCORE_SCALE = 100.0  # window score = mean per-packet squared error x this
QUANTILES = tuple(round(q, 3) for q in np.linspace(0.0, 1.0, 21))  # stored for drift
TAIL_FRACTION = 0.10  # peaks-over-threshold: fit the top 10% of held-back scores
ONNX_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- calibration

def calibrate_threshold(scores: np.ndarray, windows_per_hour: float,
                        target_per_hour: float = 1.0) -> dict[str, Any]:
    """Threshold whose expected exceedances are <= target_per_hour at windows_per_hour.

    Allowed exceedance probability per window: p = target / rate. With at least 10 held-back
    windows expected over it, the empirical (1 - p) quantile is used. Otherwise the tail above
    the 90% quantile u is modelled as exponential with the mean excess b of the scores over u
    (P[S > u + x] = 0.1 exp(-x / b)), giving u + b ln(0.1 / p), and the threshold is at least
    just above the highest held-back score, so no held-back window would alert."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if len(s) < 10:
        raise ValueError(f"need at least 10 held-back windows to calibrate, got {len(s)}")
    if windows_per_hour <= 0 or target_per_hour <= 0:
        raise ValueError("window rate and target false alerts per hour must be positive")
    p = min(1.0, target_per_hour / windows_per_hour)
    top = float(s[-1])
    if p * len(s) >= 10:
        thr = float(np.quantile(s, 1.0 - p))
        method = "empirical quantile"
    else:
        u = float(np.quantile(s, 1.0 - TAIL_FRACTION))
        excess = s[s > u] - u
        b = float(excess.mean()) if len(excess) else 0.0
        tail = u + b * math.log(TAIL_FRACTION / p) if b > 0 else u
        thr = max(tail, top * (1.0 + 1e-6) + 1e-9)
        method = "exponential tail fit" if tail >= top else "highest held-back score"
    over = float((s > thr).mean())
    if method == "empirical quantile":
        expected = over * windows_per_hour
    else:  # the fitted tail's probability above thr, never below what held-back shows
        u = float(np.quantile(s, 1.0 - TAIL_FRACTION))
        excess = s[s > u] - u
        b = float(excess.mean()) if len(excess) else 0.0
        p_thr = TAIL_FRACTION * math.exp(-(thr - u) / b) if b > 0 else 0.0
        expected = max(p_thr, over) * windows_per_hour
    return {"threshold": thr, "method": method, "allowed_fraction": p,
            "windows_per_hour": float(windows_per_hour), "target_per_hour": target_per_hour,
            "expected_false_alerts_per_hour": float(expected),
            "heldout_windows": int(len(s)), "heldout_over": int((s > thr).sum()),
            "heldout_max": top}


def score_quantiles(scores: np.ndarray) -> list[float]:
    """The held-back score distribution at QUANTILES (stored in the model for drift)."""
    if not len(scores):
        return [0.0] * len(QUANTILES)
    return [float(v) for v in np.quantile(np.asarray(scores, np.float64), QUANTILES)]


def drift_report(meta: dict[str, str], scores: np.ndarray) -> dict[str, Any]:
    """Compare new normal traffic's window scores with the learning data's held-back scores.

    KS distance on the stored quantile grid: max over grid points q_k of |F_new(q_k) - k/20|;
    plus the over-threshold rate against the expected one. `relearn` is True when the
    distribution moved (KS > 0.2) or windows cross the threshold at 5 times the learnt rate
    (and at least 1% of windows): the site's normal has changed, learn again."""
    ref = json.loads(meta["netsensor.baseline"])
    q = np.asarray(ref["quantiles"], np.float64)
    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    if n == 0:
        return {"windows": 0, "relearn": False, "reason": "no windows scored"}
    cdf_new = np.searchsorted(s, q, side="right") / n
    grid = np.asarray(QUANTILES)
    ks = float(np.abs(cdf_new - grid)[1:-1].max()) if len(grid) > 2 else 0.0
    thr = float(ref["threshold"])
    over = float((s > thr).mean())
    learnt = float(ref.get("heldout_over_fraction", 0.0))
    expected = max(learnt, float(ref["allowed_fraction"]))
    new_q = np.quantile(s, [0.5, 0.9, 0.99])
    reasons = []
    if ks > 0.2:
        reasons.append(f"score distribution moved (KS {ks:.2f} > 0.20)")
    if over > max(5 * expected, 0.01):
        reasons.append(f"{100 * over:.2f}% of windows over threshold "
                       f"(learnt: {100 * expected:.3f}%)")
    return {
        "windows": n, "ks": ks, "over_threshold_fraction": over,
        "expected_over_fraction": expected,
        "median": float(new_q[0]), "p90": float(new_q[1]), "p99": float(new_q[2]),
        "learnt_median": float(q[len(q) // 2]), "learnt_p90": float(np.interp(0.9, grid, q)),
        "learnt_max": float(q[-1]), "threshold": thr,
        "relearn": bool(reasons), "reason": "; ".join(reasons) or "within the learnt range"}


def format_drift(name: str, d: dict[str, Any]) -> str:
    """One paragraph for humans (`netsensor eval`)."""
    if not d["windows"]:
        return f"drift {name}: no windows scored"
    verdict = "LEARN AGAIN" if d["relearn"] else "ok"
    return (f"drift {name}: {d['windows']} windows, median {d['median']:.3f} "
            f"(learnt {d['learnt_median']:.3f}), p90 {d['p90']:.3f} (learnt "
            f"{d['learnt_p90']:.3f}), KS {d['ks']:.2f}, "
            f"{100 * d['over_threshold_fraction']:.2f}% over threshold {d['threshold']:.3f}: "
            f"{verdict} ({d['reason']})")


def drift_lines(config_path: str | None, pcaps: list[str],
                labels_path: str | None = None) -> list[str]:
    """Drift of every `model.baselines` entry of the config on the normal windows of `pcaps`
    (windows of labelled attacks excluded): one line each, for `netsensor eval --drift`."""
    from .config import load_config
    from .detect.model import load_model
    from .train import collect_windows, concat_sets, read_labels

    cfg = load_config(config_path)
    if not cfg.model.baselines:
        return ["drift: no site baseline configured (model.baselines); nothing to compare"]
    wcfg = dataclasses.replace(cfg.windows, enabled=True)
    rows = read_labels(labels_path) if labels_path else []
    ws = concat_sets([collect_windows(p, rows, wcfg) for p in pcaps])
    ws = ws.subset(ws.family == "benign")
    img = features.scale_bytes(ws.image)
    out = []
    for path in cfg.model.baselines:
        sess, contract = load_model(path, cfg.model.threads, wcfg)
        if contract.kind != "baseline":
            out.append(f"drift {path}: not a site baseline")
            continue
        scores = np.concatenate([sess.run(None, {"image": img[i:i + 512],
                                                 "sequence": ws.seq[i:i + 512]})[0]
                                 for i in range(0, len(ws), 512)]) if len(ws) else np.zeros(0)
        out.append(format_drift(os.path.basename(path), drift_report(contract.meta, scores)))
    return out


# ----------------------------------------------------------------------------- the model

def make_baseline(n: int, m: int, f: int, hidden: int = 48, emb: int = 24, c1: int = 8,
                  c2: int = 16):
    """CNN-LSTM next-packet predictor. Outputs (score [B], packet_error [B, P]).

    Conv1d over each packet's bytes -> embedding, concatenated with its sequence features;
    the LSTM reads packets 0..t-1 (shifted right by one zero step) and a linear head predicts
    packet t's bytes and sequence features. Padding rows (valid = 0) add no error, and the
    LSTM runs forward, so trailing padding changes nothing (the sensor trims it)."""
    import torch
    from torch import nn

    from .train import embed_packets, packet_layers

    class NextPacket(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.proj, self.lstm = packet_layers(m, f, emb, hidden, c1, c2)
            self.head = nn.Sequential(nn.Linear(hidden, 64), nn.ReLU(), nn.Linear(64, m + f))

        def forward(self, image, sequence):
            b, p = sequence.shape[0], sequence.shape[1]
            x = embed_packets(self, image, b, p, m, emb)
            z = torch.cat([x, sequence], dim=2)
            prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
            h, _ = self.lstm(prev)
            pred = torch.sigmoid(self.head(h))
            err_b = ((pred[:, :, :m] - image) ** 2).mean(2)
            err_s = ((pred[:, :, m:] - sequence) ** 2).mean(2)
            valid = sequence[:, :, 0]
            # headers and timing say more about behaviour than payload bytes (often random:
            # encrypted or compressed), so the sequence features weigh 3x the bytes
            perr = (0.25 * err_b + 0.75 * err_s) * valid * SCORE_SCALE
            score = perr.sum(1) / valid.sum(1).clamp(min=1.0)
            return score, perr

    return NextPacket()


def torch_scores(model, image_u8: np.ndarray, seq: np.ndarray, batch: int = 2048) -> np.ndarray:
    from .train import torch_batches

    model.eval()
    outs = torch_batches(lambda img, sq: model(img, sq)[0], image_u8, seq, batch)
    return np.concatenate(outs) if outs else np.zeros(0, np.float32)


def fit_baseline(image_u8: np.ndarray, seq: np.ndarray, *, steps: int, seed: int,
                 batch: int = 128, lr: float = 3e-3, log=print):
    """Train the predictor on normal windows for about `steps` minibatches (whole epochs;
    fixed seeds; loss = mean packet error)."""
    import torch

    from .train import one_cycle, optimizer_step

    epochs = max(1, -(-steps // max(1, -(-len(seq) // batch))))
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    n, m = image_u8.shape[1:]
    model = make_baseline(n, m, seq.shape[2])
    opt, sched = one_cycle(model, lr, epochs, len(seq), batch)
    rng = np.random.default_rng(seed)
    img_t, seq_t = torch.from_numpy(image_u8), torch.from_numpy(seq)
    history = []
    for ep in range(epochs):
        model.train()
        t0 = time.monotonic()
        total, count = 0.0, 0.0
        order = rng.permutation(len(seq))
        for lo in range(0, len(seq), batch):
            b = torch.from_numpy(order[lo:lo + batch])
            img = img_t[b].float() * (1.0 / 255.0)
            sq = seq_t[b]
            _, perr = model(img, sq)
            valid = sq[:, :, 0].sum()
            loss = perr.sum() / valid.clamp(min=1.0)
            optimizer_step(model, opt, sched, loss)
            total += float(loss.detach()) * float(valid)
            count += float(valid)
        history.append({"epoch": ep + 1, "train_error": total / max(count, 1.0)})
        if ep % max(1, epochs // 10) == 0 or ep == epochs - 1:
            log(f"  epoch {ep + 1}/{epochs}: mean packet error {total / max(count, 1.0):.4f} "
                f"({time.monotonic() - t0:.1f}s)")
    model.eval()
    return model, history


def export_baseline(model, path: str, n: int, m: int, meta: dict[str, str]) -> None:
    """ONNX with outputs `score` [batch] and `packet_error` [batch, packets] + metadata."""
    from .train import write_onnx

    write_onnx(model.eval(), path, n, m,
               {"score": {0: "batch"}, "packet_error": {0: "batch", 1: "packets"}}, meta,
               "netsensor-learn",
               "netsensor site baseline (next-packet predictor); contract in metadata")


def check_export(path: str, model, image_u8: np.ndarray, seq: np.ndarray,
                 limit: int = 512) -> float:
    """Max |ONNX - PyTorch| score over up to `limit` windows, batch sizes 1, 7 and all."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    k = min(limit, len(seq))
    ref = torch_scores(model, image_u8[:k], seq[:k])
    img = features.scale_bytes(image_u8[:k])
    diff = 0.0
    for bs in (1, 7, k):
        got = np.concatenate([sess.run(None, {"image": img[lo:lo + bs],
                                               "sequence": seq[lo:lo + bs]})[0]
                              for lo in range(0, min(k, bs * 8 if bs < k else k), bs)])
        diff = max(diff, float(np.abs(got - ref[:len(got)]).max() / max(1.0, ref.max())))
    return diff


# ----------------------------------------------------------------------------- evaluation

def split_holdout(ws, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, held-back mask): per capture, windows starting in the last `fraction`
    of its time are held back (time order, so held-back traffic is later traffic)."""
    held = np.zeros(len(ws), dtype=bool)
    lo = 0
    for c in ws.captures:
        hi = lo + c["windows"]
        if hi > lo and fraction > 0:
            st = ws.start_us[lo:hi]
            cut = np.quantile(st, 1.0 - fraction)
            held[lo:hi] = st >= cut
        lo = hi
    return ~held, held


def evaluate_baseline(ws, scores: np.ndarray, threshold: float, period_s: float,
                      min_windows: int = DEFAULT_MIN_WINDOWS) -> dict:
    """Per-family instance recall and false alerts per hour, with the sensor's aggregation
    (one alert per source and period, after `min_windows` windows over threshold). An
    instance counts as detected as in `sensor.train.evaluate`."""
    from .detect.model import AlertAggregator

    over = scores > threshold
    agg = AlertAggregator.for_model(period_s, min_windows)
    false_alerts = 0
    alerted: set[int] = set()
    hits = np.flatnonzero(over)
    for j in hits[np.argsort(ws.end_us[hits], kind="stable")].tolist():
        if agg.offer((ws.src[j], KIND), int(ws.end_us[j])) is None:
            continue
        if ws.family[j] == "benign":
            false_alerts += 1
        elif ws.inst[j] >= 0:
            alerted.add(int(ws.inst[j]))
    per_family: dict[str, dict] = {}
    for k, inst in enumerate(ws.instances):
        wins = np.flatnonzero(ws.inst == k)
        pf = per_family.setdefault(inst["family"], {"instances": 0, "detected": 0})
        pf["instances"] += 1
        pf["detected"] += k in alerted or int(over[wins].sum()) >= min_windows
    for pf in per_family.values():
        pf["recall"] = pf["detected"] / pf["instances"]
    benign = ws.family == "benign"
    hours = ws.hours
    n_inst = sum(p["instances"] for p in per_family.values())
    n_det = sum(p["detected"] for p in per_family.values())
    return {"per_family": per_family, "instances": n_inst, "detected": n_det,
            "false_alerts": false_alerts, "hours": hours,
            "false_alerts_per_hour": false_alerts / hours if hours else 0.0,
            "benign_windows": int(benign.sum()), "benign_over": int((over & benign).sum())}


# ----------------------------------------------------------------------------- command

def add_learn_parser(subparsers) -> argparse.ArgumentParser:
    """Register `netsensor learn` on an argparse subparsers object."""
    p = subparsers.add_parser("learn", help="learn a site baseline from normal traffic",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("pcaps", nargs="+", metavar="BENIGN.pcap")
    p.add_argument("-o", "--output", default=DEFAULT_OUT, help=f"ONNX path ({DEFAULT_OUT})")
    p.add_argument("-c", "--config", help="YAML config whose `windows` section cuts windows")
    p.add_argument("--target-fa-per-hour", type=float, default=1.0,
                   help="false alerts per hour the threshold allows (default 1)")
    p.add_argument("--holdout", type=float, default=0.25,
                   help="fraction of each capture (by time, the end) held back to calibrate")
    p.add_argument("--steps", type=int, default=600,
                   help="minibatches of training (rounded up to whole epochs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-windows", type=int, default=40000,
                   help="train on at most this many windows (seeded sample)")
    p.add_argument("--model-version", default="1.0")
    p.add_argument("--eval", nargs="*", default=[], metavar="PCAP[:LABELS]",
                   help="also score these captures (labelled attacks, benign-only runs)")
    p.add_argument("--card-section", default=None,
                   help="write a model-card section (markdown) with the results here")
    p.add_argument("--aggregate-seconds", type=float, default=60.0)
    p.add_argument("--min-windows", type=int, default=DEFAULT_MIN_WINDOWS,
                   help="windows over threshold per source before an alert (model.min_windows)")
    p.set_defaults(fn=cmd_learn)
    return p


def cmd_learn(args: argparse.Namespace) -> int:
    """Learn, calibrate, export, verify, summarise. Exit 2 on user mistakes."""
    from .train import load_split, log_stderr, parse_capture, sensor_accepts, start_command

    cfg = start_command("learn", args.config, [*args.pcaps, *args.eval])
    if cfg is None:
        return 2
    log = log_stderr
    if not 0.05 <= args.holdout <= 0.5:
        print("netsensor: --holdout must lie in [0.05, 0.5]", file=sys.stderr)
        return 2
    wcfg = dataclasses.replace(cfg.windows, enabled=True)
    t0 = time.monotonic()
    log("learning windows:")
    try:
        ws = load_split(args.pcaps, wcfg, log)
    except (OSError, ValueError) as exc:
        print(f"netsensor: {exc}", file=sys.stderr)
        return 2
    tr_mask, ho_mask = split_holdout(ws, args.holdout)
    normal = ws.family == "benign"  # labelled attack windows never count as normal
    tr_mask &= normal
    ho_mask &= normal
    hours = ws.hours
    rate = float(normal.sum()) / hours if hours > 0 else 0.0
    if tr_mask.sum() < 50 or ho_mask.sum() < 10 or rate <= 0:
        print(f"netsensor: too little normal traffic to learn from: {int(normal.sum())} windows "
              f"({tr_mask.sum()} to learn, {ho_mask.sum()} held back); need >= 50 and >= 10",
              file=sys.stderr)
        return 2
    train_idx = np.flatnonzero(tr_mask)
    if len(train_idx) > args.max_windows:
        train_idx = np.sort(np.random.default_rng(args.seed).choice(
            train_idx, args.max_windows, replace=False))
    log(f"{int(normal.sum())} normal windows in {hours * 60:.1f} min ({rate:.0f} windows/hour): "
        f"{len(train_idx)} to learn, {int(ho_mask.sum())} held back")
    model, history = fit_baseline(ws.image[train_idx], ws.seq[train_idx], steps=args.steps,
                                  seed=args.seed, log=log)
    held = torch_scores(model, ws.image[ho_mask], ws.seq[ho_mask])
    learnt = torch_scores(model, ws.image[train_idx], ws.seq[train_idx])
    cal = calibrate_threshold(held, rate, args.target_fa_per_hour)
    thr = cal["threshold"]
    n, m = wcfg.packets, wcfg.bytes
    baseline = {"threshold": thr, "quantiles": score_quantiles(held),
                "allowed_fraction": cal["allowed_fraction"],
                "heldout_over_fraction": cal["heldout_over"] / max(1, cal["heldout_windows"]),
                "windows_per_hour": rate, "method": cal["method"],
                "expected_false_alerts_per_hour": cal["expected_false_alerts_per_hour"],
                "target_false_alerts_per_hour": args.target_fa_per_hour}
    meta = {
        "netsensor.kind": KIND,
        "netsensor.model_name": MODEL_NAME,
        "netsensor.model_version": args.model_version,
        "netsensor.feature_spec": features.FEATURE_SPEC,
        "netsensor.inputs": json.dumps({"image": ["batch", "packets", m],
                                        "sequence": ["batch", "packets", features.N_SEQ]}),
        "netsensor.outputs": json.dumps({"score": ["batch"],
                                         "packet_error": ["batch", "packets"]}),
        "netsensor.classes": json.dumps(["benign", "anomalous"]),
        "netsensor.thresholds": json.dumps({"anomalous": thr}),
        "netsensor.window": json.dumps({"packets": n, "bytes": m, "seconds": wcfg.seconds}),
        "netsensor.baseline": json.dumps(baseline),
        "netsensor.training": json.dumps({
            "captures": [os.path.basename(c["path"]) for c in ws.captures],
            "windows": len(ws), "learned": int(len(train_idx)),
            "held_back": int(ho_mask.sum()), "hours": round(hours, 4), "seed": args.seed,
            "steps": args.steps, "epochs": len(history), "holdout": args.holdout,
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}),
    }
    out = args.output
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    export_baseline(model, out, n, m, meta)
    diff = check_export(out, model, ws.image[ho_mask], ws.seq[ho_mask])
    if diff >= ONNX_TOLERANCE:
        os.unlink(out)
        print(f"netsensor: exported ONNX differs from PyTorch by {diff:.2e}; not written",
              file=sys.stderr)
        return 1
    if not sensor_accepts(out, wcfg):
        return 1
    pct = np.percentile(held, [50, 90, 99]) if len(held) else np.zeros(3)
    print(f"learned {MODEL_NAME} from {len(ws.captures)} capture(s): {len(train_idx)} windows "
          f"learned, {int(ho_mask.sum())} held back ({hours * 60:.1f} min, "
          f"{rate:.0f} windows/hour)")
    print(f"held-back scores: median {pct[0]:.3f}, p90 {pct[1]:.3f}, p99 {pct[2]:.3f}, "
          f"max {cal['heldout_max']:.3f} (learnt windows: median "
          f"{float(np.median(learnt)):.3f})")
    print(f"threshold {thr:.3f} ({cal['method']}; target <= {args.target_fa_per_hour:g} "
          f"false alerts/hour): expected {cal['expected_false_alerts_per_hour']:.2f} false "
          f"alerts/hour, {cal['heldout_over']} of {cal['heldout_windows']} held-back windows "
          f"over it")
    print(f"wrote {out} ({os.path.getsize(out)} bytes; ONNX vs PyTorch {diff:.1e}) "
          f"in {time.monotonic() - t0:.0f}s")
    results = []
    if args.eval:
        log("evaluating:")
        for spec in args.eval:
            es = load_split([spec], wcfg, log)
            sc = torch_scores(model, es.image, es.seq)
            r = evaluate_baseline(es, sc, thr, args.aggregate_seconds, args.min_windows)
            r["capture"] = os.path.basename(parse_capture(spec)[0])
            results.append(r)
            fams = ", ".join(f"{k} {v['detected']}/{v['instances']}"
                             for k, v in sorted(r["per_family"].items()))
            print(f"eval {r['capture']}: {fams or 'no labelled attacks'}; "
                  f"{r['false_alerts']} false alerts in {r['hours'] * 60:.1f} min "
                  f"({r['false_alerts_per_hour']:.2f}/hour)")
    if args.card_section:
        write_card_section(args.card_section, args, ws, cal, history, results, diff,
                           os.path.getsize(out), len(train_idx), int(ho_mask.sum()))
        print(f"wrote {args.card_section}")
    return 0


def write_card_section(path: str, args, ws, cal: dict, history: list[dict],
                       results: list[dict], diff: float, size: int, learned: int,
                       held: int) -> None:
    """Markdown for the model card: data, calibration, per-family recall, false alerts."""
    cmd = ["netsensor learn", *args.pcaps, "-o", args.output]
    if args.eval:
        cmd += ["--eval", *args.eval]
    if args.card_section:
        cmd += ["--card-section", args.card_section]
    w = ["## Site baseline (`netsensor learn`)\n",
         f"`{args.output}` ({size} bytes): CNN-LSTM next-packet predictor learnt on normal "
         "windows only; anomaly score = mean per-packet prediction error x100; alerts "
         "`NETSENSOR ML anomalous flow (site baseline)` (gid 9000, sid 9000200+). "
         "Regenerate:\n",
         "```sh\n" + " \\\n    ".join([cmd[0], " ".join(cmd[1:])]) + "\n```\n",
         f"- Learning data: {', '.join('`' + c['path'] + '`' for c in ws.captures)}: "
         f"{len(ws)} windows in {ws.hours * 60:.1f} min; {learned} learnt, {held} held back "
         f"(last {100 * args.holdout:.0f}% of each capture's time). Seed {args.seed}, "
         f"{len(history)} epochs; final mean packet error "
         f"{history[-1]['train_error']:.4f}; ONNX vs PyTorch {diff:.1e}.",
         f"- Threshold **{cal['threshold']:.3f}** ({cal['method']}) for <= "
         f"{cal['target_per_hour']:g} false alert/hour at {cal['windows_per_hour']:.0f} "
         f"windows/hour: expected {cal['expected_false_alerts_per_hour']:.2f}/hour; "
         f"{cal['heldout_over']}/{cal['heldout_windows']} held-back windows over it "
         f"(held-back max {cal['heldout_max']:.3f}).\n"]
    if results:
        fams = sorted({f for r in results for f in r["per_family"]})
        w.append("Captures from other seeds than the learning data (alerts aggregated per "
                 f"source and {args.aggregate_seconds:g} s):\n")
        w.append("| capture | " + " | ".join(fams) + " | false alerts | capture min | "
                 "false alerts/hour |")
        w.append("|---|" + "---|" * (len(fams) + 3))
        for r in results:
            cells = []
            for f in fams:
                pf = r["per_family"].get(f)
                cells.append(f"{pf['detected']}/{pf['instances']}" if pf else "-")
            w.append(f"| `{r['capture']}` | " + " | ".join(cells) +
                     f" | {r['false_alerts']} | {r['hours'] * 60:.1f} | "
                     f"{r['false_alerts_per_hour']:.2f} |")
        tot = {f: [sum(r["per_family"].get(f, {}).get(k, 0) for r in results)
                   for k in ("detected", "instances")] for f in fams}
        w.append("\nPer-family recall of the baseline alone: " + ", ".join(
            f"{f} {d}/{i} = {100 * d / i:.0f}%" for f, (d, i) in tot.items() if i) + ".\n")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(w) + "\n")


def main(argv: list[str] | None = None) -> int:
    from .train import run_subcommand

    return run_subcommand("learn", add_learn_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
