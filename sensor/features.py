"""Window -> model inputs: the feature image [N, M] and the sequence [N, F] (one versioned spec).

Training (`netsensor train`) and the sensor (`sensor.detect.model`) both call `extract()` on
the `WindowBatch` that `sensor.windows.WindowStage` produces, so what the model learned on is
exactly what it scores in production (no train/serve skew). Any change to what this module
computes must bump `FEATURE_SPEC`: a shipped model records the spec it was trained with and
the sensor refuses to run a model whose spec differs.

Feature image ("image", float32 [B, N, M])
    The first M bytes of each of the window's first N IP packets (the IP header onwards, as
    `WindowStage` cut them), divided by 255. Fields that identify *hosts or connections*
    rather than *behaviour* are zeroed before scaling:

    - IPv4: identification (bytes 4-5), TTL (8), header checksum (10-11), source and
      destination addresses (12-19);
    - IPv6: flow label (bytes 1-3; byte 1 also holds the low traffic-class nibble),
      hop limit (7), addresses (8-39);
    - TCP: ports, sequence and acknowledgement numbers, checksum, and the values of the
      timestamp option (kind 8: TSval/TSecr, 8 bytes), wherever it sits in the options;
      UDP: ports, checksum; ICMP/ICMPv6: checksum.

    Why: a CNN learns whatever separates the training classes most cheaply. In a lab the
    attacker is always 10.77.0.66, the victim always listens on the same ports, each OS
    stack has its own TTL and IP-id pattern, and checksums/sequence numbers are functions of
    exactly those values; TCP timestamps are a per-host clock (plus a per-connection
    offset) that fingerprints the host and its uptime. Left visible, the model would learn
    "packets from .66 are attacks" - perfect on the lab's test split and useless (or
    dangerous: trivially evaded, or alerting on whichever host reuses that address) anywhere
    else. Masking forces it to
    learn from what the traffic *does*: flag patterns, header lengths and options, payload
    bytes, sizes and timing. (The server port is still visible indirectly through payload
    content; that is behaviour, e.g. an HTTP request line.)

Sequence ("sequence", float32 [B, N, F]), per packet, in this column order (SEQ_FEATURES):
    valid             1 for a real packet, 0 for padding
    to_server         1 client->server, 0 server->client
    log_size          log1p(IP length) / log1p(65535)
    log_iat           log1p(microseconds since the previous packet in the window) / log1p(1e7)
                      (0 for the first packet)
    log_t             log1p(microseconds since the window's first packet) / log1p(1e7)
    fin syn rst psh ack urg ece cwr    TCP flag bits (0 for non-TCP)
    log_payload       log1p(transport payload length) / log1p(65535)
    tcp_win           TCP window / 65535 (0 for non-TCP)
    tcp udp icmp other_proto           protocol one-hot (ICMP covers ICMPv6)

Padding and truncation: a window holds at most N packets (WindowStage closes it at N), and
rows past `n_packets` are all zero in both inputs (valid = 0). Arrays narrower than N or M
are zero-padded, wider ones truncated to the first N packets / M bytes, so a batch from a
differently configured WindowStage still yields the spec's shapes (the model stage refuses
such a configuration anyway; see `sensor.detect.model`). Everything is batched numpy, no
per-packet Python.
"""

from __future__ import annotations

import functools

import numpy as np

FEATURE_SPEC = "netsensor-features/2"  # 2: TCP timestamp option values masked

SEQ_FEATURES = (
    "valid", "to_server", "log_size", "log_iat", "log_t",
    "fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr",
    "log_payload", "tcp_win", "tcp", "udp", "icmp", "other_proto",
)
N_SEQ = len(SEQ_FEATURES)

_LOG_SIZE = float(np.log1p(65535.0))
_LOG_TIME = float(np.log1p(1e7))


def _fit(a: np.ndarray, n: int, m: int | None = None) -> np.ndarray:
    """Truncate or zero-pad axis 1 to n (and axis 2 to m)."""
    b = a.shape[0]
    if a.shape[1] != n:
        out = np.zeros((b, n, *a.shape[2:]), dtype=a.dtype)
        k = min(n, a.shape[1])
        out[:, :k] = a[:, :k]
        a = out
    if m is not None and a.shape[2] != m:
        out = np.zeros((b, n, m), dtype=a.dtype)
        k = min(m, a.shape[2])
        out[:, :, :k] = a[:, :, :k]
        a = out
    return a


@functools.lru_cache(maxsize=8)
def _mask_tables(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constant masks for width m: IPv4 header fields [m], IPv6 header fields [m], and per
    transport (0 TCP, 1 UDP, 2 ICMP) and header offset k (0..m; m = none) the field bytes
    [3, m + 1, m]. host_mask gathers rows of these instead of comparing positions per
    packet."""
    pos = np.arange(m)
    ip4 = np.isin(pos, [4, 5, 8, 10, 11, *range(12, 20)])
    ip6 = np.isin(pos, [1, 2, 3, *range(7, 40)])
    k = np.arange(m + 1)[:, None]
    tcp = ((pos >= k) & (pos < k + 12)) | ((pos >= k + 16) & (pos < k + 18))  # ports/seq/ack; csum
    udp = ((pos >= k) & (pos < k + 4)) | ((pos >= k + 6) & (pos < k + 8))  # ports; checksum
    icmp = (pos >= k + 2) & (pos < k + 4)  # checksum
    return ip4, ip6, np.stack([tcp, udp, icmp])


def host_mask(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Bool [B, N, M]: True where a byte belongs to a host-identifying field (see above)."""
    b, n, m = data.shape
    d = data.astype(np.int32)
    ver = d[:, :, 0] >> 4
    v4 = (ver == 4) & valid
    v6 = (ver == 6) & valid
    ihl = (d[:, :, 0] & 0x0F) * 4
    if m > 9:
        proto4 = d[:, :, 9]
        frag_off = ((d[:, :, 6] & 0x1F) << 8) | d[:, :, 7]
    else:
        proto4 = np.zeros((b, n), np.int32)
        frag_off = np.zeros((b, n), np.int32)
    proto6 = d[:, :, 6] if m > 6 else np.zeros((b, n), np.int32)
    # transport header start (first fragment / no extension headers only); m = none
    l4 = np.where(v4 & (frag_off == 0), ihl, np.where(v6, 40, m))
    l4 = np.minimum(l4, m)
    proto = np.where(v4, proto4, np.where(v6, proto6, -1))
    ip4, ip6, l4_tables = _mask_tables(m)
    mask = (v4[:, :, None] & ip4) | (v6[:, :, None] & ip6)
    tcp = proto == 6
    kind = np.where(tcp, 0, np.where(proto == 17, 1, 2))
    has_l4 = tcp | (proto == 17) | (proto == 1) | (proto == 58)
    mask |= l4_tables[kind, np.where(has_l4, l4, m)]
    mask |= _tcp_timestamp_mask(d, l4, tcp & (l4 < m))
    return mask


def _tcp_timestamp_mask(d: np.ndarray, l4: np.ndarray, tcp: np.ndarray) -> np.ndarray:
    """Bool [B, N, M]: the 8 value bytes of every TCP timestamp option inside the first M
    bytes. Options are walked for all packets at once (at most 40 option bytes, so at most
    20 steps of vectorised gathers), following kind/length like a TCP stack does."""
    b, n, m = d.shape
    mask = np.zeros((b, n, m), dtype=bool)
    if m <= 20 or not tcp.any():
        return mask
    flat = d.reshape(b * n, m)
    rows = np.flatnonzero(tcp.reshape(-1))
    start = l4.reshape(-1)[rows]
    doff_at = start + 12
    ok = doff_at < m
    rows, start = rows[ok], start[ok]
    end = start + ((flat[rows, start + 12] >> 4) * 4)  # end of the TCP header
    end = np.minimum(end, m)
    cur = start + 20
    pos = np.arange(m)[None, :]
    out = mask.reshape(b * n, m)
    for _ in range(20):
        live = cur < end
        if not live.any():
            break
        rows, cur, end = rows[live], cur[live], end[live]
        kind = flat[rows, cur]
        more = kind != 0  # end-of-options stops the walk
        rows, cur, end, kind = rows[more], cur[more], end[more], kind[more]
        nxt = np.minimum(cur + 1, m - 1)
        length = np.where(kind == 1, 1, np.maximum(flat[rows, nxt], 2))
        ts = (kind == 8) & (cur + 1 < m)
        if ts.any():
            r, c = rows[ts], cur[ts]
            out[r] |= (pos >= (c + 2)[:, None]) & (pos < (c + 10)[:, None])
        cur = cur + length
    return mask


def mask_packets(rows: np.ndarray) -> np.ndarray:
    """uint8 [P, m]: packets' first m bytes (one row each) with host fields zeroed."""
    rows = np.asarray(rows, dtype=np.uint8)
    real = rows[None]
    return np.where(host_mask(real, np.ones(real.shape[:2], dtype=bool)), 0, real)[0]


def masked_bytes(data: np.ndarray, n_packets: np.ndarray, n: int, m: int) -> np.ndarray:
    """uint8 [B, n, m]: window bytes fitted to n x m, host fields and padding zeroed."""
    data = _fit(np.asarray(data, dtype=np.uint8), n, m)
    valid = np.arange(n)[None, :] < np.minimum(n_packets, n)[:, None]
    # host_mask looks at each packet on its own, so only the real packets (a few per window;
    # most rows are padding) go through it
    masked = np.zeros_like(data)
    masked[valid] = mask_packets(data[valid])
    return masked


def scale_bytes(masked: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (the image the model sees)."""
    return masked.astype(np.float32) * np.float32(1.0 / 255.0)


def image(data: np.ndarray, n_packets: np.ndarray, n: int, m: int) -> np.ndarray:
    """Feature image float32 [B, n, m] from window bytes uint8 [B, N', M']."""
    return scale_bytes(masked_bytes(data, n_packets, n, m))


def packet_times(ts_us: np.ndarray, first: np.ndarray, counts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(inter-arrival, time since the window's first packet) in us, float64 [P], of flat
    packet rows in time order (window b = rows first[b] .. first[b] + counts[b] - 1)."""
    ts = np.asarray(ts_us, dtype=np.int64)
    win = np.repeat(np.arange(len(counts)), counts)
    start = first[win]
    iat = np.zeros(len(ts), dtype=np.float64)
    if len(ts) > 1:
        iat[1:] = np.maximum(ts[1:] - ts[:-1], 0)
    iat[start] = 0.0  # a window's first packet
    rel = np.maximum(ts - ts[start], 0).astype(np.float64)
    return iat, rel


def fit_width(rows: np.ndarray, m: int) -> np.ndarray:
    """Packet rows [P, M'] truncated or zero-padded to [P, m]."""
    return _fit(rows[:, None, :], 1, m)[:, 0, :]


def packet_sequence(p: dict[str, np.ndarray], iat: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Sequence features float32 [P, N_SEQ] of real packets (one row each): their window
    fields and `packet_times`. Each row depends on its packet alone (and those times)."""
    out = np.zeros((len(iat), N_SEQ), dtype=np.float32)
    proto = p["proto"].astype(np.int32)
    is_tcp = proto == 6
    flags = np.where(is_tcp, p["tcp_flags"].astype(np.int32), 0)
    out[:, 0] = 1.0
    out[:, 1] = p["to_server"] != 0
    out[:, 2] = np.log1p(np.maximum(p["size"], 0).astype(np.float64)) / _LOG_SIZE
    out[:, 3] = np.log1p(iat) / _LOG_TIME
    out[:, 4] = np.log1p(rel) / _LOG_TIME
    for bit in range(8):
        out[:, 5 + bit] = (flags >> bit) & 1
    out[:, 13] = np.log1p(np.maximum(p["payload_len"], 0).astype(np.float64)) / _LOG_SIZE
    out[:, 14] = np.where(is_tcp, np.clip(p["tcp_win"], 0, 65535), 0) / 65535.0
    out[:, 15] = is_tcp
    out[:, 16] = proto == 17
    out[:, 17] = (proto == 1) | (proto == 58)
    out[:, 18] = ~(is_tcp | (proto == 17) | (proto == 1) | (proto == 58))
    return out


def sequence(pkts: dict[str, np.ndarray], n_packets: np.ndarray, n: int) -> np.ndarray:
    """Sequence features float32 [B, n, N_SEQ] from the per-packet window fields; padding
    rows are zero."""
    p = {k: _fit(np.asarray(v), n) for k, v in pkts.items()}
    b = len(n_packets)
    counts = np.clip(n_packets, 0, n).astype(np.int64)
    valid = np.arange(n)[None, :] < counts[:, None]
    out = np.zeros((b, n, N_SEQ), dtype=np.float32)
    rows = {k: v[valid] for k, v in p.items()}
    iat, rel = packet_times(rows["ts_us"], np.cumsum(counts) - counts, counts)
    out[valid] = packet_sequence(rows, iat, rel)
    return out


def extract(wb, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(image [B, n, m], sequence [B, n, N_SEQ]) for a `WindowBatch`."""
    return image(wb.data, wb.n_packets, n, m), sequence(wb.pkts, wb.n_packets, n)
