"""Windows and scoring in a second process, for replay (`replay.model_process`).

Cutting windows, features, onnxruntime, explanations and alerts cost about as much as the
whole rest of a replay (docs/model.md "Speed"), and they need only a few facts per packet.
`ModelProcessStage` stands in for the `ModelStage` in the replay process: per batch it puts
the packet rows the window stage keeps (`windows.packet_rows`: slot, timestamp, sizes,
flags, the first bytes) into shared memory and sends the addresses of the flows the batch
started; per ended flow list, the slots and flow ids. A forked worker owns the real
ModelStage and a mirror of the flow-table columns it reads (`FlowMirror`), applies the
messages in order, and answers each with its alert lines and, for ended flows, their
verdict columns (`ml_*`, model-alerted) and the flow events' metadata.

The replay process goes on with the next batches while the worker scores the last one, and
holds each ended flow list back until its answer is in: flow events carry the verdict, so
they are written up to LAG batches later than in-process, with the same content. The
output is the in-process output line for line in another order (a batch's model alerts and
flow events come after later batches' rule alerts); which answers are awaited at which
point is fixed, not timing-dependent, so the order is the same on every run.

Rules with `ml.class` / `ml.score` read the verdict in the batch its window closed in, so
they need the in-process stage; `use_model_process` keeps it for them.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..config import Config
from ..flow import EndedFlows
from ..output.eve import flow_lines
from ..pipeline import BatchContext, Stage, StageFailure
from ..windows import FLOW_FIELDS, packet_rows
from .model import ModelError, ModelStage, build_model_stage, verdict_flow_extra, verdict_fragments

VERDICT_COLS = (*ModelStage.COLS, "alerted")
# packet rows in shared memory, in this order (8-byte fields first: every part stays aligned)
RING_LAYOUT = (("slot", np.int64), ("ts_us", np.int64), ("size", np.int32),
               ("payload_len", np.int32), ("tcp_win", np.int32), ("to_server", np.int8),
               ("tcp_flags", np.uint8), ("ttl", np.uint8), ("proto", np.uint8))
# settle() calls (batches) the worker may be behind: one more than needed to overlap, so
# that a batch slower to score than to decode does not stall the replay
LAG = 2
RING_BYTES = 64 << 20  # about 10 batches of 65,536 packets; larger batches go by the pipe


def row_bytes(m: int) -> int:
    """Bytes of shared memory per packet row with `m` raw bytes."""
    return sum(np.dtype(t).itemsize for _, t in RING_LAYOUT) + m


def ring_views(ring: Any, start: int, n: int, m: int) -> dict[str, np.ndarray]:
    """The arrays of `n` packet rows at byte `start` of the shared ring (RING_LAYOUT, then
    "raw" [n, m])."""
    out = {}
    at = start
    for name, dtype in RING_LAYOUT:
        size = np.dtype(dtype).itemsize * n
        out[name] = np.frombuffer(ring, dtype, n, at)
        at += size
    out["raw"] = np.frombuffer(ring, np.uint8, n * m, at).reshape(n, m)
    return out


class ModelProcessError(StageFailure):
    """The scoring process failed; the message carries its reason."""


class FlowMirror:
    """The flow-table columns the model stage reads (FLOW_FIELDS, active, alerted, its own
    ml_* columns), per slot, kept by the scoring process from the messages it gets."""

    def __init__(self) -> None:
        self.cols: dict[str, np.ndarray] = {"active": np.zeros(0, np.bool_),
                                            "alerted": np.zeros(0, np.bool_),
                                            "flow_id": np.zeros(0, np.uint64)}
        self.defaults: dict[str, Any] = {"active": False, "alerted": False, "flow_id": 0}

    def add_column(self, name: str, dtype: type, default: object = 0) -> None:
        self.defaults[name] = default
        self.cols[name] = np.full(len(self.cols["active"]), default, dtype=dtype)

    def ensure(self, want: int) -> None:
        have = len(self.cols["active"])
        if want <= have:
            return
        cap = max(want, 2 * have, 1024)
        for name, a in self.cols.items():
            self.cols[name] = np.r_[a, np.full(cap - have, self.defaults[name], a.dtype)]

    def start_flows(self, slots: np.ndarray, facts: dict[str, np.ndarray]) -> None:
        """New flows in `slots` (as the flow table resets a reused slot)."""
        if not len(slots):
            return
        self.ensure(int(slots.max()) + 1)
        for name, values in facts.items():
            if name not in self.cols:
                self.add_column(name, values.dtype, 0)
            self.cols[name][slots] = values
        for name, default in self.defaults.items():
            if name not in facts:
                self.cols[name][slots] = default
        self.cols["active"][slots] = True

    def end_flows(self, slots: np.ndarray, flow_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The verdict columns of ended flows, as the flow table's snapshot holds them; their
        slots are free afterwards."""
        self.ensure(int(slots.max()) + 1 if len(slots) else 0)
        c = self.cols
        ok = c["active"][slots] & (c["flow_id"][slots] == flow_ids)
        out = {}
        for name in VERDICT_COLS:
            out[name] = np.where(ok, c[name][slots],
                                 np.array(self.defaults[name], c[name].dtype))
        c["active"][slots[ok]] = False
        return out


def _serve(cfg: Config, conn: Connection, ring: Any) -> None:
    """The worker: apply messages in order, answer each, until "close" or the parent goes
    away. A thread reads messages and one sends answers, so neither side ever blocks on a
    full socket while the other is busy."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when to stop
    answers: queue.Queue = queue.Queue()
    inbox: queue.Queue = queue.Queue()

    def read() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = ("close",)
            inbox.put(msg)
            if msg[0] == "close":
                return

    def answer() -> None:
        while True:
            msg = answers.get()
            try:
                conn.send(msg)
            except OSError:
                return
            if msg is None or msg[0] in ("closed", "error"):
                return

    sender = threading.Thread(target=answer, daemon=True)
    sender.start()
    threading.Thread(target=read, daemon=True).start()
    try:
        stage = build_model_stage(cfg)
        mirror = FlowMirror()
        stage._attach(mirror)
        while True:
            msg = inbox.get()
            kind = msg[0]
            if kind == "batch":
                _, rows, new_slots, facts = msg
                if isinstance(rows, tuple):  # (start, n): the rows are in the shared ring
                    rows = ring_views(ring, rows[0], rows[1], stage.contract.bytes)
                mirror.start_flows(new_slots, facts)
                slot, raw = rows.pop("slot"), rows.pop("raw")
                order = np.argsort(slot, kind="stable")
                # the fancy indexing copies: the ring's part is free once this is answered
                lines = stage.on_packets(mirror, slot[order],
                                         {k: v[order] for k, v in rows.items()}, raw[order])
                answers.put(("batch", lines, stage.drain_alert_signatures(), stage.counters(),
                             None))
            elif kind == "ended":
                _, slots, flow_ids, reason = msg
                snap = mirror.end_flows(slots, flow_ids)
                ended = EndedFlows({"flow_id": flow_ids, **snap}, reason,
                                   np.zeros(len(slots), np.int64), slots)
                lines = stage.on_flows_ended(ended)
                # the flow events' metadata, made here: one string crosses the pipe
                after = verdict_fragments(ended.cols, stage.classes, bool(stage.baselines))
                verdicts = {k: ended.cols[k] for k in VERDICT_COLS}
                verdicts["after"] = None if after is None else "\n".join(after)
                answers.put(("ended", lines, stage.drain_alert_signatures(), stage.counters(),
                             verdicts))
            elif kind == "close":
                answers.put(("closed", stage.counters()))
                break
    except ModelError as exc:  # the model file changed since the replay checked it
        answers.put(("error", f"model scoring process: {exc}", None))
    except Exception as exc:  # noqa: BLE001 - a bug here must reach the user, not hang
        answers.put(("error", f"model scoring process: {type(exc).__name__}: {exc}",
                     traceback.format_exc()))
    sender.join()
    conn.close()


class ModelProcessStage:
    """The replay process's side of the scoring process: a pipeline stage that sends, and
    holds ended flows until their verdicts come back (`defers_flow_events`)."""

    defers_flow_events = True

    def __init__(self, cfg: Config, model: ModelStage):
        self.classes = model.classes
        self.baselines = bool(model.baselines)
        self.bytes = model.contract.bytes
        self.stats = model.counters()
        # shared with the worker (an anonymous shared mapping survives the fork): packet rows
        # go there, the pipe carries only where they are
        self._ring = mmap.mmap(-1, RING_BYTES)
        self._regions: deque[tuple[int, int, int]] = deque()  # (message, start, end) in use
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(cfg, child, self._ring), daemon=True,
                                 name="netsensor-model")
        self._proc.start()
        child.close()
        self._sent = 0  # messages sent
        self._waiting: deque[EndedFlows | None] = deque()  # unanswered, in order
        # messages sent before each of the last LAG settle() calls, oldest first
        self._marks: deque[int] = deque([0] * LAG, maxlen=LAG)
        self._lines: list[str] = []
        self._sigs: list[str] = []
        self._ready: list[EndedFlows] = []
        self._after: dict[int, list[str] | None] = {}  # id(ended) -> metadata fragments
        self._closed = False

    # -- stage hooks ---------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return dict(self.stats)

    def on_batch(self, ctx: BatchContext) -> list[str]:
        if not len(ctx.update.idx):
            return []
        slot, rows, raw = packet_rows(ctx, self.bytes)
        new = ctx.flows.started  # the worker resets these slots for their new flows
        cols = ctx.flows.cols
        n, m = len(slot), raw.shape[1]
        start = self._alloc(n * row_bytes(m))
        if start is None:  # larger than the ring: by the pipe
            payload: Any = {"slot": slot, **rows, "raw": raw}
        else:
            views = ring_views(self._ring, start, n, m)
            for name, arr in (("slot", slot), *rows.items(), ("raw", raw)):
                views[name][...] = arr
            payload = (start, n)
        self._send(("batch", payload, new, {k: cols[k][new] for k in FLOW_FIELDS}), None)
        return []

    def on_flows_ended(self, ended: EndedFlows) -> list[str]:
        slots = np.asarray(ended.slots, dtype=np.int64)
        if not len(slots):
            return []
        self._send(("ended", slots, ended.cols["flow_id"], ended.reason), ended)
        return []

    def flow_extra(self, ended: EndedFlows):
        extra = verdict_flow_extra(ended, self.classes, self.baselines)
        after = self._after.pop(id(ended), None)
        extra.flow_lines = lambda with_cid, seed: flow_lines(  # type: ignore[attr-defined]
            ended, with_cid, seed, after)
        return extra

    def drain_alert_signatures(self) -> list[str]:
        out, self._sigs = self._sigs, []
        return out

    def settle(self, wait: bool = False) -> tuple[list[str], list[EndedFlows]]:
        """Alert lines and ended flows (verdicts filled in, in order) answered so far, after
        waiting for the messages sent before the settle LAG calls back (with `wait`: for
        every message sent). The worker scores a batch while the replay goes on with the
        next; the points where answers are awaited are fixed (and waiting for ring space
        depends on sizes only), so the output order never depends on timing, and the replay
        runs at most LAG batches ahead."""
        self._receive(self._sent if wait else self._marks[0])
        self._marks.append(self._sent)
        lines, self._lines = self._lines, []
        ready, self._ready = self._ready, []
        return lines, ready

    def close(self) -> None:
        """Stop the worker (after settle(wait=True) nothing is left to answer)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.send(("close",))
            while True:
                msg = self._conn.recv()
                if msg[0] == "closed":
                    self.stats = msg[1]
                    break
                if msg[0] == "error":
                    raise ModelProcessError(msg[1])
        except (EOFError, OSError):
            pass
        finally:
            self._conn.close()
            self._proc.join(timeout=30)

    # -- internals -----------------------------------------------------------------------------
    def _send(self, msg: tuple, ended: EndedFlows | None) -> None:
        try:
            self._conn.send(msg)
        except OSError:
            try:  # the worker's own reason, when it gave one before it ended
                while self._conn.poll():
                    msg = self._conn.recv()
                    if msg[0] == "error":
                        self._answer_error(msg)
            except (EOFError, OSError):
                pass
            raise ModelProcessError("the model scoring process ended") from None
        self._sent += 1
        self._waiting.append(ended)

    def _receive(self, upto: int) -> None:
        """Take answers until the first `upto` messages sent are answered."""
        while self._sent - len(self._waiting) < upto:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                raise ModelProcessError("the model scoring process ended") from None
            except Exception:  # noqa: BLE001 - a read cut short (Ctrl-C) left half a message
                raise ModelProcessError("lost track of the model scoring process's "
                                        "answers") from None
            if msg[0] == "error":
                self._answer_error(msg)
            _, lines, sigs, self.stats, verdicts = msg
            ended = self._waiting.popleft()
            self._lines += lines
            self._sigs += sigs
            if ended is not None:
                for name in ModelStage.COLS:
                    ended.cols[name] = verdicts[name]
                ended.cols["alerted"] = ended.cols["alerted"] | verdicts["alerted"]
                after = verdicts["after"]
                self._after[id(ended)] = None if after is None else after.split("\n")
                self._ready.append(ended)

    @staticmethod
    def _answer_error(msg: tuple) -> None:
        _, reason, trace = msg
        if trace:  # a bug, not a user mistake: the worker's traceback helps fix it
            sys.stderr.write(trace)
        raise ModelProcessError(reason)

    def _alloc(self, need: int) -> int | None:
        """Start of `need` free bytes in the ring (waiting for the worker to answer older
        batches when it is full), None when it can never hold them."""
        if need > len(self._ring):
            return None
        while True:
            answered = self._sent - len(self._waiting)
            while self._regions and self._regions[0][0] < answered:
                self._regions.popleft()
            if not self._regions:
                start: int | None = 0
            else:
                oldest, newest = self._regions[0][1], self._regions[-1][2]
                if newest > oldest:  # in use: [oldest, newest); free at the end, then before
                    start = newest if newest + need <= len(self._ring) else (
                        0 if need <= oldest else None)
                else:  # wrapped: free between the newest and the oldest
                    start = newest if newest + need <= oldest else None
            if start is not None:
                self._regions.append((self._sent, start, start + need))
                return start
            self._receive(answered + 1)


def use_model_process(cfg: Config, stages: list[Stage]) -> list[Stage]:
    """`stages` with the in-process ModelStage replaced by a ModelProcessStage where
    `replay.model_process` asks for it: true, or auto (the default) when this process may
    use two cores or more (three with `replay.eve_process`). Rules with ml.* keywords keep
    the in-process stage (they read the verdict in the same batch), as does a config
    without the model."""
    want = cfg.replay.model_process
    if want is False:
        return stages
    model = next((s for s in stages if isinstance(s, ModelStage)), None)
    if model is None or any(getattr(s, "has_ml", False) for s in stages):
        return stages
    # auto: a core for the replay, one for the scoring (and one for the EVE process if on)
    if want == "auto" and len(os.sched_getaffinity(0)) < 2 + int(cfg.replay.eve_process):
        return stages
    proxy = ModelProcessStage(cfg, model)
    return [proxy if s is model else s for s in stages]
