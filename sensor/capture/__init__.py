"""Packet sources. Every source yields PacketBatch objects: many frames at once, as arrays.

A batch keeps the raw bytes in one contiguous uint8 buffer and describes frames by offset,
so a pcap chunk read from disk is used in place, without copying frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Zero bytes kept after the last frame so vectorised header reads may overrun a short
# frame without an index error; such reads are masked by caplen afterwards.
BATCH_PAD = 128

# libpcap LINKTYPE_* values the decoder understands.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_DLT12 = 12  # DLT_RAW on most BSDs
LINKTYPE_RAW_DLT14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276


@dataclass
class PacketBatch:
    """A run of consecutive frames from one source.

    data      uint8[...]  frame bytes; frame i is data[offset[i] : offset[i] + caplen[i]],
                          and at least BATCH_PAD zero bytes follow the last frame.
    offset    int64[n]    start of each frame in data
    caplen    int32[n]    captured length
    wirelen   int32[n]    original length on the wire
    ts_us     int64[n]    timestamp, microseconds since the Unix epoch
    linktype  uint16[n]   libpcap LINKTYPE of each frame (pcapng mixes interfaces)
    first_cnt int         1-based position of frame 0 in the source (EVE pcap_cnt);
                          0 for packets the sensor built itself (no pcap_cnt)
    iface     int32[n]    pcapng interface index, numbered over all sections of the file
                          (0 for pcap and live sources)
    """

    data: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_us: np.ndarray
    linktype: np.ndarray
    first_cnt: int
    iface: np.ndarray | None = None
    pkt_src: str = "wire/pcap"  # EVE pkt_src; "defrag" for reassembled datagrams
    tunnel_depth: int = 0  # 0 for captured frames; n for packets inside n tunnels
    parents: Any = None  # sensor.tunnel.TunnelParents of inner packets
    # pcap_cnt of each frame where frames are not consecutive in the source (a parallel
    # replay worker's share of a batch, sensor.replay_parallel); None: first_cnt + index
    cnt: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offset)

    def cnt_at(self, idx: Any) -> Any:
        """pcap_cnt of frames `idx` (index or index array); callers check first_cnt > 0."""
        if self.cnt is not None:
            return self.cnt[idx]
        return self.first_cnt + (idx.astype(np.int64) if isinstance(idx, np.ndarray) else idx)

    def frame(self, i: int) -> bytes:
        start = int(self.offset[i])
        return self.data[start : start + int(self.caplen[i])].tobytes()


class CaptureError(Exception):
    """Input that cannot be read further: names the source, the byte offset and the problem."""

    def __init__(self, source: str, offset: int | None, message: str):
        self.source = source
        self.offset = offset
        self.message = message
        where = f"{source}" if offset is None else f"{source}: offset {offset}"
        super().__init__(f"{where}: {message}")
