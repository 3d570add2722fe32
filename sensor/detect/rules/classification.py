"""classification.config: classtype -> EVE `alert.category` and `alert.severity`.

Lines read `config classification: shortname,description,priority`. A rule's own
`priority:` overrides the class priority; an unknown classtype keeps Suricata's default
severity 3 and no category.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import ConfigError

DEFAULT_PRIORITY = 3
_LINE = re.compile(r"^config\s+classification\s*:\s*([^,]+?)\s*,\s*(.*?)\s*,\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Classification:
    name: str
    description: str
    priority: int


@dataclass
class ClassificationTable:
    classes: dict[str, Classification]
    errors: list[ConfigError]

    def category(self, classtype: str | None) -> str | None:
        c = self.classes.get((classtype or "").lower())
        return c.description if c else None

    def severity(self, classtype: str | None, rule_priority: int | None = None) -> int:
        if rule_priority is not None:
            return rule_priority
        c = self.classes.get((classtype or "").lower())
        return c.priority if c else DEFAULT_PRIORITY


def parse_classification(text: str, file: str = "<string>") -> ClassificationTable:
    classes: dict[str, Classification] = {}
    errors: list[ConfigError] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = _LINE.match(s)
        if not m:
            errors.append(ConfigError(file, lineno, f"invalid classification line {s!r}"))
            continue
        name = m.group(1).lower()
        classes[name] = Classification(name, m.group(2), int(m.group(3)))
    return ClassificationTable(classes, errors)


def load_classification(path: str | os.PathLike[str]) -> ClassificationTable:
    """Read a classification.config; raises OSError if the file cannot be read."""
    with open(path, encoding="utf-8") as fh:
        return parse_classification(fh.read(), os.fspath(path))
