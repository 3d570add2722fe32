"""`netsensor check-rules [-c CONFIG] FILE...`: report every rule that would not load.

Rule variables are Suricata's defaults, overlaid with the config's `vars` when `-c` names
one (a site-defined group such as the shipped ruleset's `$BULK_PORTS` needs it).
Exit 0 when all rules load, 1 when some are rejected, 2 when a file or the config cannot
be read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .loader import load_rules


def check_rules_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netsensor check-rules",
                                 description="Check Suricata rule files against this engine.")
    ap.add_argument("-c", "--config", metavar="CONFIG",
                    help="netsensor config whose vars (address/port groups) the rules use")
    ap.add_argument("files", nargs="+", metavar="FILE")
    args = ap.parse_args(argv)
    variables = None
    if args.config:
        from ...config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        variables = {"address-groups": dict(cfg.vars.address_groups),
                     "port-groups": dict(cfg.vars.port_groups)}
    rs = load_rules(args.files, variables)
    for msg in rs.file_errors:
        print(msg, file=sys.stderr)
    for err in rs.errors:
        print(err)
    print(f"{rs.loaded} rules loaded, {rs.rejected} rejected", file=sys.stderr)
    if rs.file_errors:
        return 2
    return 1 if rs.errors else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(check_rules_main())
