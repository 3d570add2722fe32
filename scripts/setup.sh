#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for netsensor: system packages and a virtualenv in .venv.
# Run as root (system packages). Idempotent. WITH_TEST=1 adds what the test suite needs.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(python3 python3-venv python3-pip)
if [ "${WITH_TEST:-0}" = 1 ]; then
  # real peers for the tests: namespaces + veth (iproute2), capture (tcpdump), traffic tools
  pkgs+=(iproute2 tcpdump redis-server rsyslog curl nmap hping3 logrotate systemd)
  # traffic lab's short CI run (tests/test_lab.py): nginx + dnsmasq in a namespace, dig, ping
  pkgs+=(nginx dnsmasq dnsutils iputils-ping ethtool)
fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "${WITH_TEST:-0}" = 1 ]; then
  # train: torch (a CPU build: pip takes torch==2.13.0 from this machine's disk), onnx,
  # matplotlib - the model tests export real ONNX models from PyTorch
  .venv/bin/pip install -q -e '.[dev,train]'
else
  .venv/bin/pip install -q -e .
fi
