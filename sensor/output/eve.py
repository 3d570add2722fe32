"""EVE JSON event builders: field names and formats as Suricata 7 writes them.

SIEM parsers (Filebeat's Suricata module, Wazuh, Splunk add-ons) key on the exact field
paths, so everything here mirrors Suricata 7.0.10: `timestamp` with a +0000 offset,
`flow_id` below 2^53, IPv6 addresses fully expanded, integers never as floats.
All times are written in UTC.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from ..community_id import community_id
from ..flow import STATE_NAMES, EndedFlows
from .stats_keys import STATS_KEYS

PROTO_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH",
               58: "IPv6-ICMP", 132: "SCTP", 41: "IPv6", 4: "IP-ENCAP", 103: "PIM", 112: "VRRP"}
PORT_PROTOS = (6, 17, 132)
ICMP_PROTOS = (1, 58)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@lru_cache(maxsize=4096)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def fmt_ts(ts_us: int) -> str:
    """`2024-06-09T15:04:36.123456+0000`, as Suricata prints it with TZ=UTC."""
    sec, usec = divmod(int(ts_us), 1_000_000)
    return f"{_second(sec)}.{usec:06d}+0000"


def ip_bytes(ipver: int, hi: int, lo: int) -> bytes:
    if ipver == 4:
        return struct.pack("!I", lo)
    return struct.pack("!QQ", hi, lo)


@lru_cache(maxsize=65536)
def ip_str(ipver: int, hi: int, lo: int) -> str:
    if ipver == 4:
        return socket.inet_ntoa(struct.pack("!I", lo))
    return ipaddress.IPv6Address((hi << 64) | lo).exploded


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def _icmp_type_code(port: int) -> tuple[int, int]:
    # ICMP flows keep (type, code) in the port fields, little-endian as Suricata does
    return port & 0xFF, port >> 8


def flow_events(ended: EndedFlows, extra: Callable[[dict[str, Any], int], None] | None = None,
                with_community_id: bool = True, cid_seed: int = 0) -> list[str]:
    """One EVE `flow` line per ended flow. `extra(event, i)` may add keys (metadata)."""
    c = {k: v.tolist() for k, v in ended.cols.items()}
    out: list[str] = []
    reason = ended.reason
    emergency = reason == "forced"
    ts_list = ended.ts_us.tolist()
    for i in range(len(ended)):
        ipver = c["ipver"][i]
        proto = c["proto"][i]
        src = ip_str(ipver, c["cli_hi"][i], c["cli_lo"][i])
        dst = ip_str(ipver, c["srv_hi"][i], c["srv_lo"][i])
        first, last = c["first_ts"][i], c["last_ts"][i]
        ev: dict[str, Any] = {
            "timestamp": fmt_ts(ts_list[i]),
            "flow_id": c["flow_id"][i],
            "event_type": "flow",
        }
        vlan = [v for v in (c["vlan0"][i], c["vlan1"][i]) if v]
        if vlan:
            ev["vlan"] = vlan
        ev["src_ip"] = src
        if proto in PORT_PROTOS:
            ev["src_port"] = c["cli_port"][i]
        ev["dest_ip"] = dst
        if proto in PORT_PROTOS:
            ev["dest_port"] = c["srv_port"][i]
        ev["proto"] = proto_name(proto)
        if proto in ICMP_PROTOS:
            t, code = _icmp_type_code(c["cli_port"][i])
            ev["icmp_type"] = t
            ev["icmp_code"] = code
            if c["pkts_tc"][i]:
                rt, rcode = _icmp_type_code(c["srv_port"][i])
                ev["response_icmp_type"] = rt
                ev["response_icmp_code"] = rcode
        flow = {
            "pkts_toserver": c["pkts_ts"][i],
            "pkts_toclient": c["pkts_tc"][i],
            "bytes_toserver": c["bytes_ts"][i],
            "bytes_toclient": c["bytes_tc"][i],
            "start": fmt_ts(first),
            "end": fmt_ts(last),
            "age": (last // 1_000_000) - (first // 1_000_000),
            "state": STATE_NAMES[c["state"][i]],
            "reason": reason,
            "alerted": bool(c["alerted"][i]),
        }
        if emergency:
            flow["emergency"] = True
        ev["flow"] = flow
        if extra is not None:
            extra(ev, i)
        if proto == 6:
            fts, ftc = c["flags_ts"][i], c["flags_tc"][i]
            ev["tcp"] = _tcp_flags(fts | ftc, fts, ftc)
        if with_community_id:
            sport, dport = c["cli_port"][i], c["srv_port"][i]
            if proto in ICMP_PROTOS:
                sport, dport = _icmp_type_code(sport)
            elif proto not in PORT_PROTOS:
                sport = dport = 0
            ev["community_id"] = community_id(
                ip_bytes(ipver, c["cli_hi"][i], c["cli_lo"][i]),
                ip_bytes(ipver, c["srv_hi"][i], c["srv_lo"][i]), proto, sport, dport, cid_seed,
            )
        out.append(_dumps(ev))
    return out


_FLAG_NAMES = ((0x01, "fin"), (0x02, "syn"), (0x04, "rst"), (0x08, "psh"), (0x10, "ack"),
               (0x20, "urg"), (0x40, "ecn"), (0x80, "cwr"))


def _tcp_flags(all_: int, ts: int, tc: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tcp_flags": f"{all_:02x}", "tcp_flags_ts": f"{ts:02x}", "tcp_flags_tc": f"{tc:02x}",
    }
    for bit, name in _FLAG_NAMES:
        if all_ & bit:
            out[name] = True
    return out


def stats_event(ts_us: int, uptime: int, counters: dict[str, int]) -> str:
    """An EVE `stats` line holding the counters the Suricata schema knows."""
    stats: dict[str, Any] = {"uptime": int(uptime)}
    for name in sorted(counters):
        if name not in STATS_KEYS and not name.startswith("capture."):
            continue
        node = stats
        parts = name.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = int(counters[name])
    return _dumps({"timestamp": fmt_ts(ts_us), "event_type": "stats", "stats": stats})


def to_int(v: Any) -> Any:
    """numpy scalars to Python ints, so json never sees a float-like type."""
    return int(v) if isinstance(v, np.integer) else v


def dumps(event: dict[str, Any]) -> str:
    return _dumps(event)
