"""EVE formatting and writing in a second process, for replay (`replay.eve_process`).

Turning ended flows into EVE lines is the largest single cost of a replay after the batch
work itself, and it needs nothing but the ended flows' columns. This sink forks a worker
that owns the EveFileSink: the replay process sends it the columns of ended flows (and any
ready-made lines, in call order) and goes on with the next batch while the worker formats
and writes. The file is byte for byte what the in-process sink writes. The pipe between
the two is bounded, so a slow disk slows the replay instead of filling memory.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import Connection
from typing import Any

from ..flow import EndedFlows
from .eve import flow_lines
from .sinks import EveFileSink, SinkError


def _serve(sink: EveFileSink, conn: Connection) -> None:
    """The worker: apply messages in order until "close" (or the parent goes away)."""
    # the parent decides when to stop (it sends "close"; its death ends recv() with EOF),
    # so a Ctrl-C or SIGTERM to the process group cannot lose lines; it forwards reopen
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    error: str | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = ("close",)
        kind = msg[0]
        try:
            if error is not None and kind != "close":
                continue  # the parent raises at its next call; keep draining until close
            if kind == "flows":
                sink.write(flow_lines(msg[1], msg[2], msg[3]))
            elif kind == "lines":
                sink.write(msg[1])
            elif kind == "flush":
                sink.flush()
            elif kind == "reopen":
                sink.reopen()
            elif kind == "close":
                if error is None:
                    sink.close()
                break
        except SinkError as exc:
            error = str(exc)
            try:
                conn.send(("error", error))
            except OSError:
                break
    try:
        conn.send(("closed", sink.lines, sink.dropped, error))
    except OSError:
        pass
    conn.close()


class WorkerEveSink:
    """An EveFileSink run by a forked worker process; same methods, plus write_flows()."""

    def __init__(self, path: str, max_pending_bytes: int = 64 << 20):
        sink = EveFileSink(path, max_pending_bytes)  # open errors surface here, as usual
        self.path = path
        self.lines = 0
        self.dropped = 0
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(sink, child), daemon=True,
                                 name="netsensor-eve")
        self._proc.start()
        child.close()
        sink.close()  # the parent's copy of the file; nothing was written to it
        self._closed = False

    def _send(self, msg: tuple[Any, ...]) -> None:
        self._raise_pending()
        try:
            self._conn.send(msg)
        except OSError:
            self._raise_pending(block=True)
            raise SinkError(f"{self.path}: the EVE writer process ended") from None

    def _raise_pending(self, block: bool = False) -> None:
        """Raise the worker's first write error, if it reported one."""
        while block or self._conn.poll():
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "error":
                raise SinkError(msg[1])
            if msg[0] == "closed":
                _, self.lines, self.dropped, err = msg
                if err:
                    raise SinkError(err)
                return

    def write(self, lines: list[str]) -> None:
        if lines:
            self._send(("lines", lines))

    def write_flows(self, ended: EndedFlows, with_community_id: bool = True,
                    cid_seed: int = 0) -> int:
        """Have the worker write the flow lines of `ended`; returns how many there will be."""
        if len(ended):
            self._send(("flows", ended, with_community_id, cid_seed))
        return len(ended)

    def flush(self) -> None:
        self._send(("flush",))

    def reopen(self) -> None:
        self._send(("reopen",))

    def close(self) -> None:
        """Wait for the worker to write everything; a write failure raises SinkError."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._conn.send(("close",))
            except OSError:
                pass
            while True:
                try:
                    msg = self._conn.recv()
                except (EOFError, OSError):
                    raise SinkError(f"{self.path}: the EVE writer process ended") from None
                if msg[0] == "closed":
                    _, self.lines, self.dropped, err = msg
                    if err:
                        raise SinkError(err)
                    return
                if msg[0] == "error":
                    continue  # the final "closed" carries it too
        finally:
            self._conn.close()
            self._proc.join(timeout=30)
