"""Community ID v1 flow hashing (https://github.com/corelight/community-id-spec).

One string per bidirectional flow, so EVE records can be joined with Zeek, Suricata and
other monitors that log the same ID.
"""

from __future__ import annotations

import base64
import hashlib
import struct

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
PROTO_SCTP = 132

# Protocols whose hash input carries two 16-bit "ports"; every other protocol hashes only
# seed, addresses, proto and the pad byte.
_PORT_PROTOS = frozenset({PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP, PROTO_ICMP6})

# ICMP request/response type pairs (Zeek's ICMP4_counterpart / ICMP6_counterpart, as in the
# spec's reference implementation). A type listed here is two-way: its counterpart type takes
# the place of the code, so a request and its reply hash to the same ID. Any other type is
# one-way: (type, code) are used as is and the endpoints are never swapped.
ICMP4_COUNTERPART: dict[int, int] = {
    8: 0,  # echo request -> echo reply
    0: 8,
    13: 14,  # timestamp
    14: 13,
    15: 16,  # information
    16: 15,
    10: 9,  # router solicitation -> router advertisement
    9: 10,
    17: 18,  # address mask
    18: 17,
}
ICMP6_COUNTERPART: dict[int, int] = {
    128: 129,  # echo request -> echo reply
    129: 128,
    130: 131,  # MLD listener query -> report
    131: 130,
    133: 134,  # ND router solicitation -> advertisement
    134: 133,
    135: 136,  # ND neighbor solicitation -> advertisement
    136: 135,
    139: 140,  # node information (who-are-you) query -> reply
    140: 139,
    144: 145,  # home agent address discovery request -> reply
    145: 144,
}


def community_id(
    src_ip: bytes, dst_ip: bytes, proto: int, sport: int, dport: int, seed: int = 0
) -> str:
    """Community ID v1 of a flow, as "1:" + base64(SHA-1).

    src_ip/dst_ip are packed 4- or 16-byte addresses (both the same family). For ICMP and
    ICMPv6 pass sport=type, dport=code. Ports are ignored for protocols that have none.
    """
    if len(src_ip) != len(dst_ip) or len(src_ip) not in (4, 16):
        raise ValueError(
            f"addresses must both be 4 or 16 bytes, got {len(src_ip)} and {len(dst_ip)}"
        )
    if not 0 <= proto <= 255:
        raise ValueError(f"proto out of range: {proto}")
    if not 0 <= seed <= 0xFFFF:
        raise ValueError(f"seed out of range: {seed}")

    if proto in _PORT_PROTOS and not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise ValueError(f"port out of range: {sport}, {dport}")

    src_ip = bytes(src_ip)
    dst_ip = bytes(dst_ip)
    if proto in _PORT_PROTOS:
        one_way = False
        if proto in (PROTO_ICMP, PROTO_ICMP6):
            table = ICMP4_COUNTERPART if proto == PROTO_ICMP else ICMP6_COUNTERPART
            counterpart = table.get(sport)
            if counterpart is None:
                one_way = True
            else:
                dport = counterpart
        if not one_way and (src_ip, sport) > (dst_ip, dport):
            src_ip, dst_ip, sport, dport = dst_ip, src_ip, dport, sport
        tail = struct.pack("!BBHH", proto, 0, sport, dport)
    else:
        if src_ip > dst_ip:
            src_ip, dst_ip = dst_ip, src_ip
        tail = struct.pack("!BB", proto, 0)

    digest = hashlib.sha1(struct.pack("!H", seed) + src_ip + dst_ip + tail).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")
