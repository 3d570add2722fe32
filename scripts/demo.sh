#!/usr/bin/env bash
# Set up, then replay the bundled sample capture with the shipped rules and model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf out/demo && mkdir -p out/demo
.venv/bin/netsensor replay pcaps/sample.pcap -c netsensor.yaml -l out/demo
echo "events written to out/demo/eve.json:"
.venv/bin/python - <<'PY'
import collections, json
c = collections.Counter()
for line in open("out/demo/eve.json"):
    e = json.loads(line)
    c[e["event_type"]] += 1
print(dict(c))
PY
