"""Loader: files, multi-line rules, comments, duplicate sids, ET Open and conformance sets."""

from __future__ import annotations

import collections
import glob
import re
import tarfile
import time
from pathlib import Path

import pytest

from sensor.detect.rules import load_rules
from sensor.detect.rules.check import check_rules_main

ET_TARBALL = Path("/work/shared/rulesets/et-open-2024-04.tar.gz")
CONFORMANCE = Path("/work/shared/conformance/suricata-verify")
APP_LAYER_KW = re.compile(
    r"^(http|dns|tls|ssl|file|ja3|ja3s|smb|dce|krb5|snmp|sip|ssh|ftp|smtp|mqtt|rfb|"
    r"quic|dhcp|modbus|dnp3|enip|nfs|ike|http2|app-layer|urilen|uricontent)[._-]?")
LINE_RE = re.compile(r"^[^:]+:\d+: .+ in (sid \d+|rule)$")


def write(tmp_path: Path, text: str, name: str = "t.rules") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_multiline_comments_and_errors(tmp_path: Path) -> None:
    p = write(tmp_path, (
        "# a comment\n"
        '#alert tcp any any -> any any (msg:"disabled"; sid:9;)\n'
        "\n"
        'alert tcp any any -> any any (msg:"multi"; \\\n'
        '    content:"abc"; \\\n'
        "    sid:1; rev:2;)\n"
        'alert tcp any any -> any any (msg:"bad"; content:"a"; http.uri; sid:2010935;)\n'
        'alert tcp any any -> any any (msg:"dup"; sid:1;)\n'
        'alert tcp any any -> any any (msg:"other gid"; gid:2; sid:1;)\n'
        'alert tcp any any -> any any (msg:"no sid";)\n'
    ))
    rs = load_rules([p])
    assert [r.sid for r in rs.rules] == [1, 1]
    r = rs.rules[0]
    assert (r.line, r.rev, r.payload[0].pattern, r.msg) == (4, 2, b"abc", "multi")
    msgs = [str(e) for e in rs.errors]
    assert msgs[0] == f"{p}:7: unsupported keyword 'http.uri' in sid 2010935"
    assert msgs[1].startswith(f"{p}:8: duplicate sid (gid 1), first at {p}:4")
    assert msgs[2] == f"{p}:10: missing sid in rule"
    assert (rs.loaded, rs.rejected) == (2, 3)


def test_unreadable_file_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "alert tcp any any -> any any (sid:1;)\n", "good.rules")
    bad = write(tmp_path, "alert tcp any any -> any any (sid:2; ttl:300;)\n", "bad.rules")
    assert check_rules_main([str(good)]) == 0
    assert "1 rules loaded, 0 rejected" in capsys.readouterr().err
    assert check_rules_main([str(good), str(bad)]) == 1
    out = capsys.readouterr()
    assert f"{bad}:1: invalid ttl value '300' in sid 2" in out.out
    assert "1 rules loaded, 1 rejected" in out.err
    assert check_rules_main([str(tmp_path / "missing.rules")]) == 2
    err = capsys.readouterr().err
    assert "cannot read rule file" in err and "Traceback" not in err


def test_conformance_rules_all_load() -> None:
    files = sorted(glob.glob(str(CONFORMANCE / "*" / "test.rules")))
    if not files:
        pytest.skip("conformance corpus not present")
    total = 0
    for f in files:
        rs = load_rules([f])
        assert rs.errors == [], [str(e) for e in rs.errors]
        total += rs.loaded
    assert total >= 80


def test_et_open_ruleset(tmp_path: Path) -> None:
    if not ET_TARBALL.exists():
        pytest.skip("ET Open ruleset not present")
    with tarfile.open(ET_TARBALL) as tf:
        members = [m for m in tf.getmembers() if m.name.endswith(".rules") and m.isfile()]
        tf.extractall(tmp_path, members=members, filter="data")
    files = sorted(str(p) for p in tmp_path.rglob("*.rules"))
    active = 0
    for f in files:
        for line in Path(f).read_text(errors="replace").splitlines():
            if re.match(r"^(alert|drop|pass|reject)\s", line):
                active += 1
    t0 = time.perf_counter()
    rs = load_rules(files)
    elapsed = time.perf_counter() - t0
    assert rs.loaded + rs.rejected == active
    assert rs.loaded > 1000
    kw = collections.Counter()
    for e in rs.errors:
        s = str(e)
        assert LINE_RE.match(s), s
        assert e.file in files and e.line > 0
        if e.message.startswith("unsupported keyword"):
            kw[e.keyword] += 1
    # every rejected tcp/udp/ip/icmp rule using an app-layer keyword says so by name
    lines = {f: Path(f).read_text(errors="replace").splitlines() for f in files}
    for e in rs.errors:
        text = lines[e.file][e.line - 1]
        proto = text.split()[1].lower()
        if proto not in ("tcp", "udp", "ip", "icmp"):
            assert e.message.startswith("unsupported protocol"), str(e)
            continue
        opts = re.findall(r"(?:\(|;)\s*([A-Za-z0-9_.\-]+)\s*(?=[:;])", text)
        if any(APP_LAYER_KW.match(o) for o in opts) and "duplicate sid" not in e.message:
            assert e.message.startswith("unsupported keyword"), str(e)
    print(f"\nET Open: {active} active rules, {rs.loaded} loaded, {rs.rejected} rejected "
          f"in {elapsed:.2f}s; top unsupported keywords: {kw.most_common(8)}")
