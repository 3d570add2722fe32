"""Per-flow time windows: the unit the model scores.

A window closes after `seconds` (counted from its first packet), after `packets` packets,
or when its flow ends. Each closed window carries, per packet: timestamp, IP length,
direction, TCP flags, payload length, TCP window, TTL, and the first `bytes` bytes of the IP
packet. The packets of still-open windows wait in one packet store, bounded by `max_pending`.

Everything is done for a whole batch at once, without a Python loop over flows or packets:
the batch's packets are grouped by flow slot (one stable argsort), each packet's window end
is found with one binary search per packet (time limit) and its position (packet limit), and
the chain of window starts of every flow (a window starts where the previous one ended) is
followed for all flows together by pointer doubling. Closed windows keep their packets as
flat rows (`WindowBatch`); padded [B, N] arrays are built only when a consumer asks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .config import WindowConfig
from .flow import EndedFlows
from .pipeline import BatchContext

# per-packet fields kept for a window (besides the raw bytes)
FIELDS = {"ts_us": np.int64, "size": np.int32, "to_server": np.int8, "tcp_flags": np.uint8,
          "payload_len": np.int32, "tcp_win": np.int32, "ttl": np.uint8, "proto": np.uint8}
# per-window flow facts copied from the flow table, for alerts
FLOW_FIELDS = ("flow_id", "ipver", "proto", "cli_hi", "cli_lo", "srv_hi", "srv_lo",
               "cli_port", "srv_port", "first_cnt", "vlan0", "vlan1")


class WindowBatch:
    """Closed windows. Their packets are kept flat (`rows` per field [P], `raw` bytes [P, M]:
    window b's packets are rows first[b] .. first[b] + n_packets[b] - 1, in time order), as
    the window stage makes them; the padded views `pkts` ([B, N] per field) and `data`
    ([B, N, M], zero past each packet's end) are built on first use (training, tests). The
    model stage reads the flat rows, so a window costs its packets, not N rows."""

    def __init__(self, n_packets: np.ndarray, start_us: np.ndarray, end_us: np.ndarray,
                 slot: np.ndarray, pkts: dict[str, np.ndarray] | None = None,
                 data: np.ndarray | None = None, flow: dict[str, np.ndarray] | None = None,
                 *, rows: dict[str, np.ndarray] | None = None, raw: np.ndarray | None = None,
                 n_max: int | None = None) -> None:
        self.n_packets = n_packets  # [B]
        self.start_us = start_us  # [B]
        self.end_us = end_us  # [B]
        self.slot = slot  # [B] flow slot (may already be free if the flow ended)
        self.flow = flow if flow is not None else {}  # [B] per FLOW_FIELDS
        if (pkts is None or data is None) and (rows is None or raw is None or n_max is None):
            raise ValueError("WindowBatch needs padded pkts+data or flat rows+raw+n_max")
        self._pkts, self._data = pkts, data
        self._rows, self._raw = rows, raw
        self.n_max = int(n_max if n_max is not None else data.shape[1])  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.n_packets)

    @property
    def counts(self) -> np.ndarray:
        """Packets of each window that are kept (n_packets, at most N)."""
        return np.minimum(self.n_packets, self.n_max).astype(np.int64)

    @property
    def first(self) -> np.ndarray:
        """Row of each window's first packet in `rows` / `raw`."""
        c = self.counts
        return np.cumsum(c) - c

    def _valid(self) -> np.ndarray:
        return np.arange(self.n_max)[None, :] < self.counts[:, None]

    @property
    def rows(self) -> dict[str, np.ndarray]:
        if self._rows is None:
            valid = self._valid()
            self._rows = {k: v[:, :self.n_max][valid] for k, v in self._pkts.items()}
        return self._rows

    @property
    def raw(self) -> np.ndarray:
        if self._raw is None:
            self._raw = self._data[:, :self.n_max][self._valid()]
        return self._raw

    @property
    def pkts(self) -> dict[str, np.ndarray]:
        if self._pkts is None:
            valid = self._valid()
            out = {}
            for k, v in self._rows.items():
                a = np.zeros((len(self), self.n_max), dtype=v.dtype)
                a[valid] = v
                out[k] = a
            self._pkts = out
        return self._pkts

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            a = np.zeros((len(self), self.n_max, self._raw.shape[1]), dtype=np.uint8)
            a[self._valid()] = self._raw
            self._data = a
        return self._data


def concat_windows(batches: list[WindowBatch]) -> WindowBatch:
    """One WindowBatch of several (flat rows when all have them)."""
    if len(batches) == 1:
        return batches[0]
    cat = np.concatenate
    flow = {k: cat([b.flow[k] for b in batches]) for k in batches[0].flow}
    head = (cat([b.n_packets for b in batches]), cat([b.start_us for b in batches]),
            cat([b.end_us for b in batches]), cat([b.slot for b in batches]))
    n_max = batches[0].n_max
    if all(b._rows is not None and b.n_max == n_max for b in batches):
        return WindowBatch(*head, flow=flow, n_max=n_max,
                           rows={k: cat([b.rows[k] for b in batches]) for k in batches[0].rows},
                           raw=cat([b.raw for b in batches]))
    return WindowBatch(*head, {k: cat([b.pkts[k] for b in batches]) for k in batches[0].pkts},
                       cat([b.data for b in batches]), flow)


def packet_rows(ctx: BatchContext, m: int, order: np.ndarray | None = None
                ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(slot, FIELDS columns, first `m` bytes) of the batch's flow packets, in `order`
    (positions in ctx.update) or as the flow table lists them: what the window stage keeps
    of a packet, and all that `replay.model_process` sends to the scoring process."""
    upd, d = ctx.update, ctx.decoded
    sel = slice(None) if order is None else order
    pidx = upd.idx[sel]
    rows = {
        "ts_us": ctx.batch.ts_us[pidx].astype(np.int64), "size": d.iplen[pidx].astype(np.int32),
        "to_server": upd.to_server[sel].astype(np.int8),
        "tcp_flags": d.tcp_flags[pidx].astype(np.uint8),
        "payload_len": d.plen[pidx].astype(np.int32),
        "tcp_win": d.tcp_win[pidx].astype(np.int32), "ttl": d.ttl[pidx].astype(np.uint8),
        "proto": d.proto[pidx].astype(np.uint8),
    }
    return upd.slot[sel].astype(np.int64), rows, _raw_bytes(ctx.batch.data, d.l3[pidx],
                                                            rows["size"], m)


def _raw_bytes(data: np.ndarray, l3: np.ndarray, size: np.ndarray, m: int) -> np.ndarray:
    """uint8 [n, M]: the first M bytes from each packet's IP header, zero past its IP
    length (bytes past the buffer's end repeat its last byte, then get zeroed by length
    as before)."""
    l3 = l3.astype(np.int64)
    if len(data) >= m:
        inside = l3 + m <= len(data)
        view = np.lib.stride_tricks.sliding_window_view(data, m)
        raw = view[np.where(inside, l3, 0)]
        if not inside.all():
            out = np.flatnonzero(~inside)
            grab = l3[out][:, None] + np.arange(m)
            raw[out] = data[np.minimum(grab, len(data) - 1)]
    else:
        grab = l3[:, None] + np.arange(m)
        raw = data[np.minimum(grab, len(data) - 1)]
    short = np.flatnonzero(size < m)  # only these have bytes past their end to clear
    if len(short):
        raw[short] *= np.arange(m)[None, :] < size[short, None]
    return raw


class _PacketStore:
    """Packets of open windows, appended in bulk: per-packet columns, raw bytes, and the flow
    slot and window number each belongs to. Rows of closed windows stay as garbage (their
    window number no longer matches the slot's) until the next compaction."""

    def __init__(self, m: int):
        self.cols = {k: np.zeros(0, t) for k, t in FIELDS.items()}
        self.slot = np.zeros(0, np.int64)
        self.seq = np.zeros(0, np.int64)
        self.raw = np.zeros((0, m), np.uint8)
        self.n = 0
        self.garbage = 0

    def append(self, cols: dict[str, np.ndarray], raw: np.ndarray, sel: np.ndarray,
               slot: np.ndarray, seq: np.ndarray) -> None:
        k = len(sel)
        if not k:
            return
        need = self.n + k
        if need > len(self.slot):
            cap = max(need, 2 * len(self.slot), 1024)
            for name in FIELDS:
                self.cols[name] = _grown(self.cols[name], cap, self.n)
            self.slot = _grown(self.slot, cap, self.n)
            self.seq = _grown(self.seq, cap, self.n)
            self.raw = _grown(self.raw, cap, self.n)
        lo, hi = self.n, need
        for name in FIELDS:
            self.cols[name][lo:hi] = cols[name][sel]
        self.raw[lo:hi] = raw[sel]
        self.slot[lo:hi] = slot
        self.seq[lo:hi] = seq
        self.n = need

    def compact(self, live: np.ndarray) -> None:
        keep = np.flatnonzero(live)
        k = len(keep)
        for name in FIELDS:
            self.cols[name][:k] = self.cols[name][keep]
        self.raw[:k] = self.raw[keep]
        self.slot[:k] = self.slot[keep]
        self.seq[:k] = self.seq[keep]
        self.n = k
        self.garbage = 0


def _grown(a: np.ndarray, cap: int, used: int) -> np.ndarray:
    out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
    out[:used] = a[:used]
    return out


def _search_groups(ts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   key: np.ndarray) -> np.ndarray:
    """Per query, np.searchsorted(ts[lo:hi], key, side='left') + lo, for many (lo, hi, key)
    at once. Sorted groups (the usual case) take one global searchsorted over (group, time)
    keys; otherwise a vectorised copy of numpy's binary search gives the very same index
    numpy gives on an unsorted group."""
    if not len(key):
        return np.zeros(0, np.int64)
    n = len(ts)
    same = np.zeros(n, dtype=bool)  # packet i is in the same group as packet i - 1
    starts = np.zeros(n, dtype=bool)
    starts[lo] = True
    same[1:] = ~starts[1:]
    sorted_groups = not bool((same[1:] & (ts[1:] < ts[:-1])).any())
    tmin, tmax = int(ts.min()), int(ts.max())
    width = tmax - tmin + 2
    gid = np.cumsum(starts) - 1
    n_groups = int(gid[-1]) + 1
    if sorted_groups and width < (1 << 62) // max(n_groups, 1):
        comp = gid * width + (ts - tmin)
        qgid = gid[np.minimum(lo, n - 1)]
        qrel = np.clip(key - tmin, 0, width - 1)
        got = np.searchsorted(comp, qgid * width + qrel, side="left")
        return np.clip(got, lo, hi)
    left = np.zeros(len(key), np.int64)
    right = (hi - lo).astype(np.int64)
    while True:
        active = left < right
        if not active.any():
            return lo + left
        mid = left + ((right - left) >> 1)
        below = ts[np.minimum(lo + mid, n - 1)] < key
        left = np.where(active & below, mid + 1, left)
        right = np.where(active & ~below, mid, right)


class WindowStage:
    """Cuts flows into windows and hands closed windows to `consumer` (the model)."""

    def __init__(self, cfg: WindowConfig, consumer: Callable[[WindowBatch], list[str]]):
        self.cfg = cfg
        self.consumer = consumer
        self.max_us = int(cfg.seconds * 1_000_000)
        # per flow slot: the open window's number (-1: none), first packet time, packets
        self._seq = np.full(0, -1, np.int64)
        self._start = np.zeros(0, np.int64)
        self._count = np.zeros(0, np.int64)
        self._row = np.full(0, -1, np.int64)  # scratch: output row of a closing slot
        self._flow: dict[str, np.ndarray] = {}
        self._next_seq = 0
        self.store = _PacketStore(cfg.bytes)
        self.pending_packets = 0
        self.next_sweep = 0
        self.stats = {"windows": 0, "windows_forced": 0}

    def counters(self) -> dict[str, int]:
        return {}

    def flow_extra(self, ended: EndedFlows) -> None:
        return None

    # -- stage hooks ---------------------------------------------------------------------------
    def on_flows_ended(self, ended: EndedFlows) -> list[str]:
        slots = np.asarray(ended.slots, dtype=np.int64)
        slots = slots[slots < len(self._seq)]
        slots = slots[self._seq[slots] >= 0]
        if len(slots) > 1:  # a slot listed twice closes once, at its first place
            slots = slots[np.sort(np.unique(slots, return_index=True)[1])]
        return self._emit(self._close(slots)) if len(slots) else []

    def on_batch(self, ctx: BatchContext) -> list[str]:
        if not len(ctx.update.idx):
            return []
        order = np.argsort(ctx.update.slot, kind="stable")
        slot, rows, raw = packet_rows(ctx, self.cfg.bytes, order)
        return self.add_packets(slot, rows, raw, ctx.flows.cols)

    def add_packets(self, slot: np.ndarray, rows: dict[str, np.ndarray], raw: np.ndarray,
                    flow_cols: dict[str, np.ndarray]) -> list[str]:
        """One batch's flow packets (`packet_rows`) sorted by slot, each flow's packets in
        time order (a stable sort); `flow_cols` holds FLOW_FIELDS per slot."""
        n = len(slot)
        if not n:
            return []
        ts = rows["ts_us"]
        self._ensure(int(slot[-1]) + 1)
        self._capture_flow_dtypes(flow_cols)
        npk, span = self.cfg.packets, self.max_us

        # groups of packets by slot
        gfirst = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        gend = np.r_[gfirst[1:], n]
        gslot = slot[gfirst]
        gsize = gend - gfirst
        gid = np.repeat(np.arange(len(gfirst)), gsize)
        lo_p, hi_p = gfirst[gid], gend[gid]
        carry = self._seq[gslot] >= 0  # the group continues an open window
        cg = np.flatnonzero(carry)
        c_lo, c_hi = gfirst[cg], gend[cg]
        c_cnt, c_t0 = self._count[gslot[cg]], self._start[gslot[cg]]

        # where a window starting at each packet ends (and where each open window ends)
        found = _search_groups(ts, np.r_[lo_p, c_lo], np.r_[hi_p, c_hi],
                               np.r_[ts + span, c_t0 + span])
        pos = np.arange(n)
        lim = np.maximum(np.minimum(np.minimum(hi_p, pos + npk), found[:n]), pos + 1)
        c_lim = np.minimum(np.minimum(c_hi, c_lo + npk - c_cnt), found[n:])
        c_close = (c_lim < c_hi) | (c_cnt + (c_lim - c_lo) >= npk)

        # window starts: each group's first packet (or the first after the open window),
        # then where each window ends, followed for all groups at once
        first = np.r_[gfirst[~carry], c_lim[c_lim < c_hi]]
        is_start = _chain(np.where(lim < hi_p, lim, n), first, int(gsize.max()))
        ws = np.flatnonzero(is_start)
        we = lim[ws]
        done = (we < hi_p[ws]) | (we - ws >= npk)

        lines: list[str] = []
        # open windows that continue here: take their packets; close the finished ones
        in_carry = np.zeros(n, dtype=bool)
        if len(cg):
            c_len = c_lim - c_lo
            c_pk = np.repeat(c_lo - np.cumsum(c_len) + c_len, c_len) + np.arange(int(
                c_len.sum()))
            c_of = np.repeat(np.arange(len(cg)), c_len)  # which open window, per packet
            in_carry[c_pk] = True
            keep_open = ~c_close[c_of]
            stay = c_pk[keep_open]
            self.store.append(rows, raw, stay, slot[stay], self._seq[slot[stay]])
            added = np.bincount(c_of[keep_open], minlength=len(cg))
            self._count[gslot[cg]] += added
            self.pending_packets += int(added.sum())
            closing = np.flatnonzero(c_close)
            if len(closing):
                tail = c_pk[c_close[c_of]]
                lines += self._emit(self._close(gslot[cg[closing]], rows, raw, tail,
                                                np.searchsorted(closing, c_of[c_close[c_of]])))
        # windows that start and end in this batch
        wid = np.cumsum(is_start) - 1
        wdone = (done[np.maximum(wid, 0)] & ~in_carry) if len(ws) else np.zeros(n, bool)
        dp = np.flatnonzero(wdone)
        if len(dp):
            dw = np.flatnonzero(done)
            row = np.searchsorted(dw, wid[dp])
            wb = self._pack(len(dw), row, {k: v[dp] for k, v in rows.items()}, raw[dp],
                            ts[ws[dw]], slot[ws[dw]],
                            {k: flow_cols[k][slot[ws[dw]]] for k in FLOW_FIELDS})
            lines += self._emit(wb)
        # windows still open at the end of the batch wait in the store
        nw = ws[~done]
        if len(nw):
            ns = slot[nw]
            seqs = self._next_seq + np.arange(len(nw))
            self._next_seq += len(nw)
            self._seq[ns] = seqs
            self._start[ns] = ts[nw]
            cnt = we[~done] - nw
            self._count[ns] = cnt
            for k in FLOW_FIELDS:
                self._flow[k][ns] = flow_cols[k][ns]
            op = np.flatnonzero(~wdone & ~in_carry)
            self.store.append(rows, raw, op, slot[op], self._seq[slot[op]])
            self.pending_packets += int(cnt.sum())

        now = int(ts.max())
        if now >= self.next_sweep:
            # windows whose time is up close even when their flow goes quiet
            self.next_sweep = now + 1_000_000
            open_slots = self._open_slots()
            late = open_slots[now - self._start[open_slots] >= span]
            if len(late):
                lines += self._emit(self._close(late))
        if self.pending_packets > self.cfg.max_pending:
            # close (and score) the oldest windows until a quarter of the bound is free,
            # so a flood of one-packet flows cannot hold more than max_pending packets
            open_slots = self._open_slots()
            oldest = open_slots[np.argsort(self._start[open_slots], kind="stable")]
            excess = self.pending_packets - self.cfg.max_pending * 3 // 4
            upto = int(np.searchsorted(np.cumsum(self._count[oldest]), excess, side="left"))
            drop = oldest[: upto + 1]
            self.stats["windows_forced"] += len(drop)
            lines += self._emit(self._close(drop))
        return lines

    def finish(self) -> list[str]:
        open_slots = self._open_slots()
        return self._emit(self._close(open_slots)) if len(open_slots) else []

    # -- internals -----------------------------------------------------------------------------
    def _ensure(self, want: int) -> None:
        have = len(self._seq)
        if want <= have:
            return
        cap = max(want, 2 * have, 1024)
        self._seq = np.r_[self._seq, np.full(cap - have, -1, np.int64)]
        self._row = np.r_[self._row, np.full(cap - have, -1, np.int64)]
        self._start = np.r_[self._start, np.zeros(cap - have, np.int64)]
        self._count = np.r_[self._count, np.zeros(cap - have, np.int64)]
        for k, a in self._flow.items():
            self._flow[k] = np.r_[a, np.zeros(cap - have, a.dtype)]

    def _capture_flow_dtypes(self, cols: dict[str, np.ndarray]) -> None:
        if len(self._flow) == len(FLOW_FIELDS):
            return
        for k in FLOW_FIELDS:
            self._flow[k] = np.zeros(len(self._seq), cols[k].dtype)

    def _open_slots(self) -> np.ndarray:
        """Slots with an open window, in the order the windows opened."""
        s = np.flatnonzero(self._seq >= 0)
        return s[np.argsort(self._seq[s], kind="stable")]

    def _close(self, slots: np.ndarray, rows: dict[str, np.ndarray] | None = None,
               raw: np.ndarray | None = None, tail: np.ndarray | None = None,
               tail_row: np.ndarray | None = None) -> WindowBatch:
        """Close the open windows of `slots` (output rows in that order); `tail` are packets
        of this batch (indices into rows/raw, row per packet in tail_row) that end them."""
        slots = np.asarray(slots, dtype=np.int64)
        k = len(slots)
        st = self.store
        self._row[slots] = np.arange(k)
        ps = st.slot[: st.n]
        prow = self._row[ps]
        pick = np.flatnonzero((prow >= 0) & (st.seq[: st.n] == self._seq[ps]))
        self._row[slots] = -1
        prow = prow[pick]
        cols = {name: st.cols[name][pick] for name in FIELDS}
        praw = st.raw[pick]
        if tail is not None and len(tail):
            prow = np.r_[prow, tail_row]
            cols = {name: np.r_[cols[name], rows[name][tail]] for name in FIELDS}
            praw = np.concatenate([praw, raw[tail]])
        srt = np.argsort(prow, kind="stable")  # stored packets first, then this batch's
        wb = self._pack(k, prow[srt], {name: v[srt] for name, v in cols.items()}, praw[srt],
                        self._start[slots].copy(), slots,
                        {name: self._flow[name][slots] for name in FLOW_FIELDS})
        self.pending_packets -= int(self._count[slots].sum())
        self._seq[slots] = -1
        self._count[slots] = 0
        st.garbage += len(pick)
        if st.garbage > max(4096, st.n // 2):
            live = st.seq[: st.n] == self._seq[st.slot[: st.n]]
            st.compact(live)
        return wb

    def _pack(self, b: int, row: np.ndarray, cols: dict[str, np.ndarray], raw: np.ndarray,
              start: np.ndarray, slot: np.ndarray, flow: dict[str, np.ndarray]) -> WindowBatch:
        """Packets (sorted by output row, in time order within a row) as the flat rows of
        `b` windows, each cut to its first N packets."""
        npk = self.cfg.packets
        counts = np.bincount(row, minlength=b).astype(np.int64)
        pos = np.arange(len(row)) - (np.cumsum(counts) - counts)[row]
        ok = pos < npk
        counts = np.minimum(counts, npk)
        rows = {name: cols[name][ok] for name in FIELDS}
        ends = np.zeros(b, np.int64)
        has = counts > 0
        ends[has] = rows["ts_us"][(np.cumsum(counts) - 1)[has]]
        return WindowBatch(counts, start.astype(np.int64), ends,
                           slot.astype(np.int64), flow=flow, rows=rows, raw=raw[ok],
                           n_max=npk)

    def _emit(self, wb: WindowBatch) -> list[str]:
        if not len(wb):
            return []
        self.stats["windows"] += len(wb)
        return self.consumer(wb)


def _chain(nxt: np.ndarray, first: np.ndarray, longest: int) -> np.ndarray:
    """Bool [n]: the packets reached from `first` by following `nxt` (n = past the end).

    Pointer doubling: jump tables J_k = nxt applied 2^k times; the packets reached at
    multiples of 2^k are those reached at multiples of 2^(k+1) plus one J_k jump from them.
    log2(longest) rounds of whole-array gathers, whatever the number of flows."""
    n = len(nxt)
    jump = np.r_[nxt, n]
    marked = np.zeros(n + 1, dtype=bool)
    marked[first] = True
    levels = max(1, int(longest).bit_length())
    tables = [jump]
    for _ in range(levels - 1):
        tables.append(tables[-1][tables[-1]])
    for table in reversed(tables):
        marked[table[np.flatnonzero(marked)]] = True
    return marked[:n]
