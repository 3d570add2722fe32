#!/usr/bin/env bash
# Write tests/e2e/<case>/expected-events.json with REAL Suricata 7.0.10: the alerts it logs
# for the case's input.pcap + test.rules (+ threshold.config when present) and the flows it
# marks `alerted`. Cases listed in SHIPPED test the shipped ruleset: their test.rules and
# threshold.config are refreshed from rules/ first (tests/test_e2e.py checks they match).
#   bash tests/e2e/make_expected.sh [CASE...]     (default: every folder with input.pcap)
set -euo pipefail
cd "$(dirname "$0")"
E2E=$PWD
ROOT=$(cd ../.. && pwd)
SHIPPED="scan-syn scan-fin-null-xmas scan-udp flood-syn flood-udp-icmp brute-ssh brute-http
brute-ftp dns-tunnel icmp-sweep benign-mix"
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  for d in */input.pcap; do cases+=("${d%/input.pcap}"); done
fi
suricata -V
for c in "${cases[@]}"; do
  if [[ " $(echo $SHIPPED) " == *" $c "* ]]; then
    cp "$ROOT/rules/netsensor.rules" "$c/test.rules"
    cp "$ROOT/rules/threshold.config" "$c/threshold.config"
  fi
  thr=/dev/null
  [ -f "$c/threshold.config" ] && thr="$E2E/$c/threshold.config"
  out=$(mktemp -d)
  TZ=UTC suricata -c "$E2E/suricata.yaml" -S "$E2E/$c/test.rules" -r "$E2E/$c/input.pcap" \
    -l "$out" -k none --runmode single --init-errors-fatal \
    --set "classification-file=$ROOT/rules/classification.config" \
    --set "threshold-file=$thr" \
    --set reference-config-file=/etc/suricata/reference.config >"$out/run.log" 2>&1 \
    || { cat "$out/run.log"; exit 1; }
  python3 - "$out/eve.json" "$c/expected-events.json" <<'PY'
import json, sys
eve, dest = sys.argv[1], sys.argv[2]
alerts, flows, nflows = [], set(), 0
for line in open(eve):
    e = json.loads(line)
    if e["event_type"] == "alert":
        alerts.append({
            "signature_id": e["alert"]["signature_id"], "gid": e["alert"]["gid"],
            "action": e["alert"]["action"], "pcap_cnt": e.get("pcap_cnt"),
            "src_ip": e["src_ip"], "src_port": e.get("src_port"),
            "dest_ip": e["dest_ip"], "dest_port": e.get("dest_port"), "proto": e["proto"]})
    elif e["event_type"] == "flow":
        nflows += 1
        if e["flow"].get("alerted"):
            flows.add((e["proto"], e["src_ip"], e.get("src_port"), e["dest_ip"],
                       e.get("dest_port")))
key = lambda a: (a["pcap_cnt"] is not None, a["pcap_cnt"] or 0, a["signature_id"],
                 a["src_ip"], a["src_port"] or 0, a["dest_ip"], a["dest_port"] or 0)
doc = {
    "engine": "Suricata 7.0.10 (tests/e2e/make_expected.sh)",
    "alerts": sorted(alerts, key=key),
    "alerted_flows": [dict(zip(("proto", "src_ip", "src_port", "dest_ip", "dest_port"), f))
                      for f in sorted(flows, key=lambda f: tuple(str(x) for x in f))],
    "flow_events": nflows,
}
with open(dest, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
by = {}
for a in alerts:
    by[a["signature_id"]] = by.get(a["signature_id"], 0) + 1
print(f"{dest}: {len(alerts)} alerts {dict(sorted(by.items()))}, "
      f"{len(flows)} alerted flows of {nflows}")
PY
  rm -rf "$out"
done
