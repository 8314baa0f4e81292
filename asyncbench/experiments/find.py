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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from asyncbench import report
from asyncbench.errors import UsageError
from asyncbench.experiments.descriptor import LOAD_REQUIRED, Experiment, StepEvents
from asyncbench.experiments.sweep import LoadPlan, load_setup, round_intervals
from asyncbench.groups import (
    Bounds,
    Connection,
    Cooldown,
    Floor,
    Outputs,
    Request,
    Scale,
    Server,
    Target,
    Thresholds,
    Timeline,
)
from asyncbench.load.spec import RequestSpec, check_target
from asyncbench.options import check_range
from asyncbench.rows import LevelStats, RateStats
from asyncbench.session import Conclusion

MODES = ("concurrency", "rate")
BRACKET = 1.10  # the search stops when the failing level is within 10 % of the passing one
FIRST_PROBE_REQUESTS = 20
MAX_PROBE_REQUESTS = 1_000_000


if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from asyncbench.load.driver import Driver
    from asyncbench.results import Run
    from asyncbench.timeline import Interval


@dataclass
class FindOptions:
    slo_p99: Annotated[float, typer.Option(
        "--slo-p99", help="The objective: p99 latency at most this, seconds.", show_default=False)]


@dataclass
class SearchOptions:
    mode: Annotated[str, typer.Option(
        "--mode", help="What to raise: concurrency (requests in flight, as semaphore) or rate (requests per second, "
        "as rate).")] = "concurrency"
    max_level: Annotated[int, typer.Option("--max", help="The highest level to probe.")] = 10_000
    probe_duration: Annotated[float, typer.Option("--probe-duration", help="Seconds each probe runs, about.")] = 3.0
    max_in_flight: Annotated[int, typer.Option(
        "--max-in-flight", help="With --mode rate: requests out at once at most.")] = 10_000


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
    driver: Driver | None = None  # where the load is made (None: in this process)
    interval: float = 1.0  # seconds per row of the timeline


@dataclass
class ProbeResult:
    stats: ConcurrencyProbe | RateProbe
    quantiles: list[tuple[float, float]]
    incomplete: list[str] = field(default_factory=list)  # why its load was not all made (a shard died)
    timeline: list[Interval] = field(default_factory=list)  # the probe over time


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
    from asyncbench.load.driver import Driver
    from asyncbench.metrics import LevelRecorder, latency_quantiles, summarize
    from asyncbench.rates import RateRecorder, summarize_rate

    driver = config.driver or Driver()
    probes: list[ProbeResult] = []
    last: tuple[int, float] | None = None  # the last probe's level and throughput

    async def probe(level: int) -> bool:
        nonlocal last
        failures_before = len(driver.failures)
        if probes and config.cooldown > 0:
            await asyncio.sleep(config.cooldown)  # let the target drain what the last probe left
        stats: LevelStats | RateStats
        if config.mode == "rate":
            recorder: LevelRecorder = RateRecorder(interval=config.interval)
            total = max(1, round(level * config.probe_duration))
            step = f"probe {level:,}/s"
            events.started(step, total, lambda r=recorder: driver.progress(r))
            facts = await driver.open(step, config.request, rate=level, total=total, arrivals="constant",
                                      max_in_flight=config.max_in_flight, seed=0,
                                      recorder=recorder)  # type: ignore[arg-type]
            stats = summarize_rate(level, total / level, recorder, facts)  # type: ignore[arg-type]
            row: ConcurrencyProbe | RateProbe = RateProbe(**asdict(stats), passed=False, reason="")
        else:
            # Sized to last about probe_duration, from the last probe's rate scaled to this level.
            estimate = last[1] * level / last[0] * config.probe_duration if last else FIRST_PROBE_REQUESTS
            total = int(min(MAX_PROBE_REQUESTS, max(4 * level, FIRST_PROBE_REQUESTS, estimate)))
            recorder = LevelRecorder(interval=config.interval)
            step = f"probe {level:,}"
            events.started(step, total, lambda r=recorder: driver.progress(r))
            # No new request after the probe's duration: a silent target times out one request
            # per worker, not a whole probe's worth one after another.
            facts = await driver.closed(step, config.request, level, total, recorder, bounded=True,
                                        duration=config.probe_duration)
            stats = summarize(EXPERIMENT.name, level, [(recorder, facts)])
            row = ConcurrencyProbe(**asdict(stats), passed=False, reason="")
        incomplete = driver.failures[failures_before:]
        row.experiment = EXPERIMENT.name
        row.reason = judge(stats, config, incomplete)
        row.passed = not row.reason
        if stats.throughput_rps > 0:
            last = (level, stats.throughput_rps)
        result = ProbeResult(row, latency_quantiles([recorder]), incomplete, round_intervals(level, [recorder]))
        probes.append(result)
        events.finished(result)
        await check_target(config.request, step, level, stats)
        driver.check_budget(level)
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
    from asyncbench.metrics import KNEE_TOLERANCE

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


def command(target: Target, objective: FindOptions, floor: Floor, options: SearchOptions, request: Request,
            cooldown: Cooldown, connection: Connection, bounds: Bounds, scale: Scale, outputs: Outputs, timeline: Timeline,
            thresholds: Thresholds, server: Server) -> None:
    """The most load the target sustains within an objective (p99, success rate).

    Doubles the level until a probe misses the objective, then bisects until the answer is
    bracketed to 10 %; every probe is kept as evidence. Exit 3 when no level meets it.
    """
    check_range("--slo-p99", objective.slo_p99, 0, low_inclusive=False)
    if options.mode not in MODES:
        raise UsageError(f"invalid --mode {options.mode!r}: expected {' or '.join(MODES)}")
    check_range("--max", options.max_level, 1, 1_000_000)
    check_range("--probe-duration", options.probe_duration, 0, 600, low_inclusive=False)
    check_range("--max-in-flight", options.max_in_flight, 1, 1_000_000)
    setup = load_setup(request=request, cooldown=cooldown, connection=connection, bounds=bounds, scale=scale, floor=floor,
                       outputs=outputs, thresholds=thresholds, server=server, timeline=timeline)
    config = FindConfig(setup.spec, objective.slo_p99, min_success=setup.min_success, mode=options.mode,
                        max_level=options.max_level, probe_duration=options.probe_duration,
                        max_in_flight=options.max_in_flight, cooldown=setup.cooldown, driver=setup.driver,
                        interval=setup.timeline.interval)
    settings = {"mode": options.mode, "max": options.max_level, "probe_duration_s": options.probe_duration,
                "max_in_flight": options.max_in_flight, "cooldown_s": setup.cooldown}
    plan = FindPlan(setup.spec, settings, config, setup.loop)
    plan.timeline = setup.timeline
    setup.run(plan, target.url)


# --- its plan, table, verdict and chart -------------------------------------------------------


class FindPlan(LoadPlan):
    """The search for the most load within an objective: a row per probe, in the order run."""

    def __init__(self, spec: RequestSpec, settings: dict[str, Any], config: FindConfig, loop: str) -> None:
        self.find_config = config
        super().__init__(EXPERIMENT, spec, min_success=config.min_success, settings=settings,
                         levels=[config.max_level], run=lambda spec, steps: run(config, steps), loop=loop,
                         driver=config.driver)
        self.total_steps = most_probes(config.max_level)

    def intervals(self, result: Any) -> tuple[str, int, list[Interval]] | None:
        # A bisection may probe a level twice: each probe is tagged by its number.
        self._probes = getattr(self, "_probes", 0) + 1
        return f"probe-{self._probes}", result.stats.level, result.timeline

    def check(self, console: Console) -> None:
        cfg = self.find_config
        probes = self.total_steps
        typical = probes * (cfg.probe_duration + cfg.cooldown)
        # A probe sends nothing new after its duration; what is in flight then ends within the timeout.
        worst = probes * (cfg.probe_duration + cfg.cooldown + cfg.request.timeout)
        console.print(f"find: at most {probes} probes of about {cfg.probe_duration:g} s each, {cfg.cooldown:g} s "
                      f"apart (up to ~{typical:,.0f} s; at most ~{worst:,.0f} s if requests time out), "
                      f"levels 1 to {cfg.max_level:,}", soft_wrap=True)
        if cfg.mode == "concurrency":
            super().check(console)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "slo_p99_s": self.find_config.slo_p99}

    def most_at_once(self) -> int:
        cfg = self.find_config
        return cfg.max_in_flight if cfg.mode == "rate" else cfg.max_level

    def planned_requests(self) -> int | None:
        return None  # as many as the search needs: --max-requests bounds it

    @property
    def row_type(self) -> type:
        return RateProbe if self.find_config.mode == "rate" else ConcurrencyProbe

    def step_done(self, result: Any, done: int) -> tuple[str | None, RenderableType | None]:
        r = result.stats
        unit = "/s" if self.find_config.mode == "rate" else ""
        verdict = "met" if r.passed else f"missed: {r.reason}"
        p99 = report.fmt_ms(r.ok_latency_p99_s) if r.successes else "-"
        return (f"probe {done}: level {r.level:,}{unit}: goodput {report.fmt_rate(r.goodput_rps)} req/s, "
                f"ok p99 {p99} ms, {report.fmt_pct(r.success_rate)} % ok — {verdict}"), None

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        from rich.text import Text

        cfg = self.find_config
        best = answer(results)
        knee = recommended(results)
        rows = [r.stats for r in results]
        objective = f"p99 ≤ {cfg.slo_p99 * 1000:g} ms at ≥ {cfg.min_success * 100:g} % success"
        unit = "req/s" if cfg.mode == "rate" else "in flight"

        def facts(probe: Any) -> dict[str, Any] | None:
            return None if probe is None else {"level": probe.stats.level, "goodput_rps": probe.stats.goodput_rps,
                                               "latency_p99_s": probe.stats.ok_latency_p99_s}

        metadata = {"result": facts(best), "recommended": facts(knee), "objective": objective, "rounds": {},
                    "warnings": []}
        notes: list[str] = metadata["warnings"]
        failed = self.shard_facts(metadata, notes)
        title = f"{title} — {'interrupted, ' if interrupted else ''}{len(rows)} probes ({objective})"
        shown: list[RenderableType] = [find_table(rows, None if best is None else best.stats, title, unit,
                                                         None if knee is None else knee.stats)]
        missed = None
        if best is None:
            missed = f"no level met the objective ({objective})"
            shown.append(Text(f"not found: {missed}; the lowest probe, {rows[0].level:,} {unit}, missed it: "
                              f"{rows[0].reason}" if rows else f"not found: {missed}", style="bold red"))
        else:
            shown.append(find_verdict(rows, best.stats, knee.stats, objective, unit, cfg.max_level))
        self.gone_facts(metadata, shown)
        self.stop_facts(metadata, shown)
        self.reach_facts(metadata)
        block = report.warnings_block(notes)
        if block is not None:
            shown.append(block)
        return Conclusion(metadata, shown, min_success=cfg.min_success,
                          objective_missed=None if interrupted or self.gone else missed, failed=failed)


def find_table(rows: Sequence[Any], best: Any | None, title: str, unit: str, knee: Any | None = None) -> report.FitTable:
    """Every probe in the order it ran: its level, goodput, p50, p99 (of the successes), success,
    and the judgement; ★ marks the most within the objective, ◆ the knee (recommended)."""
    table = report.FitTable(title)
    table.add_column("#", justify="right")
    table.add_column(f"level\n{unit}", justify="right")
    for header in ("goodput\nreq/s", "ok p50\nms", "ok p99\nms", "ok\n%"):
        table.add_column(header, justify="right")
    table.add_column("objective", justify="left", wrap=True)
    for i, r in enumerate(rows, 1):
        is_best = best is not None and r is best
        is_knee = knee is not None and r is knee
        name = report.row_name(f"{r.level:,}", is_best, r.client_limited)
        if is_knee:
            name = f"{report.KNEE_MARK} {name}"
        cells = (
            str(i),
            name,
            report.fmt_rate(r.goodput_rps),
            report.ok_ms(r, "p50"),
            report.ok_ms(r, "p99"),
            report.fmt_pct(r.success_rate),
            "met" if r.passed else f"missed: {r.reason}",
        )
        table.add_row(*cells, style="bold green" if is_best or is_knee else (None if r.passed else "red"))
    marks = [f"{report.SWEET_MARK} the most within the objective"]
    if knee is not None:
        marks.append(f"{report.KNEE_MARK} recommended: the knee, the lowest level within 5 % of the best goodput")
    table.caption = "; ".join(marks) + "; ok p50, ok p99: successful requests only"
    return table


def find_verdict(rows: Sequence[Any], best: Any, knee: Any, objective: str, unit: str, max_level: int) -> Text:
    """The knee first (what to run at), then how far the objective holds and what lies past it."""
    p99 = report.ok_latency(best, "p99")
    if knee.level == best.level:
        line = Text(f"recommended: {knee.level:,} {unit} — {report.fmt_rate(knee.goodput_rps)} req/s at p99 "
                    f"{report.fmt_ms(p99)} ms: the most that met {objective}, and no lower level came within 5 % "
                    "of its goodput", style="bold green")
    else:
        knee_p99 = report.ok_latency(knee, "p99")
        ratio = p99 / knee_p99 if knee_p99 > 0 else float("inf")
        gain = best.goodput_rps / knee.goodput_rps - 1 if knee.goodput_rps else 0.0
        more = f"{gain * 100:+.0f} % goodput" if abs(gain) >= 0.005 else "no more goodput"
        line = Text(f"recommended: {knee.level:,} {unit} — {report.fmt_rate(knee.goodput_rps)} req/s at p99 "
                    f"{report.fmt_ms(knee_p99)} ms; the objective holds up to {best.level:,} {unit}, with {ratio:.1f}× "
                    f"the latency for {more}", style="bold green")
    above = [r for r in rows if r.level > best.level and not r.passed]
    if above:
        nearest = min(above, key=lambda r: r.level)
        line.append(f"\n{best.level:,} {unit} is the edge, with no headroom: {nearest.level:,} {unit} missed it: "
                    f"{nearest.reason}", style="yellow")
    elif best.level >= max_level:
        line.append(f"\nstill met at --max {max_level:,}: the limit is higher", style="yellow")
    return line


def find_chart(run: Run, out_dir: Path) -> Path:
    """The probes of a search: p99 of the successes by level probed, met or missed, with the
    objective, the most within it (found) and the knee (recommended) drawn."""
    from asyncbench import plots

    df = run.frame
    fig, ax = plots.plt.subplots()
    passed = df["passed"].astype(str).str.lower() == "true"
    p99 = (df["ok_latency_p99_s"] if "ok_latency_p99_s" in df else df["latency_p99_s"]) * 1000
    order = df["level"].argsort()
    ax.plot(df["level"].iloc[order], p99.iloc[order], color="#999999", linestyle=":", linewidth=1)
    ax.scatter(df["level"][passed], p99[passed], marker="o", color=plots.GREEN, s=50,
               zorder=3, label="met the objective")
    ax.scatter(df["level"][~passed], p99[~passed], marker="X", color=plots.VERMILLION, s=60,
               zorder=3, label="missed it")
    for i, (x, y) in enumerate(zip(df["level"], p99, strict=True), 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color="#444444")
    slo = run.setting("slo_p99_s", None)
    if isinstance(slo, (int, float)):
        ax.axhline(slo * 1000, color=plots.VERMILLION, linestyle="--", linewidth=1, label=f"--slo-p99 ({slo * 1000:g} ms)")
    result = run.meta.get("result")
    if isinstance(result, dict) and "level" in result:
        ax.axvline(int(result["level"]), color=plots.GREEN, linestyle=":", linewidth=1.5,
                   label=f"found (most within it): {int(result['level']):,}")
    knee = run.meta.get("recommended")
    if isinstance(knee, dict) and "level" in knee:
        ax.axvline(int(knee["level"]), color=plots.BLUE, linestyle="--", linewidth=1.5,
                   label=f"recommended (the knee): {int(knee['level']):,}")
    ax.set_ylabel("p99 latency of successes (ms)")
    mode = run.setting("mode", "concurrency")
    plots.level_axis(ax, df["level"], "offered rate (requests per second)" if mode == "rate"
                else "concurrency (requests in flight)")
    plots.log_y(ax)
    ax.legend(loc="upper left", fontsize=9)
    plots.title(fig, "The search: probes in order", run)
    return plots.save(fig, out_dir, f"{run.stem}-probes")


def _charts(run: Any, out_dir: Path, min_success: float | None) -> list[Path]:
    return [find_chart(run, out_dir)]


def _summary(run: Any) -> list[Any]:
    rows = run.rows()
    unit = "req/s" if run.setting("mode", "concurrency") == "rate" else "in flight"

    def probe(key: str) -> Any | None:
        found = run.meta.get(key)
        level = found.get("level") if isinstance(found, dict) else None
        return next((r for r in rows if r.level == level and r.passed), None)

    best, knee = probe("result"), probe("recommended")
    objective = run.meta.get("objective", "")
    shown: list[Any] = [find_table(rows, best, f"find: {len(rows)} probes ({objective})", unit, knee)]
    if best is None:
        shown.append(Text(f"not found: no level met the objective ({objective})", style="bold red"))
    else:
        shown.append(find_verdict(rows, best, knee or best, objective, unit, int(run.setting("max", 0))))
    return shown


EXPERIMENT = Experiment(
    name="find", step="probe", completed_key="probes_completed",
    required=(*LOAD_REQUIRED, "passed"), sort_by=(), charts=_charts,
    axis_label="level probed", verdict_word="level", summary=_summary, command=command,
)


