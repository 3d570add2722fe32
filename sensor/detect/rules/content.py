"""`content` and its modifiers, `isdataat`, and the ordered payload match list.

The order of payload keywords is meaningful (distance/within and pcre `R` are relative to
the previous match), so a rule keeps them as one tuple in rule order. Validation follows
Suricata 7.0: absolute (offset/depth) and relative (distance/within) modifiers cannot be
mixed on one content, depth/within must not be shorter than the pattern, one fast_pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import RuleSyntaxError
from .pcre import Pcre, parse_pcre

_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_ESCAPABLE = frozenset('\\";:')


@dataclass(frozen=True, slots=True)
class FastPattern:
    """fast_pattern hint; `only` and (offset, length) "chop" are kept for the prefilter."""

    only: bool = False
    offset: int | None = None
    length: int | None = None


@dataclass(frozen=True, slots=True)
class Content:
    """A content match.

    Relative modifiers (distance/within) on the first payload match are relative to the
    start of the buffer, as in Suricata. `rawbytes` is a no-op for packet payload.
    """

    pattern: bytes
    negated: bool = False
    nocase: bool = False
    offset: int | None = None
    depth: int | None = None
    distance: int | None = None
    within: int | None = None
    fast_pattern: FastPattern | None = None
    rawbytes: bool = False

    @property
    def relative(self) -> bool:
        return self.distance is not None or self.within is not None


@dataclass(frozen=True, slots=True)
class IsDataAt:
    """isdataat:[!]N[,relative] — is there payload at offset N (from the previous match)."""

    offset: int
    negated: bool = False
    relative: bool = False


PayloadMatch = Content | Pcre | IsDataAt


def parse_content_string(value: str) -> tuple[bytes, bool]:
    """Decode a quoted content value with `|hex|` runs and `\\` escapes; returns (bytes, neg)."""
    v = value.strip()
    negated = v.startswith("!")
    if negated:
        v = v[1:].lstrip()
    if len(v) < 2 or v[0] != '"' or v[-1] != '"':
        raise RuleSyntaxError("content value must be double quoted")
    s = v[1:-1]
    out = bytearray()
    hexmode = False
    nib = ""
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "|":
            if hexmode and nib:
                raise RuleSyntaxError(f"incomplete hex byte in content '{s}'")
            hexmode = not hexmode
        elif hexmode:
            if c in _HEXDIGITS:
                nib += c
                if len(nib) == 2:
                    out.append(int(nib, 16))
                    nib = ""
            elif c not in " ,":
                raise RuleSyntaxError(f"invalid hex code in content '{s}'")
        elif c == "\\":
            if i + 1 >= n or s[i + 1] not in _ESCAPABLE:
                raise RuleSyntaxError(f"invalid escape in content '{s}'")
            out += s[i + 1].encode()
            i += 1
        elif c == '"':
            raise RuleSyntaxError(f"unescaped '\"' in content '{s}'")
        else:
            out += c.encode("utf-8", "surrogateescape")
        i += 1
    if hexmode:
        raise RuleSyntaxError(f"unterminated hex run in content '{s}'")
    if not out:
        raise RuleSyntaxError("empty content")
    return bytes(out), negated


_INT = re.compile(r"^\s*(-?\d+)\s*$")
_FP_CHOP = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")
_ISDATAAT = re.compile(r"^\s*(!?)\s*(\d+)\s*(,\s*relative\s*)?$")
CONTENT_MODIFIERS = frozenset(
    {"nocase", "depth", "offset", "distance", "within", "fast_pattern", "rawbytes"})


def _int(value: str | None, keyword: str, lo: int, hi: int) -> int:
    m = _INT.match(value or "")
    if not m or not lo <= int(m.group(1)) <= hi:
        raise RuleSyntaxError(f"invalid {keyword} value '{value}'")
    return int(m.group(1))


class PayloadBuilder:
    """Collects payload keywords in order and applies content modifiers to the last one."""

    def __init__(self) -> None:
        self.items: list[PayloadMatch] = []
        self._fast_pattern_seen = False

    def add_content(self, value: str) -> None:
        pattern, negated = parse_content_string(value)
        self.items.append(Content(pattern, negated))

    def add_pcre(self, value: str) -> None:
        p = parse_pcre(value)
        if p.relative and not self.items:
            raise RuleSyntaxError("pcre /R needs a preceding content or pcre")
        self.items.append(p)

    def add_isdataat(self, value: str) -> None:
        m = _ISDATAAT.match(value or "")
        if not m or int(m.group(2)) > 65535:
            raise RuleSyntaxError(f"invalid isdataat value '{value}'")
        self.items.append(IsDataAt(int(m.group(2)), bool(m.group(1)), bool(m.group(3))))

    def modify(self, keyword: str, value: str | None) -> None:
        """Apply a content modifier to the content right before it."""
        if not self.items or not isinstance(self.items[-1], Content):
            raise RuleSyntaxError(f"'{keyword}' must directly follow a content")
        c: Content = self.items[-1]
        if keyword == "nocase":
            if c.nocase:
                raise RuleSyntaxError("duplicate nocase")
            c = replace(c, nocase=True)
        elif keyword == "rawbytes":
            c = replace(c, rawbytes=True)
        elif keyword == "fast_pattern":
            c = self._fast_pattern(c, value)
        else:
            c = self._position(c, keyword, value)
        self.items[-1] = c

    def _position(self, c: Content, keyword: str, value: str | None) -> Content:
        if getattr(c, keyword) is not None:
            raise RuleSyntaxError(f"duplicate {keyword}")
        relative = keyword in ("distance", "within")
        if (relative and (c.offset is not None or c.depth is not None)) or (
                not relative and c.relative):
            raise RuleSyntaxError("can't mix depth/offset with distance/within on one content")
        lo = -65535 if keyword == "distance" else 0
        v = _int(value, keyword, lo, 65535)
        if keyword in ("depth", "within") and v < len(c.pattern):
            raise RuleSyntaxError(f"{keyword} {v} is shorter than the content")
        return replace(c, **{keyword: v})

    def _fast_pattern(self, c: Content, value: str | None) -> Content:
        if self._fast_pattern_seen:
            raise RuleSyntaxError("fast_pattern can be used on only one content")
        self._fast_pattern_seen = True
        if value is None or not value.strip():
            return replace(c, fast_pattern=FastPattern())
        if value.strip() == "only":
            return replace(c, fast_pattern=FastPattern(only=True))
        m = _FP_CHOP.match(value)
        if not m:
            raise RuleSyntaxError(f"invalid fast_pattern value '{value}'")
        off, length = int(m.group(1)), int(m.group(2))
        if off + length > len(c.pattern) or length == 0:
            raise RuleSyntaxError("fast_pattern offset + length exceeds the content")
        return replace(c, fast_pattern=FastPattern(offset=off, length=length))

    def finish(self) -> tuple[PayloadMatch, ...]:
        for c in self.items:
            if isinstance(c, Content) and c.fast_pattern is not None:
                positional = c.relative or c.offset is not None or c.depth is not None
                if c.fast_pattern.only and (c.negated or positional):
                    raise RuleSyntaxError(
                        "fast_pattern:only cannot be used with negation or positional modifiers")
                if c.negated and positional:
                    raise RuleSyntaxError(
                        "fast_pattern cannot be used on a negated content with positional "
                        "modifiers")
        return tuple(self.items)
