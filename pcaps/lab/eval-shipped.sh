#!/usr/bin/env bash
# The eval tables for the shipped detection (netsensor.yaml: rules/netsensor.rules + the
# shipped model) on the committed test split and the benign-only test capture.
#   bash pcaps/lab/eval-shipped.sh [CONFIG]      (default: netsensor.yaml)
# Writes pcaps/lab/out/eval-NAME.{txt,json,png} (git-ignored) and prints the tables.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
config=${1:-netsensor.yaml}
netsensor=${NETSENSOR:-netsensor}
mkdir -p pcaps/lab/out
for name in test-s4401 benign-test-s5401; do
  echo "== $name ($config)"
  "$netsensor" eval --labels "pcaps/lab/data/$name.labels.csv" "pcaps/lab/data/$name.pcap.gz" \
    -c "$config" --json "pcaps/lab/out/eval-$name.json" --plot "pcaps/lab/out/eval-$name.png" \
    | tee "pcaps/lab/out/eval-$name.txt"
done
