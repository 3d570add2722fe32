"""Non-payload keywords: flow, flowbits, TCP/IP header tests, threshold, detection_filter.

Each parser follows the accepting grammar of Suricata 7.0.10 (checked with `suricata -T`);
the `matches` helpers copy Suricata's match functions so the matcher cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RuleSyntaxError
from .intcmp import IntMatch, parse_uint

# --- flow -----------------------------------------------------------------------------

_FLOW_GROUPS = {
    "to_server": "dir", "from_client": "dir", "to_client": "dir", "from_server": "dir",
    "established": "state", "not_established": "state", "stateless": "state",
    "only_stream": "stream", "no_stream": "stream",
}


@dataclass(frozen=True, slots=True)
class Flow:
    """flow: direction ('to_server'/'to_client'/None), state, stream ('only'/'no'/None)."""

    direction: str | None = None
    established: bool | None = None  # True: established, False: not_established
    stateless: bool = False
    stream: str | None = None


def parse_flow(value: str | None) -> Flow:
    if not value or not value.strip():
        raise RuleSyntaxError("flow needs options")
    seen: dict[str, str] = {}
    for raw in value.split(","):
        opt = raw.strip().lower()
        group = _FLOW_GROUPS.get(opt)
        if group is None:
            raise RuleSyntaxError(f"unsupported flow option '{opt}'")
        if group in seen:
            raise RuleSyntaxError(f"conflicting flow options '{seen[group]}' and '{opt}'")
        seen[group] = opt
    d = seen.get("dir")
    st = seen.get("state")
    s = seen.get("stream")
    return Flow(
        direction=None if d is None else ("to_server" if d in ("to_server", "from_client")
                                          else "to_client"),
        established=None if st in (None, "stateless") else st == "established",
        stateless=st == "stateless",
        stream=None if s is None else s.split("_")[0],
    )


# --- flowbits -------------------------------------------------------------------------

_FB = re.compile(r"^([a-z]+)(?:,\s*(.*))?$", re.S)


@dataclass(frozen=True, slots=True)
class Flowbit:
    """One flowbits command. `names` has several entries only for isset/isnotset with `|`,
    meaning: isset -> any of them is set; isnotset -> any of them is not set (Suricata)."""

    command: str  # set unset toggle isset isnotset
    names: tuple[str, ...]


def parse_flowbits(value: str | None) -> Flowbit | None:
    """Returns None for `flowbits:noalert` (handled by the rule)."""
    m = _FB.match((value or "").strip())
    if not m:
        raise RuleSyntaxError(f"invalid flowbits '{value}'")
    cmd, name = m.group(1), (m.group(2) or "").rstrip()
    if cmd == "noalert":
        if name:
            raise RuleSyntaxError("flowbits:noalert takes no name")
        return None
    if cmd not in ("set", "unset", "toggle", "isset", "isnotset"):
        raise RuleSyntaxError(f"unsupported flowbits command '{cmd}'")
    if not name:
        raise RuleSyntaxError(f"flowbits:{cmd} needs a name")
    if "&" in name:
        raise RuleSyntaxError(f"unsupported flowbits name '{name}' ('&')")
    if "|" in name:
        if cmd not in ("isset", "isnotset"):
            raise RuleSyntaxError(f"flowbits:{cmd} does not support '|' lists")
        names = tuple(n.strip() for n in name.split("|") if n.strip())
    else:
        names = (name,)
    for n in names:
        if re.search(r"\s", n):
            raise RuleSyntaxError(f"spaces not allowed in flowbit name '{n}'")
    return Flowbit(cmd, names)


# --- TCP flags / IP fragbits ----------------------------------------------------------

TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20,
                 "E": 0x40, "C": 0x80, "1": 0x80, "2": 0x40}
_FLAGS = re.compile(r"^\s*([+*!])?\s*([SAPRFU120CE+*!]+)(?:\s*,\s*([SAPRFU12CE]+))?\s*$")


@dataclass(frozen=True, slots=True)
class TcpFlags:
    """flags: modifier '' (exact), '+' (all of), '*' (any of), '!' (not all of);
    `ignore` holds the mask bits (the part after the comma)."""

    flags: int
    modifier: str = ""
    ignore: int = 0

    def matches(self, pflags: int) -> bool:
        """Suricata's FlagsMatch."""
        if not self.flags and pflags:
            return self.modifier == "!"
        f = pflags & ~self.ignore & 0xFF
        if self.modifier == "*":
            return (f & self.flags) > 0
        if self.modifier == "+":
            return (f & self.flags) == self.flags
        if self.modifier == "!":
            return (f & self.flags) != self.flags
        return f == self.flags


def parse_flags(value: str | None) -> TcpFlags:
    m = _FLAGS.match(value or "")
    if not m:
        raise RuleSyntaxError(f"invalid flags '{value}'")
    mod = m.group(1) or ""
    flags = 0
    letters = m.group(2)
    for ch in letters:
        if ch in "+*!":
            if mod:
                raise RuleSyntaxError("flags supports only one modifier")
            mod = ch
        elif ch == "0":
            if len(letters.strip("+*!")) != 1:
                raise RuleSyntaxError(f"flags '0' cannot be combined with flags in '{value}'")
        else:
            flags |= TCP_FLAG_BITS[ch]
    ignore = 0
    for ch in m.group(3) or "":
        ignore |= TCP_FLAG_BITS[ch]
    return TcpFlags(flags, mod, ignore)


FRAG_BITS = {"M": 0x01, "D": 0x02, "R": 0x04}
_FRAGBITS = re.compile(r"^\s*([+*!])?\s*([MDR]+)\s*$")


@dataclass(frozen=True, slots=True)
class FragBits:
    """fragbits over IPv4 MF (0x01), DF (0x02), RF (0x04)."""

    bits: int
    modifier: str = ""

    def matches(self, pbits: int) -> bool:
        """Suricata's FragBitsMatch (note '+' needs at least one extra bit)."""
        if self.modifier == "*":
            return (pbits & self.bits) > 0
        if self.modifier == "+":
            return (pbits & self.bits) == self.bits and pbits - self.bits > 0
        if self.modifier == "!":
            return (pbits & self.bits) != self.bits
        return pbits == self.bits


def parse_fragbits(value: str | None) -> FragBits:
    m = _FRAGBITS.match(value or "")
    if not m:
        raise RuleSyntaxError(f"invalid fragbits '{value}'")
    bits = 0
    for ch in m.group(2):
        bits |= FRAG_BITS[ch]
    return FragBits(bits, m.group(1) or "")


# --- simple numeric header keywords ---------------------------------------------------

_PLAIN = re.compile(r"^\s*(\d+)\s*$")
_NEG_NUM = re.compile(r"^\s*(!?)\s*(\d+)\s*$")
_TOS = re.compile(r"^\s*(!?)\s*(?:(\d{1,3})|[xX]([0-9a-fA-F]{1,2}))\s*$")
_IPPROTO = re.compile(r"^\s*([!<>]?)\s*(\S+)\s*$")

IP_PROTOCOLS = {
    "hopopt": 0, "icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "st": 5, "tcp": 6,
    "egp": 8, "igp": 9, "pup": 12, "udp": 17, "hmp": 20, "xns-idp": 22, "rdp": 27,
    "iso-tp4": 29, "dccp": 33, "xtp": 36, "ddp": 37, "idpr-cmtp": 38, "ipv6": 41,
    "ipv6-route": 43, "ipv6-frag": 44, "idrp": 45, "rsvp": 46, "gre": 47, "esp": 50,
    "ah": 51, "skip": 57, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "rspf": 73,
    "vmtp": 81, "eigrp": 88, "ospf": 89, "ax.25": 93, "ipip": 94, "etherip": 97,
    "encap": 98, "pim": 103, "ipcomp": 108, "vrrp": 112, "l2tp": 115, "isis": 124,
    "sctp": 132, "fc": 133, "mobility-header": 135, "udplite": 136, "mpls-in-ip": 137,
    "manet": 138, "hip": 139, "shim6": 140, "wesp": 141, "rohc": 142, "ethernet": 143,
}


def parse_plain_uint(value: str | None, keyword: str, bits: int) -> int:
    """A bare unsigned number (seq, ack, icmp_id, icmp_seq, id)."""
    m = _PLAIN.match(value or "")
    if not m or int(m.group(1)) >= 1 << bits:
        raise RuleSyntaxError(f"invalid {keyword} value '{value}'")
    return int(m.group(1))


def parse_window(value: str | None) -> IntMatch:
    m = _NEG_NUM.match(value or "")
    if not m or int(m.group(2)) > 0xFFFF:
        raise RuleSyntaxError(f"invalid window value '{value}'")
    return IntMatch("ne" if m.group(1) else "eq", int(m.group(2)))


def parse_tos(value: str | None) -> IntMatch:
    m = _TOS.match(value or "")
    if not m:
        raise RuleSyntaxError(f"invalid tos value '{value}'")
    v = int(m.group(2)) if m.group(2) is not None else int(m.group(3), 16)
    if v > 255:
        raise RuleSyntaxError(f"invalid tos value '{value}'")
    return IntMatch("ne" if m.group(1) else "eq", v)


def parse_ip_proto(value: str | None) -> IntMatch:
    m = _IPPROTO.match(value or "")
    if not m:
        raise RuleSyntaxError(f"invalid ip_proto value '{value}'")
    name = m.group(2)
    if name.isdigit():
        num = int(name)
    else:
        num = IP_PROTOCOLS.get(name.lower(), -1)
    if not 0 <= num <= 255:
        raise RuleSyntaxError(f"invalid ip_proto value '{value}'")
    mode = {"": "eq", "!": "ne", "<": "lt", ">": "gt"}[m.group(1)]
    return IntMatch(mode, num)


def parse_u8(value: str | None, keyword: str) -> IntMatch:
    return parse_uint(value or "", 8, keyword)


def parse_u16(value: str | None, keyword: str) -> IntMatch:
    return parse_uint(value or "", 16, keyword)


# --- stream_size ----------------------------------------------------------------------

_STREAM_SIZE = re.compile(r"^ *([A-Za-z]*) *, *(>=|<=|>|<|!=|!|=) *, *(\d+) *$")
STREAM_SIZE_SIDES = ("server", "client", "both", "either")


@dataclass(frozen=True, slots=True)
class StreamSize:
    """stream_size: side ('server'/'client'/'both'/'either') and the comparison of that
    side's `next_seq - isn` (unsigned 32 bit, as Suricata's DetectStreamSizeMatch)."""

    side: str
    cmp: IntMatch


def parse_stream_size(value: str | None) -> StreamSize:
    """Suricata 7.0.10's grammar (rust detect_parse_stream_size, checked with `suricata
    -T`): lowercase side, an operator (no bare number, no range), a decimal u32; spaces
    (not tabs) around the commas."""
    m = _STREAM_SIZE.match(value or "")
    if not m or m.group(1) not in STREAM_SIZE_SIDES or int(m.group(3)) > 0xFFFFFFFF:
        raise RuleSyntaxError(f"invalid stream_size '{value}' (want "
                              "<server|client|both|either>,<op>,<number>)")
    mode = {"=": "eq", "!": "ne", "!=": "ne", "<": "lt", "<=": "le", ">": "gt",
            ">=": "ge"}[m.group(2)]
    return StreamSize(m.group(1), IntMatch(mode, int(m.group(3))))


# --- threshold / detection_filter -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Threshold:
    """threshold (type limit/threshold/both) or detection_filter (type 'detection_filter')."""

    type: str
    track: str
    count: int
    seconds: int


def _kv_options(value: str | None, keyword: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (value or "").split(","):
        bits = part.split()
        if len(bits) != 2 or bits[0] in out:
            raise RuleSyntaxError(f"invalid {keyword} '{value}'")
        out[bits[0]] = bits[1]
    return out


def _count_seconds(opts: dict[str, str], keyword: str, value: str | None) -> tuple[int, int]:
    c, s = opts.get("count", ""), opts.get("seconds", "")
    if not c.isdigit() or not s.isdigit() or int(c) < 1:
        raise RuleSyntaxError(f"invalid {keyword} count/seconds in '{value}'")
    return int(c), int(s)


def parse_threshold(value: str | None) -> Threshold:
    opts = _kv_options(value, "threshold")
    if set(opts) != {"type", "track", "count", "seconds"}:
        raise RuleSyntaxError(f"threshold needs type, track, count and seconds: '{value}'")
    if opts["type"] not in ("limit", "threshold", "both"):
        raise RuleSyntaxError(f"unsupported threshold type '{opts['type']}'")
    if opts["track"] not in ("by_src", "by_dst", "by_rule", "by_both"):
        raise RuleSyntaxError(f"unsupported threshold track '{opts['track']}'")
    count, seconds = _count_seconds(opts, "threshold", value)
    return Threshold(opts["type"], opts["track"], count, seconds)


def parse_detection_filter(value: str | None) -> Threshold:
    opts = _kv_options(value, "detection_filter")
    if set(opts) != {"track", "count", "seconds"}:
        raise RuleSyntaxError(f"detection_filter needs track, count and seconds: '{value}'")
    if opts["track"] not in ("by_src", "by_dst"):
        raise RuleSyntaxError(f"unsupported detection_filter track '{opts['track']}'")
    count, seconds = _count_seconds(opts, "detection_filter", value)
    return Threshold("detection_filter", opts["track"], count, seconds)


# --- metadata / reference -------------------------------------------------------------

def parse_metadata(value: str | None) -> tuple[tuple[str, str], ...]:
    out = []
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, _, val = part.partition(" ")
        out.append((key, val.strip()))
    if not out:
        raise RuleSyntaxError("empty metadata")
    return tuple(out)


_REF = re.compile(r"^\s*([^\s,]+)\s*,\s*(.+?)\s*$")


def parse_reference(value: str | None) -> tuple[str, str]:
    m = _REF.match(value or "")
    if not m:
        raise RuleSyntaxError(f"invalid reference '{value}'")
    return m.group(1), m.group(2)
