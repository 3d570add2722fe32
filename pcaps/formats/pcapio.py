"""Minimal classic-pcap reader/writer shared by the helper scripts in this directory."""

import struct

MAGIC_USEC, MAGIC_NSEC = 0xA1B2C3D4, 0xA1B23C4D


def read_pcap(path):
    """Return (hdr, records). hdr: dict(endian, nsec, major, minor, thiszone, sigfigs, snaplen, linktype).
    records: list of (ts_sec, ts_frac, caplen, origlen, data, offset_of_record_header)."""
    d = open(path, "rb").read()
    for e in "<>":
        magic = struct.unpack_from(e + "I", d, 0)[0]
        if magic in (MAGIC_USEC, MAGIC_NSEC):
            break
    else:
        raise ValueError(f"{path}: not a classic pcap")
    major, minor, zone, sigfigs, snaplen, linktype = struct.unpack_from(e + "HHiIII", d, 4)
    hdr = dict(
        endian=e,
        nsec=magic == MAGIC_NSEC,
        major=major,
        minor=minor,
        thiszone=zone,
        sigfigs=sigfigs,
        snaplen=snaplen,
        linktype=linktype,
    )
    recs, off = [], 24
    while off + 16 <= len(d):
        s, f, cl, ol = struct.unpack_from(e + "IIII", d, off)
        if off + 16 + cl > len(d):
            break
        recs.append((s, f, cl, ol, d[off + 16 : off + 16 + cl], off))
        off += 16 + cl
    return hdr, recs


def global_header(hdr, endian=None, linktype=None):
    e = endian or hdr["endian"]
    return struct.pack(
        e + "IHHiIII",
        MAGIC_NSEC if hdr["nsec"] else MAGIC_USEC,
        hdr["major"],
        hdr["minor"],
        hdr["thiszone"],
        hdr["sigfigs"],
        hdr["snaplen"],
        hdr["linktype"] if linktype is None else linktype,
    )


def record(endian, s, f, data, origlen=None, caplen=None):
    return (
        struct.pack(
            endian + "IIII",
            s,
            f,
            len(data) if caplen is None else caplen,
            len(data) if origlen is None else origlen,
        )
        + data
    )
