"""Port specs (`any`, `80`, `1024:`, `:1023`, `[80,!81]`, `$HTTP_PORTS`) as range sets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import rangeset
from .errors import RuleSyntaxError
from .speclist import Entry, SpecParser

PORT_MAX = 65535
_PORT = re.compile(r"^(\d*)\s*(:?)\s*(\d*)$")


@dataclass(frozen=True, slots=True, eq=False)
class PortSet:
    """A compiled port spec: sorted, disjoint, inclusive (start, end) ranges."""

    text: str
    ranges: tuple[rangeset.Range, ...]
    _s: list[int] = field(init=False, repr=False)
    _e: list[int] = field(init=False, repr=False)
    _np_s: np.ndarray = field(init=False, repr=False)
    _np_e: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "_s", [r[0] for r in self.ranges])
        setattr_(self, "_e", [r[1] for r in self.ranges])
        setattr_(self, "_np_s", np.array(self._s, dtype=np.int32))
        setattr_(self, "_np_e", np.array(self._e, dtype=np.int32))

    @property
    def is_any(self) -> bool:
        return self.ranges == ((0, PORT_MAX),)

    @property
    def literal_any(self) -> bool:
        """Written as `any`: Suricata then skips the port test, even for port-less packets."""
        return self.text.strip().lower() == "any"

    def contains(self, port: int) -> bool:
        return rangeset.contains(self._s, self._e, port)

    def mask(self, ports: np.ndarray) -> np.ndarray:
        """Bool mask over an integer array of ports."""
        return rangeset.np_mask(self._np_s, self._np_e, np.asarray(ports, dtype=np.int32))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortSet) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)


def parse_port_literal(item: str) -> list[Entry]:
    """One element: any, N, N:M, N: or :M."""
    if item.lower() == "any":
        return [(0, 0, PORT_MAX)]
    m = _PORT.match(item)
    if not m or (not m.group(1) and not m.group(3)) or (not m.group(2) and not m.group(1)):
        raise RuleSyntaxError(f"invalid port '{item}'")
    if not m.group(2):
        lo = hi = int(m.group(1))
    else:
        lo = int(m.group(1)) if m.group(1) else 0
        hi = int(m.group(3)) if m.group(3) else PORT_MAX
    if hi > PORT_MAX or lo > PORT_MAX or lo > hi:
        raise RuleSyntaxError(f"invalid port '{item}'")
    return [(0, lo, hi)]


class PortParser:
    """Parses and caches port specs for one set of variables."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._spec = SpecParser("port", parse_port_literal, variables, {0: (0, PORT_MAX)},
                                complete_check=0)
        self._cache: dict[str, PortSet] = {}

    def parse(self, text: str) -> PortSet:
        hit = self._cache.get(text)
        if hit is None:
            hit = PortSet(text, self._spec.parse(text)[0])
            self._cache[text] = hit
        return hit


def parse_ports(text: str, variables: Mapping[str, str] | None = None) -> PortSet:
    """Parse one port spec; variables default to Suricata 7's port groups."""
    from .rulevars import DEFAULT_PORT_VARS

    return PortParser(DEFAULT_PORT_VARS if variables is None else variables).parse(text)
