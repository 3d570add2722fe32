"""The rule matching stage: loaded rules against every batch, EVE `alert` events out.

Per batch (all numpy over the batch, no packet x rule loop in Python):
  1. header tests (protocol, addresses, ports, `<>`) once per distinct rule header, then
     flow and header keywords once per distinct keyword combination;
  2. inspection buffers: packet payloads, plus TCP stream chunks (sensor.detect.rules.stream);
  3. one prefilter (sensor.detect.rules.prefilter) per kind of buffer (stream data, payload
     of a packet that went into the stream, other payload), holding only the rules that
     inspect that kind, finds which buffers hold which fast patterns; header and keyword
     masks are then computed only for those candidates' prekeys and packets, and only the
     (buffer, rule) pairs that pass them run the exact content/pcre evaluation;
  4. matches are walked in packet order, rules in Suricata's order (pass, drop, reject,
     alert; flowbit setters before readers; priority), applying flowbits, IP-only rules
     (first packet of each flow direction), pass, suppress/threshold and the alert limit.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...community_id import community_id
from ...config import Config
from ...decode import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, DecodedBatch
from ...flow import T_EST, EndedFlows, FlowTable
from ...output.eve import dumps, fmt_ts, ip_bytes, ip_str, proto_name
from .classification import ClassificationTable, load_classification
from .content import Content
from .iponly import split_indexable
from .loader import RuleSet, load_rules
from .mlverdict import reject_ml_rules, uses_ml
from .parser import Rule
from .payload import match_payload
from .prefilter import Prefilter, fast_pattern
from .stream import Session, flush, on_packet
from .streamsize import SS_SESSION, final_sizes
from .streamsize import add_columns as add_stream_size_columns
from .streamsize import update as stream_size_update
from .threshold_config import ThresholdConfig, load_threshold_config
from .thresholding import Thresholds

ACTION_ORDER = {"pass": 0, "drop": 1, "reject": 2, "alert": 3}
PACKET_ALERT_MAX = 15  # Suricata's packet-alert-max default
PORT_PROTOS = (6, 17, 132)
# Alert lines put this string where the `alert` object goes and then splice in the rule's
# pre-encoded object: its encoding ("\u0000" escapes) cannot occur in the fields before it
_ALERT_MARK = "\x00alert\x00"
_ALERT_MARK_JSON = dumps(_ALERT_MARK)
ICMP_ECHO = {PROTO_ICMP: (0, 8, 13, 14, 15, 16, 17, 18), PROTO_ICMPV6: (128, 129)}
DEFAULT_CLASSIFICATION = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
    "rules", "classification.config")

# per flow mode (FlowTable column rs_mode)
MODE_UNSET, MODE_SESSION, MODE_MIDSTREAM, MODE_PACKET, MODE_IGNORED = 0, 1, 2, 3, 4
UNIT_PACKET, UNIT_STREAM = 0, 1
# per flow (FlowTable column rs_stream): does a rule's header let it see the TCP stream
STREAM_UNDECIDED, STREAM_NEEDED, STREAM_SKIPPED = 0, 1, 2
MIDSTREAM_POLICIES = ("ignore", "auto", "pass-flow", "bypass", "drop-flow", "drop-packet",
                      "pass-packet", "reject")


class RuleLoadError(Exception):
    """A rule file cannot be read, or (on request) some rule was rejected."""


@dataclass
class CompiledRule:
    """A rule plus what the engine precomputes for it."""

    rule: Rule
    order: int
    prekey: int
    has_payload: bool
    req_packet: bool  # Suricata's SIG_FLAG_REQUIRE_PACKET: packet payload inspected
    req_stream: bool  # SIG_FLAG_REQUIRE_STREAM: stream data inspected first
    only_stream: bool  # SIG_FLAG_REQUIRE_STREAM_ONLY
    iponly: bool
    like_iponly: bool
    signature: dict[str, Any]
    metadata: dict[str, list[str]] | None
    summary: str  # "[gid:sid:rev] msg", for the replay summary
    alert_json: str = ""  # EVE `alert` object of the rule's usual alert, encoded


def _header_key(r: Rule) -> tuple:
    any_ports = r.src_ports.literal_any and r.dst_ports.literal_any
    return (r.proto, r.src, r.src_ports, r.dst, r.dst_ports, r.direction, any_ports)


def _prekey(r: Rule) -> tuple:
    return (_header_key(r), r.flow, r.dsize, r.ttl, r.itype, r.icode, r.icmp_id, r.icmp_seq,
            r.ip_proto, r.ip_id, r.window, r.seq, r.ack, r.tos, r.sameip, r.flags, r.fragbits,
            r.ml_class, r.ml_score, r.stream_size)


def _packet_keywords(r: Rule) -> tuple:
    """The rule's tests on a packet's own header fields (None where absent)."""
    return (r.dsize, r.ttl, r.itype, r.icode, r.icmp_id, r.icmp_seq, r.ip_proto, r.ip_id,
            r.window, r.seq, r.ack, r.tos, r.flags, r.fragbits, r.stream_size or None)


def _verdict(c: dict[str, np.ndarray], rows: np.ndarray,
             ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The model's verdict on the flows at `rows` as the flow event reports it: class index
    (the class over its threshold, else 0 = benign; -1 = no window scored yet) and the
    highest attack-class probability. (None, None) without a model stage."""
    if "ml_windows" not in c:
        return None, None
    scored = c["ml_windows"][rows] > 0
    cls = np.where(scored, np.where(c["ml_over"][rows], c["ml_class"][rows], 0), -1)
    return cls.astype(np.int16), c["ml_score"][rows].astype(np.float32)


def _is_iponly(r: Rule) -> bool:
    """Suricata's SignatureIsIPOnly for our keyword subset (ml.* rules look at every packet:
    the verdict changes during the flow)."""
    if r.payload or r.flow is not None or uses_ml(r):
        return False
    if any(fb.command in ("isset", "isnotset") for fb in r.flowbits):
        return False
    if not (r.src_ports.literal_any and r.dst_ports.literal_any):
        return False
    return all(k is None for k in _packet_keywords(r)) and not r.sameip


def _is_like_iponly(r: Rule) -> bool:
    """IP-only but for its ports: Suricata applies a pass of such a rule to the flow."""
    if r.src_ports.literal_any and r.dst_ports.literal_any:
        return False
    if r.payload or r.flow is not None or uses_ml(r):
        return False
    if any(fb.command in ("isset", "isnotset") for fb in r.flowbits):
        return False
    return all(k is None for k in _packet_keywords(r)) and not r.sameip


def _stream_flags(r: Rule) -> dict[str, bool]:
    """Which buffers a payload rule inspects, as Suricata 7 decides it (SigValidate).

    dsize and flow:no_stream require the packet; flow:only_stream the stream only. Other
    payload rules that can see TCP (proto tcp or ip) inspect the stream and fall back to
    the payload of packets that were not added to it; one with a depth or offset on any
    content also inspects every packet's own payload.
    """
    fl = r.flow
    req_packet = r.dsize is not None or (fl is not None and fl.stream == "no")
    only = fl is not None and fl.stream == "only"
    req_stream = only
    if r.payload and not req_packet and not req_stream and r.proto in ("tcp", "ip"):
        req_stream = True
        req_packet = any(isinstance(c, Content) and (c.depth is not None or
                                                      c.offset is not None)
                         for c in r.payload)
    return {"req_packet": req_packet, "req_stream": req_stream, "only_stream": only}


def stream_rules(rules: list[CompiledRule]) -> list[Rule]:
    """The rules a TCP session exists for: those that can inspect stream data, or whose
    packet inspection depends on whether the packet went into the stream (req_stream).
    A udp/icmp header never matches a TCP packet, so those rules do not count."""
    return [cr.rule for cr in rules if cr.req_stream and cr.rule.proto not in ("udp", "icmp")]


def flows_need_stream(rules: list[Rule], ipver: np.ndarray, src_hi: np.ndarray,
                      src_lo: np.ndarray, dst_hi: np.ndarray, dst_lo: np.ndarray,
                      sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
    """Per TCP flow (given by one packet of it): whether one of `rules` has a header that
    can match a packet of the flow. Every packet of a TCP flow carries its addresses and
    ports in one of two orientations, so a header that matches neither can never see the
    flow's stream, whatever its direction (`->`, `<>`), negations, `any` or port groups:
    such flows need no Session (same tests as RuleStage._header_mask)."""
    n = len(ipver)
    need = np.zeros(n, dtype=bool)
    if not n:
        return need
    sides = {"s": _side(ipver, src_hi, src_lo), "d": _side(ipver, dst_hi, dst_lo)}
    port_of = {"s": sport, "d": dport}
    seen: set[tuple] = set()
    for r in rules:
        key = (r.src, r.src_ports, r.dst, r.dst_ports)
        if key in seen:
            continue
        seen.add(key)
        for a, b in (("s", "d"), ("d", "s")):
            w = np.ones(n, dtype=bool)
            if not r.src.is_any:
                w &= _addr_mask(r.src, n, sides[a])
            if not r.dst.is_any:
                w &= _addr_mask(r.dst, n, sides[b])
            if not r.src_ports.is_any:
                w &= r.src_ports.mask(port_of[a])
            if not r.dst_ports.is_any:
                w &= r.dst_ports.mask(port_of[b])
            need |= w
        if need.all():
            break
    return need


def _fb_rank(r: Rule) -> int:
    sets = any(fb.command in ("set", "unset", "toggle") for fb in r.flowbits)
    reads = any(fb.command in ("isset", "isnotset") for fb in r.flowbits)
    if sets and not reads:
        return 0
    if sets and reads:
        return 1
    if reads:
        return 2
    return 3


def _metadata(r: Rule) -> dict[str, list[str]] | None:
    if not r.metadata:
        return None
    out: dict[str, list[str]] = {}
    for k, v in r.metadata:
        out.setdefault(k, []).insert(0, v)  # Suricata 7.0.10 lists the last value first
    return {k: out[k] for k in sorted(out)}


@dataclass
class View:
    """Packets the rules look at: real packets of a batch, or flow-end pseudo packets."""

    slot: np.ndarray
    flow_id: np.ndarray
    proto: np.ndarray
    ipver: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    to_server: np.ndarray
    established: np.ndarray
    first_dir: np.ndarray  # first packet of its flow in its direction (IP-only rules)
    ts: np.ndarray
    plen: np.ndarray
    ttl: np.ndarray
    tcp_flags: np.ndarray
    tcp_seq: np.ndarray
    tcp_ack: np.ndarray
    tcp_win: np.ndarray
    icmp_type: np.ndarray
    icmp_code: np.ndarray
    icmp_id: np.ndarray
    icmp_seq: np.ndarray
    ip_id: np.ndarray
    tos: np.ndarray
    frag_bits: np.ndarray
    vlan0: np.ndarray
    active: np.ndarray  # flow not ignored/passed
    pcap_cnt: np.ndarray  # -1: none
    pkt_src: str
    outer: np.ndarray | None = None  # tunnelled packets: EVE `tunnel` object per packet
    ml_class: np.ndarray | None = None  # the flow's model verdict (see _verdict); None: no
    ml_score: np.ndarray | None = None  # model stage or no ml.* rule
    ss_client: np.ndarray | None = None  # stream_size: next_seq - isn per side (int64,
    ss_server: np.ndarray | None = None  # -1: no TCP session); None: no stream_size rule

    def __len__(self) -> int:
        return len(self.slot)


@dataclass
class _Side:
    """One address side of a view, split by IP version once for all address sets."""

    v4: np.ndarray  # positions of IPv4 packets
    v4_addr: np.ndarray  # their addresses, uint32
    v6: np.ndarray  # positions of IPv6 packets
    v6_uniq: list[int]  # their distinct addresses, as Python ints
    v6_inv: np.ndarray  # per IPv6 packet: index into v6_uniq


def _side(ipver: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> _Side:
    v4 = np.flatnonzero(ipver == 4)
    v6 = np.flatnonzero(ipver == 6)
    uniq: list[int] = []
    inv = np.zeros(0, dtype=np.int64)
    if len(v6):
        hi6, lo6 = hi[v6], lo[v6]
        order = np.lexsort((lo6, hi6))  # np.unique(axis=0) does the same, much slower
        hs, ls = hi6[order], lo6[order]
        new = np.r_[True, (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])]
        inv = np.empty(len(v6), dtype=np.int64)
        inv[order] = np.cumsum(new) - 1
        uniq = [(h << 64) | low for h, low in zip(hs[new].tolist(), ls[new].tolist(),
                                                   strict=True)]
    return _Side(v4, lo[v4].astype(np.uint32), v6, uniq, inv)


def _addr_mask(aset: Any, n: int, side: _Side) -> np.ndarray:
    if aset.is_any:
        return np.ones(n, dtype=bool)
    out = np.zeros(n, dtype=bool)
    if len(side.v4):
        out[side.v4] = aset.mask_v4(side.v4_addr)
    if len(side.v6):
        got = np.array([aset.contains(a, True) for a in side.v6_uniq], dtype=bool)
        out[side.v6] = got[side.v6_inv]
    return out


@dataclass
class _BufferGroup:
    """The payload rules that may inspect one kind of buffer, keyed on fast patterns."""

    prefilter: Prefilter
    fp_rule_arr: list[np.ndarray]  # per pattern id: rule orders
    fp_counts: np.ndarray
    nofp_arr: np.ndarray  # rules without a fast pattern: candidates for every buffer

    @staticmethod
    def build(rules: list[CompiledRule]) -> _BufferGroup:
        pats: dict[bytes, int] = {}
        by_pat: list[list[int]] = []
        nofp: list[int] = []
        for cr in rules:
            fp = fast_pattern(cr.rule.payload)
            if fp is None:
                nofp.append(cr.order)
                continue
            pid = pats.setdefault(fp, len(pats))
            if pid == len(by_pat):
                by_pat.append([])
            by_pat[pid].append(cr.order)
        return _BufferGroup(Prefilter(list(pats)),
                            [np.asarray(v, dtype=np.int64) for v in by_pat],
                            np.asarray([len(v) for v in by_pat], dtype=np.int64),
                            np.asarray(nofp, dtype=np.int64))

    def candidates(self, bufs: list[bytes]) -> tuple[np.ndarray, np.ndarray] | None:
        """(buffer index, rule order) of every rule whose fast pattern the buffer holds,
        plus every rule without a fast pattern."""
        lens = np.fromiter((len(b) for b in bufs), dtype=np.int64, count=len(bufs))
        starts = np.cumsum(lens) - lens
        pairs_u, pairs_p = self.prefilter.search(b"".join(bufs), starts, starts + lens)
        cand_u: list[np.ndarray] = []
        cand_r: list[np.ndarray] = []
        if len(pairs_u):
            cand_u.append(np.repeat(pairs_u, self.fp_counts[pairs_p]))
            cand_r.append(np.concatenate([self.fp_rule_arr[p] for p in pairs_p.tolist()]))
        if len(self.nofp_arr):
            cand_u.append(np.repeat(np.arange(len(bufs)), len(self.nofp_arr)))
            cand_r.append(np.tile(self.nofp_arr, len(bufs)))
        if not cand_u:
            return None
        return np.concatenate(cand_u), np.concatenate(cand_r)


def _has_tfo(data: np.ndarray, l4: int, payload_at: int) -> bool:
    """Does the TCP header at l4 carry a Fast Open option (kind 34, or 254 + 0xf989)?"""
    opts = data[l4 + 20:payload_at].tobytes()
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return False
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return False
        if kind == 34 or (kind == 254 and opts[i + 2:i + 4] == b"\xf9\x89"):
            return True  # RFC 7413, or the experimental option with its magic
        i += opts[i + 1]
    return False


def _source_target(alert: dict[str, Any], target: str, ev: dict[str, Any]) -> None:
    """`target:` adds alert.source and alert.target (Suricata: target is the packet's
    source or destination, source the other end)."""
    src = {"ip": ev["src_ip"]}
    dst = {"ip": ev["dest_ip"]}
    if "src_port" in ev:
        src["port"], dst["port"] = ev["src_port"], ev["dest_port"]
    alert["source"], alert["target"] = (dst, src) if target == "src_ip" else (src, dst)


def _subview(v: View, idx: np.ndarray) -> View:
    """The packets of `v` at positions `idx`."""
    fields = {f: getattr(v, f) for f in v.__dataclass_fields__}
    return View(**{f: (a if f == "pkt_src" or a is None else a[idx])
                   for f, a in fields.items()})


def _outer(batch: Any, idx: np.ndarray) -> np.ndarray | None:
    """The outer packet of each tunnelled packet (sensor.tunnel), None for captured ones."""
    parents = getattr(batch, "parents", None)
    if parents is None:
        return None
    return np.asarray(parents.outer, dtype=object)[idx]


class RuleStage:
    """Pipeline stage: Suricata rules over each batch, EVE alert lines out."""

    def __init__(self, cfg: Config, ruleset: RuleSet | None = None,
                 ml_classes: tuple[str, ...] | None = None):
        """`ml_classes`: the model's classes when the model stage runs (ml.* rules need it;
        without it they are moved to the ruleset's rejected rules)."""
        self.cfg = cfg
        vars_ = {"address-groups": dict(cfg.vars.address_groups),
                 "port-groups": dict(cfg.vars.port_groups)}
        self.ruleset = ruleset if ruleset is not None else load_rules(cfg.rules.files, vars_)
        self.ml_classes = tuple(ml_classes) if ml_classes is not None else None
        reject_ml_rules(self.ruleset, self.ml_classes)
        self.loaded_at = time.time()
        self.classes = self._classification(cfg.rules.classification_file)
        tcfg: ThresholdConfig | None = None
        if cfg.rules.threshold_file:
            try:
                tcfg = load_threshold_config(cfg.rules.threshold_file, vars_)
            except OSError as exc:
                raise RuleLoadError(f"{cfg.rules.threshold_file}: cannot read threshold "
                                    f"config: {exc.strerror or exc}") from None
        self.threshold_errors = [str(e) for e in tcfg.errors] if tcfg else []
        self.thresholds = Thresholds(tcfg)
        self.midstream = bool(getattr(cfg.rules, "midstream", False))
        self.midstream_policy = str(getattr(cfg.rules, "midstream_policy", "ignore"))
        self.async_oneside = bool(getattr(cfg.rules, "async_oneside", False))
        self.stream_inspection = bool(getattr(cfg.rules, "stream_inspection", True))
        if self.midstream_policy not in MIDSTREAM_POLICIES:
            raise RuleLoadError(f"rules.midstream_policy must be one of "
                                f"{', '.join(MIDSTREAM_POLICIES)}, not "
                                f"'{self.midstream_policy}'")
        self.alert_max = int(getattr(cfg.rules, "packet_alert_max", PACKET_ALERT_MAX))
        eve = cfg.outputs.eve
        self.with_cid = eve.community_id
        self.cid_seed = eve.community_id_seed
        self._set_ids: dict[Any, int] = {}
        self._rule_ids: dict[int, tuple[int, int, int, int, int]] = {}
        self._rule_keep: list[Rule] = []
        self._compile(self.ruleset.rules)
        self.flowbits: dict[int, set[str]] = {}
        self.sessions: dict[int, Session] = {}
        self.cid_cache: dict[int, str] = {}
        self.alert_sigs: list[str] = []
        self.stats: Counter[str] = Counter()
        self._cols_ready: FlowTable | None = None

    # -- setup ---------------------------------------------------------------------------
    @staticmethod
    def _classification(path: str) -> ClassificationTable:
        if not path:
            path = DEFAULT_CLASSIFICATION if os.path.isfile(DEFAULT_CLASSIFICATION) else ""
        if not path:
            return ClassificationTable({}, [])
        try:
            return load_classification(path)
        except OSError as exc:
            raise RuleLoadError(f"{path}: cannot read classification config: "
                                f"{exc.strerror or exc}") from None

    def _compile(self, rules: list[Rule]) -> None:
        def sort_key(ir: tuple[int, Rule]) -> tuple:
            i, r = ir
            prio = self.classes.severity(r.classtype, r.priority)
            return (ACTION_ORDER.get(r.action, 3), _fb_rank(r), prio, i)

        ordered = [r for _, r in sorted(enumerate(rules), key=sort_key)]
        self.rules: list[CompiledRule] = []
        prekeys: dict[tuple, int] = {}
        self.prekey_rules: list[Rule] = []
        for order, r in enumerate(ordered):
            pk = prekeys.setdefault(_prekey(r), len(prekeys))
            if pk == len(self.prekey_rules):
                self.prekey_rules.append(r)
            sig = {"action": "allowed" if r.action != "pass" else "pass", "gid": r.gid,
                   "signature_id": r.sid, "rev": r.rev, "signature": r.msg,
                   "category": self.classes.category(r.classtype) or "",
                   "severity": self.classes.severity(r.classtype, r.priority)}
            self.rules.append(CompiledRule(
                rule=r, order=order, prekey=pk, has_payload=bool(r.payload),
                **_stream_flags(r),
                iponly=_is_iponly(r), like_iponly=_is_like_iponly(r), signature=sig,
                metadata=_metadata(r), summary=f"[{r.gid}:{r.sid}:{r.rev}] {r.msg}"))
            cr = self.rules[-1]
            cr.alert_json = dumps({**sig, "metadata": cr.metadata} if cr.metadata else sig)
        self.header_rules = [cr.order for cr in self.rules if not cr.has_payload]
        self.has_ml = any(uses_ml(cr.rule) for cr in self.rules)
        self.has_stream_size = any(cr.rule.stream_size for cr in self.rules)
        # ml.* rules about the flow only (no payload, no packet header test): they also get
        # a flow-end look at the final verdict (on_flows_ended)
        self.ml_flow_end = [o for o in self.header_rules if uses_ml(self.rules[o].rule) and
                            all(k is None for k in _packet_keywords(self.rules[o].rule)) and
                            not self.rules[o].rule.sameip]
        ipo = [(o, self.rules[o].rule) for o in self.header_rules if self.rules[o].iponly]
        self.ipo_src, self.ipo_dst, self.ipo_rest = split_indexable(ipo)
        # one prefilter per kind of buffer, holding only the rules that inspect that kind:
        # stream data; the payload of a packet that went into the stream (rules that
        # need the packet); the payload of any other packet
        payload = [cr for cr in self.rules if cr.has_payload]
        self.buffer_groups = (
            _BufferGroup.build([cr for cr in payload if cr.req_stream]),
            _BufferGroup.build([cr for cr in payload if not cr.req_stream or cr.req_packet]),
            _BufferGroup.build([cr for cr in payload if not cr.req_stream or cr.req_packet or
                                not cr.only_stream]))
        self.pk_of = np.asarray([cr.prekey for cr in self.rules], dtype=np.int64)
        self.req_p = np.asarray([cr.req_packet for cr in self.rules], dtype=bool)
        self.req_s = np.asarray([cr.req_stream for cr in self.rules], dtype=bool)
        self.only_s = np.asarray([cr.only_stream for cr in self.rules], dtype=bool)
        # TCP sessions only for flows a stream rule's header can match (rs_stream column)
        self.stream_rules = stream_rules(self.rules)
        self.stream_always = any(r.src.is_any and r.dst.is_any and r.src_ports.is_any and
                                 r.dst_ports.is_any for r in self.stream_rules)

    # -- stage protocol ------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        out = dict(self.stats)
        out["detect.engines.rules_loaded"] = self.ruleset.loaded
        out["detect.engines.rules_failed"] = self.ruleset.rejected
        out["detect.engines.last_reload"] = int(self.loaded_at)
        return out

    def drain_alert_signatures(self) -> list[str]:
        """Signatures alerted since the last call (Pipeline.note_alert counts them)."""
        out, self.alert_sigs = self.alert_sigs, []
        return out

    def flow_extra(self, ended: EndedFlows) -> Any:
        return None

    def _ensure_cols(self, flows: FlowTable) -> None:
        if self._cols_ready is flows:
            return
        if "rs_mode" not in flows.cols:
            flows.add_column("rs_mode", np.uint8, 0)
            flows.add_column("rs_pass", np.bool_, False)
            flows.add_column("rs_dirs", np.uint8, 0)
            flows.add_column("rs_swap", np.bool_, False)
        if "rs_stream" not in flows.cols:
            flows.add_column("rs_stream", np.uint8, STREAM_UNDECIDED)
        else:  # decided by another ruleset (a reload): decide again on the next packet
            flows.cols["rs_stream"][:] = STREAM_UNDECIDED
        if self.has_stream_size:  # stream_size: the TCP session's sequence numbers
            add_stream_size_columns(flows)
        if self.has_ml and "rs_ml_cls" not in flows.cols:  # the verdict packets last saw
            flows.add_column("rs_ml_cls", np.int16, -2)
            flows.add_column("rs_ml_score", np.float32, -2.0)
        self._cols_ready = flows

    def on_batch(self, ctx: Any) -> list[str]:
        if not self.rules:
            return []
        flows: FlowTable = ctx.flows
        self._ensure_cols(flows)
        view, units = self._batch_view(ctx)
        lines = self._flowless(ctx)
        if view is None or not len(view):
            return lines
        return self._run(view, units, flows, ctx) + lines

    def _flowless(self, ctx: Any) -> list[str]:
        """Packets with a valid IP header but a transport header Suricata rejects (e.g. a
        TCP data offset beyond the packet): no flow, but Suricata still runs the rules on
        them, logging ports as 0 and no flow fields."""
        d: DecodedBatch = ctx.decoded
        idx = np.flatnonzero((d.ipver > 0) & ~d.ok & ~d.fragment &
                             np.isin(d.proto, PORT_PROTOS + (PROTO_ICMP, PROTO_ICMPV6)))
        if not len(idx):
            return []
        batch = ctx.batch
        n = len(idx)
        z = np.zeros(n, dtype=np.int64)
        cnt = batch.cnt_at(idx) if batch.first_cnt > 0 else z - 1
        v = View(
            slot=z - 1, flow_id=z.astype(np.uint64), proto=d.proto[idx], ipver=d.ipver[idx],
            src_hi=d.src_hi[idx], src_lo=d.src_lo[idx], dst_hi=d.dst_hi[idx],
            dst_lo=d.dst_lo[idx], sport=z, dport=z, to_server=np.ones(n, dtype=bool),
            established=np.zeros(n, dtype=bool), first_dir=np.ones(n, dtype=bool),
            ts=batch.ts_us[idx], plen=np.zeros(n, dtype=np.int32), ttl=d.ttl[idx],
            tcp_flags=z, tcp_seq=z, tcp_ack=z, tcp_win=z, icmp_type=d.icmp_type[idx],
            icmp_code=d.icmp_code[idx], icmp_id=d.icmp_id[idx], icmp_seq=d.icmp_seq[idx],
            ip_id=d.ip_id[idx], tos=d.tos[idx], frag_bits=d.frag_bits[idx],
            vlan0=d.vlan0[idx], active=np.ones(n, dtype=bool), pcap_cnt=cnt,
            pkt_src=getattr(batch, "pkt_src", "wire/pcap"), outer=_outer(batch, idx))
        self._added = np.zeros(n, dtype=bool)
        return self._run(v, [], None, None)

    def on_flows_ended(self, ended: EndedFlows) -> list[str]:
        if not self.rules or not len(ended):
            return []
        fids = ended.cols["flow_id"].tolist()
        lines: list[str] = []
        pseudo: list[tuple[int, bool, bytes]] = []
        for i, fid in enumerate(fids):
            sess = self.sessions.pop(fid, None)
            if sess is None:
                continue
            for to_server, chunk in flush(sess):
                pseudo.append((i, to_server, chunk))
        if pseudo:
            lines = self._pseudo(ended, pseudo)
        if self.ml_flow_end:
            lines += self._verdict_pass(ended)
        for fid in fids:  # flowbits still count for the flow-end pseudo packets above
            self.flowbits.pop(fid, None)
            self.cid_cache.pop(fid, None)
        return lines

    # -- building what the rules see -------------------------------------------------------
    def _batch_view(self, ctx: Any) -> tuple[View | None, list[tuple[int, int, bytes]]]:
        d: DecodedBatch = ctx.decoded
        upd = ctx.update
        batch = ctx.batch
        flows: FlowTable = ctx.flows
        idx = upd.idx
        if not len(idx):
            return None, []
        c = flows.cols
        slot = upd.slot
        proto = d.proto[idx]
        flags = d.tcp_flags[idx]
        is_tcp = proto == PROTO_TCP
        # flow mode, decided on the flow's first packet
        first = upd.pkt_no == 1
        pickup = np.zeros(len(idx), dtype=bool)  # stream_size: a session picked up midstream
        if first.any():
            syn = is_tcp & ((flags & 0x12) == 0x02)
            policy_ignore = self.midstream_policy in ("ignore", "auto")
            session = MODE_SESSION if self.stream_inspection else MODE_PACKET
            mode = np.where(~is_tcp, MODE_PACKET, np.where(
                syn, session, np.where(
                    ~np.bool_(policy_ignore), MODE_IGNORED,
                    MODE_MIDSTREAM if self.midstream and self.stream_inspection
                    else MODE_PACKET)))
            c["rs_mode"][slot[first]] = mode[first].astype(np.uint8)
            # a session picked up on a SYN/ACK: its sender is the server (Suricata swaps)
            swap = (mode == MODE_MIDSTREAM) & ((flags & 0x12) == 0x12)
            c["rs_swap"][slot[first]] = swap[first]
            if self.has_stream_size:  # Suricata keeps a TCP session from a SYN (or pickup)
                # midstream: picked up on a packet with ACK (not on a bare FIN, nor a RST)
                pickup = (first & is_tcp & ~syn & ((flags & 0x14) == 0x10) &
                          (mode != MODE_IGNORED) & self.midstream)
                c["ss_bits"][slot[first & (syn | pickup)]] |= SS_SESSION
        mode = c["rs_mode"][slot]
        active = (mode != MODE_IGNORED) & ~c["rs_pass"][slot]
        to_server = upd.to_server ^ c["rs_swap"][slot]
        # first packet of each flow direction, for IP-only rules
        dirbit = np.where(to_server, 1, 2).astype(np.uint8)
        key = slot.astype(np.int64) * 2 + (~to_server).astype(np.int64)
        _, firsts = np.unique(key, return_index=True)
        first_dir = np.zeros(len(idx), dtype=bool)
        first_dir[firsts] = True
        first_dir &= (c["rs_dirs"][slot] & dirbit) == 0
        np.bitwise_or.at(c["rs_dirs"], slot, dirbit)
        ports = np.isin(proto, PORT_PROTOS)
        both = upd.both_seen
        established = np.where(is_tcp, upd.tcp_est | (mode == MODE_MIDSTREAM), both)
        cnt = np.full(len(idx), -1, dtype=np.int64)
        if batch.first_cnt > 0:
            cnt = batch.cnt_at(idx)
        view = View(
            slot=slot, flow_id=c["flow_id"][slot], proto=proto, ipver=d.ipver[idx],
            src_hi=d.src_hi[idx], src_lo=d.src_lo[idx], dst_hi=d.dst_hi[idx],
            dst_lo=d.dst_lo[idx], sport=np.where(ports, d.sport[idx], 0),
            dport=np.where(ports, d.dport[idx], 0), to_server=to_server,
            established=established, first_dir=first_dir, ts=batch.ts_us[idx],
            plen=d.plen[idx], ttl=d.ttl[idx], tcp_flags=flags, tcp_seq=d.tcp_seq[idx],
            tcp_ack=d.tcp_ack[idx], tcp_win=d.tcp_win[idx], icmp_type=d.icmp_type[idx],
            icmp_code=d.icmp_code[idx], icmp_id=d.icmp_id[idx], icmp_seq=d.icmp_seq[idx],
            ip_id=d.ip_id[idx], tos=d.tos[idx], frag_bits=d.frag_bits[idx],
            vlan0=d.vlan0[idx], active=active, pcap_cnt=cnt,
            pkt_src=getattr(batch, "pkt_src", "wire/pcap"), outer=_outer(batch, idx))
        if self.has_stream_size:
            view.ss_client, view.ss_server = stream_size_update(
                c, slot, is_tcp, to_server, flags, view.tcp_seq, view.tcp_ack, view.plen,
                pickup)
        if self.has_ml:  # the model stage ran first: this batch's closed windows count
            view.ml_class, view.ml_score = _verdict(c, slot)
            if view.ml_class is not None:
                c["rs_ml_cls"][slot] = view.ml_class
                c["rs_ml_score"][slot] = view.ml_score
        # inspection buffers
        units: list[tuple[int, int, bytes]] = []
        data = batch.data
        raw = data.tobytes()  # slicing bytes is cheaper than numpy slice + tobytes per packet
        poff = d.poff[idx]
        plen = view.plen
        stream_pkt = active & is_tcp & ((mode == MODE_SESSION) | (mode == MODE_MIDSTREAM))
        if not self.stream_always and stream_pkt.any():
            stream_pkt &= self._stream_decision(d, idx, slot, stream_pkt, c)
        added = np.zeros(len(idx), dtype=bool)
        sp = np.flatnonzero(stream_pkt)
        if len(sp):
            fids = view.flow_id[sp].tolist()
            ts_l = to_server[sp].tolist()
            fl_l = flags[sp].tolist()
            seq_l = view.tcp_seq[sp].tolist()
            ack_l = view.tcp_ack[sp].tolist()
            off_l = poff[sp].tolist()
            len_l = plen[sp].tolist()
            sessions = self.sessions
            l4 = d.l4[idx]
            not_added: list[int] = []
            for j, pos in enumerate(sp.tolist()):
                fid = fids[j]
                sess = sessions.get(fid)
                if sess is None:
                    sess = sessions[fid] = Session()
                n = len_l[j]
                payload = raw[off_l[j]:off_l[j] + n] if n > 0 else b""
                if payload and fl_l[j] & 0x02:
                    if not _has_tfo(data, int(l4[sp[j]]), off_l[j]):
                        payload = b""  # SYN data without Fast Open: packet inspection
                        not_added.append(pos)
                chunk, took = on_packet(sess, ts_l[j], fl_l[j], seq_l[j], ack_l[j], payload,
                                        self.async_oneside)
                if payload and not took:
                    not_added.append(pos)
                if chunk:
                    units.append((pos, UNIT_STREAM, chunk))
            added[sp] = plen[sp] > 0
            added[not_added] = False
        self._added = added
        pk = np.flatnonzero(active & (plen > 0))
        if len(pk):
            for pos, o, n in zip(pk.tolist(), poff[pk].tolist(), plen[pk].tolist(),
                                 strict=True):
                units.append((pos, UNIT_PACKET, raw[o:o + n]))
        return view, units

    def _stream_decision(self, d: DecodedBatch, idx: np.ndarray, slot: np.ndarray,
                         stream_pkt: np.ndarray, c: dict[str, np.ndarray]) -> np.ndarray:
        """Per packet: whether its flow needs a Session. Decided once per flow, on its
        first packet that would go into the stream, and kept in the rs_stream column."""
        col = c["rs_stream"]
        state = col[slot]
        und = np.flatnonzero(stream_pkt & (state == STREAM_UNDECIDED))
        if len(und):
            uslot, first = np.unique(slot[und], return_index=True)
            at = idx[und[first]]
            need = flows_need_stream(self.stream_rules, d.ipver[at], d.src_hi[at],
                                     d.src_lo[at], d.dst_hi[at], d.dst_lo[at],
                                     d.sport[at], d.dport[at])
            col[uslot] = np.where(need, STREAM_NEEDED, STREAM_SKIPPED)
            state = col[slot]
        return state != STREAM_SKIPPED

    # -- matching ------------------------------------------------------------------------
    def _prekey_masks(self, v: View, needed: set[int]) -> dict[int, np.ndarray]:
        hmasks: dict[tuple, np.ndarray] = {}
        out: dict[int, np.ndarray] = {}
        n = len(v)
        for pk in needed:
            r = self.prekey_rules[pk]
            hk = self._ids(r)[0]
            m = hmasks.get(hk)
            if m is None:
                m = self._header_mask(r, v)
                hmasks[hk] = m
            m = m & v.active
            if m.any():
                m = m & self._keyword_mask(r, v, m)
            out[pk] = m
        del n
        return out

    def _iponly_indexed(self, sub: View) -> list[tuple[np.ndarray, np.ndarray]]:
        """IP-only rules found through the address index, checked on their other side."""
        out = []
        v4 = sub.ipver == 4
        for index, side in ((self.ipo_src, "src"), (self.ipo_dst, "dst")):
            addr = sub.src_lo if side == "src" else sub.dst_lo
            pos, rules = index.candidates(addr, v4)
            if not len(pos):
                continue
            keep = np.zeros(len(pos), dtype=bool)
            for o in np.unique(rules).tolist():
                sel = np.flatnonzero(rules == o)
                p = pos[sel]
                part = _subview(sub, p)
                keep[sel] = self._header_mask(self.rules[o].rule, part)
            out.append((pos[keep], rules[keep]))
        return out

    def _ids(self, r: Rule) -> tuple[int, int, int, int, int]:
        """Small ints for r's header and its address and port sets (equal value, equal
        id), so the per-batch mask caches do not hash the sets again and again."""
        got = self._rule_ids.get(id(r))
        if got is None:
            intern = self._set_ids
            got = tuple(intern.setdefault(x, len(intern)) for x in (
                _header_key(r), r.src, r.dst, r.src_ports, r.dst_ports))
            self._rule_ids[id(r)] = got
            self._rule_keep.append(r)  # keeps id(r) unique while cached
        return got  # type: ignore[return-value]

    def _header_mask(self, r: Rule, v: View) -> np.ndarray:
        if getattr(self, "_cache_view", None) is not v:  # address/port masks of this view
            self._cache_view = v
            self._cache: dict[tuple, np.ndarray] = {}
            self._ports = np.isin(v.proto, PORT_PROTOS)
        n = len(v)
        if r.proto == "ip":
            m = np.ones(n, dtype=bool)
        elif r.proto == "tcp":
            m = v.proto == 6
        elif r.proto == "udp":
            m = v.proto == 17
        else:
            m = (v.proto == PROTO_ICMP) | (v.proto == PROTO_ICMPV6)
        if not (r.src_ports.literal_any and r.dst_ports.literal_any):
            m &= self._ports
        if not m.any():
            return m
        cache = self._cache
        _, src_id, dst_id, sp_id, dp_id = self._ids(r)

        def addr(aset: Any, side: str) -> np.ndarray:
            key = ("a", side, src_id if aset is r.src else dst_id)
            got = cache.get(key)
            if got is None:
                split = cache.get(("side", side))
                if split is None:
                    split = cache[("side", side)] = (
                        _side(v.ipver, v.src_hi, v.src_lo) if side == "s"
                        else _side(v.ipver, v.dst_hi, v.dst_lo))
                got = _addr_mask(aset, n, split)
                cache[key] = got
            return got

        def port(pset: Any, side: str) -> np.ndarray:
            key = ("p", side, sp_id if pset is r.src_ports else dp_id)
            got = cache.get(key)
            if got is None:
                got = pset.mask(v.sport if side == "s" else v.dport)
                cache[key] = got
            return got

        def one_way(a: str, b: str) -> np.ndarray:
            w = m.copy()
            if not r.src.is_any:
                w &= addr(r.src, a)
            if not r.dst.is_any:
                w &= addr(r.dst, b)
            if not r.src_ports.is_any:
                w &= port(r.src_ports, a)
            if not r.dst_ports.is_any:
                w &= port(r.dst_ports, b)
            return w

        fwd = one_way("s", "d")
        if r.direction == "<>":
            fwd |= one_way("d", "s")
        return fwd

    def _keyword_mask(self, r: Rule, v: View, m: np.ndarray) -> np.ndarray:
        out = m.copy()
        fl = r.flow
        if fl is not None:
            if fl.direction == "to_server":
                out &= v.to_server
            elif fl.direction == "to_client":
                out &= ~v.to_server
            if fl.established is True:
                out &= v.established
            elif fl.established is False:
                out &= ~v.established
            if fl.stream == "only" and not r.payload:
                out &= False
        tcp = v.proto == PROTO_TCP
        icmp = (v.proto == PROTO_ICMP) | (v.proto == PROTO_ICMPV6)
        if r.dsize is not None:
            out &= r.dsize.mask(v.plen)
        if r.ttl is not None:
            out &= r.ttl.mask(v.ttl)
        if r.itype is not None:
            out &= icmp & r.itype.mask(v.icmp_type)
        if r.icode is not None:
            out &= icmp & r.icode.mask(v.icmp_code)
        if r.icmp_id is not None or r.icmp_seq is not None:
            echo = ((v.proto == PROTO_ICMP) & np.isin(v.icmp_type, ICMP_ECHO[PROTO_ICMP])) | (
                (v.proto == PROTO_ICMPV6) & np.isin(v.icmp_type, ICMP_ECHO[PROTO_ICMPV6]))
            out &= echo
            if r.icmp_id is not None:
                out &= v.icmp_id == r.icmp_id
            if r.icmp_seq is not None:
                out &= v.icmp_seq == r.icmp_seq
        if r.ip_proto is not None:
            out &= r.ip_proto.mask(v.proto)
        if r.ip_id is not None:
            out &= (v.ipver == 4) & (v.ip_id == r.ip_id)
        if r.window is not None:
            out &= tcp & r.window.mask(v.tcp_win)
        if r.seq is not None:
            out &= tcp & (v.tcp_seq == r.seq)
        if r.ack is not None:
            out &= tcp & (v.tcp_ack == r.ack)
        if r.tos is not None:
            out &= (v.ipver == 4) & r.tos.mask(v.tos)
        if r.sameip:
            out &= (v.src_hi == v.dst_hi) & (v.src_lo == v.dst_lo)
        if r.flags is not None:
            f = r.flags
            pf = v.tcp_flags.astype(np.int64)
            if not f.flags:
                ok = (pf == 0) if f.modifier != "!" else (pf != 0)
            else:
                x = pf & ~f.ignore & 0xFF
                if f.modifier == "*":
                    ok = (x & f.flags) > 0
                elif f.modifier == "+":
                    ok = (x & f.flags) == f.flags
                elif f.modifier == "!":
                    ok = (x & f.flags) != f.flags
                else:
                    ok = x == f.flags
            out &= tcp & ok
        if r.ml_class is not None or r.ml_score is not None:
            if v.ml_class is None or v.ml_score is None:
                out &= False
            else:
                out &= v.ml_class >= 0
                if r.ml_class is not None:
                    out &= r.ml_class.mask(v.ml_class, self.ml_classes or ())
                if r.ml_score is not None:
                    out &= r.ml_score.mask(v.ml_score)
        if r.stream_size:
            if v.ss_client is None or v.ss_server is None:
                out &= False
            else:
                out &= tcp & (v.ss_client >= 0)
                for ss in r.stream_size:
                    if ss.side == "client":
                        out &= ss.cmp.mask(v.ss_client)
                    elif ss.side == "server":
                        out &= ss.cmp.mask(v.ss_server)
                    elif ss.side == "both":
                        out &= ss.cmp.mask(v.ss_client) & ss.cmp.mask(v.ss_server)
                    else:
                        out &= ss.cmp.mask(v.ss_client) | ss.cmp.mask(v.ss_server)
        if r.fragbits is not None:
            fb = r.fragbits
            pb = v.frag_bits.astype(np.int64)
            if fb.modifier == "*":
                ok = (pb & fb.bits) > 0
            elif fb.modifier == "+":
                ok = ((pb & fb.bits) == fb.bits) & (pb - fb.bits > 0)
            elif fb.modifier == "!":
                ok = (pb & fb.bits) != fb.bits
            else:
                ok = pb == fb.bits
            out &= (v.ipver == 4) & ok
        return out

    def _matches(self, v: View, units: list[tuple[int, int, bytes]],
                 header: list[int] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, rule order, stream match) of every rule that matched; `header` limits
        the rules without payload (default: all of them, none on stream pseudo packets)."""
        pos_out: list[np.ndarray] = []
        rule_out: list[np.ndarray] = []
        str_out: list[np.ndarray] = []
        if header is None:
            header = self.header_rules if not v.pkt_src.startswith("stream") else []
        # IP-only rules only see the first packet of each flow direction: test those alone
        first = np.flatnonzero(v.first_dir & v.active)
        if header and len(first):
            sub = _subview(v, first)
            sub_masks = self._prekey_masks(sub, {self.rules[o].prekey for o in self.ipo_rest})
            for o in self.ipo_rest:
                hit = first[np.flatnonzero(sub_masks[self.rules[o].prekey])]
                if len(hit):
                    pos_out.append(hit)
                    rule_out.append(np.full(len(hit), o, dtype=np.int64))
                    str_out.append(np.zeros(len(hit), dtype=bool))
            for hit, rules in self._iponly_indexed(sub):
                pos_out.append(first[hit])
                rule_out.append(rules)
                str_out.append(np.zeros(len(hit), dtype=bool))
        other = [o for o in header if not self.rules[o].iponly]
        masks = self._prekey_masks(v, {self.rules[o].prekey for o in other})
        for o in other:
            hit = np.flatnonzero(masks[self.rules[o].prekey])
            if len(hit):
                pos_out.append(hit)
                rule_out.append(np.full(len(hit), o, dtype=np.int64))
                str_out.append(np.zeros(len(hit), dtype=bool))
        if units:
            got = self._payload_matches(v, units)
            if got is not None:
                pos_out.append(got[0])
                rule_out.append(got[1])
                str_out.append(got[2])
        if not pos_out:
            z = np.zeros(0, dtype=np.int64)
            return z, z, np.zeros(0, dtype=bool)
        p = np.concatenate(pos_out)
        r = np.concatenate(rule_out)
        s = np.concatenate(str_out)
        order = np.lexsort((~s, r, p))
        p, r, s = p[order], r[order], s[order]
        # one match per (packet, rule); a stream match wins
        first = np.r_[True, (p[1:] != p[:-1]) | (r[1:] != r[:-1])]
        return p[first], r[first], s[first]

    def _payload_matches(self, v: View, units: list[tuple[int, int, bytes]],
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(position, rule order, stream match) of the payload rules that matched.

        The prefilter pairs buffers with the rules of the fast patterns they hold; buffer
        eligibility (stream or packet data) and then the header and keyword masks drop
        pairs before the exact evaluation. Masks are computed only for the prekeys of the
        pairs left, and only on the packets those pairs are about.
        """
        u_pos = np.fromiter((u[0] for u in units), dtype=np.int64, count=len(units))
        u_stream = np.fromiter((u[1] == UNIT_STREAM for u in units), dtype=bool,
                               count=len(units))
        if hasattr(self, "_added") and len(self._added) == len(v):
            added = self._added[u_pos]
        else:
            added = np.zeros(len(units), dtype=bool)
        bufs = [u[2] for u in units]
        kind = np.where(u_stream, 0, np.where(added, 1, 2))
        cand_u: list[np.ndarray] = []
        cand_r: list[np.ndarray] = []
        for k, group in enumerate(self.buffer_groups):
            idx = np.flatnonzero(kind == k)
            if not len(idx):
                continue
            got = group.candidates([bufs[i] for i in idx.tolist()])
            if got is not None:
                cand_u.append(idx[got[0]])
                cand_r.append(got[1])
        if not cand_u:
            return None
        cu = np.concatenate(cand_u)
        crr = np.concatenate(cand_r)
        # buffer eligibility: stream buffers for stream rules; a packet's own payload for
        # packet rules, and for stream rules when it never entered the stream
        is_stream = u_stream[cu]
        req_p, req_s, only_s = self.req_p[crr], self.req_s[crr], self.only_s[crr]
        elig = np.flatnonzero(np.where(is_stream, req_s,
                                       ~req_s | req_p | (~added[cu] & ~only_s)))
        cu, crr, is_stream = cu[elig], crr[elig], is_stream[elig]
        if not len(cu):
            return None
        # header/keyword masks, per prekey, on the packets of the candidates only
        sub_idx, spos = np.unique(u_pos[cu], return_inverse=True)
        spos = spos.reshape(-1)
        sub = _subview(v, sub_idx)
        pks = self.pk_of[crr]
        upk, pk_inv = np.unique(pks, return_inverse=True)
        masks = self._prekey_masks(sub, set(upk.tolist()))
        allm = np.stack([masks[pk] for pk in upk.tolist()])  # [prekey, packet]
        keep = allm[pk_inv.reshape(-1), spos]
        sel = np.flatnonzero(keep)
        got_pos: list[int] = []
        got_rule: list[int] = []
        got_str: list[bool] = []
        lower_cache: dict[int, bytes] = {}
        rules = self.rules
        u_pos_l = u_pos.tolist()
        for ui, o, st in zip(cu[sel].tolist(), crr[sel].tolist(), is_stream[sel].tolist(),
                             strict=True):
            buf = bufs[ui]
            low = lower_cache.get(ui)
            if low is None:
                low = lower_cache[ui] = buf.lower()
            if match_payload(rules[o].rule.payload, buf, low):
                got_pos.append(u_pos_l[ui])
                got_rule.append(o)
                got_str.append(st)
        if not got_pos:
            return None
        return (np.asarray(got_pos, dtype=np.int64), np.asarray(got_rule, dtype=np.int64),
                np.asarray(got_str, dtype=bool))

    # -- decisions and output ------------------------------------------------------------
    def _run(self, v: View, units: list[tuple[int, int, bytes]], flows: FlowTable | None,
             ctx: Any, ended: EndedFlows | None = None,
             ended_rows: np.ndarray | None = None,
             header: list[int] | None = None) -> list[str]:
        pos, rule, stream = self._matches(v, units, header)
        if not len(pos):
            return []
        c = flows.cols if flows is not None else None
        pos_l, rule_l, str_l = pos.tolist(), rule.tolist(), stream.tolist()
        fid_l = v.flow_id.tolist()
        alerts: list[tuple[int, int]] = []
        self.blocked: set[int] = set()  # alerts whose rate_filter action is drop/reject
        passed_pkt = -1
        per_pkt = Counter()
        th = self.thresholds
        slot_l = v.slot.tolist()
        passed_flows: set[int] = set()
        cols: tuple[list[int], ...] | None = None
        for pos_i, o, is_stream in zip(pos_l, rule_l, str_l, strict=True):
            if pos_i == passed_pkt or (passed_flows and slot_l[pos_i] in passed_flows):
                continue
            cr = self.rules[o]
            r = cr.rule
            fid = fid_l[pos_i]
            if r.flowbits:
                if fid == 0 and c is None and ended is None:
                    continue  # no flow: no flowbits
                bits = self.flowbits.get(fid)
                ok = True
                for fb in r.flowbits:
                    if fb.command == "isset":
                        ok = bits is not None and any(nm in bits for nm in fb.names)
                    elif fb.command == "isnotset":
                        ok = bits is None or any(nm not in bits for nm in fb.names)
                    if not ok:
                        break
                if not ok:
                    continue
                for fb in r.flowbits:
                    if fb.command in ("isset", "isnotset"):
                        continue
                    if bits is None:
                        bits = self.flowbits.setdefault(fid, set())
                    nm = fb.names[0]
                    if fb.command == "set":
                        bits.add(nm)
                    elif fb.command == "unset":
                        bits.discard(nm)
                    elif nm in bits:
                        bits.remove(nm)
                    else:
                        bits.add(nm)
            if r.action == "pass":
                passed_pkt = pos_i
                if (cr.iponly or cr.like_iponly or is_stream) and c is not None:
                    c["rs_pass"][slot_l[pos_i]] = True
                    passed_flows.add(slot_l[pos_i])
                continue
            if r.noalert:
                continue
            if cols is None:  # Python ints of the columns below, once per call
                cols = tuple(a.tolist() for a in (v.ipver, v.src_hi, v.src_lo, v.dst_hi,
                                                  v.dst_lo, v.ts))
            ipv, sh, sl, dh, dl, ts_l = cols
            src = (ipv[pos_i], sh[pos_i], sl[pos_i])
            dst = (ipv[pos_i], dh[pos_i], dl[pos_i])
            if th.suppress(r.gid, r.sid, src, dst):
                self.stats["detect.alerts_suppressed"] += 1
                continue
            thr = th.threshold_for(r.gid, r.sid, r.threshold or r.detection_filter)
            if thr is not None and not th.allow(r.gid, r.sid, thr, ts_l[pos_i], src, dst):
                self.stats["detect.alerts_suppressed"] += 1
                continue
            new_action = th.rate_action(r.gid, r.sid, ts_l[pos_i], src, dst) \
                if th.rate_filters else None
            if new_action == "pass":  # Suricata 7.0.10 logs nothing then
                continue
            if new_action in ("drop", "reject"):  # logged as "blocked", even in IDS mode
                self.blocked.add(len(alerts))
            if per_pkt[pos_i] >= self.alert_max:
                continue
            per_pkt[pos_i] += 1
            alerts.append((pos_i, o))
        if not alerts:
            return []
        return self._format(v, alerts, flows, ctx, ended, ended_rows)

    def _flow_counts(self, v: View, ctx: Any, flows: FlowTable,
                     ) -> tuple[np.ndarray, ...]:
        """Flow packet/byte counters as they stood right after each packet of the view."""
        c = flows.cols
        slot = v.slot
        size = ctx.batch.caplen[ctx.update.idx].astype(np.int64)
        ts_ = ctx.update.to_server  # the flow table's direction (its counters)
        n = len(slot)
        order = np.lexsort((np.arange(n), slot))
        s_sorted = slot[order]
        bounds = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        gid = np.cumsum(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) - 1
        out = []
        for x, col in ((ts_.astype(np.int64), "pkts_ts"), ((~ts_).astype(np.int64), "pkts_tc"),
                       (np.where(ts_, size, 0), "bytes_ts"), (np.where(ts_, 0, size),
                                                               "bytes_tc")):
            xs = x[order]
            cs = np.cumsum(xs)
            total = np.add.reduceat(xs, bounds)[gid]
            before_group = (cs - xs)[bounds][gid]
            after = total - (cs - before_group)  # strictly later packets of the flow
            res = np.empty(n, dtype=np.int64)
            res[order] = c[col][s_sorted] - after
            out.append(res)
        return tuple(out)

    def _format(self, v: View, alerts: list[tuple[int, int]], flows: FlowTable | None,
                ctx: Any, ended: EndedFlows | None, ended_rows: np.ndarray | None,
                ) -> list[str]:
        if ended is None and flows is None:
            return self._format_flowless(v, alerts)
        if ended is None:
            assert flows is not None
            pts, ptc, bts, btc = self._flow_counts(v, ctx, flows)
            c = flows.cols
            rows = v.slot
        else:
            c = ended.cols
            assert ended_rows is not None
            rows = ended_rows
            pts, ptc = c["pkts_ts"][rows], c["pkts_tc"][rows]
            bts, btc = c["bytes_ts"][rows], c["bytes_tc"][rows]
        at = np.asarray([a[0] for a in alerts], dtype=np.int64)
        rws = rows[at]
        col = {name: v_arr[at].tolist() for name, v_arr in (
            ("ipver", v.ipver), ("proto", v.proto), ("ts", v.ts), ("flow_id", v.flow_id),
            ("cnt", v.pcap_cnt), ("vlan", v.vlan0), ("sh", v.src_hi), ("sl", v.src_lo),
            ("dh", v.dst_hi), ("dl", v.dst_lo), ("sp", v.sport), ("dp", v.dport),
            ("it", v.icmp_type), ("ic", v.icmp_code), ("ts_dir", v.to_server),
            ("pts", pts), ("ptc", ptc), ("bts", bts), ("btc", btc))}
        fcol = {name: c[name][rws].tolist() for name in (
            "cli_hi", "cli_lo", "srv_hi", "srv_lo", "cli_port", "srv_port", "first_ts")}
        rws_l = rws.tolist()
        lines: list[str] = []
        for k, (_, o) in enumerate(alerts):
            cr = self.rules[o]
            action = "blocked" if k in self.blocked else None
            row = rws_l[k]
            ipver = col["ipver"][k]
            proto = col["proto"][k]
            ports = proto in PORT_PROTOS
            ev: dict[str, Any] = {"timestamp": fmt_ts(col["ts"][k]),
                                  "flow_id": col["flow_id"][k]}
            if col["cnt"][k] >= 0:
                ev["pcap_cnt"] = col["cnt"][k]
            ev["event_type"] = "alert"
            if col["vlan"][k]:
                ev["vlan"] = [col["vlan"][k]]
            ev["src_ip"] = ip_str(ipver, col["sh"][k], col["sl"][k])
            if ports:
                ev["src_port"] = col["sp"][k]
            ev["dest_ip"] = ip_str(ipver, col["dh"][k], col["dl"][k])
            if ports:
                ev["dest_port"] = col["dp"][k]
            ev["proto"] = proto_name(proto)
            if proto in (PROTO_ICMP, PROTO_ICMPV6):
                ev["icmp_type"] = col["it"][k]
                ev["icmp_code"] = col["ic"][k]
            ev["pkt_src"] = v.pkt_src
            if self.with_cid:
                ev["community_id"] = self._cid(c, row, col["flow_id"][k])
            spliced = not action and cr.rule.target is None
            if spliced:  # the rule's alert object, encoded once (see _ALERT_MARK)
                ev["alert"] = _ALERT_MARK
            else:
                alert = dict(cr.signature)
                if action:
                    alert["action"] = action
                if cr.rule.target is not None:
                    _source_target(alert, cr.rule.target, ev)
                if cr.metadata:
                    alert["metadata"] = cr.metadata
                ev["alert"] = alert
            if v.outer is not None:
                ev["tunnel"] = v.outer[at[k]]
            ev["direction"] = "to_server" if col["ts_dir"][k] else "to_client"
            fl: dict[str, Any] = {
                "pkts_toserver": col["pts"][k], "pkts_toclient": col["ptc"][k],
                "bytes_toserver": col["bts"][k], "bytes_toclient": col["btc"][k],
                "start": fmt_ts(fcol["first_ts"][k]),
                "src_ip": ip_str(ipver, fcol["cli_hi"][k], fcol["cli_lo"][k]),
                "dest_ip": ip_str(ipver, fcol["srv_hi"][k], fcol["srv_lo"][k]),
            }
            if ports:
                fl["src_port"] = fcol["cli_port"][k]
                fl["dest_port"] = fcol["srv_port"][k]
            ev["flow"] = fl
            line = dumps(ev)
            if spliced:
                line = line.replace(_ALERT_MARK_JSON, cr.alert_json, 1)
            lines.append(line)
            self.alert_sigs.append(cr.summary)
        c["alerted"][rws] = True
        return lines

    def _format_flowless(self, v: View, alerts: list[tuple[int, int]]) -> list[str]:
        lines: list[str] = []
        for pos_i, o in alerts:
            cr = self.rules[o]
            ipver, proto = int(v.ipver[pos_i]), int(v.proto[pos_i])
            ev: dict[str, Any] = {"timestamp": fmt_ts(int(v.ts[pos_i]))}
            if int(v.pcap_cnt[pos_i]) >= 0:
                ev["pcap_cnt"] = int(v.pcap_cnt[pos_i])
            ev["event_type"] = "alert"
            if int(v.vlan0[pos_i]):
                ev["vlan"] = [int(v.vlan0[pos_i])]
            ev["src_ip"] = ip_str(ipver, int(v.src_hi[pos_i]), int(v.src_lo[pos_i]))
            if proto in PORT_PROTOS:
                ev["src_port"] = 0
            ev["dest_ip"] = ip_str(ipver, int(v.dst_hi[pos_i]), int(v.dst_lo[pos_i]))
            if proto in PORT_PROTOS:
                ev["dest_port"] = 0
            ev["proto"] = proto_name(proto)
            ev["pkt_src"] = v.pkt_src
            alert = dict(cr.signature)
            if cr.metadata:
                alert["metadata"] = cr.metadata
            ev["alert"] = alert
            if v.outer is not None:
                ev["tunnel"] = v.outer[pos_i]
            lines.append(dumps(ev))
            self.alert_sigs.append(cr.summary)
        return lines

    def _cid(self, c: dict[str, np.ndarray], row: int, fid: int) -> str:
        hit = self.cid_cache.get(fid)
        if hit is not None:
            return hit
        ipver, proto = int(c["ipver"][row]), int(c["proto"][row])
        sport, dport = int(c["cli_port"][row]), int(c["srv_port"][row])
        if proto in (PROTO_ICMP, PROTO_ICMPV6):  # as the flow event (sensor.output.eve)
            sport, dport = sport & 0xFF, sport >> 8
        elif proto not in PORT_PROTOS:
            sport = dport = 0
        cid = community_id(ip_bytes(ipver, int(c["cli_hi"][row]), int(c["cli_lo"][row])),
                           ip_bytes(ipver, int(c["srv_hi"][row]), int(c["srv_lo"][row])),
                           proto, sport, dport, self.cid_seed)
        self.cid_cache[fid] = cid
        return cid

    def _pseudo(self, ended: EndedFlows, pseudo: list[tuple[int, bool, bytes]]) -> list[str]:
        """Flow-end pseudo packets carrying the stream data never inspected."""
        c = ended.cols
        rows = np.asarray([p[0] for p in pseudo], dtype=np.int64)
        to_server = np.asarray([p[1] for p in pseudo], dtype=bool)
        n = len(rows)

        table_dir = to_server ^ c["rs_swap"][rows] if "rs_swap" in c else to_server

        def pick(a: str, b: str) -> np.ndarray:
            return np.where(table_dir, c[a][rows], c[b][rows])

        z8 = np.zeros(n, dtype=np.uint8)
        z16 = np.zeros(n, dtype=np.uint16)
        z32 = np.zeros(n, dtype=np.uint32)
        plen = np.asarray([len(p[2]) for p in pseudo], dtype=np.int32)
        v = View(
            slot=rows, flow_id=c["flow_id"][rows], proto=c["proto"][rows],
            ipver=c["ipver"][rows], src_hi=pick("cli_hi", "srv_hi"),
            src_lo=pick("cli_lo", "srv_lo"), dst_hi=pick("srv_hi", "cli_hi"),
            dst_lo=pick("srv_lo", "cli_lo"), sport=pick("cli_port", "srv_port"),
            dport=pick("srv_port", "cli_port"), to_server=to_server,
            established=np.ones(n, dtype=bool), first_dir=np.zeros(n, dtype=bool),
            ts=c["last_ts"][rows], plen=plen, ttl=z8, tcp_flags=np.full(n, 0x10, np.uint8),
            tcp_seq=z32, tcp_ack=z32, tcp_win=z16, icmp_type=z8, icmp_code=z8, icmp_id=z16,
            icmp_seq=z16, ip_id=z16, tos=z8, frag_bits=z8, vlan0=c["vlan0"][rows],
            active=~c["rs_pass"][rows] if "rs_pass" in c else np.ones(n, dtype=bool),
            pcap_cnt=np.full(n, -1, dtype=np.int64), pkt_src="stream (flow timeout)")
        if self.has_ml:
            v.ml_class, v.ml_score = _verdict(c, rows)
        if self.has_stream_size and "ss_bits" in c:  # the session as the flow ended
            v.ss_client, v.ss_server = final_sizes(c, rows)
        units = [(i, UNIT_STREAM, p[2]) for i, p in enumerate(pseudo)]
        self._added = np.zeros(n, dtype=bool)
        return self._run(v, units, None, None, ended, rows)

    def _verdict_pass(self, ended: EndedFlows) -> list[str]:
        """Flow end: the ml.* rules about the flow (self.ml_flow_end) look once more, on a
        pseudo packet from client to server without payload or TCP flags, at the flows whose
        final verdict no packet saw (windows closed at flow end, or between the flow's
        packets), so a verdict reached only at flow end still reaches the rules."""
        c = ended.cols
        cls, score = _verdict(c, np.arange(len(ended)))
        if cls is None or score is None:
            return []
        changed = cls >= 0
        if "rs_ml_cls" in c:
            changed &= (cls != c["rs_ml_cls"]) | (score != c["rs_ml_score"])
        rows = np.flatnonzero(changed)
        if not len(rows):
            return []
        n = len(rows)
        proto = c["proto"][rows]
        ports = np.isin(proto, PORT_PROTOS)
        icmp = (proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)
        cli_port = c["cli_port"][rows]
        est = np.where(proto == PROTO_TCP, (c["tcp"][rows] & T_EST) != 0,
                       (c["pkts_ts"][rows] > 0) & (c["pkts_tc"][rows] > 0))
        active = np.ones(n, dtype=bool)
        if "rs_pass" in c:
            active = ~c["rs_pass"][rows] & (c["rs_mode"][rows] != MODE_IGNORED)
        z8, z16, z32 = (np.zeros(n, dtype=t) for t in (np.uint8, np.uint16, np.uint32))
        v = View(
            slot=rows, flow_id=c["flow_id"][rows], proto=proto, ipver=c["ipver"][rows],
            src_hi=c["cli_hi"][rows], src_lo=c["cli_lo"][rows], dst_hi=c["srv_hi"][rows],
            dst_lo=c["srv_lo"][rows], sport=np.where(ports, cli_port, 0),
            dport=np.where(ports, c["srv_port"][rows], 0), to_server=np.ones(n, dtype=bool),
            established=est, first_dir=np.zeros(n, dtype=bool), ts=c["last_ts"][rows],
            plen=np.zeros(n, dtype=np.int32), ttl=z8, tcp_flags=z8, tcp_seq=z32, tcp_ack=z32,
            tcp_win=z16, icmp_type=np.where(icmp, cli_port & 0xFF, 0).astype(np.uint8),
            icmp_code=np.where(icmp, cli_port >> 8, 0).astype(np.uint8), icmp_id=z16,
            icmp_seq=z16, ip_id=z16, tos=z8, frag_bits=z8, vlan0=c["vlan0"][rows],
            active=active, pcap_cnt=np.full(n, -1, dtype=np.int64),
            pkt_src="flow end (model verdict)", ml_class=cls[rows], ml_score=score[rows])
        self._added = np.zeros(n, dtype=bool)
        return self._run(v, [], None, None, ended, rows, header=self.ml_flow_end)


def build_rule_stage(cfg: Config, strict: bool = False,
                     ml_classes: tuple[str, ...] | None = None) -> RuleStage | None:
    """The rule stage for `cfg`, or None without rule files.

    Unreadable rule files raise RuleLoadError. Rejected rules are printed on stderr, one
    line each, and counted; with `strict` (the daemon, also on reload) any rejected rule
    raises instead, so the daemon keeps the rule set it runs. `ml_classes` are the model's
    classes when the model runs: ml.* rules are rejected without it (sensor.stages).
    """
    if not cfg.rules.files:
        return None
    vars_ = {"address-groups": dict(cfg.vars.address_groups),
             "port-groups": dict(cfg.vars.port_groups)}
    try:
        rs = load_rules(cfg.rules.files, vars_)
    except (ValueError, OSError) as exc:
        raise RuleLoadError(f"rules: {exc}") from None
    if rs.file_errors:
        raise RuleLoadError(rs.file_errors[0])
    reject_ml_rules(rs, ml_classes)
    if strict and rs.errors:
        more = f" (and {len(rs.errors) - 1} more)" if len(rs.errors) > 1 else ""
        raise RuleLoadError(f"{len(rs.errors)} rule problem(s): {rs.errors[0]}{more}")
    for err in rs.errors:
        print(err, file=sys.stderr)
    stage = RuleStage(cfg, rs, ml_classes)
    for msg in stage.threshold_errors:
        print(msg, file=sys.stderr)
    if rs.errors:
        print(f"rules: {rs.loaded} loaded, {rs.rejected} rejected", file=sys.stderr)
    return stage

