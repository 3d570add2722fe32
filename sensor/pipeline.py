"""The per-batch pipeline shared by replay and live capture.

decode -> flow table -> stages (rules, windows/model) -> EVE. Stages see a whole batch at
once and return EVE lines; flow events are written when flows end, carrying whatever the
stages recorded on the flow (alerted, model scores).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .capture import PacketBatch
from .config import Config
from .decode import DecodedBatch, decode_batch
from .defrag import DefragConfig, Defragmenter
from .flow import EndedFlows, FlowTable, FlowUpdate
from .output.eve import flow_events, stats_event
from .output.sinks import EveFileSink
from .tunnel import Decapsulator


@dataclass
class BatchContext:
    """What a stage sees of one batch."""

    batch: PacketBatch
    decoded: DecodedBatch
    update: FlowUpdate
    flows: FlowTable


class Stage(Protocol):
    """A pipeline stage beside the flow table (rule engine, windows + model)."""

    def on_batch(self, ctx: BatchContext) -> list[str]: ...

    def on_flows_ended(self, ended: EndedFlows) -> list[str]: ...

    def flow_extra(self, ended: EndedFlows) -> Any: ...

    def counters(self) -> dict[str, int]: ...


class StageFailure(Exception):
    """A stage's helper process failed mid-run; the message says why, in one line."""


class DeferringStage(Stage, Protocol):
    """A stage that decides flow events later (the model scored in another process): it
    keeps the ended flows it is given, and `settle` hands back its alert lines and the ended
    flows that are ready to log, in order (`defers_flow_events` is true)."""

    defers_flow_events: bool

    def settle(self, wait: bool = False) -> tuple[list[str], list[EndedFlows]]: ...

    def close(self) -> None: ...


class Pipeline:
    """Runs batches through the stages and writes EVE to a sink."""

    def __init__(self, config: Config, sink: EveFileSink | None, stages: list[Stage] | None = None,
                 flow_seed: int | None = None):
        self.cfg = config
        self.sink = sink
        self.flows = FlowTable(config.flow, seed=flow_seed)
        self.stages: list[Stage] = stages or []
        self.counters: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.alerts_by_sig: Counter[str] = Counter()
        self.types = set(config.outputs.eve.types)
        t = config.flow.timeouts
        positive = [v for st in (t.default, t.tcp, t.udp, t.icmp)
                    for v in (st.new, st.established, st.closed) if v > 0]
        # one batch must span less than the shortest timeout (see sensor.flow)
        self.max_span_us = max(1, min(positive, default=30) * 1_000_000 - 1)
        self.first_ts: int | None = None
        self.now_us = 0
        self.stats_interval_us = config.outputs.stats.interval * 1_000_000
        self.next_stats_us: int | None = None
        self.wall_start = time.monotonic()
        lim = config.defrag
        self.defrag = Defragmenter(DefragConfig(
            max_trackers=lim.max_trackers, timeout_us=lim.timeout * 1_000_000,
            max_fragments=lim.max_fragments, max_bytes=lim.max_bytes))
        self.tunnels = Decapsulator()
        self.max_pkt_size = 0

    # -- public ------------------------------------------------------------------------------
    def process(self, batch: PacketBatch) -> None:
        if not len(batch):
            return
        ts = batch.ts_us
        run_max = np.maximum.accumulate(ts)
        start = 0
        n = len(batch)
        while start < n:
            stop = int(np.searchsorted(run_max, run_max[start] + self.max_span_us, side="left"))
            stop = max(stop, start + 1)
            # a batch opens at most a quarter of max_flows flows: the table must hold them,
            # and making room then evicts only the least recently seen (a flood's), not
            # the live sessions the batch continues
            stop = min(stop, start + max(1, self.cfg.flow.max_flows // 4))
            sub = batch if (start == 0 and stop >= n) else _slice(batch, start, stop)
            self._process(sub)
            start = stop

    def finish(self) -> None:
        """End every flow (end of input) and write the final stats event."""
        self._write_ended(self.flows.flush(self.now_us))
        self._settle(wait=True)
        deferring = self._deferring()
        if deferring is not None:
            deferring.close()
        self._stats()
        if self.sink is not None:
            self.sink.flush()

    def all_counters(self) -> dict[str, int]:
        out: Counter[str] = Counter(self.counters)
        out.update(self.flows.counters)
        out.update(self.defrag.counters)
        out.update(self.tunnels.counters)
        if out["decoder.pkts"]:
            out["decoder.avg_pkt_size"] = out["decoder.bytes"] // out["decoder.pkts"]
            out["decoder.max_pkt_size"] = self.max_pkt_size
        for stage in self.stages:
            out.update(stage.counters())
        out["flow.active"] = self.flows.active_count
        out["detect.alert"] = self.events["alert"]
        return dict(out)

    # -- internals ---------------------------------------------------------------------------
    def _process(self, batch: PacketBatch) -> None:
        ts = batch.ts_us
        if self.first_ts is None:
            self.first_ts = int(ts[0])
            self.next_stats_us = self.first_ts + self.stats_interval_us
        self._ingest(batch)
        self.now_us = max(self.now_us, int(ts.max()))
        self.defrag.expire(self.now_us)  # incomplete datagrams time out without new fragments
        self._write_ended(self.flows.expire(self.now_us))
        self._settle()
        if self.stats_interval_us and self.next_stats_us is not None and \
                self.now_us >= self.next_stats_us:
            self._stats()
            self.next_stats_us = self.now_us + self.stats_interval_us
        if self.sink is not None:
            self.sink.flush()

    def _ingest(self, batch: PacketBatch) -> None:
        """Run a batch, then the packets the sensor builds from it, right after it."""
        d = self._run(batch)
        if d.fragment.any():
            # reassembled datagrams follow the batch that completed them
            rebuilt = self.defrag.add(batch, d)
            if rebuilt is not None:
                self._ingest(rebuilt)
        for inner in self.tunnels.decapsulate(batch, d):
            self._ingest(inner)

    def _run(self, batch: PacketBatch) -> DecodedBatch:
        d = decode_batch(batch)
        self.counters.update(d.counters)
        self.max_pkt_size = max(self.max_pkt_size, int(batch.caplen.max()))
        upd, ended = self.flows.update(d, batch.ts_us, batch.caplen,
                                       batch.first_cnt if batch.cnt is None else batch.cnt)
        self._write_ended(ended)
        ctx = BatchContext(batch, d, upd, self.flows)
        for stage in self.stages:
            self._write(stage.on_batch(ctx), "alert")
            self._note_alerts(stage)
        self._write_ended(self.flows.take_superseded())
        return d

    def _note_alerts(self, stage: Stage) -> None:
        drain = getattr(stage, "drain_alert_signatures", None)
        if drain is not None:
            for sig in drain():
                self.note_alert(sig)

    def _deferring(self) -> DeferringStage | None:
        return next((s for s in self.stages if getattr(s, "defers_flow_events", False)), None)

    def _settle(self, wait: bool = False) -> None:
        """Write what a deferring stage has ready: its alerts, then the flows it held."""
        deferring = self._deferring()
        if deferring is None:
            return
        lines, ready = deferring.settle(wait)
        self._write(lines, "alert")
        self._note_alerts(deferring)
        for ended in ready:
            self._log_flows(ended)

    def _write_ended(self, ended_list: list[EndedFlows]) -> None:
        deferring = self._deferring()
        for ended in ended_list:
            for stage in self.stages:
                self._write(stage.on_flows_ended(ended), "alert")
                self._note_alerts(stage)
            if deferring is None:  # else it hands the flows back when their verdicts are in
                self._log_flows(ended)

    def _log_flows(self, ended: EndedFlows) -> None:
        """The flow events of `ended`, with what the stages add to them."""
        eve = self.cfg.outputs.eve
        extras = [stage.flow_extra(ended) for stage in self.stages]
        extras = [e for e in extras if e is not None]

        def extra(ev: dict[str, Any], i: int, extras: list = extras) -> None:
            for fn in extras:
                fn(ev, i)

        write_flows = getattr(self.sink, "write_flows", None)  # eve_worker: formats there
        if "flow" in self.types and write_flows is not None and not extras:
            self.events["flow"] += write_flows(ended, eve.community_id,
                                               eve.community_id_seed)
        elif "flow" in self.types:
            # a stage that can splice its keys into bulk-built lines (the model) saves
            # the per-flow dict path
            bulk = getattr(extras[0], "flow_lines", None) if len(extras) == 1 else None
            if bulk is not None:
                self._write(bulk(eve.community_id, eve.community_id_seed), "flow")
            else:
                self._write(flow_events(ended, extra if extras else None, eve.community_id,
                                        eve.community_id_seed), "flow")

    def _write(self, lines: list[str], kind: str) -> None:
        if not lines:
            return
        if kind == "alert":
            if "alert" not in self.types:
                return
        self.events[kind] += len(lines)
        if self.sink is not None:
            self.sink.write(lines)

    def note_alert(self, signature: str) -> None:
        self.alerts_by_sig[signature] += 1

    def _stats(self) -> None:
        if "stats" not in self.types or self.first_ts is None:
            return
        uptime = (self.now_us - self.first_ts) // 1_000_000
        line = stats_event(self.now_us, uptime, self.all_counters())
        self._write([line], "stats")

    def tick(self, now_us: int) -> None:
        """Live capture's clock: end idle flows and write due stats when no packet comes."""
        if now_us <= self.now_us:
            return
        self.now_us = now_us
        self._write_ended(self.flows.expire(now_us))
        self._settle()
        if self.stats_interval_us and self.next_stats_us is not None and \
                now_us >= self.next_stats_us:
            self._stats()
            self.next_stats_us = now_us + self.stats_interval_us
        if self.sink is not None:
            self.sink.flush()


def _slice(batch: PacketBatch, lo: int, hi: int) -> PacketBatch:
    return PacketBatch(
        data=batch.data, offset=batch.offset[lo:hi], caplen=batch.caplen[lo:hi],
        wirelen=batch.wirelen[lo:hi], ts_us=batch.ts_us[lo:hi], linktype=batch.linktype[lo:hi],
        first_cnt=batch.first_cnt + lo,
        iface=None if batch.iface is None else batch.iface[lo:hi],
        cnt=None if batch.cnt is None else batch.cnt[lo:hi],
    )
