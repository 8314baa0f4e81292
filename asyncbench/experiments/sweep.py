"""What trap and semaphore share — a sweep of closed-loop levels — and what rate and find build
on: the plan of a load sweep (pre-flight, one row of load columns per level, the sweet spot, the
USL line, warnings), its table and verdict, its charts, and its descriptor.

A sweep runs every level in turn, each `rounds` times, each round's load made by the driver
(in this process or as shards), each level reported as soon as it is finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncbench import report
from asyncbench.errors import RunStopped
from asyncbench.experiments.descriptor import LOAD_REQUIRED, Experiment, sweet_row
from asyncbench.load.spec import RequestSpec, check_target
from asyncbench.redact import redact_header, redact_url
from asyncbench.session import Conclusion, PlanDefaults, Steps, TimelineSettings

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from rich.console import Console, RenderableType
    from rich.text import Text

    from asyncbench.experiments.descriptor import StepEvents
    from asyncbench.groups import (
        Bounds,
        Connection,
        Cooldown,
        Floor,
        Outputs,
        Request,
        Scale,
        Server,
        Thresholds,
        Timeline,
    )
    from asyncbench.load.driver import Driver
    from asyncbench.load.route import Reach
    from asyncbench.metrics import LevelRecorder, LevelStats, RoundFacts
    from asyncbench.results import ResultsWriter, Run
    from asyncbench.server import ServerConfig
    from asyncbench.session import Outputs as Folders
    from asyncbench.timeline import Interval


@dataclass
class LevelResult:
    """A finished level: its row, its latency quantiles, each round's own figures (goodput,
    p50, p99: what `compare` needs to tell a change from the runs' own spread), and why its
    load was not all made (a shard that died), if it was not."""

    stats: LevelStats
    quantiles: list[tuple[float, float]]
    rounds: list[dict[str, float]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    timeline: list[Interval] = field(default_factory=list)  # its rounds over time, one after another


async def run_sweep(
    experiment: Experiment,
    spec: RequestSpec,
    levels: list[int],
    requests_for: dict[int, int],
    bounded: bool,
    rounds: int,
    cooldown: float,
    events: StepEvents,
    driver: Driver,
    interval: float = 1.0,
) -> list[LevelResult]:
    """Run every level (each `rounds` times), reporting each as soon as it is finished; the
    `driver` makes each round's load (in this process, or as shards elsewhere)."""
    from asyncbench.metrics import LevelRecorder, latency_quantiles, summarize

    results: list[LevelResult] = []
    first = True
    for level in levels:
        total = requests_for[level]
        recorders = [LevelRecorder(interval=interval) for _ in range(rounds)]
        step = f"{experiment.step} {level:,}"
        events.started(step, total * rounds, lambda recorders=recorders: sum(driver.progress(r) for r in recorders))
        facts: list[RoundFacts] = []
        failures_before = len(driver.failures)
        for recorder in recorders:
            if not first and cooldown > 0:
                # Let the target drain what the last level left behind before measuring again.
                await asyncio.sleep(cooldown)
            first = False
            try:
                facts.append(await driver.closed(step, spec, level, total, recorder, bounded=bounded))
            except RunStopped:
                if not facts:
                    raise
                driver.budget.cut = (step, driver.budget.reason())  # the rounds it ran are the level's
                break
        ran = recorders[:len(facts)]
        stats = summarize(experiment.name, level, list(zip(ran, facts, strict=True)))
        result = LevelResult(stats, latency_quantiles(ran), [round_figures(r) for r in ran],
                             driver.failures[failures_before:], round_intervals(level, ran))
        results.append(result)
        events.finished(result)
        await check_target(spec, step, level, stats)
        driver.check_budget(level)
    return results


def stage_intervals(level: int, stages: Sequence[Any], i: int, recorder: LevelRecorder) -> list[Interval]:
    """Stage `i` of a ramp over time, on the ramp's one clock: from the stage's start to its end,
    or to its last answer when that came later."""
    begin = sum(s.duration_s for s in stages[:i])
    end = begin + stages[i].duration_s
    return recorder.timeline.intervals(level, max(recorder.last_done, end) if recorder.count else end, start_s=begin)


def round_intervals(level: int, recorders: Sequence[LevelRecorder]) -> list[Interval]:
    """A level's rounds over time, one after another on the level's own clock."""
    from asyncbench.timeline import level_intervals

    return level_intervals(level, [(r.timeline, r.last_done if r.count else 0.0) for r in recorders])


def round_figures(rec: LevelRecorder) -> dict[str, float]:
    """One round's goodput, p50 and p99 (of every request, and of the successes)."""
    latency = rec.latency
    return {"goodput_rps": rec.successes / rec.elapsed_s if rec.elapsed_s else 0.0,
            "latency_p50_s": latency.quantile(0.5), "latency_p99_s": latency.quantile(0.99),
            "ok_latency_p50_s": rec.ok.quantile(0.5), "ok_latency_p99_s": rec.ok.quantile(0.99)}


# --- the settings every load experiment shares -------------------------------------------------


@dataclass
class LoadSetup:
    """The validated settings of a load experiment's command line: the request, how and where
    the load is made, the floor, the pause between steps, the embedded server, the outputs."""

    spec: RequestSpec
    loop: str
    driver: Driver
    min_success: float
    cooldown: float
    server: ServerConfig
    outputs: Folders
    fail_if: list[str]
    timeline: TimelineSettings

    def run(self, plan: Any, url: str | None) -> None:
        """The one run flow (session.run) for `plan`, against `url` or the embedded server."""
        from asyncbench import session

        session.run(plan, url, self.server, self.outputs, self.fail_if)

    def sweep(self, experiment: Experiment, url: str | None, *, settings: dict[str, Any], levels: list[int],
              run: Callable[[RequestSpec, Steps], Coroutine[Any, Any, Any]]) -> None:
        """Run a sweep of `levels` (trap, semaphore): its plan, through the one run flow."""
        self.run(LoadPlan(experiment, self.spec, min_success=self.min_success, settings=settings, levels=levels,
                          run=run, loop=self.loop, driver=self.driver, timeline=self.timeline), url)


def load_setup(*, request: Request, cooldown: Cooldown, connection: Connection, bounds: Bounds, scale: Scale,
               floor: Floor, outputs: Outputs, thresholds: Thresholds, server: Server,
               timeline: Timeline | None = None) -> LoadSetup:
    """Validate the option groups every load experiment takes, in the order they were always
    checked (the first bad value is the one named)."""
    pause = cooldown.value()
    min_success = floor.value()
    spec = request.spec()
    loop = connection.apply(spec)
    budget = bounds.budget()
    config = server.config()
    over_time = timeline.settings() if timeline is not None else TimelineSettings()
    return LoadSetup(spec=spec, loop=loop, driver=scale.driver(loop, budget), min_success=min_success, cooldown=pause,
                     server=config, outputs=outputs.outputs(), fail_if=thresholds.expressions(), timeline=over_time)


# --- the plan of a load sweep --------------------------------------------------------------


class LoadPlan(PlanDefaults):
    """A load sweep (trap, semaphore): one row of LevelStats and its quantiles per level."""

    blocking = False
    live = True
    latency_file = True

    def __init__(self, experiment: Experiment, spec: RequestSpec, *, min_success: float, settings: dict[str, Any],
                 levels: list[int], run: Callable[[RequestSpec, Steps], Coroutine[Any, Any, Any]], loop: str,
                 driver: Driver, timeline: TimelineSettings | None = None) -> None:
        self.driver = driver
        self.timeline = timeline
        self.experiment = experiment
        self.spec = spec
        self.min_success = min_success
        self.settings = settings
        self.levels = levels
        self.total_steps = len(levels)
        self._run = run
        self.loop = loop

    def check(self, console: Console) -> None:
        from asyncbench.system import raise_nofile_limit

        nofile = raise_nofile_limit()
        if self.levels[-1] + 64 > nofile:
            console.print(
                f"[yellow]warning: {self.experiment.step} {self.levels[-1]:,} needs about {self.levels[-1] + 64:,} "
                f"open files but the limit is {nofile:,}: requests beyond it fail with 'Too many open files' "
                "(raise the hard limit: ulimit -Hn)[/]"
            )

    def bind(self, target_url: str, scratch: Path) -> RequestSpec:
        self.spec.url = target_url
        remote = self.driver.remote_hosts()
        if remote:
            print(f"asyncbench: warning: {len(remote)} worker host(s) are other machines ({', '.join(remote[:5])}): "
                  f"each loads {redact_url(target_url)} on its own loopback, so the target must run on each of them",
                  file=sys.stderr, flush=True)
        return self.spec

    def config(self) -> dict[str, Any]:
        spec = self.spec
        return {
            **self.settings,
            "method": spec.method,
            "headers": [redact_header(f"{k}: {v}") for k, v in spec.headers.items()],
            # What the body was, without what it said (it may hold a secret): to tell runs apart.
            "data_sha256": hashlib.sha256(spec.data).hexdigest()[:16] if spec.data is not None else None,
            "timeout_s": spec.timeout,
            "retries": spec.retries,
            "min_success": self.min_success,
            "engine": spec.engine,
            "loop": self.loop,
            "insecure": spec.insecure,
        }

    def metadata(self) -> dict[str, Any]:
        return {"engine": self.spec.engine, "scale": self.driver.describe()}

    def scale(self) -> AbstractContextManager[Any]:
        return self.driver

    def shard_facts(self, metadata: dict[str, Any], notes: list[str]) -> str | None:
        """The shards of a sharded run into the sidecar, their failures into the warnings;
        what to exit 1 with when a shard failed."""
        driver = self.driver
        if driver.sharded:
            metadata["shards"] = driver.log
        notes.extend(driver.failures)
        if not driver.failures:
            return None
        return f"{len(driver.failures)} shard(s) failed; their steps hold the other shards' requests only"

    @property
    def row_type(self) -> type:
        from asyncbench.metrics import LevelStats
        from asyncbench.rows import WorkerStageStats

        return WorkerStageStats if self.settings.get("stages") else LevelStats

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        return self._run(self.spec, steps)

    def rows(self, result: LevelResult) -> list[dict[str, Any]]:
        return [asdict(result.stats)]

    def quantiles(self, result: LevelResult) -> tuple[int, list[tuple[float, float]]]:
        return result.stats.level, result.quantiles

    def intervals(self, result: Any) -> tuple[str, int, list[Interval]] | None:
        timeline = getattr(result, "timeline", None)
        if self.timeline is None or timeline is None:
            return None
        stage = getattr(result.stats, "stage", 0)  # stages may share a target: named by their number
        tag = f"stage-{stage}" if stage else f"{self.experiment.step}-{result.stats.level}"
        return tag, result.stats.level, timeline

    def step_done(self, result: LevelResult, done: int) -> tuple[str | None, RenderableType | None]:
        step = self.experiment.step
        return f"{level_line(result.stats, step)} ({done} of {self.total_steps} {step}s)", None

    def excluded(self, results: Sequence[Any]) -> list[int]:
        """The steps no answer may be drawn from: the one during which the target went away,
        the one a bound of the run cut short, and those whose load was not all made (a shard
        died)."""
        out = [r.stats.level for r in results if r.incomplete]
        if self.gone is not None:
            out.append(self.gone.level)
        if self.stopped is not None and self.stopped.level is not None:
            out.append(self.stopped.level)
        return out

    def reach(self) -> Reach:
        from asyncbench.load.route import Reach

        spec = self.spec
        return Reach(spec.resolve, spec.connect_to, spec.allow_remote)

    def most_at_once(self) -> int:
        """The most requests this plan keeps in flight at once."""
        return max(self.levels)

    def planned_requests(self) -> int | None:
        """The attempts this plan may make in all (retries included), or None when unknown."""
        rounds = int(self.settings.get("rounds", 1) or 1)
        per_level = self.settings.get("requests")
        per_level_of = self.settings.get("requests_per_level")
        total = sum((per_level or per_level_of or level) * rounds for level in self.levels)
        return total * (1 + self.spec.retries)

    def bound(self) -> str:
        budget = self.driver.budget
        planned = self.planned_requests()
        if budget.max_requests is not None:
            planned = budget.max_requests if planned is None else min(planned, budget.max_requests)
        in_all = f"{planned:,} in all" if planned is not None else "as many in all as the search needs"
        if budget.max_duration is not None:
            time = f"nothing new after {budget.max_duration:g} s (--max-duration)"
        else:
            time = f"no time bound (each request at most {self.spec.timeout:g} s; --max-duration sets one)"
        return f"at most {self.most_at_once():,} requests at once, {in_all}, {time}"

    def stop_facts(self, metadata: dict[str, Any], shown: list[RenderableType]) -> None:
        """A bound of the run that stopped it, said under the verdict and in the sidecar."""
        from rich.text import Text

        stopped = self.stopped
        if stopped is None:
            return
        step = self.experiment.step
        cut = (f"; {step} {stopped.level:,} was cut short and no answer is drawn from it"
               if stopped.level is not None else "")
        line = f"stopped: {stopped.reason}{cut}; the {step}s before are kept"
        metadata["warnings"].insert(0, line)
        shown.append(Text(line, style="bold yellow"))

    def reach_facts(self, metadata: dict[str, Any]) -> None:
        """Where the requests went, and the TLS they met: into the sidecar."""
        driver = self.driver
        if driver.addresses:
            metadata["addresses"] = dict(driver.addresses)
        if driver.tls.full or driver.tls.resumed:
            metadata["tls"] = driver.tls.to_dict()

    def gone_facts(self, metadata: dict[str, Any], shown: list[RenderableType]) -> None:
        """The target that went away, said under the verdict and in the sidecar."""
        from rich.text import Text

        gone = self.gone
        if gone is None:
            return
        line = (f"the target went away during {gone.step} ({gone.detail}): that {self.experiment.step} measured no "
                f"server, and no answer is drawn from it; the {self.experiment.step}s before it are kept")
        metadata["warnings"].insert(0, line)
        shown.append(Text(line, style="bold red"))

    def conclude(self, results: list[LevelResult], interrupted: bool, title: str) -> Conclusion:
        from asyncbench import metrics

        experiment, step = self.experiment, self.experiment.step
        rows = [r.stats for r in results]
        excluded = self.excluded(results)
        sweet = metrics.sweet_spot(rows, self.min_success, excluded)
        notes = [n for r in rows for n in metrics.warnings_for(r, self.min_success, step)]
        metadata = {
            "sweet_spot": None if sweet is None else {
                "level": sweet.level,
                "goodput_rps": sweet.goodput_rps,
                "success_rate": sweet.success_rate,
                "latency_p99_s": sweet.latency_p99_s,
                "ok_latency_p99_s": sweet.ok_latency_p99_s,
                "throttled": sweet.throttled,
                "reliable": not sweet.client_limited,
            },
            "client_limited_levels": [r.level for r in rows if r.client_limited],
            "warnings": notes,
            "rounds": {str(r.stats.level): r.rounds for r in results},
        }
        failed = self.shard_facts(metadata, notes)
        word = "stage" if self.settings.get("stages") else step  # a stage's row: its target
        title = f"{title} — {'interrupted, ' if interrupted else ''}{len(rows)} {word}{'s' if len(rows) != 1 else ''}"
        answered = [r for r in rows if r.level not in excluded]
        shown: list[RenderableType] = [
            level_table(rows, sweet, title, step, experiment.queue_wait),
            verdict(answered, sweet, experiment.verdict_word, self.min_success, experiment.collapses),
        ]
        self.gone_facts(metadata, shown)
        self.stop_facts(metadata, shown)
        self.reach_facts(metadata)
        shown += usl_lines(rows, metadata, self.min_success, excluded=excluded)
        block = report.warnings_block(notes)
        if block is not None:
            shown.append(block)
        return Conclusion(metadata, shown, min_success=self.min_success, failed=failed)


def usl_lines(rows: Sequence[Any], metadata: dict[str, Any], min_success: float, measured: bool = False,
         excluded: Sequence[int] = ()) -> list[RenderableType]:
    """The USL fitted to a sweep's goodput, over the levels that met the success floor (and
    whose client kept up): into the sidecar's `usl`, and a line to print. `measured`: N is the
    concurrency measured (L = λW), as for a rate sweep, whose levels are rates."""
    from rich.text import Text

    from asyncbench import usl

    if len(rows) < usl.MIN_LEVELS:
        metadata["usl"] = None
        return []
    kept = [r for r in rows if r.requests and r.success_rate >= min_success and not r.client_limited
            and r.level not in excluded]
    n_of = (lambda r: r.littles_l) if measured else (lambda r: r.level)
    fit = usl.fit([n_of(r) for r in kept], [r.goodput_rps for r in kept])
    if fit is None:
        why = (f"only {len(kept)} of {len(rows)} levels met {min_success * 100:g} % success with the client keeping "
               f"up (it needs at least {usl.MIN_LEVELS})")
        metadata["usl"] = usl.unfitted(why)
        return [Text(f"USL: not fitted: {why}", style="yellow")]
    if measured:
        fit.concurrency = "concurrency measured (L = λW)"
    usl.judge(fit, len(kept), max(r.goodput_rps for r in kept), max(n_of(r) for r in rows))
    metadata["usl"] = fit.to_dict()
    return [Text(fit.describe(), style="" if fit.reliable and fit.r2 >= usl.POOR_R2 else "yellow")]


# --- its table and verdict ------------------------------------------------------------------


def level_line(r: LevelStats, step: str = "level") -> str:
    """One finished level as a line: for logs and output that is not a terminal."""
    return (
        f"{step} {r.level:,} done: {report.fmt_rate(r.throughput_rps)} req/s, goodput "
        f"{report.fmt_rate(r.goodput_rps)} req/s, p50 {report.fmt_ms(r.latency_p50_s)} ms, "
        f"{report.fmt_pct(r.success_rate)} % ok"
    )


def level_table(
    rows: Sequence[LevelStats], sweet: LevelStats | None, title: str, step: str = "level",
    show_queue_wait: bool = False,
) -> report.FitTable:
    """Little's-law table: λ throughput, goodput, W mean latency, L = λW, L/level, p50/p99."""
    table = report.FitTable(title)
    table.add_column(step, justify="right")
    for header in ("λ\nreq/s", "goodput\nreq/s", "W mean\nms", "L=λW", "L /\nlevel"):
        table.add_column(header, justify="right")
    if show_queue_wait:
        table.add_column("wait\nms", justify="right")
    for header in ("ok p50\nms", "ok p99\nms", "ok\n%"):
        table.add_column(header, justify="right")
    setup = any(_setup_matters(r) for r in rows)
    if setup:
        table.add_column("set-up\nms", justify="right")
    retried = any(report.retries_of(r) for r in rows)
    throttled = any(report.throttled_of(r) for r in rows)
    if retried or throttled:
        table.add_column("retry/\nthrottle", justify="right")
    table.add_column("errors", justify="left", wrap=True)
    for r in rows:
        is_sweet = sweet is not None and r.level == sweet.level and getattr(r, "stage", 0) == getattr(sweet, "stage", 0)
        cells = [
            report.row_name(f"{r.level:,}", is_sweet, r.client_limited),
            report.fmt_rate(r.throughput_rps),
            report.fmt_rate(r.goodput_rps),
            report.fmt_ms(r.latency_mean_s),
            report.fmt_rate(r.littles_l),
            f"{r.efficiency:.2f}",
        ]
        if show_queue_wait:
            cells.append(report.fmt_ms(r.queue_wait_mean_s))
        cells += [report.ok_ms(r, "p50"), report.ok_ms(r, "p99"), report.fmt_pct(r.success_rate)]
        if setup:
            cells.append(_ms_or_dash(_setup_s(r)))
        if retried or throttled:
            cells.append(f"{report.retries_of(r):,}/{report.throttled_of(r):,}")
        cells.append(report.errors_cell(r))
        style = "bold green" if is_sweet else ("red" if r.success_rate < 0.5 else None)
        table.add_row(*cells, style=style)
    notes = ["ok p50, ok p99: successful requests only (W: every request)"]
    if setup:
        notes.append("set-up: a new connection's TCP connect and TLS handshake, on average (in W; the CSV has "
                     "them apart, and the time to first byte)")
    if retried or throttled:
        notes.append("retry: attempts beyond each request's first; throttle: attempts answered 429, or 503 "
                     "with Retry-After")
    if any(r.client_limited for r in rows):
        notes.append("! the client, not the server, was the limit at this level")
    table.caption = "; ".join(notes)
    return table


def throttle_note(row: Any, what: str) -> str | None:
    """What it means that the server throttled the chosen level, or None when it did not."""
    n = report.throttled_of(row)
    if not n:
        return None
    attempts = getattr(row, "attempts", None)
    of = f" of {int(attempts):,} attempts" if attempts not in (None, "") else ""
    return (f"{what} {int(row.level):,} was throttled: {n:,}{of} were answered 429 (or 503 with Retry-After)"
            f"{' and retried' if report.retries_of(row) else ''}; its goodput is what the server let through, and a "
            f"level this short ({float(row.elapsed_s):.1f} s) rides the server's burst allowance: run more "
            "requests per level to see the rate it sustains")


def _number(value: Any) -> float | None:
    """A cell's number, or None for an empty one (a figure the engine did not measure)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN: an empty cell read back


def _setup_s(row: Any) -> float | None:
    connect, tls = _number(getattr(row, "connect_mean_s", None)), _number(getattr(row, "tls_mean_s", None))
    return None if connect is None else connect + (tls or 0.0)


def _setup_matters(row: Any) -> bool:
    """Whether opening connections was a noticeable part of the level's latency: a tenth of it
    or more, per request (the trap opens one per request; over TLS the handshakes are the story)."""
    setup, opened = _setup_s(row), _number(getattr(row, "connections_opened", None))
    if setup is None or not opened or not row.requests:
        return False
    return setup * opened / row.requests >= 0.1 * float(row.latency_mean_s)


def _ms_or_dash(seconds: float | None) -> str:
    return "-" if seconds is None else report.fmt_ms(seconds)


def verdict(
    rows: Sequence[LevelStats], sweet: LevelStats | None, what: str, min_success: float,
    collapses: bool = False,
) -> Text:
    """One line: the sweet spot (`what` names the axis: "concurrency 100"), or why there is
    none; and, for an experiment whose goodput `collapses` (the trap), where it did."""
    from rich.text import Text

    from asyncbench import metrics

    if not rows:
        return Text("no level finished: nothing to conclude")
    if sweet is None:
        failed = [r for r in rows if r.requests and not r.successes]
        if len(failed) == len(rows):
            return Text(f"no sweet spot: every request failed: {failure_summary_all(rows)}", style="bold red")
        best = max(rows, key=lambda r: r.success_rate)
        line = Text(
            f"no sweet spot: no level reached {report.fmt_pct(min_success)} % success "
            f"(best: {what} {best.level:,} at {report.fmt_pct(best.success_rate)} %)",
            style="bold red",
        )
        if failed:
            line.append(f"\nno request succeeded at {what} {', '.join(f'{r.level:,}' for r in failed)}: "
                        f"{metrics.failure_summary(failed[0])}", style="red")
        return line
    line = Text(
        f"sweet spot: {what} {sweet.level:,} — {report.fmt_rate(sweet.goodput_rps)} req/s "
        f"at {report.fmt_pct(sweet.success_rate)} % success, p99 {report.fmt_ms(report.ok_latency(sweet, 'p99'))} ms",
        style="bold green",
    )
    if sweet.client_limited:
        line.append(
            " (unreliable: the client, not the server, was the limit at this level)",
            style="bold yellow",
        )
    throttled = throttle_note(sweet, what)
    if throttled is not None:
        line.append(f"\n{throttled}", style="yellow")
    # A level the client could not make (out of open files, a saturated loop) is not the trap.
    above = [r for r in rows if r.level > sweet.level and r.success_rate < min_success and not r.client_limited]
    if collapses and above:
        worst = min(above, key=lambda r: r.success_rate)
        line.append(
            f"\nabove it the trap springs: success fell to {report.fmt_pct(worst.success_rate)} % "
            f"at {worst.level:,} simultaneous requests",
            style="yellow",
        )
    return line


def failure_summary_all(rows: Sequence[LevelStats]) -> str:
    """The failures of every level together, as `failure_summary` words them."""
    from types import SimpleNamespace

    from asyncbench.metrics import failure_summary
    from asyncbench.records import format_statuses, parse_statuses

    # Rows are dataclasses when just measured and plain records when read back from disk.
    total = SimpleNamespace(**{name: sum(int(getattr(r, name) or 0) for r in rows) for name in (
        "errors_timeout", "errors_connect", "errors_http_4xx", "errors_http_5xx", "errors_other")})
    statuses: dict[int, int] = {}
    for r in rows:
        for code, n in parse_statuses(getattr(r, "error_statuses", "")).items():
            statuses[code] = statuses.get(code, 0) + n
    total.error_statuses = format_statuses(statuses)
    return failure_summary(total)


# --- its charts ------------------------------------------------------------------------------


def throughput_chart(run: Run, out_dir: Path, axis_label: str) -> Path:
    """Throughput (every outcome) and goodput (successes) against the level."""
    from asyncbench import plots

    df = run.frame
    fig, ax = plots.plt.subplots()
    ax.plot(df["level"], df["throughput_rps"], marker="o", color=plots.BLUE, label="throughput (all responses)")
    ax.plot(df["level"], df["goodput_rps"], marker="s", color=plots.ORANGE, linestyle="--", label="goodput (successes)")
    plots.usl_curve(ax, run)
    plots.mark_client_limited(ax, df, df["throughput_rps"])
    plots.sweet_spot_line(ax, run)
    plots.level_axis(ax, df["level"], axis_label)
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    plots.plain_y(ax)
    ax.legend(loc="upper left")
    plots.title(fig, "Throughput and goodput", run)
    return plots.save(fig, out_dir, f"{run.stem}-throughput")


def latency_chart(run: Run, out_dir: Path, axis_label: str, queue_wait: bool) -> Path:
    """Latency percentiles (and, for the semaphore, the wait for a slot) against the level."""
    from asyncbench import plots

    df = run.frame
    fig, ax = plots.plt.subplots()
    for col, label, color, marker in (
        ("latency_p50_s", "p50", plots.BLUE, "o"),
        ("latency_p90_s", "p90", plots.ORANGE, "s"),
        ("latency_p99_s", "p99", plots.VERMILLION, "^"),
    ):
        ax.plot(df["level"], df[col] * 1000, marker=marker, color=color, label=label)
    if queue_wait and "queue_wait_mean_s" in df:
        ax.plot(df["level"], df["queue_wait_mean_s"] * 1000, marker="D", color=plots.PURPLE, linestyle="--",
                label="mean wait for a slot (client side)")
    plots.mark_client_limited(ax, df, df["latency_p50_s"] * 1000)
    plots.sweet_spot_line(ax, run)
    plots.level_axis(ax, df["level"], axis_label)
    ax.set_ylabel("latency (ms)")
    plots.log_y(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    plots.title(fig, "Latency percentiles", run)
    return plots.save(fig, out_dir, f"{run.stem}-latency")


def success_chart(run: Run, out_dir: Path, min_success: float, axis_label: str) -> Path:
    """Success rate against the level, with the --min-success floor."""
    from asyncbench import plots

    df = run.frame
    fig, ax = plots.plt.subplots()
    ax.plot(df["level"], df["success_rate"] * 100, marker="o", color=plots.BLUE, label="success rate")
    ax.axhline(min_success * 100, color=plots.VERMILLION, linestyle="--", linewidth=1,
               label=f"--min-success ({min_success * 100:g} %)")
    plots.mark_client_limited(ax, df, df["success_rate"] * 100)
    plots.sweet_spot_line(ax, run)
    plots.level_axis(ax, df["level"], axis_label)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower left")
    plots.title(fig, "Success rate", run)
    return plots.save(fig, out_dir, f"{run.stem}-success")


def load_charts(run: Run, out_dir: Path, min_success: float | None, axis_label: str, step: str,
                queue_wait: bool) -> list[Path]:
    """Every chart of a load sweep: throughput, latency, success, and the distribution."""
    from asyncbench import plots

    setting = run.setting("min_success", 0.99)
    floor = min_success if min_success is not None else (
        float(setting) if isinstance(setting, (int, float)) and 0 <= setting <= 1 else 0.99)
    paths = [throughput_chart(run, out_dir, axis_label), latency_chart(run, out_dir, axis_label, queue_wait),
             success_chart(run, out_dir, floor, axis_label)]
    extra = [plots.distribution_chart(run, out_dir, step), plots.timeline_chart(run, out_dir, step)]
    return paths + [p for p in extra if p is not None]


# --- its descriptor --------------------------------------------------------------------------


def load_sweep(name: str, step: str, axis_label: str, verdict_word: str, queue_wait: bool,
               collapses: bool, command: Callable[..., None]) -> Experiment:
    """The descriptor of a load sweep (trap, semaphore): rows of LevelStats, one per level."""

    def charts(run: Run, out_dir: Path, min_success: float | None) -> list[Path]:
        return load_charts(run, out_dir, min_success, axis_label, step, queue_wait)

    def summary(run: Run) -> list[Any]:
        rows = run.rows()
        sweet = sweet_row(run, rows)
        return [level_table(rows, sweet, f"{name}: {len(rows)} {step}s", step, queue_wait),
                verdict(rows, sweet, verdict_word, run.setting("min_success", 0.99), collapses)]

    return Experiment(name=name, step=step, completed_key="levels_completed", required=LOAD_REQUIRED,
                      sort_by=("level",), charts=charts, axis_label=axis_label, verdict_word=verdict_word,
                      load_sweep=True, queue_wait=queue_wait, collapses=collapses, summary=summary,
                      command=command)
