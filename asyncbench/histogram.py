"""The latency histogram every figure is read from: HDR-style log buckets (at most 0.1 % relative
error, three significant digits, as HdrHistogram), exact count, sum, min and max, and merges that
add counts, so a level's memory is bounded by its buckets, not its requests."""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np


class LatencyHistogram:
    """Log-bucketed latency histogram with exact count, sum, min and max.

    Buckets grow by `_RATIO`; a value is reported as its bucket's geometric midpoint, whose
    relative error is at most sqrt(_RATIO) - 1 < 0.1 % (three significant digits), and never
    below the smallest nor above the largest value recorded. Range 1 µs .. ~1 h; values
    outside are clamped into the end buckets (min and max stay exact).

    `record` only appends to a small buffer, folded into the buckets by numpy a few thousand
    values at a time: at tens of thousands of requests a second, bucketing each value in
    Python would be a visible share of the client's own cost.
    """

    _RATIO = 1.002
    _LOWEST = 1e-6
    _LOG_RATIO = math.log(_RATIO)
    _BUCKETS = int(math.log(3600.0 / _LOWEST) / math.log(_RATIO)) + 2
    _BATCH = 4096

    __slots__ = ("_counts", "_count", "_total", "_min", "_max", "pending")

    def __init__(self) -> None:
        self._counts = np.zeros(self._BUCKETS, dtype=np.int64)
        self._count = 0
        self._total = 0.0
        self._min = math.inf
        self._max = 0.0
        self.pending = array("d")  # recorded, not yet bucketed

    def record(self, value: float) -> None:
        pending = self.pending
        pending.append(value)
        if len(pending) >= self._BATCH:
            self.flush()

    def flush(self) -> None:
        """Fold the buffered values into the buckets."""
        if not self.pending:
            return
        values = np.frombuffer(self.pending, dtype=np.float64).copy()
        del self.pending[:]
        self._counts += np.bincount(self.bucket_of(values), minlength=self._BUCKETS)
        self._count += len(values)
        self._total += float(values.sum())
        self._min = min(self._min, float(values.min()))
        self._max = max(self._max, float(values.max()))

    @classmethod
    def bucket_of(cls, values: np.ndarray) -> np.ndarray:
        """The bucket of each value (seconds)."""
        index = np.zeros(len(values), dtype=np.int64)
        above = values > cls._LOWEST
        index[above] = (np.log(values[above] / cls._LOWEST) / cls._LOG_RATIO).astype(np.int64) + 1
        np.minimum(index, cls._BUCKETS - 1, out=index)
        return index

    @classmethod
    def bucket_value(cls, index: np.ndarray) -> np.ndarray:
        """What a bucket's values are reported as: its geometric midpoint (seconds)."""
        index = np.asarray(index, dtype=np.float64)
        return np.where(index > 0, cls._LOWEST * cls._RATIO ** (index - 1) * math.sqrt(cls._RATIO), cls._LOWEST)

    @classmethod
    def from_buckets(cls, index: np.ndarray, counts: np.ndarray) -> LatencyHistogram:
        """A histogram of these bucket counts; its sum, min and max are the buckets' midpoints'."""
        hist = cls()
        np.add.at(hist._counts, np.asarray(index, dtype=np.int64), np.asarray(counts, dtype=np.int64))
        hist._count = int(hist._counts.sum())
        if hist._count:
            values = cls.bucket_value(np.asarray(index))
            hist._total = float((values * np.asarray(counts)).sum())
            hist._min, hist._max = float(values.min()), float(values.max())
        return hist

    @property
    def counts(self) -> np.ndarray:
        """Values per bucket."""
        self.flush()
        return self._counts

    @property
    def count(self) -> int:
        return self._count + len(self.pending)

    @property
    def total(self) -> float:
        self.flush()
        return self._total

    @property
    def min(self) -> float:
        self.flush()
        return self._min

    @property
    def max(self) -> float:
        self.flush()
        return self._max

    def merge(self, other: LatencyHistogram) -> None:
        self.flush()
        other.flush()
        self._counts += other._counts
        self._count += other._count
        self._total += other._total
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (only the buckets that were hit), for shards to send their samples."""
        self.flush()
        return {"buckets": {str(i): int(self._counts[i]) for i in np.flatnonzero(self._counts)},
                "count": self._count, "total": self._total, "min": self._min if self._count else None,
                "max": self._max}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        hist = cls()
        for i, c in data["buckets"].items():
            hist._counts[int(i)] = int(c)
        hist._count, hist._total, hist._max = int(data["count"]), float(data["total"]), float(data["max"])
        hist._min = math.inf if data["min"] is None else float(data["min"])
        return hist

    def quantile(self, q: float) -> float:
        """The latency at quantile q (0 < q <= 1), nearest-rank; 0 when empty."""
        self.flush()
        if not self._count:
            return 0.0
        if q >= 1.0:
            return self._max
        rank = max(1, math.ceil(q * self._count))
        i = int(np.searchsorted(np.cumsum(self._counts), rank))
        if i == 0:
            value = self._LOWEST
        else:
            lo = self._LOWEST * self._RATIO ** (i - 1)
            value = lo * math.sqrt(self._RATIO)
        return min(max(value, self._min), self._max)
