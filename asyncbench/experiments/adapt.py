"""An adaptive concurrency limit, the production answer to the trap: a backlog of requests sent
as fast as a limiter allows (AIMD or a latency gradient), which finds the knee by itself and
follows it when the server's capacity moves; optionally the same through fixed limits, to show
that a fixed limit is right for one phase only.

Each run is cut into intervals (`--interval`): the limit, the requests in flight, the
successes, failures, throttles and timeouts, and the successes' latency — one CSV row each,
written as it ends. The sidecar holds each run's totals and, for the adaptive run, per phase of
the server's capacity schedule, how long the limit took to settle.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from asyncbench import report
from asyncbench.errors import RunStopped, UsageError
from asyncbench.experiments.descriptor import Experiment, StepEvents
from asyncbench.experiments.sweep import LoadPlan, load_setup
from asyncbench.groups import Bounds, Connection, Cooldown, Floor, Outputs, Request, Scale, Server, Target, Thresholds
from asyncbench.limiters import ALGORITHMS
from asyncbench.options import MAX_LEVEL, check_range, parse_capacity_schedule, parse_int_list
from asyncbench.session import Conclusion, TimelineSettings

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from asyncbench.load.adaptive import AdaptRecorder, Interval
    from asyncbench.load.driver import Driver
    from asyncbench.load.spec import RequestSpec
    from asyncbench.results import ResultsWriter, Run
    from asyncbench.session import Steps
    from asyncbench.timeline import Interval as TimelineInterval

SETTLE_BAND = 0.2  # a limit within 20 % of its target has settled


@dataclass
class AdaptOptions:
    algorithm: Annotated[str, typer.Option(
        "--algorithm", help="The adaptive limit: aimd (additive increase, multiplicative decrease) or gradient "
        "(the limit scaled by the ratio of the baseline latency to the recent one).")] = "aimd"
    duration: Annotated[float, typer.Option("--duration", help="Seconds of backlog per run.")] = 30.0
    interval: Annotated[float, typer.Option("--interval", help="Seconds per row of the timeline.")] = 0.5
    initial: Annotated[int, typer.Option("--initial", help="The adaptive limit's starting value.")] = 10
    max_limit: Annotated[int, typer.Option("--max", help="The most the adaptive limit may reach.")] = 1000
    compare_static: Annotated[str | None, typer.Option(
        "--compare-static", metavar="N,N,...", help="Then the same through each of these fixed limits, side by side.",
        show_default=False)] = None
    server_capacity_schedule: Annotated[str | None, typer.Option(
        "--server-capacity-schedule", metavar="T:CAP,...", help="Embedded server: its capacity over time, seconds "
        "from the start of each run and capacity from then on, e.g. '0:100,10:50,20:150'.",
        rich_help_panel="Embedded server (when no URL is given)", show_default=False)] = None


@dataclass
class AdaptRow:
    """One interval of one run. `run` names it ("aimd", "gradient", "static 100"); `t_s` is the
    interval's end from the run's start; `limit` and `in_flight` are taken at that end;
    `capacity` is the embedded server's at that moment (empty against a URL)."""

    experiment: str
    run: str
    t_s: float
    limit: int
    in_flight: int
    successes: int
    failures: int
    goodput_rps: float
    ok_latency_p50_s: float
    ok_latency_p99_s: float
    success_rate: float
    throttled: int
    timeouts: int
    capacity: int | None


@dataclass
class RunResult:
    """A finished run: its name and limit rule, its totals, its intervals' rows."""

    name: str
    adaptive: bool
    duration_s: float
    rows: list[AdaptRow]
    totals: dict[str, Any]
    phases: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[TimelineInterval] = field(default_factory=list)  # for the -timeline.csv (level: the run's number)


@dataclass
class AdaptConfig:
    request: RequestSpec
    algorithm: str
    duration: float
    interval: float
    initial: int
    max_limit: int
    static: list[int]
    cooldown: float
    driver: Driver
    schedule: tuple[tuple[float, int], ...]  # the embedded server's (empty against a URL)
    capacity: int | None  # the embedded server's capacity without a schedule
    service_s: float | None  # the embedded server's service time
    embedded: bool


def capacity_at(config: AdaptConfig, t_s: float) -> int | None:
    """The embedded server's capacity `t_s` seconds into a run (None against a URL)."""
    if not config.embedded:
        return None
    capacity = config.capacity
    for start, value in config.schedule:
        if t_s >= start:
            capacity = value
    return capacity


def phases_of(config: AdaptConfig) -> list[tuple[float, float, int | None]]:
    """The run's phases: (start, end, capacity) from the schedule; one phase without one."""
    if not config.schedule:
        return [(0.0, config.duration, capacity_at(config, 0.0))]
    starts = [0.0] + [t for t, _ in config.schedule if 0 < t < config.duration]
    ends = starts[1:] + [config.duration]
    return [(s, e, capacity_at(config, s)) for s, e in zip(starts, ends, strict=True)]


def settle_time(rows: Sequence[AdaptRow], start: float, end: float, target: float) -> float | None:
    """Seconds from `start` until the limit stayed within SETTLE_BAND of `target` for the rest
    of the phase [start, end), to the end of the interval it did it in; None if it never did."""
    inside = [r for r in rows if start < r.t_s <= end + 1e-9]
    for i in range(len(inside)):
        if all(abs(r.limit - target) <= SETTLE_BAND * target for r in inside[i:]):
            return round(inside[i].t_s - start, 3)  # the end of the first interval in the band: at most this
    return None


def phase_facts(config: AdaptConfig, rows: Sequence[AdaptRow]) -> list[dict[str, Any]]:
    """Per phase of the adaptive run: its capacity, the limit it ended at, how long it took to
    settle within 20 % of that (and of the capacity, when known), its goodput and success."""
    out = []
    for start, end, capacity in phases_of(config):
        inside = [r for r in rows if start < r.t_s <= end + 1e-9]
        if not inside:
            continue
        final = statistics.median(r.limit for r in inside[-3:])
        successes = sum(r.successes for r in inside)
        done = successes + sum(r.failures for r in inside)
        span = inside[-1].t_s - start
        facts: dict[str, Any] = {
            "start_s": start, "end_s": end, "capacity": capacity, "final_limit": final,
            "settle_s": settle_time(rows, start, end, final),
            "goodput_rps": successes / span if span > 0 else 0.0,
            "success_rate": successes / done if done else 0.0,
        }
        if capacity is not None:
            facts["settle_capacity_s"] = settle_time(rows, start, end, capacity)
            if config.service_s:
                facts["capacity_rps"] = capacity / config.service_s
        out.append(facts)
    return out


async def _restart_schedule(spec: RequestSpec) -> None:
    """The embedded server's capacity schedule starts again from the next request."""
    from urllib.parse import urljoin

    from asyncbench.client import AsyncHttpClient

    async with AsyncHttpClient(max_concurrency=1, timeout=10.0, verify_tls=not spec.insecure,
                               **spec.client_options()) as client:
        await client.fetch(urljoin(spec.url, "/stats"), method="DELETE")


async def run(config: AdaptConfig, events: StepEvents, record: Callable[[AdaptRow], None]) -> list[RunResult]:
    """The adaptive run, then each fixed limit; every interval to `record` as it ends."""
    from asyncbench.limiters import Fixed, make_limiter
    from asyncbench.load.adaptive import AdaptRecorder

    plans: list[tuple[str, Any, bool]] = [(config.algorithm,
                                           make_limiter(config.algorithm, config.initial, config.max_limit), True)]
    plans += [(f"static {n}", Fixed(n), False) for n in config.static]
    results: list[RunResult] = []
    for index, (name, limiter, adaptive) in enumerate(plans, start=1):
        if results and config.cooldown > 0:
            await asyncio.sleep(config.cooldown)
        if config.embedded and config.schedule:
            await _restart_schedule(config.request)
        recorder = AdaptRecorder(limiter, interval=config.interval)
        rows: list[AdaptRow] = []
        steps_total = max(1, round(config.duration / config.interval))
        events.started(name, steps_total, lambda rows=rows: len(rows))

        def on_interval(interval: Interval, name: str = name, rows: list[AdaptRow] = rows) -> None:
            row = interval_row(name, interval, config)
            rows.append(row)
            record(row)

        stopped: RunStopped | None = None
        try:
            await config.driver.adaptive(name, config.request, recorder, duration=config.duration,
                                         interval=config.interval, on_interval=on_interval)
        except RunStopped as exc:
            stopped = exc
        if stopped is not None and not rows:
            raise stopped
        result = RunResult(name, adaptive, rows[-1].t_s if rows else 0.0, rows, run_totals(recorder, rows),
                           timeline=recorder.timeline.intervals(index, recorder.last_done if recorder.count else 0.0))
        if adaptive:
            result.phases = phase_facts(config, rows)
        results.append(result)
        events.finished(result)
        config.driver.check_budget(index)
    return results


def interval_row(name: str, interval: Interval, config: AdaptConfig) -> AdaptRow:
    ok = interval.ok
    done = interval.successes + interval.failures
    length = interval.t_s - (math.floor((interval.t_s - 1e-9) / config.interval) * config.interval)
    length = length if length > 0 else config.interval
    return AdaptRow(
        experiment="adapt", run=name, t_s=round(interval.t_s, 3), limit=interval.limit, in_flight=interval.in_flight,
        successes=interval.successes, failures=interval.failures, goodput_rps=interval.successes / length,
        ok_latency_p50_s=ok.quantile(0.5) if ok.count else 0.0, ok_latency_p99_s=ok.quantile(0.99) if ok.count else 0.0,
        success_rate=interval.successes / done if done else 0.0, throttled=interval.throttled,
        timeouts=interval.timeouts, capacity=capacity_at(config, min(interval.t_s, config.duration) - 1e-9),
    )


def run_totals(recorder: AdaptRecorder, rows: Sequence[AdaptRow]) -> dict[str, Any]:
    """A run's totals: goodput over its duration, success, the successes' latency, the limit."""
    ok = recorder.ok
    ok.flush()
    done = recorder.count
    span = rows[-1].t_s if rows else 0.0
    limits = [r.limit for r in rows]
    return {
        "requests": done, "successes": recorder.successes, "failures": done - recorder.successes,
        "goodput_rps": recorder.successes / span if span > 0 else 0.0,
        "success_rate": recorder.successes / done if done else 0.0,
        "ok_latency_p50_s": ok.quantile(0.5) if ok.count else 0.0,
        "ok_latency_p99_s": ok.quantile(0.99) if ok.count else 0.0,
        "throttled": sum(r.throttled for r in rows), "timeouts": sum(r.timeouts for r in rows),
        "limit_mean": statistics.fmean(limits) if limits else 0.0,
        "error_statuses": dict(recorder.error_statuses),
    }


def command(target: Target, options: AdaptOptions, request: Request, cooldown: Cooldown, connection: Connection,
            bounds: Bounds, outputs: Outputs, thresholds: Thresholds, server: Server) -> None:
    """An adaptive concurrency limit: a backlog sent as fast as the limit allows, which finds the
    server's knee by itself and follows it when the capacity moves.

    Per interval: the limit, requests in flight, goodput, the successes' p50 and p99, 429/503s
    and timeouts. With --compare-static, the same through fixed limits, side by side: a fixed
    limit is right for one phase only.
    """
    algorithm = options.algorithm.strip().lower()
    if algorithm not in ALGORITHMS:
        raise UsageError(f"invalid --algorithm {options.algorithm!r}: expected {' or '.join(ALGORITHMS)}")
    check_range("--duration", options.duration, 0, 3600, low_inclusive=False)
    check_range("--interval", options.interval, 0.05, 60)
    if options.interval > options.duration:
        raise UsageError(f"invalid --interval {options.interval:g}: longer than --duration {options.duration:g}")
    check_range("--max", options.max_limit, 1, MAX_LEVEL)
    check_range("--initial", options.initial, 1, MAX_LEVEL)
    if options.initial > options.max_limit:
        raise UsageError(f"invalid --initial {options.initial}: above --max {options.max_limit}")
    static = parse_int_list("--compare-static", options.compare_static) if options.compare_static else []
    schedule = (parse_capacity_schedule("--server-capacity-schedule", options.server_capacity_schedule)
                if options.server_capacity_schedule else ())
    setup = load_setup(request=request, cooldown=cooldown, connection=connection, bounds=bounds, scale=Scale(),
                       floor=Floor(), outputs=outputs, thresholds=thresholds, server=server)
    if schedule:
        setup.server = server.config(capacity_schedule=schedule)
    embedded = target.url is None
    config = AdaptConfig(request=setup.spec, algorithm=algorithm, duration=options.duration,
                         interval=options.interval, initial=options.initial, max_limit=options.max_limit,
                         static=static, cooldown=setup.cooldown, driver=setup.driver,
                         schedule=schedule if embedded else (),
                         capacity=setup.server.capacity if embedded else None,
                         service_s=setup.server.latency if embedded else None, embedded=embedded)
    settings = {"algorithm": algorithm, "duration_s": options.duration, "interval_s": options.interval,
                "initial": options.initial, "max": options.max_limit, "compare_static": static,
                "capacity_schedule": [list(e) for e in schedule] if embedded else None, "cooldown_s": setup.cooldown}
    plan = AdaptPlan(config, settings=settings, loop=setup.loop)
    setup.run(plan, target.url)


# --- its plan, table, verdict and charts ------------------------------------------------------


class AdaptPlan(LoadPlan):
    """The adaptive run (and the fixed ones): a row per interval, the totals in the sidecar."""

    latency_file = False

    def __init__(self, config: AdaptConfig, *, settings: dict[str, Any], loop: str) -> None:
        super().__init__(EXPERIMENT, config.request, min_success=0.99, settings=settings, levels=[config.max_limit],
                         run=self._runs, loop=loop, driver=config.driver)
        self.adapt = config
        self.total_steps = 1 + len(config.static)
        self.timeline = TimelineSettings(config.interval)  # the -timeline.csv too: a row per interval of each run
        self._steps: Steps | None = None
        self._writer: ResultsWriter | None = None

    def check(self, console: Console) -> None:
        from asyncbench.system import raise_nofile_limit

        most = self.most_at_once()
        nofile = raise_nofile_limit()
        if most + 64 > nofile:
            console.print(f"[yellow]warning: up to {most:,} requests at once need about {most + 64:,} open files but "
                          f"the limit is {nofile:,}: requests beyond it fail with 'Too many open files'[/]")

    def most_at_once(self) -> int:
        return max([self.adapt.max_limit, *self.adapt.static])

    def planned_requests(self) -> int | None:
        return None  # a backlog: as many as the server answers in the time

    def bound(self) -> str:
        budget = self.driver.budget
        runs = self.total_steps
        in_all = (f"{budget.max_requests:,} in all (--max-requests)" if budget.max_requests is not None
                  else "as many in all as it answers")
        time = (f"nothing new after {budget.max_duration:g} s (--max-duration)" if budget.max_duration is not None
                else f"{runs} run{'s' if runs != 1 else ''} of {self.adapt.duration:g} s")
        return f"at most {self.most_at_once():,} requests at once, {in_all}, {time}"

    @property
    def row_type(self) -> type:
        return AdaptRow

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        self._steps, self._writer = steps, writer
        return self._run(self.spec, steps)

    def _runs(self, spec: RequestSpec, events: StepEvents) -> Coroutine[Any, Any, list[RunResult]]:
        return run(self.adapt, events, self._record)

    def _record(self, row: AdaptRow) -> None:
        """An interval, written as it ends (a Ctrl-C keeps it), and kept for --fail-if."""
        assert self._writer is not None and self._steps is not None
        cells = asdict(row)
        self._writer.write_row(cells)
        self._steps.rows.append(cells)

    def rows(self, result: RunResult) -> list[dict[str, Any]]:
        return []  # written interval by interval (see _record)

    def quantiles(self, result: Any) -> None:
        return None

    def intervals(self, result: RunResult) -> tuple[str, int, list[TimelineInterval]] | None:
        index = self._done = getattr(self, "_done", 0) + 1
        return result.name.replace(" ", "-"), index, result.timeline

    def step_done(self, result: RunResult, done: int) -> tuple[str | None, RenderableType | None]:
        return f"{run_line(result)} ({done} of {self.total_steps} runs)", None

    def conclude(self, results: list[RunResult], interrupted: bool, title: str) -> Conclusion:
        runs = [{"run": r.name, "adaptive": r.adaptive, "duration_s": r.duration_s, **r.totals} for r in results]
        adaptive = next((r for r in results if r.adaptive), None)
        metadata: dict[str, Any] = {"runs": runs, "warnings": []}
        if adaptive is not None:
            metadata.update(goodput_rps=adaptive.totals["goodput_rps"], success_rate=adaptive.totals["success_rate"],
                            ok_latency_p99_s=adaptive.totals["ok_latency_p99_s"], phases=adaptive.phases)
        statics = [r for r in runs if not r["adaptive"]]
        if statics:
            metadata["static"] = [{"limit": int(r["run"].split()[-1]), **{k: r[k] for k in (
                "goodput_rps", "success_rate", "ok_latency_p99_s")}} for r in statics]
        title = f"{title} — {'interrupted, ' if interrupted else ''}{len(results)} run{'s' if len(results) != 1 else ''}"
        shown: list[RenderableType] = [runs_table(runs, title)]
        if adaptive is not None and adaptive.phases:
            shown.append(phases_table(adaptive.phases, f"{adaptive.name}: by phase of the server's capacity"))
        shown.append(adapt_verdict(runs, adaptive.phases if adaptive else []))
        self.stop_facts(metadata, shown)
        self.reach_facts(metadata)
        return Conclusion(metadata, shown, min_success=self.min_success)


def score(run: dict[str, Any]) -> float:
    """Goodput × success rate: what a limit is worth (a fast run that fails is worth little)."""
    return float(run["goodput_rps"]) * float(run["success_rate"])


def run_line(result: RunResult) -> str:
    t = result.totals
    return (f"{result.name} done: goodput {report.fmt_rate(t['goodput_rps'])} req/s, "
            f"{report.fmt_pct(t['success_rate'])} % ok, p99 {report.fmt_ms(t['ok_latency_p99_s'])} ms, "
            f"limit {t['limit_mean']:,.0f} on average")


def runs_table(runs: Sequence[dict[str, Any]], title: str) -> report.FitTable:
    """One row per run: goodput, success, the successes' latency, the limit, what failed."""
    table = report.FitTable(title)
    table.add_column("run", justify="left")
    for header in ("goodput\nreq/s", "ok\n%", "ok p50\nms", "ok p99\nms", "limit\nmean", "fail-\nures",
                   "429/\n503", "time-\nouts"):
        table.add_column(header, justify="right")
    best = max(runs, key=score) if runs else None
    for r in runs:
        is_best = r is best
        cells = (
            ("★ " if is_best else "") + str(r["run"]),
            report.fmt_rate(float(r["goodput_rps"])), report.fmt_pct(float(r["success_rate"])),
            report.fmt_ms(float(r["ok_latency_p50_s"])), report.fmt_ms(float(r["ok_latency_p99_s"])),
            f"{float(r['limit_mean']):,.0f}", f"{int(r['failures']):,}", f"{int(r['throttled']):,}",
            f"{int(r['timeouts']):,}",
        )
        table.add_row(*cells, style="bold green" if is_best else ("red" if float(r["success_rate"]) < 0.5 else None))
    table.caption = "★ the best goodput × success rate; ok p50, ok p99: successful requests only"
    return table


def phases_table(phases: Sequence[dict[str, Any]], title: str) -> report.FitTable:
    """Per phase: the capacity, where the limit ended, how long it took to settle."""
    table = report.FitTable(title)
    table.add_column("phase\ns", justify="left")
    headers = ["capa-\ncity", "final\nlimit", "settled\ns", "at cap.\ns", "goodput\nreq/s", "of cap.\n%", "ok\n%"]
    for header in headers:
        table.add_column(header, justify="right")

    def seconds(value: Any) -> str:
        return "never" if value is None else f"{float(value):.1f}"

    for p in phases:
        capacity = p.get("capacity")
        allowed = p.get("capacity_rps")
        cells = (
            f"{p['start_s']:g}–{p['end_s']:g}", "-" if capacity is None else f"{int(capacity):,}",
            f"{float(p['final_limit']):,.0f}", seconds(p.get("settle_s")),
            "-" if capacity is None else seconds(p.get("settle_capacity_s")),
            report.fmt_rate(float(p["goodput_rps"])),
            "-" if not allowed else f"{100 * float(p['goodput_rps']) / float(allowed):.0f}",
            report.fmt_pct(float(p["success_rate"])),
        )
        table.add_row(*cells)
    table.caption = (f"settled: seconds until the limit stayed within {SETTLE_BAND:.0%} of where it ended (at "
                     "cap.: of the capacity); of cap.: goodput against what the capacity allows (capacity / service "
                     "time)")
    return table


def adapt_verdict(runs: Sequence[dict[str, Any]], phases: Sequence[dict[str, Any]]) -> Text:
    """What the adaptive limit did, and whether it beat the fixed ones."""
    if not runs:
        return Text("no run finished: nothing to conclude")
    adaptive = next((r for r in runs if r["adaptive"]), None)
    if adaptive is None:
        return Text("the adaptive run did not finish: nothing to compare", style="yellow")
    line = Text(f"{adaptive['run']}: goodput {report.fmt_rate(float(adaptive['goodput_rps']))} req/s at "
                f"{report.fmt_pct(float(adaptive['success_rate']))} % success, p99 "
                f"{report.fmt_ms(float(adaptive['ok_latency_p99_s']))} ms", style="bold green")
    settled = [p.get("settle_capacity_s", p.get("settle_s")) for p in phases]
    if settled and len(phases) > 1:
        line.append("; settled within 20 % in " + ", ".join("never" if s is None else f"{s:.1f} s" for s in settled)
                    + " (by phase)", style="green")
    statics = [r for r in runs if not r["adaptive"]]
    if statics:
        best = max(statics, key=score)
        ratio = score(adaptive) / score(best) if score(best) > 0 else math.inf
        versus = (f"\nagainst fixed limits: the best, {best['run']}, {report.fmt_rate(float(best['goodput_rps']))} "
                  f"req/s at {report.fmt_pct(float(best['success_rate']))} % success: ")
        if ratio >= 1:
            text = "the adaptive limit does more on goodput × success" + (
                f" (×{ratio:.2f})" if math.isfinite(ratio) else "")
            line.append(versus + text, style="green")
        else:
            line.append(versus + f"it does more (the adaptive limit reaches {ratio:.0%} of it)", style="yellow")
    return line


def adapt_chart(run: Run, out_dir: Path) -> Path | None:
    """The adaptive run over time: the limit and the requests in flight (with the server's
    capacity, when known) above its goodput and the successes' p99."""
    from asyncbench import plots

    df = run.frame
    adaptive = [r for r in (run.meta.get("runs") or []) if isinstance(r, dict) and r.get("adaptive")]
    name = adaptive[0]["run"] if adaptive else (str(df["run"].iloc[0]) if len(df) else None)
    one = df[df["run"] == name] if name is not None else df.iloc[0:0]
    if one.empty:
        return None
    duration = run.setting("duration_s", None)
    if duration is not None:  # not the requests that ended after the time was up (none in flight then)
        one = one[one["t_s"] <= float(duration) + 1e-6]
    fig, (top, bottom) = plots.plt.subplots(2, 1, sharex=True, figsize=(8, 6.5), height_ratios=(1, 1))
    top.step(one["t_s"], one["limit"], where="post", color=plots.BLUE, label=f"limit ({name})")
    top.plot(one["t_s"], one["in_flight"], color=plots.ORANGE, linestyle="--", linewidth=1, label="in flight")
    if "capacity" in one and one["capacity"].notna().any():
        top.step(one["t_s"], one["capacity"], where="pre", color=plots.BLACK, linestyle=":", linewidth=1.5,
                 label="server capacity")
    top.set_ylabel("requests at once")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    bottom.plot(one["t_s"], one["goodput_rps"], color=plots.GREEN, label="goodput")
    bottom.set_ylabel("goodput (req/s)")
    bottom.set_xlabel("seconds from the start of the run")
    right = bottom.twinx()
    right.plot(one["t_s"], one["ok_latency_p99_s"] * 1000, color=plots.VERMILLION, linestyle="-.", linewidth=1,
               label="ok p99")
    right.set_ylabel("p99 of successes (ms)")
    right.grid(False)
    lines = bottom.get_lines() + right.get_lines()
    bottom.legend(lines, [str(line.get_label()) for line in lines], loc="upper left", bbox_to_anchor=(1.08, 1.0),
                  fontsize=9)
    plots.title(fig, "An adaptive concurrency limit over time", run)
    return plots.save(fig, out_dir, f"{run.stem}-adapt")


def compare_chart(run: Run, out_dir: Path) -> Path | None:
    """Goodput and success rate over time of every run: the adaptive one against each fixed
    limit (a fixed limit above the capacity keeps its goodput by being refused fast)."""
    from asyncbench import plots

    df = run.frame
    names = list(dict.fromkeys(df["run"]))
    if len(names) < 2:
        return None
    duration = run.setting("duration_s", None)
    fig, (top, bottom) = plots.plt.subplots(2, 1, sharex=True, figsize=(8, 6.5))
    for i, name in enumerate(names):
        one = df[df["run"] == name]
        if duration is not None:
            one = one[one["t_s"] <= float(duration) + 1e-6]
        style = {"color": plots.CYCLE[i % len(plots.CYCLE)], "linestyle": plots.LINESTYLES[i % len(plots.LINESTYLES)]}
        top.plot(one["t_s"], one["goodput_rps"], label=str(name), **style)
        bottom.plot(one["t_s"], one["success_rate"] * 100, **style)
    top.set_ylabel("goodput (req/s)")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    bottom.set_ylabel("success rate (%)")
    bottom.set_xlabel("seconds from the start of the run")
    plots.title(fig, "Adaptive against fixed limits, over time", run)
    return plots.save(fig, out_dir, f"{run.stem}-compare")


def _charts(run: Run, out_dir: Path, min_success: float | None) -> list[Path]:
    return [p for p in (adapt_chart(run, out_dir), compare_chart(run, out_dir)) if p is not None]


def _summary(run: Run) -> list[Any]:
    runs = [r for r in (run.meta.get("runs") or []) if isinstance(r, dict)]
    shown: list[Any] = [runs_table(runs, f"adapt: {len(runs)} run{'s' if len(runs) != 1 else ''}")]
    phases = [p for p in (run.meta.get("phases") or []) if isinstance(p, dict)]
    if phases:
        shown.append(phases_table(phases, "by phase of the server's capacity"))
    shown.append(adapt_verdict(runs, phases))
    return shown


EXPERIMENT = Experiment(
    name="adapt", completed_key="runs_completed", step="run",
    required=("experiment", "run", "t_s", "limit", "in_flight", "successes", "failures", "goodput_rps"),
    sort_by=(), charts=_charts, row_keys=("run", "t_s"), summary=_summary, command=command,
)
