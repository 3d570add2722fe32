"""Error types shared by the rule parser, loader and config readers.

Parsing code raises RuleSyntaxError with only the "what is wrong" part; the loader adds the
file, line and sid so that every message reads `FILE:LINE: <what> in sid N`.
"""

from __future__ import annotations

from dataclasses import dataclass


class RuleSyntaxError(ValueError):
    """A rule (or config line) cannot be loaded with exactly Suricata's meaning."""

    def __init__(self, message: str, keyword: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.keyword = keyword


def unsupported_keyword(name: str) -> RuleSyntaxError:
    """The standard rejection for keywords this engine does not implement."""
    return RuleSyntaxError(f"unsupported keyword '{name}'", keyword=name)


@dataclass(frozen=True, slots=True)
class RuleError:
    """One rejected rule (or bad config line), ready to print."""

    file: str
    line: int
    sid: int | None
    message: str
    keyword: str | None = None

    def __str__(self) -> str:
        where = f"sid {self.sid}" if self.sid is not None else "rule"
        return f"{self.file}:{self.line}: {self.message} in {where}"


@dataclass(frozen=True, slots=True)
class ConfigError:
    """A bad line in classification.config or threshold.config."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"
