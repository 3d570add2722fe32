"""threshold / detection_filter keywords and threshold.config, in packet time.

Copies Suricata 7's ThresholdHandlePacket: a tracker per (gid, sid, track key) keeps the
start of its window (packet time in microseconds; a packet at start + seconds is still
inside, as Suricata's SCTIME_CMP_LTE) and a count.
  limit      the first `count` events of each window alert
  threshold  every `count`-th event of a window alerts (the count restarts after)
  both       the `count`-th event of a window alerts, once
  detection_filter  every event after the first `count` of a window alerts
threshold.config `suppress` drops alerts (optionally for listed addresses), its
`threshold`/`event_filter` lines replace the rule's own threshold, and `rate_filter`
changes the action once the rate is exceeded (as Suricata 7.0.10 logs it in IDS mode: a
new action of pass logs nothing, drop/reject log `action: "blocked"`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .keywords import Threshold
from .threshold_config import RateFilter, ThresholdConfig

Addr = tuple[int, int, int]  # (ipver, hi, lo)


@dataclass
class _Tracker:
    start: int
    count: int
    window: int = 0  # microseconds; past start + window the tracker can be forgotten


PRUNE_EVERY = 65536  # events between sweeps of expired trackers (memory stays bounded)


def _key(track: str, src: Addr, dst: Addr) -> tuple:
    if track == "by_src":
        return src
    if track == "by_dst":
        return dst
    if track == "by_both":
        return (src, dst)
    return ()


class Thresholds:
    """State of every threshold tracker of one rule set."""

    def __init__(self, config: ThresholdConfig | None = None):
        self.cfg = config
        self.trackers: dict[tuple, _Tracker] = {}
        self.rate: dict[tuple, tuple[_Tracker, int]] = {}
        self.events = 0
        self.override: dict[tuple[int, int], Threshold] = {}
        self.rate_filters: dict[tuple[int, int], RateFilter] = {}
        if config is not None:
            for t in config.thresholds:
                self.override[(t.gid, t.sid)] = Threshold(t.type, t.track, t.count, t.seconds)
            for rf in config.rate_filters:
                self.rate_filters[(rf.gid, rf.sid)] = rf

    def threshold_for(self, gid: int, sid: int, own: Threshold | None) -> Threshold | None:
        hit = self.override.get((gid, sid)) or self.override.get((gid, 0))
        return hit if hit is not None else own

    def suppress(self, gid: int, sid: int, src: Addr, dst: Addr) -> bool:
        if self.cfg is None:
            return False
        for s in self.cfg.suppress:
            if s.gid != gid or s.sid not in (0, sid):
                continue
            if s.track is None or s.ip is None:
                return True
            in_src = s.ip.contains(src[2] if src[0] == 4 else (src[1] << 64) | src[2],
                                   src[0] == 6)
            in_dst = s.ip.contains(dst[2] if dst[0] == 4 else (dst[1] << 64) | dst[2],
                                   dst[0] == 6)
            if (s.track == "by_src" and in_src) or (s.track == "by_dst" and in_dst) or (
                    s.track == "by_either" and (in_src or in_dst)):
                return True
        return False

    def allow(self, gid: int, sid: int, th: Threshold, ts_us: int, src: Addr,
              dst: Addr) -> bool:
        """Count one event; True when it raises an alert."""
        now = ts_us
        window = th.seconds * 1_000_000
        self.events += 1
        if self.events % PRUNE_EVERY == 0:
            self.trackers = {k: v for k, v in self.trackers.items()
                             if now - v.start <= v.window}
        key = (gid, sid, th.type, th.track, _key(th.track, src, dst))
        t = self.trackers.get(key)
        if t is None:
            self.trackers[key] = _Tracker(now, 1, window)
            if th.type == "detection_filter":
                return th.count == 0
            return th.type == "limit" or th.count == 1
        if now - t.start <= window:
            t.count += 1
            if th.type == "limit":
                return t.count <= th.count
            if th.type == "threshold":
                if t.count >= th.count:
                    t.count = 0
                    return True
                return False
            if th.type == "both":
                return t.count == th.count
            return t.count > th.count
        # expired: a new window starts with this event
        t.start, t.count = now, 1
        if th.type == "limit":
            return True
        if th.type == "both":
            return th.count == 1
        return False

    def rate_action(self, gid: int, sid: int, ts_us: int, src: Addr, dst: Addr) -> str | None:
        """The rate_filter's new action while it is in force, else None."""
        rf = self.rate_filters.get((gid, sid)) or self.rate_filters.get((gid, 0))
        if rf is None:
            return None
        now = ts_us // 1_000_000
        key = (gid, sid, _key(rf.track, src, dst))
        got = self.rate.get(key)
        if got is None:
            self.rate[key] = (_Tracker(now, 1), -1)
            return rf.new_action if rf.count == 0 else None
        t, until = got
        if until >= 0:
            if now < until:
                return rf.new_action
            self.rate[key] = (_Tracker(now, 1), -1)
            return None
        if now - t.start < rf.seconds:
            t.count += 1
            if t.count > rf.count:
                self.rate[key] = (t, now + rf.timeout)
                return rf.new_action
            return None
        t.start, t.count = now, 1
        return None
