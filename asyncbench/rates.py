"""Open-model records → per-rate statistics: latency from the intended send time (free of
coordinated omission), service time from the actual send, send lag, drops, the sweet spot.

The closed-loop statistics (`metrics`) time a request from its send; here the clock starts when
the schedule said the request should leave, so a stall of the server — during which a closed
loop simply stops sending — shows in the percentiles as the users behind it would see it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from asyncbench.metrics import LatencyHistogram, LevelRecorder, RoundFacts, summarize
from asyncbench.records import FetchResult
from asyncbench.rows import RateStats

# A send that leaves this late against its schedule means the client could not keep up: the
# rate it offered was not the rate asked for, and the figures describe the client.
SEND_LAG_LIMIT_S = 0.010
# Below this many sends a p99 is the slowest one: a single hiccup of a shared machine, not a
# client that cannot keep the schedule. Such a short run is judged by its median send instead.
P99_SENDS = 100


class RateRecorder(LevelRecorder):
    """A LevelRecorder whose latency runs from each request's intended send time, with the
    service time (from the actual send) and the send lag kept apart, and the drops counted."""

    __slots__ = ("service", "send_lag", "dropped", "in_flight_max", "first_intended", "last_sent")

    def __init__(self, origin: float = 0.0, interval: float = 1.0) -> None:
        super().__init__(origin, interval=interval)
        self.service = LatencyHistogram()
        self.send_lag = LatencyHistogram()
        self.dropped = 0  # due while --max-in-flight requests were out: not sent, counted
        self.in_flight_max = 0
        self.first_intended = math.inf  # seconds after origin
        self.last_sent = -math.inf

    def scheduled(self, intended_at: float, sent_at: float, done_at: float, body_bytes: int) -> None:
        """A request that succeeded at its first attempt (the fast engine's hot path)."""
        self.service.record(done_at - sent_at)
        self.send_lag.record(sent_at - intended_at if sent_at > intended_at else 0.0)
        self._span(intended_at, sent_at)
        self.success(intended_at, done_at, body_bytes)

    def add(self, result: FetchResult) -> None:
        intended = result.intended_at or result.sent_at
        self.service.record(result.latency_s)
        self.send_lag.record(max(0.0, result.sent_at - intended))
        self._span(intended, result.sent_at)
        super().add(replace(result, latency_s=result.done_at - intended, sent_at=intended))

    def _span(self, intended_at: float, sent_at: float) -> None:
        intended_at -= self.origin
        sent_at -= self.origin
        if intended_at < self.first_intended:
            self.first_intended = intended_at
        if sent_at > self.last_sent:
            self.last_sent = sent_at

    @property
    def sent(self) -> int:
        return self.count

    @property
    def done(self) -> int:
        """Requests sent and answered, and those dropped: the schedule's progress."""
        return self.count + self.dropped

    def merge(self, other: LevelRecorder) -> None:
        """Add a shard of the same rate. The in-flight maximum becomes the sum of the shards'
        maxima: an upper bound, as their peaks need not coincide."""
        super().merge(other)
        if isinstance(other, RateRecorder):
            self.service.merge(other.service)
            self.send_lag.merge(other.send_lag)
            self.dropped += other.dropped
            self.in_flight_max += other.in_flight_max
            self.first_intended = min(self.first_intended, other.first_intended)
            self.last_sent = max(self.last_sent, other.last_sent)

    def to_dict(self) -> dict[str, Any]:
        sent = bool(self.count)
        return {**super().to_dict(), "service": self.service.to_dict(), "send_lag": self.send_lag.to_dict(),
                "dropped": self.dropped, "in_flight_max": self.in_flight_max,
                "first_intended": self.first_intended if sent else None, "last_sent": self.last_sent if sent else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateRecorder:
        rec = super().from_dict(data)
        assert isinstance(rec, RateRecorder)
        rec.service = LatencyHistogram.from_dict(data["service"])
        rec.send_lag = LatencyHistogram.from_dict(data["send_lag"])
        rec.dropped, rec.in_flight_max = int(data["dropped"]), int(data["in_flight_max"])
        if data["first_intended"] is not None:
            rec.first_intended, rec.last_sent = float(data["first_intended"]), float(data["last_sent"])
        return rec


def summarize_rate(rate: float, duration: float, recorder: RateRecorder, facts: RoundFacts) -> RateStats:
    """The row of one offered rate."""
    base = summarize("rate", round(rate), [(recorder, facts)])
    sent = recorder.sent
    # Sends spread over the schedule's length; when the client fell behind, over its own.
    span = max(duration, recorder.last_sent - recorder.first_intended) if sent else duration
    achieved = sent / span if span > 0 else 0.0
    lag_p99 = recorder.send_lag.quantile(0.99)
    judged = lag_p99 if sent >= P99_SENDS else recorder.send_lag.quantile(0.5)
    fields = dict(vars(base))
    fields.update(
        efficiency=achieved / rate if rate else 0.0,
        client_limited=bool(sent) and judged > SEND_LAG_LIMIT_S,
    )
    # Rates over the schedule at least: a probe of a request or two is not done in the time one
    # answer takes.
    window = max(duration, base.elapsed_s)
    if window > 0 and base.elapsed_s < duration:
        fields.update(throughput_rps=base.requests / window, goodput_rps=base.successes / window,
                      goodput_min_rps=base.successes / window, goodput_max_rps=base.successes / window)
        fields["littles_l"] = fields["throughput_rps"] * base.latency_mean_s
    return RateStats(
        **fields,
        offered_rps=rate,
        achieved_rps=achieved,
        dropped=recorder.dropped,
        send_lag_p99_s=lag_p99,
        latency_p999_s=recorder.latency.quantile(0.999),
        service_p50_s=recorder.service.quantile(0.50),
        service_p99_s=recorder.service.quantile(0.99),
        in_flight_max=recorder.in_flight_max,
    )


def rate_sweet_spot(rows: Sequence[RateStats], min_success: float, slo_p99: float | None,
                    excluded: Sequence[int] = ()) -> RateStats | None:
    """The highest offered rate that met `min_success` (and the p99 objective on the successes'
    latency, when given), with nothing dropped and the client keeping up: a rate the client
    could not offer as asked says nothing of the target. Rates in `excluded` (the target went
    away) are never chosen."""
    good = [r for r in rows if r.requests and r.success_rate >= min_success and not r.dropped
            and not r.client_limited and r.level not in excluded
            and (slo_p99 is None or r.ok_latency_p99_s <= slo_p99)]
    return max(good, key=lambda r: r.offered_rps) if good else None


# Sent this much below the rate asked, the schedule was not kept in count, not only in spacing.
SHORTFALL = 0.02


def rate_warnings(row: RateStats) -> list[str]:
    """What a careful reader should know about one offered rate."""
    what = f"rate {row.offered_rps:,.0f}/s"
    notes: list[str] = []
    if row.client_limited:
        late = (f"sends left up to {row.send_lag_p99_s * 1000:.0f} ms late at p99, CPU "
                f"{row.client_cpu_pct:.0f} % of a core")
        if row.offered_rps and row.achieved_rps < row.offered_rps * (1 - SHORTFALL):
            notes.append(
                f"{what}: the client could not keep the schedule ({late}): it sent "
                f"{row.achieved_rps:,.0f}/s, so the rate offered was lower than asked, and the figures "
                "describe the client"
            )
        else:
            notes.append(
                f"{what}: the client could not keep the schedule's spacing ({late}): it sent "
                f"{row.achieved_rps:,.0f}/s on average, but in clumps, and the latency includes its own "
                "delay; the figures describe the client as much as the target"
            )
    if row.dropped:
        notes.append(
            f"{what}: {row.dropped:,} requests were due while --max-in-flight requests were out, "
            "and were not sent: the target fell behind this rate"
        )
    if row.requests and row.errors_connect * 2 > row.requests:
        notes.append(f"{what}: {row.errors_connect:,} of {row.requests:,} requests could not connect")
    return notes


def rate_row_facts(stats: Any) -> dict[str, Any]:
    """The JSON sidecar's view of a sweet spot row."""
    return {"level": stats.level, "offered_rps": stats.offered_rps, "achieved_rps": stats.achieved_rps,
            "goodput_rps": stats.goodput_rps, "success_rate": stats.success_rate,
            "latency_p99_s": stats.latency_p99_s, "ok_latency_p99_s": stats.ok_latency_p99_s,
            "reliable": not stats.client_limited}
