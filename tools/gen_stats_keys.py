"""Regenerate sensor/output/stats_keys.py from Suricata's EVE schema.

Usage: python tools/gen_stats_keys.py ../shared/eve-schema/schema-7.0.10.json
The stats writer only emits counters the schema knows, so SIEM pipelines that validate
EVE against it keep every stats event.
"""

import json
import sys


def walk(node, prefix, out):
    if node.get("type") == "object" and "properties" in node:
        for key, sub in node["properties"].items():
            walk(sub, prefix + key + ".", out)
    elif node.get("type") == "integer":
        out.append(prefix[:-1])


def main() -> None:
    schema = json.load(open(sys.argv[1]))
    keys: list[str] = []
    walk(schema["properties"]["stats"], "", keys)
    with open("sensor/output/stats_keys.py", "w") as f:
        f.write('"""Integer counters of the Suricata 7.0.10 EVE stats schema '
                '(tools/gen_stats_keys.py)."""\n\n')
        f.write("STATS_KEYS = frozenset({\n")
        for k in sorted(keys):
            f.write(f'    "{k}",\n')
        f.write("})\n")


if __name__ == "__main__":
    main()
