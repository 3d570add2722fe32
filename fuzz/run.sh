#!/usr/bin/env bash
# Run every atheris fuzz target for SECONDS each (default 600), one after the other, niced.
#   fuzz/run.sh 600            # the documented long run (40 min for the four targets)
#   fuzz/run.sh 60 rules pcap  # some targets only
# Corpora grow in fuzz/corpus/<target>/ (git-ignored); crashes land in fuzz/crashes/.
# A crash file becomes a regression input: copy it to tests/data/fuzz-regressions/<target>/
# and fix the code so that the input ends in the expected one-line error.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(pcap decode rules config)
py=.venv/bin/python
[ -x "$py" ] || py=python3
mkdir -p fuzz/corpus fuzz/crashes
status=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  [ -d "$corpus" ] || "$py" fuzz/common.py "$t" fuzz/corpus >/dev/null
  echo "== $t: ${secs}s"
  log="fuzz/crashes/$t.log"
  : >"$log"
  # slices of at most 60 s, each a fresh process on the same growing corpus: atheris's
  # instrumentation itself keeps ~75 KB per run of the numpy-heavy decode target (measured:
  # no growth without it), which would otherwise trip -rss_limit_mb on a long run
  left="$secs"
  while [ "$left" -gt 0 ]; do
    slice=$(( left < 60 ? left : 60 ))
    left=$(( left - slice ))
    if ! nice -n 10 "$py" "fuzz/fuzz_$t.py" "$corpus" -max_total_time="$slice" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="fuzz/crashes/$t-" \
        -print_final_stats=1 >>"$log" 2>&1; then
      status=1
      echo "!! $t found a problem: see $log and fuzz/crashes/$t-*"
      grep -E -A15 "Uncaught Python exception|ERROR: libFuzzer" "$log" | head -30
      break
    fi
  done
  grep -E "stat::number_of_executed_units" "$log" | awk -v t="$t" \
    '{n += $2} END {print t ": " n " inputs run"}'
done
exit $status
