"""The live daemon end to end: real namespaces, a veth pair, real traffic, real signals.

Each test creates namespaces A and B joined by a veth pair, runs `python -m sensor.daemon
run` on A's end (as systemd would: NOTIFY_SOCKET bound by the test, WATCHDOG_USEC set),
makes traffic between the namespaces with real programs (python's http.server and curl,
UDP senders and an echo server) and reads what the daemon wrote. No packet leaves the
namespaces. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

IP_A, IP_B = "10.79.0.1", "10.79.0.2"
REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO.parent / "shared" / "eve-schema" / "schema-7.0.10.json"

if os.geteuid() != 0:
    pytest.skip("daemon tests need root (AF_PACKET, ip netns)", allow_module_level=True)
if not shutil.which("ip"):
    pytest.skip("iproute2 `ip` not installed", allow_module_level=True)

_serial = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=20)


def _until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


class Lab:
    """Namespaces a and b; veth va (a, IP_A) <-> vb (b, IP_B); IPv6 off for quiet links."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}x{next(_serial)}"
        self.ns_a, self.ns_b = f"nsdA{tag}", f"nsdB{tag}"
        self.va, self.vb = f"da{tag}"[:15], f"db{tag}"[:15]
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def setup(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            res = _ip("netns", "add", ns, check=False)
            if res.returncode != 0:
                pytest.skip(f"cannot create network namespace: {res.stderr.strip()}")
            self.made.append(ns)
            _ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", self.va, "netns", self.ns_a, "type", "veth",
            "peer", "name", self.vb, "netns", self.ns_b)
        for ns, dev, addr in ((self.ns_a, self.va, IP_A), (self.ns_b, self.vb, IP_B)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for ns in self.made:
            _ip("netns", "del", ns, check=False)

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self.procs.append(p)
        return p

    def run(self, ns: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=timeout)

    def python(self, ns: str, code: str, timeout: float = 30) -> subprocess.CompletedProcess:
        res = self.run(ns, [sys.executable, "-c", textwrap.dedent(code)], timeout)
        assert res.returncode == 0, res.stderr
        return res


@pytest.fixture
def lab():
    lab = Lab()
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()


class Notify:
    """The NOTIFY_SOCKET systemd would bind: collects every datagram the daemon sends."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def fields(self) -> list[str]:
        return [f for m in list(self.messages) for f in m.split("\n")]

    def wait(self, field: str, timeout: float = 20.0, after: int = 0) -> int:
        """Index (in fields()) of the first `field` at or after `after`."""
        def found() -> bool:
            return field in self.fields()[after:]
        assert _until(found, timeout), f"no {field} from the daemon; got {self.fields()}"
        return self.fields().index(field, after)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Daemon:
    def __init__(self, lab: Lab, tmp: Path, config: dict, workers: int = 1):
        self.lab, self.tmp = lab, tmp
        self.logdir = tmp / "log"
        self.ctl = str(tmp / "ctl.sock")
        self.cfg_path = tmp / "netsensor.yaml"
        self.write_config(config)
        self.notify = Notify(tmp / "notify.sock")
        self.stderr_path = tmp / "daemon.stderr"
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, WATCHDOG_USEC="3000000",
                   PYTHONPATH=str(REPO))
        env.pop("WATCHDOG_PID", None)
        self.proc = lab.popen(lab.ns_a, [
            sys.executable, "-m", "sensor.daemon", "run", "-i", lab.va, "-l", str(self.logdir),
            "-S", self.ctl, "-c", str(self.cfg_path), "-w", str(workers)],
            env=env, cwd=str(REPO), stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "w"))  # noqa: SIM115

    def write_config(self, config: dict) -> None:
        self.cfg_path.write_text(yaml.safe_dump(config))

    def ready(self) -> None:
        self.notify.wait("READY=1", 20)
        assert self.proc.poll() is None, self.stderr()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def ctl_cmd(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sensor.daemon", "ctl", command, "-s",
                               self.ctl, "--timeout", "20"], capture_output=True, text=True,
                              timeout=30, cwd=str(REPO))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.notify.close()
        return rc

    def events(self, pattern: str = "eve.json*") -> list[dict]:
        out = []
        for path in sorted(self.logdir.glob(pattern)):
            for line in path.read_text().splitlines():
                out.append(json.loads(line))  # every line is one whole JSON object
        return out


def base_config(**outputs) -> dict:
    return {"outputs": {"stats": {"interval": 1}, **outputs},
            "live": {"batch_ms": 50}}


def _flows(events: list[dict], proto: str, port: int) -> list[dict]:
    return [e for e in events if e["event_type"] == "flow" and e["proto"] == proto
            and e.get("dest_port") == port]


def _final_stats(events: list[dict]) -> dict:
    return [e for e in events if e["event_type"] == "stats"][-1]["stats"]


# -- the tests --------------------------------------------------------------------------

def test_ready_http_flows_watchdog_and_shutdown(lab: Lab, tmp_path: Path) -> None:
    if not shutil.which("curl"):
        pytest.skip("curl not installed")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello\n" * 200)
    server = lab.popen(lab.ns_b, [sys.executable, "-m", "http.server", "8000", "--bind", IP_B],
                       cwd=str(www), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = Daemon(lab, tmp_path, base_config())
    d.ready()
    assert _until(lambda: lab.run(lab.ns_a, ["curl", "-s", "-o", "/dev/null",
                                            f"http://{IP_B}:8000/"]).returncode == 0, 10)
    for _ in range(2):
        res = lab.run(lab.ns_a, ["curl", "-sf", "-o", "/dev/null", f"http://{IP_B}:8000/"])
        assert res.returncode == 0, res.stderr
    d.notify.wait("WATCHDOG=1", 5)
    assert _until(lambda: any(f.startswith("STATUS=") and "packets/s" in f
                              for f in d.notify.fields()), 5)
    assert d.stop() == 0, d.stderr()
    server.kill()
    assert "STOPPING=1" in d.notify.fields()
    events = d.events()
    http = _flows(events, "TCP", 8000)
    assert len(http) >= 3  # curl's first try may come before the server listens
    done = [e for e in http if e["flow"]["pkts_toclient"] > 0]
    assert len(done) >= 3
    for e in done:
        assert e["in_iface"] == lab.va
        assert e["src_ip"] == IP_A and e["dest_ip"] == IP_B
        assert e["flow"]["reason"] in ("shutdown", "timeout")
        assert e["flow"]["bytes_toclient"] > 1200  # the page came back
    assert all(e["flow"]["reason"] == "shutdown" for e in http)  # SIGTERM flushed them
    stats = _final_stats(events)
    assert stats["capture"]["kernel_drops"] == 0
    assert stats["capture"]["kernel_packets"] >= stats["decoder"]["pkts"] > 0
    if SCHEMA.exists():
        jsonschema = pytest.importorskip("jsonschema")
        validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
        for e in events:
            validator.validate(e)


UDP_FLOWS = """
    import socket, time
    n, port, secs = {n}, {port}, {secs}
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x" * 64, ("{ip}", port))
        socks.append(s)
        if len(socks) > 200:
            socks.pop(0).close()
        time.sleep(secs / n)
"""


def test_sighup_rotation_loses_no_line(lab: Lab, tmp_path: Path) -> None:
    cfg = base_config()
    cfg["flow"] = {"timeouts": {"udp": {"new": 1, "established": 1},
                                "default": {"new": 1, "established": 1},
                                "icmp": {"new": 1, "established": 1}}}
    d = Daemon(lab, tmp_path, cfg)
    d.ready()
    n = 400
    sender = lab.popen(lab.ns_b, [sys.executable, "-c", textwrap.dedent(
        UDP_FLOWS.format(n=n, port=9999, secs=3.0, ip=IP_A))])
    eve = d.logdir / "eve.json"
    rotations = 0
    time.sleep(0.8)
    while sender.poll() is None and rotations < 20:  # logrotate: rename, then HUP
        if eve.exists():
            eve.rename(d.logdir / f"eve.json.{rotations + 1:02d}")
            d.proc.send_signal(signal.SIGHUP)
            rotations += 1
        time.sleep(0.35)
    assert sender.wait(20) == 0
    time.sleep(1.5)  # let the 1 s timeouts end flows while we still rotate once more
    eve.rename(d.logdir / "eve.json.99")
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert d.stop() == 0, d.stderr()
    assert rotations >= 3
    files = [p for p in d.logdir.glob("eve.json*") if p.stat().st_size]
    assert len(files) >= 4
    events = d.events()  # json.loads on every line of every file
    udp = _flows(events, "UDP", 9999)
    ports = [e["src_port"] for e in udp]
    assert len(ports) == len(set(ports)) == n
    assert "outputs reopened" in d.stderr()


def test_reload_keeps_old_rules_when_new_ones_are_broken(lab: Lab, tmp_path: Path) -> None:
    rules = tmp_path / "local.rules"
    rules.write_text('alert udp any any -> any any (msg:"udp seen"; sid:1000001; rev:1;)\n')
    cfg = base_config()
    cfg["rules"] = {"files": [str(rules)]}
    d = Daemon(lab, tmp_path, cfg, workers=2)
    d.ready()
    rules.write_text('alert udp any any -> any any (msg:"udp seen"; sid:1000001; rev:2;)\n'
                     'alert udp any any -> any any (msg:"bad"; nosuchkeyword; sid:1000002;)\n')
    res = d.ctl_cmd("reload")
    assert res.returncode == 1
    assert "keeping the previous rules" in res.stderr
    assert f"{rules}:2" in res.stderr and "nosuchkeyword" in res.stderr
    assert "reload refused, keeping the previous rules" in d.stderr()
    assert d.ctl_cmd("ping").returncode == 0  # still running
    d.write_config({**cfg, "outputs": {"nosuch": 1}})  # a broken config is refused too
    res = d.ctl_cmd("reload")
    assert res.returncode == 1 and "unknown key 'outputs.nosuch'" in res.stderr
    d.write_config(cfg)
    rules.write_text('alert udp any any -> any any (msg:"udp seen"; sid:1000001; rev:3;)\n')
    mark = len(d.notify.fields())
    d.proc.send_signal(signal.SIGUSR2)  # systemctl reload
    i = d.notify.wait("RELOADING=1", 10, mark)
    d.notify.wait("READY=1", 20, i)
    assert _until(lambda: "reloaded: new rules and model in use" in d.stderr(), 5)
    res = d.ctl_cmd("reload")
    assert res.returncode == 0, res.stderr
    assert d.stop() == 0, d.stderr()


ECHO = """
    import socket, select, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{ip}", {port}))
    end = time.monotonic() + {secs}
    while time.monotonic() < end:
        if select.select([s], [], [], 0.2)[0]:
            data, peer = s.recvfrom(2048)
            s.sendto(data, peer)
"""

ECHO_CLIENT = """
    import socket
    got = 0
    for k in range({n}):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        for _ in range(k % 7 + 1):
            s.sendto(b"y" * 100, ("{ip}", {port}))
            s.recv(2048)
            got += 1
        print(s.getsockname()[1], k % 7 + 1)
        s.close()
"""


def test_two_workers_share_flows_without_splitting_and_slow_consumer(
        lab: Lab, tmp_path: Path) -> None:
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.bind(str(tmp_path / "slow.sock"))
    slow.listen(1)  # a consumer that never reads
    cfg = base_config(unix_stream={"enabled": True, "path": str(tmp_path / "slow.sock"),
                                   "queue": 5})
    d = Daemon(lab, tmp_path, cfg, workers=2)
    d.ready()
    lab.popen(lab.ns_a, [sys.executable, "-c", textwrap.dedent(
        ECHO.format(ip=IP_A, port=7000, secs=20))])
    time.sleep(0.3)
    res = lab.python(lab.ns_b, ECHO_CLIENT.format(n=60, ip=IP_A, port=7000))
    sent = {int(p): int(c) for p, c in (line.split() for line in res.stdout.splitlines())}
    assert len(sent) == 60
    assert d.stop() == 0, d.stderr()
    slow.close()
    events = d.events()
    flows = _flows(events, "UDP", 7000)
    by_port: dict[int, list[dict]] = {}
    for e in flows:
        by_port.setdefault(e["src_port"], []).append(e)
    assert set(by_port) == set(sent)
    for port, count in sent.items():
        (e,) = by_port[port]  # one event per flow: no worker saw a part of it
        assert e["flow"]["pkts_toserver"] == count
        assert e["flow"]["pkts_toclient"] == count
    cap = _final_stats(events)["capture"]
    assert cap["workers"] == 2
    assert cap["worker_0"]["pkts"] > 0 and cap["worker_1"]["pkts"] > 0
    assert cap["kernel_drops"] == 0
    assert cap["netsensor_dropped_events"] > 0  # the slow consumer lost events, counted
    assert cap["output"]["unix_stream"]["dropped"] > 0


def test_several_outputs_at_once_with_real_redis(lab: Lab, tmp_path: Path) -> None:
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("redis-server/redis-cli not installed (apt-get install redis-server)")
    lab.popen(lab.ns_a, ["redis-server", "--port", "6390", "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    assert _until(lambda: lab.run(lab.ns_a, ["redis-cli", "-p", "6390", "ping"])
                  .stdout.strip() == "PONG", 10)
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(str(tmp_path / "stream.sock"))
    stream.listen(1)
    stream.settimeout(10)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(str(tmp_path / "dgram.sock"))
    dgram.settimeout(0.2)
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(tmp_path / "syslog.sock"))
    syslog.settimeout(0.2)
    cfg = base_config(
        redis={"enabled": True, "server": "127.0.0.1", "port": 6390, "mode": "rpush",
               "key": "suricata"},
        unix_stream={"enabled": True, "path": str(tmp_path / "stream.sock")},
        unix_dgram={"enabled": True, "path": str(tmp_path / "dgram.sock")},
        syslog={"enabled": True, "address": str(tmp_path / "syslog.sock"),
                "format": "rfc5424"},
    )
    d = Daemon(lab, tmp_path, cfg)
    conn, _ = stream.accept()
    d.ready()
    lab.python(lab.ns_b, UDP_FLOWS.format(n=5, port=5353, secs=0.2, ip=IP_A))
    time.sleep(0.3)
    assert d.stop() == 0, d.stderr()
    eve = [json.dumps(e, sort_keys=True) for e in d.events()]
    assert len(_flows(d.events(), "UDP", 5353)) == 5

    def canon(lines: list[str]) -> list[str]:
        return [json.dumps(json.loads(x), sort_keys=True) for x in lines if x.strip()]

    res = lab.run(lab.ns_a, ["redis-cli", "-p", "6390", "--raw", "LRANGE", "suricata",
                             "0", "-1"])
    assert canon(res.stdout.splitlines()) == eve
    conn.settimeout(5)
    data = b""
    with contextlib.suppress(TimeoutError):
        while chunk := conn.recv(65536):
            data += chunk
    assert canon(data.decode().splitlines()) == eve

    def drain(s: socket.socket) -> list[str]:
        out = []
        with contextlib.suppress(TimeoutError):
            while True:
                out.append(s.recv(65536).decode())
        return out

    assert canon(drain(dgram)) == eve
    msgs = drain(syslog)
    assert all(m.startswith("<174>1 ") for m in msgs)  # local5.info, RFC 5424
    assert canon([m.split(" - - ", 1)[1] for m in msgs]) == eve
    for s in (conn, stream, dgram, syslog):
        s.close()


def test_startup_errors_are_one_line(lab: Lab, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "sensor.daemon", "run", "-l", str(tmp_path),
            "-S", str(tmp_path / "c.sock")]
    res = lab.run(lab.ns_a, [*base, "-i", "nosuch0"])
    assert res.returncode == 2
    assert res.stderr.strip().endswith("nosuch0: no such interface")
    assert "Traceback" not in res.stderr
    res = lab.run(lab.ns_a, [*base, "-i", lab.va, "-w", "lots"])
    assert res.returncode == 2 and "live.workers must be auto or 1..64" in res.stderr
    bad = tmp_path / "bad.rules"
    bad.write_text("alert udp any any -> any any (msg:\"x\"; nosuchkeyword; sid:1000009;)\n")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"rules": {"files": [str(bad)]}}))
    res = lab.run(lab.ns_a, [*base, "-i", lab.va, "-w", "1", "-c", str(tmp_path / "c.yaml")])
    assert res.returncode == 2 and "nosuchkeyword" in res.stderr
    assert "Traceback" not in res.stderr
