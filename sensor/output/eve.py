"""EVE JSON event builders: field names and formats as Suricata 7 writes them.

SIEM parsers (Filebeat's Suricata module, Wazuh, Splunk add-ons) key on the exact field
paths, so everything here mirrors Suricata 7.0.10: `timestamp` with a +0000 offset,
`flow_id` below 2^53, IPv6 addresses fully expanded, integers never as floats.
All times are written in UTC.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import socket
import struct
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from ..community_id import ICMP4_COUNTERPART, ICMP6_COUNTERPART, community_id
from ..decode import counterpart_table
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
    if extra is None:
        return flow_lines(ended, with_community_id, cid_seed)
    return flow_events_dicts(ended, extra, with_community_id, cid_seed)


def flow_events_dicts(ended: EndedFlows,
                      extra: Callable[[dict[str, Any], int], None] | None = None,
                      with_community_id: bool = True, cid_seed: int = 0) -> list[str]:
    """flow_events() one dict per flow: the reference flow_lines() must match, and the path
    for stages that add keys."""
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


# -- bulk flow lines ----------------------------------------------------------------------------
# Building a dict per flow and running json over it dominated replay time; flow lines have a
# fixed shape, so the fast path writes them with one f-string per flow from column lists,
# formatting each distinct address and second only once. It writes exactly the bytes the
# dict path writes (tests/test_eve_bulk.py compares the two); the dict path remains for
# stages that add keys to flow events (`extra`).

_PROTO_STR = [proto_name(p) for p in range(256)]
_STATE_STR = list(STATE_NAMES)
_TCP_PART: dict[int, str] = {}


def _tcp_part(key: int) -> str:
    s = _TCP_PART.get(key)
    if s is None:
        ts, tc = key >> 8, key & 0xFF
        s = _TCP_PART[key] = ',"tcp":' + _dumps(_tcp_flags(ts | tc, ts, tc))
    return s


def _ip_strings(ipver: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Object array of address strings (as ip_str); each distinct address is formatted once."""
    out = np.empty(len(ipver), dtype=object)
    v4 = ipver == 4
    if v4.any():
        uniq, inv = np.unique(lo[v4], return_inverse=True)
        names = [_V4_NAMES.get(a) or _v4_name(a) for a in uniq.tolist()]
        out[v4] = np.array(names + [""], dtype=object)[:-1][inv]
    v6 = ~v4
    if v6.any():
        pair = np.stack([hi[v6], lo[v6]], axis=1)
        uniq, inv = np.unique(pair.view([("h", np.uint64), ("l", np.uint64)]).ravel(),
                              return_inverse=True)
        names = [_V6_NAMES.get(k) or _v6_exploded(*k) for k in uniq.tolist()]
        out[v6] = np.array(names + [""], dtype=object)[:-1][inv.ravel()]
    return out


# addresses already formatted: flows of one host end in many batches
_V4_NAMES: dict[int, str] = {}
_V6_NAMES: dict[tuple[int, int], str] = {}
_NAME_CACHE_MAX = 1 << 16


def _v4_name(a: int) -> str:
    if len(_V4_NAMES) >= _NAME_CACHE_MAX:
        _V4_NAMES.clear()
    s = _V4_NAMES[a] = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
    return s


def _v6_exploded(hi: int, lo: int) -> str:
    """ipaddress.IPv6Address((hi << 64) | lo).exploded, without the object."""
    if len(_V6_NAMES) >= _NAME_CACHE_MAX:
        _V6_NAMES.clear()
    h = f"{hi:016x}{lo:016x}"
    s = _V6_NAMES[(hi, lo)] = ":".join(
        [h[0:4], h[4:8], h[8:12], h[12:16], h[16:20], h[20:24], h[24:28], h[28:32]])
    return s


def _seconds(ts_us: np.ndarray) -> tuple[list[str], list[int]]:
    """Per timestamp: the formatted second and the microseconds (fmt_ts in two parts)."""
    sec = ts_us // 1_000_000
    uniq, inv = np.unique(sec, return_inverse=True)
    names = np.array([_second(s) for s in uniq.tolist()] + [""], dtype=object)[:-1]
    return names[inv].tolist(), (ts_us - sec * 1_000_000).tolist()


def community_ids(ipver: np.ndarray, proto: np.ndarray, src_hi: np.ndarray,
                  src_lo: np.ndarray, dst_hi: np.ndarray, dst_lo: np.ndarray,
                  sport: np.ndarray, dport: np.ndarray, seed: int = 0) -> np.ndarray:
    """Community ID v1 of many flows at once (object array of str), as community_id() does.

    ICMP flows pass (type, code) in sport/dport; ports of protocols without ports are ignored.
    """
    n = len(ipver)
    out = np.empty(n, dtype=object)
    proto = proto.astype(np.int64)
    sport = sport.astype(np.int64)
    dport = dport.astype(np.int64)
    with_ports = np.isin(proto, list(_CID_PORT_PROTOS))
    one_way = np.zeros(n, dtype=bool)
    for pnum, table in ((1, _CID_ICMP4), (58, _CID_ICMP6)):
        m = proto == pnum
        if m.any():
            t = np.clip(sport, 0, 255)
            has = table[1][t]
            dport = np.where(m & has, table[0][t], dport)
            one_way |= m & ~has
    # order endpoints: (address, port) ascending, as bytes compare in community_id()
    gt_addr = (src_hi > dst_hi) | ((src_hi == dst_hi) & (src_lo > dst_lo))
    eq_addr = (src_hi == dst_hi) & (src_lo == dst_lo)
    swap = np.where(with_ports, ~one_way & (gt_addr | (eq_addr & (sport > dport))), gt_addr)
    a_hi, a_lo = np.where(swap, dst_hi, src_hi), np.where(swap, dst_lo, src_lo)
    b_hi, b_lo = np.where(swap, src_hi, dst_hi), np.where(swap, src_lo, dst_lo)
    a_p, b_p = np.where(swap, dport, sport), np.where(swap, sport, dport)
    sha1 = hashlib.sha1
    for ver in (4, 6):
        for ports in (True, False):
            m = (ipver == ver) & (with_ports == ports)
            if not m.any():
                continue
            k = int(np.count_nonzero(m))
            alen = 4 if ver == 4 else 16
            cols = [np.full(k, seed, dtype=">u2").view(np.uint8).reshape(k, 2)]
            for h, lo_ in ((a_hi, a_lo), (b_hi, b_lo)):
                if ver == 4:
                    cols.append(lo_[m].astype(">u4").view(np.uint8).reshape(k, 4))
                else:
                    cols.append(np.stack([h[m], lo_[m]], axis=1).astype(">u8")
                                .view(np.uint8).reshape(k, 16))
            cols.append(np.stack([proto[m], np.zeros(k, dtype=np.int64)], axis=1)
                        .astype(np.uint8))
            if ports:
                cols.append(np.stack([a_p[m], b_p[m]], axis=1).astype(">u2")
                            .view(np.uint8).reshape(k, 4))
            rows = np.concatenate(cols, axis=1)
            width = rows.shape[1]
            assert width == 2 + 2 * alen + (6 if ports else 2)
            keys = rows.view(np.dtype((np.void, width))).ravel().tolist()  # bytes per row
            # 20-byte digests padded to 21 encode to 28 characters; the 28th ('A' for the
            # zero pad) is the '=' that base64 writes for a lone 20-byte digest
            digests = b"\0".join([sha1(key).digest() for key in keys]) + b"\0"
            text = base64.b64encode(digests).decode("ascii")
            out[m] = [f"1:{text[i : i + 27]}=" for i in range(0, 28 * k, 28)]
    return out


_CID_PORT_PROTOS = (6, 17, 132, 1, 58)
_CID_ICMP4 = counterpart_table(ICMP4_COUNTERPART)  # the Community ID spec's pairs
_CID_ICMP6 = counterpart_table(ICMP6_COUNTERPART)


def flow_lines(ended: EndedFlows, with_community_id: bool = True, cid_seed: int = 0,
               after_flow: list[str] | None = None) -> list[str]:
    """The EVE `flow` lines of ended flows, byte for byte what flow_events() builds.
    `after_flow[i]` (raw JSON, starting with a comma) goes right after flow i's `flow`
    object: where a stage's flow_extra adds its keys (the model's `metadata`)."""
    n = len(ended)
    if not n:
        return []
    c = ended.cols
    ipver, proto = c["ipver"], c["proto"]
    cport, sport_ = c["cli_port"], c["srv_port"]
    src = _ip_strings(ipver, c["cli_hi"], c["cli_lo"])
    dst = _ip_strings(ipver, c["srv_hi"], c["srv_lo"])
    pname = np.array(_PROTO_STR, dtype=object)[proto]
    # the address part: "src_ip" ... "proto" plus ICMP type/code
    addr = np.empty(n, dtype=object)
    is_port = np.isin(proto, PORT_PROTOS)
    is_icmp = np.isin(proto, ICMP_PROTOS)
    other = ~(is_port | is_icmp)
    if is_port.any():
        m = is_port
        addr[m] = [f'"src_ip":"{s}","src_port":{sp},"dest_ip":"{d}","dest_port":{dp},'
                   f'"proto":"{pn}"' for s, sp, d, dp, pn in
                   zip(src[m].tolist(), cport[m].tolist(), dst[m].tolist(),
                       sport_[m].tolist(), pname[m].tolist(), strict=True)]
    if is_icmp.any():
        m = is_icmp
        resp = c["pkts_tc"][m] != 0
        addr[m] = [f'"src_ip":"{s}","dest_ip":"{d}","proto":"{pn}","icmp_type":{cp & 0xFF},'
                   f'"icmp_code":{cp >> 8}'
                   + (f',"response_icmp_type":{rp & 0xFF},"response_icmp_code":{rp >> 8}'
                      if r else "")
                   for s, d, pn, cp, rp, r in
                   zip(src[m].tolist(), dst[m].tolist(), pname[m].tolist(),
                       cport[m].tolist(), sport_[m].tolist(), resp.tolist(), strict=True)]
    if other.any():
        m = other
        addr[m] = [f'"src_ip":"{s}","dest_ip":"{d}","proto":"{pn}"' for s, d, pn in
                   zip(src[m].tolist(), dst[m].tolist(), pname[m].tolist(), strict=True)]
    # optional parts: vlan after event_type; tcp and community_id after flow
    head = np.full(n, "", dtype=object)
    v0, v1 = c["vlan0"], c["vlan1"]
    tagged = (v0 != 0) | (v1 != 0)
    if tagged.any():
        head[tagged] = [
            (f',"vlan":[{a},{b}]' if b else f',"vlan":[{a}]') if a else f',"vlan":[{b}]'
            for a, b in zip(v0[tagged].tolist(), v1[tagged].tolist(), strict=True)]
    tail = np.full(n, "", dtype=object)
    tcp = proto == 6
    if tcp.any():
        keys = (c["flags_ts"][tcp].astype(np.int64) << 8) | c["flags_tc"][tcp]
        tail[tcp] = [_tcp_part(k) for k in keys.tolist()]
    if with_community_id:
        icmp_ports = np.where(is_icmp, cport & 0xFF, np.where(is_port, cport, 0))
        icmp_dports = np.where(is_icmp, cport >> 8, np.where(is_port, sport_, 0))
        cid = community_ids(ipver, proto, c["cli_hi"], c["cli_lo"], c["srv_hi"], c["srv_lo"],
                            icmp_ports, icmp_dports, cid_seed)
        cid_part = [f',"community_id":"{x}"' for x in cid.tolist()]
    else:
        cid_part = [""] * n
    ts_s, ts_u = _seconds(ended.ts_us)
    st_s, st_u = _seconds(c["first_ts"])
    en_s, en_u = _seconds(c["last_ts"])
    age = (c["last_ts"] // 1_000_000 - c["first_ts"] // 1_000_000).tolist()
    state = np.array(_STATE_STR, dtype=object)[c["state"]].tolist()
    alerted = np.where(c["alerted"], "true", "false").tolist()
    close = f'","reason":"{ended.reason}","alerted":'
    flow_end = ',"emergency":true}' if ended.reason == "forced" else "}"
    return [
        f'{{"timestamp":"{a}.{b:06d}+0000","flow_id":{fid},"event_type":"flow"{h},{ad},'
        f'"flow":{{"pkts_toserver":{p1},"pkts_toclient":{p2},"bytes_toserver":{b1},'
        f'"bytes_toclient":{b2},"start":"{s1}.{s2:06d}+0000","end":"{e1}.{e2:06d}+0000",'
        f'"age":{ag},"state":"{st}{close}{al}{flow_end}{x}{t}{ci}}}'
        for a, b, fid, h, ad, p1, p2, b1, b2, s1, s2, e1, e2, ag, st, al, x, t, ci in zip(
            ts_s, ts_u, c["flow_id"].tolist(), head.tolist(), addr.tolist(),
            c["pkts_ts"].tolist(), c["pkts_tc"].tolist(), c["bytes_ts"].tolist(),
            c["bytes_tc"].tolist(), st_s, st_u, en_s, en_u, age, state, alerted,
            after_flow if after_flow is not None else [""] * n, tail.tolist(), cid_part,
            strict=True)
    ]


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
    if "detect.engines.rules_loaded" in counters:  # the rule stage: Suricata's engine list
        stats["detect"] = {"engines": [{
            "id": 0,
            "last_reload": fmt_ts(int(counters.get("detect.engines.last_reload", 0)) * 1_000_000),
            "rules_loaded": int(counters["detect.engines.rules_loaded"]),
            "rules_failed": int(counters.get("detect.engines.rules_failed", 0)),
            "rules_skipped": 0}]}
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
