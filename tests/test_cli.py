"""`netsensor replay` as a user runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ROOT / "pcaps" / "formats"
SAMPLE = ROOT / "pcaps" / "sample.pcap"
EXPECTED = json.loads((FORMATS / "expected.json").read_text())["files"]
NETSENSOR = str(Path(sys.executable).parent / "netsensor")


def run(*args: str, stdin: object = None, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([NETSENSOR, "replay", *args], capture_output=True, text=True,
                          stdin=stdin, timeout=120, **kw)


def eve(logdir: Path) -> list[dict]:
    with open(logdir / "eve.json", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def summary(stderr: str) -> dict[str, str]:
    out = {}
    for line in stderr.splitlines():
        if ":" in line and not line.startswith("netsensor:"):
            key, _, rest = line.partition(":")
            out[key] = rest.strip()
    return out


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr.replace(
        "CaptureError", "")


def test_replay_one_file(tmp_path: Path) -> None:
    proc = run(str(SAMPLE), "-l", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    events = eve(tmp_path)
    flows = [e for e in events if e["event_type"] == "flow"]
    stats = [e for e in events if e["event_type"] == "stats"]
    s = summary(proc.stderr)
    assert set(s) >= {"packets", "flows", "events", "time"}
    stats_pkts = stats[-1]["stats"]["decoder"]["pkts"]
    assert s["packets"].startswith(f"{stats_pkts:,} ")
    assert s["flows"].startswith(f"{len(flows):,} ")
    assert s["events"] == f"flow {len(flows):,}, stats {len(stats)}"
    m = re.fullmatch(r"([\d.]+) s  \(([\d,]+) packets/s\)", s["time"])
    assert m and float(m.group(1)) > 0 and int(m.group(2).replace(",", "")) > 0
    # no progress bar: stderr is a pipe here
    assert "\r" not in proc.stderr and "[#" not in proc.stderr


def test_several_files_and_gzip(tmp_path: Path) -> None:
    files = [FORMATS / "eth-le-usec.pcap.gz", FORMATS / "sll.pcap", FORMATS / "raw-ip.pcap"]
    proc = run(*map(str, files), "-l", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    total = sum(EXPECTED[f.name]["counts"]["frames"] for f in files)
    assert summary(proc.stderr)["packets"].startswith(f"{total} ")
    (stats,) = [e for e in eve(tmp_path) if e["event_type"] == "stats"]
    assert stats["stats"]["decoder"]["pkts"] == total
    # every flow packet is counted once, whether the files are replayed together (flows
    # that continue across files merge, as ping flows do here) or one by one
    def flow_packets(d: Path) -> int:
        return sum(e["flow"]["pkts_toserver"] + e["flow"]["pkts_toclient"] for e in eve(d)
                   if e["event_type"] == "flow")

    alone = 0
    for i, f in enumerate(files):
        d = tmp_path / f"one{i}"
        assert run(str(f), "-q", "-l", str(d)).returncode == 0
        alone += flow_packets(d)
    assert flow_packets(tmp_path) == alone > 0


def test_gzip_gives_same_flows_as_plain(tmp_path: Path) -> None:
    out = []
    for name in ("eth-le-usec.pcap", "eth-le-usec.pcap.gz"):
        d = tmp_path / name
        assert run(str(FORMATS / name), "-q", "-l", str(d)).returncode == 0
        out.append(sorted((e["src_ip"], e.get("src_port", -1), e["flow"]["pkts_toserver"],
                           e["flow"]["bytes_toclient"]) for e in eve(d)
                          if e["event_type"] == "flow"))
    assert out[0] == out[1] and out[0]


def test_stdin_from_tcpdump_pipe(tmp_path: Path) -> None:
    """tcpdump -r X -w - | netsensor replay -  gives what replaying X gives."""
    ref = tmp_path / "ref"
    assert run(str(SAMPLE), "-q", "-l", str(ref)).returncode == 0
    pipe = tmp_path / "pipe"
    tcpdump = subprocess.Popen(["tcpdump", "-r", str(SAMPLE), "-w", "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc = run("-", "-l", str(pipe), stdin=tcpdump.stdout)
    tcpdump.stdout.close()
    assert tcpdump.wait() == 0
    assert proc.returncode == 0, proc.stderr

    def key(d: Path) -> list:
        return sorted((e["src_ip"], e.get("src_port", -1), e["dest_ip"], e.get("dest_port", -1),
                       e["flow"]["pkts_toserver"], e["flow"]["pkts_toclient"],
                       e["flow"]["bytes_toserver"], e["flow"]["state"]) for e in eve(d)
                      if e["event_type"] == "flow")

    assert key(pipe) == key(ref) and len(key(ref)) > 1000


def test_stdin_gzip_via_cat(tmp_path: Path) -> None:
    cat = subprocess.Popen(["cat", str(FORMATS / "eth-le-usec.pcap.gz")],
                           stdout=subprocess.PIPE)
    proc = run("-", "-l", str(tmp_path), stdin=cat.stdout)
    cat.stdout.close()
    cat.wait()
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stderr)["packets"].startswith("42 ")


@pytest.mark.parametrize("name", ["truncated.pcap", "truncated-header.pcap",
                                  "oversized-record.pcap", "truncated.pcapng"])
def test_damaged_input_exit_1_with_events_before_damage(tmp_path: Path, name: str) -> None:
    damage = EXPECTED[name]["damage"]
    proc = run(str(FORMATS / name), "-l", str(tmp_path))
    assert proc.returncode == 1
    assert_no_traceback(proc)
    errors = [x for x in proc.stderr.splitlines() if x.startswith("netsensor: ")]
    assert errors == [x for x in errors if f"{FORMATS / name}: offset "
                      f"{damage['damage_offset']}: " in x] and len(errors) == 1
    events = eve(tmp_path)
    (stats,) = [e for e in events if e["event_type"] == "stats"]
    assert stats["stats"]["decoder"]["pkts"] == damage["good_packets"]
    assert any(e["event_type"] == "flow" for e in events)


def test_damage_in_the_first_file_does_not_stop_the_second(tmp_path: Path) -> None:
    proc = run(str(FORMATS / "truncated.pcap"), str(FORMATS / "sll.pcap"), "-l", str(tmp_path))
    assert proc.returncode == 1
    good = EXPECTED["truncated.pcap"]["damage"]["good_packets"] + 42
    (stats,) = [e for e in eve(tmp_path) if e["event_type"] == "stats"]
    assert stats["stats"]["decoder"]["pkts"] == good


@pytest.mark.parametrize("name,what", [("garbage.bin", "not a pcap or pcapng file"),
                                       ("bad-linktype.pcap", "unsupported link type 147"),
                                       ("no-such-file.pcap", "cannot open")])
def test_unreadable_input_exit_1_one_line(tmp_path: Path, name: str, what: str) -> None:
    proc = run(str(FORMATS / name), "-q", "-l", str(tmp_path))
    assert proc.returncode == 1
    assert_no_traceback(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and what in lines[0] and name in lines[0]


def test_empty_capture_is_fine(tmp_path: Path) -> None:
    proc = run(str(FORMATS / "empty.pcap"), "-l", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stderr)["packets"].startswith("0 ")


@pytest.mark.parametrize("text,key", [("flow:\n  max_flws: 3\n", "flow.max_flws"),
                                      ("flow:\n  max_flows: lots\n", "flow.max_flows"),
                                      ("windows: [\n", "line ")])
def test_bad_config_exit_2_one_line(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    proc = run(str(SAMPLE), "-c", str(cfg), "-l", str(tmp_path))
    assert proc.returncode == 2
    assert_no_traceback(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and str(cfg) in lines[0]
    assert not (tmp_path / "eve.json").exists()


def test_config_applies(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("outputs:\n  eve:\n    filename: out.json\n    types: [flow]\n")
    proc = run(str(FORMATS / "eth-le-usec.pcap"), "-q", "-c", str(cfg), "-l", str(tmp_path))
    assert proc.returncode == 0 and proc.stderr == ""
    lines = (tmp_path / "out.json").read_text().splitlines()
    assert lines and all(json.loads(x)["event_type"] == "flow" for x in lines)


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """With stderr on a terminal the bar is drawn (and erased); in a pipe it is not."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([NETSENSOR, "replay", str(SAMPLE), "-l", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=slave, timeout=120)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = out.decode()
    assert "\r[" in text and "packets" in text and "flows:" in text


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    proc = run(str(SAMPLE), "-q", "-l", str(tmp_path))
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""
