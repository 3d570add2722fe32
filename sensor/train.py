"""`netsensor train`: labelled pcaps -> windows -> CNN-LSTM -> calibrated ONNX + model card.

    netsensor train --train A.pcap[:A.labels.csv] ... --val V.pcap ... --test T.pcap ... \\
        -o models/netsensor-cnnlstm.onnx --card models/README.md

Windows are cut by the sensor's own code (`Pipeline` + `WindowStage` over each pcap, the
default `windows` config) and turned into inputs by `sensor.features`, the module the
sensor scores with, so training and serving see identical numbers.

A window is labelled with an attack family when its flow's two endpoints are the attacker
and victim of a label row (either direction) and the window overlaps the row's time slot;
every other window is benign. Training uses fixed seeds and class-weighted cross-entropy;
per-class thresholds are calibrated on the validation windows so that benign windows raise
at most `--target-fa-per-hour` aggregated alerts per hour (never below `--min-threshold`);
the test split is scored once with those thresholds. The exported ONNX is checked against
the PyTorch model (max abs diff < 1e-4) before anything is written.

PyTorch (and onnx, matplotlib) come from the `train` extra: `pip install -e .[train]`.
Importing this module does not import torch; only running training does.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import features
from .config import Config, ModelConfig, WindowConfig

MODEL_NAME = "netsensor-cnnlstm"
DEFAULT_OUT = "models/netsensor-cnnlstm.onnx"
OPSET = 17
ONNX_TOLERANCE = 1e-4
BENIGN = "benign"
DEFAULT_MIN_WINDOWS = ModelConfig().min_windows  # the sensor's model.min_windows


# ----------------------------------------------------------------------------- data

@dataclass
class LabelRow:
    name: str
    family: str
    attacker: str
    victim: str
    start_us: int
    end_us: int


def parse_capture(spec: str) -> tuple[str, str | None]:
    """'A.pcap[:A.labels.csv]' -> (pcap, labels or None). Without a labels file named, the
    file next to the pcap (A.labels.csv) is used when it exists; none means all benign."""
    if ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if tail.endswith(".csv"):
            return head, tail
    guess = re.sub(r"\.pcap(ng)?(\.gz)?$", "", spec) + ".labels.csv"
    return spec, guess if os.path.isfile(guess) else None


def read_labels(path: str | None) -> list[LabelRow]:
    if path is None:
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            rows.append(LabelRow(r["name"], r["family"], r["attacker_ip"], r["victim_ip"],
                                 int(round(float(r["start_ts"]) * 1e6)),
                                 int(round(float(r["end_ts"]) * 1e6))))
    return rows


@dataclass
class WindowSet:
    """Windows of one or more captures: model inputs, labels and what alerts need."""

    image: np.ndarray  # uint8 [W, N, M], host fields masked (features.masked_bytes)
    seq: np.ndarray  # float32 [W, N, F]
    family: np.ndarray  # str [W]: 'benign' or the label row's family
    inst: np.ndarray  # int [W]: index into `instances`, -1 for benign
    src: np.ndarray  # str [W]: the flow's client address (alert aggregation key)
    start_us: np.ndarray
    end_us: np.ndarray
    n_packets: np.ndarray
    instances: list[dict] = field(default_factory=list)  # capture, name, family
    captures: list[dict] = field(default_factory=list)  # path, packets, windows, seconds

    def __len__(self) -> int:
        return len(self.family)

    @property
    def hours(self) -> float:
        return sum(c["seconds"] for c in self.captures) / 3600.0

    def subset(self, keep: np.ndarray) -> WindowSet:
        return dataclasses.replace(
            self, image=self.image[keep], seq=self.seq[keep], family=self.family[keep],
            inst=self.inst[keep], src=self.src[keep], start_us=self.start_us[keep],
            end_us=self.end_us[keep], n_packets=self.n_packets[keep])


def concat_sets(sets: list[WindowSet]) -> WindowSet:
    cat = np.concatenate
    insts: list[dict] = []
    inst_parts = []
    for s in sets:
        inst_parts.append(np.where(s.inst >= 0, s.inst + len(insts), -1))
        insts += s.instances
    return WindowSet(
        image=cat([s.image for s in sets]), seq=cat([s.seq for s in sets]),
        family=cat([s.family for s in sets]), inst=cat(inst_parts), src=cat([s.src for s in sets]),
        start_us=cat([s.start_us for s in sets]), end_us=cat([s.end_us for s in sets]),
        n_packets=cat([s.n_packets for s in sets]), instances=insts,
        captures=[c for s in sets for c in s.captures])


def collect_windows(pcap: str, labels: list[LabelRow], wcfg: WindowConfig,
                    flow_seed: int = 1, batch_size: int = 65536) -> WindowSet:
    """Replay `pcap` through the sensor's Pipeline + WindowStage and label every window."""
    from .capture.pcap import PcapSource
    from .output.eve import ip_str
    from .pipeline import Pipeline
    from .windows import WindowStage

    n, m = wcfg.packets, wcfg.bytes
    parts: dict[str, list] = {k: [] for k in ("image", "seq", "cli", "srv", "start", "end",
                                              "npk")}

    def consumer(wb) -> list[str]:
        parts["image"].append(features.masked_bytes(wb.data, wb.n_packets, n, m))
        parts["seq"].append(features.sequence(wb.pkts, wb.n_packets, n))
        f = wb.flow
        parts["cli"] += [ip_str(int(v), int(h), int(lo)) for v, h, lo in
                         zip(f["ipver"].tolist(), f["cli_hi"].tolist(), f["cli_lo"].tolist(),
                             strict=True)]
        parts["srv"] += [ip_str(int(v), int(h), int(lo)) for v, h, lo in
                         zip(f["ipver"].tolist(), f["srv_hi"].tolist(), f["srv_lo"].tolist(),
                             strict=True)]
        parts["start"].append(wb.start_us)
        parts["end"].append(wb.end_us)
        parts["npk"].append(wb.n_packets)
        return []

    cfg = dataclasses.replace(Config(), windows=dataclasses.replace(wcfg, enabled=True))
    stage = WindowStage(cfg.windows, consumer)
    pipe = Pipeline(cfg, None, [stage], flow_seed=flow_seed)
    first = last = None
    packets = 0
    for batch in PcapSource(pcap, batch_size=batch_size).batches():
        if len(batch):
            first = int(batch.ts_us.min()) if first is None else min(first, int(batch.ts_us.min()))
            last = int(batch.ts_us.max()) if last is None else max(last, int(batch.ts_us.max()))
            packets += len(batch)
        pipe.process(batch)
    pipe.finish()
    stage.finish()
    w = sum(len(x) for x in parts["npk"])
    if w == 0:
        image = np.zeros((0, n, m), np.uint8)
        seq = np.zeros((0, n, features.N_SEQ), np.float32)
        start = end = npk = np.zeros(0, np.int64)
    else:
        image, seq = np.concatenate(parts["image"]), np.concatenate(parts["seq"])
        start, end = np.concatenate(parts["start"]), np.concatenate(parts["end"])
        npk = np.concatenate(parts["npk"])
    cli = np.asarray(parts["cli"], dtype=object)
    srv = np.asarray(parts["srv"], dtype=object)
    family = np.full(w, BENIGN, dtype=object)
    inst = np.full(w, -1, dtype=np.int64)
    best = np.zeros(w, dtype=np.int64)
    for k, row in enumerate(labels):
        pair = ((cli == row.attacker) & (srv == row.victim)) | \
               ((cli == row.victim) & (srv == row.attacker))
        overlap = np.minimum(end, row.end_us) - np.maximum(start, row.start_us)
        hit = pair & (overlap >= 0) & (overlap + 1 > best)
        family[hit] = row.family
        inst[hit] = k
        best[hit] = overlap[hit] + 1
    name = os.path.basename(pcap)
    return WindowSet(
        image=image, seq=seq, family=family, inst=inst, src=cli, start_us=start, end_us=end,
        n_packets=npk,
        instances=[{"capture": name, "name": r.name, "family": r.family} for r in labels],
        captures=[{"path": pcap, "packets": packets, "windows": w,
                   "seconds": ((last - first) / 1e6) if first is not None else 0.0,
                   "attacks": len(labels)}])


def load_split(specs: list[str], wcfg: WindowConfig, log=print) -> WindowSet:
    sets = []
    for spec in specs:
        pcap, lab = parse_capture(spec)
        t = time.monotonic()
        ws = collect_windows(pcap, read_labels(lab), wcfg)
        fam, cnt = np.unique(ws.family, return_counts=True)
        log(f"  {pcap}: {ws.captures[0]['packets']} packets, {len(ws)} windows "
            f"{dict(zip(fam.tolist(), cnt.tolist(), strict=True))} "
            f"({time.monotonic() - t:.1f}s)")
        sets.append(ws)
    return concat_sets(sets)


# ----------------------------------------------------------------------------- model

def packet_layers(m: int, f: int, emb: int, hidden: int, c1: int, c2: int):
    """The front both models share (classifier and site baseline), made in this order so that
    a seed gives the same weights: a two-layer CNN over each packet's `m` bytes, a projection
    to `emb`, and an LSTM over [embedding, `f` sequence features]. Returns (conv, proj, lstm).

    The convolutions have stride = kernel (4 bytes, then 2 positions of c1 channels), so each
    is one matrix product over non-overlapping patches (see `embed_packets`): onnxruntime runs
    that as a fused Gemm, several times faster than its Conv kernel on 64-byte rows, and the
    byte fields of a header (2- and 4-byte aligned) fall on patch boundaries anyway."""
    from torch import nn

    if m % 8:
        raise ValueError(f"packet bytes ({m}) must be a multiple of 8")
    conv = nn.ModuleList([nn.Linear(4, c1), nn.Linear(2 * c1, c2)])
    proj = nn.Linear(c2 * (m // 8), emb)
    lstm = nn.LSTM(emb + f, hidden, batch_first=True)
    return conv, proj, lstm


def embed_packets(model, image, b: int, p: int, m: int, emb: int):
    """Each packet's bytes through the model's `conv` and `proj`: [b, p, emb]. The layers run
    on 2-D views (patches as rows, channels last), which the ONNX export keeps as Gemm."""
    import torch

    k1, k2 = model.conv
    x = torch.relu(k1(image.reshape(-1, 4)))  # Conv1d(1, c1, kernel 4, stride 4)
    x = torch.relu(k2(x.reshape(-1, 2 * k1.out_features)))  # Conv1d(c1, c2, 2, stride 2)
    x = torch.relu(model.proj(x.reshape(-1, k2.out_features * (m // 8))))
    return x.reshape(b, p, emb)


def make_model(n: int, m: int, f: int, n_classes: int, hidden: int = 32, emb: int = 16,
               c1: int = 8, c2: int = 16):
    """The CNN-LSTM: Conv1d over each packet's bytes, concatenated with the packet's sequence
    features, an LSTM over the packets, masked mean+max pooling, an MLP head (logits)."""
    import torch
    from torch import nn

    class CnnLstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.proj, self.lstm = packet_layers(m, f, emb, hidden, c1, c2)
            self.head = nn.Sequential(nn.Linear(2 * hidden, 64), nn.ReLU(), nn.Dropout(0.1),
                                      nn.Linear(64, n_classes))

        def forward(self, image, sequence):
            # the packet axis may be shorter than n: trailing padding changes nothing (the
            # LSTM runs forward and the pooling is masked), so the sensor trims it
            x = embed_packets(self, image, sequence.shape[0], sequence.shape[1], m, emb)
            out, _ = self.lstm(torch.cat([x, sequence], dim=2))
            valid = sequence[:, :, 0:1]
            mean = (out * valid).sum(1) / valid.sum(1).clamp(min=1.0)
            mx = (out - (1.0 - valid) * 4.0).max(1).values  # LSTM outputs lie in (-1, 1)
            return self.head(torch.cat([mean, mx], dim=1))

    return CnnLstm()


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class _Softmax:
    """Wraps the logits model so the exported graph outputs probabilities."""

    @staticmethod
    def wrap(model):
        import torch

        class Probs(torch.nn.Module):
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, image, sequence):
                return torch.softmax(self.inner(image, sequence), dim=1)

        return Probs(model)


def torch_batches(fn, image_u8: np.ndarray, seq: np.ndarray, batch: int) -> list[np.ndarray]:
    """`fn(image, sequence)` over the windows in batches of `batch`, without gradients, on
    the bytes scaled as the sensor scales them (features.scale_bytes)."""
    import torch

    outs = []
    with torch.no_grad():
        for lo in range(0, len(seq), batch):
            img = torch.from_numpy(features.scale_bytes(image_u8[lo:lo + batch]))
            outs.append(fn(img, torch.from_numpy(seq[lo:lo + batch])).numpy())
    return outs


def torch_probs(model, image_u8: np.ndarray, seq: np.ndarray, batch: int = 2048) -> np.ndarray:
    import torch

    model.eval()
    outs = torch_batches(lambda img, sq: torch.softmax(model(img, sq), dim=1), image_u8, seq,
                         batch)
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


def one_cycle(model, lr: float, epochs: int, n: int, batch: int):
    """The optimiser both models train with: AdamW under a one-cycle schedule over `epochs`
    passes of `n` windows. Returns (optimizer, scheduler)."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * ((n + batch - 1) // batch))
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)


def optimizer_step(model, opt, sched, loss) -> None:
    """One minibatch update: gradients of `loss`, clipped to norm 1, then the schedule."""
    import torch

    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


TIME_COLS = (features.SEQ_FEATURES.index("log_iat"), features.SEQ_FEATURES.index("log_t"))


def augment_timing(seq, gen, max_factor: float):
    """Stretch or compress each window's clock by a random factor in [1/max, max].

    The lab's veths answer in microseconds; real links are slower and noisier. Rescaling the
    inter-arrival and since-start times (inside their log1p encoding) keeps the model from
    keying on the lab's exact latencies. Returns a new tensor; padding rows stay zero."""
    import torch

    if max_factor <= 1.0:
        return seq
    b = seq.shape[0]
    lo = float(np.log(max_factor))
    k = torch.exp((torch.rand(b, 1, 1, generator=gen) * 2.0 - 1.0) * lo)
    scale = float(features._LOG_TIME)
    cols = list(TIME_COLS)
    t = seq[:, :, cols]
    us = torch.expm1(t * scale) * k
    out = seq.clone()
    out[:, :, cols] = torch.log1p(us) / scale * seq[:, :, 0:1]
    return out


def augment_rtt(seq, gen, lo_us: float, hi_us: float, p: float):
    """Add a network round trip to a share `p` of the windows.

    The lab's hosts share one bridge: a reply follows its request within microseconds,
    while across real links every turn of a conversation waits for a round trip. Each
    chosen window gets a round trip r (log-uniform in [lo, hi] us), split at random between
    the two sides of the sensor: a packet that answers the other side's packet arrives that
    share of r later, and every later packet of the window with it. Without this, a normal
    HTTP exchange over the internet looked like a slow DoS to the model (docs/model.md)."""
    import torch

    if p <= 0.0 or hi_us <= 0.0:
        return seq
    b = seq.shape[0]
    scale = float(features._LOG_TIME)
    iat_col, t_col = TIME_COLS
    valid = seq[:, :, 0]
    to_srv = seq[:, :, 1] > 0.5
    on = (torch.rand(b, 1, generator=gen) < p).float()
    lo, hi = float(np.log(max(lo_us, 1.0))), float(np.log(max(hi_us, lo_us, 1.0)))
    r = torch.exp(lo + torch.rand(b, 1, generator=gen) * (hi - lo)) * on
    share = torch.rand(b, 1, generator=gen)  # of r on the clients' side of the sensor
    add = torch.zeros_like(valid)
    add[:, 1:] = r * (share * (to_srv[:, 1:] & ~to_srv[:, :-1]).float()
                      + (1.0 - share) * (~to_srv[:, 1:] & to_srv[:, :-1]).float()) * valid[:, 1:]
    iat = torch.expm1(seq[:, :, iat_col] * scale) + add
    out = seq.clone()
    out[:, :, iat_col] = torch.log1p(iat) / scale * valid
    out[:, :, t_col] = torch.log1p(torch.cumsum(iat * valid, dim=1)) / scale * valid
    return out


TS_OPTION = np.array([1, 1, 8, 10], np.uint8)  # NOP, NOP, timestamp (kind 8, length 10)


def strip_tcp_timestamps(image: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windows as a TCP stack without timestamps would have sent them.

    Linux (every lab host) puts NOP, NOP, timestamp in every TCP segment; Windows and many
    embedded stacks do not. Of an IPv4 packet with a 20-byte IP header and exactly that
    12-byte option block, this drops the block: the data offset says 5, the total length and
    the packet size shrink by 12, the bytes after it move up (the last 12 of the 64 kept
    become zero: the bytes that would follow are not in the image). Other packets (SYNs
    with more options, IPv6, fragments) stay as they are."""
    w, n, m = image.shape
    out_i, out_s = image.copy(), seq.copy()
    if m < 52 or not w:
        return out_i, out_s
    img = image.reshape(-1, m)
    flat_s = seq.reshape(-1, seq.shape[-1])
    ok = ((flat_s[:, 0] > 0) & (img[:, 0] == 0x45) & (img[:, 9] == 6)
          & ((img[:, 6] & 0x1F) == 0) & (img[:, 7] == 0) & ((img[:, 32] >> 4) == 8)
          & (img[:, 40:44] == TS_OPTION).all(axis=1))
    r = np.flatnonzero(ok)
    oi = out_i.reshape(-1, m)
    os_ = out_s.reshape(-1, seq.shape[-1])
    oi[r, 40:m - 12] = img[r, 52:m]
    oi[r, m - 12:] = 0
    oi[r, 32] = (5 << 4) | (img[r, 32] & 0x0F)
    total = ((img[r, 2].astype(np.int64) << 8) | img[r, 3]) - 12
    oi[r, 2], oi[r, 3] = (total >> 8) & 0xFF, total & 0xFF
    size = np.expm1(flat_s[r, 2].astype(np.float64) * features._LOG_SIZE) - 12.0
    os_[r, 2] = np.log1p(np.maximum(size, 0.0)) / features._LOG_SIZE
    return out_i, out_s


def train_model(train: WindowSet, val: WindowSet, classes: list[str], *, epochs: int,
                seed: int, batch: int = 256, lr: float = 3e-3, time_jitter: float = 3.0,
                rtt_us: tuple[float, float] = (0.0, 0.0), rtt_share: float = 0.5,
                strip_ts: float = 0.0, log=print) -> tuple[Any, dict]:
    """Class-weighted cross-entropy with augmentation (timing scaled, round trips added to
    `rtt_share` of the windows, TCP timestamps dropped from `strip_ts` of them); keeps the
    epoch with the best validation balanced accuracy (fixed seeds: the same data gives the
    same model)."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    idx = {c: i for i, c in enumerate(classes)}
    y_tr = np.array([idx[f] for f in train.family], dtype=np.int64)
    y_va = np.array([idx.get(f, -1) for f in val.family], dtype=np.int64)
    n, m = train.image.shape[1:]
    model = make_model(n, m, train.seq.shape[2], len(classes))
    counts = np.bincount(y_tr, minlength=len(classes)).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0)
    w = w / w[counts > 0].mean()
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32))
    opt, sched = one_cycle(model, lr, epochs, len(y_tr), batch)
    rng = np.random.default_rng(seed)
    img_t = torch.from_numpy(train.image)
    seq_t = torch.from_numpy(train.seq)
    if strip_ts > 0:
        img_nots, seq_nots = (torch.from_numpy(a) for a in strip_tcp_timestamps(train.image,
                                                                                 train.seq))
    y_t = torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    best_state, best_score = None, -1.0
    for ep in range(epochs):
        model.train()
        t0 = time.monotonic()
        order = torch.from_numpy(rng.permutation(len(y_tr)))
        total = 0.0
        for lo in range(0, len(order), batch):
            b = order[lo:lo + batch]
            img, sq = img_t[b], seq_t[b]
            if strip_ts > 0:
                nots = (torch.rand(len(b), generator=gen) < strip_ts)[:, None, None]
                img = torch.where(nots, img_nots[b], img)
                sq = torch.where(nots, seq_nots[b], sq)
            img = img.float() * (1.0 / 255.0)
            sq = augment_rtt(augment_timing(sq, gen, time_jitter), gen, *rtt_us, rtt_share)
            logits = model(img, sq)
            loss = loss_fn(logits, y_t[b])
            optimizer_step(model, opt, sched, loss)
            total += float(loss.detach()) * len(b)
        rec = {"epoch": ep + 1, "train_loss": total / max(1, len(y_tr))}
        if len(val):
            pv = torch_probs(model, val.image, val.seq)
            known = y_va >= 0
            pred = pv.argmax(1)
            recalls = [float((pred[known & (y_va == c)] == c).mean())
                       for c in range(len(classes)) if (known & (y_va == c)).any()]
            rec["val_balanced_acc"] = float(np.mean(recalls)) if recalls else 0.0
            lp = -np.log(np.maximum(pv[known, y_va[known]], 1e-9))
            rec["val_loss"] = float(lp.mean()) if len(lp) else 0.0
            score = rec["val_balanced_acc"] - 0.01 * rec["val_loss"]
        else:
            score = -rec["train_loss"]
        if score > best_score:
            best_score = score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            rec["best"] = True
        history.append(rec)
        log(f"  epoch {ep + 1}/{epochs}: " + " ".join(
            f"{k}={v:.4f}" for k, v in rec.items() if isinstance(v, float))
            + f" ({time.monotonic() - t0:.1f}s)")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, {"history": history, "class_weights": w.tolist(),
                   "train_counts": counts.astype(int).tolist()}


# ----------------------------------------------------------------------------- thresholds

def simulate_alerts(ws: WindowSet, probs: np.ndarray, classes: list[str],
                    thresholds: dict[str, float], period_s: float,
                    min_windows: int = DEFAULT_MIN_WINDOWS) -> list[dict]:
    """The alerts ModelStage would raise for these windows (same aggregation)."""
    from .detect.model import AlertAggregator

    thr = np.array([2.0] + [thresholds[c] for c in classes[1:]], dtype=np.float32)
    ratio = probs / thr[None, :]
    over = (ratio[:, 1:] >= 1.0).any(axis=1)
    cls = ratio[:, 1:].argmax(axis=1) + 1
    agg = AlertAggregator.for_model(period_s, min_windows)
    alerts = []
    hits = np.flatnonzero(over)
    for j in hits[np.argsort(ws.end_us[hits], kind="stable")].tolist():
        c = classes[int(cls[j])]
        count = agg.offer((ws.src[j], c), int(ws.end_us[j]))
        if count is not None:
            alerts.append({"window": j, "class": c, "count": count, "truth": ws.family[j]})
    return alerts


def calibrate(ws: WindowSet, probs: np.ndarray, classes: list[str], *, target_per_hour: float,
              period_s: float, floor: float, cap: float = 0.9999,
              min_windows: int = DEFAULT_MIN_WINDOWS) -> tuple[dict, dict]:
    """Per-class thresholds: the lowest value (>= floor) at which benign validation windows
    raise no more than the class's share of target_per_hour * hours aggregated alerts.

    When validation holds too few benign hours to allow even one false alert per class, the
    threshold goes just above the highest benign validation score of the class: counting
    aggregated alerts on minutes of benign traffic says little about an hour of it, while no
    benign window over threshold at all is the margin that carries to unseen benign runs."""
    hours = max(ws.hours, 1e-9)
    k_classes = len(classes) - 1
    allowed = int(np.floor(target_per_hour * hours / max(1, k_classes)))
    benign = np.flatnonzero(ws.family == BENIGN)
    thresholds: dict[str, float] = {}
    info: dict[str, Any] = {"benign_hours": hours, "allowed_false_alerts_per_class": allowed}
    for ci, c in enumerate(classes[1:], start=1):
        s = probs[benign, ci]
        cand = np.unique(s[s >= floor])[::-1]  # descending
        thr = floor
        if len(cand):
            thr = float(min(cap, cand[0] + 1e-6))
            sub = ws.subset(benign)
            for t in (cand[:400] if allowed > 0 else ()):
                t_hi = float(t)
                th = {cc: 2.0 for cc in classes[1:]}
                th[c] = t_hi
                n_alerts = len(simulate_alerts(sub, probs[benign], classes, th, period_s,
                                               min_windows))
                if n_alerts > allowed:
                    break
                thr = t_hi
            thr = max(floor, min(cap, thr))
        thresholds[c] = round(float(thr), 6)
        info[c] = {"benign_max": float(s.max()) if len(s) else 0.0, "threshold": thresholds[c]}
    return thresholds, info


# ----------------------------------------------------------------------------- evaluation

def evaluate(ws: WindowSet, probs: np.ndarray, classes: list[str], thresholds: dict[str, float],
             period_s: float, min_windows: int = DEFAULT_MIN_WINDOWS) -> dict:
    """Window confusion matrix, per-instance detection, false alerts per benign hour."""
    thr = np.array([2.0] + [thresholds[c] for c in classes[1:]], dtype=np.float32)
    ratio = probs / thr[None, :]
    over = (ratio[:, 1:] >= 1.0).any(axis=1)
    pred = np.where(over, ratio[:, 1:].argmax(axis=1) + 1, 0)
    truths = [BENIGN] + sorted({f for f in ws.family.tolist() if f != BENIGN})
    cm = np.zeros((len(truths), len(classes)), dtype=np.int64)
    ti = {t: i for i, t in enumerate(truths)}
    np.add.at(cm, (np.array([ti[f] for f in ws.family], dtype=np.int64), pred), 1)
    per_family: dict[str, dict] = {}
    inst_rows = []
    # detected: an alert was raised on one of its windows, or it had enough windows over
    # threshold to raise one (min_windows) while an earlier alert of that source and class
    # was still covering the period (aggregation suppressed it, the alert stands for it)
    alerts = simulate_alerts(ws, probs, classes, thresholds, period_s, min_windows)
    alerted_inst = {int(ws.inst[a["window"]]) for a in alerts if ws.inst[a["window"]] >= 0}
    for k, inst in enumerate(ws.instances):
        wins = np.flatnonzero(ws.inst == k)
        det = k in alerted_inst or int(over[wins].sum()) >= min_windows
        right = bool((pred[wins] == (classes.index(inst["family"])
                                     if inst["family"] in classes else -1)).any())
        inst_rows.append({**inst, "windows": int(len(wins)), "detected": det,
                          "right_class": right,
                          "max_score": float(probs[wins, 1:].max()) if len(wins) else 0.0})
        pf = per_family.setdefault(inst["family"], {"instances": 0, "detected": 0,
                                                    "right_class": 0, "no_windows": 0})
        pf["instances"] += 1
        pf["detected"] += det
        pf["right_class"] += right
        pf["no_windows"] += not len(wins)
    for pf in per_family.values():
        pf["recall"] = pf["detected"] / pf["instances"]
    false_alerts = [a for a in alerts if a["truth"] == BENIGN]
    benign = ws.family == BENIGN
    hours = ws.hours
    n_inst = len(ws.instances)
    return {
        "windows": int(len(ws)), "benign_windows": int(benign.sum()),
        "hours": hours, "benign_windows_per_hour": float(benign.sum() / hours) if hours else 0.0,
        "false_windows": int((over & benign).sum()),
        "false_alerts": len(false_alerts),
        "false_alerts_per_hour": len(false_alerts) / hours if hours else 0.0,
        "false_alert_classes": sorted({a["class"] for a in false_alerts}),
        "alerts": len(alerts),
        "instances": n_inst,
        "instances_detected": sum(r["detected"] for r in inst_rows),
        "instance_recall": (sum(r["detected"] for r in inst_rows) / n_inst) if n_inst else 0.0,
        "per_family": per_family, "instances_detail": inst_rows,
        "confusion": {"rows": truths, "cols": list(classes), "matrix": cm.tolist()},
        "attack_window_recall": float(over[~benign].mean()) if (~benign).any() else 0.0,
    }


# ----------------------------------------------------------------------------- export

def write_onnx(module, path: str, n: int, m: int, outputs: dict[str, dict[int, str]],
               meta: dict[str, str], producer: str, doc: str) -> None:
    """Trace `module(image, sequence)` to ONNX (dynamic batch and packet axes), replace its
    metadata with `meta` (the sensor's model contract), check it, and move it into place
    atomically: the one export path of the classifier (`train`) and the baseline (`learn`)."""
    import warnings

    import onnx
    import torch

    img = torch.zeros(2, n, m)
    seq = torch.zeros(2, n, features.N_SEQ)
    seq[:, :3, 0] = 1.0
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (img, seq), tmp, input_names=["image", "sequence"],
                          output_names=list(outputs), opset_version=OPSET, dynamo=False,
                          dynamic_axes={"image": {0: "batch", 1: "packets"},
                                        "sequence": {0: "batch", 1: "packets"},
                                        **outputs})
    mp = onnx.load(tmp)
    del mp.metadata_props[:]
    for k, v in meta.items():
        p = mp.metadata_props.add()
        p.key, p.value = k, v
    mp.producer_name = producer
    mp.doc_string = doc
    onnx.checker.check_model(mp)
    onnx.save(mp, tmp)
    os.replace(tmp, path)


def export_onnx(model, path: str, n: int, m: int, meta: dict[str, str]) -> None:
    """The classifier as ONNX with output `probs` [batch, classes] + contract metadata."""
    write_onnx(_Softmax.wrap(model).eval(), path, n, m, {"probs": {0: "batch"}}, meta,
               "netsensor-train", "netsensor CNN-LSTM window classifier; contract in "
               "metadata_props")


def check_onnx(path: str, model, ws: WindowSet, limit: int = 1024) -> float:
    """Max |ONNX - PyTorch| over up to `limit` windows and odd batch sizes (1 and 7)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    k = min(limit, len(ws))
    ref = torch_probs(model, ws.image[:k], ws.seq[:k])
    img = features.scale_bytes(ws.image[:k])
    diff = 0.0
    for bs in (1, 7, 256):
        outs = [sess.run(None, {"image": img[lo:lo + bs], "sequence": ws.seq[lo:lo + bs]})[0]
                for lo in range(0, min(k, bs * 8 if bs < 256 else k), bs)]
        got = np.concatenate(outs)
        diff = max(diff, float(np.abs(got - ref[:len(got)]).max()))
    return diff


# ----------------------------------------------------------------------------- model card

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _save_plot(fig, outdir: str, name: str) -> str:
    """Lay out, write (outdir/name, 90 dpi) and close a card plot; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_plots(outdir: str, res: dict, classes: list[str], test: WindowSet,
                probs: np.ndarray, thresholds: dict[str, float], history: list[dict]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    cm = np.array(res["confusion"]["matrix"], dtype=np.float64)
    rows, cols = res["confusion"]["rows"], res["confusion"]["cols"]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted (at thresholds)")
    ax.set_ylabel("true")
    ax.set_title("Test windows: confusion matrix")
    made.append(_save_plot(fig, outdir, "confusion.png"))

    k = len(classes) - 1
    fig, axes = plt.subplots(2, (k + 1) // 2, figsize=(3.2 * ((k + 1) // 2), 5.5), squeeze=False)
    for ci, c in enumerate(classes[1:], start=1):
        ax = axes[(ci - 1) % 2][(ci - 1) // 2]
        bins = np.linspace(0, 1, 41)
        ax.hist(probs[test.family == BENIGN, ci], bins=bins, alpha=0.6, label="benign",
                log=True)
        ax.hist(probs[test.family == c, ci], bins=bins, alpha=0.6, label=c, log=True)
        ax.axvline(thresholds[c], color="red", lw=1)
        ax.set_title(c, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Test windows: class score, benign vs class (red: threshold)")
    made.append(_save_plot(fig, outdir, "scores.png"))

    if history:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ep = [h["epoch"] for h in history]
        ax.plot(ep, [h["train_loss"] for h in history], label="train loss")
        if "val_loss" in history[0]:
            ax.plot(ep, [h["val_loss"] for h in history], label="val loss")
            ax.plot(ep, [h["val_balanced_acc"] for h in history], label="val balanced acc")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        made.append(_save_plot(fig, outdir, "training.png"))
    return made


def _split_table(name: str, ws: WindowSet) -> list[str]:
    out = []
    for c in ws.captures:
        out.append(f"| {name} | `{c['path']}` | {c['packets']} | {c['seconds']:.0f} | "
                   f"{c['windows']} | {c['attacks']} |")
    return out


def write_card(path: str, *, command: str, classes: list[str], thresholds: dict[str, float],
               calib: dict, splits: dict[str, WindowSet], res: dict, val_res: dict,
               info: dict, onnx_path: str, onnx_diff: float, plots: list[str],
               extra_sections: list[str]) -> None:
    w = []
    w.append(f"# Model card: {MODEL_NAME} {info['model_version']}\n")
    w.append("CNN-LSTM classifier of per-flow time windows; the sensor runs it with "
             "onnxruntime (`sensor/detect/model.py`) and raises EVE alerts "
             "(gid 9000, `NETSENSOR ML <class> pattern`).\n")
    w.append("## Files and contract\n")
    w.append(f"- `{os.path.relpath(onnx_path, os.path.dirname(path) or '.')}`: "
             f"{os.path.getsize(onnx_path)} bytes, {info['params']} parameters, ONNX opset "
             f"{OPSET}, dynamic batch.")
    w.append(f"- Feature spec `{features.FEATURE_SPEC}` (`sensor/features.py`): inputs "
             f"`image` [batch, {info['n']}, {info['m']}] (first {info['m']} bytes of each of "
             f"the first {info['n']} IP packets, host fields masked, /255) and `sequence` "
             f"[batch, {info['n']}, {features.N_SEQ}] ({', '.join(features.SEQ_FEATURES)}); "
             f"output `probs` [batch, {len(classes)}].")
    w.append(f"- Windows: {info['n']} packets or {info['seconds']:g} s per flow window "
             "(the sensor's `windows` config must match; it refuses the model otherwise).")
    w.append(f"- Classes: {', '.join(classes)}.")
    w.append(f"- ONNX vs PyTorch max abs difference on validation windows: {onnx_diff:.2e} "
             f"(required < {ONNX_TOLERANCE:g}).")
    w.append("- All of this (classes, thresholds, window geometry, data summary, metrics) is "
             "also in the ONNX `metadata_props` under `netsensor.*`.\n")
    w.append("## Regenerate\n")
    w.append("```sh\n" + command + "\n```\n")
    w.append(f"Fixed seed {info['seed']}; PyTorch {info['torch']} on CPU. "
             f"Training took {info['train_seconds']:.0f} s.\n")
    w.append("## Data and splits\n")
    w.append("Captures from the traffic lab (`pcaps/lab/generate.py`: real nginx, dnsmasq, "
             "sshd, iperf3 clients; nmap, hping3, slowhttptest, hydra, dig tunnelling, nc "
             "exfil as attacks), each run with its own seed. A window is labelled with an "
             "attack family when its flow's endpoints are the label row's attacker and victim "
             "and it overlaps the attack slot; all other windows are benign.\n")
    if info.get("left_out"):
        w.append(f"Left out of training and validation: {', '.join(info['left_out'])} "
                 "(`--leave-out`): their windows are dropped, the model has no such class, "
                 "and the test tables below still count their instances (as missed unless "
                 "another class flags them). Why: see docs/model.md.\n")
    w.append("| split | capture | packets | seconds | windows | attacks |")
    w.append("|---|---|---|---|---|---|")
    for name, ws in splits.items():
        w += _split_table(name, ws)
    w.append("")
    w.append("Windows per class:\n")
    w.append("| split | " + " | ".join(classes) + " |")
    w.append("|---|" + "---|" * len(classes))
    for name, ws in splits.items():
        w.append(f"| {name} | " + " | ".join(str(int((ws.family == c).sum())) for c in classes)
                 + " |")
    w.append("")
    w.append("## Thresholds (calibrated on validation)\n")
    w.append(f"Target: at most {info['target_fa']:g} false alert per hour of benign traffic "
             f"after aggregation (one alert per source, class and {info['period']:g} s, raised "
             f"once {info['min_windows']} windows of that source and class crossed the "
             f"threshold within the period). "
             f"Validation covers {calib['benign_hours'] * 60:.1f} benign minutes, so each class "
             f"may raise {calib['allowed_false_alerts_per_class']} false alerts there: the "
             f"threshold is set just above the highest benign validation score (never below "
             f"{info['floor']:g}).\n")
    w.append("| class | threshold | max benign val score |")
    w.append("|---|---|---|")
    for c in classes[1:]:
        w.append(f"| {c} | {thresholds[c]:.4f} | {calib[c]['benign_max']:.4f} |")
    w.append("")
    for title, r in (("Test (held out)", res), ("Validation", val_res)):
        w.append(f"## Results: {title.lower()}\n")
        w.append(f"- Attack instances detected (a model alert on a window of the instance, or "
                 f"{info['min_windows']}+ windows over threshold while an earlier alert of that "
                 f"source and class covered the period): "
                 f"**{r['instances_detected']}/{r['instances']} = {_pct(r['instance_recall'])}**.")
        w.append(f"- False alerts on benign traffic: **{r['false_alerts']} in "
                 f"{r['hours'] * 60:.1f} min = {r['false_alerts_per_hour']:.2f}/hour** "
                 f"({r['false_windows']} benign windows over threshold of "
                 f"{r['benign_windows']}; {r['benign_windows_per_hour']:.0f} benign "
                 f"windows/hour).")
        w.append(f"- Attack windows over threshold: {_pct(r['attack_window_recall'])}.\n")
        w.append("| family | instances | detected | recall | right class |")
        w.append("|---|---|---|---|---|")
        for fam, pf in sorted(r["per_family"].items()):
            w.append(f"| {fam} | {pf['instances']} | {pf['detected']} | {_pct(pf['recall'])} | "
                     f"{pf['right_class']} |")
        w.append("")
        if title.startswith("Test"):
            missed = [d for d in r["instances_detail"] if not d["detected"]]
            if missed:
                w.append("Missed instances: " + "; ".join(
                    f"{d['capture']} {d['name']} ({d['windows']} windows, max score "
                    f"{d['max_score']:.3f})" for d in missed) + ".\n")
            cm = r["confusion"]
            w.append("Confusion matrix (test windows; rows true, columns predicted at "
                     "thresholds):\n")
            w.append("| true \\ pred | " + " | ".join(cm["cols"]) + " |")
            w.append("|---|" + "---|" * len(cm["cols"]))
            for name, row in zip(cm["rows"], cm["matrix"], strict=True):
                w.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
            w.append("")
    w += extra_sections
    if plots:
        w.append("## Plots\n")
        for p in plots:
            rel = os.path.relpath(p, os.path.dirname(path) or ".")
            w.append(f"![{os.path.basename(p)}]({rel})")
        w.append("")
    w.append("## Limits\n")
    w.append("- Trained and tested on one lab topology (one server, a few clients, two "
             "attackers); real networks carry far more diverse benign traffic, so expect more "
             "false alerts there and recalibrate thresholds on local benign traffic.")
    w.append("- The model sees one flow's window at a time: behaviour spread thinly across "
             "many flows (slow scans) is left to rules and flow statistics.")
    w.append("- The results sections count the model alone; \"Model and rules together\" "
             "counts what the sensor raises with the shipped rules as well.")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(w) + "\n")


# ----------------------------------------------------------------------------- command

def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register `netsensor train` on an argparse subparsers object."""
    t = subparsers.add_parser("train", help="train the CNN-LSTM on labelled pcaps, export ONNX",
                              description=__doc__.split("\n\n")[0])
    t.add_argument("--train", nargs="+", required=True, metavar="PCAP[:LABELS]")
    t.add_argument("--val", nargs="+", required=True, metavar="PCAP[:LABELS]")
    t.add_argument("--test", nargs="*", default=[], metavar="PCAP[:LABELS]")
    t.add_argument("-o", "--output", default=DEFAULT_OUT, help=f"ONNX path ({DEFAULT_OUT})")
    t.add_argument("--card", default=None, help="model card path (default: README.md beside "
                                                "the ONNX file; 'none' to skip)")
    t.add_argument("-c", "--config", help="YAML config whose `windows` section cuts windows")
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--time-jitter", type=float, default=3.0,
                   help="augmentation: scale window timing by up to this factor (1: off)")
    t.add_argument("--rtt-ms", default="0", metavar="LO:HI",
                   help="augmentation: round trips added to a share of the windows, "
                        "log-uniform in LO..HI ms, e.g. 0.2:300 (default 0: off; see "
                        "docs/model.md for what it did)")
    t.add_argument("--rtt-share", type=float, default=0.5,
                   help="share of training windows that get a round trip")
    t.add_argument("--strip-ts", type=float, default=0.0,
                   help="augmentation: share of training windows shown without TCP "
                        "timestamp options, as Windows stacks send (default 0: off)")
    t.add_argument("--target-fa-per-hour", type=float, default=1.0)
    t.add_argument("--min-threshold", type=float, default=0.9,
                   help="no class threshold below this (0.9: a window must be clearly one "
                        "attack class; benign traffic unlike the lab's, e.g. IPv6 or other "
                        "link types, scored 0.5-0.8 in checks, see docs/model.md)")
    t.add_argument("--aggregate-seconds", type=float, default=60.0)
    t.add_argument("--min-windows", type=int, default=DEFAULT_MIN_WINDOWS,
                   help="windows over threshold per source and class before the first alert "
                        "(the sensor's model.min_windows; calibration and results use it)")
    t.add_argument("--leave-out", default="", metavar="FAMILY[,FAMILY]",
                   help="drop these families' windows from train/val: leave-one-family-out "
                        "runs, or a family the model cannot tell from benign traffic (the "
                        "shipped recipe leaves out exfil, see docs/model.md)")
    t.add_argument("--model-version", default="1.0")
    t.add_argument("--no-plots", action="store_true")
    t.add_argument("--report-json", default=None, help="also write all metrics as JSON here")
    t.set_defaults(fn=cmd_train)
    return t


def parse_rtt(spec: str) -> tuple[float, float] | None:
    """`--rtt-ms LO:HI` (or 0: off) as microseconds; None when it is neither."""
    if spec.strip() == "0":
        return (0.0, 0.0)
    try:
        lo, hi = (float(x) for x in spec.split(":"))
    except ValueError:
        return None
    return (lo * 1000.0, hi * 1000.0) if 0 < lo <= hi else None


def log_stderr(msg: str) -> None:
    """Progress of `train`/`learn`: stderr, flushed, so stdout keeps only the results."""
    print(msg, file=sys.stderr, flush=True)


def start_command(name: str, config_path: str | None, specs: list[str]) -> Config | None:
    """The checks `train` and `learn` make before any work: PyTorch importable, the config
    loads, every capture exists. On a user mistake prints one line and returns None (exit 2)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"netsensor: {name} needs PyTorch: pip install 'netsensor[train]'",
              file=sys.stderr)
        return None
    from .config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"netsensor: {exc}", file=sys.stderr)
        return None
    for spec in specs:
        pcap = parse_capture(spec)[0]
        if not os.path.isfile(pcap):
            print(f"netsensor: {pcap}: no such file", file=sys.stderr)
            return None
    return cfg


def sensor_accepts(path: str, wcfg: WindowConfig) -> bool:
    """Whether the sensor's own loader takes the model just written (else says why)."""
    from .detect.model import ModelError, load_model

    try:
        load_model(path, 1, wcfg)
    except ModelError as exc:
        print(f"netsensor: {exc}", file=sys.stderr)
        return False
    return True


def cmd_train(args: argparse.Namespace) -> int:
    cfg = start_command("train", args.config, [*args.train, *args.val, *args.test])
    if cfg is None:
        return 2
    rtt_us = parse_rtt(args.rtt_ms)
    if rtt_us is None:
        print(f"netsensor: --rtt-ms {args.rtt_ms}: expected LO:HI in ms with 0 < LO <= HI, "
              "or 0", file=sys.stderr)
        return 2
    import torch

    log = log_stderr
    wcfg = dataclasses.replace(cfg.windows, enabled=True)
    t_start = time.monotonic()
    log("train:")
    tr = load_split(args.train, wcfg, log)
    log("val:")
    va = load_split(args.val, wcfg, log)
    te = None
    if args.test:
        log("test:")
        te = load_split(args.test, wcfg, log)
    left_out = [f for f in args.leave_out.split(",") if f]
    unknown = sorted(set(left_out) - set(tr.family.tolist()) - set(va.family.tolist()))
    if unknown or BENIGN in left_out:
        print(f"netsensor: --leave-out {','.join(unknown or [BENIGN])}: not an attack family "
              "of the training or validation labels", file=sys.stderr)
        return 2
    if left_out:
        tr = tr.subset(~np.isin(tr.family, left_out))
        va = va.subset(~np.isin(va.family, left_out))
    classes = [BENIGN] + sorted({f for f in tr.family.tolist() if f != BENIGN})
    if len(classes) < 2:
        print("netsensor: the training captures hold no labelled attack windows",
              file=sys.stderr)
        return 2
    log(f"classes: {classes}; training on {len(tr)} windows")
    t_train = time.monotonic()
    model, train_info = train_model(tr, va, classes, epochs=args.epochs, seed=args.seed,
                                    batch=args.batch, lr=args.lr,
                                    time_jitter=args.time_jitter, rtt_us=rtt_us,
                                    rtt_share=args.rtt_share, strip_ts=args.strip_ts, log=log)
    train_seconds = time.monotonic() - t_train
    pv = torch_probs(model, va.image, va.seq)
    thresholds, calib = calibrate(va, pv, classes, target_per_hour=args.target_fa_per_hour,
                                  period_s=args.aggregate_seconds, floor=args.min_threshold,
                                  min_windows=args.min_windows)
    log(f"thresholds: {thresholds}")
    val_res = evaluate(va, pv, classes, thresholds, args.aggregate_seconds, args.min_windows)
    res = None
    pt = None
    if te is not None:
        pt = torch_probs(model, te.image, te.seq)
        res = evaluate(te, pt, classes, thresholds, args.aggregate_seconds, args.min_windows)
        log(f"test: {res['instances_detected']}/{res['instances']} instances detected, "
            f"{res['false_alerts']} false alerts in {res['hours'] * 60:.1f} min "
            f"({res['false_alerts_per_hour']:.2f}/h); per family "
            + ", ".join(f"{k} {v['detected']}/{v['instances']}"
                        for k, v in sorted(res["per_family"].items())))
    n, m = wcfg.packets, wcfg.bytes

    def summary(ws: WindowSet) -> dict:
        fam, cnt = np.unique(ws.family, return_counts=True)
        return {"captures": [os.path.basename(c["path"]) for c in ws.captures],
                "windows": dict(zip(fam.tolist(), cnt.astype(int).tolist(), strict=True)),
                "hours": round(ws.hours, 4)}

    def brief(r: dict | None) -> dict | None:
        if r is None:
            return None
        return {"instance_recall": round(r["instance_recall"], 4),
                "instances": r["instances"], "false_alerts_per_hour":
                round(r["false_alerts_per_hour"], 3),
                "per_family_recall": {k: round(v["recall"], 4)
                                      for k, v in r["per_family"].items()}}

    meta = {
        "netsensor.model_name": MODEL_NAME,
        "netsensor.model_version": args.model_version,
        "netsensor.feature_spec": features.FEATURE_SPEC,
        "netsensor.inputs": json.dumps({"image": ["batch", "packets", m],
                                        "sequence": ["batch", "packets", features.N_SEQ]}),
        "netsensor.outputs": json.dumps({"probs": ["batch", len(classes)]}),
        "netsensor.classes": json.dumps(classes),
        "netsensor.thresholds": json.dumps(thresholds),
        "netsensor.window": json.dumps({"packets": n, "bytes": m, "seconds": wcfg.seconds}),
        "netsensor.training": json.dumps({
            "train": summary(tr), "val": summary(va), "test": summary(te) if te else None,
            "seed": args.seed, "epochs": args.epochs, "time_jitter": args.time_jitter,
            "rtt_ms": args.rtt_ms, "rtt_share": args.rtt_share, "strip_ts": args.strip_ts,
            "leave_out": args.leave_out or None,
            "target_false_alerts_per_hour": args.target_fa_per_hour,
            "aggregate_seconds": args.aggregate_seconds, "min_windows": args.min_windows,
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}),
        "netsensor.metrics": json.dumps({"val": brief(val_res), "test": brief(res)}),
    }
    out = args.output
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    export_onnx(model, out, n, m, meta)
    diff = check_onnx(out, model, va if len(va) else tr)
    log(f"ONNX vs PyTorch max abs diff {diff:.2e}")
    if diff >= ONNX_TOLERANCE:
        os.unlink(out)
        print(f"netsensor: exported ONNX differs from PyTorch by {diff:.2e} "
              f"(>= {ONNX_TOLERANCE:g}); not written", file=sys.stderr)
        return 1
    if not sensor_accepts(out, wcfg):
        return 1
    log(f"wrote {out} ({os.path.getsize(out)} bytes, {count_params(model)} parameters)")
    report = {"classes": classes, "thresholds": thresholds, "calibration": calib,
              "val": val_res, "test": res, "train": train_info,
              "onnx_diff": diff, "params": count_params(model),
              "onnx_bytes": os.path.getsize(out)}
    if args.report_json:
        with open(args.report_json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1, default=str)
    card = args.card if args.card is not None else os.path.join(
        os.path.dirname(out) or ".", "README.md")
    if card != "none" and res is not None:
        outdir = os.path.dirname(card) or "."
        os.makedirs(outdir, exist_ok=True)
        plots = [] if args.no_plots else write_plots(
            outdir, res, classes, te, pt, thresholds, train_info["history"])
        command = _command(args)
        extra = _extra_sections(args)
        write_card(card, command=command, classes=classes, thresholds=thresholds, calib=calib,
                   splits={"train": tr, "val": va, "test": te}, res=res, val_res=val_res,
                   info={"model_version": args.model_version, "params": count_params(model),
                         "n": n, "m": m, "seconds": wcfg.seconds, "seed": args.seed,
                         "torch": torch.__version__, "train_seconds": train_seconds,
                         "target_fa": args.target_fa_per_hour, "period": args.aggregate_seconds,
                         "min_windows": args.min_windows,
                         "floor": args.min_threshold, "left_out": left_out},
                   onnx_path=out, onnx_diff=diff, plots=plots, extra_sections=extra)
        log(f"wrote {card}")
    log(f"done in {time.monotonic() - t_start:.0f}s")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The `netsensor train` command line that reproduces this run."""
    parts = ["netsensor train", "--train", *args.train, "--val", *args.val]
    if args.test:
        parts += ["--test", *args.test]
    parts += ["-o", args.output]
    if args.card is not None:
        parts += ["--card", args.card]
    if args.config:
        parts += ["-c", args.config]
    defaults = {"epochs": 12, "seed": 1, "batch": 256, "lr": 3e-3, "time_jitter": 3.0,
                "rtt_ms": "0", "rtt_share": 0.5, "strip_ts": 0.0,
                "target_fa_per_hour": 1.0,
                "min_threshold": 0.9, "aggregate_seconds": 60.0,
                "min_windows": DEFAULT_MIN_WINDOWS,
                "leave_out": "",
                "model_version": "1.0"}
    for k, d in defaults.items():
        v = getattr(args, k)
        if v != d:
            parts += [f"--{k.replace('_', '-')}", str(v)]
    return " \\\n    ".join([parts[0], " ".join(_quote(p) for p in parts[1:])])


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w./:=@+-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def _extra_sections(args: argparse.Namespace) -> list[str]:
    """Sections kept beside the card, written by their own runs: model and rules together on
    the test split (models/eval_test.py; inlined, it is the card's headline figure),
    leave-one-family-out results (models/lofo.py) and the site baseline (`netsensor learn
    --card-section`), linked."""
    out = []
    here = os.path.dirname(args.output) or "."
    together = os.path.join(here, "eval.md")
    if os.path.isfile(together):
        with open(together, encoding="utf-8") as fh:
            out.append(fh.read().rstrip("\n") + "\n")
    for name, title, how in (
            ("lofo.md", "Leave-one-family-out", "`python models/lofo.py`"),
            ("baseline.md", "Site baseline", "`netsensor learn ... --card-section`")):
        path = os.path.join(here, name)
        if os.path.isfile(path):
            out.append(f"## {title}\n\nSee [{name}]({name}) (written by {how}).\n")
    return out


def run_subcommand(name: str, add_parser, argv: list[str] | None) -> int:
    """`python -m sensor.<name> ARGS` = `netsensor <name> ARGS` (same parser, same exit)."""
    p = argparse.ArgumentParser(prog="netsensor")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = p.parse_args([name, *(sys.argv[1:] if argv is None else argv)])
    return int(args.fn(args))


def main(argv: list[str] | None = None) -> int:
    return run_subcommand("train", add_train_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
