"""The rows of the load CSVs, as dataclasses: their fields, in order, are the columns, with their
units in their names. Plain data, imported by the statistics that fill them and the experiments
that write and read them."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class LevelStats:
    """One row of a load CSV (trap, semaphore): the field order is the column order."""

    experiment: str
    level: int
    requests: int
    successes: int
    failures: int
    errors_timeout: int
    errors_connect: int
    errors_http_4xx: int
    errors_http_5xx: int
    errors_other: int
    success_rate: float
    elapsed_s: float
    throughput_rps: float
    goodput_rps: float
    latency_mean_s: float
    latency_p50_s: float
    latency_p90_s: float
    latency_p99_s: float
    latency_max_s: float
    littles_l: float
    efficiency: float
    queue_wait_mean_s: float
    peak_rss_mb: float
    rounds: int
    attempts: int
    goodput_min_rps: float
    goodput_max_rps: float
    client_cpu_pct: float
    loop_lag_max_s: float
    client_limited: bool
    body_bytes: int  # response body bytes received, as sent on the wire
    error_statuses: str  # HTTP status codes of failed responses with their counts: "503:120 429:4"
    retry_after_refused: int  # failures whose Retry-After was longer than the time left
    loop_late_share: float  # share of the level's time its event loop was behind (0..1)
    ok_latency_p50_s: float  # latency of the successful requests only (0 when none succeeded)
    ok_latency_p90_s: float
    ok_latency_p99_s: float
    ok_latency_max_s: float
    throttled: int  # attempts answered 429, or 503 with a Retry-After (retried ones too)
    out_of_files: int  # requests the client could not send: it was out of open files (ulimit -n)
    # Where the time went (None where the engine does not measure it: the aiohttp engine's set-up)
    connections_opened: int | None  # new connections the level opened
    connect_mean_s: float | None  # their TCP connect, on average
    tls_mean_s: float | None  # their TLS handshake, on average (0 over plain HTTP)
    ttfb_p50_s: float | None  # request sent → first byte of its response
    ttfb_p99_s: float | None

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class RateStats(LevelStats):
    """One row of a `rate` CSV: the load columns (`level` is the offered rate), then these."""

    offered_rps: float
    achieved_rps: float  # requests sent per second over the schedule
    dropped: int  # due while --max-in-flight requests were out: not sent
    send_lag_p99_s: float  # how late sends left against the schedule
    latency_p999_s: float
    service_p50_s: float  # from the actual send: what a closed loop would have measured
    service_p99_s: float
    in_flight_max: int


@dataclass
class WorkerStageStats(LevelStats):
    """One row of `semaphore --stages`: the load columns (`level` is the stage's target number
    of workers), then where it is in the ramp."""

    stage: int  # from 1
    stage_from: int  # the number of workers it ramps from
    stage_duration_s: float


@dataclass
class StageStats(RateStats):
    """One row of `rate --stages`: the `rate` columns (`level` is the stage's target rate,
    `offered_rps` its mean), then where it is in the ramp."""

    stage: int  # from 1
    stage_from_rps: float  # the rate it ramps from
    stage_duration_s: float
