"""Address index for IP-only rules (IP reputation lists: thousands of rules, each a list).

Suricata keeps IP-only rules in radix trees instead of testing them one by one. Here the
IPv4 ranges of every rule whose source (or destination) set is small are cut into
elementary intervals; one `searchsorted` maps each packet's address to its interval and
a CSR table gives the rules that cover it. Only those (packet, rule) candidates get the
rest of the header test. Rules with large sets on both sides, IPv6 ranges on the indexed
side, or `<>` keep the ordinary per-header mask path.
"""

from __future__ import annotations

import numpy as np

from .parser import Rule

SMALL = 1 << 24  # addresses a side may cover to be indexed


def _v4_size(aset: object) -> int:
    return sum(e - s + 1 for s, e in aset.v4)  # type: ignore[attr-defined]


class SideIndex:
    """Interval index over one side (src or dst) of a group of rules."""

    def __init__(self, entries: list[tuple[int, tuple[tuple[int, int], ...]]]):
        self.empty = not entries
        if self.empty:
            return
        pts = sorted({p for _, ranges in entries for s, e in ranges for p in (s, e + 1)})
        self.points = np.asarray(pts, dtype=np.int64)
        cover: list[list[int]] = [[] for _ in range(len(pts))]
        for order, ranges in entries:
            for s, e in ranges:
                a = int(np.searchsorted(self.points, s))
                b = int(np.searchsorted(self.points, e + 1))
                for j in range(a, b):
                    cover[j].append(order)
        counts = np.asarray([len(c) for c in cover], dtype=np.int64)
        self.start = np.cumsum(counts) - counts
        self.count = counts
        self.rules = np.asarray([o for c in cover for o in c], dtype=np.int64)

    def candidates(self, addr: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, rule order) for every position whose address some rule covers."""
        if self.empty:
            z = np.zeros(0, dtype=np.int64)
            return z, z
        j = np.searchsorted(self.points, addr.astype(np.int64), side="right") - 1
        valid = ok & (j >= 0)
        jj = np.where(valid, j, 0)
        cnt = np.where(valid, self.count[jj], 0)
        pos = np.repeat(np.arange(len(addr)), cnt)
        base = np.repeat(self.start[jj], cnt)
        within = np.arange(len(pos)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        return pos, self.rules[base + within]


def split_indexable(rules: list[tuple[int, Rule]]) -> tuple[SideIndex, SideIndex, list[int]]:
    """(src index, dst index, rule orders left for the mask path)."""
    src_e: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    dst_e: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    rest: list[int] = []
    for order, r in rules:
        if r.direction != "->":
            rest.append(order)
            continue
        s_ok = not r.src.v6 and r.src.v4 and _v4_size(r.src) <= SMALL
        d_ok = not r.dst.v6 and r.dst.v4 and _v4_size(r.dst) <= SMALL
        if s_ok and (not d_ok or _v4_size(r.src) <= _v4_size(r.dst)):
            src_e.append((order, r.src.v4))
        elif d_ok:
            dst_e.append((order, r.dst.v4))
        else:
            rest.append(order)
    return SideIndex(src_e), SideIndex(dst_e), rest
