"""One capture worker process: its share of the interface and its own Pipeline.

Workers write no output themselves: each batch's EVE lines go to the supervisor over a
pipe, so output files, their reopen on SIGHUP and the network queues live in one process
and every line is written whole, by one writer. PACKET_FANOUT's flow hash keeps both
directions of a flow in one worker, so per-worker flow tables never split a flow.

Messages, worker -> supervisor: ("ready", i), ("fatal", i, text), ("lines", i, [str]),
("counters", i, {name: int}), ("prepared", i, ok, text), ("committed", i),
("done", i, {name: int}). Supervisor -> worker: ("prepare", Config), ("commit",),
("abort",), ("stop",).
"""

from __future__ import annotations

import ctypes
import dataclasses
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from .capture import CaptureError
from .capture.live import LiveCapture
from .config import Config
from .output.sinks import add_in_iface
from .pipeline import Pipeline, Stage
from .privileges import PrivilegeError, Target, drop, preload
from .stages import StageError, build_stages

PR_SET_PDEATHSIG = 1
REPORT_EVERY_S = 0.5
TICK_EVERY_S = 1.0


class PipeSink:
    """The Pipeline's sink in a worker: lines gather per batch and go up the pipe on flush."""

    def __init__(self, conn: Connection, index: int, iface: str):
        self.conn = conn
        self.index = index
        self.iface = iface
        self.buf: list[str] = []

    def write(self, lines: list[str]) -> None:
        self.buf.extend(add_in_iface(lines, self.iface))

    def flush(self) -> None:
        if self.buf:
            self.conn.send(("lines", self.index, self.buf))
            self.buf = []

    def reopen(self) -> None:
        """The supervisor owns the files."""

    def close(self) -> None:
        self.flush()


class _Reload:
    """A new stage set built in a thread while the old one keeps processing packets."""

    def __init__(self, cfg: Config):
        self.stages: list[Stage] | None = None
        self.error: str | None = None
        self.reported = False
        self.thread = threading.Thread(target=self._build, args=(cfg,), daemon=True)
        self.thread.start()

    def _build(self, cfg: Config) -> None:
        try:
            self.stages = build_stages(cfg)
        except StageError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure means: keep the old set
            self.error = f"{type(exc).__name__}: {exc}"


def capture_options(cfg: Config, fanout_group: int | None) -> dict[str, Any]:
    live = cfg.live
    return dict(promisc=live.promisc, bpf=live.bpf or None, fanout_group=fanout_group,
                rcvbuf=live.rcvbuf or None, batch_packets=max(1, live.batch_packets),
                batch_ms=live.batch_ms, snaplen=live.snaplen)


def worker_counters(pipe: Pipeline, cap: LiveCapture) -> dict[str, int]:
    out = pipe.all_counters()
    out.update({f"capture.{k}": v for k, v in cap.stats().items()})
    return out


def _die_with_parent() -> None:
    """End with the supervisor even if it is killed outright (reset by a uid change)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_worker(index: int, iface: str, cfg: Config, fanout_group: int | None,
               flow_seed: int, conn: Connection, target: Target | None = None) -> None:
    """Process entry point; returns when told to stop (SIGTERM or a "stop" message).

    With `target`, the worker gives up root and every capability as soon as its capture
    socket is open, before it builds the rule and model stages or starts any thread.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # the supervisor handles these
    _die_with_parent()
    try:
        cap = LiveCapture(iface, **capture_options(cfg, fanout_group))
    except (CaptureError, ValueError) as exc:
        conn.send(("fatal", index, str(exc)))
        return
    if target is not None:
        # what build_stages may import, now and on a reload, loaded while surely readable
        preload(extra=("onnxruntime",) if cfg.model.enabled else ())
        try:
            drop(target)
        except PrivilegeError as exc:
            cap.close()
            conn.send(("fatal", index, str(exc)))
            return
        _die_with_parent()
    try:
        _serve(index, iface, cfg, cap, flow_seed, conn, stop)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the supervisor is gone
    except CaptureError as exc:
        conn.send(("fatal", index, str(exc)))
    finally:
        cap.close()


def _serve(index: int, iface: str, cfg: Config, cap: LiveCapture, flow_seed: int,
           conn: Connection, stop: threading.Event) -> None:
    try:
        stages = build_stages(cfg)
    except StageError as exc:
        conn.send(("fatal", index, str(exc)))
        return
    # The supervisor writes one stats event for all workers.
    eve = cfg.outputs.eve
    wcfg = dataclasses.replace(cfg, outputs=dataclasses.replace(
        cfg.outputs, eve=dataclasses.replace(eve, types=tuple(t for t in eve.types
                                                              if t != "stats"))))
    sink = PipeSink(conn, index, iface)
    pipe = Pipeline(wcfg, sink, stages, flow_seed=flow_seed)
    conn.send(("ready", index))
    reload: _Reload | None = None
    last_tick = last_report = 0.0
    while not stop.is_set():
        batch = cap.next_batch()
        if len(batch):
            pipe.process(batch)
        now = time.monotonic()
        if not len(batch) or now - last_tick >= TICK_EVERY_S:
            pipe.tick(time.time_ns() // 1000)
            last_tick = now
        if now - last_report >= REPORT_EVERY_S:
            conn.send(("counters", index, worker_counters(pipe, cap)))
            last_report = now
        if reload is not None and not reload.reported and not reload.thread.is_alive():
            conn.send(("prepared", index, reload.error is None, reload.error or ""))
            reload.reported = True  # now wait for commit or abort
        while conn.poll():
            msg = conn.recv()
            if msg[0] == "stop":
                stop.set()
            elif msg[0] == "prepare":
                reload = _Reload(msg[1])
            elif msg[0] == "commit" and reload is not None and reload.stages is not None:
                pipe.stages = reload.stages  # between batches: no packet sees half a set
                reload = None
                conn.send(("committed", index))
            elif msg[0] == "abort":
                reload = None
    # SIGTERM: every live flow ends now, with reason "shutdown".
    pipe.tick(time.time_ns() // 1000)
    pipe.finish()
    conn.send(("done", index, worker_counters(pipe, cap)))
