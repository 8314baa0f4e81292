"""The open model: requests sent on a schedule, whatever the server does.

At each offered rate, `rate × duration` requests are due at fixed spacing (or Poisson arrivals);
each is launched when due — on a free kept-alive connection, else a new one — and measured from
the moment it was due, so a server that stalls cannot slow the sending down and hide the stall
(coordinated omission). When `max_in_flight` requests are out, a due request is dropped and
counted, never silently skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from asyncbench import report
from asyncbench.errors import UsageError
from asyncbench.experiments.descriptor import LOAD_REQUIRED, Experiment, StepEvents, sweet_row
from asyncbench.experiments.sweep import LoadPlan, load_setup, round_intervals, stage_intervals, usl_lines
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
from asyncbench.options import MAX_REQUESTS, check_range, parse_int_list, parse_stages
from asyncbench.session import Conclusion

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from asyncbench.load.driver import Driver
    from asyncbench.load.ramp import Stage
    from asyncbench.metrics import RoundFacts
    from asyncbench.rates import RateStats
    from asyncbench.results import Run
    from asyncbench.timeline import Interval

DEFAULT_RATES = (100, 500, 1000, 2000)
ARRIVALS = ("constant", "poisson")


@dataclass
class RateOptions:
    rates: Annotated[str, typer.Option(
        "--rates", help="Offered rates, requests per second, comma-separated.")] = ",".join(map(str, DEFAULT_RATES))
    duration: Annotated[float, typer.Option("--duration", help="Seconds of schedule per rate.")] = 10.0
    arrivals: Annotated[str, typer.Option(
        "--arrivals", help="Spacing of the sends: constant, or poisson (random, as independent users arrive).")] = (
        "constant")
    max_in_flight: Annotated[int, typer.Option(
        "--max-in-flight", help="Requests out at once at most; a request due beyond it is dropped and counted.")] = (
        10_000)
    slo_p99: Annotated[float | None, typer.Option(
        "--slo-p99", help="p99 objective, seconds: the sweet spot must meet it too.", show_default=False)] = None
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed of the Poisson arrivals (reproducible schedules).", show_default=False)] = None
    stages: Annotated[str | None, typer.Option(
        "--stages", metavar="'DUR:RATE,...'", help="Ramp instead of --rates/--duration: the offered rate moves "
        "linearly from each stage's start to its RATE over DUR (10s, 1m30s), the first from --start-rate; one engine "
        "throughout, one row per stage.", show_default=False)] = None
    start_rate: Annotated[float, typer.Option(
        "--start-rate", help="Where the first of --stages starts, requests per second.")] = 0.0


@dataclass
class RateConfig:
    request: RequestSpec
    rates: list[int]
    duration: float = 10.0
    arrivals: str = "constant"
    max_in_flight: int = 10_000
    cooldown: float = 1.0
    seed: int | None = None
    driver: Driver | None = None  # where the load is made (None: in this process)
    interval: float = 1.0  # seconds per row of the timeline
    stages: list[Stage] = field(default_factory=list)  # a ramp instead of the rates


@dataclass
class RateResult:
    """A finished rate: its row, its latency quantiles (from the intended send time), and why
    its load was not all made (a shard that died), if it was not."""

    stats: RateStats
    quantiles: list[tuple[float, float]]
    incomplete: list[str] = field(default_factory=list)
    timeline: list[Interval] = field(default_factory=list)


async def run_stages(config: RateConfig, events: StepEvents) -> list[RateResult]:
    """The ramp's stages, on one engine, each reported once it is over and its requests ended."""
    from asyncbench.load.driver import Driver
    from asyncbench.metrics import latency_quantiles
    from asyncbench.rates import RateRecorder, summarize_rate
    from asyncbench.rows import StageStats

    driver = config.driver or Driver()
    recorders = [RateRecorder(interval=config.interval) for _ in config.stages]
    results: list[RateResult] = []
    total = sum(s.total for s in config.stages)
    events.started(f"{len(config.stages)} stages", total, lambda: sum(r.done for r in recorders))

    def on_stage(i: int, facts: RoundFacts) -> None:
        stage, recorder = config.stages[i], recorders[i]
        mean = (stage.start + stage.target) / 2
        row = summarize_rate(mean, stage.duration_s, recorder, facts)
        stats = StageStats(**{**vars(row), "level": round(stage.target)}, stage=i + 1, stage_from_rps=stage.start,
                           stage_duration_s=stage.duration_s)
        result = RateResult(stats, latency_quantiles([recorder]), [],
                            stage_intervals(stats.level, config.stages, i, recorder))
        results.append(result)
        events.finished(result)

    await driver.stages("stages", config.request, config.stages, recorders, max_in_flight=config.max_in_flight,
                        on_stage=on_stage)
    if results:
        await check_target(config.request, f"stage {len(results)}", results[-1].stats.level, results[-1].stats)
        driver.check_budget(results[-1].stats.level)
    return results


async def _stream(recorder: Any, rate: int, events: StepEvents, spec: RequestSpec) -> None:
    """Every second, the recorder's final intervals to `events` while its round runs."""
    import time

    settle = spec.timeout * (1 + spec.retries) + 1.0  # the longest a request can take, retries and all
    while True:
        await asyncio.sleep(1.0)
        if recorder.origin:
            events.over_time(f"rate-{rate}", rate,
                             recorder.timeline.closed(rate, time.perf_counter() - recorder.origin, settle))


async def run(config: RateConfig, events: StepEvents) -> list[RateResult]:
    """Every offered rate in turn, each reported as soon as it is finished."""
    if config.stages:
        return await run_stages(config, events)
    from asyncbench.load.driver import Driver
    from asyncbench.metrics import latency_quantiles
    from asyncbench.rates import RateRecorder, summarize_rate

    driver = config.driver or Driver()
    results: list[RateResult] = []
    for rate in config.rates:
        if results and config.cooldown > 0:
            await asyncio.sleep(config.cooldown)  # let the target drain what the last rate left
        recorder = RateRecorder(interval=config.interval)
        failures_before = len(driver.failures)
        total = max(1, round(rate * config.duration))
        step = f"rate {rate:,g}/s"
        events.started(step, total, lambda recorder=recorder: driver.progress(recorder))
        # In this process, the closed intervals are written as the schedule runs (a soak's timeline
        # is not held in memory); shards' come when they are merged.
        streaming = None if driver.sharded else asyncio.create_task(_stream(recorder, rate, events, config.request))
        try:
            facts = await driver.open(step, config.request, rate=rate, total=total, arrivals=config.arrivals,
                                      max_in_flight=config.max_in_flight, seed=config.seed, recorder=recorder)
        finally:
            if streaming is not None:
                streaming.cancel()
        stats = summarize_rate(rate, total / rate, recorder, facts)
        result = RateResult(stats, latency_quantiles([recorder]), driver.failures[failures_before:],
                            round_intervals(rate, [recorder]))
        results.append(result)
        events.finished(result)
        await check_target(config.request, step, rate, stats)
        driver.check_budget(rate)
    return results


def command(target: Target, options: RateOptions, request: Request, cooldown: Cooldown, connection: Connection,
            bounds: Bounds, scale: Scale, floor: Floor, outputs: Outputs, timeline: Timeline, thresholds: Thresholds,
            server: Server) -> None:
    """The open model: requests sent on a schedule, whatever the server does.

    Latency runs from when each request was due, so a server that stalls cannot hide it by
    slowing the sending down (coordinated omission); the time from the actual send is kept as
    the service time.
    """
    stages = None
    if options.stages is not None:
        from asyncbench.load.ramp import stages_from

        if scale.processes != 1 or scale.cluster is not None:
            raise UsageError("--stages runs in one process: one schedule whose rate moves; drop --processes/--cluster")
        check_range("--start-rate", options.start_rate, 0, 1_000_000)
        stages = stages_from(parse_stages("--stages", options.stages, 1_000_000), options.start_rate)
        if sum(s.total for s in stages) > MAX_REQUESTS:
            raise UsageError(f"invalid --stages {options.stages!r}: more than {MAX_REQUESTS:,} requests")
        if sum(s.total for s in stages) == 0:
            raise UsageError(f"invalid --stages {options.stages!r}: it offers no request at all")
    rates = parse_int_list("--rates", options.rates, maximum=1_000_000)
    duration = options.duration
    check_range("--duration", duration, 0, 3600, low_inclusive=False)
    if options.arrivals not in ARRIVALS:
        raise UsageError(f"invalid --arrivals {options.arrivals!r}: expected {' or '.join(ARRIVALS)}")
    check_range("--max-in-flight", options.max_in_flight, 1, 1_000_000)
    if options.slo_p99 is not None:
        check_range("--slo-p99", options.slo_p99, 0, low_inclusive=False)
    for r in rates:
        if r * duration > MAX_REQUESTS:
            raise UsageError(f"invalid --rates {r}: {r:,}/s for {duration:g} s is more than {MAX_REQUESTS:,} requests")
    setup = load_setup(request=request, cooldown=cooldown, connection=connection, bounds=bounds, scale=scale, floor=floor,
                       outputs=outputs, thresholds=thresholds, server=server, timeline=timeline)
    config = RateConfig(setup.spec, rates, duration=duration, arrivals=options.arrivals,
                        max_in_flight=options.max_in_flight, cooldown=setup.cooldown, seed=options.seed,
                        driver=setup.driver, interval=setup.timeline.interval, stages=stages or [])
    settings = {"stages": options.stages, "start_rate": options.start_rate if stages else None,
                "rates": None if stages else rates, "duration_s": None if stages else duration, "arrivals": options.arrivals,
                "max_in_flight": options.max_in_flight, "seed": options.seed, "cooldown_s": setup.cooldown}
    plan = RatePlan(setup.spec, slo_p99=options.slo_p99, min_success=setup.min_success, settings=settings,
                    levels=[round(s.target) for s in stages] if stages else rates,
                    run=lambda spec, events: run(config, events), loop=setup.loop, driver=setup.driver,
                    timeline=setup.timeline)
    setup.run(plan, target.url)


# --- its plan, table, verdict and charts ------------------------------------------------------


class RatePlan(LoadPlan):
    """The open model: one row of RateStats and its quantiles per offered rate."""

    def __init__(self, spec: RequestSpec, *, slo_p99: float | None, **plan: Any) -> None:
        super().__init__(EXPERIMENT, spec, **plan)
        self.slo_p99 = slo_p99

    def check(self, console: Console) -> None:
        pass  # connections are opened as needed, bounded by --max-in-flight (checked by the CLI)

    def most_at_once(self) -> int:
        return int(self.settings["max_in_flight"])

    def planned_requests(self) -> int | None:
        duration = float(self.settings["duration_s"])
        return sum(max(1, round(rate * duration)) for rate in self.levels) * (1 + self.spec.retries)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "slo_p99_s": self.slo_p99}

    @property
    def row_type(self) -> type:
        from asyncbench.rates import RateStats
        from asyncbench.rows import StageStats

        return StageStats if self.settings.get("stages") else RateStats

    def step_done(self, result: Any, done: int) -> tuple[str | None, RenderableType | None]:
        return f"{rate_line(result.stats)} ({done} of {self.total_steps} rates)", None

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        from asyncbench.rates import rate_row_facts, rate_sweet_spot, rate_warnings

        rows = [r.stats for r in results]
        excluded = self.excluded(results)
        sweet = rate_sweet_spot(rows, self.min_success, self.slo_p99, excluded)
        notes = [n for r in rows for n in rate_warnings(r)]
        metadata = {
            "sweet_spot": None if sweet is None else rate_row_facts(sweet),
            "client_limited_levels": [r.level for r in rows if r.client_limited],
            "warnings": notes,
        }
        failed = self.shard_facts(metadata, notes)
        word = "stage" if self.settings.get("stages") else "rate"  # a stage's rate column: its mean offered rate
        title = f"{title} — {'interrupted, ' if interrupted else ''}{len(rows)} {word}{'s' if len(rows) != 1 else ''}"
        answered = [r for r in rows if r.level not in excluded]
        shown: list[RenderableType] = [rate_table(rows, sweet, title),
                                       rate_verdict(answered, sweet, self.min_success, self.slo_p99)]
        self.gone_facts(metadata, shown)
        self.stop_facts(metadata, shown)
        self.reach_facts(metadata)
        shown += usl_lines(rows, metadata, self.min_success, measured=True, excluded=excluded)
        block = report.warnings_block(notes)
        if block is not None:
            shown.append(block)
        return Conclusion(metadata, shown, min_success=self.min_success, failed=failed)


def rate_line(r: Any) -> str:
    """One finished rate as a line: for logs and output that is not a terminal."""
    dropped = f", {r.dropped:,} dropped" if r.dropped else ""
    return (f"rate {r.offered_rps:,.0f}/s done: sent {report.fmt_rate(r.achieved_rps)}/s, p50 {report.fmt_ms(r.latency_p50_s)} ms, "
            f"p99 {report.fmt_ms(r.latency_p99_s)} ms, {report.fmt_pct(r.success_rate)} % ok{dropped}")


def rate_table(rows: Sequence[Any], sweet: Any | None, title: str) -> report.FitTable:
    """Offered against achieved, latency from the intended send (p50, p99, p99.9) and from the
    actual send (service p99), how late the sends left, what was dropped."""
    table = report.FitTable(title)
    table.add_column("rate\nreq/s", justify="right")
    for header in ("sent\nreq/s", "goodput\nreq/s", "ok p50\nms", "ok p99\nms", "p99.9\nms", "svc p99\nms",
                   "lag p99\nms", "dropped", "ok\n%"):
        table.add_column(header, justify="right")
    table.add_column("errors", justify="left", wrap=True)
    for r in rows:
        is_sweet = sweet is not None and r.level == sweet.level and getattr(r, "stage", 0) == getattr(sweet, "stage", 0)
        cells = (
            report.row_name(f"{r.offered_rps:,.0f}", is_sweet, r.client_limited),
            report.fmt_rate(r.achieved_rps),
            report.fmt_rate(r.goodput_rps),
            report.ok_ms(r, "p50"),
            report.ok_ms(r, "p99"),
            report.fmt_ms(r.latency_p999_s),
            report.fmt_ms(r.service_p99_s),
            report.fmt_ms(r.send_lag_p99_s),
            f"{r.dropped:,}",
            report.fmt_pct(r.success_rate),
            report.errors_cell(r),
        )
        table.add_row(*cells, style="bold green" if is_sweet else ("red" if r.success_rate < 0.5 else None))
    notes = ["latency runs from when each request was due (the schedule), svc from when it was sent; "
             "ok p50, ok p99: successful requests only (p99.9: every request)"]
    if any(r.client_limited for r in rows):
        notes.append("! the client could not keep the schedule at this rate")
    table.caption = "; ".join(notes)
    return table


def rate_verdict(rows: Sequence[Any], sweet: Any | None, min_success: float, slo_p99: float | None) -> Text:
    """The highest rate that met the floor (and the objective), and what happened above it."""
    if not rows:
        return Text("no rate finished: nothing to conclude")
    slo = f" and p99 ≤ {report.fmt_ms(slo_p99)} ms" if slo_p99 is not None else ""
    if sweet is None:
        return Text(f"no sweet spot: no rate met {report.fmt_pct(min_success)} % success{slo} with nothing dropped "
                    "and the client keeping the schedule", style="bold red")
    line = Text(
        f"sweet spot: rate {sweet.offered_rps:,.0f}/s — the highest offered rate that met "
        f"{report.fmt_pct(min_success)} % success{slo}: p99 {report.fmt_ms(report.ok_latency(sweet, 'p99'))} ms from the schedule",
        style="bold green",
    )
    above = [r for r in rows if r.offered_rps > sweet.offered_rps]
    if above:
        r = above[0]
        why = []
        if r.success_rate < min_success:
            why.append(f"success {report.fmt_pct(r.success_rate)} %")
        if slo_p99 is not None and report.ok_latency(r, "p99") > slo_p99:
            why.append(f"p99 {report.fmt_ms(report.ok_latency(r, 'p99'))} ms")
        if getattr(r, "client_limited", False) in (True, "true"):
            why.append("the client could not keep the schedule")
        if r.dropped:
            why.append(f"{r.dropped:,} dropped")
        if why:
            line.append(f"\nat {r.offered_rps:,.0f}/s: {', '.join(why)}", style="yellow")
    return line


def rate_latency_chart(run: Run, out_dir: Path) -> Path:
    """The hockey stick: latency percentiles (from the schedule) against the offered rate, and
    the service p99 (from the actual send) that a closed loop would have reported."""
    from asyncbench import plots

    df = run.frame
    fig, ax = plots.plt.subplots()
    for col, label, color, marker, style in (
        ("latency_p50_s", "p50", plots.BLUE, "o", "-"),
        ("latency_p99_s", "p99", plots.VERMILLION, "^", "-"),
        ("latency_p999_s", "p99.9", plots.BLACK, "v", "-"),
        ("service_p99_s", "service p99 (from the actual send)", plots.PURPLE, "D", "--"),
    ):
        if col in df:
            ax.plot(df["level"], df[col] * 1000, marker=marker, color=color, linestyle=style, label=label)
    plots.mark_client_limited(ax, df, df["latency_p50_s"] * 1000)
    plots.sweet_spot_line(ax, run)
    plots.level_axis(ax, df["level"], "offered rate (requests per second)")
    ax.set_ylabel("latency from the schedule (ms)")
    plots.log_y(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    plots.title(fig, "Latency against offered rate", run)
    return plots.save(fig, out_dir, f"{run.stem}-latency")


def rate_achieved_chart(run: Run, out_dir: Path) -> Path:
    """Achieved (sent) and goodput against offered: on the diagonal while the target keeps up."""
    from asyncbench import plots

    df = run.frame
    fig, ax = plots.plt.subplots()
    lo, hi = float(df["level"].min()), float(df["level"].max())
    ax.plot([lo, hi], [lo, hi], color="#999999", linestyle=":", linewidth=1, label="offered")
    ax.plot(df["level"], df["achieved_rps"], marker="o", color=plots.BLUE, label="sent (achieved)")
    ax.plot(df["level"], df["goodput_rps"], marker="s", color=plots.ORANGE, linestyle="--", label="goodput (successes)")
    plots.mark_client_limited(ax, df, df["achieved_rps"])
    plots.sweet_spot_line(ax, run)
    plots.level_axis(ax, df["level"], "offered rate (requests per second)")
    ax.set_ylabel("requests per second")
    plots.log_y(ax)
    ax.legend(loc="upper left")
    plots.title(fig, "Achieved against offered rate", run)
    return plots.save(fig, out_dir, f"{run.stem}-achieved")


def rate_charts(run: Run, out_dir: Path) -> list[Path]:
    """Every chart of a `rate` run."""
    from asyncbench import plots

    paths = [rate_latency_chart(run, out_dir), rate_achieved_chart(run, out_dir)]
    extra = [plots.distribution_chart(run, out_dir, "rate"), plots.timeline_chart(run, out_dir, "rate")]
    return paths + [p for p in extra if p is not None]


def _charts(run: Run, out_dir: Path, min_success: float | None) -> list[Path]:
    return rate_charts(run, out_dir)


def _summary(run: Run) -> list[Any]:
    rows = run.rows()
    sweet = sweet_row(run, rows)
    return [rate_table(rows, sweet, f"rate: {len(rows)} rates"),
            rate_verdict(rows, sweet, run.setting("min_success", 0.99), run.setting("slo_p99_s", None))]


EXPERIMENT = Experiment(
    name="rate", step="rate", completed_key="rates_completed",
    required=(*LOAD_REQUIRED, "offered_rps", "achieved_rps", "dropped", "send_lag_p99_s"),
    sort_by=("level",), charts=_charts, axis_label="offered rate (requests per second)",
    verdict_word="rate", load_sweep=True, summary=_summary, command=command,
)
