"""Fuzz target: the Suricata rule parser (sensor.detect.rules.parser) and loader line joiner.

Input: rule text. RuleSyntaxError (a rejected rule, with a message) is the expected
outcome for bad text; any other exception is a finding, because the loader only catches
RuleSyntaxError and would stop the whole load.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
with atheris.instrument_imports(include=["sensor"]):
    from sensor.detect.rules.errors import RuleSyntaxError
    from sensor.detect.rules.parser import RuleParser, iter_raw_rules

PARSER = RuleParser({"address-groups": {"HOME_NET": "[10.0.0.0/8,192.168.0.0/16]",
                                        "EXTERNAL_NET": "!$HOME_NET"},
                     "port-groups": {"HTTP_PORTS": "[80,8080]"}})


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="surrogateescape")
    for raw in iter_raw_rules(text.splitlines()):
        try:
            rule = PARSER.parse(raw.text, "<fuzz>", raw.line)
        except RuleSyntaxError as exc:
            assert exc.message, "empty error message"
            continue
        assert rule.sid >= 0


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
