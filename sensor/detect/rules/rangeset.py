"""Sorted, merged integer interval sets: the compiled form of address and port specs.

Rules are matched against millions of packets, so a set is kept as sorted disjoint
inclusive ranges; membership is a binary search, and a numpy batch is one searchsorted.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

import numpy as np

Range = tuple[int, int]


def normalize(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def subtract(base: tuple[Range, ...], minus: tuple[Range, ...]) -> tuple[Range, ...]:
    """base minus minus; both must be normalized."""
    out: list[Range] = []
    j = 0
    for lo, hi in base:
        cur = lo
        while j < len(minus) and minus[j][1] < cur:
            j += 1
        k = j
        while k < len(minus) and minus[k][0] <= hi:
            mlo, mhi = minus[k]
            if mlo > cur:
                out.append((cur, mlo - 1))
            cur = max(cur, mhi + 1)
            if cur > hi:
                break
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def covers(ranges: tuple[Range, ...], lo: int, hi: int) -> bool:
    """True when the normalized ranges cover [lo, hi] entirely."""
    return len(ranges) == 1 and ranges[0][0] <= lo and ranges[0][1] >= hi


def contains(starts: list[int], ends: list[int], value: int) -> bool:
    """Membership by binary search on range starts."""
    i = bisect_right(starts, value) - 1
    return i >= 0 and value <= ends[i]


def np_mask(starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Vectorised membership: bool mask, one entry per value."""
    values = np.asarray(values)
    if len(starts) == 0:
        return np.zeros(values.shape, dtype=bool)
    idx = np.searchsorted(starts, values, side="right") - 1
    ok = idx >= 0
    idx_c = np.where(ok, idx, 0)
    return ok & (values <= ends[idx_c])
