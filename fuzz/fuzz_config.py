"""Fuzz target: the YAML config loader (sensor.config.load_config).

Input: the bytes of a config file. ConfigError (one line naming the key) is the expected
outcome for bad input; any other exception is a finding.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
with atheris.instrument_imports(include=["sensor"]):
    from sensor.config import ConfigError, load_config

# an anonymous in-memory file: load_config reads it by path, nothing is left behind
FD = os.memfd_create("fuzz-config")
PATH = f"/proc/self/fd/{FD}"
os.fchmod(FD, 0o600)  # memfd starts 0777: the loader refuses world-writable files


def test_one_input(data: bytes) -> None:
    os.ftruncate(FD, 0)
    os.pwrite(FD, data, 0)
    try:
        load_config(PATH)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip(), "config error is not one line"


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
