"""The open model: requests sent on a schedule, whatever the server does.

At each offered rate, `rate × duration` requests are due at fixed spacing (or Poisson arrivals);
each is launched when due — on a free kept-alive connection, else a new one — and measured from
the moment it was due, so a server that stalls cannot slow the sending down and hide the stall
(coordinated omission). When `max_in_flight` requests are out, a due request is dropped and
counted, never silently skipped.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncbench.engines import open_engine
from asyncbench.experiments.descriptor import LOAD_REQUIRED, Experiment, StepEvents, sweet_row
from asyncbench.experiments.load import RequestSpec, check_target
from asyncbench.metrics import RoundFacts, latency_quantiles
from asyncbench.rates import RateRecorder, RateStats, summarize_rate
from asyncbench.shards import Driver
from asyncbench.system import LoopLagMonitor, PeakRss, cpu_seconds

_perf = time.perf_counter

DEFAULT_RATES = (100, 500, 1000, 2000)
ARRIVALS = ("constant", "poisson")
# Within this much of its due time a send is made by yielding to the loop rather than by a
# timer: the loop's timers have a millisecond's grain, the schedule needs better.
_SPIN_S = 0.001


def _charts(run: Any, out_dir: Path, min_success: float | None) -> list[Path]:
    from asyncbench import plots

    return plots.rate_charts(run, out_dir)


def _summary(run: Any) -> list[Any]:
    from asyncbench import report

    rows = run.rows()
    sweet = sweet_row(run, rows)
    return [report.rate_table(rows, sweet, f"rate: {len(rows)} rates"),
            report.rate_verdict(rows, sweet, run.setting("min_success", 0.99), run.setting("slo_p99_s", None))]


EXPERIMENT = Experiment(
    name="rate", step="rate", completed_key="rates_completed",
    required=(*LOAD_REQUIRED, "offered_rps", "achieved_rps", "dropped", "send_lag_p99_s"),
    sort_by=("level",), charts=_charts, axis_label="offered rate (requests per second)",
    verdict_word="rate", load_sweep=True, summary=_summary,
)


@dataclass
class RateConfig:
    request: RequestSpec
    rates: list[int]
    duration: float = 10.0
    arrivals: str = "constant"
    max_in_flight: int = 10_000
    cooldown: float = 1.0
    seed: int | None = None
    driver: Driver = field(default_factory=Driver)  # where the load is made


@dataclass
class RateResult:
    """A finished rate: its row, its latency quantiles (from the intended send time), and why
    its load was not all made (a shard that died), if it was not."""

    stats: RateStats
    quantiles: list[tuple[float, float]]
    incomplete: list[str] = field(default_factory=list)


async def offer(spec: RequestSpec, rate: float, total: int, arrivals: str, max_in_flight: int,
                recorder: RateRecorder, rng: random.Random, phase_s: float = 0.0) -> RoundFacts:
    """Offer `total` requests at `rate` per second, the first `phase_s` after the start (a
    shard's place in a schedule shared with others); measure each into `recorder`."""
    rss = PeakRss()
    cpu0 = cpu_seconds()
    wall0 = _perf()
    engine = open_engine(spec.engine, spec.url, spec.method, spec.headers, spec.data, spec.timeout,
                         spec.retries, 0, False, spec.insecure)
    poisson = arrivals == "poisson"
    async with engine:
        with LoopLagMonitor() as lag:
            start = recorder.origin = _perf()
            start += phase_s
            due, sent = start, 0
            while sent < total:
                now = _perf()
                while sent < total and due <= now:
                    if engine.in_flight >= max_in_flight:
                        recorder.dropped += 1
                    else:
                        engine.launch(due, recorder)
                        if engine.in_flight > recorder.in_flight_max:
                            recorder.in_flight_max = engine.in_flight
                    sent += 1
                    due = due + rng.expovariate(rate) if poisson else start + sent / rate
                if sent < total:
                    wait = due - _perf()
                    await asyncio.sleep(wait - _SPIN_S if wait > _SPIN_S else 0)
            await engine.drain()
    wall = _perf() - wall0
    return RoundFacts(peak_rss_mb=rss.peak_mb(),
                      client_cpu_pct=100.0 * (cpu_seconds() - cpu0) / wall if wall > 0 else 0.0,
                      loop_lag_max_s=lag.max_lag, loop_late_share=lag.total_lag / wall if wall > 0 else 0.0,
                      fd_refused=engine.refused_locally)


async def run(config: RateConfig, events: StepEvents) -> list[RateResult]:
    """Every offered rate in turn, each reported as soon as it is finished."""
    results: list[RateResult] = []
    for rate in config.rates:
        if results and config.cooldown > 0:
            await asyncio.sleep(config.cooldown)  # let the target drain what the last rate left
        recorder = RateRecorder()
        failures_before = len(config.driver.failures)
        total = max(1, round(rate * config.duration))
        step = f"rate {rate:,g}/s"
        events.started(step, total, lambda recorder=recorder: config.driver.progress(recorder))
        facts = await config.driver.open(step, config.request, rate, total, config.arrivals, config.max_in_flight,
                                         config.seed, recorder)
        stats = summarize_rate(rate, total / rate, recorder, facts)
        result = RateResult(stats, latency_quantiles([recorder]), config.driver.failures[failures_before:])
        results.append(result)
        events.finished(result)
        await check_target(config.request, step, rate, stats)
    return results
