"""Suricata 7 rule text -> frozen `Rule` objects.

Only the packet-level subset is accepted (protocols ip/tcp/udp/icmp, payload content/pcre,
header keywords, flow, flowbits, stream_size, thresholds, and netsensor's
`ml.class`/`ml.score` on the model's flow verdict). Anything else is rejected with the
keyword named, because a rule silently loaded with a different meaning is worse than no rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .addresses import AddressParser, AddressSet
from .content import CONTENT_MODIFIERS, PayloadBuilder, PayloadMatch
from .errors import RuleSyntaxError, unsupported_keyword
from .intcmp import IntMatch
from .keywords import (
    Flow,
    Flowbit,
    FragBits,
    StreamSize,
    TcpFlags,
    Threshold,
    parse_detection_filter,
    parse_flags,
    parse_flow,
    parse_flowbits,
    parse_fragbits,
    parse_ip_proto,
    parse_metadata,
    parse_plain_uint,
    parse_reference,
    parse_stream_size,
    parse_threshold,
    parse_tos,
    parse_u8,
    parse_u16,
    parse_window,
)
from .mlverdict import MlClass, MlScore, parse_ml_class, parse_ml_score
from .ports import PortParser, PortSet
from .rulevars import RuleVars, make_vars

ACTIONS = frozenset({"alert", "pass", "drop", "reject"})
PROTOCOLS = frozenset({"ip", "tcp", "udp", "icmp"})
DIRECTIONS = frozenset({"->", "<>"})

# keyword -> Rule field for keywords that may appear once.
_SINGLE = {
    "msg": "msg", "sid": "sid", "rev": "rev", "gid": "gid", "classtype": "classtype",
    "priority": "priority", "target": "target", "flow": "flow", "dsize": "dsize",
    "ttl": "ttl", "itype": "itype", "icode": "icode", "icmp_id": "icmp_id",
    "icmp_seq": "icmp_seq", "ip_proto": "ip_proto", "id": "ip_id", "window": "window",
    "seq": "seq", "ack": "ack", "tos": "tos", "sameip": "sameip", "flags": "flags",
    "fragbits": "fragbits", "threshold": "threshold", "detection_filter": "detection_filter",
    "ml.class": "ml_class", "ml.score": "ml_score",  # netsensor: the model's flow verdict
}
SUPPORTED_KEYWORDS = frozenset(_SINGLE) | CONTENT_MODIFIERS | frozenset(
    {"content", "pcre", "isdataat", "metadata", "reference", "flowbits", "noalert",
     "stream_size"})
_NO_VALUE = frozenset({"sameip", "noalert", "nocase", "rawbytes"})


@dataclass(frozen=True, slots=True)
class Rule:
    """One loaded rule.

    `action` is kept as written (drop/reject raise alerts in IDS mode: see `alert_action`).
    `proto` 'icmp' covers ICMPv4 and ICMPv6, 'ip' every protocol, as in Suricata.
    `payload` holds Content/Pcre/IsDataAt in rule order. Header tests are None when absent.
    Ports (Suricata's rule): unless both port specs are literally `any`
    (`PortSet.literal_any`), only TCP/UDP/SCTP non-fragment packets can match.
    """

    action: str
    proto: str
    src: AddressSet
    src_ports: PortSet
    direction: str
    dst: AddressSet
    dst_ports: PortSet
    sid: int
    gid: int = 1
    rev: int = 0
    msg: str = ""
    classtype: str | None = None
    priority: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    references: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    flow: Flow | None = None
    flowbits: tuple[Flowbit, ...] = ()
    noalert: bool = False
    payload: tuple[PayloadMatch, ...] = ()
    dsize: IntMatch | None = None
    ttl: IntMatch | None = None
    itype: IntMatch | None = None
    icode: IntMatch | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    ip_proto: IntMatch | None = None
    ip_id: int | None = None
    window: IntMatch | None = None
    seq: int | None = None
    ack: int | None = None
    tos: IntMatch | None = None
    sameip: bool = False
    flags: TcpFlags | None = None
    fragbits: FragBits | None = None
    stream_size: tuple[StreamSize, ...] = ()  # all must hold (Suricata allows several)
    threshold: Threshold | None = None
    detection_filter: Threshold | None = None
    ml_class: MlClass | None = None
    ml_score: MlScore | None = None
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)
    raw: str = field(default="", compare=False, repr=False)

    @property
    def bidirectional(self) -> bool:
        return self.direction == "<>"

    @property
    def alert_action(self) -> str:
        """What an IDS logs: 'pass' for pass rules, else 'alert' (drop/reject included)."""
        return "pass" if self.action == "pass" else "alert"


@dataclass(frozen=True, slots=True)
class RawRule:
    """A rule's text joined from its physical lines, with its first line number."""

    text: str
    line: int


def iter_raw_rules(lines: Iterator[str] | list[str]) -> Iterator[RawRule]:
    """Join `\\`-continued lines and drop blank lines and comments (incl. `#alert ...`)."""
    buf: list[str] = []
    start = 0
    for lineno, line in enumerate(lines, 1):
        stripped = line.rstrip()
        if not buf:
            start = lineno
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        text = "".join(buf)
        buf = []
        s = text.strip()
        if s and not s.startswith("#"):
            yield RawRule(text, start)
    if buf:
        text = "".join(buf)
        if text.strip() and not text.strip().startswith("#"):
            yield RawRule(text, start)


_OPT_SPLIT = re.compile(r"(?<!\\);")
_SID = re.compile(r"(?:^|[;(])\s*sid\s*:\s*(\d+)\s*(?=;)")
_KEYWORD = re.compile(r"^[A-Za-z0-9_.\-]+$")


def guess_sid(text: str) -> int | None:
    """The sid of a rule that may not parse, for error messages."""
    m = _SID.search(text)
    return int(m.group(1)) if m else None


def split_options(body: str) -> list[tuple[str, str | None]]:
    """`k:v; k; ...` -> [(k, v), (k, None)]; a `;` preceded by `\\` does not split (Suricata)."""
    parts = _OPT_SPLIT.split(body)
    if parts[-1].strip():
        raise RuleSyntaxError(f"no terminating ';' after '{parts[-1].strip()}'")
    out: list[tuple[str, str | None]] = []
    for p in parts[:-1]:
        name, colon, value = p.partition(":")
        name = name.strip()
        if not _KEYWORD.match(name):
            raise RuleSyntaxError(f"invalid option '{p.strip()}'")
        out.append((name, value.strip() if colon else None))
    return out


def split_header(header: str) -> list[str]:
    """Whitespace split that keeps `[a, b]` lists together."""
    tokens: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in header:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch.isspace() and depth == 0:
            if cur:
                tokens.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        tokens.append("".join(cur))
    return tokens


def _quoted(value: str | None, keyword: str) -> str:
    v = (value or "").strip()
    if len(v) < 2 or v[0] != '"' or v[-1] != '"':
        raise RuleSyntaxError(f"{keyword} value must be double quoted")
    out = []
    esc = False
    for ch in v[1:-1]:
        if esc:
            if ch not in '\\";:':
                raise RuleSyntaxError(f"invalid escape '\\{ch}' in {keyword}")
            out.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        else:
            out.append(ch)
    if esc:
        raise RuleSyntaxError(f"trailing backslash in {keyword}")
    return "".join(out)


def _number(value: str | None, keyword: str, lo: int, hi: int) -> int:
    v = (value or "").strip()
    if not v.isdigit() or not lo <= int(v) <= hi:
        raise RuleSyntaxError(f"invalid {keyword} value '{value}'")
    return int(v)


class RuleParser:
    """Parses rules against one set of variables, caching compiled address/port specs."""

    def __init__(self, variables: RuleVars | dict | None = None) -> None:
        self.vars = make_vars(variables)
        self._addr = AddressParser(self.vars.addresses)
        self._port = PortParser(self.vars.ports)

    def parse(self, text: str, file: str = "", line: int = 0) -> Rule:
        """Parse one rule; raises RuleSyntaxError naming what is wrong."""
        if text[:1].isspace():
            raise RuleSyntaxError("rule starts with whitespace (Suricata ignores such lines)")
        s = text.strip()
        open_ = s.find("(")
        if open_ < 0 or not s.endswith(")"):
            raise RuleSyntaxError("rule must be 'header (options)'")
        tokens = split_header(s[:open_])
        if len(tokens) != 7:
            raise RuleSyntaxError(f"bad rule header '{s[:open_].strip()}'")
        action, proto, src, sp, direction, dst, dp = tokens
        action, proto = action.lower(), proto.lower()
        if action not in ACTIONS:
            raise RuleSyntaxError(f"unsupported action '{action}'")
        if proto not in PROTOCOLS:
            raise RuleSyntaxError(f"unsupported protocol '{proto}'")
        if direction not in DIRECTIONS:
            raise RuleSyntaxError(f"invalid direction '{direction}'")
        options = split_options(s[open_ + 1:-1])
        if not options:
            raise RuleSyntaxError("no rule options")
        for name, _ in options:
            if name.lower() not in SUPPORTED_KEYWORDS:
                raise unsupported_keyword(name)
        src_set, dst_set = self._addr.parse(src), self._addr.parse(dst)
        sp_set, dp_set = self._port.parse(sp), self._port.parse(dp)
        fields = _parse_options(options, proto)
        return Rule(action=action, proto=proto, src=src_set, src_ports=sp_set,
                    direction=direction, dst=dst_set, dst_ports=dp_set, file=file, line=line,
                    raw=s, **fields)


def _parse_options(options: list[tuple[str, str | None]], proto: str) -> dict:
    f: dict = {}
    payload = PayloadBuilder()
    flowbits: list[Flowbit] = []
    metadata: list[tuple[str, str]] = []
    refs: list[tuple[str, str]] = []
    stream_size: list[StreamSize] = []
    noalert = False
    for raw_name, value in options:
        kw = raw_name.lower()
        if kw in _NO_VALUE and value is not None:
            raise RuleSyntaxError(f"'{kw}' takes no value")
        if kw in _SINGLE and _SINGLE[kw] in f:
            raise RuleSyntaxError(f"duplicate '{kw}'")
        if kw == "content":
            payload.add_content(value or "")
        elif kw in CONTENT_MODIFIERS:
            payload.modify(kw, value)
        elif kw == "pcre":
            payload.add_pcre(value or "")
        elif kw == "isdataat":
            payload.add_isdataat(value or "")
        elif kw == "metadata":
            metadata.extend(parse_metadata(value))
        elif kw == "reference":
            refs.append(parse_reference(value))
        elif kw == "flowbits":
            fb = parse_flowbits(value)
            if fb is None:
                noalert = True
            else:
                flowbits.append(fb)
        elif kw == "noalert":
            noalert = True
        elif kw == "stream_size":
            stream_size.append(parse_stream_size(value))
        else:
            f[_SINGLE[kw]] = _single(kw, value, proto)
    if "sid" not in f:
        raise RuleSyntaxError("missing sid")
    if "threshold" in f and "detection_filter" in f:
        raise RuleSyntaxError("threshold and detection_filter cannot be used together")
    _check_flowbits(flowbits)
    f.update(payload=payload.finish(), flowbits=tuple(flowbits), metadata=tuple(metadata),
             references=tuple(refs), noalert=noalert, stream_size=tuple(stream_size))
    return f


def _check_flowbits(flowbits: list[Flowbit]) -> None:
    isset = {n for fb in flowbits if fb.command == "isset" for n in fb.names}
    isnotset = {n for fb in flowbits if fb.command == "isnotset" for n in fb.names}
    both = isset & isnotset
    if both:
        raise RuleSyntaxError(f"flowbits isset and isnotset on '{sorted(both)[0]}'")


def _single(kw: str, value: str | None, proto: str) -> object:
    """Parse a keyword that maps to one Rule field."""
    if kw == "msg":
        return _quoted(value, "msg")
    if kw == "sid":
        return _number(value, "sid", 1, 0xFFFFFFFF)
    if kw == "rev":
        return _number(value, "rev", 1, 0xFFFFFFFF)
    if kw == "gid":
        return _number(value, "gid", 0, 0xFFFFFFFF)
    if kw == "priority":
        return _number(value, "priority", 0, 0x7FFFFFFF)
    if kw == "classtype":
        v = (value or "").strip()
        if not re.match(r"^[A-Za-z0-9_\-]+$", v):
            raise RuleSyntaxError(f"invalid classtype '{value}'")
        return v.lower()
    if kw == "target":
        v = (value or "").strip()
        if v not in ("src_ip", "dest_ip"):
            raise RuleSyntaxError(f"invalid target '{value}'")
        return v
    if kw == "flow":
        return parse_flow(value)
    if kw == "dsize":
        return parse_u16(value, "dsize")
    if kw in ("ttl", "itype", "icode"):
        return parse_u8(value, kw)
    if kw in ("icmp_id", "icmp_seq", "id"):
        return parse_plain_uint(value, kw, 16)
    if kw in ("seq", "ack"):
        return parse_plain_uint(value, kw, 32)
    if kw == "ip_proto":
        if proto != "ip":
            raise RuleSyntaxError(f"ip_proto needs protocol 'ip' in the header, not '{proto}'")
        return parse_ip_proto(value)
    if kw == "window":
        return parse_window(value)
    if kw == "tos":
        return parse_tos(value)
    if kw == "sameip":
        return True
    if kw == "flags":
        return parse_flags(value)
    if kw == "fragbits":
        return parse_fragbits(value)
    if kw == "threshold":
        return parse_threshold(value)
    if kw == "detection_filter":
        return parse_detection_filter(value)
    if kw == "ml.class":
        return parse_ml_class(value)
    if kw == "ml.score":
        return parse_ml_score(value)
    raise unsupported_keyword(kw)  # pragma: no cover - table and dispatch kept in step


def parse_rule(text: str, variables: RuleVars | dict | None = None, file: str = "",
               line: int = 0) -> Rule:
    """Convenience: parse one rule with a fresh parser (use RuleParser for many rules)."""
    return RuleParser(variables).parse(text, file, line)
