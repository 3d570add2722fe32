"""The live daemon end to end: real namespaces, a veth pair, real traffic, real signals.

Each test creates namespaces A and B joined by a veth pair, runs `python -m sensor.daemon
run` on A's end (as systemd would: NOTIFY_SOCKET bound by the test, WATCHDOG_USEC set),
makes traffic between the namespaces with real programs (python's http.server and curl,
UDP senders and an echo server) and reads what the daemon wrote. No packet leaves the
namespaces. Needs root and iproute2.

Started as root, the daemon runs as `nobody` once its sockets are open, so each test works
in a directory under /tmp that others may traverse (pytest's tmp_path is 0700), and the
sockets it binds for the daemon are mode 0666, as systemd's notify socket is.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pwd
import re
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
from netns_lab import VethLab, reachable_tmpdir
from replay_helpers import assert_eve_schema
from syslogd import Rsyslogd, rsyslogd_path

IP_A, IP_B = "10.79.0.1", "10.79.0.2"
REPO = Path(__file__).resolve().parents[1]

if os.geteuid() != 0:
    pytest.skip("daemon tests need root (AF_PACKET, ip netns)", allow_module_level=True)
if not shutil.which("ip"):
    pytest.skip("iproute2 `ip` not installed", allow_module_level=True)

def _run_as() -> pwd.struct_passwd:
    """The user a root-started daemon switches to by default: netsensor, else nobody."""
    try:
        return pwd.getpwnam("netsensor")
    except KeyError:
        return pwd.getpwnam("nobody")


def _until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


class Lab(VethLab):
    """Namespaces a and b; veth va (a, IP_A) <-> vb (b, IP_B), and the processes run there."""

    def __init__(self) -> None:
        super().__init__("nsd", "d", IP_A, IP_B)
        self.procs: list[subprocess.Popen] = []

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        super().teardown()

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
def work():
    """A per-test directory the unprivileged daemon can reach (removed afterwards)."""
    with reachable_tmpdir("nsd-") as path:
        yield path


def bind_unix(path: Path, kind: int) -> socket.socket:
    """A unix socket the daemon may use after it dropped to an unprivileged user."""
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(str(path))
    path.chmod(0o666)
    return s


@pytest.fixture
def lab():
    with Lab().running() as lab:
        yield lab


class Notify:
    """The NOTIFY_SOCKET systemd would bind: collects every datagram the daemon sends."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = bind_unix(path, socket.SOCK_DGRAM)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.times: list[float] = []  # time.monotonic() of each message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(65536).decode()
                self.times.append(time.monotonic())
                self.messages.append(msg)
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

    def sent_between(self, field: str, start: float, end: float) -> int:
        """How many messages holding `field` arrived in [start, end] (monotonic)."""
        return sum(1 for t, m in zip(list(self.times), list(self.messages), strict=False)
                   if start <= t <= end and field in m.split("\n"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Daemon:
    def __init__(self, lab: Lab, tmp: Path, config: dict, workers: int = 1,
                 wrap: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 ctl: Path | None = None):
        self.lab, self.tmp = lab, tmp
        self.logdir = tmp / "log"
        self.ctl = str(ctl or tmp / "ctl.sock")
        self.cfg_path = tmp / "netsensor.yaml"
        self.write_config(config)
        self.notify = Notify(tmp / "notify.sock")
        self.stderr_path = tmp / "daemon.stderr"
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, WATCHDOG_USEC="3000000",
                   PYTHONPATH=str(REPO), **(env or {}))
        env.pop("WATCHDOG_PID", None)
        self.proc = lab.popen(lab.ns_a, [
            *wrap, sys.executable, "-m", "sensor.daemon", "run", "-i", lab.va,
            "-l", str(self.logdir), "-S", self.ctl, "-c", str(self.cfg_path), "-w", str(workers)],
            env=env, cwd=str(REPO), stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "w"))  # noqa: SIM115

    def write_config(self, config: dict) -> None:
        self.cfg_path.write_text(yaml.safe_dump(config))

    def ready(self) -> None:
        _until(lambda: "READY=1" in self.notify.fields() or self.proc.poll() is not None, 20)
        assert self.proc.poll() is None, self.stderr()
        self.notify.wait("READY=1", 0)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def pids(self) -> list[int]:
        """The supervisor (`ip netns exec` execs it: same pid) and its worker processes."""
        pid = self.proc.pid
        kids = []
        for task in os.listdir(f"/proc/{pid}/task"):
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text()
                     .split()]
        return [pid, *kids]

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
        """Every event in every (rotated, maybe gzipped) file; each line whole JSON."""
        out = []
        for path in sorted(self.logdir.glob(pattern)):
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
            assert not raw or raw.endswith(b"\n"), path  # no half line at the end
            for line in raw.decode().splitlines():
                out.append(json.loads(line))
        return out


def base_config(**outputs) -> dict:
    return {"outputs": {"stats": {"interval": 1}, **outputs},
            "live": {"batch_ms": 50}}


def _flows(events: list[dict], proto: str, port: int) -> list[dict]:
    return [e for e in events if e["event_type"] == "flow" and e["proto"] == proto
            and e.get("dest_port") == port]


def _credentials(pid: int) -> list[dict[str, int]]:
    """Real/effective uid and capability sets of every thread of `pid`, from /proc."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines())
        uids = fields["Uid"].split()
        cred = {"ruid": int(uids[0]), "euid": int(uids[1]),
                **{k: int(fields[k], 16) for k in ("CapEff", "CapPrm", "CapAmb")}}
        if int(tid) == pid:  # no_new_privs is per thread: the one that ran the drop
            cred["nnp"] = int(fields["NoNewPrivs"])
        out.append(cred)
    return out


def assert_unprivileged(d: Daemon, workers: int, uid: int) -> None:
    """After READY: supervisor and every worker, every thread: `uid`, no capability."""
    pids = d.pids()
    assert len(pids) == 1 + workers, pids
    for pid in pids:
        for cred in _credentials(pid):
            assert cred.pop("nnp", 1) == 1, (pid, cred)
            assert cred == {"ruid": uid, "euid": uid, "CapEff": 0, "CapPrm": 0, "CapAmb": 0}, \
                (pid, cred)


def _final_stats(events: list[dict]) -> dict:
    return [e for e in events if e["event_type"] == "stats"][-1]["stats"]


# -- the tests --------------------------------------------------------------------------

def test_ready_http_flows_watchdog_and_shutdown(lab: Lab, work: Path) -> None:
    if not shutil.which("curl"):
        pytest.skip("curl not installed")
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_text("hello\n" * 200)
    server = lab.popen(lab.ns_b, [sys.executable, "-m", "http.server", "8000", "--bind", IP_B],
                       cwd=str(www), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = Daemon(lab, work, base_config())
    d.ready()
    user = _run_as()
    assert_unprivileged(d, 1, user.pw_uid)
    assert f"running as user {user.pw_name} ({user.pw_uid})" in d.stderr()
    assert (d.logdir / "eve.json").stat().st_uid == user.pw_uid  # it can reopen its files
    assert _until(lambda: lab.run(lab.ns_a, ["curl", "-s", "-o", "/dev/null",
                                            f"http://{IP_B}:8000/"]).returncode == 0, 10)
    for _ in range(2):
        res = lab.run(lab.ns_a, ["curl", "-sf", "-o", "/dev/null", f"http://{IP_B}:8000/"])
        assert res.returncode == 0, res.stderr
    d.notify.wait("WATCHDOG=1", 5)
    # WATCHDOG=1 only while the worker's processing loop runs: a stopped worker ends it
    # (WATCHDOG_USEC is 3 s: a ping every second, a worker silent for 2 s is stale)
    worker = d.pids()[1]
    os.kill(worker, signal.SIGSTOP)
    stopped = time.monotonic()
    time.sleep(4.5)
    os.kill(worker, signal.SIGCONT)
    resumed = time.monotonic()
    assert d.notify.sent_between("WATCHDOG=1", stopped + 2.6, resumed) == 0
    assert _until(lambda: d.notify.sent_between("WATCHDOG=1", resumed, 1e12) > 0, 3)
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
    assert_eve_schema(events)


# One flow per source port, each bound explicitly (ephemeral ports may be handed out again).
UDP_FLOWS = """
    import socket, time
    n, port, secs = {n}, {port}, {secs}
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("{src}", {first_port} + i))
        s.sendto(b"x" * 64, ("{ip}", port))
        socks.append(s)
        if len(socks) > 200:
            socks.pop(0).close()
        time.sleep(secs / n)
"""


def _rotate_during_traffic(lab: Lab, work: Path, rotate) -> Daemon:
    """400 one-packet UDP flows over 3 s while `rotate(daemon, k)` rotates eve.json about
    every 0.35 s; every flow must be in exactly one line of one of the files."""
    cfg = base_config()
    cfg["flow"] = {"timeouts": {"udp": {"new": 1, "established": 1},
                                "default": {"new": 1, "established": 1},
                                "icmp": {"new": 1, "established": 1}}}
    d = Daemon(lab, work, cfg)
    d.ready()
    n = 400
    sender = lab.popen(lab.ns_b, [sys.executable, "-c", textwrap.dedent(
        UDP_FLOWS.format(n=n, port=9999, secs=3.0, ip=IP_A, src=IP_B, first_port=30000))])
    eve = d.logdir / "eve.json"
    rotations = 0
    time.sleep(0.8)
    while sender.poll() is None and rotations < 20:
        if eve.exists() and eve.stat().st_size:
            rotate(d, rotations + 1)
            rotations += 1
        time.sleep(0.35)
    assert sender.wait(20) == 0
    time.sleep(1.5)  # let the 1 s timeouts end flows while we still rotate once more
    rotate(d, 99)
    time.sleep(0.3)
    assert d.stop() == 0, d.stderr()
    assert rotations >= 3
    files = [p for p in d.logdir.glob("eve.json*") if p.stat().st_size]
    assert len(files) >= 4
    events = d.events()  # json.loads on every line of every file
    ports = sorted(e["src_port"] for e in _flows(events, "UDP", 9999))
    assert ports == list(range(30000, 30000 + n))  # each flow once: none lost, none twice
    assert "outputs reopened" in d.stderr()
    return d


def test_sighup_rotation_loses_no_line(lab: Lab, work: Path) -> None:
    def rename_then_hup(d: Daemon, k: int) -> None:
        (d.logdir / "eve.json").rename(d.logdir / f"eve.json.{k:02d}")
        d.proc.send_signal(signal.SIGHUP)

    _rotate_during_traffic(lab, work, rename_then_hup)


def logrotate_config(logdir: Path, pid: int) -> str:
    """systemd/netsensor.logrotate for this test: its paths, `kill -HUP PID` for systemctl,
    every rotated file kept (rotate 99) and numbered (no dateext: many rotations a day)."""
    text = (REPO / "systemd" / "netsensor.logrotate").read_text()
    text = text.replace("/var/log/netsensor/*.json /var/log/netsensor/*/*.json",
                        f"{logdir}/*.json")
    text = re.sub(r"^(\s*)systemctl kill .*$", rf"\1kill -HUP {pid}", text, flags=re.M)
    text = re.sub(r"^\s*rotate 14$", "    rotate 99", text, flags=re.M)
    text = re.sub(r"^\s*dateext$", "", text, flags=re.M)
    assert f"{logdir}/*.json" in text and f"kill -HUP {pid}" in text and "rotate 99" in text
    return text


def test_real_logrotate_during_traffic_loses_no_line(lab: Lab, work: Path) -> None:
    exe = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
    if exe is None:
        pytest.skip("logrotate not installed")
    conf = work / "logrotate.conf"
    runs: list[subprocess.CompletedProcess] = []

    def logrotate(d: Daemon, _k: int) -> None:
        if not conf.exists():
            conf.write_text(logrotate_config(d.logdir, d.proc.pid))
        runs.append(subprocess.run([exe, "-f", "-s", str(work / "logrotate.state"), str(conf)],
                                   capture_output=True, text=True, timeout=30))
        assert runs[-1].returncode == 0, runs[-1].stderr

    d = _rotate_during_traffic(lab, work, logrotate)
    names = sorted(p.name for p in d.logdir.iterdir())
    assert "eve.json.1" in names and any(n.endswith(".gz") for n in names), names
    assert (d.logdir / "eve.json").stat().st_mode & 0o777 == 0o640  # made by `create 0640`


def _alert_revs(lab: Lab, d: Daemon, port: int) -> set[int]:
    """Send 3 UDP flows to `port`; the revs of rule 1000001 that alerted on them."""
    lab.python(lab.ns_b, UDP_FLOWS.format(n=3, port=port, secs=0.1, ip=IP_A, src=IP_B,
                                           first_port=port + 100))

    def revs() -> set[int]:
        return {e["alert"]["rev"] for e in d.events() if e["event_type"] == "alert"
                and e.get("dest_port") == port and e["alert"]["signature_id"] == 1000001}

    _until(lambda: len(revs()) > 0, 5)
    return revs()


def test_reload_keeps_old_rules_when_new_ones_are_broken(lab: Lab, work: Path) -> None:
    rules = work / "local.rules"
    rules.write_text('alert udp any any -> any any (msg:"udp seen"; sid:1000001; rev:1;)\n')
    cfg = base_config()
    cfg["rules"] = {"files": [str(rules)]}
    d = Daemon(lab, work, cfg, workers=2)
    d.ready()
    assert _alert_revs(lab, d, 6001) == {1}
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
    assert _alert_revs(lab, d, 6002) == {1}  # the old rules still run
    d.write_config(cfg)
    rules.write_text('alert udp any any -> any any (msg:"udp seen"; sid:1000001; rev:3;)\n')
    mark = len(d.notify.fields())
    d.proc.send_signal(signal.SIGUSR2)  # systemctl reload
    i = d.notify.wait("RELOADING=1", 10, mark)
    d.notify.wait("READY=1", 20, i)
    assert _until(lambda: "reloaded: new rules and model in use" in d.stderr(), 5)
    assert _alert_revs(lab, d, 6003) == {3}  # the new set
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

# Each flow gets its own source port, bound explicitly: with ephemeral ports the kernel may
# hand a closed socket's port to the next one, and two flows then share a 5-tuple.
ECHO_CLIENT = """
    import socket
    got = 0
    for k in range({n}):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("{src}", {first_port} + k))
        s.settimeout(2)
        for _ in range(k % 7 + 1):
            s.sendto(b"y" * 100, ("{ip}", {port}))
            s.recv(2048)
            got += 1
        print(s.getsockname()[1], k % 7 + 1)
        s.close()
"""


def test_two_workers_share_flows_without_splitting_and_slow_consumer(
        lab: Lab, work: Path) -> None:
    slow = bind_unix(work / "slow.sock", socket.SOCK_STREAM)
    slow.listen(1)  # a consumer that never reads
    cfg = base_config(unix_stream={"enabled": True, "path": str(work / "slow.sock"),
                                   "queue": 5})
    d = Daemon(lab, work, cfg, workers=2)
    d.ready()
    lab.popen(lab.ns_a, [sys.executable, "-c", textwrap.dedent(
        ECHO.format(ip=IP_A, port=7000, secs=20))])
    time.sleep(0.3)
    res = lab.python(lab.ns_b, ECHO_CLIENT.format(n=60, ip=IP_A, port=7000, src=IP_B,
                                                  first_port=41000))
    sent = {int(p): int(c) for p, c in (line.split() for line in res.stdout.splitlines())}
    assert set(sent) == set(range(41000, 41060))
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


def test_several_outputs_at_once_real_redis_and_rsyslogd(lab: Lab, work: Path) -> None:
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("redis-server/redis-cli not installed (apt-get install redis-server)")
    if rsyslogd_path() is None:
        pytest.skip("rsyslogd not installed (apt-get install rsyslog)")
    lab.popen(lab.ns_a, ["redis-server", "--port", "6390", "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    assert _until(lambda: lab.run(lab.ns_a, ["redis-cli", "-p", "6390", "ping"])
                  .stdout.strip() == "PONG", 10)
    stream = bind_unix(work / "stream.sock", socket.SOCK_STREAM)
    stream.listen(1)
    stream.settimeout(10)
    dgram = bind_unix(work / "dgram.sock", socket.SOCK_DGRAM)
    dgram.settimeout(0.2)
    rsyslogd = Rsyslogd(work / "rsyslog", prefix=("ip", "netns", "exec", lab.ns_a))
    lab.procs.append(rsyslogd.proc)  # stopped by the lab, also when the test fails
    syslog_path = str(rsyslogd.sock)
    cfg = base_config(
        redis={"enabled": True, "server": "127.0.0.1", "port": 6390, "mode": "rpush",
               "key": "suricata"},
        unix_stream={"enabled": True, "path": str(work / "stream.sock")},
        unix_dgram={"enabled": True, "path": str(work / "dgram.sock")},
        syslog={"enabled": True, "address": syslog_path},  # rfc3164, as syslog(3) sends
    )
    d = Daemon(lab, work, cfg)
    conn, _ = stream.accept()
    d.ready()
    lab.python(lab.ns_b, UDP_FLOWS.format(n=5, port=5353, secs=0.2, ip=IP_A, src=IP_B,
                                           first_port=31000))
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
    got = rsyslogd.wait("netsensor", len(eve))
    rsyslogd.stop()
    assert canon([m["msg"] for m in got]) == eve  # what a real rsyslogd parsed
    assert {(m["facility"], m["severity"], m["procid"]) for m in got} == {
        ("local5", "info", str(d.proc.pid))}
    for s in (conn, stream, dgram):
        s.close()


def test_startup_errors_are_one_line(lab: Lab, work: Path) -> None:
    base = [sys.executable, "-m", "sensor.daemon", "run", "-l", str(work),
            "-S", str(work / "c.sock")]
    res = lab.run(lab.ns_a, [*base, "-i", "nosuch0"])
    assert res.returncode == 2
    assert res.stderr.strip().endswith("nosuch0: no such interface")
    assert "Traceback" not in res.stderr
    res = lab.run(lab.ns_a, [*base, "-i", lab.va, "-w", "lots"])
    assert res.returncode == 2 and "live.workers must be auto or 1..64" in res.stderr
    res = lab.run(lab.ns_a, [*base, "-i", lab.va, "-u", "nosuchuser"])
    assert res.returncode == 2 and "live.user: no such user 'nosuchuser'" in res.stderr


@pytest.mark.parametrize("what", ["rules", "model"])
def test_no_ready_until_rules_and_model_are_up(lab: Lab, work: Path, what: str) -> None:
    """READY=1 waits for the rule and model stages; when they cannot be built the daemon
    never says READY and exits 2 with one line saying why."""
    if what == "rules":
        bad = work / "bad.rules"
        bad.write_text('alert udp any any -> any any (msg:"x"; nosuchkeyword; sid:1000009;)\n')
        cfg, expect = {"rules": {"files": [str(bad)]}}, f"{bad}:1"
    else:
        bad = work / "bad.onnx"
        bad.write_bytes(b"not an onnx model\n")
        cfg = {"model": {"enabled": True, "path": str(bad)}, "windows": {"enabled": True}}
        expect = f"model {bad}: not a loadable ONNX model"
    d = Daemon(lab, work, {**base_config(), **cfg}, workers=2)
    assert d.proc.wait(60) == 2
    d.notify.close()
    err = d.stderr()
    assert expect in err and "Traceback" not in err, err
    assert err.count(expect) == 1  # two workers met it; said once
    assert "READY=1" not in d.notify.fields()


def test_systemd_style_start_drops_ambient_capabilities(lab: Lab, work: Path) -> None:
    """As under the unit: an unprivileged user with CAP_NET_RAW/CAP_NET_ADMIN as ambient
    capabilities (DynamicUser + AmbientCapabilities), directories made for it
    (LogsDirectory, RuntimeDirectory). After READY no thread holds a capability."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    nobody = pwd.getpwnam("nobody")
    for sub in ("log", "run"):
        (work / sub).mkdir(mode=0o750)
        os.chown(work / sub, nobody.pw_uid, nobody.pw_gid)
    caps = "-all,+net_raw,+net_admin"
    wrap = ("setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
            "--clear-groups", f"--inh-caps={caps}", f"--ambient-caps={caps}",
            f"--bounding-set={caps}")
    d = Daemon(lab, work, base_config(), workers=2, wrap=wrap,
               env={"OPENBLAS_NUM_THREADS": "1"},  # as systemd/netsensor.service sets it
               ctl=work / "run" / "ctl.sock")
    d.ready()
    assert_unprivileged(d, 2, nobody.pw_uid)
    lab.python(lab.ns_b, UDP_FLOWS.format(n=6, port=5400, secs=0.3, ip=IP_A, src=IP_B,
                                           first_port=32000))
    assert d.ctl_cmd("ping").returncode == 0
    assert d.stop() == 0, d.stderr()
    flows = _flows(d.events(), "UDP", 5400)
    assert len(flows) == 6 and all(e["in_iface"] == lab.va for e in flows)
