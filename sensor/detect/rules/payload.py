"""Exact evaluation of a rule's payload keywords (content, pcre, isdataat) on one buffer.

Follows Suricata's DetectEngineContentInspection: keywords run in rule order, relative
ones (distance/within, pcre /R, isdataat relative) start at the end of the previous
match, and when a relative keyword fails the previous content is searched again from
one byte further (Suricata's "recursion" on DETECT_CONTENT_RELATIVE_NEXT). Negated
contents/pcres fail the rule when they match and do not move the match position.
Only candidate (buffer, rule) pairs from the prefilter reach this code.
"""

from __future__ import annotations

from .content import Content, IsDataAt, PayloadMatch
from .pcre import Pcre

MAX_RETRIES = 1024  # Suricata bounds its recursion too (inspection_recursion_limit)


def _next_relative(items: tuple[PayloadMatch, ...], i: int) -> bool:
    if i + 1 >= len(items):
        return False
    nxt = items[i + 1]
    if isinstance(nxt, Content):
        return nxt.relative
    return bool(nxt.relative)


def match_payload(items: tuple[PayloadMatch, ...], buf: bytes, lower: bytes | None = None,
                  ) -> bool:
    """True when every payload keyword of a rule matches `buf` (Suricata semantics)."""
    if lower is None:
        lower = buf.lower()
    budget = [MAX_RETRIES]
    return _match(items, buf, lower, 0, 0, budget)


def _match(items: tuple[PayloadMatch, ...], buf: bytes, lower: bytes, i: int, prev_end: int,
           budget: list[int]) -> bool:
    if i >= len(items):
        return True
    item = items[i]
    n = len(buf)
    if isinstance(item, Content):
        hay = lower if item.nocase else buf
        pat = item.pattern.lower() if item.nocase else item.pattern
        if item.relative:
            start = prev_end + (item.distance or 0)
            end = start + item.within if item.within is not None else n
            start = max(start, 0)
        else:
            start = item.offset or 0
            end = start + item.depth if item.depth is not None else n
        end = min(end, n)
        if item.negated:
            if start <= end and hay.find(pat, start, end) >= 0:
                return False
            return _match(items, buf, lower, i + 1, prev_end, budget)
        retry = _next_relative(items, i)
        pos = start
        while pos <= end:
            m = hay.find(pat, pos, end)
            if m < 0:
                return False
            if _match(items, buf, lower, i + 1, m + len(pat), budget):
                return True
            budget[0] -= 1
            if not retry or budget[0] <= 0:
                return False
            pos = m + 1
        return False
    if isinstance(item, Pcre):
        start = prev_end if item.relative else 0
        if start > n:
            return item.negated
        hit = item.search(buf, start)
        if item.negated:
            if hit is not None:
                return False
            return _match(items, buf, lower, i + 1, prev_end, budget)
        retry = _next_relative(items, i)
        while hit is not None:
            if _match(items, buf, lower, i + 1, hit[1], budget):
                return True
            budget[0] -= 1
            if not retry or budget[0] <= 0 or item.anchored:
                return False
            hit = item.search(buf, hit[0] + 1) if hit[0] + 1 <= n else None
        return False
    assert isinstance(item, IsDataAt)
    at = (prev_end if item.relative else 0) + item.offset
    has = at < n
    if has == item.negated:
        return False
    return _match(items, buf, lower, i + 1, prev_end, budget)
