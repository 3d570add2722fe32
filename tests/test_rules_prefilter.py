"""The multi-pattern prefilter (sensor/detect/rules/prefilter.py) against a plain search.

Prefilter.search must return exactly the (buffer, pattern) pairs where the buffer holds
the pattern case-insensitively: a missed pair would silently drop alerts, an extra one only
costs time but shows a broken index. Checked on the real payloads of pcaps/sample.pcap and
of the tests/e2e captures, with the fast patterns of the shipped and e2e rules and of the
ET Open rules (when ../shared holds them), plus hand-made edge cases: 1-4 byte patterns,
patterns at a buffer's very end, across a boundary between buffers, with NUL bytes.
"""

from __future__ import annotations

import glob
import tarfile
from pathlib import Path

import numpy as np

from sensor.capture.pcap import PcapSource
from sensor.detect.rules.loader import load_rules
from sensor.detect.rules.prefilter import Prefilter, fast_pattern

ROOT = Path(__file__).resolve().parent.parent
ET_TARBALL = ROOT.parent / "shared" / "rulesets" / "et-open-2024-04.tar.gz"
EDGE_PATTERNS = [b"\x00", b"a", b"\x00\x00", b"zq", b"xyz", b"\x00\x01\x02", b"end!",
                 b"abcd", b"\xff\xfe\x00\x00", b"get /", b"spans", b"tail\x00\x00"]
EDGE_BUFFERS = [b"", b"A", b"\x00", b"ZQ", b"xYz", b"END!", b"sp", b"ans", b"..spans",
                b"tail\x00\x00", b"\xff\xfe\x00\x00", b"x" * 5000 + b"ABCD", b"GET / HTTP/1.1"]


def _payloads(pcap: str, limit: int = 3000) -> list[bytes]:
    """Real transport payloads: the bytes after the first 54 of each frame (Ethernet +
    IPv4 + TCP without options, or past UDP/ICMP headers: any real bytes will do)."""
    out: list[bytes] = []
    for batch in PcapSource(pcap).batches():
        data = batch.data.tobytes()
        for off, cap in zip(batch.offset.tolist(), batch.caplen.tolist(), strict=True):
            if cap > 54:
                out.append(data[off + 54:off + cap])
            if len(out) >= limit:
                return out
    return out


def _patterns(tmp_path: Path) -> list[bytes]:
    files = [str(ROOT / "rules" / "netsensor.rules")]
    files += sorted(glob.glob(str(ROOT / "tests" / "e2e" / "*" / "test.rules")))
    if ET_TARBALL.is_file():
        with tarfile.open(ET_TARBALL) as tar:
            tar.extractall(tmp_path, filter="data")
        files += sorted(glob.glob(str(tmp_path / "rules" / "*.rules")))
    pats = {fast_pattern(r.payload) for r in load_rules(files).rules if r.payload}
    return sorted(p for p in pats if p) + EDGE_PATTERNS


def _search(pf: Prefilter, bufs: list[bytes]) -> set[tuple[int, int]]:
    lens = np.asarray([len(b) for b in bufs], dtype=np.int64)
    starts = np.cumsum(lens) - lens
    units, pids = pf.search(b"".join(bufs), starts, starts + lens)
    got = list(zip(units.tolist(), pids.tolist(), strict=True))
    assert len(got) == len(set(got)), "pairs must be unique"
    return set(got)


def test_prefilter_finds_exactly_the_buffers_holding_each_pattern(tmp_path: Path) -> None:
    patterns = _patterns(tmp_path)
    pf = Prefilter(patterns)
    bufs = EDGE_BUFFERS + _payloads(str(ROOT / "pcaps" / "sample.pcap"))
    for pcap in sorted(glob.glob(str(ROOT / "tests" / "e2e" / "*" / "input.pcap"))):
        bufs += _payloads(pcap, limit=200)
    want = {(u, p) for u, b in enumerate(bufs) for p, pat in enumerate(patterns)
            if pat in b.lower()}
    got = _search(pf, bufs)
    assert got == want, (f"missed {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}")
    assert len(want) > 100  # the real payloads do hold real patterns
    # the edge cases by name: a match at the very end, none across two buffers
    found = {(bufs[u], patterns[p]) for u, p in got}
    assert (b"END!", b"end!") in found and (b"tail\x00\x00", b"tail\x00\x00") in found
    assert not any(pat == b"spans" and buf in (b"sp", b"ans") for buf, pat in found)
    assert (b"x" * 5000 + b"ABCD", b"abcd") in found


def test_prefilter_with_only_short_patterns_and_no_buffers() -> None:
    pf = Prefilter([b"\x11", b"ab"])
    assert _search(pf, [b"xxAB", b"\x11", b"b"]) == {(0, 1), (1, 0)}
    assert _search(pf, [b""]) == set()
    assert _search(Prefilter([]), [b"abc"]) == set()
