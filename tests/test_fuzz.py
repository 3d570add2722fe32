"""The atheris fuzz targets: every past finding stays fixed, and a short bounded run is clean.

Each finding of a fuzz run (fuzz/run.sh) is kept in tests/data/fuzz-regressions/<target>/.
The first tests feed those inputs to the targets (atheris runs each file once) and to the
command line, which must answer with one line naming the file, never a traceback. The last
runs every target from its seed corpus for a few seconds as a child process: an uncaught
exception, a hang (-timeout) or runaway memory (-rss_limit_mb) fails it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REGRESSIONS = REPO / "tests" / "data" / "fuzz-regressions"
TARGETS = ("pcap", "decode", "rules", "config")
SECONDS_PER_TARGET = 4  # 4 targets: about 30 s with start-up, inside the 40 s budget
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _inputs(target: str) -> list[Path]:
    d = REGRESSIONS / target
    return sorted(d.iterdir()) if d.is_dir() else []


@pytest.mark.parametrize("target", [t for t in TARGETS if _inputs(t)])
def test_regression_inputs_pass_their_target(target: str) -> None:
    res = subprocess.run([sys.executable, str(REPO / "fuzz" / f"fuzz_{target}.py"),
                          *map(str, _inputs(target))], capture_output=True, text=True,
                         timeout=120, env=ENV, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("Executed ") == len(_inputs(target))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensor.cli", *args], capture_output=True,
                          text=True, timeout=60, env=ENV, cwd=str(REPO))


@pytest.mark.parametrize("path", _inputs("pcap"), ids=lambda p: p.name)
def test_damaged_capture_is_one_line_error(path: Path, tmp_path: Path) -> None:
    res = _cli("replay", "-q", "-l", str(tmp_path), str(path))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"netsensor: {path}: offset "), res.stderr


@pytest.mark.parametrize("path", _inputs("config"), ids=lambda p: p.name)
def test_bad_config_is_one_line_error(path: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(path.read_bytes())
    cfg.chmod(0o600)
    res = _cli("replay", "-q", "-c", str(cfg), "-l", str(tmp_path),
               str(REPO / "pcaps" / "formats" / "empty.pcap"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"netsensor: {cfg}: "), res.stderr


def test_bounded_fuzz_run_of_every_target(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "fuzz"))
    from common import build_corpus

    failures = []
    for target in TARGETS:
        corpus = build_corpus(target, tmp_path / "corpus")
        res = subprocess.run(
            [sys.executable, str(REPO / "fuzz" / f"fuzz_{target}.py"), str(corpus),
             f"-max_total_time={SECONDS_PER_TARGET}", "-timeout=10", "-rss_limit_mb=2048",
             "-max_len=65536", f"-artifact_prefix={tmp_path}/{target}-"],
            capture_output=True, text=True, timeout=SECONDS_PER_TARGET + 60, env=ENV,
            cwd=str(REPO))
        if res.returncode != 0:
            failures.append(f"{target}: exit {res.returncode}\n{res.stderr[-2500:]}")
        else:
            assert "Done " in res.stderr, res.stderr[-2000:]  # it really ran inputs
    assert not failures, "\n\n".join(failures)
