"""The traffic lab: a short real generator run (root: namespaces, tcpdump, nmap, hping3),
`netsensor replay` and `netsensor eval` on what it wrote, and the committed dataset."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.cli import main as cli_main
from sensor.eval import read_labels, slot_packets

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "pcaps" / "lab" / "generate.py"
DATA = REPO / "pcaps" / "lab" / "data"
# seed 7151 plans the two slots into ~25 s of capture (see generate.plan)
LAB_ARGS = ["--seed", "7151", "--duration", "15", "--attacks", "scan-syn,flood-icmp",
            "--benign", "web,dns,ping", "--benign-clients", "1", "--profile", "small"]


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """One real generator run shared by the lab tests: (pcap, labels, its stdout)."""
    if os.geteuid() != 0:
        pytest.skip("the traffic lab needs root (network namespaces, tcpdump)")
    missing = [t for t in ("ip", "tcpdump", "ethtool", "nginx", "dnsmasq", "dig", "curl", "ping",
                           "nmap", "hping3") if not shutil.which(t)]
    assert not missing, f"missing tools (scripts/setup.sh WITH_TEST=1 installs them): {missing}"
    out = tmp_path_factory.mktemp("lab") / "ci-s7151"
    proc = subprocess.Popen([sys.executable, str(GENERATOR), *LAB_ARGS, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the generator cleans up its namespaces and processes
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"generator ran over 60 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    tag = re.search(r"bridge (nl\d+)-sw/br0", stdout)
    assert tag, stdout[-3000:] + stderr[-3000:]
    leftover = [ns for ns in _namespaces().split() if ns.startswith(tag[1] + "-")]
    assert not leftover, f"generator left namespaces behind: {leftover}"
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return Path(f"{out}.pcap"), Path(f"{out}.labels.csv"), stdout


def test_generator_labels_cover_real_attacker_packets(lab_run):
    pcap, labels, stdout = lab_run
    slots = read_labels(str(labels))
    assert sorted(s.name for s in slots) == ["flood-icmp", "scan-syn"]
    assert all(str(s.victim) == "10.77.0.10" and str(s.attacker) in ("10.77.0.66", "10.77.0.67")
               for s in slots)
    counts = dict(zip((s.name for s in slots), slot_packets([str(pcap)], slots), strict=True))
    # nmap probes >= 30 ports and hping3 sends >= 100 echo requests, each answered
    assert counts["scan-syn"] >= 60 and counts["flood-icmp"] >= 200, counts
    assert "benign activities:" in stdout and "0 packets dropped by kernel" in stdout


def test_replay_and_eval_process_the_fresh_capture(lab_run, tmp_path, capsys):
    pcap, labels, _ = lab_run
    logdir = tmp_path / "eve"
    assert cli_main(["replay", "-q", "-l", str(logdir), str(pcap)]) == 0
    events = [json.loads(x) for x in (logdir / "eve.json").read_text().splitlines()]
    flows = [e for e in events if e["event_type"] == "flow"]
    assert any(e["src_ip"] == "10.77.0.21" for e in flows)  # the benign client
    report = tmp_path / "eval.json"
    assert cli_main(["eval", "--labels", str(labels), str(pcap), "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "scan-syn" in table and "flood-icmp" in table
    res = json.loads(report.read_text())
    assert res["summary"]["attacks"] == 2
    assert res["attack_flows"]["flows"] + res["benign"]["flows"] == len(flows)
    assert res["attack_flows"]["flows"] >= 30  # one flow per scanned port at least
    assert res["benign"]["flows"] >= 3  # DNS, HTTP, ping of the client
    assert 20 < res["capture_s"] < 60
    # the same numbers from the EVE file that replay wrote
    again = tmp_path / "again.json"
    assert cli_main(["eval", "-q", "--labels", str(labels), str(logdir / "eve.json"),
                     "--json", str(again)]) == 0
    res2 = json.loads(again.read_text())
    assert res2["attack_flows"] == res["attack_flows"]
    assert res2["benign"]["flows"] == res["benign"]["flows"]


def _committed() -> list[tuple[Path, Path]]:
    pairs = []
    for pcap in sorted(DATA.glob("*.pcap.gz")):
        pairs.append((pcap, pcap.with_name(pcap.name.replace(".pcap.gz", ".labels.csv"))))
    return pairs


def test_committed_dataset_parses_and_labels_cover_attacker_packets():
    pairs = _committed()
    splits = {p.name.split("-s")[0] for p, _ in pairs}
    assert {"train", "val", "test", "benign-val", "benign-test"} <= splits
    seeds = [re.search(r"-s(\d+)\.pcap", p.name)[1] for p, _ in pairs]
    assert len(set(seeds)) == len(seeds), "every capture must come from its own run and seed"
    manifest = (DATA / "MANIFEST.md").read_text()
    total = 0
    for pcap, labels in pairs:
        assert pcap.name in manifest
        slots = read_labels(str(labels))
        counts = slot_packets([str(pcap)], slots)
        empty = [s.name for s, c in zip(slots, counts, strict=True) if c == 0]
        assert not empty, f"{pcap.name}: slots without attacker packets: {empty}"
        if pcap.name.startswith(("train", "val", "test")):
            assert {s.family for s in slots} == {"port-scan", "flood", "slow-dos",
                                                 "brute-force", "dns-tunnel", "exfil"}
        else:
            assert not slots
        total += pcap.stat().st_size
    assert total < 6_000_000, f"committed lab captures grew to {total} bytes"
