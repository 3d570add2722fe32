"""The shipped systemd units and logrotate snippet, checked with the real tools offline.

`systemd-analyze verify` exits 0 even for misspelled keys, so its stderr must be empty.
It also insists that ExecStart's program exists, so the units are checked from a copy
whose /opt/netsensor/bin/netsensor points at a stub with the same command line.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = ["netsensor.service", "netsensor@.service"]
EXE = "/opt/netsensor/bin/netsensor"

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(analyze is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")


def _copy(tmp_path: Path, unit: str) -> Path:
    stub = tmp_path / "netsensor"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (REPO / "systemd" / unit).read_text()
    assert EXE in text
    name = unit.replace("@.", "@eth0.")
    out = tmp_path / name
    out.write_text(text.replace(EXE, str(stub)))
    return out


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_verify_prints_nothing(tmp_path: Path, unit: str) -> None:
    path = _copy(tmp_path, unit)
    res = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.stderr == "", res.stderr
    assert res.returncode == 0


@needs_analyze
def test_verify_catches_a_typo(tmp_path: Path) -> None:
    path = _copy(tmp_path, "netsensor.service")
    path.write_text(path.read_text().replace("ProtectHome=", "ProtectHomme="))
    res = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert "ProtectHomme" in res.stderr


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_at_most_2_5(tmp_path: Path, unit: str) -> None:
    path = _copy(tmp_path, unit)
    res = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(path)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 2.5, res.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_unit_contract(unit: str) -> None:
    text = (REPO / "systemd" / unit).read_text()
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    assert keys["Type"] == ["notify"]
    assert keys["ExecReload"] == ["/bin/kill -USR2 $MAINPID"]
    assert set(keys["CapabilityBoundingSet"][0].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(keys["AmbientCapabilities"][0].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(keys["RestrictAddressFamilies"][0].split()) == {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_PACKET", "AF_NETLINK"}
    for k in ("DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "LockPersonality",
              "MemoryDenyWriteExecute"):
        assert keys[k] == ["yes"], k
    assert keys["ProtectSystem"] == ["strict"]
    for k in ("StateDirectory", "LogsDirectory", "RuntimeDirectory", "MemoryMax",
              "WatchdogSec"):
        assert k in keys, k
    # the daemon drops its ambient capabilities with capset once capturing, before it
    # starts threads: capset must stay allowed, and BLAS must not start a thread pool
    assert keys["SystemCallFilter"][-1] == "capset"
    assert "OPENBLAS_NUM_THREADS=1" in " ".join(keys["Environment"]).split()


@pytest.mark.parametrize("unit", UNITS)
def test_exec_lines_are_what_the_cli_accepts(unit: str) -> None:
    """ExecStart must parse with the real `netsensor` parser: a renamed option would
    otherwise only show when systemd starts the unit."""
    from sensor.cli import build_parser
    from sensor.daemon import cmd_run

    text = (REPO / "systemd" / unit).read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", "eth0")
                       .replace("${NETSENSOR_INTERFACE}", "eth0"))
    assert argv[0] == EXE
    args = build_parser().parse_args(argv[1:])
    assert args.fn is cmd_run and args.interface == "eth0"
    assert args.config == "/etc/netsensor/netsensor.yaml"


def test_logrotate_snippet(tmp_path: Path) -> None:
    text = (REPO / "systemd" / "netsensor.logrotate").read_text()
    assert "copytruncate" not in text.replace("never copytruncate", "")
    assert re.search(r"^\s*create\b", text, re.M)
    assert "--signal=HUP" in text and "postrotate" in text
    exe = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
    if exe is None:
        pytest.skip("logrotate not installed")
    res = subprocess.run([exe, "-d", "-s", str(tmp_path / "state"),
                          str(REPO / "systemd" / "netsensor.logrotate")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "error" not in res.stderr.lower(), res.stderr


MDWE_CHECK = """
import ctypes, mmap, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping still allowed")
except OSError:
    pass
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
assert s.run(None, {"x": np.zeros((2, 3), np.float32)})[0][0, 0] == 0.5
a = np.random.rand(300, 300)
assert (a @ a).shape == (300, 300)
import sensor.daemon, sensor.worker  # noqa: E401
"""


def test_numpy_and_onnxruntime_run_under_memory_deny_write_execute() -> None:
    """PR_SET_MDWE is the kernel's form of MemoryDenyWriteExecute=yes (Linux 6.3+)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    res = subprocess.run([sys.executable, "-c", MDWE_CHECK], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    if res.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (needs Linux 6.3)")
    assert res.returncode == 0, res.stderr


def test_aggregate_sums_traffic_but_not_the_rule_set() -> None:
    from sensor.daemon import aggregate

    w = {"decoder.pkts": 10, "detect.engines.rules_loaded": 19,
         "detect.engines.rules_failed": 2, "capture.kernel_packets": 10}
    out = aggregate({0: dict(w), 1: dict(w, **{"decoder.pkts": 5})})
    assert out["decoder.pkts"] == 15
    assert out["detect.engines.rules_loaded"] == 19
    assert out["detect.engines.rules_failed"] == 2
