"""Suricata's list grammar for addresses and ports: `[a,!b,[c,d]]`, `!$VAR`, nesting.

Mirrors DetectAddressParse2/DetectAddressMergeNot so the resulting sets are Suricata's
own, quirks included: a non-negated nested list is flattened into its parent (its own
negations subtract from the whole parent), a negated list is first resolved as a set and
then subtracted, and a family (IPv4 / IPv6) with only negations starts from "all" while a
family never mentioned stays empty (so `!1.2.3.4` matches no IPv6 address).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import rangeset
from .errors import RuleSyntaxError

# An entry is (family, lo, hi); families are 4/6 for addresses and 0 for ports.
Entry = tuple[int, int, int]
Literal = Callable[[str], list[Entry]]


def split_top(text: str, what: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise RuleSyntaxError(f"unbalanced ']' in {what} '{text}'")
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth != 0:
        raise RuleSyntaxError(f"unbalanced '[' in {what} '{text}'")
    items.append(text[start:].strip())
    return items


class SpecParser:
    """Parses one kind of spec (address or port) against a variable table."""

    def __init__(self, what: str, literal: Literal, variables: Mapping[str, str],
                 full: Mapping[int, tuple[int, int]], complete_check: int) -> None:
        self.what = what
        self.literal = literal
        self.variables = variables
        self.full = full  # family -> (min, max)
        self.complete_check = complete_check  # family whose full negation is an error

    def parse(self, text: str) -> dict[int, tuple[rangeset.Range, ...]]:
        """Spec text -> {family: normalized ranges}."""
        pos: list[Entry] = []
        neg: list[Entry] = []
        self._parse2(text.strip(), 0, pos, neg, ())
        return self._merge_not(pos, neg, text)

    def _parse2(self, text: str, negate: int, pos: list[Entry], neg: list[Entry],
                seen: tuple[str, ...]) -> None:
        if not text:
            raise RuleSyntaxError(f"empty {self.what}")
        for item in split_top(text, self.what):
            n = 0
            while item.startswith("!"):
                if n:
                    raise RuleSyntaxError(f"double negation in {self.what} '{text}'")
                n = 1
                item = item[1:].lstrip()
            if not item:
                raise RuleSyntaxError(f"empty element in {self.what} '{text}'")
            eff = (negate + n) % 2
            if item[0] == "[":
                if item[-1] != "]":
                    raise RuleSyntaxError(f"bad {self.what} list '{item}'")
                inner = item[1:-1].strip()
                if eff == 0:
                    self._parse2(inner, 0, pos, neg, seen)
                else:
                    tpos: list[Entry] = []
                    tneg: list[Entry] = []
                    self._parse2(inner, 0, tpos, tneg, seen)
                    for fam, ranges in self._merge_not(tpos, tneg, item).items():
                        neg.extend((fam, lo, hi) for lo, hi in ranges)
            elif item[0] == "$":
                name = item[1:]
                if name in seen:
                    raise RuleSyntaxError(f"variable loop through ${name}")
                value = self.variables.get(name)
                if value is None:
                    raise RuleSyntaxError(f"{self.what} variable ${name} is not defined")
                value = value.strip()
                if not value:
                    raise RuleSyntaxError(f"{self.what} variable ${name} is empty")
                if eff:
                    self._parse2(f"[{value}]", 1, pos, neg, seen + (name,))
                else:
                    self._parse2(value, 0, pos, neg, seen + (name,))
            else:
                (neg if eff else pos).extend(self.literal(item))

    def _merge_not(self, pos: list[Entry], neg: list[Entry], text: str,
                   ) -> dict[int, tuple[rangeset.Range, ...]]:
        negs = {f: rangeset.normalize((lo, hi) for g, lo, hi in neg if g == f) for f in self.full}
        poss = {f: rangeset.normalize((lo, hi) for g, lo, hi in pos if g == f) for f in self.full}
        cf = self.complete_check
        if rangeset.covers(negs[cf], *self.full[cf]):
            raise RuleSyntaxError(f"complete {self.what} space negated in '{text}'")
        out = {}
        for fam, (lo, hi) in self.full.items():
            p = poss[fam]
            if not p and negs[fam]:
                p = ((lo, hi),)
            out[fam] = rangeset.subtract(p, negs[fam])
        if not any(out.values()):
            raise RuleSyntaxError(f"no {self.what} left after negation in '{text}'")
        return out
