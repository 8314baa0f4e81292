"""`find`: the most load the target sustains within an objective (p99 and success rate).

Exponential search up (1, 2, 4, ...) until a probe fails or `--max` is reached, then bisection
(at the geometric middle) until the bracket is within 10 %. Each probe is a short steady run:
`level` requests kept in flight (`--mode concurrency`, as the semaphore) or `level` requests a
second on a schedule (`--mode rate`, as `rate`), sending nothing new after `--probe-duration`.
Every probe is kept as evidence.

Two answers: `result`, the most load within the objective (the cliff's edge), and
`recommended`, the knee: the lowest level whose goodput is within 5 % of the best any passing
probe measured — found to within 10 % too, by bisecting below it when needed. Past the knee,
more load buys latency, not goodput.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asyncbench.experiments.descriptor import LOAD_REQUIRED, Experiment, StepEvents
from asyncbench.experiments.load import RequestSpec, check_target
from asyncbench.metrics import KNEE_TOLERANCE, LevelRecorder, LevelStats, latency_quantiles, summarize
from asyncbench.rates import RateRecorder, RateStats
from asyncbench.shards import Driver

MODES = ("concurrency", "rate")
BRACKET = 1.10  # the search stops when the failing level is within 10 % of the passing one
FIRST_PROBE_REQUESTS = 20
MAX_PROBE_REQUESTS = 1_000_000


def _charts(run: Any, out_dir: Path, min_success: float | None) -> list[Path]:
    from asyncbench import plots

    return [plots.find_chart(run, out_dir)]


def _summary(run: Any) -> list[Any]:
    from rich.text import Text

    from asyncbench import report

    rows = run.rows()
    unit = "req/s" if run.setting("mode", "concurrency") == "rate" else "in flight"

    def probe(key: str) -> Any | None:
        found = run.meta.get(key)
        level = found.get("level") if isinstance(found, dict) else None
        return next((r for r in rows if r.level == level and r.passed), None)

    best, knee = probe("result"), probe("recommended")
    objective = run.meta.get("objective", "")
    shown: list[Any] = [report.find_table(rows, best, f"find: {len(rows)} probes ({objective})", unit, knee)]
    if best is None:
        shown.append(Text(f"not found: no level met the objective ({objective})", style="bold red"))
    else:
        shown.append(report.find_verdict(rows, best, knee or best, objective, unit, int(run.setting("max", 0))))
    return shown


EXPERIMENT = Experiment(
    name="find", step="probe", completed_key="probes_completed",
    required=(*LOAD_REQUIRED, "passed"), sort_by=(), charts=_charts,
    axis_label="level probed", verdict_word="level", summary=_summary,
)


@dataclass
class ConcurrencyProbe(LevelStats):
    """One probe of `find --mode concurrency`: the load columns, then its judgement."""

    passed: bool
    reason: str  # why it failed ("p99 412 ms > 300 ms"), empty when it passed


@dataclass
class RateProbe(RateStats):
    """One probe of `find --mode rate`: the `rate` columns, then its judgement."""

    passed: bool
    reason: str


@dataclass
class FindConfig:
    request: RequestSpec
    slo_p99: float
    min_success: float = 0.99
    mode: str = "concurrency"
    max_level: int = 10_000
    probe_duration: float = 3.0
    max_in_flight: int = 10_000
    cooldown: float = 1.0
    driver: Driver = field(default_factory=Driver)  # where the load is made


@dataclass
class ProbeResult:
    stats: ConcurrencyProbe | RateProbe
    quantiles: list[tuple[float, float]]
    incomplete: list[str] = field(default_factory=list)  # why its load was not all made (a shard died)


def judge(stats: LevelStats | RateStats, config: FindConfig, incomplete: list[str] | None = None) -> str:
    """Why a probe missed the objective (p99 of the successes, success rate, drops, a client
    or a shard that could not make the load); empty when it met it."""
    why = []
    if not stats.requests:
        why.append("no request finished")
    if stats.success_rate < config.min_success:
        why.append(f"success {stats.success_rate * 100:.1f} % < {config.min_success * 100:g} %")
    if stats.successes and stats.ok_latency_p99_s > config.slo_p99:
        why.append(f"p99 {stats.ok_latency_p99_s * 1000:,.1f} ms > {config.slo_p99 * 1000:g} ms")
    if isinstance(stats, RateStats) and stats.dropped:
        why.append(f"{stats.dropped:,} dropped")
    if stats.client_limited:
        why.append("the client was the limit")
    if incomplete:
        why.append(f"{len(incomplete)} shard(s) died: its load was not all made")
    return "; ".join(why)


def _halvings() -> int:
    return math.ceil(math.log2(math.log(2) / math.log(BRACKET))) + 1


def most_probes(max_level: int) -> int:
    """An upper bound on the probes a search makes up to `max_level`: doubling, bisecting the
    bracket of the most within the objective, and that of the knee."""
    doubling = math.ceil(math.log2(max(max_level, 1))) + 1
    return doubling + 2 * _halvings()


async def run(config: FindConfig, events: StepEvents) -> list[ProbeResult]:
    """Search up, then bisect; report every probe as it finishes."""
    from asyncbench.rates import summarize_rate

    driver = config.driver
    probes: list[ProbeResult] = []
    last: tuple[int, float] | None = None  # the last probe's level and throughput

    async def probe(level: int) -> bool:
        nonlocal last
        failures_before = len(driver.failures)
        if probes and config.cooldown > 0:
            await asyncio.sleep(config.cooldown)  # let the target drain what the last probe left
        stats: LevelStats | RateStats
        if config.mode == "rate":
            recorder: LevelRecorder = RateRecorder()
            total = max(1, round(level * config.probe_duration))
            step = f"probe {level:,}/s"
            events.started(step, total, lambda r=recorder: driver.progress(r))
            facts = await driver.open(step, config.request, level, total, "constant", config.max_in_flight, 0,
                                      recorder)  # type: ignore[arg-type]
            stats = summarize_rate(level, total / level, recorder, facts)  # type: ignore[arg-type]
            row: ConcurrencyProbe | RateProbe = RateProbe(**asdict(stats), passed=False, reason="")
        else:
            # Sized to last about probe_duration, from the last probe's rate scaled to this level.
            estimate = last[1] * level / last[0] * config.probe_duration if last else FIRST_PROBE_REQUESTS
            total = int(min(MAX_PROBE_REQUESTS, max(4 * level, FIRST_PROBE_REQUESTS, estimate)))
            recorder = LevelRecorder()
            step = f"probe {level:,}"
            events.started(step, total, lambda r=recorder: driver.progress(r))
            # No new request after the probe's duration: a silent target times out one request
            # per worker, not a whole probe's worth one after another.
            facts = await driver.closed(step, config.request, level, total, True, recorder, config.probe_duration)
            stats = summarize(EXPERIMENT.name, level, [(recorder, facts)])
            row = ConcurrencyProbe(**asdict(stats), passed=False, reason="")
        incomplete = driver.failures[failures_before:]
        row.experiment = EXPERIMENT.name
        row.reason = judge(stats, config, incomplete)
        row.passed = not row.reason
        if stats.throughput_rps > 0:
            last = (level, stats.throughput_rps)
        result = ProbeResult(row, latency_quantiles([recorder]), incomplete)
        probes.append(result)
        events.finished(result)
        await check_target(config.request, step, level, stats)
        return row.passed

    good: int | None = None
    bad: int | None = None
    level = 1
    while True:
        if await probe(level):
            good = level
            if level >= config.max_level:
                break
            level = min(level * 2, config.max_level)
        else:
            bad = level
            break
    while good is not None and bad is not None and bad > good * BRACKET and bad - good > 1:
        await probe(_middle(good, bad))
        good, bad = _bracket(probes, good, bad)
    # The knee: bisect below the lowest level as good as the best until it is known to 10 %.
    for _ in range(_halvings()):
        knee = knee_bracket(probes)
        if knee is None:
            break
        await probe(_middle(*knee))
    return probes


def _middle(low: int, high: int) -> int:
    return min(high - 1, max(low + 1, round(math.sqrt(low * high))))


def _bracket(probes: list[ProbeResult], good: int, bad: int) -> tuple[int, int]:
    """The bracket after the last probe, which fell inside it."""
    level = probes[-1].stats.level
    return (level, bad) if probes[-1].stats.passed else (good, level)


def answer(results: list[ProbeResult]) -> ProbeResult | None:
    """The probe of the highest level that met the objective."""
    passed = [r for r in results if r.stats.passed]
    return max(passed, key=lambda r: r.stats.level) if passed else None


def recommended(results: list[ProbeResult]) -> ProbeResult | None:
    """The knee: the passing probe of the lowest level whose goodput is within KNEE_TOLERANCE
    of the best goodput of any passing probe."""
    passed = [r for r in results if r.stats.passed]
    if not passed:
        return None
    best = max(r.stats.goodput_rps for r in passed)
    return min((r for r in passed if r.stats.goodput_rps >= best * (1 - KNEE_TOLERANCE)),
               key=lambda r: r.stats.level)


def knee_bracket(results: list[ProbeResult]) -> tuple[int, int] | None:
    """The levels between which the knee lies — the highest probed below the recommended one,
    and the recommended one — while they are more than 10 % (and one) apart; else None."""
    knee = recommended(results)
    if knee is None:
        return None
    high = knee.stats.level
    below = [r.stats.level for r in results if r.stats.level < high]
    if not below:
        return None
    low = max(below)
    return (low, high) if high > low * BRACKET and high - low > 1 else None
