"""Per-request records → per-level statistics: percentiles, goodput, Little's law, the sweet spot.

Latencies go into `LatencyHistogram`, an HDR-style log-bucketed histogram (at most 0.1 % relative
error, three significant digits, as HdrHistogram), so a level's memory is bounded by the number
of buckets, not by its request count, and rounds of a level merge by adding counts. Successes
and failures are kept in two histograms: a level that sheds fast 503s must not report its
successes' latency as lower than the server's service time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncbench.histogram import LatencyHistogram
from asyncbench.records import ERROR_KINDS, FetchResult, format_statuses, parse_statuses
from asyncbench.rows import LevelStats
from asyncbench.timeline import Timeline
from asyncbench.tls import TlsFacts

# Quantiles written to the -latency.csv for distribution charts.
QUANTILES: tuple[float, ...] = (
    *(i / 100 for i in range(1, 100)),
    0.995,
    0.999,
    1.0,
)


class LevelRecorder:
    """Accumulates one run of one level, request by request, in constant memory.

    Latencies of successes (`ok`) and of failures (`failed`) are kept apart; `latency` is
    both together. Times are kept relative to `origin`, the `perf_counter()` of the run's
    start, so that shards recorded apart (other processes, other machines) merge on one time
    axis. `submitted_at`, when set, is the moment every request of the run was submitted at
    once (the semaphore's queue): a request's queue wait is then its send time minus that.
    `throttled` counts the attempts the server answered 429, or 503 with a Retry-After —
    retried ones too. Where the time went: `ttfb` (send to first response byte), and from the
    engine, the connections opened with their TCP and TLS set-up (`timed`: the engine measured
    them), the TLS handshakes, and the requests sent to each address.
    """

    __slots__ = (
        "ok", "failed", "queue_wait_total", "successes", "attempts", "errors", "first_sent", "last_done",
        "body_bytes", "error_statuses", "retry_after_refused", "throttled", "origin", "submitted_at",
        "ttfb", "connections", "connect_total", "tls_total", "timed", "tls", "addresses", "timeline",
    )

    def __init__(self, origin: float = 0.0, submitted_at: float | None = None, interval: float = 1.0) -> None:
        self.ok = LatencyHistogram()
        self.failed = LatencyHistogram()
        self.queue_wait_total = 0.0
        self.successes = 0
        self.attempts = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.first_sent = math.inf  # seconds after origin
        self.last_done = -math.inf
        self.body_bytes = 0
        self.error_statuses: dict[int, int] = {}  # HTTP status → failed responses with it
        self.retry_after_refused = 0
        self.throttled = 0
        self.origin = origin
        self.submitted_at = submitted_at
        self.ttfb = LatencyHistogram()
        self.connections = 0
        self.connect_total = 0.0  # seconds of TCP connect, over the connections opened
        self.tls_total = 0.0  # seconds of TLS handshake, over them
        self.timed = False
        self.tls = TlsFacts()
        self.addresses: dict[str, int] = {}  # requests sent to each address
        self.timeline = Timeline(interval)  # the same requests, interval by interval

    def note_engine(self, engine: Any) -> None:
        """What an engine counted over its round: connections, their set-up, the handshakes, the
        requests to each address (an engine that does not time its connections says so)."""
        opened = getattr(engine, "opened", None)
        if opened is not None:
            self.timed = True
            self.connections += opened
            self.connect_total += engine.connect_total
            self.tls_total += engine.tls_total
        facts = getattr(engine, "tls_facts", None)
        if facts is not None:
            self.tls.merge(facts)
        ttfb = getattr(engine, "ttfb", None)  # of the successes it recorded by the hot path
        if ttfb is not None:
            self.ttfb.merge(ttfb)
        for address, n in getattr(engine, "sent_to", {}).items():
            if n:
                self.addresses[address] = self.addresses.get(address, 0) + n

    @property
    def latency(self) -> LatencyHistogram:
        """Every request's latency, successes and failures together (a new histogram)."""
        both = LatencyHistogram()
        both.merge(self.ok)
        both.merge(self.failed)
        return both

    @property
    def count(self) -> int:
        return self.ok.count + self.failed.count

    @property
    def done(self) -> int:
        """Requests of the run that are over, for progress."""
        return self.ok.count + self.failed.count

    def success(self, sent_at: float, done_at: float, body_bytes: int) -> None:
        """A request that succeeded at its first attempt (the engines' hot path)."""
        pending = self.ok.pending  # LatencyHistogram.record, inlined: one call less per request
        pending.append(done_at - sent_at)
        if len(pending) >= LatencyHistogram._BATCH:
            self.ok.flush()
        self.successes += 1
        self.attempts += 1
        self.body_bytes += body_bytes
        if self.submitted_at is not None:
            self.queue_wait_total += sent_at - self.submitted_at
        latency = done_at - sent_at
        sent_at -= self.origin
        done_at -= self.origin
        timeline = self.timeline
        timeline.sent_at.append(sent_at)
        timeline.ok_done.append(done_at)
        timeline.ok_latency.append(latency)
        if len(timeline.ok_done) >= LatencyHistogram._BATCH:
            timeline.flush()
        if sent_at < self.first_sent:
            self.first_sent = sent_at
        if done_at > self.last_done:
            self.last_done = done_at

    def add(self, result: FetchResult) -> None:
        if self.submitted_at is not None:
            self.queue_wait_total += result.sent_at - self.submitted_at
        else:
            self.queue_wait_total += result.queue_wait_s
        self.attempts += result.attempts
        self.body_bytes += result.body_bytes
        self.throttled += result.throttled
        if result.ttfb_s is not None:
            self.ttfb.record(result.ttfb_s)
        if result.ok:
            self.ok.record(result.latency_s)
            self.successes += 1
        else:
            self.failed.record(result.latency_s)
            self.errors[result.error or "other"] += 1
            if result.status is not None:
                self.error_statuses[result.status] = self.error_statuses.get(result.status, 0) + 1
            if result.retry_after_refused_s is not None:
                self.retry_after_refused += 1
        sent_at = result.sent_at - self.origin
        done_at = result.done_at - self.origin
        timeline = self.timeline
        timeline.sent_at.append(sent_at)
        if result.ok:
            timeline.ok_done.append(done_at)
            timeline.ok_latency.append(result.latency_s)
        else:
            timeline.failed_done.append(done_at)
        if len(timeline.sent_at) >= LatencyHistogram._BATCH:
            timeline.flush()
        if sent_at < self.first_sent:
            self.first_sent = sent_at
        if done_at > self.last_done:
            self.last_done = done_at

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.last_done - self.first_sent) if self.count else 0.0

    def merge(self, other: LevelRecorder) -> None:
        """Add `other` (a shard of the same level, timed from the same start) to this one:
        counts add, histograms merge, the span covers both."""
        self.ok.merge(other.ok)
        self.failed.merge(other.failed)
        self.queue_wait_total += other.queue_wait_total
        self.successes += other.successes
        self.attempts += other.attempts
        self.body_bytes += other.body_bytes
        self.retry_after_refused += other.retry_after_refused
        self.throttled += other.throttled
        self.ttfb.merge(other.ttfb)
        self.connections += other.connections
        self.connect_total += other.connect_total
        self.tls_total += other.tls_total
        self.timed = self.timed or other.timed
        self.tls.merge(other.tls)
        for address, n in other.addresses.items():
            self.addresses[address] = self.addresses.get(address, 0) + n
        self.timeline.merge(other.timeline)
        for kind, n in other.errors.items():
            self.errors[kind] += n
        for code, n in other.error_statuses.items():
            self.error_statuses[code] = self.error_statuses.get(code, 0) + n
        self.first_sent = min(self.first_sent, other.first_sent)
        self.last_done = max(self.last_done, other.last_done)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; times in seconds after the run's start."""
        return {
            "ok": self.ok.to_dict(), "failed": self.failed.to_dict(), "queue_wait_total": self.queue_wait_total,
            "successes": self.successes, "attempts": self.attempts, "errors": dict(self.errors),
            "first_sent": self.first_sent if self.count else None,
            "last_done": self.last_done if self.count else None, "body_bytes": self.body_bytes,
            "error_statuses": {str(k): v for k, v in self.error_statuses.items()},
            "retry_after_refused": self.retry_after_refused, "throttled": self.throttled,
            "ttfb": self.ttfb.to_dict(), "connections": self.connections, "connect_total": self.connect_total,
            "tls_total": self.tls_total, "timed": self.timed, "tls": self.tls.to_dict(),
            "addresses": dict(self.addresses), "timeline": self.timeline.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LevelRecorder:
        rec = cls()
        rec.ok = LatencyHistogram.from_dict(data["ok"])
        rec.failed = LatencyHistogram.from_dict(data["failed"])
        rec.queue_wait_total = float(data["queue_wait_total"])
        rec.successes, rec.attempts = int(data["successes"]), int(data["attempts"])
        rec.errors.update({k: int(v) for k, v in data["errors"].items()})
        if data["first_sent"] is not None:
            rec.first_sent, rec.last_done = float(data["first_sent"]), float(data["last_done"])
        rec.body_bytes = int(data["body_bytes"])
        rec.error_statuses = {int(k): int(v) for k, v in data["error_statuses"].items()}
        rec.retry_after_refused = int(data["retry_after_refused"])
        rec.throttled = int(data["throttled"])
        rec.ttfb = LatencyHistogram.from_dict(data["ttfb"])
        rec.connections = int(data["connections"])
        rec.connect_total, rec.tls_total = float(data["connect_total"]), float(data["tls_total"])
        rec.timed = bool(data["timed"])
        rec.tls = TlsFacts.from_dict(data["tls"])
        rec.addresses = {str(k): int(v) for k, v in data["addresses"].items()}
        rec.timeline = Timeline.from_dict(data["timeline"])
        return rec


@dataclass
class RoundFacts:
    """What the experiment observed around one run of a level, besides the requests."""

    peak_rss_mb: float
    client_cpu_pct: float  # CPU time of this process / wall time, % of one core
    loop_lag_max_s: float  # worst delay of a 10 ms ticker on the event loop
    loop_late_share: float = 0.0  # the ticker's delays added up, over the round's wall time
    cpu_wait_pct: float = 0.0  # time the event loop's thread waited for a CPU / wall time, % of one core
    fd_refused: int = 0  # requests not sent: the process was out of open files (ulimit -n)


# When is the client, not the server, the limit? Two kinds of evidence:
# - its event loop was late, by a good part of the measured latency (so responses sat unread
#   in the kernel that long), for a good part of the level's time, while the process was busy
#   on the CPU. The share matters: a fast engine opening 1,000 connections stalls its loop once
#   for ~0.1 s and then keeps up (its p50 matches wrk's), while a saturated client is behind
#   all along;
# - in a sustained run, far fewer requests were in flight than the level (L/level well below 1)
#   while the process used nearly a whole core: it could not keep the level busy.
LAG_FLOOR_S = 0.05
LAG_SHARE_OF_P50 = 0.25
LATE_SHARE = 0.3
BUSY_CPU_PCT = 50.0
SATURATED_CPU_PCT = 90.0
LOW_EFFICIENCY = 0.5


def is_client_limited(
    level: int, requests_per_round: int, latency_p50_s: float, efficiency: float,
    cpu_pct: float, lag_s: float, late_share: float, cpu_wait_pct: float = 0.0,
) -> bool:
    """Whether a level's figures describe the load generator rather than the target.

    Busy means on a CPU or waiting for one (`cpu_wait_pct`): a client whose machine is shared
    with a busy neighbour gets half a core, and is the limit all the same."""
    lagged = (lag_s >= LAG_FLOOR_S and lag_s >= LAG_SHARE_OF_P50 * latency_p50_s and late_share >= LATE_SHARE
              and cpu_pct + cpu_wait_pct >= BUSY_CPU_PCT)
    sustained = requests_per_round >= 4 * level
    starved = sustained and efficiency < LOW_EFFICIENCY and cpu_pct >= SATURATED_CPU_PCT
    return lagged or starved


def summarize(
    experiment: str,
    level: int,
    rounds: Sequence[tuple[LevelRecorder, RoundFacts]],
) -> LevelStats:
    """Fold one or more rounds of a level into its row.

    Counts and latency are pooled over the rounds; rates (elapsed, throughput, goodput) are the
    median round's, with the spread of goodput kept in goodput_min/max.
    """
    if not rounds:
        raise ValueError("a level needs at least one round")
    pooled = LevelRecorder()
    for rec, _ in rounds:
        pooled.merge(rec)
    hist, ok, errors, successes = pooled.latency, pooled.ok, pooled.errors, pooled.successes
    requests = hist.count
    elapsed = statistics.median(rec.elapsed_s for rec, _ in rounds)
    goodputs = [rec.successes / rec.elapsed_s if rec.elapsed_s else 0.0 for rec, _ in rounds]
    throughput = statistics.median(
        rec.count / rec.elapsed_s if rec.elapsed_s else 0.0 for rec, _ in rounds
    )
    littles_l = throughput * hist.mean
    efficiency = littles_l / level if level else 0.0
    p50 = hist.quantile(0.50)
    # A level whose every request was refused a connection measured a target that went away,
    # not a busy client (failing fast keeps the loop busy too).
    target_alive = not (requests and errors["connect"] == requests)
    cpu = max(f.client_cpu_pct for _, f in rounds)
    lag = max(f.loop_lag_max_s for _, f in rounds)
    late = max(f.loop_late_share for _, f in rounds)
    waited = max(f.cpu_wait_pct for _, f in rounds)
    # Requests the client could not even try (out of open files) make the level the client's.
    out_of_files = sum(f.fd_refused for _, f in rounds)
    return LevelStats(
        experiment=experiment,
        level=level,
        requests=requests,
        successes=successes,
        failures=requests - successes,
        errors_timeout=errors["timeout"],
        errors_connect=errors["connect"],
        errors_http_4xx=errors["http_4xx"],
        errors_http_5xx=errors["http_5xx"],
        errors_other=errors["other"],
        success_rate=successes / requests if requests else 0.0,
        elapsed_s=elapsed,
        throughput_rps=throughput,
        goodput_rps=statistics.median(goodputs),
        latency_mean_s=hist.mean,
        latency_p50_s=p50,
        latency_p90_s=hist.quantile(0.90),
        latency_p99_s=hist.quantile(0.99),
        latency_max_s=hist.max if requests else 0.0,
        littles_l=littles_l,
        efficiency=efficiency,
        queue_wait_mean_s=pooled.queue_wait_total / requests if requests else 0.0,
        peak_rss_mb=max(f.peak_rss_mb for _, f in rounds),
        rounds=len(rounds),
        attempts=pooled.attempts,
        goodput_min_rps=min(goodputs),
        goodput_max_rps=max(goodputs),
        client_cpu_pct=cpu,
        loop_lag_max_s=lag,
        client_limited=bool(out_of_files) or (target_alive and is_client_limited(
            level, requests // len(rounds), p50, efficiency, cpu_pct=cpu, lag_s=lag, late_share=late,
            cpu_wait_pct=waited)),
        body_bytes=pooled.body_bytes,
        error_statuses=format_statuses(pooled.error_statuses),
        retry_after_refused=pooled.retry_after_refused,
        loop_late_share=late,
        ok_latency_p50_s=ok.quantile(0.50),
        ok_latency_p90_s=ok.quantile(0.90),
        ok_latency_p99_s=ok.quantile(0.99),
        ok_latency_max_s=ok.max if ok.count else 0.0,
        throttled=pooled.throttled,
        out_of_files=out_of_files,
        connections_opened=pooled.connections if pooled.timed else None,
        connect_mean_s=pooled.connect_total / pooled.connections if pooled.timed and pooled.connections else None,
        tls_mean_s=pooled.tls_total / pooled.connections if pooled.timed and pooled.connections else None,
        ttfb_p50_s=pooled.ttfb.quantile(0.50) if pooled.ttfb.count else None,
        ttfb_p99_s=pooled.ttfb.quantile(0.99) if pooled.ttfb.count else None,
    )


def latency_quantiles(rounds: Iterable[LevelRecorder]) -> list[tuple[float, float]]:
    """(quantile, latency_s) pairs of the pooled rounds, for the -latency.csv."""
    hist = LatencyHistogram()
    for rec in rounds:
        hist.merge(rec.latency)
    if not hist.count:
        return []
    return [(q, hist.quantile(q)) for q in QUANTILES]


# Goodputs within this fraction of the best are as good: the knee. A level that reaches 95 % of
# the best goodput does it with less latency and less load on the server, and a difference that
# small moves from run to run on a shared machine (the default semaphore's limits 100 and 200,
# both at the server's capacity, measured 2-3 % apart either way). `find` recommends by the same
# rule.
KNEE_TOLERANCE = 0.05
# A level sent as one burst (each request on a new connection, all at once) times its goodput
# over one or two service times, set-up of the connections included: the same burst on the
# embedded server measured from 1,400 to 1,580 req/s run to run (default trap, level 100).
BURST_TOLERANCE = 0.10
# The coarsest resolution a level is given, however short or lagged it was.
MAX_RESOLUTION = 0.25


def goodput_resolution(row: Any) -> float:
    """How finely a level's goodput is known, as a fraction: BURST_TOLERANCE for one burst;
    for a sustained level, one request's mean latency over the level's span (its goodput is
    timed from the first send to the last answer: a run only a few latencies long cannot tell
    a wave more or less); coarser still when the client's event loop was late for a larger
    share of the span (a response can have been seen that late)."""
    rounds = max(1, int(row.rounds))
    elapsed = float(row.elapsed_s)
    one_burst = row.requests <= row.level * rounds
    lag_share = float(row.loop_lag_max_s) / elapsed if elapsed > 0 else 0.0
    waves = float(row.latency_mean_s) / elapsed if elapsed > 0 and not one_burst else 0.0
    return min(MAX_RESOLUTION, max(BURST_TOLERANCE if one_burst else 0.0, waves, lag_share))


def sweet_spot(rows: Sequence[LevelStats], min_success: float,
               excluded: Iterable[int] = ()) -> LevelStats | None:
    """The knee: the lowest level whose goodput is as good as the best's, among the levels
    with success_rate >= min_success.

    As good: within KNEE_TOLERANCE (5 %) of the best goodput, or within the resolution of
    either measurement when that is coarser (see `goodput_resolution`). Levels in `excluded`
    (a target that went away, a shard that died) are never chosen. None when no level is good
    enough.
    """
    skip = set(excluded)
    good = [r for r in rows if r.requests and r.success_rate >= min_success and r.level not in skip]
    if not good:
        return None
    best = max(good, key=lambda r: r.goodput_rps)
    tied = [r for r in good if r.goodput_rps >= best.goodput_rps * (
        1 - max(KNEE_TOLERANCE, goodput_resolution(r), goodput_resolution(best)))]
    return min(tied, key=lambda r: r.level)


def warnings_for(row: LevelStats, min_success: float, step: str = "level") -> list[str]:
    """What a careful reader should know about one level (`step` names it: "limit 100"),
    each naming what to change."""
    notes: list[str] = []
    what = f"{step} {row.level}"
    if row.requests and row.errors_connect == row.requests:
        notes.append(
            f"{what}: every request failed to connect ({row.errors_connect:,}): the target went away "
            "or stopped accepting connections, so this level measured no server"
        )
    elif getattr(row, "out_of_files", 0):
        notes.append(
            f"{what}: {row.out_of_files:,} of {row.requests:,} requests were not sent: this process ran out of "
            "open files (each connection is one; raise the limit: ulimit -n), so the client, not the target, "
            "was the limit"
        )
    elif row.requests and row.errors_connect * 2 > row.requests:
        notes.append(
            f"{what}: {row.errors_connect:,} of {row.requests:,} requests could not connect or lost "
            "their connection: the target refused or dropped them (is it still running? is its "
            "accept backlog full?)"
        )
    if row.retry_after_refused:
        notes.append(
            f"{what}: {row.retry_after_refused:,} responses asked to be retried after longer than "
            "the time left of --timeout, so they were not retried (a longer --timeout honours them)"
        )
    if row.client_limited and not getattr(row, "out_of_files", 0):
        notes.append(
            f"{what}: the client was the limit (event loop up to {row.loop_lag_max_s * 1000:.0f} ms "
            f"late, behind {row.loop_late_share * 100:.0f} % of the time, CPU {row.client_cpu_pct:.0f} % of a core, L/level {row.efficiency:.2f}): "
            "its latency and throughput describe the load generator, not the server; lower "
            "the level, or try --loop uvloop"
        )
    elif row.loop_lag_max_s >= LAG_FLOOR_S:
        notes.append(
            f"{what}: the event loop lagged {row.loop_lag_max_s * 1000:.0f} ms; "
            "latencies include time the responses waited for the client"
        )
    sustained = row.requests >= 4 * row.level * row.rounds
    if sustained and not row.client_limited and row.success_rate >= min_success and row.efficiency < LOW_EFFICIENCY:
        notes.append(
            f"{what}: only {row.littles_l:.1f} requests were in flight on average "
            f"(L/level {row.efficiency:.2f}): requests waited in the client, not the server; "
            "check the client's CPU and connection limits"
        )
    if row.rounds > 1 and row.goodput_rps > 0:
        spread = (row.goodput_max_rps - row.goodput_min_rps) / row.goodput_rps
        if spread > 0.25:
            notes.append(
                f"{what}: goodput varied {spread:.0%} across {row.rounds} rounds; "
                "use more --rounds or a quieter machine"
            )
    return notes


def failure_summary(row: LevelStats) -> str:
    """What the failures of a level were: '1,000 × HTTP 400', '3 × timeout', most first."""
    parts: list[tuple[int, str]] = [(n, f"HTTP {code}") for code, n in parse_statuses(row.error_statuses).items()]
    by_status = sum(n for n, _ in parts)
    http_errors = row.errors_http_4xx + row.errors_http_5xx
    if http_errors > by_status:  # rows from before status codes were kept
        parts.append((http_errors - by_status, "HTTP 4xx/5xx"))
    labels = {"errors_timeout": "timeout", "errors_connect": "connection error", "errors_other": "other error"}
    parts += [(getattr(row, col), label) for col, label in labels.items() if getattr(row, col)]
    parts.sort(key=lambda p: -p[0])
    return ", ".join(f"{n:,} × {label}" for n, label in parts) or "none"


def same_requests(trap: Any, sem: Any) -> tuple[int, Any] | None:
    """The lab's comparison: the trap level that sent as many requests at once as each semaphore
    limit sent through its slots (frames with the CSV columns). (requests, trap row) or None."""
    rounds = int(sem["rounds"].iloc[0]) if "rounds" in sem else 1
    n = int(sem["requests"].iloc[0]) // max(1, rounds)
    for row in trap.itertuples():
        per_round = int(row.requests) // max(1, int(getattr(row, "rounds", 1)))
        if int(row.level) == n and per_round == n:
            return n, row
    return None


