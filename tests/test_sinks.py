"""Network outputs against real listeners: unix sockets, syslog framing, a real redis-server.

Every consumer here is local (unix sockets in a temp dir, redis on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from syslogd import Rsyslogd, rsyslogd_path

from sensor.output.sinks import (
    EveFileSink,
    MultiSink,
    RedisSink,
    RespClient,
    SinkError,
    SyslogSink,
    UnixDgramSink,
    UnixStreamSink,
    add_in_iface,
)

LINE = '{"timestamp":"2024-06-09T15:04:36.123456+0000","flow_id":1,"event_type":"flow"}'


def _lines(n: int, tag: str = "x") -> list[str]:
    return [json.dumps({"timestamp": "2024-06-09T15:04:36.123456+0000", "event_type": "flow",
                        "n": i, "tag": tag}, separators=(",", ":")) for i in range(n)]


def _until(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_add_in_iface_after_timestamp() -> None:
    out = add_in_iface([LINE, "not json"], "eth0")
    assert out[0].startswith('{"timestamp":"2024-06-09T15:04:36.123456+0000","in_iface":"eth0",')
    assert json.loads(out[0])["in_iface"] == "eth0"
    assert out[1] == "not json"


def test_unix_stream_delivers_and_reconnects(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    sink = UnixStreamSink(path, queue=1000)
    sink.start()
    try:
        sink.write(_lines(5, "early"))  # no listener yet: queued, retried with backoff
        time.sleep(0.3)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(5)
        conn, _ = srv.accept()
        conn.settimeout(5)
        sink.write(_lines(5, "late"))
        data = b""
        while data.count(b"\n") < 10:
            chunk = conn.recv(65536)
            assert chunk
            data += chunk
        got = [json.loads(x) for x in data.decode().splitlines()]
        assert [g["tag"] for g in got] == ["early"] * 5 + ["late"] * 5
        conn.close()
        srv.close()
    finally:
        sink.close(timeout=0.5)
    assert sink.counters()["sent"] == 10


def test_unix_dgram_one_event_per_datagram(tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(5)
    sink = UnixDgramSink(path)
    sink.start()
    try:
        sink.write(_lines(3))
        got = [json.loads(srv.recv(65536)) for _ in range(3)]
        assert [g["n"] for g in got] == [0, 1, 2]
    finally:
        sink.close(timeout=0.5)
        srv.close()


def test_slow_consumer_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    path = str(tmp_path / "slow.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)  # accepts (kernel backlog) but never reads
    sink = UnixStreamSink(path, queue=1000, timeout=1.0)
    sink.start()
    start = time.monotonic()
    try:
        for _ in range(200):
            sink.write(_lines(500))
        elapsed = time.monotonic() - start
        assert elapsed < 2.0, f"write() blocked for {elapsed:.1f} s"
        assert sink.counters()["dropped"] > 0
    finally:
        sink.close(timeout=0.2)
        srv.close()
    multi = MultiSink([sink])
    assert multi.counters()["capture.netsensor_dropped_events"] >= sink.dropped > 0


def test_absent_consumer_counts_drops_at_close(tmp_path: Path) -> None:
    sink = UnixStreamSink(str(tmp_path / "nobody.sock"), queue=10)
    sink.start()
    sink.write(_lines(25))
    sink.close(timeout=0.2)
    assert sink.counters()["dropped"] == 25
    assert sink.counters()["sent"] == 0


@pytest.mark.parametrize("fmt", ["rfc5424", "rfc3164"])
def test_syslog_framing(tmp_path: Path, fmt: str) -> None:
    path = str(tmp_path / "log.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(5)
    sink = SyslogSink(path, fmt, facility="local5", level="notice", ident="netsensor")
    sink.start()
    try:
        sink.write([LINE])
        msg = srv.recv(65536).decode()
    finally:
        sink.close(timeout=0.5)
        srv.close()
    pri = 21 * 8 + 5
    if fmt == "rfc5424":
        assert msg.startswith(f"<{pri}>1 ")
        parts = msg.split(" ", 7)
        assert parts[1].endswith("Z") and "T" in parts[1]
        assert parts[3] == "netsensor" and parts[4] == str(os.getpid())
        assert parts[5] == "-" and parts[6] == "-"
        assert parts[7] == LINE
    else:
        assert msg.startswith(f"<{pri}>")
        head, _, body = msg.partition(": ")
        # syslog(3)'s local form: `<PRI>Mmm dd hh:mm:ss TAG[PID]`, no host name
        assert re.fullmatch(rf"<{pri}>[A-Z][a-z]{{2}} [ 123]\d \d\d:\d\d:\d\d "
                            rf"netsensor\[{os.getpid()}\]", head), head
        assert body == LINE


def test_syslog_udp_localhost() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(5)
    sink = SyslogSink(f"udp://127.0.0.1:{srv.getsockname()[1]}")
    sink.start()
    try:
        sink.write([LINE])
        assert srv.recv(65536).decode().endswith(LINE)
    finally:
        sink.close(timeout=0.5)
        srv.close()


@pytest.fixture(scope="module")
def rsyslogd():
    if rsyslogd_path() is None:
        pytest.skip("rsyslogd not installed (apt-get install rsyslog)")
    workdir = Path(tempfile.mkdtemp(prefix="nsd-rsyslog-"))
    server = Rsyslogd(workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("fmt, transport", [("rfc3164", "unix"), ("rfc3164", "udp"),
                                            ("rfc5424", "udp")])
def test_real_rsyslogd_parses_every_event(rsyslogd: Rsyslogd, fmt: str, transport: str) -> None:
    """A real rsyslogd must see program, facility, severity, pid and the EVE line intact."""
    ident = f"ns{fmt[-4:]}{transport}"
    address = str(rsyslogd.sock) if transport == "unix" else f"udp://127.0.0.1:{rsyslogd.port}"
    sink = SyslogSink(address, fmt, facility="local3", level="warning", ident=ident)
    sink.start()
    lines = _lines(50, ident)
    try:
        sink.write(lines)
        got = rsyslogd.wait(ident, 50)
    finally:
        sink.close(timeout=1)
    assert [g["msg"] for g in got] == lines  # all of them, in order, unchanged
    for g in got:
        assert (g["facility"], g["severity"], g["procid"]) == ("local3", "warning",
                                                               str(os.getpid()))
    if transport == "udp":
        assert {g["hostname"] for g in got} == {socket.gethostname()}


@pytest.mark.parametrize("kwargs, msg", [
    ({"fmt": "json"}, "rfc5424 or rfc3164"),
    ({"facility": "local9"}, "facility"),
    ({"level": "loud"}, "level"),
    ({"address": "localhost:514"}, "udp://HOST:PORT"),
])
def test_syslog_config_errors(kwargs: dict, msg: str) -> None:
    with pytest.raises(SinkError, match=msg):
        SyslogSink(**kwargs)


def test_redis_bad_mode() -> None:
    with pytest.raises(SinkError, match="redis mode"):
        RedisSink(mode="stream")


def test_multisink_file_error_does_not_stop_others(tmp_path: Path) -> None:
    f = EveFileSink(str(tmp_path / "eve.json"))
    path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(5)
    d = UnixDgramSink(path)
    multi = MultiSink([f, d])
    multi.start()
    try:
        f._f.close()  # the file breaks (as with a full disk)
        multi.write([LINE])
        multi.flush()
        assert srv.recv(65536).decode() == LINE
        # the file sink holds the line it could not write (bounded) instead of losing it
        assert multi.counters()["capture.netsensor_dropped_events"] == 0
        assert multi.counters()["capture.output.file.held"] == 1
        multi.reopen()  # SIGHUP brings the file back
        multi.write([LINE])
        multi.flush()
        assert (tmp_path / "eve.json").read_text() == LINE + "\n" + LINE + "\n"
    finally:
        multi.close()
        srv.close()


# -- redis ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_port():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            RespClient("127.0.0.1", port, timeout=1).close()
            return True
        except OSError:
            return False

    if not _until(up, 10):
        proc.kill()
        pytest.skip("redis-server did not start")
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("mode, pop", [("list", "RPOP"), ("rpush", "LPOP")])
def test_redis_list_modes_keep_order(redis_port: int, mode: str, pop: str) -> None:
    key = f"eve-{mode}"
    sink = RedisSink("127.0.0.1", redis_port, mode=mode, key=key)
    sink.start()
    try:
        sink.write(_lines(700))  # more than one batch
        client = RespClient("127.0.0.1", redis_port)
        assert _until(lambda: client.command("LLEN", key) == 700)
        got = [json.loads(client.command(pop, key))["n"] for _ in range(700)]
        assert got == list(range(700))  # oldest first, as consumers pop them
        client.close()
    finally:
        sink.close(timeout=1)


def test_redis_channel_mode(redis_port: int) -> None:
    sub = RespClient("127.0.0.1", redis_port)
    sub.sock.sendall(RespClient.encode("SUBSCRIBE", "eve-chan"))
    assert sub.read_reply()[0] == b"subscribe"
    sink = RedisSink("127.0.0.1", redis_port, mode="channel", key="eve-chan")
    sink.start()
    try:
        sink.write(_lines(3))
        got = [sub.read_reply() for _ in range(3)]
        assert [json.loads(m[2])["n"] for m in got] == [0, 1, 2]
    finally:
        sink.close(timeout=1)
        sub.close()


def test_redis_error_reply_is_counted(redis_port: int) -> None:
    client = RespClient("127.0.0.1", redis_port)
    client.command("SET", "eve-wrongtype", "x")
    sink = RedisSink("127.0.0.1", redis_port, mode="list", key="eve-wrongtype")
    sink.start()
    try:
        sink.write(_lines(4))
        assert _until(lambda: sink.counters()["dropped"] == 4)
    finally:
        sink.close(timeout=1)
        client.close()
