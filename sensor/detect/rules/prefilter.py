"""Multi-pattern prefilter: which inspection buffers contain which fast patterns.

Every fast pattern (a rule's `fast_pattern` content, else its longest positive content,
as Suricata picks it) is indexed by one of its 4-byte windows (shorter patterns by their
whole length). A whole batch of buffers is concatenated and lowercased once; numpy turns
it into one array of 4-byte values, `np.isin` finds the positions whose window belongs to
some pattern, and candidates are verified byte-wise per pattern with fancy indexing. Only
(buffer, pattern) pairs that really contain the pattern (case-insensitively) come out, so
Python work scales with hits, not with packets x rules.
"""

from __future__ import annotations

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
    top: np.ndarray  # bool[65536]: some value has these top 16 bits


class Prefilter:
    """Index of fast patterns; search() maps buffers to the pattern ids they contain."""

    def __init__(self, patterns: list[bytes]):
        self.patterns = patterns
        self.pat_arrays = [np.frombuffer(p, dtype=np.uint8) for p in patterns]
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
            top = np.zeros(65536, dtype=bool)
            top[(uniq >> max(0, 8 * glen - 16)).astype(np.int64)] = True
            self.tables.append(_Table(glen, uniq, first, counts,
                                      np.array([e[1] for e in entries], dtype=np.int64),
                                      np.array([e[2] for e in entries], dtype=np.int64), top))

    def search(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
        """(unit, pattern id) pairs, unique, for units buf[starts[u]:ends[u]].

        `buf` is the concatenation of all units (any case); it is lowercased here.
        """
        if not self.patterns or len(buf) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        low = _LOWER[buf]
        n = len(low)
        out_u: list[np.ndarray] = []
        out_p: list[np.ndarray] = []
        padded = np.concatenate([low, np.zeros(4, dtype=np.uint8)]).astype(np.uint32)
        g4 = (padded[:n] << 24) | (padded[1:n + 1] << 16) | (padded[2:n + 2] << 8) | \
            padded[3:n + 3]
        for t in self.tables:
            g = g4 >> (8 * (4 - t.glen)) if t.glen < 4 else g4
            # a 64 KiB bitmap on the top 16 bits drops most positions before the exact
            # (binary search) membership test
            cand = np.flatnonzero(t.top[g >> max(0, 8 * t.glen - 16)])
            if not len(cand):
                continue
            gv = g[cand]
            at = np.minimum(np.searchsorted(t.values, gv), len(t.values) - 1)
            hit = cand[t.values[at] == gv]
            if not len(hit):
                continue
            vi = np.searchsorted(t.values, g[hit])
            cnt = t.entry_count[vi]
            rep_hit = np.repeat(hit, cnt)
            base = np.repeat(t.entry_start[vi], cnt)
            within = np.arange(len(rep_hit)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            e = base + within
            pid = t.entry_pid[e]
            pos = rep_hit - t.entry_k[e]
            ok = pos >= 0
            pid, pos = pid[ok], pos[ok]
            if not len(pid):
                continue
            order = np.argsort(pid, kind="stable")
            pid, pos = pid[order], pos[order]
            bounds = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
            bounds = np.r_[bounds, len(pid)]
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                p = int(pid[a])
                pat = self.pat_arrays[p]
                ps = pos[a:b]
                ps = ps[ps + len(pat) <= n]
                if not len(ps):
                    continue
                if len(pat) > t.glen:
                    good = (low[ps[:, None] + np.arange(len(pat))] == pat).all(axis=1)
                    ps = ps[good]
                if not len(ps):
                    continue
                unit = np.searchsorted(starts, ps, side="right") - 1
                inside = ps + len(pat) <= ends[unit]
                unit = np.unique(unit[inside])
                out_u.append(unit)
                out_p.append(np.full(len(unit), p, dtype=np.int64))
        if not out_u:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(out_u), np.concatenate(out_p)
