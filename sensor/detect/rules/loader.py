"""Load rule files into a RuleSet: loaded rules plus one RuleError per rejected rule.

A bad rule never stops the load; it is reported as `FILE:LINE: message in sid N`, the
way Suricata keeps going and logs the signature it could not parse.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...config import refuse_world_writable
from .errors import RuleError, RuleSyntaxError
from .parser import Rule, RuleParser, guess_sid, iter_raw_rules
from .rulevars import RuleVars


@dataclass
class RuleSet:
    """Result of a load. `errors` are rejected rules; `file_errors` unreadable files."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    file_errors: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return len(self.rules)

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def by_sid(self) -> dict[tuple[int, int], Rule]:
        return {(r.gid, r.sid): r for r in self.rules}


def load_rules(paths: Iterable[str | os.PathLike[str]],
               vars: RuleVars | Mapping[str, Any] | None = None) -> RuleSet:
    """Parse every rule in `paths` (in order); a later duplicate (gid, sid) is rejected."""
    parser = RuleParser(vars)
    rs = RuleSet()
    seen: dict[tuple[int, int], tuple[str, int]] = {}
    for p in paths:
        name = os.fspath(p)
        try:
            with open(name, encoding="utf-8", errors="surrogateescape") as fh:
                if os.fstat(fh.fileno()).st_mode & stat.S_IWOTH:
                    rs.file_errors.append(refuse_world_writable(name, "rule"))
                    continue
                lines = fh.read().splitlines()
        except OSError as e:
            rs.file_errors.append(f"{name}: cannot read rule file: {e.strerror or e}")
            continue
        for raw in iter_raw_rules(lines):
            try:
                rule = parser.parse(raw.text, name, raw.line)
            except RuleSyntaxError as e:
                rs.errors.append(RuleError(name, raw.line, guess_sid(raw.text), e.message,
                                           e.keyword))
                continue
            key = (rule.gid, rule.sid)
            if key in seen:
                f0, l0 = seen[key]
                rs.errors.append(RuleError(name, raw.line, rule.sid,
                                           f"duplicate sid (gid {rule.gid}), first at {f0}:{l0}"))
                continue
            seen[key] = (name, raw.line)
            rs.rules.append(rule)
    return rs
