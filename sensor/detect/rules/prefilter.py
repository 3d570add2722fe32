"""Multi-pattern prefilter: which inspection buffers contain which fast patterns.

Every fast pattern (a rule's `fast_pattern` content, else its longest positive content,
as Suricata picks it) is indexed by one of its 4-byte windows (shorter patterns by their
whole length), the one with the rarest bytes. A whole batch of buffers is concatenated
and lowercased once; a 64 Ki-entry map over the first two bytes of each window, read
through a strided 16-bit view of the buffer, keeps the few positions where some window
can start; the rest of each 4-byte window is checked against a 2 MiB bitmap of 3-byte
prefixes and then the sorted window values; the surviving (position, pattern) pairs are
verified whole, one vectorised comparison per pattern length. Only (buffer, pattern)
pairs that really contain the pattern (case-insensitively) come out, so Python work
scales with pattern lengths and hits, not with packets x rules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .content import Content, PayloadMatch

_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[65:91] += 32
# bytes that make a window a poor index: they occur everywhere in real traffic
_COMMON = frozenset(b"\x00 \xff\r\n\x01./:=-0eatoins")


def fast_pattern(payload: tuple[PayloadMatch, ...]) -> bytes | None:
    """The content the prefilter keys a rule on (lowercased), or None if it has none."""
    best: Content | None = None
    for item in payload:
        if isinstance(item, Content) and item.fast_pattern is not None:
            if item.negated:
                return None
            fp = item.fast_pattern
            pat = item.pattern
            if fp.offset is not None and fp.length is not None:
                pat = pat[fp.offset:fp.offset + fp.length]
            return pat.lower()
    for item in payload:
        if isinstance(item, Content) and not item.negated:
            if best is None or len(item.pattern) > len(best.pattern):
                best = item
    return None if best is None else best.pattern.lower()


@functools.lru_cache(maxsize=65536)
def _window(pat: bytes) -> int:
    """Start of the 4-byte window of `pat` with the fewest common bytes."""
    if len(pat) <= 4:
        return 0
    best, best_score = 0, 99
    for k in range(len(pat) - 3):
        w = pat[k:k + 4]
        score = sum(b in _COMMON for b in w) * 2 - len(set(w))
        if score < best_score:
            best, best_score = k, score
    return best


@dataclass
class _Table:
    glen: int
    values: np.ndarray  # sorted unique gram values
    entry_start: np.ndarray  # per value: first entry
    entry_count: np.ndarray
    entry_pid: np.ndarray
    entry_k: np.ndarray
    top: np.ndarray  # bool[65536] (glen 1: bool[256]): some value starts with these bytes
    top3: np.ndarray | None  # glen 4: packed bits (little) over the first three bytes


class Prefilter:
    """Index of fast patterns; search() maps buffers to the pattern ids they contain."""

    def __init__(self, patterns: list[bytes]):
        self.patterns = patterns
        by_len: dict[int, list[tuple[int, int, int]]] = {}
        for pid, pat in enumerate(patterns):
            k = _window(pat)
            glen = min(4, len(pat))
            value = int.from_bytes(pat[k:k + glen], "big")
            by_len.setdefault(glen, []).append((value, pid, k))
        self.tables: list[_Table] = []
        for glen, entries in sorted(by_len.items()):
            entries.sort()
            vals = np.array([e[0] for e in entries], dtype=np.uint32)
            uniq, first, counts = np.unique(vals, return_index=True, return_counts=True)
            top = np.zeros(65536 if glen > 1 else 256, dtype=bool)
            top[(uniq >> max(0, 8 * glen - 16)).astype(np.int64)] = True
            top3 = None
            if glen == 4:
                bits = np.zeros(1 << 24, dtype=bool)
                bits[(uniq >> 8).astype(np.int64)] = True
                top3 = np.packbits(bits, bitorder="little")  # 2 MiB
            self.tables.append(_Table(glen, uniq, first, counts,
                                      np.array([e[1] for e in entries], dtype=np.int64),
                                      np.array([e[2] for e in entries], dtype=np.int64), top,
                                      top3))
        # one map over the first two bytes of every window (bit i: table i has a window
        # starting with them; a 1-byte window takes every second byte): most positions of
        # a buffer fail it, and only the rest are looked at per table
        self.top2 = np.zeros(65536, dtype=np.uint8)
        for i, t in enumerate(self.tables):
            if t.glen > 1:
                self.top2[t.top] |= np.uint8(1 << i)
            else:
                self.top2[np.repeat(np.flatnonzero(t.top) * 256, 256) +
                          np.tile(np.arange(256), int(t.top.sum()))] |= np.uint8(1 << i)
        self.any2 = self.top2 != 0
        # patterns by length, stacked, for one vectorised verification per length
        self.pat_len = np.array([len(p) for p in patterns], dtype=np.int64)
        self.by_len: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # len -> (pids, rows)
        row_of = np.zeros(len(patterns), dtype=np.int64)
        for length in sorted(set(self.pat_len.tolist())):
            pids = np.flatnonzero(self.pat_len == length)
            row_of[pids] = np.arange(len(pids))
            mat = np.frombuffer(b"".join(patterns[i] for i in pids.tolist()),
                                dtype=np.uint8).reshape(len(pids), length)
            self.by_len[length] = (pids, mat)
        self.row_of = row_of

    def search(self, buf: bytes, starts: np.ndarray, ends: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
        """(unit, pattern id) pairs, unique, for units buf[starts[u]:ends[u]].

        `buf` is the concatenation of all units (any case); it is lowercased here.
        """
        if not self.patterns or len(buf) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        n = len(buf)
        low = np.frombuffer(bytes(buf).lower() + b"\0\0\0\0", dtype=np.uint8)
        # big-endian 16-bit value of bytes (i, i+1) at every position i, as a strided view
        pair = np.ndarray((n + 2,), dtype=">u2", buffer=low, strides=(1,))
        cand2 = np.flatnonzero(self.any2[pair[:n]])  # bool: numpy's fast nonzero path
        tbits = self.top2[pair[cand2]]
        pids: list[np.ndarray] = []
        poss: list[np.ndarray] = []
        for i, t in enumerate(self.tables):
            cand = cand2[(tbits & np.uint8(1 << i)) != 0] if len(self.tables) > 1 else cand2
            if t.glen == 1:
                g = low[cand].astype(np.uint32)
            else:
                hi = pair[cand].astype(np.uint32)
                if t.glen == 2:
                    g = hi
                elif t.glen == 3:
                    g = (hi << 8) | low[cand + 2]
                else:
                    g = (hi << 16) | pair[cand + 2]
            if t.top3 is not None:  # 4-byte windows: a bitmap on their first 3 bytes
                g3 = g >> 8
                keep = ((t.top3[g3 >> 3] >> (g3 & 7).astype(np.uint8)) & 1).astype(bool)
                cand, g = cand[keep], g[keep]
            if not len(cand):
                continue
            at = np.minimum(np.searchsorted(t.values, g), len(t.values) - 1)
            found = t.values[at] == g
            hit, vi = cand[found], at[found]
            if not len(hit):
                continue
            cnt = t.entry_count[vi]
            rep_hit = np.repeat(hit, cnt)
            base = np.repeat(t.entry_start[vi], cnt)
            within = np.arange(len(rep_hit)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            e = base + within
            pid = t.entry_pid[e]
            pos = rep_hit - t.entry_k[e]
            ok = (pos >= 0) & (pos + self.pat_len[pid] <= n)
            pids.append(pid[ok])
            poss.append(pos[ok])
        if not pids:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pid = np.concatenate(pids)
        pos = np.concatenate(poss)
        # verify whole patterns, one vectorised comparison per pattern length
        plen = self.pat_len[pid]
        good = np.zeros(len(pid), dtype=bool)
        for length in np.unique(plen).tolist():
            sel = np.flatnonzero(plen == length)
            _, mat = self.by_len[length]
            rows = self.row_of[pid[sel]]
            for c0 in range(0, len(sel), 16384):  # bounded temporaries
                s = sel[c0:c0 + 16384]
                r = rows[c0:c0 + 16384]
                got = low[pos[s, None] + np.arange(length)]
                good[s] = (got == mat[r]).all(axis=1)
        pid, pos = pid[good], pos[good]
        unit = np.searchsorted(starts, pos, side="right") - 1
        inside = pos + self.pat_len[pid] <= ends[unit]
        npat = len(self.patterns)
        key = unit[inside] * npat + pid[inside]
        if len(starts) * npat <= 1 << 23:  # a [unit, pattern] bitmap beats sorting the keys
            seen = np.zeros(len(starts) * npat, dtype=bool)
            seen[key] = True
            key = np.flatnonzero(seen)
        else:
            key = np.unique(key)
        return key // npat, key % npat
