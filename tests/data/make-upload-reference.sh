#!/usr/bin/env bash
# Writes tests/data/upload-rule.suricata.json with REAL Suricata 7.0.10: the alerts of the
# shipped upload policy rule (sid 1000050, rules/netsensor.rules) on every committed lab
# capture (pcaps/lab/data/*.pcap.gz, pcaps/model/*.pcap.gz), with tests/e2e/suricata.yaml
# (its vars equal netsensor.yaml's, BULK_PORTS included). tests/test_shipped_rules.py
# replays the same captures through netsensor and requires the same alerts.
#   bash tests/data/make-upload-reference.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SID=1000050
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -E "sid:$SID;" rules/netsensor.rules >"$work/rule.rules"
[ "$(wc -l <"$work/rule.rules")" -eq 1 ] || { echo "sid $SID not found once" >&2; exit 1; }
suricata -V
for gz in pcaps/lab/data/*.pcap.gz pcaps/model/*.pcap.gz; do
  name=$(basename "$gz" .pcap.gz)
  mkdir "$work/$name"
  gzip -dc "$gz" >"$work/$name.pcap"
  TZ=UTC suricata -c tests/e2e/suricata.yaml -S "$work/rule.rules" -r "$work/$name.pcap" \
    -l "$work/$name" -k none --runmode single --init-errors-fatal \
    --set "classification-file=$ROOT/rules/classification.config" \
    --set threshold-file=/dev/null \
    --set reference-config-file=/etc/suricata/reference.config >"$work/$name/run.log" 2>&1 \
    || { cat "$work/$name/run.log"; exit 1; }
  rm "$work/$name.pcap"
done
python3 - "$work" tests/data/upload-rule.suricata.json <<'PY'
import json, os, sys
work, dest = sys.argv[1], sys.argv[2]
doc = {"engine": "Suricata 7.0.10 (tests/data/make-upload-reference.sh)",
       "rule": open(os.path.join(work, "rule.rules")).read().strip(), "captures": {}}
for name in sorted(os.listdir(work)):
    eve = os.path.join(work, name, "eve.json")
    if not os.path.isfile(eve):
        continue
    alerts = []
    for line in open(eve):
        e = json.loads(line)
        if e["event_type"] == "alert":
            alerts.append({"signature_id": e["alert"]["signature_id"],
                           "pcap_cnt": e.get("pcap_cnt"), "timestamp": e["timestamp"],
                           "src_ip": e["src_ip"], "src_port": e["src_port"],
                           "dest_ip": e["dest_ip"], "dest_port": e["dest_port"]})
    doc["captures"][name] = alerts
    print(f"{name}: {len(alerts)} alerts")
with open(dest, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
PY
