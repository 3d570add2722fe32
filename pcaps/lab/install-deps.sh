#!/usr/bin/env bash
# Installs (Debian 12, as root) the real tools the traffic lab drives inside its
# network namespaces. The services are started by generate.py with their own
# configs in a temp dir, so the packaged system services are stopped/disabled.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(nginx dnsmasq openssh-server openssh-client iperf3 curl dnsutils
      iputils-ping tcpdump nmap hping3 slowhttptest hydra sshpass
      netcat-openbsd iproute2 ethtool)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  # iperf3 asks whether to start a daemon
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# the lab starts its own instances; packaged daemons would only hold ports/pids
for svc in nginx dnsmasq ssh iperf3; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
  service "$svc" stop >/dev/null 2>&1 || true
done
echo "traffic-lab dependencies installed: ${pkgs[*]}"
