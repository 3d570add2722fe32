#!/usr/bin/env python3
"""Send real IPv6 traffic carrying extension headers through the Linux stack.

No scapy: ordinary UDP/TCP sockets with RFC 3542 sticky options (IPV6_HOPOPTS,
IPV6_DSTOPTS, IPV6_RTHDR); the kernel builds the headers.  Run inside the client
namespace as root (IPV6_HOPOPTS needs CAP_NET_RAW).

usage: exthdr_send.py DST SEG_VIA TCP_PORT
  DST      final destination (server address)
  SEG_VIA  a second address of the server, used as the active segment of an SRv6
           routing header (type 4, segments_left=1); the server must have
           net.ipv6.conf.*.seg6_enabled=1 to forward it to itself
  TCP_PORT port of an HTTP server on DST
"""

import socket
import sys

IPPROTO_IPV6 = socket.IPPROTO_IPV6
HOPOPTS, RTHDR, DSTOPTS = socket.IPV6_HOPOPTS, socket.IPV6_RTHDR, socket.IPV6_DSTOPTS

# Hop-by-hop: Router Alert (type 5, value 0 = MLD) + PadN(0)  -> 8 bytes
HBH_RA = bytes([0, 0, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00])
# Destination options: experimental type 0x1e (RFC 4727, "skip if unknown"), 4 data bytes
DST_8 = bytes([0, 0, 0x1E, 0x04, 0xDE, 0xAD, 0xBE, 0xEF])
# Destination options, 16 bytes (hdr ext len = 1): 0x1e with 12 data bytes
DST_16 = bytes([0, 1, 0x1E, 0x0C]) + bytes(range(1, 13))


def srh(final: str, via: str) -> bytes:
    """SRv6 routing header (type 4). segments[0] = final, segments[1] = active segment."""
    segs = [socket.inet_pton(socket.AF_INET6, a) for a in (final, via)]
    n = len(segs)
    return bytes([0, 2 * n, 4, n - 1, n - 1, 0, 0, 0]) + b"".join(segs)


def udp(daddr, payload, port=9, **opts):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for name, val in opts.items():
        s.setsockopt(IPPROTO_IPV6, {"hbh": HOPOPTS, "rt": RTHDR, "dst": DSTOPTS}[name], val)
    s.sendto(payload, (daddr, port))
    s.close()


def main():
    dst, via, tport = sys.argv[1], sys.argv[2], int(sys.argv[3])
    udp(dst, b"dstopts-8\n", dst=DST_8)  # IPv6 / DST / UDP
    udp(dst, b"dstopts-16\n", dst=DST_16)  # IPv6 / DST(16) / UDP
    udp(dst, b"hopopts-ra\n", hbh=HBH_RA)  # IPv6 / HBH / UDP
    udp(dst, b"srv6\n", rt=srh(dst, via))  # IPv6(dst=via) / RH4 / UDP
    udp(dst, b"chain\n", hbh=HBH_RA, rt=srh(dst, via), dst=DST_8)  # HBH / RH4 / DST / UDP
    udp(dst, b"F" * 3000, dst=DST_8)  # DST + fragments
    # TCP with a destination-options header on every client segment
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(IPPROTO_IPV6, DSTOPTS, DST_8)
    s.settimeout(3)
    s.connect((dst, tport))
    s.sendall(b"GET / HTTP/1.0\r\nHost: exthdr\r\n\r\n")
    for _ in range(100):  # bounded read loop
        if not s.recv(65536):
            break
    s.close()
    print("sent")


if __name__ == "__main__":
    main()
