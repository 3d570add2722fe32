"""Bidirectional flow table, updated once per batch with numpy group operations.

Flows live in a struct of arrays (one slot per live flow) indexed through a dict from a
64-bit keyed hash of the canonical 5-tuple plus VLAN ids. Per batch, packets are grouped by
key, split into flow instances (a key may end a flow and start a new one in the same batch:
timeout, TCP port reuse), and every counter is updated with one reduceat per field. Python
work is per flow instance touched by the batch, not per packet.

The pipeline guarantees that one batch spans less than the shortest timeout, so a flow can
only time out before its first packet in a batch, never between two of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from .config import FlowConfig
from .decode import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, DecodedBatch

STATE_NEW = 0
STATE_ESTABLISHED = 1
STATE_CLOSED = 2
STATE_NAMES = ("new", "established", "closed")

# TCP progress bits kept per flow
T_SYN = 1  # SYN from the client
T_SYNACK = 2  # SYN+ACK from the server
T_EST = 4  # handshake completed (client ACK after the SYN+ACK)
T_FIN_C = 8
T_FIN_S = 16
T_RST = 32

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

PORT_PROTOS = (PROTO_TCP, PROTO_UDP, 132)

END_TIMEOUT = "timeout"
END_FORCED = "forced"  # evicted under memory pressure (Suricata's word for it)
END_SHUTDOWN = "shutdown"

MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
FLOW_ID_MASK = (1 << 51) - 1


def _mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """One round of a multiply-xorshift hash (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        h = (h ^ v.astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h


@dataclass
class FlowUpdate:
    """Per-packet flow facts of one batch, for rules, windows and the model.

    idx        indices (into the decoded batch) of packets that belong to a flow, time order
    slot       flow slot of each of those packets
    to_server  packet goes from the flow's client to its server
    both_seen  packets in both directions have been seen, this one included
    tcp_est    the TCP handshake had completed, this packet included
    pkt_no     1-based position of the packet in its flow
    """

    idx: np.ndarray
    slot: np.ndarray
    to_server: np.ndarray
    both_seen: np.ndarray
    tcp_est: np.ndarray
    pkt_no: np.ndarray


@dataclass
class EndedFlows:
    """Flows that ended: a snapshot of their columns, taken before their slots are reused."""

    cols: dict[str, np.ndarray]
    reason: str
    ts_us: np.ndarray  # the time the flow was logged at
    slots: np.ndarray  # the slots they had (already free for reuse)

    def __len__(self) -> int:
        return len(self.ts_us)


class FlowTable:
    """Live flows with Suricata-like state, timeouts and a hard cap with eviction."""

    COLUMNS: dict[str, type] = {
        "hash": np.uint64, "flow_id": np.uint64, "ipver": np.uint8, "proto": np.uint8,
        "vlan0": np.uint16, "vlan1": np.uint16,
        "cli_hi": np.uint64, "cli_lo": np.uint64, "srv_hi": np.uint64, "srv_lo": np.uint64,
        "cli_port": np.uint16, "srv_port": np.uint16,
        "first_ts": np.int64, "last_ts": np.int64, "first_cnt": np.int64,
        "pkts_ts": np.int64, "pkts_tc": np.int64, "bytes_ts": np.int64, "bytes_tc": np.int64,
        "flags_ts": np.uint8, "flags_tc": np.uint8, "tcp": np.uint8, "state": np.uint8,
        "alerted": np.bool_, "isn": np.uint32, "active": np.bool_,
        # quoted ICMPv4 errors counted in the flow per direction: they do not make a flow
        # established (Suricata's FlowUpdateSeenFlag)
        "q_ts": np.uint32, "q_tc": np.uint32,
    }

    def __init__(self, config: FlowConfig, seed: int | None = None):
        self.cfg = config
        self.seed = np.uint64(int.from_bytes(os.urandom(8), "little") if seed is None else seed)
        self.index: dict[int, int] = {}
        self.free: list[int] = []
        self.capacity = 0
        self.cols: dict[str, np.ndarray] = {}
        self.extra_defaults: dict[str, object] = {}
        self._grow(min(1024, config.max_flows))
        # timeouts in microseconds, [proto_class][state]; proto class 0 other, 1 tcp, 2 udp,
        # 3 icmp
        t = config.timeouts
        self.timeout_us = np.array(
            [[t.default.new, t.default.established, t.default.closed],
             [t.tcp.new, t.tcp.established, t.tcp.closed],
             [t.udp.new, t.udp.established, t.udp.closed],
             [t.icmp.new, t.icmp.established, t.icmp.closed]], dtype=np.int64) * 1_000_000
        e = config.emergency_timeouts
        self.emergency_us = np.array(
            [[e.default.new, e.default.established, e.default.closed],
             [e.tcp.new, e.tcp.established, e.tcp.closed],
             [e.udp.new, e.udp.established, e.udp.closed],
             [e.icmp.new, e.icmp.established, e.icmp.closed]], dtype=np.int64) * 1_000_000
        self.counters: dict[str, int] = {}
        self.emergency = False
        self.superseded: list[EndedFlows] = []
        # slots given to new flows by the last update(): stages that mirror the table
        # elsewhere (the model process) send these flows' addresses once
        self.started = np.zeros(0, np.int64)
        self.any_quoted = False  # a quoted ICMP error was ever counted in a flow

    # -- storage ---------------------------------------------------------------------------
    def add_column(self, name: str, dtype: type, default: object = 0) -> None:
        """Let a later stage (model scores, rule flowbits) keep per-flow values here."""
        self.COLUMNS = {**self.COLUMNS, name: dtype}
        self.extra_defaults[name] = default
        self.cols[name] = np.full(self.capacity, default, dtype=dtype)

    def _grow(self, want: int) -> None:
        new_cap = min(self.cfg.max_flows, max(want, self.capacity * 2))
        if new_cap <= self.capacity:
            return
        for name, dtype in self.COLUMNS.items():
            arr = np.full(new_cap, self.extra_defaults.get(name, 0), dtype=dtype)
            if name in self.cols:
                arr[: self.capacity] = self.cols[name]
            self.cols[name] = arr
        self.free.extend(range(new_cap - 1, self.capacity - 1, -1))
        self.capacity = new_cap

    @property
    def active_count(self) -> int:
        return len(self.index)

    def _alloc(self, count: int) -> np.ndarray:
        if len(self.free) < count:
            self._grow(self.capacity - len(self.free) + count)
        free = self.free
        keep = len(free) - count
        got = free[keep:]  # the same slots, in the same order, as count free.pop() calls
        del free[keep:]
        return np.asarray(got[::-1], dtype=np.int64)

    def _count(self, name: str, value: int) -> None:
        if value:
            self.counters[name] = self.counters.get(name, 0) + value

    # -- timeouts and ending -----------------------------------------------------------------
    def _proto_class(self, proto: np.ndarray) -> np.ndarray:
        pc = np.zeros(len(proto), dtype=np.int64)
        pc[proto == PROTO_TCP] = 1
        pc[proto == PROTO_UDP] = 2
        pc[(proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)] = 3
        return pc

    def _deadline(self, slots: np.ndarray, table: np.ndarray) -> np.ndarray:
        c = self.cols
        pc = self._proto_class(c["proto"][slots])
        return c["last_ts"][slots] + table[pc, c["state"][slots]]

    def _end(self, slots: np.ndarray, reason: str, ts_us: np.ndarray,
             indexed: bool = True) -> EndedFlows:
        snap = {name: arr[slots].copy() for name, arr in self.cols.items()}
        c = self.cols
        c["active"][slots] = False
        if indexed:  # superseded instances are not in the index (it points to the newest)
            index = self.index
            for h in snap["hash"].tolist():
                del index[h]
        self.free.extend(slots.tolist())
        st = snap["state"]
        self._count("flow.end.state.new", int(np.count_nonzero(st == STATE_NEW)))
        self._count("flow.end.state.established", int(np.count_nonzero(st == STATE_ESTABLISHED)))
        self._count("flow.end.state.closed", int(np.count_nonzero(st == STATE_CLOSED)))
        return EndedFlows(snap, reason, ts_us, slots.copy())

    def take_superseded(self) -> list[EndedFlows]:
        """Flows replaced by a reused TCP tuple during the last update, to be logged."""
        out, self.superseded = self.superseded, []
        return out

    def expire(self, now_us: int) -> list[EndedFlows]:
        """End flows whose timeout passed at `now_us` (packet time)."""
        if not self.index:
            return []
        slots = np.flatnonzero(self.cols["active"])
        table = self.emergency_us if self.emergency else self.timeout_us
        deadline = self._deadline(slots, table)
        gone = slots[deadline < now_us]
        if not len(gone):
            return []
        self._count("flow_mgr.flows_timeout", len(gone))
        out = [self._end(gone, END_TIMEOUT, np.minimum(deadline[deadline < now_us], now_us))]
        if self.emergency and len(self.index) < self.cfg.max_flows * 0.7:
            self.emergency = False
            self._count("flow.emerg_mode_over", 1)
        return out

    def flush(self, now_us: int) -> list[EndedFlows]:
        """End every live flow (end of replay, daemon shutdown)."""
        slots = np.flatnonzero(self.cols["active"])
        if not len(slots):
            return []
        ts = np.maximum(self.cols["last_ts"][slots], now_us)
        return [self._end(slots, END_SHUTDOWN, ts)]

    def _make_room(self, need: int, now_us: int) -> list[EndedFlows]:
        """Keep the table under its cap: emergency timeouts first, then the least recent."""
        out: list[EndedFlows] = []
        if len(self.index) + need <= self.cfg.max_flows:
            return out
        if not self.emergency:
            self.emergency = True
            self._count("flow.emerg_mode_entered", 1)
        out += self.expire(now_us)
        over = len(self.index) + need - self.cfg.max_flows
        if over > 0:
            slots = np.flatnonzero(self.cols["active"])
            # evict a little more than needed so a flood does not evict on every batch
            k = min(len(slots), over + max(1, self.cfg.max_flows // 20))
            victims = slots[np.argpartition(self.cols["last_ts"][slots], k - 1)[:k]]
            self._count("flow.get_used", len(victims))
            ended = self._end(victims, END_FORCED, np.full(len(victims), now_us))
            out.append(ended)
        return out

    # -- the batch update ----------------------------------------------------------------------
    def update(self, d: DecodedBatch, ts_us: np.ndarray, caplen: np.ndarray,
               first_cnt: int | np.ndarray) -> tuple[FlowUpdate, list[EndedFlows]]:
        """Assign every flow packet of a batch to a flow and update the flows."""
        ended: list[EndedFlows] = []
        self.started = np.zeros(0, np.int64)
        idx = np.flatnonzero(d.ok)
        if not len(idx):
            return _empty_update(), ended
        if d.icmp_err is not None:
            idx = idx[~d.icmp_err[idx] | d.icmp_emb["ok"][idx]]  # errors open no flow
            if not len(idx):
                return _empty_update(), ended
        sh, sl, dh, dl = d.src_hi[idx], d.src_lo[idx], d.dst_hi[idx], d.dst_lo[idx]
        sp, dp = d.sport[idx], d.dport[idx]
        proto = d.proto[idx]
        # direction is decided on the packet's own source and protocol (dsh, dsl, dproto)
        dsh, dsl, dproto = sh, sl, proto
        quoted = None
        if d.icmp_err is not None:
            quoted = d.icmp_emb["ok"][idx]
            if quoted.any():
                # an ICMPv4 unreachable is keyed on the TCP/UDP packet it quotes (Suricata)
                emb = {k: v[idx] for k, v in d.icmp_emb.items()}
                sh = np.where(quoted, np.uint64(0), sh)
                dh = np.where(quoted, np.uint64(0), dh)
                sl = np.where(quoted, emb["src"], sl)
                dl = np.where(quoted, emb["dst"], dl)
                sp = np.where(quoted, emb["sport"], sp)
                dp = np.where(quoted, emb["dport"], dp)
                proto = np.where(quoted, emb["proto"], proto)
            else:
                quoted = None
        # canonical side 'a' is the smaller (address, port) end
        a_first = (sh < dh) | ((sh == dh) & ((sl < dl) | ((sl == dl) & (sp <= dp))))
        ah, al, ap = np.where(a_first, sh, dh), np.where(a_first, sl, dl), np.where(a_first, sp, dp)
        bh, bl, bp = np.where(a_first, dh, sh), np.where(a_first, dl, sl), np.where(a_first, dp, sp)
        h = np.full(len(idx), self.seed, dtype=np.uint64)
        packed = (proto.astype(np.uint64) << np.uint64(32)) | (
            d.vlan0[idx].astype(np.uint64) << np.uint64(16)) | d.vlan1[idx].astype(np.uint64)
        if d.depth:  # an inner (tunnelled) flow never merges with an outer one
            packed |= np.uint64(d.depth) << np.uint64(40)
        for v in (packed, ah, al, bh, bl,
                  (ap.astype(np.uint64) << np.uint64(16)) | bp.astype(np.uint64)):
            h = _mix(h, v)
        if quoted is not None:
            # a quoted packet joins its flow only if that flow is live or opened earlier in
            # this batch; Suricata never opens a flow for an ICMP error
            keep = self._quoted_joins(h, quoted, ts_us[idx])
            if not keep.all():
                idx, h, sp, dp, proto = idx[keep], h[keep], sp[keep], dp[keep], proto[keep]
                dsh, dsl, dproto, quoted = dsh[keep], dsl[keep], dproto[keep], quoted[keep]
                if not len(idx):
                    return _empty_update(), ended

        order = np.argsort(h, kind="stable")
        hs = h[order]
        pidx = idx[order]
        n = len(order)
        starts = np.flatnonzero(np.r_[True, hs[1:] != hs[:-1]])
        key_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
        ts = ts_us[pidx]
        fl = d.tcp_flags[pidx]
        is_tcp = proto[order] == PROTO_TCP  # the flow's protocol (a quoted packet's too)
        pk = (dsh[order], dsl[order], sp[order], dp[order], dproto[order])

        # existing flows for each key
        index = self.index
        key_hashes = hs[starts].tolist()
        slot_of_key = np.fromiter(map(index.get, key_hashes, repeat(-1)), dtype=np.int64,
                                  count=len(key_hashes))
        c = self.cols
        have = slot_of_key >= 0
        if have.any():
            # a flow whose timeout passed before its first packet here ends, a new one starts
            old = slot_of_key[have]
            dl_ = self._deadline(old, self.emergency_us if self.emergency else self.timeout_us)
            late = ts[starts[have]] > dl_
            if late.any():
                gone = old[late]
                self._count("flow_mgr.flows_timeout", len(gone))
                ended.append(self._end(gone, END_TIMEOUT, dl_[late]))
                tmp = slot_of_key[have]
                tmp[late] = -1
                slot_of_key[have] = tmp

        # segment = one flow instance; starts with one per key, TCP reuse may split further
        seg_start = np.zeros(n, dtype=bool)
        seg_start[starts] = True
        for _round in range(16):
            seg_id = np.cumsum(seg_start) - 1
            seg_first = np.flatnonzero(seg_start)
            seg_key = key_of[seg_first]
            cont = np.zeros(len(seg_first), dtype=bool)  # segment continues a live flow
            first_of_key = np.r_[True, seg_key[1:] != seg_key[:-1]]
            cont[first_of_key] = slot_of_key[seg_key[first_of_key]] >= 0
            cslot = np.where(cont, slot_of_key[seg_key], -1)
            to_server = self._direction(cont, cslot, seg_first, seg_id, pk)
            carry_tcp = np.where(cont, c["tcp"][np.maximum(cslot, 0)], 0)[seg_id]
            carry_ts = np.where(cont, c["pkts_ts"][np.maximum(cslot, 0)], 0)[seg_id]
            carry_tc = np.where(cont, c["pkts_tc"][np.maximum(cslot, 0)], 0)[seg_id]
            tcp_bits = _tcp_progress(fl, to_server, is_tcp, seg_start, carry_tcp)
            # TCP port reuse: a bare SYN on a closed session starts a new flow (Suricata's
            # TcpSessionPacketSsnReuse); the SYN itself belongs to the new flow
            prev_bits = np.where(seg_start, carry_tcp, np.r_[0, tcp_bits[:-1]])
            closed_before = (prev_bits & T_RST) | ((prev_bits & (T_FIN_C | T_FIN_S)) == (
                T_FIN_C | T_FIN_S))
            reuse = is_tcp & ((fl & (TH_SYN | TH_ACK)) == TH_SYN) & (closed_before != 0) & (
                ~seg_start)
            # a reused flow that already existed before this batch also ends
            reuse_first = is_tcp & seg_start & ((fl & (TH_SYN | TH_ACK)) == TH_SYN) & (
                closed_before != 0) & (carry_tcp != 0)
            if reuse_first.any():
                segs = seg_id[reuse_first]
                gone = cslot[segs]
                gone = gone[gone >= 0]
                if len(gone):
                    self._count("flow.tcp_reuse", len(gone))
                    ended.append(self._end(gone, END_TIMEOUT, ts[reuse_first]))
                    slot_of_key[seg_key[segs]] = -1
                continue
            if not reuse.any():
                break
            self._count("flow.tcp_reuse", int(np.count_nonzero(reuse)))
            seg_start |= reuse

        new_seg = ~cont
        n_new = int(np.count_nonzero(new_seg))
        if n_new:
            ended += self._make_room(n_new, int(ts.max()))
            # eviction may have removed flows this batch continues: they restart as new
            if ended:
                still = np.fromiter(map(index.get, hs[seg_first[cont]].tolist(), repeat(-1)),
                                    dtype=np.int64, count=int(np.count_nonzero(cont)))
                if (still < 0).any():
                    lost = np.flatnonzero(cont)[still < 0]
                    cont[lost] = False
                    cslot[lost] = -1
                    new_seg = ~cont
                    n_new = int(np.count_nonzero(new_seg))
                    to_server = self._direction(cont, cslot, seg_first, seg_id, pk)
                    carry_tcp = np.where(cont, c["tcp"][np.maximum(cslot, 0)], 0)[seg_id]
                    carry_ts = np.where(cont, c["pkts_ts"][np.maximum(cslot, 0)], 0)[seg_id]
                    carry_tc = np.where(cont, c["pkts_tc"][np.maximum(cslot, 0)], 0)[seg_id]
                    tcp_bits = _tcp_progress(fl, to_server, is_tcp, seg_start, carry_tcp)
        seg_slot = cslot.copy()
        if n_new:
            new_slots = self._alloc(n_new)
            seg_slot[new_seg] = new_slots
            self._init_flows(new_slots, seg_first[new_seg], pidx, hs, ts, d, first_cnt)
            self.started = np.asarray(new_slots, np.int64)
            # a key with several instances in one batch: the index points to the last one
            index.update(zip(hs[seg_first[new_seg]].tolist(), new_slots.tolist(), strict=True))

        slot = seg_slot[seg_id]
        size = caplen[pidx].astype(np.int64)
        bounds = seg_first
        ts_cnt = np.add.reduceat(to_server.astype(np.int64), bounds)
        seg_len = np.diff(np.r_[bounds, n])
        tc_cnt = seg_len - ts_cnt
        ts_bytes = np.add.reduceat(np.where(to_server, size, 0), bounds)
        tc_bytes = np.add.reduceat(np.where(to_server, 0, size), bounds)
        fl_ts = np.bitwise_or.reduceat(np.where(to_server, fl, 0), bounds)
        fl_tc = np.bitwise_or.reduceat(np.where(to_server, 0, fl), bounds)
        last = np.maximum.reduceat(ts, bounds)
        c["pkts_ts"][seg_slot] += ts_cnt
        c["pkts_tc"][seg_slot] += tc_cnt
        c["bytes_ts"][seg_slot] += ts_bytes
        c["bytes_tc"][seg_slot] += tc_bytes
        c["flags_ts"][seg_slot] |= fl_ts.astype(np.uint8)
        c["flags_tc"][seg_slot] |= fl_tc.astype(np.uint8)
        c["last_ts"][seg_slot] = np.maximum(c["last_ts"][seg_slot], last)
        seg_last = np.r_[bounds[1:], n] - 1
        c["tcp"][seg_slot] = tcp_bits[seg_last]

        # per-packet direction counts, to know when both directions were seen
        pos = np.arange(n) - bounds[seg_id]
        cum_ts = np.cumsum(to_server)
        base_ts = (cum_ts - to_server)[bounds][seg_id]
        ts_before = cum_ts - base_ts - to_server + carry_ts
        tc_before = pos - (cum_ts - base_ts - to_server) + carry_tc
        if quoted is None and not self.any_quoted:
            both = ((ts_before + to_server) > 0) & ((tc_before + ~to_server) > 0)
        else:
            both = self._both_seen(quoted, order, to_server, cont, cslot, seg_id, bounds,
                                   seg_slot, carry_ts, carry_tc)
        tcp_est = (tcp_bits & T_EST) != 0
        # flow state after the batch
        last_bits = tcp_bits[seg_last]
        seg_tcp = is_tcp[seg_first]
        # Suricata tracks a TCP session only from a client SYN (midstream pickup is off by
        # default): a flow picked up midstream stays "new" even when it sees FIN or RST
        closed = seg_tcp & ((last_bits & T_SYN) != 0) & (((last_bits & T_RST) != 0) | (
            (last_bits & (T_FIN_C | T_FIN_S)) == (T_FIN_C | T_FIN_S)))
        est = np.where(seg_tcp, (last_bits & T_EST) != 0, both[seg_last])
        state = np.where(closed, STATE_CLOSED, np.where(est, STATE_ESTABLISHED, STATE_NEW))
        c["state"][seg_slot] = state.astype(np.uint8)
        # TCP port reuse inside this batch: the earlier instances of a key end here (the
        # index already points to the newest); the pipeline logs them after its stages saw
        # the batch (take_superseded), so no stage gets packets of a flow already ended
        sup = np.flatnonzero(np.r_[seg_key[1:] == seg_key[:-1], False])
        if len(sup):
            self.superseded.append(
                self._end(seg_slot[sup], END_TIMEOUT, ts[seg_first[sup + 1]], indexed=False))

        pkt_no = ts_before + tc_before + 1
        upd = FlowUpdate(
            idx=pidx, slot=slot, to_server=to_server, both_seen=both, tcp_est=tcp_est,
            pkt_no=pkt_no,
        )
        # restore time order so later stages see packets as they came
        back = np.argsort(pidx, kind="stable")
        upd = FlowUpdate(*(getattr(upd, f)[back] for f in upd.__dataclass_fields__))
        return upd, ended

    def _both_seen(self, quoted: np.ndarray | None, order: np.ndarray, to_server: np.ndarray,
                   cont: np.ndarray, cslot: np.ndarray, seg_id: np.ndarray,
                   bounds: np.ndarray, seg_slot: np.ndarray, carry_ts: np.ndarray,
                   carry_tc: np.ndarray) -> np.ndarray:
        """Both directions seen, counting only packets that are not quoted ICMP errors."""
        c = self.cols
        n = len(to_server)
        qq = np.zeros(n, dtype=bool) if quoted is None else quoted[order]
        cs = np.maximum(cslot, 0)
        q_ts = np.where(cont, c["q_ts"][cs], 0)[seg_id].astype(np.int64)
        q_tc = np.where(cont, c["q_tc"][cs], 0)[seg_id].astype(np.int64)
        own_ts = (to_server & ~qq).astype(np.int64)
        own_tc = (~to_server & ~qq).astype(np.int64)
        cum_ts, cum_tc = np.cumsum(own_ts), np.cumsum(own_tc)
        seen_ts = cum_ts - (cum_ts - own_ts)[bounds][seg_id] + carry_ts - q_ts
        seen_tc = cum_tc - (cum_tc - own_tc)[bounds][seg_id] + carry_tc - q_tc
        if qq.any():
            self.any_quoted = True
            c["q_ts"][seg_slot] += np.add.reduceat((to_server & qq).astype(np.int64),
                                                   bounds).astype(np.uint32)
            c["q_tc"][seg_slot] += np.add.reduceat((~to_server & qq).astype(np.int64),
                                                   bounds).astype(np.uint32)
        return (seen_ts > 0) & (seen_tc > 0)

    def _quoted_joins(self, h: np.ndarray, quoted: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Which packets stay: all but quoted ICMP errors without a flow to join."""
        q = np.flatnonzero(quoted)
        slots = np.fromiter(map(self.index.get, h[q].tolist(), repeat(-1)), dtype=np.int64,
                            count=len(q))
        live = slots >= 0
        if live.any():
            table = self.emergency_us if self.emergency else self.timeout_us
            live[live] = ts[q[live]] <= self._deadline(slots[live], table)
        # or a packet of the flow itself came earlier in this batch
        m = len(h)
        o = np.lexsort((np.arange(m), h))
        hs = h[o]
        first = np.r_[True, hs[1:] != hs[:-1]]
        own = (~quoted[o]).astype(np.int64)
        cum = np.cumsum(own)
        group_base = (cum - own)[np.flatnonzero(first)][np.cumsum(first) - 1]
        earlier = np.empty(m, dtype=bool)
        earlier[o] = (cum - own - group_base) > 0
        keep = ~quoted
        keep[q] = live | earlier[q]
        return keep

    def _direction(self, cont: np.ndarray, cslot: np.ndarray, seg_first: np.ndarray,
                   seg_id: np.ndarray, pk: tuple[np.ndarray, ...]) -> np.ndarray:
        """Packet direction by Suricata's rules (FlowGetPacketDirection).

        TCP/UDP/SCTP with different ports: by source port; same ports, ICMP: by source
        address; any other protocol: always to server.
        """
        sh, sl, sp, dp, proto = pk
        c = self.cols
        cs = np.maximum(cslot, 0)
        cli_hi = np.where(cont, c["cli_hi"][cs], sh[seg_first])[seg_id]
        cli_lo = np.where(cont, c["cli_lo"][cs], sl[seg_first])[seg_id]
        cli_port = np.where(cont, c["cli_port"][cs], sp[seg_first])[seg_id]
        ports = np.isin(proto, PORT_PROTOS)
        icmp = (proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)
        from_cli = (sh == cli_hi) & (sl == cli_lo)
        return np.where(ports & (sp != dp), sp == cli_port,
                        np.where(ports | icmp, from_cli, True))

    def _init_flows(self, slots: np.ndarray, firsts: np.ndarray, pidx: np.ndarray,
                    hs: np.ndarray, ts: np.ndarray, d: DecodedBatch,
                    first_cnt: int | np.ndarray) -> None:
        c = self.cols
        p = pidx[firsts]
        c["hash"][slots] = hs[firsts]
        c["ipver"][slots] = d.ipver[p]
        c["proto"][slots] = d.proto[p]
        c["vlan0"][slots] = d.vlan0[p]
        c["vlan1"][slots] = d.vlan1[p]
        c["cli_hi"][slots] = d.src_hi[p]
        c["cli_lo"][slots] = d.src_lo[p]
        c["srv_hi"][slots] = d.dst_hi[p]
        c["srv_lo"][slots] = d.dst_lo[p]
        c["cli_port"][slots] = d.sport[p]
        c["srv_port"][slots] = d.dport[p]
        c["first_ts"][slots] = ts[firsts]
        c["last_ts"][slots] = ts[firsts]
        # an array: the pcap_cnt of every frame (a parallel replay worker's share)
        c["first_cnt"][slots] = first_cnt[p] if isinstance(first_cnt, np.ndarray) \
            else first_cnt + p
        c["isn"][slots] = d.tcp_seq[p]
        for name in ("pkts_ts", "pkts_tc", "bytes_ts", "bytes_tc", "flags_ts", "flags_tc",
                     "tcp", "state", "q_ts", "q_tc"):
            c[name][slots] = 0
        c["alerted"][slots] = False
        c["active"][slots] = True
        for name, default in self.extra_defaults.items():
            c[name][slots] = default
        # flow_id: the key hash mixed with the start time, so a reused 5-tuple gets a new id
        fid = _mix(hs[firsts], ts[firsts].astype(np.uint64))
        c["flow_id"][slots] = fid & np.uint64(FLOW_ID_MASK)
        proto = d.proto[p]
        self._count("flow.total", len(slots))
        self._count("flow.tcp", int(np.count_nonzero(proto == PROTO_TCP)))
        self._count("flow.udp", int(np.count_nonzero(proto == PROTO_UDP)))
        self._count("flow.icmpv4", int(np.count_nonzero(proto == PROTO_ICMP)))
        self._count("flow.icmpv6", int(np.count_nonzero(proto == PROTO_ICMPV6)))


def _tcp_progress(fl: np.ndarray, to_server: np.ndarray, is_tcp: np.ndarray,
                  seg_start: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """TCP progress bits after each packet, accumulated within each flow instance."""
    syn = is_tcp & to_server & ((fl & (TH_SYN | TH_ACK)) == TH_SYN)
    synack = is_tcp & ~to_server & ((fl & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK))
    fin_c = is_tcp & to_server & ((fl & TH_FIN) != 0)
    fin_s = is_tcp & ~to_server & ((fl & TH_FIN) != 0)
    rst = is_tcp & ((fl & TH_RST) != 0)
    ack_c = is_tcp & to_server & ((fl & (TH_SYN | TH_ACK)) == TH_ACK)

    seg_id = np.cumsum(seg_start) - 1
    first = np.flatnonzero(seg_start)

    def seen(ev: np.ndarray) -> np.ndarray:
        cs = np.cumsum(ev)
        base = (cs - ev)[first][seg_id]
        return (cs - base) > 0

    bits = carry.astype(np.uint8).copy()
    s_syn = seen(syn) | ((carry & T_SYN) != 0)
    s_synack = seen(synack) | ((carry & T_SYNACK) != 0)
    # the handshake completes on a client ACK that follows the server's SYN+ACK
    synack_before = ((carry & T_SYNACK) != 0) | _seen_before(synack, seg_id, first)
    est_ev = ack_c & synack_before & s_syn
    s_est = seen(est_ev) | ((carry & T_EST) != 0)
    bits |= np.where(s_syn, T_SYN, 0).astype(np.uint8)
    bits |= np.where(s_synack, T_SYNACK, 0).astype(np.uint8)
    bits |= np.where(s_est, T_EST, 0).astype(np.uint8)
    bits |= np.where(seen(fin_c), T_FIN_C, 0).astype(np.uint8)
    bits |= np.where(seen(fin_s), T_FIN_S, 0).astype(np.uint8)
    bits |= np.where(seen(rst), T_RST, 0).astype(np.uint8)
    return bits


def _seen_before(ev: np.ndarray, seg_id: np.ndarray, first: np.ndarray) -> np.ndarray:
    cs = np.cumsum(ev)
    base = (cs - ev)[first][seg_id]
    return (cs - ev - base) > 0


def _empty_update() -> FlowUpdate:
    z = np.zeros(0, dtype=np.int64)
    b = np.zeros(0, dtype=bool)
    return FlowUpdate(idx=z, slot=z, to_server=b, both_seen=b, tcp_est=b, pkt_no=z)
