#!/usr/bin/env python3
"""Make the damaged inputs from real captures in DIR (run from make.sh).

Writes DIR/truncated.pcap, truncated-header.pcap, garbage.bin, bad-linktype.pcap,
zero-len-record.pcap, oversized-record.pcap, empty.pcap, truncated.pcapng and
DIR/damage.json (offsets, consumed by facts.py).

"damage_offset" = byte offset of the first byte a reader must treat as damaged:
the record/block header of the broken record (truncations, caplen 0, caplen 300000),
the linktype field (bad-linktype), 0 (garbage).  "good_packets" = records a reader can
decode fully before the damage."""

import json
import random
import struct
import sys

from pcapio import global_header, read_pcap, record

d = sys.argv[1]
src = f"{d}/eth-le-usec.pcap"
raw = open(src, "rb").read()
hdr, recs = read_pcap(src)
e = hdr["endian"]
mid = len(recs) // 2
s, f, cl, ol, data, roff = recs[mid]
info = {}

cut = roff + 16 + cl // 2
open(f"{d}/truncated.pcap", "wb").write(raw[:cut])
info["truncated.pcap"] = dict(
    kind="truncated in record data",
    damage_offset=roff,
    cut_at=cut,
    good_packets=mid,
    record_index=mid,
)

cut = roff + 8
open(f"{d}/truncated-header.pcap", "wb").write(raw[:cut])
info["truncated-header.pcap"] = dict(
    kind="truncated inside record header",
    damage_offset=roff,
    cut_at=cut,
    good_packets=mid,
    record_index=mid,
)

g = random.Random(20240601).randbytes(2048)
open(f"{d}/garbage.bin", "wb").write(g)
info["garbage.bin"] = dict(
    kind="random bytes (random.Random(20240601).randbytes(2048))", damage_offset=0, good_packets=0
)

b = bytearray(raw)
struct.pack_into(e + "I", b, 20, 147)
open(f"{d}/bad-linktype.pcap", "wb").write(b)
info["bad-linktype.pcap"] = dict(
    kind="global header linktype 147 (LINKTYPE_USER0)",
    damage_offset=20,
    good_packets=len(recs),
    linktype=147,
)

out = global_header(hdr)
for i, (s2, f2, _cl2, ol2, data2, _) in enumerate(recs):
    out += record(e, s2, f2, b"" if i == mid else data2, origlen=ol2)
open(f"{d}/zero-len-record.pcap", "wb").write(out)
info["zero-len-record.pcap"] = dict(
    kind="record with caplen 0 (origlen kept, data removed)",
    damage_offset=roff,
    good_packets=len(recs),
    record_index=mid,
    zero_caplen_origlen=ol,
)

b = bytearray(raw)
struct.pack_into(e + "I", b, roff + 8, 300000)
open(f"{d}/oversized-record.pcap", "wb").write(b)
info["oversized-record.pcap"] = dict(
    kind="record header claims caplen 300000 > snaplen 262144; the original "
    "data and the following records follow unchanged",
    damage_offset=roff,
    caplen_field_offset=roff + 8,
    good_packets=mid,
    record_index=mid,
    snaplen=hdr["snaplen"],
)

open(f"{d}/empty.pcap", "wb").write(global_header(hdr))
info["empty.pcap"] = dict(kind="global header only", damage_offset=None, good_packets=0)

# pcapng: cut the middle Enhanced Packet Block of multi-if.pcapng in half
ng = open(f"{d}/multi-if.pcapng", "rb").read()
assert ng[8:12] == b"\x4d\x3c\x2b\x1a", "expect little-endian pcapng"
off, epbs = 0, []
while off + 12 <= len(ng):
    btype, blen = struct.unpack_from("<II", ng, off)
    if btype == 6:
        epbs.append((off, blen))
    off += blen
k = len(epbs) // 2
boff, blen = epbs[k]
cut = boff + blen // 2
open(f"{d}/truncated.pcapng", "wb").write(ng[:cut])
info["truncated.pcapng"] = dict(
    kind="multi-if.pcapng cut in the middle of an Enhanced Packet Block",
    damage_offset=boff,
    cut_at=cut,
    good_packets=k,
)

json.dump(info, open(f"{d}/damage.json", "w"), indent=1)
