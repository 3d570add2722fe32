#!/usr/bin/env python3
"""Turn a real Ethernet capture into BSD-loopback style captures (Linux cannot capture these).

The 14-byte Ethernet header of each IPv4/IPv6 frame is replaced by a 4-byte address family;
other frames (ARP, ...) are dropped.
  --linktype null : LINKTYPE_NULL (0), family in the *file's* (host) byte order   (macOS/FreeBSD lo0)
  --linktype loop : LINKTYPE_LOOP (108), family in network byte order              (OpenBSD lo0)
  --af6 N         : value used for AF_INET6 (24 NetBSD/OpenBSD, 28 FreeBSD, 30 Darwin)

usage: convert_null.py --linktype null|loop --af6 N IN.pcap OUT.pcap"""

import argparse
import struct

from pcapio import global_header, read_pcap, record

ap = argparse.ArgumentParser()
ap.add_argument("--linktype", choices=["null", "loop"], required=True)
ap.add_argument("--af6", type=int, default=30)
ap.add_argument("src")
ap.add_argument("dst")
a = ap.parse_args()
hdr, recs = read_pcap(a.src)
assert hdr["linktype"] == 1, "input must be Ethernet"
e = hdr["endian"]
lt, fam_order = (0, e) if a.linktype == "null" else (108, ">")
with open(a.dst, "wb") as f:
    f.write(global_header(hdr, linktype=lt))
    for s, fr, _cl, ol, data, _ in recs:
        etype = struct.unpack_from(">H", data, 12)[0]
        fam = {0x0800: 2, 0x86DD: a.af6}.get(etype)
        if fam is None:
            continue
        f.write(record(e, s, fr, struct.pack(fam_order + "I", fam) + data[14:], origlen=ol - 10))
