"""Hostile traffic, generated for real with scapy, replayed end to end.

Each case writes a capture of hostile packets with legitimate sessions interleaved, replays
it in a child process and checks three things: the legitimate sessions are still logged
with the right packet counts (the sensor kept processing the rest), peak resident memory
stays under MEM_LIMIT_MB with the configured limits, and what was discarded is counted in
the stats event under Suricata's counter names.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hostile import Replay, build_flood, check_legit, interleave, replay, write_pcap
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

# Replay of a small capture peaks near 45 MB here (python, numpy, the pipeline: VmHWM);
# the hostile cases may add their bounded tables, nothing that grows with the attack.
MEM_LIMIT_MB = 128
ETH = Ether(src="02:00:00:00:00:66", dst="02:00:00:00:00:77")


def _ok(r: Replay) -> None:
    assert r.rc == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.peak_rss_mb < MEM_LIMIT_MB, f"peak RSS {r.peak_rss_mb:.0f} MB"
    s = r.stats
    # the figures docs/security.md quotes (pytest -s shows them)
    print(f"\n{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}: "
          f"{s['decoder.pkts']} packets, peak RSS {r.peak_rss_mb:.0f} MB, "
          f"{s.get('decoder.invalid', 0)} invalid, {len(r.flows())} flow events, "
          f"{r.seconds:.1f} s")


def test_fragment_flood_and_overlapping_fragments(tmp_path: Path) -> None:
    rng = random.Random(1)
    frames: list[bytes] = []
    # overlapping fragments (teardrop-like): the second starts inside the first
    whole = IP(src="10.97.0.1", dst="10.98.0.9", id=7777) / UDP(sport=5555, dport=9) / Raw(
        b"A" * 120)
    parts = fragment(whole, fragsize=64)
    lap = parts[1].copy()
    lap.frag = 4  # 32 bytes into the first fragment's 64
    lap.payload = Raw(b"B" * 40)
    frames += [bytes(ETH / parts[0]), bytes(ETH / lap), *(bytes(ETH / p) for p in parts[1:])]
    # a fragment whose offset plus length passes 65535
    frames.append(bytes(ETH / IP(src="10.97.0.2", dst="10.98.0.9", id=9, frag=8190)
                        / Raw(b"z" * 200)))
    # IPv6 fragments that overlap
    for off, more in ((0, 1), (1, 1), (3, 0)):
        frames.append(bytes(ETH / IPv6(src="fd00::1", dst="fd00::2")
                            / IPv6ExtHdrFragment(id=42, offset=off, m=more, nh=17)
                            / Raw(b"C" * 24)))
    # then a flood of first fragments that never complete, each its own datagram
    n_flood = 3000
    for i in range(n_flood):
        src = f"172.16.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        frames.append(bytes(ETH / IP(src=src, dst="10.98.0.9", id=i, flags="MF", frag=0)
                            / UDP(sport=1000 + i % 50000, dport=9) / Raw(b"x" * 64)))
    packets, legit = interleave(frames, 20)
    pcap = tmp_path / "frag.pcap"
    write_pcap(pcap, packets)
    r = replay(pcap, tmp_path, {"defrag": {"max_trackers": 1000, "max_fragments": 16},
                                "outputs": {"stats": {"interval": 1}}})
    _ok(r)
    check_legit(r, legit)
    s = r.stats
    assert s["defrag.ipv4.fragments"] == n_flood + len(parts) + 2
    assert s["defrag.max_frag_hits"] >= n_flood - 1000  # trackers are capped at 1000
    assert s["defrag.ipv4.reassembled"] == 1
    assert s["decoder.event.ipv4.frag_overlap"] >= 1
    assert s["decoder.event.ipv4.frag_pkt_too_large"] == 1
    assert s["defrag.ipv6.fragments"] == 3
    assert s["decoder.event.ipv6.frag_overlap"] >= 1


def test_overlapping_and_out_of_order_tcp_segments(tmp_path: Path) -> None:
    c, s = IP(src="10.97.1.1", dst="10.98.0.80"), IP(src="10.98.0.80", dst="10.97.1.1")
    a, b = 100, 900
    seg = [
        ETH / c / TCP(sport=33000, dport=80, flags="S", seq=a),
        ETH / s / TCP(sport=80, dport=33000, flags="SA", seq=b, ack=a + 1),
        ETH / c / TCP(sport=33000, dport=80, flags="A", seq=a + 1, ack=b + 1),
        # segments out of order, then overlapping rewrites of the same range
        ETH / c / TCP(sport=33000, dport=80, flags="PA", seq=a + 21, ack=b + 1) / Raw(b"2" * 20),
        ETH / c / TCP(sport=33000, dport=80, flags="PA", seq=a + 1, ack=b + 1) / Raw(b"1" * 20),
        ETH / c / TCP(sport=33000, dport=80, flags="PA", seq=a + 11, ack=b + 1) / Raw(b"X" * 20),
        ETH / c / TCP(sport=33000, dport=80, flags="PA", seq=a + 1, ack=b + 1) / Raw(b"Y" * 40),
        ETH / s / TCP(sport=80, dport=33000, flags="A", seq=b + 1, ack=a + 41),
        ETH / c / TCP(sport=33000, dport=80, flags="PA", seq=(a - 500) % 2**32, ack=b + 1)
        / Raw(b"old"),
        ETH / c / TCP(sport=33000, dport=80, flags="FA", seq=a + 41, ack=b + 1),
        ETH / s / TCP(sport=80, dport=33000, flags="FA", seq=b + 1, ack=a + 42),
        ETH / c / TCP(sport=33000, dport=80, flags="A", seq=a + 42, ack=b + 2),
    ]
    packets, legit = interleave([bytes(p) for p in seg], 10, step_us=2000)
    pcap = tmp_path / "tcp.pcap"
    write_pcap(pcap, packets)
    r = replay(pcap, tmp_path)
    _ok(r)
    check_legit(r, legit)
    [f] = [e for e in r.flows() if e.get("src_port") == 33000]
    assert (f["flow"]["pkts_toserver"], f["flow"]["pkts_toclient"]) == (9, 3)
    assert f["flow"]["state"] == "closed"


def test_tiny_ttl_and_bad_checksums(tmp_path: Path) -> None:
    frames = []
    for i in range(200):
        ip = IP(src="10.97.2.1", dst="10.98.0.53", ttl=i % 2)  # TTL 0 and 1
        frames.append(bytes(ETH / ip / UDP(sport=20000 + i, dport=53, chksum=0xDEAD)
                            / Raw(b"q")))
    for i in range(200):
        frames.append(bytes(ETH / IP(src="10.97.2.2", dst="10.98.0.80", chksum=0x1234)
                            / TCP(sport=21000 + i, dport=80, flags="S", chksum=0x4321)))
    packets, legit = interleave(frames, 10)
    pcap = tmp_path / "ttl.pcap"
    write_pcap(pcap, packets)
    r = replay(pcap, tmp_path)
    _ok(r)
    check_legit(r, legit)
    # like Suricata reading a pcap, checksums and TTLs do not stop flow tracking
    udp = [e for e in r.flows() if e["src_ip"] == "10.97.2.1"]
    tcp = [e for e in r.flows() if e["src_ip"] == "10.97.2.2"]
    assert len(udp) == 200 and len(tcp) == 200
    assert r.stats["decoder.pkts"] == len(packets)


def test_random_source_syn_flood_against_a_small_flow_table(tmp_path: Path) -> None:
    pcap = tmp_path / "flood.pcap"
    legit = build_flood(str(pcap), 30000, 40)
    max_flows = 2000
    r = replay(pcap, tmp_path, {"flow": {"max_flows": max_flows},
                                "outputs": {"stats": {"interval": 1}}})
    _ok(r)
    check_legit(r, legit)
    s = r.stats
    assert s["flow.emerg_mode_entered"] >= 1
    assert s["flow.get_used"] > 0  # flows evicted to stay under the cap
    assert s["flow.total"] == 30000 + 40
    assert max(x["flow.active"] for x in r.all_stats()) <= max_flows
    assert len(r.stats) and r.peak_rss_mb < MEM_LIMIT_MB


def test_very_long_and_malformed_dns_names(tmp_path: Path) -> None:
    frames = []
    for i in range(100):
        ip = IP(src="10.97.3.1", dst="10.98.0.53")
        if i % 3 == 0:  # 4 x 63-byte labels: the longest legal name
            body = bytes(DNS(id=i, qd=DNSQR(qname=".".join(["b" * 63] * 4))))
        elif i % 3 == 1:  # a label longer than the packet, then nothing
            body = bytes(DNS(id=i, qdcount=1)) + b"\x3f" + b"c" * 10
        else:  # a compression pointer that points at itself (a loop)
            body = bytes(DNS(id=i, qdcount=1)) + b"\xc0\x0c\x00\x01\x00\x01"
        frames.append(bytes(ETH / ip / UDP(sport=30000 + i, dport=53) / Raw(body)))
    packets, legit = interleave(frames, 10)
    pcap = tmp_path / "dns.pcap"
    write_pcap(pcap, packets)
    r = replay(pcap, tmp_path)
    _ok(r)
    check_legit(r, legit)
    assert len([e for e in r.flows() if e["src_ip"] == "10.97.3.1"]) == 100


def _raw_ip4(ihl: int | None = None, length: int | None = None, l4: bytes = b"") -> bytes:
    ip = IP(src="10.97.4.1", dst="10.98.0.1", proto=6)
    b = bytearray(bytes(ip / Raw(l4)))
    if ihl is not None:
        b[0] = 0x40 | ihl
    if length is not None:
        b[2:4] = length.to_bytes(2, "big")
    return bytes(ETH) [:12] + b"\x08\x00" + bytes(b)


def test_impossible_header_lengths(tmp_path: Path) -> None:
    n = 40  # packets of each kind
    cases = {
        "decoder.event.ipv4.hlen_too_small": lambda: _raw_ip4(ihl=3, l4=b"\0" * 20),
        "decoder.event.ipv4.trunc_pkt": lambda: _raw_ip4(length=1500, l4=b"\0" * 20),
        "decoder.event.ipv4.iplen_smaller_than_hlen": lambda: _raw_ip4(length=12, l4=b"\0" * 20),
        # TCP data offset 15 (60 bytes) in a 20-byte segment
        "decoder.event.tcp.hlen_too_small": lambda: bytes(
            ETH / IP(src="10.97.4.2", dst="10.98.0.1") / TCP(dataofs=15, flags="S")),
        "decoder.event.udp.hlen_invalid": lambda: bytes(
            ETH / IP(src="10.97.4.3", dst="10.98.0.1") / UDP(len=4000) / Raw(b"u" * 8)),
        # IPv6 payload length says 1000, 20 bytes follow
        "decoder.event.ipv6.trunc_pkt": lambda: bytes(
            ETH / IPv6(src="fd00::4", dst="fd00::5", plen=1000) / TCP(flags="S")),
        # a chain of 20 extension headers: more than the decoder walks
        "decoder.too_many_layers": lambda: bytes(
            ETH / IPv6(src="fd00::6", dst="fd00::7")
            / _ext_chain(20) / UDP(sport=1, dport=2)),
        # an extension header whose length runs past the packet
        "decoder.event.ipv6.trunc_exthdr": lambda: bytes(
            ETH / IPv6(src="fd00::8", dst="fd00::9", nh=60)
            / Raw(b"\x11\xff" + b"\0" * 6)),
    }
    frames = [make() for make in cases.values() for _ in range(n)]
    random.Random(3).shuffle(frames)
    packets, legit = interleave(frames, 10)
    pcap = tmp_path / "lengths.pcap"
    write_pcap(pcap, packets)
    r = replay(pcap, tmp_path)
    _ok(r)
    check_legit(r, legit)
    s = r.stats
    for name in cases:
        assert s.get(name) == n, (name, s.get(name))
    assert s["decoder.invalid"] == n * len(cases)


def _ext_chain(k: int):
    layer = IPv6ExtHdrHopByHop()
    for _ in range(k - 1):
        layer = layer / IPv6ExtHdrDestOpt()
    return layer


# -- nothing from the network reaches eval, pickle, a shell or a file path -------------------

SENSOR = Path(__file__).resolve().parents[1] / "sensor"
# modules that handle packet bytes (or what was decoded from them): no file access at all
PACKET_MODULES = (
    "decode.py", "flow.py", "defrag.py", "tunnel.py", "pipeline.py", "windows.py",
    "features.py", "community_id.py", "output/eve.py", "detect/rules/engine.py",
    "detect/rules/payload.py", "detect/rules/prefilter.py", "detect/rules/stream.py",
    "detect/rules/thresholding.py", "detect/rules/content.py", "detect/rules/pcre.py",
    "detect/rules/iponly.py",
)
# the one place that runs a program: tcpdump -ddd compiling the configured BPF filter, from
# an argument list (no shell), never with packet data
SUBPROCESS_ALLOWED = ("capture/live.py",)
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                  "joblib", "pty", "commands"}
CODE_BUILTINS = {"eval", "exec", "compile", "__import__", "execfile"}
SHELL_CALLS = {"system", "popen", "execv", "execve", "execl", "execlp", "execvp", "spawnl",
               "spawnv", "spawnve", "posix_spawn", "startfile"}
FILE_OS_CALLS = {"open", "remove", "unlink", "rename", "replace", "makedirs", "mkdir",
                 "rmdir", "chmod", "chown", "symlink", "link", "truncate", "mkfifo",
                 "listdir", "scandir", "walk"}
FILE_MODULES = {"pathlib", "shutil", "tempfile", "subprocess", "glob", "io"}


def unsafe_uses(rel: str, source: str) -> list[str]:
    """Every dangerous construct in one module of sensor/, as 'file:line: what'."""
    import ast

    tree = ast.parse(source)
    packet = rel in PACKET_MODULES
    out: list[str] = []

    def bad(node: ast.AST, what: str) -> None:
        out.append(f"{rel}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top in UNSAFE_MODULES:
                    bad(node, f"imports {name}")
                if top == "subprocess" and rel not in SUBPROCESS_ALLOWED:
                    bad(node, "imports subprocess")
                if packet and top in FILE_MODULES:
                    bad(node, f"packet module imports {name}")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
            else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
            else ""
        if isinstance(f, ast.Name) and name in CODE_BUILTINS:
            bad(node, f"calls {name}()")
        if owner == "os" and name in SHELL_CALLS:
            bad(node, f"calls os.{name}()")
        if owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all"):
            bad(node, f"calls yaml.{name}() (only safe_load)")
        if owner == "torch" and name == "load":
            bad(node, "calls torch.load() (a pickle)")
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                          and kw.value.value is False):
                bad(node, "passes shell=")
            if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                 and kw.value.value is False):
                bad(node, "passes allow_pickle=")
        if owner == "subprocess" and node.args and isinstance(
                node.args[0], ast.Constant | ast.JoinedStr | ast.BinOp):
            bad(node, "runs a command line string")
        if packet and ((isinstance(f, ast.Name) and name in ("open", "Path"))
                       or (owner in ("os", "io") and name in FILE_OS_CALLS)):
            bad(node, f"packet module calls {owner + '.' if owner else ''}{name}()")
    return out


def test_no_network_data_reaches_eval_pickle_shell_or_paths() -> None:
    found = []
    for path in sorted(SENSOR.rglob("*.py")):
        rel = path.relative_to(SENSOR).as_posix()
        found += unsafe_uses(rel, path.read_text())
    assert not found, "\n".join(found)
    missing = [m for m in PACKET_MODULES if not (SENSOR / m).exists()]
    assert not missing, f"PACKET_MODULES names modules that are gone: {missing}"


@pytest.mark.parametrize("rel, snippet", [
    ("decode.py", "x = eval(payload)"),
    ("flow.py", "import pickle\npickle.loads(b)"),
    ("output/sinks.py", "import subprocess\nsubprocess.run(cmd, shell=True)"),
    ("config.py", "import os\nos.system('tcpdump ' + name)"),
    ("config.py", "import yaml\nyaml.load(text)"),
    ("decode.py", "f = open(name, 'w')"),
    ("tunnel.py", "import os\nos.remove(p)"),
    ("windows.py", "from pathlib import Path"),
    ("features.py", "np.load(f, allow_pickle=True)"),
    ("capture/live.py", "import subprocess\nsubprocess.run('tcpdump -ddd ' + e)"),
])
def test_the_check_catches_each_kind(rel: str, snippet: str) -> None:
    assert unsafe_uses(rel, snippet), f"{snippet!r} in {rel} went unnoticed"


def test_world_writable_config_and_rule_files_are_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    rules = tmp_path / "local.rules"
    rules.write_text('alert udp any any -> any 53 (msg:"dns"; sid:1000001; rev:1;)\n')
    cfg = tmp_path / "netsensor.yaml"
    cfg.write_text(f"rules:\n  files: [{rules}]\n")
    empty = str(repo / "pcaps" / "formats" / "empty.pcap")

    def replay() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "-q", "-c",
                               str(cfg), "-l", str(tmp_path), empty], capture_output=True,
                              text=True, timeout=60, cwd=str(repo))

    cfg.chmod(0o666)
    r = replay()
    assert r.returncode == 2
    assert r.stderr.strip() == (f"netsensor: {cfg}: refusing a world-writable config file: "
                                f"any local user could change what the sensor does "
                                f"(fix: chmod o-w {cfg})")
    cfg.chmod(0o644)
    rules.chmod(0o646)
    r = replay()
    assert r.returncode == 2 and "refusing a world-writable rule file" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    rules.chmod(0o644)
    r = replay()
    assert r.returncode == 0 and not r.stderr, r.stderr  # accepted once only root may write
