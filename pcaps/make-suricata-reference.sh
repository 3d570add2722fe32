#!/usr/bin/env bash
# Regenerates the Suricata reference flow events for a bundled capture:
#   pcaps/sample.pcap -> pcaps/sample.suricata-flows.json (EVE "flow" lines only, JSONL)
# Usage: bash pcaps/make-suricata-reference.sh [PCAP [OUT.json]]
# Needs Suricata 7 (bash /work/shared/tools/install-suricata.sh). Timestamps in UTC.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pcap=${1:-$here/sample.pcap}
out=${2:-${pcap%.pcap}.suricata-flows.json}
command -v suricata >/dev/null || { echo "suricata not installed" >&2; exit 1; }
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
TZ=UTC suricata -c "$here/suricata-flows.yaml" -S /dev/null -k none --runmode single \
  --set pcap-file.checksum-checks=no -r "$pcap" -l "$logdir" >"$logdir/suricata.out" 2>&1 \
  || { cat "$logdir/suricata.out" >&2; exit 1; }
grep '"event_type":"flow"' "$logdir/eve.json" >"$out"
echo "$(wc -l <"$out") flow events -> $out ($(suricata -V | head -1))"
