"""sensor.capture.pcap against the real captures in pcaps/formats/ and their expected.json.

The captures were made by tcpdump/dumpcap/mergecap (pcaps/formats/make.sh); expected.json
holds facts from an independent parser cross-checked with capinfos, so these tests never
hard-code counts or timestamps.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import dpkt
import numpy as np
import pytest

import sensor.capture.pcap as pcap_mod
from sensor.capture import CaptureError
from sensor.capture.pcap import PcapSource

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ROOT / "pcaps" / "formats"
EXPECTED = json.loads((FORMATS / "expected.json").read_text())["files"]
GOOD = sorted(name for name, facts in EXPECTED.items() if "damage" not in facts)
DAMAGED = sorted(name for name, facts in EXPECTED.items() if "damage" in facts)


def read_all(path: str | Path, batch_size: int = 65536) -> tuple[list[bytes], dict, PcapSource]:
    """Every frame and the concatenated per-frame arrays of one source."""
    src = PcapSource(str(path), batch_size=batch_size)
    frames: list[bytes] = []
    cols: dict[str, list] = {"ts_us": [], "caplen": [], "wirelen": [], "linktype": [],
                             "iface": [], "cnt": []}
    for b in src.batches():
        assert len(b) <= batch_size
        frames += [b.frame(i) for i in range(len(b))]
        for name in ("ts_us", "caplen", "wirelen", "linktype"):
            cols[name] += getattr(b, name).tolist()
        cols["iface"] += [0] * len(b) if b.iface is None else b.iface.tolist()
        cols["cnt"] += list(range(b.first_cnt, b.first_cnt + len(b)))
    return frames, cols, src


def test_every_capture_is_described() -> None:
    on_disk = {p.name for p in FORMATS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz",
                                                                  ".bin")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", GOOD)
def test_good_capture_matches_expected(name: str) -> None:
    facts = EXPECTED[name]
    frames, cols, src = read_all(FORMATS / name)
    assert src.error is None
    assert len(frames) == facts["counts"]["frames"]
    assert src.packets == len(frames)
    assert cols["ts_us"][0] == facts["first_ts_us"]
    assert cols["ts_us"][-1] == facts["last_ts_us"]
    assert sorted(set(cols["linktype"])) == sorted(facts["linktypes"])
    assert cols["cnt"] == list(range(1, len(frames) + 1))
    assert all(len(f) == c for f, c in zip(frames, cols["caplen"], strict=True))
    assert all(w >= c for w, c in zip(cols["wirelen"], cols["caplen"], strict=True))


@pytest.mark.parametrize("name", [n for n in GOOD if n.endswith(".pcap")])
def test_frames_equal_dpkt_reader(name: str) -> None:
    """Frame bytes and times agree with dpkt's independent pcap reader (both byte orders,
    micro and nanosecond files)."""
    frames, cols, _ = read_all(FORMATS / name)
    with open(FORMATS / name, "rb") as f:
        theirs = list(dpkt.pcap.Reader(f))
    assert [bytes(buf) for _, buf in theirs] == frames
    for (ts, _), ours in zip(theirs, cols["ts_us"], strict=True):
        assert abs(float(ts) * 1e6 - ours) < 2


def test_nanosecond_timestamps_are_floored_to_microseconds() -> None:
    for name in ("eth-nsec.pcap", "eth-be-nsec.pcap", "nsec.pcapng", "single.pcapng"):
        facts = EXPECTED[name]
        _, cols, _ = read_all(FORMATS / name)
        assert cols["ts_us"][0] == facts["first_ts_ns"] // 1000
        assert cols["ts_us"][-1] == facts["last_ts_ns"] // 1000


def test_byte_orders_give_identical_packets() -> None:
    for le, be in (("eth-le-usec.pcap", "eth-be-usec.pcap"), ("eth-nsec.pcap",
                                                             "eth-be-nsec.pcap")):
        fa, ca, _ = read_all(FORMATS / le)
        fb, cb, _ = read_all(FORMATS / be)
        assert EXPECTED[le]["byte_order"] == "little" and EXPECTED[be]["byte_order"] == "big"
        assert fa == fb and ca == cb


def test_pcapng_with_three_interfaces() -> None:
    """multi-if.pcapng = mergecap of eth + sll2 + raw: every frame keeps its interface's
    link type, and the frames equal those of the three source captures."""
    frames, cols, _ = read_all(FORMATS / "multi-if.pcapng")
    facts = EXPECTED["multi-if.pcapng"]
    by_if = {i: iface["linktype"] for i, iface in enumerate(facts["interfaces"])}
    assert all(by_if[i] == lt for i, lt in zip(cols["iface"], cols["linktype"], strict=True))
    parts = {}
    for name, lt in (("eth-le-usec.pcap", 1), ("sll2.pcap", 276), ("raw-ip.pcap", 101)):
        f, c, _ = read_all(FORMATS / name)
        parts[lt] = (f, c["ts_us"])
    for lt, (f, ts) in parts.items():
        sel = [i for i, x in enumerate(cols["linktype"]) if x == lt]
        assert [frames[i] for i in sel] == f
        assert [cols["ts_us"][i] for i in sel] == ts


def test_gzip_equals_plain() -> None:
    assert read_all(FORMATS / "eth-le-usec.pcap.gz")[:2] == read_all(
        FORMATS / "eth-le-usec.pcap")[:2]


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_capture_names_file_and_offset(name: str) -> None:
    facts = EXPECTED[name]
    damage = facts["damage"]
    frames, cols, src = read_all(FORMATS / name, batch_size=5)
    # every packet before the damage is still delivered
    assert len(frames) == damage["good_packets"]
    if frames:
        assert cols["ts_us"][0] == facts["first_ts_us"]
        assert cols["ts_us"][-1] == facts["last_ts_us"]
    if "error" in facts or name == "garbage.bin":
        assert isinstance(src.error, CaptureError)
        assert src.error.offset == damage["damage_offset"]
        msg = str(src.error)
        assert msg.startswith(f"{FORMATS / name}: offset {damage['damage_offset']}: ")
        assert "\n" not in msg
    else:  # structurally valid files: bad link type, zero caplen, header only
        assert src.error is None


def test_zero_length_record_is_delivered_empty() -> None:
    damage = EXPECTED["zero-len-record.pcap"]["damage"]
    frames, cols, _ = read_all(FORMATS / "zero-len-record.pcap")
    i = damage["record_index"]
    assert frames[i] == b"" and cols["caplen"][i] == 0
    assert cols["wirelen"][i] == damage["zero_caplen_origlen"]


def test_damaged_gzip_stream(tmp_path: Path) -> None:
    """A gzip file cut short: the frames decompressed before the cut are delivered and the
    error names the decompressed offset."""
    data = (FORMATS / "eth-le-usec.pcap.gz").read_bytes()
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    frames, _, src = read_all(cut)
    plain, _, _ = read_all(FORMATS / "eth-le-usec.pcap")
    assert src.error is not None and str(src.error).startswith(f"{cut}: offset ")
    assert 0 < len(frames) < len(plain)
    assert frames == plain[: len(frames)]


def test_missing_file_is_an_error_not_an_exception(tmp_path: Path) -> None:
    src = PcapSource(str(tmp_path / "nope.pcap"))
    assert list(src.batches()) == []
    assert "nope.pcap" in str(src.error) and "cannot open" in str(src.error)


def test_empty_input(tmp_path: Path) -> None:
    p = tmp_path / "zero.pcap"
    p.write_bytes(b"")
    src = PcapSource(str(p))
    assert list(src.batches()) == []
    assert src.error is not None and src.error.offset == 0


@pytest.mark.parametrize("name", ["eth-le-usec.pcap", "multi-if.pcapng", "eth-le-usec.pcap.gz",
                                  "truncated.pcapng", "oversized-record.pcap"])
def test_batch_and_chunk_size_independence(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 1 or 7 frames, and read chunks smaller than one record (records span
    chunk boundaries), give exactly what one big read gives."""
    ref_frames, ref_cols, ref_src = read_all(FORMATS / name)
    for chunk, batch in ((100, 1), (333, 7), (1000, 65536)):
        monkeypatch.setattr(pcap_mod, "CHUNK", chunk)
        frames, cols, src = read_all(FORMATS / name, batch_size=batch)
        assert frames == ref_frames
        assert cols == ref_cols
        assert str(src.error) == str(ref_src.error)


def test_first_cnt_continues_across_files() -> None:
    a = PcapSource(str(FORMATS / "eth-le-usec.pcap"))
    n = sum(len(b) for b in a.batches())
    b = PcapSource(str(FORMATS / "sll.pcap"), first_cnt=a.next_cnt)
    first = next(iter(b.batches()))
    assert first.first_cnt == n + 1


def _via_stdin(path: Path, tool_cmd: list[str] | None = None) -> dict:
    """Run PcapSource('-') in a child process fed by a real pipe."""
    code = (
        "import json, sys\n"
        "from sensor.capture.pcap import PcapSource\n"
        "s = PcapSource('-', batch_size=4)\n"
        "fr = [b.frame(i).hex() for b in s.batches() for i in range(len(b))]\n"
        "print(json.dumps({'frames': fr, 'error': str(s.error) if s.error else None}))\n"
    )
    if tool_cmd is None:
        with open(path, "rb") as f:
            out = subprocess.run([sys.executable, "-c", code], stdin=f, capture_output=True,
                                 check=True, cwd=ROOT)
    else:
        feeder = subprocess.Popen(tool_cmd, stdout=subprocess.PIPE)
        out = subprocess.run([sys.executable, "-c", code], stdin=feeder.stdout,
                             capture_output=True, check=True, cwd=ROOT)
        feeder.stdout.close()
        feeder.wait()
    return json.loads(out.stdout)


def test_stdin_pipe_plain_gzip_and_pcapng() -> None:
    for name in ("eth-le-usec.pcap", "eth-le-usec.pcap.gz", "multi-if.pcapng"):
        got = _via_stdin(FORMATS / name, ["cat", str(FORMATS / name)])
        ref, _, _ = read_all(FORMATS / name)
        assert got["error"] is None
        assert [bytes.fromhex(h) for h in got["frames"]] == ref


def test_stdin_truncated_names_stdin() -> None:
    got = _via_stdin(FORMATS / "truncated.pcap")
    assert got["error"].startswith("<stdin>: offset 2411: ")
    assert len(got["frames"]) == EXPECTED["truncated.pcap"]["damage"]["good_packets"]


def test_frames_outlive_nothing_shared_between_batches() -> None:
    """Frames of an earlier batch keep their bytes after later batches are read (the
    pipeline holds batches across stages)."""
    src = PcapSource(str(FORMATS / "eth-le-usec.pcap"), batch_size=4)
    batches = list(src.batches())
    ref, _, _ = read_all(FORMATS / "eth-le-usec.pcap")
    assert [b.frame(i) for b in batches for i in range(len(b))] == ref
    # the bytes after the last frame of a batch are readable (vectorised overrun)
    last = batches[-1]
    end = int(last.offset[-1]) + int(last.caplen[-1])
    assert len(last.data) >= end + pcap_mod.BATCH_PAD
    assert np.all(last.data[end : end + pcap_mod.BATCH_PAD] >= 0)


def test_gzip_module_roundtrip(tmp_path: Path) -> None:
    """A gzip made here by Python (not gzip -9 -n) reads the same as the plain file."""
    p = tmp_path / "x.pcapng.gz"
    p.write_bytes(gzip.compress((FORMATS / "multi-if.pcapng").read_bytes()))
    assert read_all(p)[:2] == read_all(FORMATS / "multi-if.pcapng")[:2]


def _pcapng(endian: str, blocks: list[tuple[int, bytes]]) -> bytes:
    """Blocks with their type/length framing, in byte order `endian` ('<' or '>')."""
    import struct

    out = b""
    for btype, body in blocks:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        out += struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)
    return out


def _section(endian: str, ifaces: list[tuple[int, int | None, int]],
             packets: list[tuple[int, int, bytes]], simple: list[bytes] = ()) -> bytes:
    """One pcapng section: interfaces (linktype, if_tsresol or None, if_tsoffset) and
    enhanced packets (interface, raw timestamp, frame), then simple packets."""
    import struct

    e = endian
    blocks = [(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype, resol, offset in ifaces:
        opts = b""
        if resol is not None:
            opts += struct.pack(e + "HH", 9, 1) + bytes([resol]) + b"\0\0\0"
        if offset:
            opts += struct.pack(e + "HHq", 14, 8, offset)
        opts += struct.pack(e + "HH", 0, 0)
        blocks.append((1, struct.pack(e + "HHI", linktype, 0, 65535) + opts))
    for ifid, ts, frame in packets:
        blocks.append((6, struct.pack(e + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(frame),
                                      len(frame) + 4) + frame))
    for frame in simple:
        blocks.append((3, struct.pack(e + "I", len(frame)) + frame))
    return _pcapng(e, blocks)


def test_pcapng_sections_byte_orders_resolutions_and_block_kinds(tmp_path: Path) -> None:
    """Hand-framed pcapng around real frames: a big-endian section after a little-endian
    one, if_tsresol in binary (2^-10 s) and decimal (ms) units, if_tsoffset, and Simple
    Packet Blocks (no timestamp)."""
    frames, _, _ = read_all(FORMATS / "eth-le-usec.pcap")
    raw, _, _ = read_all(FORMATS / "raw-ip.pcap")
    le = _section("<", [(1, None, 0), (101, 0x80 | 10, 0)],
                  [(0, 1_700_000_000_123_456, frames[0]), (1, 1_700_000_000 * 1024 + 512, raw[0])])
    be = _section(">", [(1, 3, 100)], [(0, 1_700_000_000_250, frames[1])],
                  simple=[frames[2]])
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(le + be)
    got, cols, src = read_all(path)
    assert src.error is None
    assert got == [frames[0], raw[0], frames[1], frames[2]]
    assert cols["linktype"] == [1, 101, 1, 1]
    assert cols["ts_us"][:3] == [1_700_000_000_123_456, 1_700_000_000_500_000,
                                 1_700_000_100_250_000]
    assert cols["iface"] == [0, 1, 2, 2]  # numbered over all sections of the file
    # the same file through a gzip stream and in 1-frame batches
    gz = tmp_path / "mixed.pcapng.gz"
    gz.write_bytes(gzip.compress(le + be))
    assert read_all(gz, batch_size=1)[:2] == (got, cols)


def test_pcapng_block_claiming_gigabytes_is_refused(tmp_path: Path) -> None:
    """A block length of ~4 GB fails at once at its offset (no attempt to buffer it)."""
    import struct

    section = _section("<", [(1, None, 0)], [])
    path = tmp_path / "huge-block.pcapng"
    path.write_bytes(section + struct.pack("<II", 0x99, 0xFFFFFFF0) + b"x" * 64)
    frames, _, src = read_all(path)
    assert frames == []
    assert src.error is not None and src.error.offset == len(section)
    assert "over the limit" in src.error.message
