#!/usr/bin/env bash
# Produces bench/data/lab-mixed.pcap (git-ignored): >= 1.1M packets of real mixed
# traffic from the traffic lab -- 10 benign clients (web with keep-alive, DNS,
# interactive ssh, bulk downloads of a 20 MB file, iperf3 bursts, ping) plus
# every attack kind (nmap scans, rate-limited hping3 floods, slowloris/slow read,
# hydra, DNS tunnelling, exfil upload). Full frames, Ethernet.
# Usage (root): bash pcaps/lab/make-bench-pcap.sh [SEED] [DURATION_S]
#
# Takes minutes, needs root and differs on every run; it writes bench/data/lab-mixed.pcap
# (about 1.9 GB, mostly bulk frames). The published replay figures use the deterministic
# bench/data/mixed.pcap made from the committed captures by bench/make_bench_pcap.py
# (docs/performance.md); replay this one with bench/replay_bench.py bench/data/lab-mixed.pcap.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seed=${1:-1100}
duration=${2:-240}
min_packets=1100000
mkdir -p "$root/bench/data"
python3 "$root/pcaps/lab/generate.py" --seed "$seed" --duration "$duration" \
  --out "$root/bench/data/lab-mixed" --attacks all --benign-clients 10 --profile bench
count=$(python3 - "$root/bench/data/lab-mixed.pcap" <<'PY'
import struct, sys
n = 0
with open(sys.argv[1], "rb") as f:
    f.read(24)
    while True:
        h = f.read(16)
        if len(h) < 16:
            break
        f.seek(struct.unpack("<IIII", h)[2], 1)
        n += 1
print(n)
PY
)
size=$(stat -c %s "$root/bench/data/lab-mixed.pcap")
echo "bench/data/lab-mixed.pcap: $count packets, $size bytes (labels: bench/data/lab-mixed.labels.csv)"
if [ "$count" -lt "$min_packets" ]; then
  echo "fewer than $min_packets packets: rerun with a longer duration, e.g. $0 $seed $((duration * 3 / 2))" >&2
  exit 1
fi
