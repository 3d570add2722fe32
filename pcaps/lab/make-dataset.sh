#!/usr/bin/env bash
# Regenerates the traffic-lab dataset: train / validation / test splits, each split
# from its OWN generator run with its OWN seed (never two splits from one run), plus
# benign-only runs for false-alarm measurement.
#
#   sudo bash pcaps/lab/make-dataset.sh small    # the committed set -> pcaps/lab/data/
#   sudo bash pcaps/lab/make-dataset.sh large    # a bigger set -> pcaps/lab/out/large/ (git-ignored)
#
# JOBS=N runs N generator runs at once (default 3; every run has its own namespaces).
# ONLY=REGEX regenerates only the runs whose split matches (e.g. ONLY=benign); the
# manifest is still rewritten for every capture in the output dir.
# small: --profile small, whole frames (a frame cut by a snaplen is an invalid packet to
#        Suricata and netsensor: ipv4.trunc_pkt), one benign client beside the attacks,
#        pcaps gzip'ed (-n: the bytes depend only on the capture), then MANIFEST.md is
#        rewritten by manifest.py.
# large: the same mix, longer runs, 4 clients, plain .pcap.
# A rerun gives new captures (real tools, real timing); the seeds fix mix, attack
# parameters and schedule. Needs root and the tools of install-deps.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:-small}
jobs=${JOBS:-3}

# split  seed  attacks  duration  clients   (one line = one generator run)
small_runs="
train        4201 all  200 1
val          4301 all  200 1
test         4401 all  200 1
benign-train 5201 none 90  2
benign-val   5301 none 90  2
benign-test  5401 none 90  2
"
large_runs="
train        4211 all  480 4
train        4212 all  480 4
train        4213 all  480 4
train        4214 all  480 4
train        4215 all  480 4
train        4216 all  480 4
val          4311 all  480 4
val          4312 all  480 4
test         4411 all  480 4
test         4412 all  480 4
benign-train 5211 none 600 6
benign-train 5212 none 600 6
benign-val   5311 none 600 6
benign-test  5411 none 600 6
"
case "$mode" in
  small) runs=$small_runs; out="$root/pcaps/lab/data"; extra=(--profile small) ;;
  large) runs=$large_runs; out="$root/pcaps/lab/out/large"; extra=(--profile small) ;;
  *) echo "usage: $0 small|large" >&2; exit 2 ;;
esac
stage_rel="pcaps/lab/out/stage-$mode"  # relative to the repo root, as in the manifest
stage="$root/$stage_rel"
mkdir -p "$out" "$stage"

one_run() {  # split seed attacks duration clients
  local name="$1-s$2"
  local cmd=(python3 pcaps/lab/generate.py --seed "$2" --duration "$4" --out "$stage_rel/$name"
             --attacks "$3" --benign-clients "$5" "${extra[@]}")
  echo "${cmd[*]}" > "$stage/$name.cmd"
  (cd "$root" && nice -n 10 "${cmd[@]}") > "$stage/$name.log" 2>&1 || {
    echo "$name: generator failed, see $stage/$name.log" >&2; return 1; }
  if [ "$mode" = small ]; then
    gzip -n -9 -c "$stage/$name.pcap" > "$out/.$name.pcap.gz.tmp"
    mv -f "$out/.$name.pcap.gz.tmp" "$out/$name.pcap.gz"  # atomic: readers never see half
  else
    cp "$stage/$name.pcap" "$out/.$name.pcap.tmp"
    mv -f "$out/.$name.pcap.tmp" "$out/$name.pcap"
  fi
  cp "$stage/$name.labels.csv" "$out/.$name.labels.csv.tmp"
  mv -f "$out/.$name.labels.csv.tmp" "$out/$name.labels.csv"
  echo "$name: done ($(tail -n +2 "$out/$name.labels.csv" | wc -l) attacks)"
}

pids=()
while read -r split seed attacks duration clients; do
  [ -n "$split" ] || continue
  [[ "$split" =~ ${ONLY:-.} ]] || continue
  one_run "$split" "$seed" "$attacks" "$duration" "$clients" &
  pids+=($!)
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 2; done
done <<< "$runs"
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ "$fail" = 0 ] || exit 1
python3 "$root/pcaps/lab/manifest.py" --stage "$stage" "$out"
