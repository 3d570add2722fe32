"""Where EVE lines go. Replay writes a file; the daemon adds sockets, syslog and Redis.

The file is opened for append and can be reopened (SIGHUP from logrotate's `create` +
`postrotate`), because `copytruncate` loses or corrupts lines. Network outputs each get a
bounded queue and a writer thread, so a slow or absent consumer drops (and counts) events
instead of stalling capture.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import io
import itertools
import json
import logging
import os
import socket
import threading
import time
from typing import Any


class SinkError(Exception):
    """An output that cannot be written, phrased for the operator."""


class EveFileSink:
    """Append-mode EVE file that only ever holds whole lines.

    Lines collect in memory and go out in one os.write() per flush (after every batch).
    A write that fails part way (disk full, I/O error) is cut back to the last whole line
    with ftruncate, and its lines stay held and are written by the next flush, so writing
    resumes by itself when space returns. What is held is bounded by `max_pending_bytes`;
    lines beyond it are dropped and counted in `dropped`. Every failure raises SinkError
    for the caller to report.
    """

    FLUSH_AT = 1 << 20  # bytes collected before write() flushes on its own
    CHUNK = 64 << 10  # bytes per os.write(): a full disk takes what fits, in whole lines

    def __init__(self, path: str, max_pending_bytes: int = 64 << 20):
        self.path = path
        self.max_pending_bytes = max_pending_bytes
        self.lines = 0  # lines written to the file
        self.dropped = 0  # lines given up because the file could not take them
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._f: io.FileIO | None = None
        self.reopen()

    @property
    def pending(self) -> int:
        """Lines held in memory, not yet in the file."""
        return len(self._pending)

    def reopen(self) -> None:
        """Open the path again (SIGHUP after a rotation); held lines go to the new file."""
        if self._f is not None:
            with contextlib.suppress(SinkError):
                self.flush()
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None
        try:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing: {exc.strerror}") from None

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        self._pending.extend(lines)
        self._pending_bytes += sum(map(len, lines)) + len(lines)
        if self._pending_bytes >= self.FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write the held lines in chunks of whole lines; a chunk that fails is undone."""
        done = 0
        try:
            if self._f is None:
                raise ValueError("file is closed")
            fd = self._f.fileno()
            while done < len(self._pending):
                chunk, size = [], 0
                for line in itertools.islice(self._pending, done, None):
                    chunk.append(line)
                    size += len(line) + 1
                    if size >= self.CHUNK:
                        break
                self._write_whole(fd, ("\n".join(chunk) + "\n").encode("utf-8",
                                                                       "surrogateescape"))
                done += len(chunk)
                self._pending_bytes -= size
        except (OSError, ValueError) as exc:
            self._settle(done)
            self._bound()
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SinkError(f"{self.path}: write failed: {why}; events are held (up to "
                            f"{self.max_pending_bytes} bytes) and written when it works "
                            f"again") from None
        self._settle(done)

    def _settle(self, done: int) -> None:
        self.lines += done
        del self._pending[:done]
        if not self._pending:
            self._pending_bytes = 0

    @staticmethod
    def _write_whole(fd: int, data: bytes) -> None:
        """All of `data`, or nothing: a partial write is cut back (ftruncate)."""
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # no half line stays behind
            raise

    def _bound(self) -> None:
        """Keep the oldest held lines within max_pending_bytes; count the rest as dropped."""
        if self._pending_bytes <= self.max_pending_bytes:
            return
        kept, size = 0, 0
        for line in self._pending:
            if size + len(line) + 1 > self.max_pending_bytes:
                break
            size += len(line) + 1
            kept += 1
        self.dropped += len(self._pending) - kept
        del self._pending[kept:]
        self._pending_bytes = size

    def close(self) -> None:
        """Write what is held (a failure raises SinkError; the held lines count as dropped)."""
        if self._f is None:
            return
        try:
            self.flush()
        except SinkError:
            self.dropped += len(self._pending)
            self._pending = []
            self._pending_bytes = 0
            raise
        finally:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None


class MemorySink:
    """Keeps EVE lines in memory (the Pipeline's sink interface): in-process replays such as
    `netsensor eval`, and the tests."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, lines: list[str]) -> None:
        self.lines.extend(lines)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- the daemon's outputs -------------------------------------------------------------------

log = logging.getLogger("netsensor.output")


def add_in_iface(lines: list[str], iface: str) -> list[str]:
    """Insert `"in_iface"` after the timestamp of each event, as live Suricata writes it.

    Editing the serialised line keeps the event builders shared with replay untouched.
    """
    field = '"in_iface":' + json.dumps(iface) + ","
    out = []
    for line in lines:
        if line.startswith('{"timestamp":"'):
            cut = line.find('",', 14) + 2
            if cut > 1:
                line = line[:cut] + field + line[cut:]
        out.append(line)
    return out


class LineQueue:
    """A bounded FIFO of EVE lines between the writer of events and one output thread."""

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._items: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()

    def put(self, lines: list[str]) -> int:
        """Queue what fits; return how many lines did not fit (dropped)."""
        with self._cond:
            room = self.capacity - len(self._items)
            take = lines if len(lines) <= room else lines[:max(room, 0)]
            self._items.extend(take)
            if take:
                self._cond.notify()
            return len(lines) - len(take)

    def get(self, most: int, timeout: float) -> list[str]:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            n = min(most, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._items)


class QueuedSink:
    """A network output: bounded queue plus a writer thread that reconnects with backoff.

    write() never blocks: a slow or absent consumer only fills this sink's queue, and
    lines that do not fit are dropped and counted, so capture keeps going.
    A batch that fails to send is retried once connected again (a consumer restart may
    see a line twice, never a lost one while the queue has room).
    """

    kind = "socket"
    batch = 512
    max_backoff = 30.0

    def __init__(self, name: str, queue: int):
        self.name = name
        self.q = LineQueue(queue)
        self.dropped = 0  # lines that did not fit the queue (written by the caller's thread)
        self.tdropped = 0  # lines the writer thread gave up on
        self.sent = 0
        self.failures = 0
        self._stop = threading.Event()
        self._deadline = 0.0
        self._connected = False
        self._thread = threading.Thread(target=self._run, name=f"out-{name}", daemon=True)

    # subclasses: open, deliver lines, close the connection
    def _connect(self) -> None:
        raise NotImplementedError

    def _send(self, lines: list[str]) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    # EveFileSink's API
    def start(self) -> None:
        self._thread.start()

    def write(self, lines: list[str]) -> None:
        if lines:
            self.dropped += self.q.put(lines)

    def flush(self) -> None:
        """Nothing to do: the writer thread sends as soon as lines are queued."""

    def reopen(self) -> None:
        """Files only; a socket output keeps its connection across SIGHUP."""

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued for up to `timeout` seconds; count the rest as dropped."""
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + 1.0)
        self.dropped += len(self.q)

    def counters(self) -> dict[str, int]:
        return {"dropped": self.dropped + self.tdropped, "sent": self.sent,
                "queued": len(self.q)}

    # writer thread
    def _closing(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._deadline

    def _run(self) -> None:
        backoff = 0.1
        pending: list[str] = []
        down_logged = False
        while not self._closing():
            if not pending:
                pending = self.q.get(self.batch, 0.2)
                if not pending:
                    if self._stop.is_set():
                        break
                    continue
            if not self._connected:
                try:
                    self._connect()
                    self._connected = True
                    if down_logged:
                        log.warning("output %s: connected again", self.name)
                    down_logged = False
                    backoff = 0.1
                except OSError as exc:
                    if not down_logged:
                        log.warning("output %s: cannot connect: %s; retrying with backoff",
                                    self.name, exc.strerror or exc)
                        down_logged = True
                    if self._stop.is_set():
                        break  # closing: no consumer to hand the rest to
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
            try:
                self._send(pending)
                self.sent += len(pending)
                pending = []
            except OSError as exc:
                self.failures += 1
                log.warning("output %s: send failed: %s; reconnecting", self.name,
                            exc.strerror or exc)
                down_logged = True
                self._drop_connection()
        self.tdropped += len(pending)
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._connected:
            self._connected = False
            with contextlib.suppress(OSError):
                self._disconnect()


class SocketSink(QueuedSink):
    """A QueuedSink over one connected socket (unix stream, unix datagram, syslog): one way
    to open it, to send a datagram and to close it."""

    def __init__(self, name: str, queue: int):
        super().__init__(name, queue)
        self._sock: socket.socket | None = None

    def _open(self, family: int, kind: int, address: Any, timeout: float) -> None:
        s = socket.socket(family, kind)
        s.settimeout(timeout)
        try:
            s.connect(address)
        except OSError:
            s.close()
            raise
        self._sock = s

    def _send_datagram(self, data: bytes) -> None:
        """One message; one larger than the socket allows is skipped alone (counted)."""
        assert self._sock is not None
        try:
            self._sock.send(data)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            self.tdropped += 1

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class UnixStreamSink(SocketSink):
    """Newline-delimited EVE to a listening unix stream socket (Suricata's unix_stream)."""

    kind = "unix_stream"

    def __init__(self, path: str, queue: int = 65536, timeout: float = 10.0):
        super().__init__(f"unix_stream:{path}", queue)
        self.path = path
        self.timeout = timeout

    def _connect(self) -> None:
        self._open(socket.AF_UNIX, socket.SOCK_STREAM, self.path, self.timeout)

    def _send(self, lines: list[str]) -> None:
        assert self._sock is not None
        self._sock.sendall(("\n".join(lines) + "\n").encode())


class UnixDgramSink(SocketSink):
    """One EVE line per datagram to a unix datagram socket (Suricata's unix_dgram)."""

    kind = "unix_dgram"

    def __init__(self, path: str, queue: int = 65536, timeout: float = 10.0):
        super().__init__(f"unix_dgram:{path}", queue)
        self.path = path
        self.timeout = timeout

    def _connect(self) -> None:
        self._open(socket.AF_UNIX, socket.SOCK_DGRAM, self.path, self.timeout)

    def _send(self, lines: list[str]) -> None:
        assert self._sock is not None
        for line in lines:
            self._send_datagram(line.encode())


FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "warn": 4,
          "notice": 5, "info": 6, "debug": 7}


class SyslogSink(SocketSink):
    """EVE lines as syslog messages over a unix datagram socket or UDP.

    RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID - - MSG`; RFC 3164 (BSD):
    `<PRI>Mmm dd hh:mm:ss HOST APP[PID]: MSG`, without HOST on a local socket, as
    syslog(3) sends it: rsyslog's stock /dev/log input and journald take the word after
    the timestamp as the program name. One event per message. The default is RFC 3164,
    which every receiver parses; RFC 5424 suits network receivers (rsyslog's imudp,
    syslog-ng's syslog()), not a stock /dev/log.
    """

    kind = "syslog"

    def __init__(self, address: str = "/dev/log", fmt: str = "rfc3164",
                 facility: str = "local5", level: str = "info", ident: str = "netsensor",
                 queue: int = 65536):
        super().__init__(f"syslog:{address}", queue)
        if fmt not in ("rfc5424", "rfc3164"):
            raise SinkError(f"syslog format must be rfc5424 or rfc3164, not {fmt!r}")
        if facility not in FACILITIES:
            raise SinkError(f"unknown syslog facility {facility!r}")
        if level not in LEVELS:
            raise SinkError(f"unknown syslog level {level!r}")
        if not ident or any(c.isspace() for c in ident):
            raise SinkError(f"syslog ident must be one word, not {ident!r}")
        self.fmt = fmt
        self.pri = FACILITIES[facility] * 8 + LEVELS[level]
        self.ident = ident
        self.host = socket.gethostname() or "-"
        self.pid = os.getpid()
        if address.startswith("udp://"):
            host, _, port = address[6:].rpartition(":")
            if not host or not port.isdigit():
                raise SinkError(f"syslog address {address!r}: expected udp://HOST:PORT")
            self.family, self.addr = socket.AF_INET, (host.strip("[]"), int(port))
            if ":" in host:
                self.family = socket.AF_INET6
        elif address.startswith("/"):
            self.family, self.addr = socket.AF_UNIX, address
        else:
            raise SinkError(f"syslog address {address!r}: expected a socket path or "
                            f"udp://HOST:PORT")

    def frame(self, line: str, now: float | None = None) -> bytes:
        now = time.time() if now is None else now
        if self.fmt == "rfc5424":
            ts = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(
                timespec="microseconds").replace("+00:00", "Z")
            head = f"<{self.pri}>1 {ts} {self.host} {self.ident} {self.pid} - - "
        else:
            ts = time.strftime("%b %d %H:%M:%S", time.localtime(now))
            if ts[4] == "0":
                ts = ts[:4] + " " + ts[5:]
            host = "" if self.family == socket.AF_UNIX else f"{self.host} "
            head = f"<{self.pri}>{ts} {host}{self.ident}[{self.pid}]: "
        return (head + line).encode()

    def _connect(self) -> None:
        self._open(self.family, socket.SOCK_DGRAM, self.addr, 10.0)

    def _send(self, lines: list[str]) -> None:
        assert self._sock is not None
        now = time.time()
        for line in lines:
            try:
                self._send_datagram(self.frame(line, now))
            except ConnectionRefusedError:
                if self.family == socket.AF_UNIX:
                    raise
                self.tdropped += 1  # UDP: nobody listening right now; nothing to retry


class RespError(Exception):
    """An error reply from Redis (`-ERR ...`)."""


class RespClient:
    """Just enough of the Redis protocol (RESP2) to push events: commands and replies."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    @staticmethod
    def encode(*args: str | bytes | int) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(parts)

    def pipeline(self, commands: list[tuple[str | bytes | int, ...]]) -> list[object]:
        """Send all commands at once, then read one reply per command."""
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.read_reply() for _ in commands]

    def command(self, *args: str | bytes | int) -> object:
        reply = self.pipeline([args])[0]
        if isinstance(reply, RespError):
            raise reply
        return reply

    def read_reply(self) -> object:
        line = self.rfile.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionResetError("redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return RespError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            n = int(body)
            if n < 0:
                return None
            data = self.rfile.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionResetError("redis closed the connection")
            return data[:-2]
        if kind == b"*":
            n = int(body)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise OSError(f"unexpected redis reply {line[:40]!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.rfile.close()
            self.sock.close()


REDIS_MODES = {"list": "LPUSH", "lpush": "LPUSH", "rpush": "RPUSH", "channel": "PUBLISH",
               "publish": "PUBLISH"}


class RedisSink(QueuedSink):
    """EVE to Redis like Suricata's redis output: a list (LPUSH/RPUSH) or a channel."""

    kind = "redis"

    def __init__(self, server: str = "127.0.0.1", port: int = 6379, mode: str = "list",
                 key: str = "netsensor", password: str = "", db: int = 0,
                 queue: int = 65536):
        super().__init__(f"redis:{server}:{port}/{key}", queue)
        if mode not in REDIS_MODES:
            raise SinkError(f"redis mode must be one of {', '.join(REDIS_MODES)}, not {mode!r}")
        if not key:
            raise SinkError("redis key must not be empty")
        self.server, self.port, self.key = server, port, key
        self.verb = REDIS_MODES[mode]
        self.password, self.db = password, db
        self._client: RespClient | None = None

    def _connect(self) -> None:
        client = RespClient(self.server, self.port)
        try:
            if self.password:
                client.command("AUTH", self.password)
            if self.db:
                client.command("SELECT", self.db)
        except RespError as exc:
            client.close()
            raise OSError(f"redis refused: {exc}") from None
        except OSError:
            client.close()
            raise
        self._client = client

    def _send(self, lines: list[str]) -> None:
        assert self._client is not None
        if self.verb == "PUBLISH":
            cmds = [("PUBLISH", self.key, line) for line in lines]
        else:
            cmds = [(self.verb, self.key, *lines)]
        for reply in self._client.pipeline(cmds):
            if isinstance(reply, RespError):
                # e.g. WRONGTYPE: retrying cannot help; count these lines as dropped
                log.warning("output %s: redis error: %s", self.name, reply)
                self.tdropped += len(lines) if len(cmds) == 1 else 1
                self.sent -= len(lines) if len(cmds) == 1 else 1

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class MultiSink:
    """Every configured output at once, behind EveFileSink's API.

    A file that cannot be written (disk full) is logged once; the file sink holds its lines
    (bounded) and writes them when the disk has room again, which is logged too. The
    daemon keeps capturing and the other outputs keep receiving.
    """

    def __init__(self, sinks: list[EveFileSink | QueuedSink]):
        self.sinks = sinks
        self.file_dropped = 0
        self._file_error: str | None = None

    def start(self) -> None:
        for s in self.sinks:
            if isinstance(s, QueuedSink):
                s.start()

    def write(self, lines: list[str]) -> None:
        for s in self.sinks:
            if isinstance(s, EveFileSink):
                self._guard(s, s.write, lines)
            else:
                s.write(lines)

    def flush(self) -> None:
        for s in self.sinks:
            if isinstance(s, EveFileSink):
                self._guard(s, s.flush, None)

    def reopen(self) -> None:
        for s in self.sinks:
            if isinstance(s, EveFileSink):
                try:
                    s.reopen()
                except SinkError as exc:
                    log.error("%s", exc)
            else:
                s.reopen()

    def close(self) -> None:
        for s in self.sinks:
            if isinstance(s, EveFileSink):
                self._guard(s, s.close, None)
            else:
                s.close()

    def _guard(self, sink: EveFileSink, fn: Any, lines: list[str] | None) -> None:
        try:
            fn(lines) if lines is not None else fn()
        except (SinkError, ValueError, AttributeError) as exc:
            # ValueError/AttributeError: the file was closed by a failed reopen
            if lines and not isinstance(exc, SinkError):
                self.file_dropped += len(lines)
            msg = str(exc) if isinstance(exc, SinkError) else f"{sink.path}: {exc}"
            if msg != self._file_error:
                log.error("%s", msg)
                self._file_error = msg
        else:
            if self._file_error is not None and lines is None and not sink.pending:
                log.warning("%s: writing again; %d event(s) were dropped while it failed",
                            sink.path, sink.dropped)
                self._file_error = None

    def counters(self) -> dict[str, int]:
        """Output counters for stats events, under capture.* (the schema leaves it open)."""
        out: dict[str, int] = {}
        total = self.file_dropped
        for s in self.sinks:
            if isinstance(s, EveFileSink):
                total += s.dropped
                out["capture.output.file.dropped"] = \
                    out.get("capture.output.file.dropped", 0) + s.dropped
                out["capture.output.file.held"] = \
                    out.get("capture.output.file.held", 0) + s.pending
            if isinstance(s, QueuedSink):
                c = s.counters()
                total += c["dropped"]
                out[f"capture.output.{s.kind}.dropped"] = \
                    out.get(f"capture.output.{s.kind}.dropped", 0) + c["dropped"]
                out[f"capture.output.{s.kind}.sent"] = \
                    out.get(f"capture.output.{s.kind}.sent", 0) + c["sent"]
        out["capture.netsensor_dropped_events"] = total
        return out
