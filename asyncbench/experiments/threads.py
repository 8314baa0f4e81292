"""Lab 2.1: is asyncio single-threaded or multi-threaded, parallel or concurrent?

Four phases of `tasks` coroutines gathered on one event loop, each recording the thread it ran
on and when it started and ended:

- concurrent:  each awaits a GET of the target — they overlap while waiting on the network;
- blocking:    each calls time.sleep inside the coroutine — the loop is stuck, they serialize;
- nonblocking: each awaits asyncio.sleep — they overlap;
- to_thread:   each awaits asyncio.to_thread(time.sleep, ...) — the blocking call moves to worker
               threads, whose names are recorded, and the loop stays free.

A ticker task that wakes every 10 ms measures how late the loop was in each phase.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from asyncbench import report, signals
from asyncbench.experiments.descriptor import Experiment, StepEvents
from asyncbench.experiments.impact import WAYS, ImpactWay, run_way
from asyncbench.experiments.impact import default_pool_size as default_pool_size  # the lab's, re-exported
from asyncbench.groups import Connection, Only, Outputs, Request, Server, Target, Thresholds
from asyncbench.options import check_range
from asyncbench.session import Conclusion, PlanDefaults

if TYPE_CHECKING:
    from rich.console import RenderableType

    from asyncbench.load.route import Reach
    from asyncbench.load.spec import RequestSpec
    from asyncbench.results import ResultsWriter, Run
    from asyncbench.session import Steps


@dataclass
class ThreadsOptions:
    tasks: Annotated[int, typer.Option("--tasks", help="Coroutines per phase.")] = 10
    sleep: Annotated[float, typer.Option(
        "--sleep", help="Seconds each task sleeps (blocking, non-blocking, to_thread).")] = 0.2
    impact: Annotated[int, typer.Option(
        "--impact", metavar="N", help="Then N concurrent GETs three ways — one event loop, a thread per request, "
        "asyncio's default pool — with the threads, memory and time each took (0: not).")] = 0


PHASES = ("concurrent", "blocking", "nonblocking", "to_thread")
_perf = time.perf_counter


@dataclass
class TaskRecord:
    """One CSV row of `threads`: one task in one phase. Times are seconds from the phase's start."""

    experiment: str
    phase: str
    task_id: int
    thread_name: str  # where the work ran: the loop's thread, or a worker thread for to_thread
    coroutine_thread: str  # where the coroutine itself ran
    start_s: float
    end_s: float
    duration_s: float
    ok: bool  # concurrent: the GET succeeded; other phases: always true


@dataclass
class PhaseRun:
    phase: str
    records: list[TaskRecord]
    wall_s: float
    loop_lag_max_s: float


@dataclass
class ThreadsConfig:
    url: str
    tasks: int = 10
    sleep: float = 0.2
    timeout: float = 10.0
    impact: int = 0  # after the phases, this many concurrent GETs three ways (0: not)
    on_way: Callable[[ImpactWay], None] | None = None  # each way's record, as soon as it is measured


async def _phase(name: str, tasks: int, body: Callable[[], Awaitable[tuple[str, bool]]]) -> PhaseRun:
    from asyncbench.system import LoopLagMonitor

    with LoopLagMonitor() as lag:
        t0 = _perf()

        async def task(i: int) -> TaskRecord:
            start = _perf() - t0
            coroutine_thread = threading.current_thread().name
            thread_name, ok = await body()
            end = _perf() - t0
            return TaskRecord(EXPERIMENT.name, name, i, thread_name, coroutine_thread=coroutine_thread, start_s=start,
                              end_s=end, duration_s=end - start, ok=ok)

        records = list(await asyncio.gather(*(task(i) for i in range(tasks))))
        wall = _perf() - t0
    return PhaseRun(name, records, wall, lag.max_lag)


async def run(config: ThreadsConfig, events: StepEvents) -> list[PhaseRun]:
    """Run the four phases in order, reporting each as it finishes."""
    loop = asyncio.get_running_loop()
    # One worker per task, so to_thread can overlap them all; the default pool has only
    # min(32, CPUs + 4) workers and would run the tasks in waves.
    executor = ThreadPoolExecutor(max_workers=config.tasks, thread_name_prefix="asyncio-worker")
    loop.set_default_executor(executor)
    from asyncbench.client import AsyncHttpClient

    results: list[PhaseRun] = []
    async with AsyncHttpClient(max_concurrency=None, timeout=config.timeout, keep_body=False) as client:

        async def concurrent() -> tuple[str, bool]:
            result = await client.fetch(config.url)
            return threading.current_thread().name, result.ok

        async def blocking() -> tuple[str, bool]:
            try:
                with signals.interruptible():  # Ctrl-C must not wait for tasks × sleep seconds
                    time.sleep(config.sleep)  # deliberately blocks the event loop: the lesson
            except KeyboardInterrupt:
                # The run is being stopped: end this task as cancelled, so that the stop travels
                # up as every other stop does (raised inside a task, it would be left there unseen).
                raise asyncio.CancelledError from None
            return threading.current_thread().name, True

        async def nonblocking() -> tuple[str, bool]:
            await asyncio.sleep(config.sleep)
            return threading.current_thread().name, True

        def sleep_in_worker() -> str:
            time.sleep(config.sleep)
            return threading.current_thread().name

        async def to_thread() -> tuple[str, bool]:
            return await asyncio.to_thread(sleep_in_worker), True

        for name, body in zip(PHASES, (concurrent, blocking, nonblocking, to_thread), strict=True):
            phase = await _phase(name, config.tasks, body)
            results.append(phase)
            events.finished(phase)
    executor.shutdown(wait=False)
    if config.impact:
        for way in WAYS:
            measured = await run_way(way, config.url, config.impact, config.timeout)
            if config.on_way is not None:
                config.on_way(measured)
    return results


def command(target: Target, options: ThreadsOptions, request: Annotated[Request, Only("timeout")],
            connection: Annotated[Connection, Only("allow_remote")], outputs: Outputs, thresholds: Thresholds,
            server: Annotated[Server, Only("server_latency")]) -> None:
    """asyncio is one thread: concurrent, not parallel (Lab 2.1).

    Four phases of coroutines — awaiting a GET, calling time.sleep, awaiting asyncio.sleep,
    awaiting asyncio.to_thread — with the thread each ran on and the event loop's worst lag.
    """
    from asyncbench import session

    check_range("--tasks", options.tasks, 1, 1000)
    check_range("--sleep", options.sleep, 0, 10)
    timeout = request.check_timeout()
    check_range("--impact", options.impact, 0, 10_000)
    # With --impact, the embedded server takes all N at once: what is measured is the client's cost.
    config = server.config(capacity=max(100, options.impact), queue=max(400, options.impact), error_rate=0.0)
    plan = ThreadsPlan(options.tasks, options.sleep, timeout, options.impact)
    plan.allow_remote = connection.remote_allowed()
    session.run(plan, target.url, config, outputs.outputs(), thresholds.expressions())


# --- its plan, tables, verdict and charts ------------------------------------------------------


class ThreadsPlan(PlanDefaults):
    """The four phases; a table per phase as it finishes, the summary, the verdict, the timeline."""

    loop = "asyncio"
    blocking = True  # time.sleep on the loop: the lesson; a signal must still interrupt it
    live = False
    latency_file = False
    total_steps = 4

    def __init__(self, tasks: int, sleep: float, timeout: float, impact: int = 0) -> None:
        self.experiment = EXPERIMENT
        self.tasks, self.sleep, self.timeout, self.impact = tasks, sleep, timeout, impact
        self.target_url = ""
        self.summaries: list[PhaseSummary] = []
        self.coroutine_threads: set[str] = set()
        self.ways: list[Any] = []  # --impact: each way's record

    allow_remote = False

    def reach(self) -> Reach:
        from asyncbench.load.route import Reach

        return Reach(allow_remote=self.allow_remote)

    def bind(self, target_url: str, scratch: Path) -> RequestSpec:
        from asyncbench.load.spec import RequestSpec

        self.target_url = target_url
        return RequestSpec(url=target_url, timeout=self.timeout)

    def config(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "sleep_s": self.sleep, "timeout_s": self.timeout,
                "to_thread_workers": self.tasks, "default_executor_workers": default_pool_size(),
                "impact": self.impact}

    @property
    def row_type(self) -> type:
        return TaskRecord

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        def way_done(way: Any) -> None:
            # Into the sidecar at once, as a phase's rows are: nothing measured is lost.
            self.ways.append(way)
            writer.write_metadata(impact=[asdict(w) for w in self.ways])
            # A line per way, as a phase's table is printed when it ends (threads has no live display).
            print(f"asyncbench: {impact_line(way)}", file=sys.stderr, flush=True)

        return run(ThreadsConfig(url=self.target_url, tasks=self.tasks, sleep=self.sleep,
                                                   timeout=self.timeout, impact=self.impact, on_way=way_done), steps)

    def rows(self, phase: Any) -> list[dict[str, Any]]:
        return [asdict(record) for record in phase.records]

    def step_done(self, phase: Any, done: int) -> tuple[str | None, RenderableType | None]:
        self.coroutine_threads.update(r.coroutine_thread for r in phase.records)
        self.summaries.append(summarize_phase(
            phase.phase, [r.duration_s for r in phase.records], [r.thread_name for r in phase.records],
            phase.wall_s, phase.loop_lag_max_s))
        return None, phase_table(phase.phase, phase.records)

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        from rich.text import Text

        summaries = self.summaries
        verdict = threads_verdict(summaries, self.coroutine_threads) if summaries else "no phase finished"
        shown: list[RenderableType] = [phase_summary_table(summaries), Text(verdict, style="bold")]
        pool = default_pool_size()
        if any(s.phase == "to_thread" for s in summaries) and self.tasks > pool:
            shown.append(Text(
                f"note: to_thread ran on a pool of {self.tasks} workers; asyncio's default pool has "
                f"{pool} (min(32, CPUs + 4)) and would run {self.tasks} tasks in waves", style="yellow"))
        metadata: dict[str, Any] = {"summary": [asdict(s) for s in summaries], "verdict": verdict}
        if self.impact:
            from asyncbench.experiments import impact

            ways = self.ways
            metadata["impact"] = [asdict(w) for w in ways]
            metadata["impact_verdict"] = impact.verdict(ways) if ways else "no way finished"
            if ways:
                shown += [impact_table(ways, f"{self.impact:,} concurrent GETs, three ways"),
                          Text(metadata["impact_verdict"], style="bold")]
            refused = [w for w in ways if w.failures]
            starved = [w for w in refused if impact.OUT_OF_FILES in w.errors]
            if starved:
                import resource

                limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                shown.append(Text(
                    "warning: this machine, not the target, failed some: " + "; ".join(
                        f"{w.way} {w.errors}" for w in starved)
                    + f" — {self.impact:,} requests at once need as many open files, and the limit (ulimit -n) "
                    f"is {limit:,}: raise it to compare the three ways", style="yellow"))
                refused = [w for w in refused if w not in starved]
            if refused:
                shown.append(Text(
                    "warning: the target refused or failed some: " + "; ".join(
                        f"{w.way} {w.failures:,} of {w.requests:,} ({w.errors})" for w in refused)
                    + f" — the comparison needs a server with room for {self.impact:,} requests at once "
                    "(the embedded server is started with it when no URL is given)", style="yellow"))
        return Conclusion(metadata, shown)


@dataclass
class PhaseSummary:
    """How one `threads` phase used time: wall clock against the sum and the max of its tasks."""

    phase: str
    tasks: int
    wall_s: float
    sum_s: float
    max_s: float
    wall_over_sum: float
    wall_over_max: float
    loop_lag_max_s: float
    threads: list[str]
    pattern: str  # serialized, overlapped, or partly overlapped


def summarize_phase(phase: str, durations: Sequence[float], thread_names: Sequence[str],
                    wall_s: float, loop_lag_max_s: float) -> PhaseSummary:
    """Serialized when the wall time is close to the sum of the tasks' durations (one at a time);
    overlapped when it is close to the longest one (all at once)."""
    total, longest = sum(durations), max(durations, default=0.0)
    if len(durations) > 1 and wall_s >= 0.8 * total:
        pattern = "serialized"
    elif wall_s <= 1.5 * longest:
        pattern = "overlapped"
    else:
        pattern = "partly overlapped"
    return PhaseSummary(
        phase=phase,
        tasks=len(durations),
        wall_s=wall_s,
        sum_s=total,
        max_s=longest,
        wall_over_sum=wall_s / total if total else 0.0,
        wall_over_max=wall_s / longest if longest else 0.0,
        loop_lag_max_s=loop_lag_max_s,
        threads=sorted(set(thread_names)),
        pattern=pattern,
    )


def threads_verdict(summaries: Sequence[PhaseSummary], coroutine_threads: set[str]) -> str:
    """The lab's answer, with the evidence of this run."""
    by = {s.phase: s for s in summaries}
    parts = []
    if len(coroutine_threads) == 1:
        parts.append(f"asyncio is single-threaded: every coroutine ran on {next(iter(coroutine_threads))}")
    else:
        parts.append(f"coroutines ran on {len(coroutine_threads)} threads: {', '.join(sorted(coroutine_threads))}")
    if "blocking" in by and "nonblocking" in by:
        b, n = by["blocking"], by["nonblocking"]
        parts.append(
            f"concurrent, not parallel: time.sleep {b.pattern} the tasks (wall {b.wall_s:.2f} s vs "
            f"sum {b.sum_s:.2f} s, loop {b.loop_lag_max_s * 1000:.0f} ms late) while await "
            f"asyncio.sleep {n.pattern} them (wall {n.wall_s:.2f} s vs max {n.max_s:.2f} s)"
        )
    if "to_thread" in by:
        t = by["to_thread"]
        parts.append(
            f"asyncio.to_thread moved the blocking call to {len(t.threads)} worker thread"
            f"{'s' if len(t.threads) != 1 else ''} and {t.pattern} it (wall {t.wall_s:.2f} s)"
        )
    return "; ".join(parts) + "."


def phase_table(phase: str, records: Sequence[Any]) -> report.FitTable:
    """Task id → thread, start, end, for one `threads` phase."""
    table = report.FitTable(f"phase: {phase}")
    table.add_column("task", justify="right")
    table.add_column("thread")
    for header in ("start\nms", "end\nms", "took\nms"):
        table.add_column(header, justify="right")
    for r in records:
        thread = r.thread_name if r.thread_name == r.coroutine_thread else f"{r.thread_name} (from {r.coroutine_thread})"
        table.add_row(str(r.task_id), thread, f"{r.start_s * 1000:,.1f}", f"{r.end_s * 1000:,.1f}",
                      f"{r.duration_s * 1000:,.1f}", style=None if r.ok else "red")
    return table


def phase_summary_table(summaries: Sequence[Any]) -> report.FitTable:
    """Wall time against the sum and the max of the tasks, and the loop's worst lag, per phase."""
    table = report.FitTable("summary")
    table.add_column("phase")
    for header in ("wall\ns", "sum\ns", "max\ns", "wall/\nsum", "wall/\nmax", "loop\nlag ms", "threads"):
        table.add_column(header, justify="right")
    table.add_column("tasks\nwere")
    for s in summaries:
        cells = (
            s.phase,
            f"{s.wall_s:.3f}",
            f"{s.sum_s:.3f}",
            f"{s.max_s:.3f}",
            f"{s.wall_over_sum:.2f}",
            f"{s.wall_over_max:.2f}",
            f"{s.loop_lag_max_s * 1000:,.1f}",
            str(len(s.threads)),
            s.pattern,
        )
        table.add_row(*cells, style="yellow" if s.pattern == "serialized" else None)
    return table


def impact_line(w: Any) -> str:
    """One way of `threads --impact`, as it finishes."""
    return (f"impact {w.way}: {w.requests:,} GETs in {w.wall_s:.2f} s, {w.successes:,} ok, at most "
            f"{w.threads_peak:,} threads alive, peak RSS {w.peak_rss_mb:,.1f} MB (+{w.rss_growth_mb:,.1f})")


def impact_table(ways: Sequence[Any], title: str) -> report.FitTable:
    """`threads --impact`: threads, memory and time of the same requests done three ways."""
    table = report.FitTable(title)
    table.add_column("way")
    for header in ("threads\npeak", "workers", "peak RSS\nMB", "RSS +\nMB", "wall\ns", "req/s", "ok"):
        table.add_column(header, justify="right")
    for w in ways:
        cells = (
            w.way,
            f"{w.threads_peak:,}",
            f"{w.workers:,}" if w.workers else "-",
            f"{w.peak_rss_mb:,.1f}",
            f"{w.rss_growth_mb:,.1f}",
            f"{w.wall_s:.2f}",
            report.fmt_rate(w.throughput_rps),
            f"{w.successes:,}",
        )
        table.add_row(*cells, style="bold green" if w.way == "asyncio" else None)
    return table


def threads_timeline(run: Run, out_dir: Path) -> Path:
    """One horizontal bar per task, one panel per phase: serialized vs overlapped at a glance.

    Bars on the event loop's thread are blue; bars on worker threads (to_thread) are orange and
    carry the worker's name."""
    from matplotlib.patches import Patch

    from asyncbench import plots

    df = run.frame
    phases = list(dict.fromkeys(df["phase"]))
    tasks = int(df["task_id"].max()) + 1
    loop_thread = str(df["coroutine_thread"].iloc[0]) if "coroutine_thread" in df else "MainThread"
    fig, axes = plots.plt.subplots(len(phases), 1, figsize=(9, 1.2 + (0.25 * tasks + 0.7) * len(phases)),
                             sharex=True, squeeze=False)
    for ax, phase in zip(axes[:, 0], phases, strict=True):
        part = df[df["phase"] == phase]
        wall = float(part["end_s"].max())
        summary = summarize_phase(phase, list(part["end_s"] - part["start_s"]), list(part["thread_name"]),
                                  wall, 0.0)
        for row in part.itertuples():
            on_loop = row.thread_name == loop_thread
            width = (row.end_s - row.start_s) * 1000
            ax.barh(row.task_id, width, left=row.start_s * 1000, height=0.7,
                    color=plots.BLUE if on_loop else plots.ORANGE, edgecolor="white", linewidth=0.5)
            if not on_loop:
                ax.text(row.end_s * 1000, row.task_id, f" {row.thread_name}", va="center", fontsize=6.5,
                        color="#444444")
        where = "on one thread" if summary.threads == [loop_thread] else f"on {len(summary.threads)} threads"
        ax.set_title(f"{phase} — {wall * 1000:,.0f} ms wall, {summary.sum_s * 1000:,.0f} ms of task time: "
                     f"{summary.pattern} {where}", fontsize=10, loc="left")
        ax.set_ylabel("task")
        ax.set_yticks(range(tasks) if tasks <= 20 else range(0, tasks, max(1, tasks // 10)))
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(tasks - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
    axes[-1, 0].set_xlabel("time since the phase started (ms)")
    handles = [Patch(color=plots.BLUE, label=f"{loop_thread} (the event loop)")]
    if (df["thread_name"] != loop_thread).any():
        handles.append(Patch(color=plots.ORANGE, label="worker threads (asyncio.to_thread)"))
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    fig.suptitle("asyncio is one thread: concurrent, not parallel", fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return plots.save(fig, out_dir, f"{run.stem}-timeline")


def impact_chart(run: Run, out_dir: Path) -> Path | None:
    """`threads --impact`: threads alive, memory added and wall time of each way, side by side."""
    from asyncbench import plots

    ways = run.meta.get("impact")
    if not isinstance(ways, list) or not ways:
        return None
    names = [str(w["way"]) for w in ways]
    colors = [plots.BLUE if n == "asyncio" else plots.ORANGE for n in names]
    n = int(ways[0]["requests"])
    fig, axes = plots.plt.subplots(1, 3, figsize=(12, 3.8))
    panels = (("threads_peak", "threads alive at most", "{:,.0f}"), ("rss_growth_mb", "memory added (MB, RSS)", "{:,.1f}"),
              ("wall_s", "wall time (s)", "{:,.2f}"))
    for ax, (key, label, fmt) in zip(axes, panels, strict=True):
        values = [float(w[key]) for w in ways]
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=9, padding=2)
        ax.set_title(label, fontsize=10, loc="left")
        ax.set_ylim(0, max(values) * 1.18 or 1)
        ax.tick_params(axis="x", labelsize=8.5)
        ax.grid(axis="x", visible=False)
    fig.suptitle(f"{n:,} concurrent GETs: one event loop vs a thread each vs asyncio's default pool",
                 fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return plots.save(fig, out_dir, f"{run.stem}-impact")


def _charts(run: Any, out_dir: Path, min_success: float | None) -> list[Path]:
    impact = impact_chart(run, out_dir)
    return [threads_timeline(run, out_dir), *([impact] if impact else [])]


def _summary(run: Any) -> list[Any]:
    from types import SimpleNamespace

    phases = run.meta.get("summary")
    shown: list[Any] = []
    if isinstance(phases, list) and phases:
        shown.append(phase_summary_table([SimpleNamespace(**p) for p in phases]))
    if run.meta.get("verdict"):
        shown.append(Text(str(run.meta["verdict"]), style="bold"))
    ways = run.meta.get("impact")
    if isinstance(ways, list) and ways:
        n = int(ways[0]["requests"])
        shown.append(impact_table([SimpleNamespace(**w) for w in ways], f"{n:,} concurrent GETs, three ways"))
        shown.append(Text(str(run.meta.get("impact_verdict", "")), style="bold"))
    return shown


EXPERIMENT = Experiment(
    name="threads", completed_key="phases_completed", step="phase",
    required=("experiment", "phase", "task_id", "thread_name", "start_s", "end_s"), sort_by=(),
    charts=_charts, row_keys=("phase", "task_id"), summary=_summary, command=command,
)


