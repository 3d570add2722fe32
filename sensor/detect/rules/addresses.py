"""Address specs (`any`, CIDRs, ranges, lists, negation, $VARS) compiled to range sets.

IPv4 and IPv6 are kept apart as sorted disjoint (start, end) integer ranges, so a rule's
address test is one binary search, and a whole batch of IPv4 addresses one searchsorted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import rangeset
from .errors import RuleSyntaxError
from .speclist import Entry, SpecParser

V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1


@dataclass(frozen=True, slots=True, eq=False)
class AddressSet:
    """A compiled address spec. `v4`/`v6`: sorted, disjoint, inclusive integer ranges."""

    text: str
    v4: tuple[rangeset.Range, ...]
    v6: tuple[rangeset.Range, ...]
    _v4s: list[int] = field(init=False, repr=False)
    _v4e: list[int] = field(init=False, repr=False)
    _v6s: list[int] = field(init=False, repr=False)
    _v6e: list[int] = field(init=False, repr=False)
    _np_s: np.ndarray = field(init=False, repr=False)
    _np_e: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "_v4s", [r[0] for r in self.v4])
        setattr_(self, "_v4e", [r[1] for r in self.v4])
        setattr_(self, "_v6s", [r[0] for r in self.v6])
        setattr_(self, "_v6e", [r[1] for r in self.v6])
        setattr_(self, "_np_s", np.array(self._v4s, dtype=np.uint32))
        setattr_(self, "_np_e", np.array(self._v4e, dtype=np.uint32))

    @property
    def is_any(self) -> bool:
        """True when every IPv4 and IPv6 address matches (lets the matcher skip the test)."""
        return self.v4 == ((0, V4_MAX),) and self.v6 == ((0, V6_MAX),)

    def contains(self, addr: int, is_v6: bool) -> bool:
        """Membership of one address given as an integer (host order)."""
        if is_v6:
            return rangeset.contains(self._v6s, self._v6e, addr)
        return rangeset.contains(self._v4s, self._v4e, addr)

    def mask_v4(self, addrs: np.ndarray) -> np.ndarray:
        """Bool mask over a uint32 array of IPv4 addresses (host order)."""
        return rangeset.np_mask(self._np_s, self._np_e, np.asarray(addrs, dtype=np.uint32))

    def mask_v6(self, addrs: list[int] | np.ndarray) -> np.ndarray:
        """Bool mask over IPv6 addresses given as Python ints (or an object array of them)."""
        return np.fromiter((self.contains(int(a), True) for a in addrs), dtype=bool,
                           count=len(addrs))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AddressSet) and (self.v4, self.v6) == (other.v4, other.v6)

    def __hash__(self) -> int:
        return hash((self.v4, self.v6))


def _v4_mask_to_len(mask: str, item: str) -> int:
    try:
        m = int(ipaddress.IPv4Address(mask))
    except ValueError as e:
        raise RuleSyntaxError(f"invalid netmask in address '{item}'") from e
    n = bin(m).count("1")
    if m != (V4_MAX << (32 - n)) & V4_MAX:
        raise RuleSyntaxError(f"non-contiguous netmask in address '{item}'")
    return n


def parse_address_literal(item: str) -> list[Entry]:
    """One element: any, IP, IP/len, IPv4/netmask or IP-IP."""
    if item.lower() == "any":
        return [(4, 0, V4_MAX), (6, 0, V6_MAX)]
    try:
        if "-" in item:
            a, b = (ipaddress.ip_address(x.strip()) for x in item.split("-", 1))
            if a.version != b.version or int(a) > int(b):
                raise ValueError
            return [(a.version, int(a), int(b))]
        if "/" in item:
            addr, plen = item.split("/", 1)
            ip = ipaddress.ip_address(addr)
            if ip.version == 4 and "." in plen:
                plen = str(_v4_mask_to_len(plen, item))
            if not plen.isdigit():
                raise ValueError
            net = ipaddress.ip_network(f"{addr}/{int(plen)}", strict=False)
            return [(net.version, int(net.network_address), int(net.broadcast_address))]
        ip = ipaddress.ip_address(item)
        return [(ip.version, int(ip), int(ip))]
    except ValueError as e:
        raise RuleSyntaxError(f"invalid address '{item}'") from e


class AddressParser:
    """Parses and caches address specs for one set of variables."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._spec = SpecParser("address", parse_address_literal, variables,
                                {4: (0, V4_MAX), 6: (0, V6_MAX)}, complete_check=4)
        self._cache: dict[str, AddressSet] = {}

    def parse(self, text: str) -> AddressSet:
        hit = self._cache.get(text)
        if hit is None:
            fams = self._spec.parse(text)
            hit = AddressSet(text, fams[4], fams[6])
            self._cache[text] = hit
        return hit


def parse_addresses(text: str, variables: Mapping[str, str] | None = None) -> AddressSet:
    """Parse one address spec; variables default to Suricata 7's address groups."""
    from .rulevars import DEFAULT_ADDRESS_VARS

    return AddressParser(DEFAULT_ADDRESS_VARS if variables is None else variables).parse(text)
