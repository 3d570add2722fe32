"""The CNN-LSTM window scorer: onnxruntime, contract checks, per-flow verdicts, EVE alerts.

`ModelStage` is a pipeline stage that owns a `WindowStage`: flows are cut into windows, the
windows closed while one batch is processed are turned into features (`sensor.features`)
and scored together in one onnxruntime call. Per flow it keeps the highest attack score and
its class in flow-table columns, written on the flow event under the top-level `metadata`
object (`flowvars` / `flowints`, where Suricata logs flow variables). A window whose class
probability reaches that class's threshold raises an EVE `alert`; alerts are aggregated to
one per (source address, class) and period (see `AlertAggregator`).

The model carries its contract in the ONNX metadata (written by `sensor.train`): feature
spec, input names and shapes, classes, thresholds, window geometry. `load_model()` checks it
against this sensor's feature spec and window config and raises `ModelError` with a one-line
reason when anything differs; a missing or broken model is never silently skipped.

This module needs numpy and onnxruntime only; PyTorch is a training-time extra.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import features
from ..config import Config, WindowConfig
from ..flow import EndedFlows, FlowTable
from ..output.eve import (
    ICMP_PROTOS,
    PORT_PROTOS,
    dumps,
    flow_lines,
    fmt_ts,
    ip_bytes,
    ip_str,
    proto_name,
)
from ..pipeline import BatchContext
from ..windows import FLOW_FIELDS, WindowBatch, WindowStage, concat_windows

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "netsensor-cnnlstm.onnx"
INPUT_NAMES = ("image", "sequence")
META_PREFIX = "netsensor."
REQUIRED_META = ("feature_spec", "inputs", "classes", "thresholds", "window", "model_name",
                 "model_version")

GID = 9000  # reserved for netsensor ML alerts
BASELINE_SID = 9000200  # + index of the baseline in model.baselines
BASELINE_SIGNATURE = "NETSENSOR ML anomalous flow (site baseline)"
KINDS = ("classifier", "baseline")
# stable sids for the lab's families; any other class gets 9000100 + its index
CLASS_SIDS = {"port-scan": 9000001, "flood": 9000002, "slow-dos": 9000003,
              "brute-force": 9000004, "dns-tunnel": 9000005, "exfil": 9000006}
# (category as in Suricata's classification.config, severity)
CLASS_CATEGORY = {
    "port-scan": ("Detection of a Network Scan", 3),
    "flood": ("Attempted Denial of Service", 2),
    "slow-dos": ("Attempted Denial of Service", 2),
    "brute-force": ("Attempted User Privilege Gain", 1),
    "dns-tunnel": ("Potentially Bad Traffic", 2),
    "exfil": ("Potential Corporate Privacy Violation", 1),
}


class ModelError(Exception):
    """The model cannot be used; the message says which file and what differs."""


@dataclass(frozen=True)
class ModelContract:
    """What a model file promises about its inputs and outputs (from its ONNX metadata)."""

    name: str
    version: str
    feature_spec: str
    classes: tuple[str, ...]
    thresholds: dict[str, float]
    packets: int
    bytes: int
    seconds: float
    meta: dict[str, str]
    kind: str = "classifier"  # or "baseline" (`netsensor learn`: one anomaly score)

    def sid(self, cls: str) -> int:
        return CLASS_SIDS.get(cls, 9000100 + self.classes.index(cls))


def _loads(meta: dict[str, str], key: str, where: str) -> Any:
    try:
        return json.loads(meta[META_PREFIX + key])
    except (ValueError, TypeError):
        raise ModelError(f"{where}: metadata '{META_PREFIX}{key}' is not valid JSON") from None


def load_model(path: str | os.PathLike, threads: int = 1,
               window: WindowConfig | None = None) -> tuple[Any, ModelContract]:
    """Open an ONNX model and check its contract; ModelError on any mismatch."""
    where = f"model {path}"
    if not os.path.isfile(path):
        raise ModelError(f"{where}: no such file")
    import onnxruntime as ort  # noqa: PLC0415 - heavy import only when a model is used

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{where}: not a loadable ONNX model ({first[:160]})") from None
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    missing = [k for k in REQUIRED_META if META_PREFIX + k not in meta]
    if missing:
        raise ModelError(f"{where}: not a netsensor model, metadata lacks "
                         f"{', '.join(META_PREFIX + k for k in missing)}")
    kind = meta.get(META_PREFIX + "kind", "classifier")
    if kind not in KINDS:
        raise ModelError(f"{where}: unknown model kind {kind!r} (expected one of {KINDS})")
    spec = meta[META_PREFIX + "feature_spec"]
    if spec != features.FEATURE_SPEC:
        raise ModelError(f"{where}: trained for feature spec {spec!r}, this sensor computes "
                         f"{features.FEATURE_SPEC!r}; retrain or use a matching sensor")
    classes = _loads(meta, "classes", where)
    thresholds = _loads(meta, "thresholds", where)
    win = _loads(meta, "window", where)
    declared = _loads(meta, "inputs", where)
    if (not isinstance(classes, list) or len(classes) < 2 or classes[0] != "benign"
            or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes)):
        raise ModelError(f"{where}: classes must be a list starting with 'benign', "
                         f"got {classes!r}")
    if kind == "baseline":
        if classes != ["benign", "anomalous"] or not isinstance(thresholds, dict) or set(
                thresholds) != {"anomalous"} or not isinstance(thresholds["anomalous"],
                                                              int | float) \
                or not 0 < thresholds["anomalous"] < float("inf"):
            raise ModelError(f"{where}: a baseline needs classes ['benign', 'anomalous'] and "
                             f"a positive 'anomalous' threshold, got {classes!r}, "
                             f"{thresholds!r}")
    elif not isinstance(thresholds, dict) or set(thresholds) != set(classes[1:]) or not all(
            isinstance(v, int | float) and 0 < v <= 1 for v in thresholds.values()):
        raise ModelError(f"{where}: thresholds must give each attack class a value in (0, 1], "
                         f"got {thresholds!r}")
    try:
        n, m, secs = int(win["packets"]), int(win["bytes"]), float(win["seconds"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{where}: metadata window must hold packets, bytes, seconds") from None
    # the packet axis is dynamic ("packets", at most window.packets): the sensor trims
    # trailing padding, which leaves the outputs unchanged (see sensor.train.make_model)
    want = {"image": m, "sequence": features.N_SEQ}
    got_inputs = {i.name: i.shape for i in sess.get_inputs()}
    if sorted(got_inputs) != sorted(INPUT_NAMES):
        raise ModelError(f"{where}: inputs are {sorted(got_inputs)}, expected "
                         f"{list(INPUT_NAMES)}")
    for name in INPUT_NAMES:
        shape = got_inputs[name]
        if (len(shape) != 3 or shape[2] != want[name] or isinstance(shape[0], int)
                or isinstance(shape[1], int)):
            raise ModelError(f"{where}: input '{name}' has shape {shape}, this sensor feeds "
                             f"[batch, packets<={n}, {want[name]}]")
        if declared.get(name) != ["batch", "packets", want[name]]:
            raise ModelError(f"{where}: metadata declares input '{name}' as "
                             f"{declared.get(name)}, the graph has {shape}")
    outs = sess.get_outputs()
    if kind == "baseline":
        if len(outs) != 2 or len(outs[0].shape) != 1 or len(outs[1].shape) != 2:
            raise ModelError(f"{where}: a baseline outputs score [batch] and packet_error "
                             f"[batch, packets], this graph has {[o.shape for o in outs]}")
    elif len(outs) != 1 or len(outs[0].shape) != 2 or outs[0].shape[1] != len(classes):
        raise ModelError(f"{where}: output shape {[o.shape for o in outs]} does not match "
                         f"{len(classes)} classes")
    contract = ModelContract(
        name=meta[META_PREFIX + "model_name"], version=meta[META_PREFIX + "model_version"],
        feature_spec=spec, classes=tuple(classes),
        thresholds={k: float(v) for k, v in thresholds.items()},
        packets=n, bytes=m, seconds=secs, meta=meta, kind=kind)
    if window is not None:
        check_window(contract, window, where)
    return sess, contract


def check_window(contract: ModelContract, window: WindowConfig, where: str = "model") -> None:
    """The running window config must cut windows the way the training data was cut."""
    diffs = []
    if window.packets != contract.packets:
        diffs.append(f"packets {window.packets} (model: {contract.packets})")
    if window.bytes != contract.bytes:
        diffs.append(f"bytes {window.bytes} (model: {contract.bytes})")
    if abs(window.seconds - contract.seconds) > 1e-9:
        diffs.append(f"seconds {window.seconds:g} (model: {contract.seconds:g})")
    if diffs:
        raise ModelError(f"{where}: config windows differ from the model's training windows: "
                         + ", ".join(diffs))


class AlertAggregator:
    """One alert per (source, class) per period; windows in between are counted, not logged.

    Evidence first: a key raises its first alert once `min_windows` of its windows crossed
    the threshold within one period (attacks are many windows: a scan probes many ports, a
    flood or an upload fills many windows; a lone odd benign packet is one window). With
    min_windows 1 the first window over threshold alerts at once. Further windows within
    `period_us` of that alert are suppressed and counted; the next window after the period
    raises the next alert, whose count covers itself plus every window suppressed since the
    previous alert. So a 10,000-port scan lasting two minutes gives about three alerts, the
    later ones saying how many windows they stand for.

    Episodes: when a key had no window over threshold for `quiet_us` (0: never), its next
    window starts a new episode, which alerts again (after `min_windows` windows) even inside
    the period. A scan that follows another from the same source seconds after it ended is a
    new attack to the analyst, not more of the old one; a running attack has no such gap.
    """

    def __init__(self, period_us: int, max_keys: int = 65536, min_windows: int = 1,
                 quiet_us: int = 0):
        self.period_us = int(period_us)
        self.max_keys = max_keys
        self.min_windows = max(1, int(min_windows))
        self.quiet_us = max(0, int(quiet_us))
        # key -> [last alert ts (or None), suppressed since, first pending ts, pending count,
        #         last window ts]
        self.state: dict[tuple, list] = {}

    @classmethod
    def for_model(cls, period_s: float, min_windows: int,
                  quiet_s: float | None = None) -> AlertAggregator:
        """The sensor's aggregation with these settings (quiet gap: the model config's
        default unless given), as training and evaluation simulate it."""
        from ..config import ModelConfig

        quiet = ModelConfig().aggregate_quiet_seconds if quiet_s is None else quiet_s
        return cls(int(period_s * 1_000_000), min_windows=min_windows,
                   quiet_us=int(quiet * 1_000_000))

    def offer(self, key: tuple, ts_us: int) -> int | None:
        """Count to report when this window raises an alert, None when it is suppressed."""
        st = self.state.get(key)
        if st is None:
            if len(self.state) >= self.max_keys:
                self._prune(ts_us)
            st = self.state[key] = [None, 0, ts_us, 0, ts_us]
        if self.quiet_us > 0 and ts_us - st[4] >= self.quiet_us:
            st[0] = None  # a new episode: the last alert's period no longer covers it
        st[4] = max(st[4], ts_us)
        if st[0] is not None and ts_us - st[0] < self.period_us and self.period_us > 0:
            st[1] += 1
            return None
        if st[3] and ts_us - st[2] >= self.period_us:  # stale evidence
            st[3] = 0
        if not st[3]:
            st[2] = ts_us
        st[3] += 1
        if st[3] < self.min_windows:
            return None
        count = st[1] + st[3]
        st[0], st[1], st[3] = ts_us, 0, 0
        return count

    def offer_many(self, key: tuple, ts_us: np.ndarray) -> tuple[list[int], list[int], int]:
        """`offer` for each of one key's windows in time order: (positions that raise an
        alert, their counts, windows suppressed). Windows inside a running period are
        skipped in one step, so a flood's thousands of windows cost a few Python steps."""
        pos, counts = [], []
        suppressed = 0
        i, n = 0, len(ts_us)
        while i < n:
            st = self.state.get(key)
            t = int(ts_us[i])
            if st is not None and st[0] is not None and self.period_us > 0 \
                    and t - st[0] < self.period_us \
                    and not (self.quiet_us > 0 and t - st[4] >= self.quiet_us):
                j = int(np.searchsorted(ts_us, st[0] + self.period_us, side="left"))
                if self.quiet_us > 0 and j - i > 1:  # an episode ends at a quiet gap
                    gap = np.flatnonzero(np.diff(ts_us[i:j]) >= self.quiet_us)
                    if len(gap):
                        j = i + int(gap[0]) + 1
                st[1] += j - i
                st[4] = max(st[4], int(ts_us[j - 1]))
                suppressed += j - i
                i = j
                continue
            count = self.offer(key, t)
            if count is not None:
                pos.append(i)
                counts.append(count)
            i += 1
        return pos, counts, suppressed

    def _prune(self, now_us: int) -> None:
        def idle(st: list) -> bool:
            last = st[0] if st[0] is not None else st[2]
            return now_us - last >= self.period_us and not st[1]

        for k in [k for k, st in self.state.items() if idle(st)]:
            del self.state[k]
        if len(self.state) >= self.max_keys:  # still full: forget the oldest quarter
            def age(k):
                st = self.state[k]
                return st[0] if st[0] is not None else st[2]
            for k in sorted(self.state, key=age)[: self.max_keys // 4]:
                del self.state[k]


def predict_session(sess: Any, image: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """One onnxruntime call: probabilities [B, C]."""
    return sess.run(None, {"image": np.ascontiguousarray(image, dtype=np.float32),
                           "sequence": np.ascontiguousarray(seq, dtype=np.float32)})[0]


def update_flow_verdicts(cols: dict[str, np.ndarray], rows: np.ndarray, score: np.ndarray,
                         over: np.ndarray, alert_cls: np.ndarray, top: np.ndarray) -> None:
    """Fold windows into their flows' ml_* columns (row -1: flow gone), for all windows at
    once, exactly as applying them one by one in order would: a flow's first window or a
    strictly higher score sets ml_score; ml_class follows the highest window until the flow
    first goes over a threshold (then that window's class), after which only higher windows
    that are over a threshold change it."""
    ok = np.flatnonzero(rows >= 0)
    if not len(ok):
        return
    order = ok[np.argsort(rows[ok], kind="stable")]
    r, s, ov = rows[order], score[order].astype(np.float32), over[order].astype(bool)
    m = len(order)
    first = np.r_[True, r[1:] != r[:-1]]
    gstart = np.flatnonzero(first)
    gid = np.cumsum(first) - 1
    pos = np.arange(m) - gstart[gid]
    rg = r[gstart]
    w0, s0 = cols["ml_windows"][rg], cols["ml_score"][rg]
    o0, c0 = cols["ml_over"][rg].astype(bool), cols["ml_class"][rg]
    # running max of the scores within each flow (segmented doubling scan)
    incl = s.copy()
    step, longest = 1, int(pos.max())
    while step <= longest:
        idx = np.flatnonzero(pos >= step)
        nxt = incl.copy()
        nxt[idx] = np.maximum(incl[idx], incl[idx - step])
        incl, step = nxt, step * 2
    base = np.where(w0 > 0, s0, np.float32(-np.inf)).astype(np.float32)[gid]
    before = np.where(pos == 0, base, np.maximum(base, np.r_[np.float32(-np.inf),
                                                             incl[:-1]]))
    newmax = ((pos == 0) & (w0[gid] == 0)) | (s > before)
    big = np.int64(m + 1)
    first_over = np.minimum.reduceat(np.where(ov, pos, big), gstart)
    cand = ov & (newmax | ((pos == first_over[gid]) & ~o0[gid]))
    at = np.arange(m)
    last_cand = np.maximum.reduceat(np.where(cand, at, -1), gstart)
    last_new = np.maximum.reduceat(np.where(newmax, at, -1), gstart)
    over_final = o0 | (first_over < big)
    cls = np.where(last_cand >= 0, alert_cls[order][np.maximum(last_cand, 0)],
                   np.where(~over_final & (last_new >= 0), top[order][np.maximum(last_new, 0)],
                            c0))
    last = np.r_[gstart[1:], m] - 1
    cols["ml_score"][rg] = np.maximum(base[gstart], incl[last])
    cols["ml_class"][rg] = cls
    cols["ml_over"][rg] = over_final
    cols["ml_windows"][rg] = w0 + (last - gstart + 1)


_HASH_WORDS = np.random.default_rng(0x5EED).integers(1, 2**63, size=32 * 64, dtype=np.uint64) | 1


def dedupe_windows(masked: np.ndarray, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(representatives, inverse): the distinct windows of a chunk (same trimmed length), so
    that each is scored once; window i has the features of window reps[inverse[i]], exactly
    (a 64-bit hash groups them, a byte comparison confirms, a collision is scored alone).
    Floods and scans repeat the same window thousands of times."""
    k = len(masked)
    if k < 2:
        return np.arange(k), np.arange(k)
    rows = np.concatenate([masked.reshape(k, -1), seq.reshape(k, -1).view(np.uint8)], axis=1)
    if rows.shape[1] % 8:
        rows = np.pad(rows, ((0, 0), (0, 8 - rows.shape[1] % 8)))
    words = rows.view(np.uint64)
    w = _HASH_WORDS
    while len(w) < words.shape[1]:
        w = np.concatenate([w, _HASH_WORDS])
    with np.errstate(over="ignore"):
        h = (words * w[:words.shape[1]]).sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    same = (words == words[first[inverse]]).all(axis=1)
    if not same.all():  # a hash collision: those windows are scored on their own
        odd = np.flatnonzero(~same)
        inverse = inverse.copy()
        inverse[odd] = len(first) + np.arange(len(odd))
        first = np.concatenate([first, odd])
    return first, inverse


# -- explanation by occlusion ------------------------------------------------------------------

# sequence columns per feature group (sensor.features.SEQ_FEATURES)
SEQ_GROUPS = {
    "timing": ("log_iat", "log_t"),
    "sizes": ("log_size", "log_payload"),
    "tcp_flags": ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"),
    "tcp_window": ("tcp_win",),
    "direction": ("to_server",),
    "protocol": ("tcp", "udp", "icmp", "other_proto"),
}
BYTE_GROUPS = ("ip_header", "transport_header", "payload")


def byte_groups(image: np.ndarray) -> np.ndarray:
    """int8 [P, M]: 0 IP header, 1 transport header, 2 payload (beyond both), per byte of
    each packet's feature-image row (host fields are zero but lengths and protocol remain)."""
    d = np.rint(image * 255.0).astype(np.int32)
    p, m = d.shape
    ver = d[:, 0] >> 4
    l4 = np.where(ver == 6, 40, (d[:, 0] & 0x0F) * 4)
    proto = np.where(ver == 6, d[:, 6] if m > 6 else 0, d[:, 9] if m > 9 else 0)
    doff_at = np.minimum(l4 + 12, m - 1)
    tcp_len = (d[np.arange(p), doff_at] >> 4) * 4
    l4_len = np.where(proto == 6, np.maximum(tcp_len, 20), 8)
    pos = np.arange(m)[None, :]
    out = np.full((p, m), 2, np.int8)
    out[pos < (l4 + l4_len)[:, None]] = 1
    out[pos < l4[:, None]] = 0
    return out


def explain_window(score_fn, image: np.ndarray, seq: np.ndarray, top: int = 3
                   ) -> dict[str, list[str]]:
    """Which packets and feature groups made this window score high, by occlusion.

    `image` [P, M] and `seq` [P, F] are one window trimmed to its packets; `score_fn` maps a
    batch of such windows to the score being explained (a class probability or the anomaly
    score). Each variant blanks one packet (bytes and features, the packet stays in place) or
    one feature group in every packet; the drop in score is that part's contribution."""
    return explain_windows(score_fn, [(image, seq)], top)[0]


def explain_windows(score_fn, windows: list[tuple[np.ndarray, np.ndarray]], top: int = 3,
                    max_rows: int = 4096, columns: list[int] | None = None
                    ) -> list[dict[str, list[str]]]:
    """`explain_window` for many windows at once: the variants of all windows of one length
    are built together and scored in calls of at most `max_rows` rows. With `columns`,
    `score_fn` returns one row of scores per variant and window w is explained on column
    columns[w] (its class). Once per raised alert, never per window."""
    cols = {g: [features.SEQ_FEATURES.index(c) for c in cs] for g, cs in SEQ_GROUPS.items()}
    nb = len(BYTE_GROUPS)
    out: list[dict[str, list[str]]] = [{} for _ in windows]
    by_len: dict[int, list[int]] = {}
    for w, (image, _seq) in enumerate(windows):
        by_len.setdefault(image.shape[0], []).append(w)
    for p, ws in sorted(by_len.items()):
        img = np.stack([windows[w][0] for w in ws]).astype(np.float32)  # [W, p, M]
        seq = np.stack([windows[w][1] for w in ws]).astype(np.float32)  # [W, p, F]
        n_w, v = len(ws), p + nb + len(SEQ_GROUPS) + 1
        imgs = np.repeat(img[:, None], v, axis=1)  # [W, V, p, M]
        seqs = np.repeat(seq[:, None], v, axis=1)
        for i in range(p):
            imgs[:, 1 + i, i] = 0.0
            seqs[:, 1 + i, i, 1:] = 0.0  # the packet stays counted (valid) but says nothing
        groups = byte_groups(img.reshape(n_w * p, -1)).reshape(img.shape)
        for k in range(nb):
            imgs[:, 1 + p + k][groups == k] = 0.0
        for k, g in enumerate(SEQ_GROUPS):
            seqs[:, 1 + p + nb + k, :, cols[g]] = 0.0
        flat_i = imgs.reshape(n_w * v, p, -1)
        flat_s = seqs.reshape(n_w * v, p, -1)
        step = max(v, max_rows - max_rows % v)
        got = np.concatenate([np.asarray(score_fn(flat_i[lo:lo + step], flat_s[lo:lo + step]),
                                         dtype=np.float64)
                              for lo in range(0, len(flat_i), step)])
        if columns is not None:
            got = got[np.arange(len(got)), np.repeat([columns[w] for w in ws], v)]
        got = got.reshape(n_w, v)
        drop = got[:, :1] - got[:, 1:]
        pk = np.argsort(-drop[:, :p], axis=1, kind="stable")[:, :top]
        fg = p + np.argsort(-drop[:, p:], axis=1, kind="stable")[:, :top]
        names = [f"packet {i + 1}" for i in range(p)] + list(BYTE_GROUPS) + list(SEQ_GROUPS)
        for r, w in enumerate(ws):
            d = drop[r]
            out[w] = {
                "explain_packets": [f"{int(i) + 1}:{d[i]:+.3f}" for i in pk[r] if d[i] > 0]
                or ["none"],
                "explain_features": [f"{names[i]}:{d[i]:+.3f}" for i in fg[r] if d[i] > 0]
                or ["none"],
            }
    return out


def verdict_flow_extra(ended: EndedFlows, classes: tuple[str, ...], baselines: bool):
    """The stage's flow_extra: adds the model's verdict (the ml_* columns of `ended`) to each
    flow event's top-level `metadata` (flowvars / flowints, where Suricata logs flow
    variables). It also offers `flow_lines`, the same lines written in bulk."""
    def extra(ev: dict[str, Any], i: int) -> None:
        cols = ended.cols
        if "ml_windows" not in cols or not cols["ml_windows"][i]:
            return
        score = float(cols["ml_score"][i])
        cls = classes[int(cols["ml_class"][i])] if cols["ml_over"][i] else "benign"
        meta = ev.setdefault("metadata", {})
        ints = {"ml_score_permille": int(round(score * 1000)),
                "ml_windows": int(cols["ml_windows"][i])}
        fv = meta.setdefault("flowvars", [])
        fv.append({"key": "ml_class", "value": cls})
        fv.append({"key": "ml_score", "value": f"{score:.3f}"})
        if baselines and cols["ml_anomaly_ratio"][i] >= 0:
            # 1000 = at the baseline's threshold; the highest over all baselines
            ints["ml_anomaly_permille"] = int(round(float(cols["ml_anomaly_ratio"][i]) * 1000))
            fv.append({"key": "ml_anomaly_score",
                       "value": f"{float(cols['ml_anomaly'][i]):.3f}"})
        meta.setdefault("flowints", {}).update(ints)

    # the pipeline writes the same lines in bulk when the model is the only stage that adds
    # keys
    extra.flow_lines = lambda with_cid, seed: verdict_flow_lines(  # type: ignore[attr-defined]
        ended, classes, baselines, with_cid, seed)
    return extra


def verdict_flow_lines(ended: EndedFlows, classes: tuple[str, ...], baselines: bool,
                       with_cid: bool, cid_seed: int) -> list[str]:
    """Byte for byte the lines flow_events(ended, verdict_flow_extra(ended, ...)) writes, from
    the bulk flow writer with the `metadata` object spliced in right after `flow` (where the
    dict path puts it): a dict and a json run per flow cost more than windows and features."""
    return flow_lines(ended, with_cid, cid_seed, verdict_fragments(ended.cols, classes,
                                                                   baselines))


def verdict_fragments(cols: dict[str, np.ndarray], classes: tuple[str, ...],
                      baselines: bool) -> list[str] | None:
    """Per flow, the raw JSON `flow_lines` splices in after `flow` (",\"metadata\":{...}", or
    "" for a flow without scored windows); None when no flow has any."""
    if "ml_windows" not in cols:
        return None
    idx = np.flatnonzero(cols["ml_windows"] != 0)
    if not len(idx):
        return None
    names = [dumps(c) for c in classes]
    benign = dumps("benign")
    cls = [names[c] if o else benign for c, o in
           zip(cols["ml_class"][idx].tolist(), cols["ml_over"][idx].tolist(), strict=True)]
    scores = cols["ml_score"][idx].astype(np.float64).tolist()
    windows = cols["ml_windows"][idx].tolist()
    if baselines:
        ratio = cols["ml_anomaly_ratio"][idx]
        anom = [(f',{{"key":"ml_anomaly_score","value":"{a:.3f}"}}',
                 f',"ml_anomaly_permille":{int(round(r * 1000))}') if r >= 0 else ("", "")
                for r, a in zip(ratio.astype(np.float64).tolist(),
                                cols["ml_anomaly"][idx].astype(np.float64).tolist(),
                                strict=True)]
    else:
        anom = [("", "")] * len(idx)
    after = [""] * len(cols["ml_windows"])
    for i, c, sc, w, (av, ai) in zip(idx.tolist(), cls, scores, windows, anom, strict=True):
        after[i] = (f',"metadata":{{"flowvars":[{{"key":"ml_class","value":{c}}},'
                    f'{{"key":"ml_score","value":"{sc:.3f}"}}{av}],"flowints":'
                    f'{{"ml_score_permille":{int(round(sc * 1000))},"ml_windows":{w}{ai}}}}}')
    return after


@dataclass
class Baseline:
    """A loaded site baseline: session, contract, threshold, position (sid offset)."""

    sess: Any
    contract: ModelContract
    index: int

    @property
    def threshold(self) -> float:
        return float(self.contract.thresholds["anomalous"])


class ModelStage:
    """Windows -> features -> onnxruntime -> per-flow verdicts and aggregated alerts.

    Scores each batch of closed windows with the classifier and with every site baseline
    (`model.baselines`); both kinds raise aggregated alerts, explained by occlusion."""

    COLS = {"ml_score": (np.float32, -1.0), "ml_class": (np.int16, 0),
            "ml_windows": (np.int32, 0), "ml_over": (np.bool_, False),
            "ml_anomaly": (np.float32, -1.0), "ml_anomaly_ratio": (np.float32, -1.0)}

    def __init__(self, cfg: Config, session: Any, contract: ModelContract,
                 batch_size: int = 512, baselines: list[Baseline] | None = None):
        self.cfg = cfg
        self.sess = session
        self.contract = contract
        self.baselines = list(baselines or [])
        self.batch_size = max(1, batch_size)
        wcfg = dataclasses.replace(cfg.windows, enabled=True)
        check_window(contract, wcfg)
        for b in self.baselines:
            check_window(b.contract, wcfg, f"baseline {b.contract.name}")
        self.windows = WindowStage(wcfg, self._collect)
        self.collected: list[WindowBatch] = []
        self.alert_sigs: list[str] = []  # for the replay summary (Pipeline.note_alert)
        self.classes = contract.classes
        self.thr = np.array([2.0] + [contract.thresholds[c] for c in self.classes[1:]],
                            dtype=np.float32)  # benign never alerts
        self.agg = AlertAggregator.for_model(cfg.model.aggregate_seconds,
                                             cfg.model.min_windows,
                                             cfg.model.aggregate_quiet_seconds)
        self.explain = cfg.model.explain
        self.table: FlowTable | None = None
        self.cid = cfg.outputs.eve.community_id
        self.cid_seed = cfg.outputs.eve.community_id_seed
        self.stats = {"ml.windows_scored": 0, "ml.windows_inferred": 0, "ml.batches": 0,
                      "ml.windows_over_threshold": 0, "ml.alerts": 0,
                      "ml.alerts_aggregated": 0}
        if self.baselines:
            self.stats.update({"ml.baseline_windows_over_threshold": 0,
                               "ml.baseline_alerts": 0, "ml.baseline_alerts_aggregated": 0})
        self.last_scores: np.ndarray | None = None  # probabilities of the last scored batch
        self.last_anomaly: list[np.ndarray] = []  # per baseline, scores of the last batch

    # -- stage hooks ---------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return dict(self.stats)

    def on_batch(self, ctx: BatchContext) -> list[str]:
        self._attach(ctx.flows)
        self.windows.on_batch(ctx)
        return self._score(None)

    def on_packets(self, table: Any, slot: np.ndarray, rows: dict[str, np.ndarray],
                   raw: np.ndarray) -> list[str]:
        """on_batch from `windows.packet_rows` (sorted by slot) and a table holding the
        FLOW_FIELDS and verdict columns: how the scoring process (`model_process`) runs."""
        self._attach(table)
        self.windows.add_packets(slot, rows, raw, table.cols)
        return self._score(None)

    def on_flows_ended(self, ended: EndedFlows) -> list[str]:
        self.windows.on_flows_ended(ended)
        return self._score(ended)

    def finish(self) -> list[str]:
        self.windows.finish()
        return self._score(None)

    def flow_extra(self, ended: EndedFlows):
        return verdict_flow_extra(ended, self.classes, bool(self.baselines))

    # -- internals -----------------------------------------------------------------------------
    def _attach(self, table: FlowTable) -> None:
        if self.table is table:
            return
        self.table = table
        for name, (dtype, default) in self.COLS.items():
            if name not in table.cols:
                table.add_column(name, dtype, default)

    def _collect(self, wb: WindowBatch) -> list[str]:
        self.collected.append(wb)
        return []

    def _run(self, sess: Any, image: np.ndarray, seq: np.ndarray, n_packets: np.ndarray,
             width: int) -> np.ndarray:
        """First output of `sess` for every window. Windows are scored shortest first in
        chunks of at most batch_size, each chunk trimmed to its longest window (padding past a
        window's last packet does not change its output, and most windows hold a few
        packets)."""
        out = np.zeros((len(image), width), np.float32) if width else np.zeros(len(image),
                                                                               np.float32)
        order = np.argsort(n_packets, kind="stable")
        counts = np.maximum(n_packets[order], 1)
        lo = 0
        while lo < len(order):
            hi = min(len(order), lo + self.batch_size)
            length = int(min(image.shape[1], counts[hi - 1]))
            idx = order[lo:hi]
            out[idx] = predict_session(sess, image[idx, :length], seq[idx, :length])
            self.stats["ml.batches"] += 1
            lo = hi
        return out

    def _chunks(self, wb: WindowBatch) -> list[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]]:
        """(window indices, inverse, image, sequence) of each scoring chunk, in `_run`'s order
        and trim. Features are computed once for all real packets of the batch (each row
        depends only on its packet and its window's times) and scattered into each chunk at
        its trimmed length: the very values of the padded `features.extract` rows. Windows
        whose features are identical are scored once (`dedupe_windows`): image and sequence
        hold the distinct rows, row `inverse[i]` is window `idx[i]`'s."""
        n, m = self.contract.packets, self.contract.bytes
        n_pk = wb.counts
        raw = wb.raw
        if raw.shape[1] != m:
            raw = features.fit_width(raw, m)
        rows = features.mask_packets(raw)
        first = wb.first  # each window's first row in rows / seq_rows
        iat, rel = features.packet_times(wb.rows["ts_us"], first, n_pk)
        seq_rows = features.packet_sequence(wb.rows, iat, rel)
        order = np.argsort(wb.n_packets, kind="stable")
        counts = np.maximum(wb.n_packets[order], 1)
        out = []
        for lo in range(0, len(order), self.batch_size):
            hi = min(len(order), lo + self.batch_size)
            length = int(min(n, counts[hi - 1]))
            idx = order[lo:hi]
            sub = n_pk[idx]
            r = np.repeat(np.arange(len(idx)), sub)
            i = np.arange(len(r)) - np.repeat(np.cumsum(sub) - sub, sub)
            src = first[idx][r] + i
            masked = np.zeros((len(idx), length, m), np.uint8)
            masked[r, i] = rows[src]
            seq = np.zeros((len(idx), length, features.N_SEQ), np.float32)
            seq[r, i] = seq_rows[src]
            reps, inverse = dedupe_windows(masked, seq)
            self.stats["ml.windows_inferred"] += len(reps)
            out.append((idx, inverse, features.scale_bytes(masked[reps]), seq[reps]))
        return out

    def _run_chunks(self, sess: Any, chunks: list, b: int, width: int) -> np.ndarray:
        """`_run` over chunks from `_chunks`."""
        out = np.zeros((b, width), np.float32) if width else np.zeros(b, np.float32)
        for idx, inverse, img, seq in chunks:
            out[idx] = predict_session(sess, img, seq)[inverse]
            self.stats["ml.batches"] += 1
        return out

    def predict(self, image: np.ndarray, seq: np.ndarray, n_packets: np.ndarray) -> np.ndarray:
        """Class probabilities [B, C] of the classifier."""
        return self._run(self.sess, image, seq, n_packets, len(self.classes))

    def predict_baseline(self, b: Baseline, image: np.ndarray, seq: np.ndarray,
                         n_packets: np.ndarray) -> np.ndarray:
        """Anomaly scores [B] of one baseline."""
        return self._run(b.sess, image, seq, n_packets, 0)

    def _score(self, ended: EndedFlows | None) -> list[str]:
        if not self.collected:
            return []
        wb = concat_windows(self.collected)
        self.collected = []
        chunks = self._chunks(wb)
        probs = self._run_chunks(self.sess, chunks, len(wb), len(self.classes))
        self.last_scores = probs
        self.stats["ml.windows_scored"] += len(wb)
        attack = probs[:, 1:]
        top = attack.argmax(axis=1) + 1
        score = probs[np.arange(len(wb)), top]
        ratio = probs / self.thr[None, :]
        over_any = (ratio[:, 1:] >= 1.0).any(axis=1)
        # the class that alerts: the over-threshold class furthest over its threshold
        alert_cls = ratio[:, 1:].argmax(axis=1) + 1
        alert_score = probs[np.arange(len(wb)), alert_cls]
        rows, cols = self._flow_rows(wb, ended)
        fid = wb.flow["flow_id"]
        update_flow_verdicts(cols, rows, score, over_any, alert_cls, top)
        hits = np.flatnonzero(over_any)
        self.stats["ml.windows_over_threshold"] += len(hits)
        raised = self._aggregate(wb, hits, alert_cls)
        expl = self._explain_all(lambda im, sq: predict_session(self.sess, im, sq), wb, chunks,
                                 [j for j, _ in raised], [int(alert_cls[j]) for j, _ in raised])
        lines = []
        c = self.contract
        for (j, count), why in zip(raised, expl, strict=True):
            cls = self.classes[int(alert_cls[j])]
            self.stats["ml.alerts"] += 1
            if rows[j] >= 0:
                cols["alerted"][rows[j]] = True
            category, severity = CLASS_CATEGORY.get(cls, ("Misc activity", 3))
            meta = {"model": [c.name], "model_version": [c.version], "class": [cls],
                    "score": [f"{float(alert_score[j]):.3f}"],
                    "threshold": [f"{c.thresholds[cls]:.3f}"], **why}
            lines.append(self._alert(wb, j, f"NETSENSOR ML {cls} pattern", c.sid(cls),
                                     category, severity, meta, count, int(fid[j])))
        self.last_anomaly = []
        for b in self.baselines:
            lines += self._score_baseline(b, wb, chunks, rows, cols)
        return lines

    def _score_baseline(self, b: Baseline, wb: WindowBatch, chunks: list, rows: np.ndarray,
                        cols: dict) -> list[str]:
        s = self._run_chunks(b.sess, chunks, len(wb), 0)
        self.last_anomaly.append(s)
        ratio = s / np.float32(b.threshold)
        for j in np.flatnonzero(rows >= 0).tolist():
            r = rows[j]
            if ratio[j] > cols["ml_anomaly_ratio"][r]:
                cols["ml_anomaly_ratio"][r] = ratio[j]
                cols["ml_anomaly"][r] = s[j]
        hits = np.flatnonzero(ratio > 1.0)
        self.stats["ml.baseline_windows_over_threshold"] += len(hits)
        raised = self._aggregate(wb, hits, None, f"baseline:{b.index}",
                                 "ml.baseline_alerts_aggregated")
        expl = self._explain_all(lambda im, sq: predict_session(b.sess, im, sq), wb, chunks,
                                 [j for j, _ in raised])
        lines = []
        c = b.contract
        for (j, count), why in zip(raised, expl, strict=True):
            self.stats["ml.baseline_alerts"] += 1
            if rows[j] >= 0:
                cols["alerted"][rows[j]] = True
            meta = {"model": [c.name], "model_version": [c.version], "class": ["anomalous"],
                    "score": [f"{float(s[j]):.3f}"], "threshold": [f"{b.threshold:.3f}"],
                    "over_threshold": [f"{float(ratio[j]):.2f}x"], **why}
            lines.append(self._alert(wb, j, BASELINE_SIGNATURE, BASELINE_SID + b.index,
                                     "Potentially Bad Traffic", 2, meta, count,
                                     int(wb.flow["flow_id"][j])))
        return lines

    def _aggregate(self, wb: WindowBatch, hits: np.ndarray, alert_cls: np.ndarray | None,
                   label: str = "", stat: str = "ml.alerts_aggregated"
                   ) -> list[tuple[int, int]]:
        """(window, count) of the windows in `hits` that raise an alert, in window end order:
        `AlertAggregator` keyed by (source address, class name, or `label` without
        classes), one key at a time (keys are independent)."""
        if not len(hits):
            return []
        order = hits[np.argsort(wb.end_us[hits], kind="stable")]
        f = wb.flow
        lab = alert_cls[order] if alert_cls is not None else np.zeros(len(order), np.int64)
        cols = (f["ipver"][order], f["cli_hi"][order], f["cli_lo"][order], lab)
        # grouped by key, each key's windows in time order (position breaks ties)
        grouped = np.lexsort((np.arange(len(order)), *cols[::-1]))
        change = np.zeros(len(order) + 1, dtype=bool)
        change[0] = change[-1] = True
        for k in cols:
            kg = k[grouped]
            change[1:-1] |= kg[1:] != kg[:-1]
        bounds = np.flatnonzero(change)
        ts = wb.end_us[order]
        raised: list[tuple[int, int, int]] = []  # (position in order, window, count)
        for a, z in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            at = grouped[a:z]
            j0 = int(order[at[0]])
            src = (int(f["ipver"][j0]), int(f["cli_hi"][j0]), int(f["cli_lo"][j0]))
            name = self.classes[int(lab[at[0]])] if alert_cls is not None else label
            pos, counts, _ = self.agg.offer_many((src, name), ts[at])
            self.stats[stat] += len(at) - len(pos)
            raised += [(int(at[p]), int(order[at[p]]), c) for p, c in zip(pos, counts,
                                                                           strict=True)]
        raised.sort()
        return [(j, c) for _, j, c in raised]

    def _explain_all(self, score_fn, wb: WindowBatch, chunks: list, js: list[int],
                     columns: list[int] | None = None) -> list[dict[str, list[str]]]:
        """Occlusion explanations of windows `js` (empty dicts when `model.explain` is off),
        from the features `_chunks` already extracted, trimmed to each window's packets."""
        if not self.explain or not js:
            return [{} for _ in js]
        where: dict[int, tuple[int, int]] = {}
        wanted = set(js)
        for ci, (idx, inverse, _img, _seq) in enumerate(chunks):
            for pos in np.flatnonzero(np.isin(idx, list(wanted))).tolist():
                where[int(idx[pos])] = (ci, int(inverse[pos]))
        windows = []
        for j in js:
            ci, r = where[j]
            img, seq = chunks[ci][2], chunks[ci][3]
            n = max(1, min(int(wb.n_packets[j]), img.shape[1]))
            windows.append((img[r, :n], seq[r, :n]))
        return explain_windows(score_fn, windows, columns=columns)

    def _flow_rows(self, wb: WindowBatch, ended: EndedFlows | None) -> tuple[np.ndarray, dict]:
        """Row of each window's flow in the live table (or in `ended`'s snapshot); -1 if gone."""
        fid = wb.flow["flow_id"]
        if ended is not None:
            cols = ended.cols
            for name, (dtype, default) in self.COLS.items():
                if name not in cols:
                    cols[name] = np.full(len(ended), default, dtype=dtype)
            pos = {int(f): i for i, f in enumerate(cols["flow_id"].tolist())}
            rows = np.array([pos.get(int(f), -1) for f in fid.tolist()], dtype=np.int64)
            return rows, cols
        if self.table is None:
            return np.full(len(wb), -1, np.int64), {}
        cols = self.table.cols
        slot = wb.slot
        ok = (slot < len(cols["flow_id"])) & cols["active"][np.minimum(slot, len(
            cols["flow_id"]) - 1)]
        ok &= cols["flow_id"][np.minimum(slot, len(cols["flow_id"]) - 1)] == fid
        return np.where(ok, slot, -1), cols

    def _alert(self, wb: WindowBatch, j: int, signature: str, sid: int, category: str,
               severity: int, metadata: dict[str, list[str]], count: int, flow_id: int) -> str:
        f = {k: int(wb.flow[k][j]) for k in FLOW_FIELDS}
        proto = f["proto"]
        ev: dict[str, Any] = {"timestamp": fmt_ts(int(wb.end_us[j])), "flow_id": flow_id,
                              "event_type": "alert"}
        vlan = [v for v in (f["vlan0"], f["vlan1"]) if v]
        if vlan:
            ev["vlan"] = vlan
        ev["src_ip"] = ip_str(f["ipver"], f["cli_hi"], f["cli_lo"])
        if proto in PORT_PROTOS:
            ev["src_port"] = f["cli_port"]
        ev["dest_ip"] = ip_str(f["ipver"], f["srv_hi"], f["srv_lo"])
        if proto in PORT_PROTOS:
            ev["dest_port"] = f["srv_port"]
        ev["proto"] = proto_name(proto)
        if proto in ICMP_PROTOS:
            ev["icmp_type"], ev["icmp_code"] = f["cli_port"] & 0xFF, f["cli_port"] >> 8
        ev["pkt_src"] = "wire/pcap"
        if self.cid:
            from ..community_id import community_id

            sport, dport = f["cli_port"], f["srv_port"]
            if proto in ICMP_PROTOS:
                sport, dport = sport & 0xFF, sport >> 8
            elif proto not in PORT_PROTOS:
                sport = dport = 0
            ev["community_id"] = community_id(
                ip_bytes(f["ipver"], f["cli_hi"], f["cli_lo"]),
                ip_bytes(f["ipver"], f["srv_hi"], f["srv_lo"]), proto, sport, dport,
                self.cid_seed)
        meta = dict(metadata)
        meta.update({"window_start": [fmt_ts(int(wb.start_us[j]))],
                     "window_packets": [str(int(wb.n_packets[j]))],
                     "window_count": [str(count)]})
        ev["alert"] = {
            "action": "allowed", "gid": GID, "signature_id": sid, "rev": 1,
            "signature": signature, "category": category, "severity": severity,
            "metadata": meta,
        }
        ev["direction"] = "to_server"
        self.alert_sigs.append(f"[{GID}:{sid}:1] {signature}")
        return dumps(ev)

    def drain_alert_signatures(self) -> list[str]:
        """Signatures alerted since the last call (Pipeline.note_alert counts them)."""
        out, self.alert_sigs = self.alert_sigs, []
        return out


def build_model_stage(cfg: Config) -> ModelStage | None:
    """The model stage the config asks for, or None when `model.enabled` is false.

    Raises ModelError (one line, naming the file and what differs) when the classifier or a
    baseline cannot be used: missing or corrupt file, another feature spec, other input
    shapes or windows, or a baseline given as the classifier (or the reverse).
    """
    mc = cfg.model
    if not mc.enabled:
        return None
    path = mc.path or str(DEFAULT_MODEL)
    wcfg = dataclasses.replace(cfg.windows, enabled=True)
    sess, contract = load_model(path, mc.threads, wcfg)
    if contract.kind != "classifier":
        raise ModelError(f"model {path}: is a site baseline; list it under model.baselines "
                         "(model.path takes the classifier)")
    baselines = []
    for i, bpath in enumerate(mc.baselines):
        bsess, bcontract = load_model(bpath, mc.threads, wcfg)
        if bcontract.kind != "baseline":
            raise ModelError(f"model {bpath}: model.baselines[{i}] is a {bcontract.kind}, not a "
                             "site baseline (make one with `netsensor learn`)")
        baselines.append(Baseline(bsess, bcontract, i))
    return ModelStage(cfg, sess, contract, batch_size=mc.batch_size, baselines=baselines)
