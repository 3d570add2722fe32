"""`netsensor eval`: how well do the alerts cover the labelled attacks of a lab capture?

    netsensor eval --labels A.labels.csv A.pcap[.gz] ... [-c CONFIG] [--json OUT] [--plot OUT.png]
    netsensor eval --labels A.labels.csv eve.json ...

A pcap is replayed in-process through the replay code path (the same `Pipeline` and
`build_stages(cfg)` as `netsensor replay -c CONFIG`); an EVE file is read as it is. Alerts
are matched to the labels (`pcaps/lab/generate.py` writes them: one row per attack with
attacker, victim, start and end) by addresses and time:

- an alert belongs to an attack when its two addresses are the attack's attacker and victim
  (either direction) and its timestamp lies in [start - grace, end + grace];
- every other alert is a false alert: outside every slot, or inside a slot but between other
  hosts. The lab's benign clients run for the whole capture, so false alerts are counted per
  hour of the capture's span;
- a flow event is an attack flow when its addresses are a slot's pair and its lifetime
  overlaps that slot (+- grace); every other flow is benign, and a benign flow counts as
  alerted when `flow.alerted` is true, an alert carries its `flow_id`, or the model's class
  in its metadata is not `benign`.

Alerts of the model have gid 9000 (`sensor.detect.model.GID`); everything else (gid 1,
signature ids below 9000000) comes from rules.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import ipaddress
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODEL_GID = 9000  # = sensor.detect.model.GID (not imported: that pulls in the model stack)
MODEL_SID_RANGE = (9_000_000, 9_099_999)
DEFAULT_GRACE_S = 2.0
LABEL_COLUMNS = ("name", "family", "attacker_ip", "victim_ip")
EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class EvalError(Exception):
    """A user mistake or bad input; the message is one line naming the file (and line)."""


# ----------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Slot:
    """One labelled attack: who attacked whom, when (microseconds since the epoch)."""

    name: str
    family: str
    attacker: IPAddr
    victim: IPAddr
    start_us: int
    end_us: int

    def pair(self) -> frozenset[IPAddr]:
        return frozenset((self.attacker, self.victim))


def _parse_time(text: str) -> int:
    """EVE / label timestamps -> microseconds since the epoch (UTC if no offset is given)."""
    text = text.strip()
    try:
        t = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def read_labels(path: str) -> list[Slot]:
    """Parse a traffic-lab labels.csv; raises EvalError naming the file and line."""
    try:
        fh = open(path, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise EvalError(f"{path}: cannot read labels: {exc.strerror}") from None
    slots: list[Slot] = []
    with fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
        except (csv.Error, UnicodeDecodeError) as exc:
            raise EvalError(f"{path}:1: not a labels CSV ({exc})") from None
        missing = [c for c in LABEL_COLUMNS if c not in header]
        has_ts = "start_ts" in header and "end_ts" in header
        if not has_ts and not ("start" in header and "end" in header):
            missing.append("start_ts/end_ts (or start/end)")
        if missing:
            raise EvalError(f"{path}:1: labels header lacks column(s) {', '.join(missing)}")
        line = 1
        try:
            for row in reader:
                line = reader.line_num
                slots.append(_label_row(row, has_ts, f"{path}:{line}"))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise EvalError(f"{path}:{line + 1}: unreadable CSV ({exc})") from None
    return slots


def _label_row(row: dict[str, str], has_ts: bool, where: str) -> Slot:
    def addr(key: str) -> IPAddr:
        try:
            return ipaddress.ip_address((row.get(key) or "").strip())
        except ValueError:
            raise EvalError(f"{where}: bad {key} {row.get(key)!r}") from None

    def when(key_ts: str, key_iso: str) -> int:
        key = key_ts if has_ts else key_iso
        value = (row.get(key) or "").strip()
        try:
            if has_ts:
                return int(round(float(value) * 1e6))
            return _parse_time(value)
        except ValueError:
            raise EvalError(f"{where}: bad {key} {value!r}") from None

    start, end = when("start_ts", "start"), when("end_ts", "end")
    if end < start:
        raise EvalError(f"{where}: end is before start")
    name = (row.get("name") or "").strip()
    if not name:
        raise EvalError(f"{where}: empty name")
    return Slot(name, (row.get("family") or "").strip() or "unknown", addr("attacker_ip"),
                addr("victim_ip"), start, end)


def sniff_kind(path: str) -> str:
    """'pcap' (pcap, pcapng, gzip) or 'eve' (JSON lines), from the first bytes."""
    if path == "-":
        return "pcap"
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise EvalError(f"{path}: cannot read: {exc.strerror}") from None
    if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                    b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a") or head[:2] == b"\x1f\x8b":
        return "pcap"
    if not head.strip() or head.lstrip()[:1] == b"{":
        return "eve"
    raise EvalError(f"{path}: neither a pcap/pcapng file nor EVE JSON lines")


def read_eve(path: str) -> Iterator[dict[str, Any]]:
    """EVE events of a file, one JSON object per line; a bad line is an EvalError."""
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise EvalError(f"{path}: cannot read: {exc.strerror}") from None
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    raise EvalError(f"{path}:{n}: not a JSON object") from None
                if not isinstance(ev, dict):
                    raise EvalError(f"{path}:{n}: not a JSON object")
                ev["_where"] = f"{path}:{n}"
                yield ev
        except UnicodeDecodeError:
            raise EvalError(f"{path}: not UTF-8 text") from None


@dataclass
class ReplayResult:
    events: list[dict[str, Any]]
    first_us: int | None
    last_us: int | None
    errors: list[str]


def replay_events(paths: list[str], config_path: str | None) -> ReplayResult:
    """Replay pcaps through the replay code path (Pipeline + build_stages) with the config.

    The config's EVE output is forced to carry alert and flow events (eval needs both);
    everything else (rules, model, windows, flow timeouts) is used as given.
    """
    from .cli import Progress, _sources
    from .config import ConfigError, load_config
    from .output.sinks import MemorySink
    from .pipeline import Pipeline
    from .stages import StageError, build_stages

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise EvalError(str(exc)) from None
    eve = dataclasses.replace(cfg.outputs.eve, enabled=True, types=("alert", "flow"))
    cfg = dataclasses.replace(cfg, outputs=dataclasses.replace(cfg.outputs, eve=eve))
    try:
        stages = build_stages(cfg, strict=False)  # as replay: rejected rules are reported
    except StageError as exc:
        raise EvalError(str(exc)) from None
    sink = MemorySink()
    pipe = Pipeline(cfg, sink, stages)  # type: ignore[arg-type]
    errors: list[str] = []
    for batch in _sources(paths, cfg, errors, Progress(False, None)):
        pipe.process(batch)
    pipe.finish()
    events = []
    for n, line in enumerate(sink.lines):
        ev = json.loads(line)
        ev["_where"] = f"replay event {n + 1}"
        events.append(ev)
    return ReplayResult(events, pipe.first_ts, pipe.now_us if pipe.first_ts else None, errors)


def slot_packets(paths: list[str], slots: list[Slot]) -> list[int]:
    """Packets to or from each slot's attacker inside the slot: a label that covers no
    packet of its attacker is wrong (clock, addresses or a failed tool run)."""
    from .capture.pcap import PcapSource
    from .decode import decode_batch

    counts = [0] * len(slots)
    keys = [(int(s.attacker) >> 64, int(s.attacker) & ((1 << 64) - 1)) for s in slots]
    for path in paths:
        src = PcapSource(path)
        for batch in src.batches():
            d = decode_batch(batch)
            for i, (s, (hi, lo)) in enumerate(zip(slots, keys, strict=True)):
                ver = 4 if s.attacker.version == 4 else 6
                inside = d.ok & (d.ipver == ver) & (batch.ts_us >= s.start_us) & \
                    (batch.ts_us <= s.end_us)
                mine = ((d.src_hi == hi) & (d.src_lo == lo)) | ((d.dst_hi == hi) & (d.dst_lo == lo))
                counts[i] += int(np.count_nonzero(inside & mine))
        if src.error is not None:
            raise EvalError(str(src.error))
    return counts


# ----------------------------------------------------------------------------- matching

def alert_source(alert: dict[str, Any]) -> str:
    """'model' for the model's gid 9000 alerts, 'rules' for everything else."""
    gid = alert.get("gid", 1)
    sid = alert.get("signature_id", 0)
    if gid == MODEL_GID:
        return "model"
    if gid == 1 and isinstance(sid, int) and MODEL_SID_RANGE[0] <= sid <= MODEL_SID_RANGE[1]:
        return "model"
    return "rules"


@dataclass
class AlertHit:
    ts_us: int
    src: IPAddr
    dst: IPAddr
    source: str
    signature: str
    flow_id: int | None
    slots: list[int] = field(default_factory=list)  # indices of matched slots
    kind: str = "attack"  # attack | outside (no slot at that time) | other-hosts


def _addr(ev: dict[str, Any], key: str) -> IPAddr:
    try:
        return ipaddress.ip_address(str(ev[key]))
    except (KeyError, ValueError):
        raise EvalError(f"{ev.get('_where', 'event')}: {ev.get('event_type')} event without "
                        f"a valid {key}") from None


def _ts(ev: dict[str, Any], value: Any, key: str) -> int:
    try:
        return _parse_time(str(value))
    except ValueError:
        raise EvalError(f"{ev.get('_where', 'event')}: bad {key} {value!r}") from None


def match_alerts(events: Iterable[dict[str, Any]], slots: list[Slot],
                 grace_us: int) -> list[AlertHit]:
    """Every alert event with the slots it belongs to (by address pair and time)."""
    hits = []
    for ev in events:
        if ev.get("event_type") != "alert":
            continue
        alert = ev.get("alert") if isinstance(ev.get("alert"), dict) else {}
        hit = AlertHit(_ts(ev, ev.get("timestamp"), "timestamp"), _addr(ev, "src_ip"),
                       _addr(ev, "dest_ip"), alert_source(alert),
                       str(alert.get("signature", f"{alert.get('gid', 1)}:"
                                                  f"{alert.get('signature_id', 0)}")),
                       ev.get("flow_id") if isinstance(ev.get("flow_id"), int) else None)
        pair = frozenset((hit.src, hit.dst))
        in_time = False
        for i, s in enumerate(slots):
            if s.start_us - grace_us <= hit.ts_us <= s.end_us + grace_us:
                in_time = True
                if pair == s.pair():
                    hit.slots.append(i)
        if not hit.slots:
            hit.kind = "other-hosts" if in_time else "outside"
        hits.append(hit)
    return hits


def _flow_flagged(ev: dict[str, Any], alerted_ids: set[int]) -> bool:
    flow = ev.get("flow") if isinstance(ev.get("flow"), dict) else {}
    if flow.get("alerted") is True:
        return True
    if isinstance(ev.get("flow_id"), int) and ev["flow_id"] in alerted_ids:
        return True
    return model_class(ev) not in (None, "benign")


def model_class(ev: dict[str, Any]) -> str | None:
    """The model's class of a flow event (metadata.flowvars ml_class), None when unscored."""
    return _flowvar(ev, "ml_class")


def model_score(ev: dict[str, Any]) -> float | None:
    """The model's highest attack score of a flow event (metadata.flowvars ml_score)."""
    value = _flowvar(ev, "ml_score")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _flowvar(ev: dict[str, Any], key: str) -> str | None:
    meta = ev.get("metadata")
    if not isinstance(meta, dict):
        return None
    for fv in meta.get("flowvars") or []:
        if isinstance(fv, dict) and fv.get("key") == key:
            return str(fv.get("value"))
    return None


# ----------------------------------------------------------------------------- the report

def evaluate(events: list[dict[str, Any]], slots: list[Slot], *,
             grace_s: float = DEFAULT_GRACE_S, span_us: tuple[int, int] | None = None,
             inputs: list[str] | None = None, labels_path: str = "") -> dict[str, Any]:
    """The whole evaluation as a JSON-able dict (what --json writes and the table prints).

    span_us: first and last packet time of the capture; derived from the events when None.
    """
    grace_us = int(round(grace_s * 1e6))
    hits = match_alerts(events, slots, grace_us)
    flows = [ev for ev in events if ev.get("event_type") == "flow"]
    if span_us is None:
        span_us = _span(events)
    span_s = (span_us[1] - span_us[0]) / 1e6 if span_us else 0.0
    t0 = span_us[0] if span_us else (min((s.start_us for s in slots), default=0))

    attacks = []
    for i, s in enumerate(slots):
        mine = sorted((h for h in hits if i in h.slots), key=lambda h: h.ts_us)
        by_src = Counter(h.source for h in mine)
        attacks.append({
            "name": s.name, "family": s.family, "attacker": str(s.attacker),
            "victim": str(s.victim), "start_s": round((s.start_us - t0) / 1e6, 3),
            "slot_s": round((s.end_us - s.start_us) / 1e6, 3), "detected": bool(mine),
            "time_to_first_alert_s": round((mine[0].ts_us - s.start_us) / 1e6, 3)
            if mine else None,
            "alerts": len(mine), "alerts_rules": by_src["rules"], "alerts_model": by_src["model"],
            "signatures": sorted({h.signature for h in mine}),
        })
    families: dict[str, dict[str, Any]] = {}
    for a in attacks:
        f = families.setdefault(a["family"], {"attacks": 0, "detected": 0, "detected_rules": 0,
                                              "detected_model": 0})
        f["attacks"] += 1
        f["detected"] += a["detected"]
        f["detected_rules"] += a["alerts_rules"] > 0
        f["detected_model"] += a["alerts_model"] > 0
    for f in families.values():
        for key in ("", "_rules", "_model"):
            f[f"recall{key}"] = round(f[f"detected{key}"] / f["attacks"], 4)

    false = [h for h in hits if not h.slots]
    hours = span_s / 3600.0
    alerted_ids = {h.flow_id for h in hits if h.flow_id is not None}
    benign_flows = attack_flows = benign_flagged = attack_flagged = 0
    benign_scores: list[float] = []
    for ev in flows:
        if _is_attack_flow(ev, slots, grace_us):
            attack_flows += 1
            attack_flagged += _flow_flagged(ev, alerted_ids)
            continue
        benign_flows += 1
        benign_flagged += _flow_flagged(ev, alerted_ids)
        score = model_score(ev)
        if score is not None:
            benign_scores.append(score)

    sources = {}
    for src in ("rules", "model"):
        mine = [h for h in hits if h.source == src]
        sources[src] = {"alerts": len(mine), "matched": sum(bool(h.slots) for h in mine),
                        "false": sum(not h.slots for h in mine)}
    detected = sum(a["detected"] for a in attacks)
    return {
        "labels": labels_path, "inputs": inputs or [], "grace_s": grace_s,
        "capture_s": round(span_s, 3),
        "summary": {"attacks": len(slots), "detected": detected,
                    "recall": round(detected / len(slots), 4) if slots else None,
                    "alerts": len(hits)},
        "attacks": attacks,
        "families": dict(sorted(families.items())),
        "benign": {
            "hours": round(hours, 6), "false_alerts": len(false),
            "false_outside_slots": sum(h.kind == "outside" for h in false),
            "false_in_slot_other_hosts": sum(h.kind == "other-hosts" for h in false),
            "false_alerts_per_hour": round(len(false) / hours, 3) if hours > 0 else None,
            "false_signatures": dict(Counter(h.signature for h in false).most_common(10)),
            "flows": benign_flows, "flows_alerted": benign_flagged,
            "flows_alerted_share": round(benign_flagged / benign_flows, 6)
            if benign_flows else None,
            "model_scores": score_summary(benign_scores),
        },
        "attack_flows": {"flows": attack_flows, "flows_alerted": attack_flagged},
        "sources": sources,
        "timeline": [{"t_s": round((h.ts_us - t0) / 1e6, 3), "source": h.source,
                      "kind": h.kind, "src": str(h.src), "dst": str(h.dst),
                      "signature": h.signature} for h in sorted(hits, key=lambda h: h.ts_us)],
    }


def _span(events: list[dict[str, Any]]) -> tuple[int, int] | None:
    """First and last instant any event mentions (timestamps, flow start/end)."""
    lo, hi = None, None
    for ev in events:
        times = []
        if "timestamp" in ev:
            times.append(_ts(ev, ev["timestamp"], "timestamp"))
        flow = ev.get("flow")
        if isinstance(flow, dict):
            for key in ("start", "end"):
                if key in flow:
                    times.append(_ts(ev, flow[key], f"flow.{key}"))
        for t in times:
            lo = t if lo is None or t < lo else lo
            hi = t if hi is None or t > hi else hi
    return None if lo is None else (lo, hi)


def _is_attack_flow(ev: dict[str, Any], slots: list[Slot], grace_us: int) -> bool:
    pair = frozenset((_addr(ev, "src_ip"), _addr(ev, "dest_ip")))
    flow = ev.get("flow") if isinstance(ev.get("flow"), dict) else {}
    start = _ts(ev, flow.get("start", ev.get("timestamp")), "flow.start")
    end = _ts(ev, flow.get("end", ev.get("timestamp")), "flow.end")
    return any(pair == s.pair() and start <= s.end_us + grace_us and end >= s.start_us - grace_us
               for s in slots)


def score_summary(scores: list[float] | np.ndarray) -> dict[str, Any] | None:
    """Count and quantiles of model scores (what drift is judged on); None when empty."""
    arr = np.asarray(scores, dtype=np.float64)
    if not len(arr):
        return None
    qs = (0.5, 0.9, 0.99, 1.0)
    return {"n": int(len(arr)), "mean": round(float(arr.mean()), 6),
            **{f"p{int(q * 100)}": round(float(np.quantile(arr, q)), 6) for q in qs}}


def score_drift(reference: np.ndarray | list[float], current: np.ndarray | list[float],
                bins: int = 10) -> dict[str, Any]:
    """How far the score distribution of new normal traffic moved from the learning data.

    The hook `netsensor eval` will use for a site baseline (issue 6): reference = scores of
    the windows the baseline learned from, current = scores of benign windows now. Returns
    the population stability index over the reference's quantile bins (PSI; < 0.1 stable,
    0.1-0.25 moderate, > 0.25 large shift, the usual credit-scoring reading), the two-sample
    Kolmogorov-Smirnov statistic, and both medians / 99th percentiles.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    cur = np.sort(np.asarray(current, dtype=np.float64))
    if not len(ref) or not len(cur):
        raise ValueError("score_drift needs scores on both sides")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_frac = np.bincount(np.searchsorted(edges, ref, side="right"),
                           minlength=len(edges) + 1) / len(ref)
    cur_frac = np.bincount(np.searchsorted(edges, cur, side="right"),
                           minlength=len(edges) + 1) / len(cur)
    eps = 1e-4
    ref_frac, cur_frac = np.maximum(ref_frac, eps), np.maximum(cur_frac, eps)
    psi = float(np.sum((cur_frac - ref_frac) * np.log(cur_frac / ref_frac)))
    grid = np.concatenate([ref, cur])
    ks = float(np.max(np.abs(np.searchsorted(ref, grid, side="right") / len(ref)
                             - np.searchsorted(cur, grid, side="right") / len(cur))))
    level = "stable" if psi < 0.1 else "moderate" if psi < 0.25 else "large"
    return {"psi": round(psi, 6), "ks": round(ks, 6), "shift": level,
            "reference": score_summary(ref), "current": score_summary(cur)}


# ----------------------------------------------------------------------------- printing

def format_table(res: dict[str, Any]) -> str:
    """The human-readable report (the same numbers as the JSON)."""
    out = [f"eval: {res['summary']['attacks']} labelled attacks, capture "
           f"{res['capture_s']:.1f} s, grace {res['grace_s']:g} s, "
           f"{res['summary']['alerts']} alerts"]
    if res["attacks"]:
        out.append("")
        out.append(f"{'attack':<14} {'family':<12} {'attacker':<15} {'start s':>8} "
                   f"{'slot s':>7} {'detected':>8} {'first s':>8} {'alerts':>6} "
                   f"{'rules':>5} {'model':>5}")
        for a in res["attacks"]:
            ttd = "-" if a["time_to_first_alert_s"] is None else \
                f"{a['time_to_first_alert_s']:.2f}"
            out.append(f"{a['name'][:14]:<14} {a['family'][:12]:<12} {a['attacker']:<15} "
                       f"{a['start_s']:>8.1f} {a['slot_s']:>7.1f} "
                       f"{'yes' if a['detected'] else 'no':>8} {ttd:>8} {a['alerts']:>6} "
                       f"{a['alerts_rules']:>5} {a['alerts_model']:>5}")
        out.append("")
        out.append(f"{'family':<14} {'attacks':>7} {'detected':>8} {'recall':>7} "
                   f"{'rules':>7} {'model':>7}")
        for name, f in res["families"].items():
            out.append(f"{name[:14]:<14} {f['attacks']:>7} {f['detected']:>8} "
                       f"{f['recall'] * 100:>6.1f}% {f['recall_rules'] * 100:>6.1f}% "
                       f"{f['recall_model'] * 100:>6.1f}%")
        s = res["summary"]
        out.append(f"{'all':<14} {s['attacks']:>7} {s['detected']:>8} "
                   f"{s['recall'] * 100:>6.1f}%")
    b = res["benign"]
    per_hour = "-" if b["false_alerts_per_hour"] is None else f"{b['false_alerts_per_hour']:.1f}"
    out.append("")
    out.append(f"false alerts: {b['false_alerts']} ({b['false_outside_slots']} outside slots, "
               f"{b['false_in_slot_other_hosts']} in a slot between other hosts) = {per_hour} "
               f"per hour of traffic ({b['hours'] * 3600:.0f} s)")
    share = "-" if b["flows_alerted_share"] is None else f"{b['flows_alerted_share'] * 100:.2f} %"
    out.append(f"benign flows: {b['flows']}, alerted {b['flows_alerted']} ({share})")
    for sig, n in b["false_signatures"].items():
        out.append(f"  false: {n:6d}  {sig}")
    src = res["sources"]
    out.append("alerts by source: " + ", ".join(
        f"{k} {v['alerts']} ({v['matched']} on attacks, {v['false']} false)"
        for k, v in src.items()))
    return "\n".join(out)


def write_plot(res: dict[str, Any], path: str) -> None:
    """Timeline PNG: labelled slots as bands, alerts as marks (rules / model rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted(res["families"]) or ["-"]
    colors = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(fams)}
    fig, ax = plt.subplots(figsize=(12, 3.6), dpi=100)
    for a in res["attacks"]:
        x0 = a["start_s"]
        ax.axvspan(x0, x0 + a["slot_s"], color=colors[a["family"]], alpha=0.25, lw=0)
        ax.text(x0, 1.45, a["name"], rotation=90, fontsize=7, va="bottom", ha="right")
    rows = {"rules": 1, "model": 0}
    for kind, marker, color in (("attack", "o", "tab:green"), ("outside", "x", "tab:red"),
                                ("other-hosts", "x", "tab:orange")):
        pts = [e for e in res["timeline"] if e["kind"] == kind]
        if pts:
            ax.scatter([e["t_s"] for e in pts], [rows[e["source"]] for e in pts], s=18,
                       marker=marker, color=color, label=f"alert: {kind}", zorder=3)
    for f in fams:
        ax.plot([], [], color=colors[f], lw=8, alpha=0.4, label=f)
    ax.set_yticks([0, 1], ["model", "rules"])
    ax.set_ylim(-0.6, 2.6)
    ax.set_xlim(0, max(res["capture_s"], 1.0))
    ax.set_xlabel("seconds since the first packet")
    s = res["summary"]
    ax.set_title(f"{s['detected']}/{s['attacks']} attacks detected, "
                 f"{res['benign']['false_alerts']} false alerts", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise EvalError(f"{path}: cannot write plot: {exc.strerror}") from None
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- command

def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `netsensor eval` on an argparse subparsers object."""
    e = subparsers.add_parser("eval", help="match alerts of a pcap replay or EVE file to lab "
                                           "labels: recall, time to detect, false alerts",
                              description=__doc__.split("\n\n")[0])
    e.add_argument("inputs", nargs="+", metavar="EVE_OR_PCAP",
                   help="pcap/pcapng(.gz) files to replay, or EVE JSON files to read")
    e.add_argument("--labels", required=True, help="labels.csv of the traffic lab")
    e.add_argument("-c", "--config", help="YAML config for the replay (rules, model)")
    e.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                   help=f"seconds an alert may fall before/after a slot (default "
                        f"{DEFAULT_GRACE_S:g})")
    e.add_argument("--json", metavar="OUT", help="write the report as JSON here")
    e.add_argument("--plot", metavar="OUT.png", help="write a timeline PNG (needs matplotlib: "
                                                     "pip install 'netsensor[plot]')")
    e.add_argument("-q", "--quiet", action="store_true", help="no table on stdout")
    e.add_argument("--drift", action="store_true",
                   help="also compare the config's site baselines' scores on the normal "
                        "windows with their learning data (sensor.learn.drift_report)")
    e.set_defaults(fn=cmd_eval)
    return e


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except EvalError as exc:
        print(f"netsensor: {exc}", file=sys.stderr)
        return EXIT_USAGE if getattr(exc, "usage", False) else EXIT_INPUT


def _usage(msg: str) -> EvalError:
    err = EvalError(msg)
    err.usage = True  # type: ignore[attr-defined]
    return err


def _run(args: argparse.Namespace) -> int:
    from .capture import CaptureError

    if args.grace < 0 or not math.isfinite(args.grace):
        raise _usage("--grace must be a non-negative number of seconds")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _usage("--plot needs matplotlib, which is not installed: "
                         "pip install 'netsensor[plot]'") from None
    try:
        slots = read_labels(args.labels)
    except EvalError as exc:
        raise _usage(str(exc)) from None
    kinds = {p: sniff_kind(p) for p in args.inputs}
    pcaps = [p for p in args.inputs if kinds[p] == "pcap"]
    eves = [p for p in args.inputs if kinds[p] == "eve"]
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    span: tuple[int, int] | None = None
    if pcaps:
        try:
            rr = replay_events(pcaps, args.config)
        except CaptureError as exc:
            raise EvalError(str(exc)) from None
        events += rr.events
        errors += rr.errors
        if rr.first_us is not None and rr.last_us is not None and not eves:
            span = (rr.first_us, rr.last_us)
    elif args.config:
        raise _usage("-c/--config applies to pcap inputs only (EVE files are read as they are)")
    for p in eves:
        events.extend(read_eve(p))
    res = evaluate(events, slots, grace_s=args.grace, span_us=span, inputs=args.inputs,
                   labels_path=args.labels)
    if not args.quiet:
        print(format_table(res))
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(res, fh, indent=1)
                fh.write("\n")
        except OSError as exc:
            raise EvalError(f"{args.json}: cannot write: {exc.strerror}") from None
    if args.plot:
        write_plot(res, args.plot)
    if args.drift and pcaps:
        from .learn import drift_lines

        for line in drift_lines(args.config, pcaps, args.labels):
            print(line)
    for e in errors:
        print(f"netsensor: {e}", file=sys.stderr)
    return EXIT_INPUT if errors else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netsensor")
    add_eval_parser(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())

