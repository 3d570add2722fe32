"""Side by side: netsensor's and Suricata 7's alerts on random synthetic traffic.

For each seed, scapy builds a pcap (12 TCP sessions with correct sequence numbers on
ports 21/22/80/445/8080 carrying a random mix of payloads, 20 UDP and 20 ICMP packets),
both engines run the same 30 rules (bench/rules_vs_suricata.rules) over it
(Suricata with the corpus' minimal config, `--runmode single`), and the alerts are
compared as multisets of (sid, pcap_cnt, src_ip, src_port). Needs suricata on PATH.

    python bench/rules_vs_suricata.py [--seeds 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, wrpcap  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT.parent / "shared" / "conformance" / "suricata-verify" / "minimal-suricata.yaml"
C, S = "10.0.0.1", "192.0.2.10"
WORDS = [b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", b"USER root\r\n", b"PASS secret\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"\x00\x01\x02\x03abcdEFGH",
         b"login=admin&pass=1234", b"SSH-2.0-OpenSSH_8.9\r\n", b"cmd.exe /c whoami",
         b"xyz" * 20]
RULES = ROOT / "bench" / "rules_vs_suricata.rules"


def _pkt(src: str, dst: str, layer, payload: bytes, t: float):  # noqa: ANN001, ANN202
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst) / layer
    if payload:
        p = p / Raw(payload)
    p.time = 1_700_000_000 + t
    return p


class _Session:
    """One TCP conversation with correct sequence numbers."""

    def __init__(self, pkts: list, sport: int, dport: int, t: float):
        self.pkts, self.sport, self.dport, self.t = pkts, sport, dport, t
        self.seq = {True: 1000, False: 5000}

    def add(self, from_client: bool, flags: str, data: bytes = b"") -> None:
        self.t += 0.01
        seq = self.seq
        if from_client:
            layer = TCP(sport=self.sport, dport=self.dport, flags=flags, seq=seq[True],
                        ack=seq[False] if "A" in flags else 0)
            self.pkts.append(_pkt(C, S, layer, data, self.t))
        else:
            layer = TCP(sport=self.dport, dport=self.sport, flags=flags, seq=seq[False],
                        ack=seq[True])
            self.pkts.append(_pkt(S, C, layer, data, self.t))
        seq[from_client] += len(data) + (1 if ("S" in flags or "F" in flags) else 0)


def make_pcap(seed: int, path: Path) -> None:
    rnd = random.Random(seed)
    pkts: list = []
    t = 0.0
    for i in range(12):
        s = _Session(pkts, 40000 + i, rnd.choice([80, 21, 22, 445, 8080]), t)
        s.add(True, "S")
        s.add(False, "SA")
        s.add(True, "A")
        for _ in range(rnd.randint(1, 4)):
            side = rnd.random() < 0.5
            s.add(side, "PA", rnd.choice(WORDS))
            s.add(not side, "A")
        if rnd.random() < 0.7:
            s.add(True, "FA")
            s.add(False, "FA")
            s.add(True, "A")
        t = s.t + 0.5
    for i in range(20):
        pkts.append(_pkt(C, S, UDP(sport=5000 + i % 3, dport=53), rnd.choice(WORDS), t))
        t += 0.3
        pkts.append(_pkt(S, C, ICMP(type=rnd.choice([0, 8, 3]), id=i, seq=i), b"ping", t))
        t += 0.3
    wrpcap(str(path), pkts)


def _alerts(eve: Path) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for line in eve.read_text().splitlines():
        e = json.loads(line)
        if e["event_type"] == "alert":
            out[(e["alert"]["signature_id"], e.get("pcap_cnt"), e["src_ip"],
                 e.get("src_port"))] += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = ap.parse_args()
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            make_pcap(seed, d / "in.pcap")
            (d / "test.rules").write_text(RULES.read_text())
            (d / "c.yaml").write_text(f"rules:\n  files: [{d / 'test.rules'}]\n"
                                      "replay:\n  progress: false\n"
                                      "outputs:\n  eve:\n    types: [alert]\n")
            (d / "ours").mkdir()
            (d / "sur").mkdir()
            subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "-q", "-c",
                            str(d / "c.yaml"), "-l", str(d / "ours"), str(d / "in.pcap")],
                           check=True, cwd=ROOT)
            subprocess.run(["suricata", "-c", str(MINIMAL), "-r", str(d / "in.pcap"), "-S",
                            str(d / "test.rules"), "-l", str(d / "sur"), "-k", "none",
                            "--runmode", "single"], check=True, capture_output=True,
                           env={**os.environ, "TZ": "UTC"})
            ours, sur = _alerts(d / "ours" / "eve.json"), _alerts(d / "sur" / "eve.json")
            diff = sum(((ours - sur) + (sur - ours)).values())
            print(f"seed {seed}: netsensor {sum(ours.values())} alerts, suricata "
                  f"{sum(sur.values())}, differing {diff}")
            for k in sorted(set(ours) | set(sur), key=str):
                if ours[k] != sur[k]:
                    print(f"    sid {k[0]} pcap_cnt {k[1]} {k[2]}:{k[3]}  netsensor {ours[k]} "
                          f"suricata {sur[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
