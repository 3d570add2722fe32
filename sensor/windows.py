"""Per-flow time windows: the unit the model scores.

A window closes after `seconds` (counted from its first packet), after `packets` packets,
or when its flow ends. Each closed window carries, per packet: timestamp, IP length,
direction, TCP flags, payload length, TCP window, TTL, and the first `bytes` bytes of the IP
packet. Window boundaries are found for a whole batch at once (see `assign_windows`); the
packets of still-open windows wait in per-flow blocks, bounded by `max_pending`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass
class WindowBatch:
    """Closed windows, packets padded to N: arrays [B, N] per field, bytes [B, N, M]."""

    n_packets: np.ndarray  # [B]
    start_us: np.ndarray  # [B]
    end_us: np.ndarray  # [B]
    slot: np.ndarray  # [B] flow slot (may already be free if the flow ended)
    pkts: dict[str, np.ndarray]
    data: np.ndarray  # uint8 [B, N, M]; zero past each packet's end
    flow: dict[str, np.ndarray]  # [B] per FLOW_FIELDS

    def __len__(self) -> int:
        return len(self.n_packets)


class WindowStage:
    """Cuts flows into windows and hands closed windows to `consumer` (the model)."""

    def __init__(self, cfg: WindowConfig, consumer: Callable[[WindowBatch], list[str]]):
        self.cfg = cfg
        self.consumer = consumer
        self.max_us = int(cfg.seconds * 1_000_000)
        self.pending: dict[int, list[tuple[dict[str, np.ndarray], np.ndarray]]] = {}
        self.open_count: dict[int, int] = {}
        self.open_start: dict[int, int] = {}
        self.open_flow: dict[int, dict[str, int]] = {}
        self.pending_packets = 0
        self.next_sweep = 0
        self.stats = {"windows": 0, "windows_forced": 0}

    def counters(self) -> dict[str, int]:
        return {}

    def flow_extra(self, ended: EndedFlows) -> None:
        return None

    # -- stage hooks ---------------------------------------------------------------------------
    def on_flows_ended(self, ended: EndedFlows) -> list[str]:
        slots = [s for s in ended.slots.tolist() if s in self.pending]
        return self._emit(self._close(slots)) if slots else []

    def on_batch(self, ctx: BatchContext) -> list[str]:
        upd = ctx.update
        if not len(upd.idx):
            return []
        d = ctx.decoded
        order = np.argsort(upd.slot, kind="stable")
        slot = upd.slot[order]
        pidx = upd.idx[order]
        ts = ctx.batch.ts_us[pidx]
        n = len(order)
        rows = {
            "ts_us": ts, "size": d.iplen[pidx], "to_server": upd.to_server[order].astype(np.int8),
            "tcp_flags": d.tcp_flags[pidx], "payload_len": d.plen[pidx],
            "tcp_win": d.tcp_win[pidx].astype(np.int32), "ttl": d.ttl[pidx],
            "proto": d.proto[pidx],
        }
        m = self.cfg.bytes
        grab = d.l3[pidx][:, None] + np.arange(m)
        raw = ctx.batch.data[np.minimum(grab, len(ctx.batch.data) - 1)]
        raw[np.arange(m)[None, :] >= d.iplen[pidx][:, None]] = 0

        flows = ctx.flows.cols
        npk, span = self.cfg.packets, self.max_us
        gfirst = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        gend = np.r_[gfirst[1:], n]
        done_segs: list[np.ndarray] = []
        done_meta: list[tuple[int, int]] = []
        batches: list[WindowBatch] = []
        for lo, hi, s in zip(gfirst.tolist(), gend.tolist(), slot[gfirst].tolist(), strict=True):
            p = lo
            tg = ts[lo:hi]
            if s in self.pending:
                cnt, t0 = self.open_count[s], self.open_start[s]
                lim = min(hi, p + npk - cnt, lo + int(np.searchsorted(tg, t0 + span)))
                if lim > p:
                    self._stash(s, rows, raw, np.arange(p, lim), None, flows)
                if lim < hi or cnt + (lim - p) >= npk:
                    batches.append(self._close([s]))
                p = lim
            while p < hi:
                t0 = int(ts[p])
                lim = min(hi, p + npk, lo + int(np.searchsorted(tg, t0 + span)))
                lim = max(lim, p + 1)
                if lim < hi or lim - p >= npk:
                    done_segs.append(np.arange(p, lim))
                    done_meta.append((s, t0))
                else:
                    self._stash(s, rows, raw, np.arange(p, lim), t0, flows)
                p = lim
        lines: list[str] = []
        for wb in batches:
            lines += self._emit(wb)
        if done_segs:
            lines += self._emit(self._build_direct(done_segs, done_meta, rows, raw, flows))
        now = int(ts.max())
        if now >= self.next_sweep:
            # windows whose time is up close even when their flow goes quiet
            self.next_sweep = now + 1_000_000
            late = [s for s, t0 in self.open_start.items() if now - t0 >= span]
            if late:
                lines += self._emit(self._close(late))
        if self.pending_packets > self.cfg.max_pending:
            # close (and score) the oldest windows until a quarter of the bound is free,
            # so a flood of one-packet flows cannot hold more than max_pending packets
            oldest = sorted(self.open_start, key=self.open_start.get)
            excess = self.pending_packets - self.cfg.max_pending * 3 // 4
            drop = []
            for s in oldest:
                if excess <= 0:
                    break
                drop.append(s)
                excess -= self.open_count[s]
            self.stats["windows_forced"] += len(drop)
            lines += self._emit(self._close(drop))
        return lines

    # -- pending storage -----------------------------------------------------------------------
    def _stash(self, s: int, rows: dict[str, np.ndarray], raw: np.ndarray, seg: np.ndarray,
               new_start: int | None, flows: dict[str, np.ndarray]) -> None:
        if new_start is not None or s not in self.pending:
            self.pending[s] = []
            self.open_count[s] = 0
            self.open_start[s] = int(rows["ts_us"][seg[0]]) if new_start is None else new_start
            self.open_flow[s] = {k: flows[k][s] for k in FLOW_FIELDS}
        self.pending[s].append(({k: v[seg] for k, v in rows.items()}, raw[seg]))
        self.open_count[s] += len(seg)
        self.pending_packets += len(seg)

    def _close(self, slots: list[int]) -> WindowBatch:
        blocks = []
        meta = []
        for s in slots:
            parts = self.pending.pop(s)
            cnt = self.open_count.pop(s)
            start = self.open_start.pop(s)
            flow = self.open_flow.pop(s)
            self.pending_packets -= cnt
            rows = {k: np.concatenate([p[0][k] for p in parts]) for k in FIELDS}
            raw = np.concatenate([p[1] for p in parts])
            blocks.append((rows, raw))
            meta.append((s, start, flow))
        return self._pack(blocks, meta)

    def _build_direct(self, segs: list[np.ndarray], meta: list[tuple[int, int]],
                      rows: dict[str, np.ndarray], raw: np.ndarray,
                      flows: dict[str, np.ndarray]) -> WindowBatch:
        blocks = [({k: v[seg] for k, v in rows.items()}, raw[seg]) for seg in segs]
        full = [(s, start, {k: flows[k][s] for k in FLOW_FIELDS}) for s, start in meta]
        return self._pack(blocks, full)

    def _pack(self, blocks: list, meta: list) -> WindowBatch:
        b = len(blocks)
        npk = self.cfg.packets
        m = self.cfg.bytes
        pk = {k: np.zeros((b, npk), dtype=t) for k, t in FIELDS.items()}
        data = np.zeros((b, npk, m), dtype=np.uint8)
        counts = np.zeros(b, dtype=np.int64)
        for i, (rows, raw) in enumerate(blocks):
            k = min(len(raw), npk)
            counts[i] = k
            for name in FIELDS:
                pk[name][i, :k] = rows[name][:k]
            data[i, :k] = raw[:k]
        flow = {k: np.asarray([mt[2][k] for mt in meta]) for k in FLOW_FIELDS}
        ends = np.asarray([pk["ts_us"][i, counts[i] - 1] for i in range(b)], dtype=np.int64)
        return WindowBatch(counts, np.asarray([mt[1] for mt in meta], dtype=np.int64), ends,
                           np.asarray([mt[0] for mt in meta], dtype=np.int64), pk, data, flow)

    def _emit(self, wb: WindowBatch) -> list[str]:
        if not len(wb):
            return []
        self.stats["windows"] += len(wb)
        return self.consumer(wb)

    def finish(self) -> list[str]:
        return self._emit(self._close(list(self.pending))) if self.pending else []
