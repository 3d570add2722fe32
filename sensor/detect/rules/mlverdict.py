"""netsensor rule keywords on the model's per-flow verdict: `ml.class` and `ml.score`.

Not Suricata keywords (Suricata rejects such rules): they let a rule test what the CNN-LSTM
(sensor.detect.model) concluded about the packet's flow so far, with the rest of the rule
(header, flow, content, thresholds) working as usual. The verdict is what the flow event's
`metadata` reports: `ml_class` (the class over its threshold, else "benign") and `ml_score`
(the highest attack-class probability over the flow's scored windows). A flow with no scored
window has no verdict and matches no ml.* keyword, negated or not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import RuleError, RuleSyntaxError

ML_KEYWORDS = ("ml.class", "ml.score")
_CLASS_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_SCORE_RANGE = re.compile(rf"^\s*{_NUM}\s*-\s*{_NUM}\s*$")
_SCORE_CMP = re.compile(rf"^\s*(>=|<=|>|<|=)?\s*{_NUM}\s*$")


@dataclass(frozen=True, slots=True)
class MlClass:
    """ml.class: the verdict's class is one of `names` (or, `negated`, none of them)."""

    names: tuple[str, ...]
    negated: bool = False

    def mask(self, cls: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Per packet: does its flow's class index (-1: no verdict) pass this keyword?"""
        want = np.asarray([classes.index(n) for n in self.names], dtype=np.int64)
        hit = np.isin(cls, want)
        return (cls >= 0) & (~hit if self.negated else hit)


@dataclass(frozen=True, slots=True)
class MlScore:
    """ml.score: mode is one of eq lt le gt ge range (range: a < x < b, as Suricata's)."""

    mode: str
    a: float
    b: float = 0.0

    def mask(self, score: np.ndarray) -> np.ndarray:
        """Compared in float32, the precision the model outputs (so `=0.5` and `0.2-0.8`
        mean the float32 values a score can take, not float64 neighbours)."""
        v = np.asarray(score, dtype=np.float32)
        a, b = np.float32(self.a), np.float32(self.b)
        m = self.mode
        if m == "eq":
            return v == a
        if m == "lt":
            return v < a
        if m == "le":
            return v <= a
        if m == "gt":
            return v > a
        if m == "ge":
            return v >= a
        return (v > a) & (v < b)


def parse_ml_class(value: str | None) -> MlClass:
    """`name[,name...]`, or every name prefixed with `!` (none of them)."""
    parts = [p.strip() for p in (value or "").split(",")]
    if not parts or not all(parts):
        raise RuleSyntaxError(f"invalid ml.class '{value}'", keyword="ml.class")
    neg = [p.startswith("!") for p in parts]
    if any(neg) and not all(neg):
        raise RuleSyntaxError(f"ml.class '{value}' mixes negated and plain classes",
                              keyword="ml.class")
    names = tuple(p[1:].strip() if n else p for p, n in zip(parts, neg, strict=True))
    for name in names:
        if not _CLASS_NAME.match(name):
            raise RuleSyntaxError(f"invalid ml.class name '{name}'", keyword="ml.class")
    return MlClass(names, all(neg))


def _unit(text: str, value: str | None) -> float:
    x = float(text)
    if not 0.0 <= x <= 1.0:
        raise RuleSyntaxError(f"ml.score value '{value}' is outside 0..1", keyword="ml.score")
    return x


def parse_ml_score(value: str | None) -> MlScore:
    """`>0.9`, `>=0.9`, `<0.5`, `<=0.5`, `=0.5` or `0.5`, range `0.2-0.8` (exclusive)."""
    v = value or ""
    m = _SCORE_RANGE.match(v)
    if m:
        a, b = _unit(m.group(1), value), _unit(m.group(2), value)
        if b <= a:
            raise RuleSyntaxError(f"ml.score range '{value}' is empty", keyword="ml.score")
        return MlScore("range", a, b)
    m = _SCORE_CMP.match(v)
    if not m:
        raise RuleSyntaxError(f"invalid ml.score '{value}'", keyword="ml.score")
    mode = {None: "eq", "=": "eq", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}[m.group(1)]
    return MlScore(mode, _unit(m.group(2), value))


def uses_ml(rule: object) -> bool:
    """Does this rule test the model's verdict?"""
    return getattr(rule, "ml_class", None) is not None or getattr(rule, "ml_score",
                                                                  None) is not None


def reject_ml_rules(rs: object, classes: Sequence[str] | None) -> None:
    """Move the ml.* rules of RuleSet `rs` that cannot run into its errors, in place.

    With the model off (`classes` None) every ml.* rule is rejected; with it on, a rule
    naming a class the model does not have is. Same `FILE:LINE: ... in sid N` messages as
    parse errors, so replay reports them and the daemon refuses the set (strict)."""
    keep = []
    for r in rs.rules:  # type: ignore[attr-defined]
        msg, kw = None, None
        if uses_ml(r):
            kw = "ml.class" if r.ml_class is not None else "ml.score"
            if classes is None:
                msg = f"{kw} needs the model (model.enabled: true)"
            elif r.ml_class is not None:
                unknown = [n for n in r.ml_class.names if n not in classes]
                if unknown:
                    msg = (f"ml.class '{unknown[0]}' is not a class of the model "
                           f"({', '.join(classes)})")
        if msg is None:
            keep.append(r)
        else:
            rs.errors.append(RuleError(r.file, r.line, r.sid, msg, kw))  # type: ignore
    rs.rules[:] = keep  # type: ignore[attr-defined]
