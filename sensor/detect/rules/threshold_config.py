"""threshold.config: suppress, threshold / event_filter and rate_filter lines.

Parsed into frozen dataclasses for the alert pipeline; every bad line becomes a
ConfigError naming file and line, and is skipped (like Suricata, which logs and goes on).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .addresses import AddressParser, AddressSet
from .errors import ConfigError, RuleSyntaxError
from .rulevars import RuleVars, make_vars

TRACKS = ("by_src", "by_dst", "by_rule", "by_both")
RATE_ACTIONS = ("alert", "drop", "pass", "reject", "log", "sdrop")


@dataclass(frozen=True, slots=True)
class Suppress:
    """Suppress alerts of gid:sid (sid 0 = all); with track, only for addresses in `ip`."""

    gid: int
    sid: int
    track: str | None = None  # by_src, by_dst, by_either
    ip: AddressSet | None = None


@dataclass(frozen=True, slots=True)
class ThresholdEntry:
    """threshold / event_filter: same semantics as the rule keyword; overrides it."""

    gid: int
    sid: int
    type: str
    track: str
    count: int
    seconds: int


@dataclass(frozen=True, slots=True)
class RateFilter:
    gid: int
    sid: int
    track: str
    count: int
    seconds: int
    new_action: str
    timeout: int


@dataclass
class ThresholdConfig:
    suppress: list[Suppress]
    thresholds: list[ThresholdEntry]
    rate_filters: list[RateFilter]
    errors: list[ConfigError]


_HEAD = re.compile(r"^(suppress|threshold|event_filter|rate_filter)\s+(.*)$")


def _pairs(body: str) -> list[tuple[str, str]]:
    """`k v, k v, ip [a,b]` -> pairs; `ip` takes the rest of the line (lists have commas)."""
    out = []
    rest = body
    while rest:
        rest = rest.strip()
        key, _, after = rest.partition(" ")
        if key == "ip":
            out.append(("ip", after.strip()))
            break
        val, comma, rest = after.partition(",")
        if not val.strip():
            raise RuleSyntaxError(f"missing value for '{key}'")
        out.append((key, val.strip()))
        if not comma:
            break
        if not rest.strip():
            raise RuleSyntaxError("trailing comma")
    return out


def _uint(v: str, key: str) -> int:
    if not v.isdigit():
        raise RuleSyntaxError(f"invalid {key} '{v}'")
    return int(v)


def _expect(pairs: list[tuple[str, str]], keys: tuple[str, ...]) -> dict[str, str]:
    got = tuple(k for k, _ in pairs)
    if got != keys:
        raise RuleSyntaxError(f"expected fields {', '.join(keys)}; got {', '.join(got)}")
    return dict(pairs)


def parse_threshold_config(text: str, file: str = "<string>",
                           vars: RuleVars | Mapping[str, Any] | None = None,
                           ) -> ThresholdConfig:
    addr = AddressParser(make_vars(vars).addresses)
    cfg = ThresholdConfig([], [], [], [])
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            m = _HEAD.match(s)
            if not m:
                raise RuleSyntaxError(f"unknown threshold.config entry '{s.split()[0]}'")
            kind, pairs = m.group(1), _pairs(m.group(2))
            if kind == "suppress":
                if len(pairs) == 2:
                    d = _expect(pairs, ("gen_id", "sig_id"))
                    cfg.suppress.append(Suppress(_uint(d["gen_id"], "gen_id"),
                                                 _uint(d["sig_id"], "sig_id")))
                    continue
                d = _expect(pairs, ("gen_id", "sig_id", "track", "ip"))
                if d["track"] not in ("by_src", "by_dst", "by_either"):
                    raise RuleSyntaxError(f"invalid suppress track '{d['track']}'")
                cfg.suppress.append(Suppress(_uint(d["gen_id"], "gen_id"),
                                             _uint(d["sig_id"], "sig_id"), d["track"],
                                             addr.parse(d["ip"])))
            elif kind in ("threshold", "event_filter"):
                d = _expect(pairs, ("gen_id", "sig_id", "type", "track", "count", "seconds"))
                if d["type"] not in ("limit", "threshold", "both"):
                    raise RuleSyntaxError(f"invalid threshold type '{d['type']}'")
                if d["track"] not in TRACKS:
                    raise RuleSyntaxError(f"invalid threshold track '{d['track']}'")
                cfg.thresholds.append(ThresholdEntry(
                    _uint(d["gen_id"], "gen_id"), _uint(d["sig_id"], "sig_id"), d["type"],
                    d["track"], _uint(d["count"], "count"), _uint(d["seconds"], "seconds")))
            else:
                d = _expect(pairs, ("gen_id", "sig_id", "track", "count", "seconds",
                                    "new_action", "timeout"))
                if d["track"] not in TRACKS:
                    raise RuleSyntaxError(f"invalid rate_filter track '{d['track']}'")
                if d["new_action"] not in RATE_ACTIONS:
                    raise RuleSyntaxError(f"invalid rate_filter new_action '{d['new_action']}'")
                cfg.rate_filters.append(RateFilter(
                    _uint(d["gen_id"], "gen_id"), _uint(d["sig_id"], "sig_id"), d["track"],
                    _uint(d["count"], "count"), _uint(d["seconds"], "seconds"),
                    d["new_action"], _uint(d["timeout"], "timeout")))
        except RuleSyntaxError as e:
            cfg.errors.append(ConfigError(file, lineno, e.message))
    return cfg


def load_threshold_config(path: str | os.PathLike[str],
                          vars: RuleVars | Mapping[str, Any] | None = None) -> ThresholdConfig:
    """Read a threshold.config; raises OSError if the file cannot be read."""
    with open(path, encoding="utf-8") as fh:
        return parse_threshold_config(fh.read(), os.fspath(path), vars)
