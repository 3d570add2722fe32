"""`netsensor run`: the live capture daemon (supervisor of worker processes).

The supervisor forks the workers first (while it has no threads, so fork is safe), then
owns everything that must happen in one place: the outputs (one writer, so a SIGHUP
reopen never splits a line), the stats events that sum the workers, systemd's notify
protocol, signals and the control socket. Workers capture and run the pipeline
(sensor.worker).

Least privilege (sensor.privileges): each worker gives up root and every capability right
after opening its capture socket, the supervisor right after forking the workers.

Signals: SIGHUP reopens output files; SIGUSR2 (or `netsensor ctl reload`) reloads rules
and model, all workers or none; SIGTERM/SIGINT end every live flow as a `flow` event
(reason "shutdown") and exit 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from .config import Config, ConfigError, load_config
from .ctl import ControlError, ControlServer, add_ctl_parser, default_socket_path, reply
from .output.eve import stats_event
from .output.sinks import (
    EveFileSink,
    MultiSink,
    QueuedSink,
    RedisSink,
    SinkError,
    SyslogSink,
    UnixDgramSink,
    UnixStreamSink,
)
from .privileges import (
    PrivilegeError,
    Target,
    describe,
    drop,
    hand_over,
    preload,
    resolve_target,
)
from .sdnotify import Notifier
from .worker import run_worker

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
STARTUP_TIMEOUT_S = 300.0
RELOAD_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
STATUS_EVERY_S = 2.0
# Sections a reload takes over; the others need a restart.
RELOADABLE = ("rules", "vars", "windows", "model", "detect")

log = logging.getLogger("netsensor")


class UsageError(Exception):
    """A mistake in the command line or config: one line, exit 2."""


# -- setup ---------------------------------------------------------------------------------

def resolve_workers(value: int | str) -> int:
    if value == "auto":
        return max(1, min(64, len(os.sched_getaffinity(0))))
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    raise UsageError(f"live.workers must be auto or 1..64, not {value!r}")


def build_outputs(cfg: Config, logdir: str) -> MultiSink:
    """Every enabled output; SinkError names the one that is misconfigured."""
    o = cfg.outputs
    sinks: list[EveFileSink | QueuedSink] = []
    if o.eve.enabled:
        sinks.append(EveFileSink(os.path.join(logdir, o.eve.filename),
                                 o.eve.max_pending_bytes))
    for name, cls in (("unix_stream", UnixStreamSink), ("unix_dgram", UnixDgramSink)):
        sc = getattr(o, name)
        if sc.enabled:
            if not sc.path:
                raise SinkError(f"outputs.{name}.path must be set when enabled")
            sinks.append(cls(sc.path, queue=sc.queue))
    if o.syslog.enabled:
        s = o.syslog
        sinks.append(SyslogSink(s.address, s.format, s.facility, s.level, s.ident, s.queue))
    if o.redis.enabled:
        r = o.redis
        sinks.append(RedisSink(r.server, r.port, r.mode, r.key, r.password, r.db, r.queue))
    return MultiSink(sinks)


def aggregate(per_worker: dict[int, dict[str, int]]) -> dict[str, int]:
    """Sum the workers' counters; keep each worker's capture figures under capture.*."""
    out: dict[str, int] = {}
    max_pkt = 0
    for i, c in sorted(per_worker.items()):
        for k, v in c.items():
            if k == "decoder.max_pkt_size":
                max_pkt = max(max_pkt, v)
            elif k.startswith("detect.engines."):
                # every worker loads the same rule set: a property, not a sum
                out[k] = max(out.get(k, 0), v)
            elif k != "decoder.avg_pkt_size":
                out[k] = out.get(k, 0) + v
        w = f"capture.worker_{i}."
        out[w + "kernel_packets"] = c.get("capture.kernel_packets", 0)
        out[w + "kernel_drops"] = c.get("capture.kernel_drops", 0)
        out[w + "pkts"] = c.get("decoder.pkts", 0)
        out[w + "flows_active"] = c.get("flow.active", 0)
    if out.get("decoder.pkts"):
        out["decoder.avg_pkt_size"] = out.get("decoder.bytes", 0) // out["decoder.pkts"]
        out["decoder.max_pkt_size"] = max_pkt
    out["capture.workers"] = len(per_worker)
    return out


# -- the supervisor ------------------------------------------------------------------------

@dataclasses.dataclass
class _Worker:
    index: int
    proc: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    done: bool = False
    last_seen: float = 0.0
    counters: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _PendingReload:
    cfg: Config
    source: str
    deadline: float
    clients: list[socket.socket]
    answers: dict[int, tuple[bool, str]] = dataclasses.field(default_factory=dict)
    committed: set[int] = dataclasses.field(default_factory=set)
    phase: str = "prepare"


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None, iface: str, logdir: str,
                 workers: int, ctl_path: str, live_overrides: dict[str, Any] | None = None,
                 target: Target | None = None):
        self.cfg = cfg
        self.target = target
        self.live_overrides = live_overrides or {}
        self.config_path = config_path
        self.iface = iface
        self.logdir = logdir
        self.nworkers = workers
        self.ctl_path = ctl_path
        self.workers: dict[int, _Worker] = {}
        self.outputs: MultiSink | None = None
        self.ctl: ControlServer | None = None
        self.notifier = Notifier()
        self.flags: set[str] = set()
        self.reload: _PendingReload | None = None
        self.start_wall_us = time.time_ns() // 1000
        self.exit_code = EXIT_OK
        self.started = False
        self.startup_errors: dict[str, None] = {}
        self._last_pkts = 0
        self._last_status = time.monotonic()
        self._last_watchdog = 0.0

    # lifecycle
    def run(self) -> int:
        fresh = [d for d in (self.logdir, os.path.dirname(self.ctl_path))
                 if d and not os.path.exists(d)]
        try:
            self.outputs = build_outputs(self.cfg, self.logdir)
            self.ctl = ControlServer(self.ctl_path)
        except (SinkError, ControlError) as exc:
            raise UsageError(str(exc)) from None
        self._spawn()  # before any thread exists in this process
        if self.target is not None:
            self._drop_privileges(fresh)
        self.outputs.start()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for sig, flag in ((signal.SIGHUP, "hup"), (signal.SIGUSR2, "reload"),
                          (signal.SIGTERM, "stop"), (signal.SIGINT, "stop")):
            signal.signal(sig, lambda _s, _f, flag=flag: self.flags.add(flag))
        try:
            if self._startup(wake_r):
                self._loop(wake_r)
        finally:
            self._shutdown()
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        return self.exit_code

    def _drop_privileges(self, fresh_dirs: list[str]) -> None:
        """The workers are forked and every file is open: root and capabilities go.

        What must stay writable for a SIGHUP reopen goes to the target user first: the
        EVE files, and the log/runtime directories this run created (so a renamed
        eve.json can be created again). Before outputs.start(): no thread exists yet.
        """
        assert self.target is not None and self.outputs is not None
        files = [s.path for s in self.outputs.sinks if isinstance(s, EveFileSink)]
        try:
            hand_over(self.target, [*fresh_dirs, *files, self.ctl_path])
            preload()  # a reload's config check may need rule code
            drop(self.target)
        except PrivilegeError as exc:
            self.startup_errors.setdefault(str(exc))
            self.exit_code = EXIT_USAGE
            return
        log.info("running as %s", describe())
        if self.target.uid is not None and self.target.uid != 0 and not _writable(
                self.logdir, self.target.uid):
            log.warning("%s is not writable by %s: after a rotation that only renames "
                        "eve.json, SIGHUP cannot create a new one (logrotate's `create` "
                        "does)", self.logdir, self.target.name)

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("fork")
        group = (self.cfg.live.fanout_group or os.getpid()) & 0xFFFF
        fanout = group if self.nworkers > 1 else None
        seed = int.from_bytes(os.urandom(8), "little")
        for i in range(self.nworkers):
            parent_end, child_end = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=run_worker, name=f"netsensor-w{i}", daemon=False,
                               args=(i, self.iface, self.cfg, fanout, seed, child_end,
                                     self.target))
            proc.start()
            child_end.close()
            self.workers[i] = _Worker(i, proc, parent_end, last_seen=time.monotonic())

    def _startup(self, wake_r: socket.socket) -> bool:
        """Wait until every worker has its capture open and its stages built."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not all(w.ready for w in self.workers.values()):
            if time.monotonic() > deadline:
                log.error("workers not ready after %d s", STARTUP_TIMEOUT_S)
                self.exit_code = EXIT_FAIL
                return False
            self._poll(wake_r, 0.2)
            if "stop" in self.flags or self.exit_code != EXIT_OK:
                return False
            self._watchdog(force=True)
        log.info("capturing on %s with %d worker(s); EVE to %s", self.iface,
                 self.nworkers, ", ".join(_describe(s) for s in self.outputs.sinks) or "nothing")
        self.started = True
        self.notifier.notify("READY=1", f"MAINPID={os.getpid()}",
                             f"STATUS=capturing on {self.iface}, {self.nworkers} worker(s)")
        return True

    def _loop(self, wake_r: socket.socket) -> None:
        interval = self.cfg.outputs.stats.interval
        stats_on = interval > 0 and "stats" in self.cfg.outputs.eve.types
        next_stats = time.monotonic() + interval
        while self.exit_code == EXIT_OK:
            self._poll(wake_r, 0.25)
            if "stop" in self.flags:
                return
            if "hup" in self.flags:
                self.flags.discard("hup")
                self._reopen()
            if "reload" in self.flags:
                self.flags.discard("reload")
                self._start_reload("SIGUSR2", None)
            now = time.monotonic()
            if self.reload is not None and now > self.reload.deadline:
                self._finish_reload(False, "workers did not finish building the new set in "
                                           f"{RELOAD_TIMEOUT_S:.0f} s")
            if stats_on and now >= next_stats:
                self._write_stats()
                next_stats = now + interval
            self._watchdog()
            if now - self._last_status >= STATUS_EVERY_S:
                self._status(now)

    def _shutdown(self) -> None:
        self.notifier.notify("STOPPING=1", "STATUS=stopping: flushing flows")
        live = [w for w in self.workers.values() if w.proc.is_alive() and not w.done]
        for w in live:
            _send(w, ("stop",))
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(not w.done and w.proc.is_alive() for w in self.workers.values()):
            if time.monotonic() > deadline:
                log.error("workers did not stop within %d s; killing them", STOP_TIMEOUT_S)
                break
            self._poll(None, 0.2)
        for w in self.workers.values():
            self._drain(w)
            w.proc.join(2.0)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(2.0)
        if self.reload is not None:
            self._finish_reload(False, "the daemon is stopping")
        if self.outputs is not None:
            if self.started and "stats" in self.cfg.outputs.eve.types:
                self._write_stats()
            self.outputs.close()
        if self.ctl is not None:
            self.ctl.close()
        for msg in self.startup_errors:
            print(f"netsensor: {msg}", file=sys.stderr)
        c = aggregate({i: w.counters for i, w in self.workers.items()})
        if self.started:
            dropped = self.outputs.counters()["capture.netsensor_dropped_events"] \
                if self.outputs else 0
            log.info("stopped: %d packets, %d kernel drops, %d flows, %d events dropped by "
                     "outputs", c.get("decoder.pkts", 0), c.get("capture.kernel_drops", 0),
                     c.get("flow.total", 0), dropped)
        self.notifier.close()

    # events
    def _poll(self, wake_r: socket.socket | None, timeout: float) -> None:
        objs: list[Any] = [w.conn for w in self.workers.values() if not w.done]
        if wake_r is not None:
            objs.append(wake_r)
        if self.ctl is not None and wake_r is not None:
            objs.append(self.ctl)
        for obj in wait(objs, timeout):
            if obj is wake_r:
                try:
                    while wake_r.recv(512):
                        pass
                except OSError:
                    pass
            elif obj is self.ctl:
                self._control()
            else:
                self._drain(next(w for w in self.workers.values() if w.conn is obj))
        for w in self.workers.values():
            if not w.done and not w.proc.is_alive():
                self._drain(w)
                if not w.done:
                    self._lost(w, f"worker {w.index} exited unexpectedly "
                                  f"(status {w.proc.exitcode})")

    def _drain(self, w: _Worker) -> None:
        """Take everything the worker has sent so far (bounded by what is queued)."""
        for _ in range(10000):
            try:
                if w.done or not w.conn.poll():
                    return
                msg = w.conn.recv()
            except (EOFError, OSError):
                if not w.done:
                    w.proc.join(1.0)
                    self._lost(w, f"worker {w.index} exited unexpectedly "
                                  f"(status {w.proc.exitcode})")
                return
            self._message(w, msg)

    def _lost(self, w: _Worker, why: str) -> None:
        w.done = True
        if "stop" not in self.flags:
            log.error("%s; stopping", why)
            self.exit_code = EXIT_FAIL

    def _message(self, w: _Worker, msg: tuple) -> None:
        kind = msg[0]
        w.last_seen = time.monotonic()
        if kind == "lines":
            assert self.outputs is not None
            self.outputs.write(msg[2])
            self.outputs.flush()
        elif kind == "counters":
            w.counters = msg[2]
        elif kind == "ready":
            w.ready = True
        elif kind == "done":
            w.counters = msg[2]
            w.done = True
        elif kind == "fatal":
            w.done = True
            if self.started:
                log.error("%s", msg[2])
                self.exit_code = EXIT_FAIL
            else:  # every worker meets the same problem: say it once, as a usage error
                self.startup_errors.setdefault(msg[2])
                self.exit_code = EXIT_USAGE
        elif kind == "prepared" and self.reload is not None:
            self.reload.answers[w.index] = (msg[2], msg[3])
            self._advance_reload()
        elif kind == "committed" and self.reload is not None:
            self.reload.committed.add(w.index)
            self._advance_reload()

    def _control(self) -> None:
        assert self.ctl is not None
        got = self.ctl.accept()
        if got is None:
            return
        conn, cmd = got
        if cmd == "reload":
            self._start_reload("control socket", conn)
        elif cmd == "reopen":
            self._reopen()
            reply(conn, "OK outputs reopened")
        elif cmd == "status":
            c = aggregate({i: w.counters for i, w in self.workers.items()})
            if self.outputs is not None:
                c.update(self.outputs.counters())
            reply(conn, "OK " + json.dumps(c, sort_keys=True))
        elif cmd == "ping":
            reply(conn, "OK pong")
        else:
            reply(conn, f"ERROR unknown command {cmd!r}")

    def _reopen(self) -> None:
        assert self.outputs is not None
        self.outputs.reopen()
        log.info("outputs reopened")

    # reload: read config, all workers build; commit only if every one succeeded
    def _start_reload(self, source: str, client: socket.socket | None) -> None:
        if self.reload is not None:
            if client is not None:
                self.reload.clients.append(client)  # answered with the running reload
            return
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                             "STATUS=reloading rules and model")
        log.info("reload requested (%s)", source)
        clients = [client] if client is not None else []
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.reload = _PendingReload(self.cfg, source, 0.0, clients)
            self._finish_reload(False, str(exc))
            return
        keep = {f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(Config)
                if f.name in RELOADABLE}
        keep["live"] = dataclasses.replace(new.live, **self.live_overrides)
        if dataclasses.replace(new, **keep) != self.cfg:
            log.warning("reload applies rules and model only; other config changes need a "
                        "restart")
        self.reload = _PendingReload(new, source, time.monotonic() + RELOAD_TIMEOUT_S, clients)
        for w in self.workers.values():
            _send(w, ("prepare", new))

    def _advance_reload(self) -> None:
        r = self.reload
        assert r is not None
        live = [i for i, w in self.workers.items() if not w.done]
        if r.phase == "prepare" and all(i in r.answers for i in live):
            failed = [text for ok, text in r.answers.values() if not ok]
            if failed:
                for i in live:
                    _send(self.workers[i], ("abort",))
                self._finish_reload(False, failed[0])
            else:
                r.phase = "commit"
                for i in live:
                    _send(self.workers[i], ("commit",))
        elif r.phase == "commit" and all(i in r.committed for i in live):
            self.cfg = dataclasses.replace(self.cfg, **{
                f.name: getattr(r.cfg, f.name) for f in dataclasses.fields(Config)
                if f.name in RELOADABLE})
            self._finish_reload(True, "")

    def _finish_reload(self, ok: bool, why: str) -> None:
        r = self.reload
        assert r is not None
        self.reload = None
        if ok:
            text = f"reloaded: new rules and model in use ({len(self.cfg.rules.files)} rule " \
                   f"file(s))"
            log.info("%s", text)
        else:
            text = f"reload refused, keeping the previous rules and model: {why}"
            log.error("%s", text)
        for c in r.clients:
            reply(c, ("OK " if ok else "ERROR ") + text)
        self.notifier.notify("READY=1", f"STATUS={text[:200]}")

    # periodic
    def _counters(self) -> dict[str, int]:
        c = aggregate({i: w.counters for i, w in self.workers.items()})
        if self.outputs is not None:
            c.update(self.outputs.counters())
        return c

    def _write_stats(self) -> None:
        assert self.outputs is not None
        now_us = time.time_ns() // 1000
        uptime = (now_us - self.start_wall_us) // 1_000_000
        self.outputs.write([stats_event(now_us, uptime, self._counters())])
        self.outputs.flush()

    def _watchdog(self, force: bool = False) -> None:
        """WATCHDOG=1 only while every worker keeps reporting from its processing loop."""
        period = self.notifier.watchdog_s
        if period is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog < period / 3:
            return
        stale = [w.index for w in self.workers.values()
                 if not w.done and now - w.last_seen > max(period / 2, 2.0)]
        if stale and not force:
            return
        self.notifier.notify("WATCHDOG=1")
        self._last_watchdog = now

    def _status(self, now: float) -> None:
        c = self._counters()
        pkts = c.get("decoder.pkts", 0)
        rate = (pkts - self._last_pkts) / max(now - self._last_status, 1e-3)
        self._last_pkts, self._last_status = pkts, now
        if self.reload is None:
            self.notifier.notify(
                f"STATUS={rate:,.0f} packets/s, {c.get('flow.active', 0):,} flows, "
                f"{c.get('detect.alert', 0):,} alerts, "
                f"{c.get('capture.kernel_drops', 0):,} kernel drops")


def _writable(path: str, uid: int) -> bool:
    """Can `uid` create files in directory `path` (owner or world write bit)?"""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(st.st_mode & 0o002 or (st.st_uid == uid and st.st_mode & 0o200))


def _send(w: _Worker, msg: tuple) -> None:
    try:
        w.conn.send(msg)
    except OSError:
        pass  # noticed as a lost worker by the loop


def _describe(sink: object) -> str:
    return getattr(sink, "name", None) or getattr(sink, "path", "?")


# -- command line --------------------------------------------------------------------------

class _Formatter(logging.Formatter):
    """`<N>` level prefixes when stderr goes to the journal, plain text otherwise."""

    PRIO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__()
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if self.journal:
            return f"<{self.PRIO.get(record.levelno, 6)}>{msg}"
        return f"netsensor[{os.getpid()}]: {record.levelname.lower()}: {msg}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("netsensor")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    try:
        cfg = load_config(args.config)
        overrides: dict[str, Any] = {}
        if args.workers is not None:
            overrides["workers"] = _workers_arg(args.workers)
        if args.bpf is not None:
            overrides["bpf"] = args.bpf
        if args.user is not None:
            overrides["user"] = args.user
        cfg = dataclasses.replace(cfg, live=dataclasses.replace(cfg.live, **overrides))
        workers = resolve_workers(cfg.live.workers)
        logdir = args.logdir or os.environ.get("LOGS_DIRECTORY", "").split(":")[0] or \
            "/var/log/netsensor"
        ctl_path = args.ctl_socket or cfg.live.control_socket or default_socket_path()
        target = resolve_target(cfg.live.user)
        if target.uid is None and cfg.live.user and cfg.live.user != target.name:
            log.warning("live.user %r applies only when started as root; running as %s",
                        cfg.live.user, target.name)
        sup = Supervisor(cfg, args.config, args.interface, logdir, workers, ctl_path, overrides,
                         target)
        return sup.run()
    except (ConfigError, UsageError, PrivilegeError) as exc:
        print(f"netsensor: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _workers_arg(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def add_run_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="capture live from an interface (the daemon)")
    p.add_argument("-i", "--interface", required=True, help="interface to capture on")
    p.add_argument("-c", "--config", help="YAML config (built-in defaults otherwise)")
    p.add_argument("-l", "--logdir", help="directory for eve.json (default $LOGS_DIRECTORY "
                   "or /var/log/netsensor)")
    p.add_argument("-w", "--workers", help="worker processes: N or auto (overrides config)")
    p.add_argument("--bpf", help="capture filter expression (overrides live.bpf)")
    p.add_argument("-S", "--ctl-socket", help="control socket path (default "
                   "$RUNTIME_DIRECTORY/ctl.sock or /run/netsensor/ctl.sock)")
    p.add_argument("-u", "--user", help="started as root: the user to run as once the capture "
                   "sockets are open (overrides live.user; default netsensor, else nobody)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(fn=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m sensor.daemon run|ctl ...`, the same as `netsensor run|ctl ...`."""
    p = argparse.ArgumentParser(prog="netsensor", description="netsensor live daemon")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_run_parser(sub)
    add_ctl_parser(sub)
    args = p.parse_args(argv)
    return int(args.fn(args))


__all__ = ["add_ctl_parser", "add_run_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
