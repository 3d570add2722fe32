"""Integer comparisons in Suricata 7.0 syntax (the Rust `detect_parse_uint`).

Accepted: `N`, `=N`, `<N`, `>N`, `<=N`, `>=N`, `!N`, `!=N`, `N-M` and `N<>M`. Ranges are
exclusive at both ends (min < x < max) and need max - min >= 2, as in Suricata 7.0.10,
which rejects hex values, units, `!N-M` and bitmasks; so do we.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import numpy as np

from .errors import RuleSyntaxError

_RANGE = re.compile(r"^ *(\d+) *(?:-|<>) *(\d+) *$")
_SYMBOL = re.compile(r"^ *(>=|<=|>|<|!=|!|=)? *(\d+) *$")


@dataclass(frozen=True, slots=True)
class IntMatch:
    """One comparison: mode is one of eq ne lt le gt ge range."""

    mode: str
    a: int
    b: int = 0

    def matches(self, v: int) -> bool:
        return self._compare(v)

    def mask(self, values: np.ndarray) -> np.ndarray:
        """Vectorised matches() over an integer array."""
        return self._compare(np.asarray(values))

    def _compare(self, v):
        """The comparison itself, for a scalar or an array alike (`&`, not a chained `<`)."""
        op = _OPERATORS.get(self.mode)
        if op is not None:
            return op(v, self.a)
        return (v > self.a) & (v < self.b)


_OPERATORS = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
              "gt": operator.gt, "ge": operator.ge}

_MODES = {None: "eq", "=": "eq", "!": "ne", "!=": "ne", "<": "lt", "<=": "le", ">": "gt",
          ">=": "ge"}


def parse_uint(text: str, bits: int, keyword: str) -> IntMatch:
    """Parse a Suricata 7 integer comparison for an unsigned field of `bits` bits."""
    top = (1 << bits) - 1
    bad = RuleSyntaxError(f"invalid {keyword} value '{text}'")
    m = _RANGE.match(text)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if a > top or b > top or b <= a or b - a < 2:
            raise bad
        return IntMatch("range", a, b)
    m = _SYMBOL.match(text)
    if not m:
        raise bad
    mode = _MODES[m.group(1)]
    a = int(m.group(2))
    if a > top:
        raise bad
    if (mode in ("lt", "ge") and a == 0) or (mode in ("le", "gt") and a == top):
        raise bad
    return IntMatch(mode, a)
