#!/usr/bin/env python3
"""Rewrite a classic pcap in the other byte order (global + record headers; packet bytes untouched).

usage: swap_endian.py IN.pcap OUT.pcap   (magic 0xa1b2c3d4 / 0xa1b23c4d is written in the new order)"""

import sys

from pcapio import global_header, read_pcap, record

hdr, recs = read_pcap(sys.argv[1])
e = ">" if hdr["endian"] == "<" else "<"
with open(sys.argv[2], "wb") as f:
    f.write(global_header(hdr, endian=e))
    for s, fr, _cl, ol, data, _ in recs:
        f.write(record(e, s, fr, data, origlen=ol))
