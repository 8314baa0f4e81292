"""One round over time: per interval (`--interval`, 1 s), the requests sent, the successes and
failures that ended in it, and a histogram of the successes' latency — the timeline CSV's rows
and the HdrHistogram log's intervals.

Times are seconds after the round's origin, as in LevelRecorder, so shards of a round (started
together) merge interval by interval. The hot path only appends to buffers; numpy folds them
into the intervals a few thousand at a time, so memory follows the intervals hit (a histogram of
the buckets hit in each), not the requests.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from asyncbench.histogram import LatencyHistogram

# The timeline CSV's columns, in order (design.md: "Time").
COLUMNS = ("level", "t_s", "sent", "successes", "failures", "in_flight", "throughput_rps", "goodput_rps",
           "ok_latency_p50_s", "ok_latency_p99_s")


@dataclass
class Interval:
    """One interval of a level: `start_s` and `length_s` on the level's own time axis (its rounds
    one after another), and the successes' latency histogram."""

    level: int
    start_s: float
    length_s: float
    sent: int
    successes: int
    failures: int
    in_flight: int
    ok: LatencyHistogram

    def row(self) -> dict[str, Any]:
        """Its row of the timeline CSV."""
        length = self.length_s if self.length_s > 0 else math.inf
        done = self.successes + self.failures
        return {"level": self.level, "t_s": round(self.start_s + self.length_s, 6), "sent": self.sent,
                "successes": self.successes, "failures": self.failures, "in_flight": self.in_flight,
                "throughput_rps": done / length, "goodput_rps": self.successes / length,
                "ok_latency_p50_s": self.ok.quantile(0.5), "ok_latency_p99_s": self.ok.quantile(0.99)}


class Timeline:
    """A round's requests by interval: counts, and the successes' latency buckets."""

    __slots__ = ("interval", "sent_at", "ok_done", "ok_latency", "failed_done", "_sent", "_failures", "_ok",
                 "_next", "_sent_total", "_done_total")

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.sent_at = array("d")  # appended to by the recorder's hot path; folded by flush()
        self.ok_done = array("d")
        self.ok_latency = array("d")
        self.failed_done = array("d")
        self._sent: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        self._ok: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # interval → (buckets, counts)
        self._next = 0  # the first interval not yet handed out by closed()
        self._sent_total = self._done_total = 0  # ... and the requests sent and ended before it

    def flush(self) -> None:
        """Fold the buffered times into their intervals."""
        if self.sent_at:
            _add_counts(self._sent, self._index(self.sent_at))
            del self.sent_at[:]
        if self.failed_done:
            _add_counts(self._failures, self._index(self.failed_done))
            del self.failed_done[:]
        if self.ok_done:
            k = self._index(self.ok_done)
            b = LatencyHistogram.bucket_of(np.frombuffer(self.ok_latency, dtype=np.float64))
            del self.ok_done[:]
            del self.ok_latency[:]
            keys, counts = np.unique(k * LatencyHistogram._BUCKETS + b, return_counts=True)
            ks = keys // LatencyHistogram._BUCKETS
            cuts = np.flatnonzero(np.diff(ks)) + 1
            for bucket_keys, bucket_counts in zip(np.split(keys, cuts), np.split(counts, cuts), strict=True):
                self._add_ok(int(bucket_keys[0] // LatencyHistogram._BUCKETS),
                             bucket_keys % LatencyHistogram._BUCKETS, bucket_counts)

    def _index(self, times: array) -> np.ndarray:
        k = np.floor(np.frombuffer(times, dtype=np.float64) / self.interval).astype(np.int64)
        return np.maximum(k, 0)  # a send stamped a hair before the origin belongs to the first

    def _add_ok(self, k: int, buckets: np.ndarray, counts: np.ndarray) -> None:
        old = self._ok.get(k)
        if old is not None:
            buckets, inverse = np.unique(np.concatenate([old[0], buckets]), return_inverse=True)
            counts = np.bincount(inverse, weights=np.concatenate([old[1], counts]).astype(np.float64)).astype(np.int64)
        self._ok[k] = (buckets.astype(np.int32), counts.astype(np.int64))

    def merge(self, other: Timeline) -> None:
        """Add a shard of the same round (same interval, same origin)."""
        self.flush()
        other.flush()
        for k, n in other._sent.items():
            self._sent[k] = self._sent.get(k, 0) + n
        for k, n in other._failures.items():
            self._failures[k] = self._failures.get(k, 0) + n
        for k, (buckets, counts) in other._ok.items():
            self._add_ok(k, buckets, counts)

    def closed(self, level: int, now_s: float, settle_s: float) -> list[Interval]:
        """The intervals that ended more than `settle_s` before `now_s` (seconds after the
        origin) not handed out yet, and forgotten, so that a long round's memory stays flat.
        `settle_s` is the longest a request can take: a request is recorded when it ends, sends
        and all, so an interval is final once every request sent in it has ended. The rest, and
        the last, come from intervals()."""
        self.flush()
        last = math.floor((now_s - settle_s) / self.interval) - 1
        if last < self._next:
            return []
        out = self._span(level, self._next, last, math.inf, 0.0)
        for k in range(self._next, last + 1):
            self._sent.pop(k, None)
            self._failures.pop(k, None)
            self._ok.pop(k, None)
        self._next = last + 1
        if out:
            self._sent_total += sum(i.sent for i in out)
            self._done_total += sum(i.successes + i.failures for i in out)
        return out

    def intervals(self, level: int, end_s: float, offset_s: float = 0.0, start_s: float = 0.0) -> list[Interval]:
        """Every interval from `start_s` (the origin, or a stage's start) to `end_s` (the round's
        last answer), empty ones too: a stall shows as intervals with nothing done. The last is as
        long as the round lasted in it. After closed(): those it has not handed out."""
        self.flush()
        keys = set(self._sent) | set(self._failures) | set(self._ok)
        if not keys and not self._next:
            return []
        last = max(max(keys, default=0), max(0, math.ceil(end_s / self.interval) - 1))
        first = self._next if self._next else min(min(keys), int(start_s // self.interval))
        return self._span(level, first, last, end_s, offset_s)

    def _span(self, level: int, first: int, last: int, end_s: float, offset_s: float) -> list[Interval]:
        out: list[Interval] = []
        sent_total, done_total = self._sent_total, self._done_total
        for k in range(first, last + 1):
            start = k * self.interval
            length = min(self.interval, max(end_s, start) - start) if k == last else self.interval
            buckets, counts = self._ok.get(k, (np.zeros(0, np.int32), np.zeros(0, np.int64)))
            hist = LatencyHistogram.from_buckets(buckets, counts)
            sent, failures = self._sent.get(k, 0), self._failures.get(k, 0)
            sent_total += sent
            done_total += hist.count + failures
            out.append(Interval(level=level, start_s=offset_s + start, length_s=length, sent=sent,
                                successes=hist.count, failures=failures,
                                in_flight=max(0, sent_total - done_total), ok=hist))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for shards to send theirs."""
        self.flush()
        return {"interval": self.interval, "sent": {str(k): n for k, n in self._sent.items()},
                "failures": {str(k): n for k, n in self._failures.items()},
                "ok": {str(k): [b.tolist(), c.tolist()] for k, (b, c) in self._ok.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        timeline = cls(float(data["interval"]))
        timeline._sent = {int(k): int(n) for k, n in data["sent"].items()}
        timeline._failures = {int(k): int(n) for k, n in data["failures"].items()}
        timeline._ok = {int(k): (np.asarray(b, dtype=np.int32), np.asarray(c, dtype=np.int64))
                        for k, (b, c) in data["ok"].items()}
        return timeline


def _add_counts(into: dict[int, int], index: np.ndarray) -> None:
    keys, counts = np.unique(index, return_counts=True)
    for k, n in zip(keys.tolist(), counts.tolist(), strict=True):
        into[k] = into.get(k, 0) + n


def level_intervals(level: int, rounds: list[tuple[Timeline, float]]) -> list[Interval]:
    """A level's intervals: its rounds (timeline, last answer's time) one after another."""
    out: list[Interval] = []
    offset = 0.0
    for timeline, end in rounds:
        intervals = timeline.intervals(level, end, offset)
        out.extend(intervals)
        if intervals:
            offset = intervals[-1].start_s + intervals[-1].length_s
    return out
