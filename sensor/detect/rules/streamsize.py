"""stream_size's values: per TCP session side, `next_seq - isn` as Suricata 7.0.10 keeps it.

Suricata's DetectStreamSizeMatch compares `ssn->client.next_seq - ssn->client.isn` (or the
server's, as unsigned 32-bit numbers) with the rule's number, on TCP packets of flows that
have a TCP session (a SYN seen, or a midstream pickup). How next_seq moves was read off
real Suricata packet by packet (one rule per value) on the e2e and lab captures
(docs/rules.md, tests/e2e/stream-size):
  * the SYN sets isn = its seq and next_seq = isn + 1 (the SYN/ACK the same for the
    server); a midstream pickup (on a first packet with ACK, not a RST) sets isn =
    seq - 1 for the sender (next_seq = seq + len) and isn = ack - 1, next_seq = ack for
    the other side;
  * a side's next_seq is the furthest its own packets reach: seq + payload length, also
    past a gap (data the capture missed) and for pure ACKs; retransmissions below it
    change nothing;
  * a server FIN sent before any client FIN adds 1 on its own packet; other FINs count
    once acknowledged: after a FIN (this packet included), a packet's ACK moves the other
    side's next_seq up to it (in an established session ACKs move nothing);
  * the first RST sets both sides for good: its own seq + length (+1 when the server
    sends it), and its ACK (if any) for the other side, even below what that side had
    reached.
A side without isn yet counts 0.

All of this is a running maximum per flow side, so a batch is handled with numpy alone
(grouped cumulative sums and maxima, no per-packet loop). Per-flow state lives in
FlowTable columns (COLUMNS below), reset when a slot is reused.
"""

from __future__ import annotations

import numpy as np

SS_SESSION, SS_ISN_C, SS_ISN_S, SS_CLIENT_FIN, SS_FIN, SS_RST = 1, 2, 4, 8, 16, 32
SEQ_MASK, SEQ_HALF = 0xFFFFFFFF, 1 << 31
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10
# column -> (dtype, default)
COLUMNS = {"ss_bits": (np.uint8, 0), "ss_isn_c": (np.int64, 0), "ss_isn_s": (np.int64, 0),
           "ss_next_c": (np.int64, -1), "ss_next_s": (np.int64, -1)}


def add_columns(flows: object) -> None:
    """Add the per-flow state columns to a FlowTable that lacks them."""
    cols = flows.cols  # type: ignore[attr-defined]
    for name, (dtype, default) in COLUMNS.items():
        if name not in cols:
            flows.add_column(name, dtype, default)  # type: ignore[attr-defined]


def final_sizes(c: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(client, server) values of flows as they ended; -1 without a session."""
    sess = (c["ss_bits"][rows] & SS_SESSION) != 0
    return (np.where(sess, np.maximum(c["ss_next_c"][rows], 0), -1),
            np.where(sess, np.maximum(c["ss_next_s"][rows], 0), -1))


def update(c: dict[str, np.ndarray], slot: np.ndarray, tcp: np.ndarray,
           to_server: np.ndarray, flags: np.ndarray, seq: np.ndarray, ack: np.ndarray,
           plen: np.ndarray, pickup: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feed a batch (packets in capture order); returns per packet the (client, server)
    values right after it, -1 where the packet has no TCP session.

    `to_server`: the packet goes client -> server (Suricata's orientation); `pickup`: the
    packet is the midstream pickup that opens its flow's session. The SS_SESSION bit must
    already be set on flows that have a session.
    """
    n = len(slot)
    out_c = np.full(n, -1, dtype=np.int64)
    out_s = np.full(n, -1, dtype=np.int64)
    sel = np.flatnonzero(tcp & ((c["ss_bits"][slot] & SS_SESSION) != 0))
    if not len(sel):
        return out_c, out_s
    p = sel[np.argsort(slot[sel], kind="stable")]  # grouped by flow, packet order kept
    s = slot[p]
    new = np.r_[True, s[1:] != s[:-1]]
    gid = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    last = np.r_[starts[1:] - 1, len(p) - 1]
    g_slot = s[starts]
    pk = _Packets(to_server[p], flags[p], seq[p], ack[p], plen[p], pickup[p])
    before = {name: c[name][g_slot].copy() for name in COLUMNS}  # state before the batch
    bits = before["ss_bits"]

    def grouped_cumsum(x: np.ndarray) -> np.ndarray:
        cs = np.cumsum(x)
        return cs - (cs[starts] - x[starts])[gid]

    def isn(bit: int, col: str, ev: np.ndarray, val: np.ndarray,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(isn per group, per packet: isn known after it, per packet: it sets the isn)."""
        g_isn = before[col].copy()
        had = (bits & bit) != 0
        sets = np.zeros(len(p), dtype=bool)
        at = np.flatnonzero(ev & ~had[gid])
        if len(at):
            g_ev, firsti = np.unique(gid[at], return_index=True)
            g_isn[g_ev] = val[at[firsti]]
            sets[at[firsti]] = True
        known = had[gid] | (grouped_cumsum(sets.astype(np.int64)) > 0)
        return g_isn, known, sets

    isn_c, known_c, sets_c = isn(SS_ISN_C, "ss_isn_c", pk.ev_c, pk.isn_c)
    isn_s, known_s, sets_s = isn(SS_ISN_S, "ss_isn_s", pk.ev_s, pk.isn_s)
    cfin = (pk.fin & pk.ts).astype(np.int64)
    cfin_before = ((bits & SS_CLIENT_FIN) != 0)[gid] | (grouped_cumsum(cfin) - cfin > 0)
    fin_adds = (pk.fin & ~pk.ts & ~cfin_before).astype(np.int64)
    # once a side has sent a FIN (this packet included), ACKs move the other side's next_seq
    closing = ((bits & SS_FIN) != 0)[gid] | (grouped_cumsum(pk.fin.astype(np.int64)) > 0)
    # after a RST the session is closed: nothing moves any more
    rst = pk.rst.astype(np.int64)
    reset = ((bits & SS_RST) != 0)[gid] | (grouped_cumsum(rst) - rst > 0)
    first_rst = pk.rst & ~reset
    base = gid.astype(np.int64) << 32

    def side(mine: np.ndarray, g_isn: np.ndarray, known: np.ndarray, sets: np.ndarray,
             col: str) -> np.ndarray:
        """next_seq - isn after each packet (-1: none): a running maximum of where this
        side's packets end and, while closing, of what the peer acknowledged; the first
        RST sets it (its own seq + len, or the ACK it carries) for good."""
        own_end = ((pk.sq - g_isn[gid]) & SEQ_MASK) + pk.ln + pk.syn + \
            np.where(~pk.ts, fin_adds, 0)
        peer = np.where((pk.ackf & closing) | sets, (pk.ak - g_isn[gid]) & SEQ_MASK,
                        SEQ_MASK)
        contrib = np.where(mine, own_end, peer)
        contrib = np.where(known & ~reset & ~pk.rst & (contrib < SEQ_HALF), contrib, -1)
        run = np.maximum(np.maximum.accumulate(base + contrib + 1) - base - 1,
                         before[col][gid])
        at = np.flatnonzero(first_rst & known)
        if len(at):
            rst_ack = np.where(pk.ackf, (pk.ak - g_isn[gid]) & SEQ_MASK, SEQ_MASK)
            # a server's RST counts 1 more, like its FIN (seen on midstream pickups)
            val = np.where(mine, own_end + ~pk.ts, rst_ack)[at]
            g_val = np.full(len(starts), -2, dtype=np.int64)
            g_val[gid[at]] = np.where(val < SEQ_HALF, val, run[at])
            over = (reset | first_rst) & (g_val[gid] != -2)
            run[over] = g_val[gid][over]
        return run

    run_c = side(pk.ts, isn_c, known_c, sets_c, "ss_next_c")
    run_s = side(~pk.ts, isn_s, known_s, sets_s, "ss_next_s")
    vc = np.where(known_c, np.maximum(run_c, 0), 0)
    vs = np.where(known_s, np.maximum(run_s, 0), 0)
    c["ss_isn_c"][g_slot] = isn_c
    c["ss_isn_s"][g_slot] = isn_s
    c["ss_next_c"][g_slot] = run_c[last]
    c["ss_next_s"][g_slot] = run_s[last]
    c["ss_bits"][g_slot] = (bits | np.where(known_c[last], SS_ISN_C, 0) |
                            np.where(known_s[last], SS_ISN_S, 0) |
                            np.where(cfin_before[last] | (cfin[last] > 0), SS_CLIENT_FIN, 0) |
                            np.where(closing[last], SS_FIN, 0) |
                            np.where(reset[last] | pk.rst[last], SS_RST, 0)).astype(np.uint8)
    out_c[p] = vc
    out_s[p] = vs
    return out_c, out_s


class _Packets:
    """The batch's session packets (grouped by flow) as int64/bool columns."""

    def __init__(self, ts: np.ndarray, flags: np.ndarray, seq: np.ndarray, ack: np.ndarray,
                 plen: np.ndarray, pickup: np.ndarray) -> None:
        fl = flags.astype(np.int64)
        self.ts = ts.astype(bool)
        self.sq = seq.astype(np.int64)
        self.ak = ack.astype(np.int64)
        self.ln = plen.astype(np.int64)
        self.syn = ((fl & TH_SYN) != 0).astype(np.int64)
        self.ackf = (fl & TH_ACK) != 0
        self.fin = (fl & TH_FIN) != 0
        self.rst = (fl & TH_RST) != 0
        mid = pickup.astype(bool)
        syn = self.syn != 0
        # the packet that sets each side's isn, and the isn it sets
        self.ev_c = (syn & ~self.ackf & self.ts) | mid
        self.ev_s = (syn & self.ackf & ~self.ts) | mid
        self.isn_c = np.where(mid, np.where(self.ts, self.sq - 1, self.ak - 1),
                              self.sq) & SEQ_MASK
        self.isn_s = np.where(mid, np.where(self.ts, self.ak - 1, self.sq),
                              self.sq) & SEQ_MASK
