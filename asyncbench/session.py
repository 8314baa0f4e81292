"""One run flow for every experiment: target, pre-flight, results writer, progress, signals,
report, charts. What differs between experiments is their `Plan` (in each experiment's module); the flow,
and the helpers it is made of, are written once, here.

    prepare outputs ─► start the target ─► the plan binds to it ─► pre-flight ─► open the writer
      ─► run the steps (live display in a terminal, a line per step otherwise; Ctrl-C keeps
         every finished step) ─► the plan concludes ─► sidecar, report, charts
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from asyncbench import report, signals
from asyncbench.errors import Interrupted, ObjectiveNotMet, OutputError, RunFailed, RunStopped, TargetError, TargetGone
from asyncbench.options import check_target_url
from asyncbench.redact import redact_text, redact_url
from asyncbench.results import ResultsWriter, run_metadata

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from asyncbench.experiments.descriptor import Experiment
    from asyncbench.load.route import Reach, Route
    from asyncbench.load.spec import RequestSpec
    from asyncbench.server import ServerConfig
    from asyncbench.timeline import Interval


@dataclass
class Outputs:
    """Where a run's files go; `plots_dir` None means --no-plot; `report`: write the run's
    HTML report beside its results too."""

    results_dir: Path
    plots_dir: Path | None
    report: bool = False

    def check(self) -> None:
        """Fail before running anything when an output folder cannot be written."""
        for path, option in ((self.results_dir, "--results-dir"), (self.plots_dir, "--plots-dir")):
            if path is not None:
                check_output_dir(path, option)


@dataclass
class TimelineSettings:
    """A load run over time: seconds per interval, and the HdrHistogram log to write (or None)."""

    interval: float = 1.0
    hdr_log: Path | None = None


def prepare(url: str | None, outputs: Outputs, reach: Reach | None = None) -> Route | None:
    """Refuse a bad target URL, one that leads off this machine without the opt-in, a host that
    does not resolve, then an unwritable output folder: all before anything runs or any folder
    is made. The route to the URL, resolved once for the run (None for the embedded server)."""
    from asyncbench.load.route import Reach, reach_target

    route = None
    if url is not None:
        check_target_url(url)
        route = reach_target(url, reach or Reach())
    outputs.check()
    return route


def check_output_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {option} {str(path)!r}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {str(path)!r} is not writable")


def check_output_file(path: Path, option: str) -> None:
    """Fail before running anything when a file named by the user cannot be written: it must be
    a regular file or not yet exist (a symbolic link is followed to what it names). A FIFO or a
    device is refused, never opened nor replaced: writing a report "to" /dev/full must not
    destroy the device."""
    if path.is_dir():
        raise OutputError(f"cannot write {option} {str(path)!r}: it is a directory")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write {option} {str(path)!r}: not a regular file (a FIFO, socket or device)")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {option} {str(path)!r}: no folder {str(folder)!r}")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise OutputError(f"cannot write {option} {str(path)!r}: permission denied")


@contextmanager
def target(url: str | None, server: ServerConfig) -> Iterator[tuple[str, Path | None]]:
    """The URL to load: the given one, or the embedded server started for the run; and the CA
    to trust for it when the embedded server serves TLS with a throwaway certificate."""
    if url is not None:
        yield url, None
        return
    from asyncbench.server import EmbeddedServer

    embedded = EmbeddedServer(server)
    try:
        started = embedded.start()
    except RuntimeError as exc:
        raise TargetError(str(exc)) from None
    try:
        yield started + "/", embedded.ca_path
    finally:
        embedded.stop()


def run_async(coro: Coroutine[Any, Any, Any], loop: str = "asyncio", blocking: bool = False) -> Any:
    """Run a coroutine on `loop` (asyncio or uvloop); a first Ctrl-C or SIGTERM cancels it —
    closing its connections, keeping what was written — and raises KeyboardInterrupt.
    `blocking`: the coroutine makes blocking calls that a signal must interrupt (threads)."""
    import asyncio

    async def guarded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        try:
            with signals.measuring(task, on_loop=not blocking):
                return await coro
        except asyncio.CancelledError:
            if signals.requested():
                raise KeyboardInterrupt from None
            raise

    if loop == "uvloop":
        import uvloop

        return uvloop.run(guarded())
    return asyncio.run(guarded())


def run_steps(progress: Any, coro: Coroutine[Any, Any, Any], loop: str = "asyncio",
              blocking: bool = False) -> tuple[bool, TargetGone | RunStopped | None]:
    """Run an experiment under the progress display: whether Ctrl-C interrupted it, and how it
    ended early if it did — the target went away, or a bound of the run was reached (the steps
    before are kept either way)."""
    try:
        if progress is not None:
            with progress:
                run_async(coro, loop, blocking)
        else:
            run_async(coro, loop, blocking)
    except KeyboardInterrupt:
        return True, None
    except (TargetGone, RunStopped) as ended:
        return False, ended
    return False, None


def preflight_or_fail(spec: RequestSpec, loop: str = "asyncio") -> str:
    """One request before the run; TargetError when the target cannot be reached. Says what it
    answered, and warns when that answer is an error every request of the run would likely get."""
    from asyncbench.load.spec import preflight

    answer = run_async(preflight(spec), loop)
    if not answer.reachable:
        if answer.detail.startswith("TLS handshake"):
            raise TargetError(answer.detail)
        raise TargetError(f"target {redact_url(spec.url)} is unreachable: {answer.detail}")
    print(f"asyncbench: pre-flight {spec.method} {redact_url(spec.url)}: {answer.summary}", file=sys.stderr)
    if answer.status is not None and answer.status >= 400:
        said = f" ({redact_text(answer.body_excerpt)})" if answer.body_excerpt else ""
        hint = ("check the URL, --method, -H and --data" if answer.status < 500
                else "the target is failing before any load")
        print(f"asyncbench: warning: the pre-flight request got HTTP {answer.status}{said}: every request "
              f"of the run will likely fail the same way; {hint}", file=sys.stderr, flush=True)
    return answer.summary


def metadata_for(experiment: str, url: str | None, target_url: str, server: ServerConfig,
              config: dict[str, Any], preflight: str, **extra: Any) -> dict[str, Any]:
    return run_metadata(
        experiment, ["asyncbench", *sys.argv[1:]], target_url,
        target_kind="url" if url else "embedded",
        server=asdict(server) if url is None else None,
        config=config,
        preflight=preflight,
        **extra,
    )


def finish(console: Any, writer: ResultsWriter, experiment: Experiment, conclusion: Conclusion, outputs: Outputs,
           measured: bool) -> None:
    """List the files written, render the charts (and the HTML report) of the run whose steps
    were `measured` (any finished)."""
    extra_files = conclusion.files
    files = [str(f) for f in (writer.csv_path, writer.json_path, writer.latency_path, writer.timeline_path,
                              writer.hdr_log_path) if f]
    hgrm = writer.metadata.get("hgrm") or {}
    if hgrm:
        files.append(f"{len(hgrm)} × {writer.csv_path.parent / writer.stem}-*.hgrm (percentiles per "
                     f"{experiment.step}, HdrHistogram's format)")
    if len(extra_files) > 3:  # say where they are rather than list a screenful
        files.append(f"{len(extra_files)} files {writer.csv_path.parent / writer.stem}-*{extra_files[0].suffix}")
    else:
        files += [str(f) for f in extra_files]
    console.print("results: " + "\n         ".join(files), soft_wrap=True)
    plots_dir = outputs.plots_dir
    # Charts and the page are drawn by libraries whose finalizers and callbacks would swallow a
    # KeyboardInterrupt raised inside them: a Ctrl-C waits for the chart being drawn.
    with signals.deferred():
        run = None
        charts: list[Path] = []
        if measured and (plots_dir is not None or outputs.report):
            from asyncbench.results import read_run

            run = read_run(writer.csv_path, {experiment.name: experiment})
        if plots_dir is not None and run is not None:
            charts = experiment.charts(run, plots_dir, conclusion.min_success)
            if charts:
                console.print("charts:  " + "\n         ".join(str(p) for p in charts), soft_wrap=True)
            else:
                console.print("charts:  none: every setting had one value, so there is nothing to chart "
                              "against (give a setting a list, e.g. --concurrency 10,25,50)")
        if outputs.report and run is not None:
            from asyncbench import webreport

            page = writer.csv_path.with_suffix(".html")
            # The charts just drawn go into the page as they are; with --no-plot it draws its own.
            drawn = {run.stem: charts} if plots_dir is not None else None
            webreport.write(page, webreport.render([run], writer.csv_path.parent, None, {experiment.name: experiment},
                                                   charts=drawn))
            console.print(f"report:  {page}", soft_wrap=True)


@dataclass
class Conclusion:
    """What a plan concluded from its finished steps: sidecar fields, what to print, the files
    it wrote besides the results (listed after them), and the floor its charts mark."""

    metadata: dict[str, Any]
    renderables: list[RenderableType]
    files: list[Path] = field(default_factory=list)
    min_success: float | None = None
    objective_missed: str | None = None  # the run answered "no": exit 3, saying this
    failed: str | None = None  # part of the load could not be made (a shard died): exit 1, saying this


class Plan(Protocol):
    """An experiment's part of a run."""

    experiment: Experiment
    loop: str  # the event loop to run on: asyncio or uvloop
    blocking: bool  # the experiment makes blocking calls that a signal must interrupt
    live: bool  # a live progress display makes sense (steps with a known size)
    total_steps: int
    latency_file: bool  # it writes latency quantiles per step
    timeline: TimelineSettings | None  # it writes its steps over time (-timeline.csv, --hdr-log)
    gone: TargetGone | None  # set before `conclude` when the target went away mid-run
    stopped: RunStopped | None  # ... or when a bound of the run (--max-requests, --max-duration) stopped it

    def reach(self) -> Reach:
        """How the target may be reached: --resolve, --connect-to, the remote opt-in."""

    def bound(self) -> str:
        """What the run will send at most (requests at once, in all, and time), said before the
        first request to a target that is not this machine."""

    def check(self, console: Console) -> None:
        """Warn, before anything runs, of what would spoil the run."""

    def scale(self) -> Any:
        """A context manager: the workers the load is made on, for the length of the run."""

    def bind(self, target_url: str, scratch: Path) -> RequestSpec:
        """Take the target's URL (and a scratch folder for the run); return the request to
        send as the pre-flight."""

    def config(self) -> dict[str, Any]:
        """The settings for the sidecar (secrets redacted)."""

    def metadata(self) -> dict[str, Any]:
        """Fields of the sidecar besides the settings (the engine)."""

    @property
    def row_type(self) -> type:
        """The dataclass of a CSV row: its fields, in order, are the columns."""

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        """The experiment, reporting each step through `steps`."""

    def rows(self, result: Any) -> list[dict[str, Any]]:
        """The CSV rows of a finished step."""

    def quantiles(self, result: Any) -> tuple[int, list[tuple[float, float]]] | None:
        """The step's latency quantiles for the -latency.csv (its level and the pairs)."""

    def intervals(self, result: Any) -> tuple[str, int, list[Interval]] | None:
        """The step over time: its tag (e.g. "level-10"), its level and its intervals."""

    def step_done(self, result: Any, done: int) -> tuple[str | None, RenderableType | None]:
        """What to say of a finished step: a line for output that is not a terminal, and
        something to print in every case (or None)."""

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        """The sidecar's final fields, the tables and verdicts, from the finished steps."""


class PlanDefaults:
    """What a plan does when it has nothing of its own to say: no warning before the run, no
    sidecar field besides its settings, no latency quantiles."""

    gone = None  # the target went away mid-run (set by the session before `conclude`)
    timeline: TimelineSettings | None = None  # not recorded over time
    stopped = None  # a bound of the run stopped it (set by the session before `conclude`)

    def reach(self) -> Reach:
        import os

        from asyncbench.load.route import Reach

        return Reach(allow_remote=os.environ.get("ASYNCBENCH_ALLOW_REMOTE", "") not in ("", "0"))

    def bound(self) -> str:
        return "requests as the experiment makes them"

    def check(self, console: Console) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        return {}

    def quantiles(self, result: Any) -> tuple[int, list[tuple[float, float]]] | None:
        return None

    def intervals(self, result: Any) -> tuple[str, int, list[Interval]] | None:
        return None

    def scale(self) -> AbstractContextManager[Any]:
        """The workers the run's load is made on, started for the run (none: this process)."""
        return nullcontext()


class Steps:
    """Wires an experiment's step events to the results writer and the progress display."""

    def __init__(self, plan: Plan, writer: ResultsWriter, progress: Any, console: Console) -> None:
        self.plan = plan
        self.writer = writer
        self.progress = progress
        self.console = console
        self.results: list[Any] = []
        self.rows: list[dict[str, Any]] = []  # as written, for the thresholds

    def started(self, description: str, total: int, done: Callable[[], int], unit: str = "req",
                note: Callable[[], str] | None = None) -> None:
        """A step began: `total` units of work, `done()` how many are finished, `note()` a word
        on the side (both polled by the display)."""
        if self.progress is not None:
            self.progress.start_step(description, total, done, unit, note)

    def over_time(self, tag: str, level: int, intervals: list[Interval]) -> None:
        """Intervals of the running step: to the -timeline.csv (and --hdr-log) now."""
        if self.plan.timeline is not None and intervals:
            self.writer.write_timeline(tag, level, intervals)

    def finished(self, result: Any) -> None:
        """A step finished: write it at once, so that nothing measured is lost."""
        for row in self.plan.rows(result):
            self.writer.write_row(row)
            self.rows.append(row)
        quantiles = self.plan.quantiles(result)
        if quantiles is not None:
            self.writer.write_quantiles(*quantiles)
        intervals = self.plan.intervals(result)
        if intervals is not None:
            self.writer.write_timeline(*intervals)
        self.results.append(result)
        self.writer.write_metadata(**{self.plan.experiment.completed_key: len(self.results)})
        line, renderable = self.plan.step_done(result, len(self.results))
        stats = getattr(result, "stats", None)
        if self.progress is not None and hasattr(stats, "ok_latency_p99_s"):
            self.progress.add_result(stats)
        if renderable is not None:
            self.console.print(renderable)
        if self.progress is None and line is not None:
            # Not a terminal: one line per finished step, on stderr, for logs and pipes.
            print(f"asyncbench: {line}", file=sys.stderr, flush=True)


def run(plan: Plan, url: str | None, server: ServerConfig, outputs: Outputs, fail_if: Sequence[str] = ()) -> None:
    """Run one experiment from start to charts; raises Interrupted after keeping what finished,
    ObjectiveNotMet (exit 3) when a `--fail-if` threshold failed."""
    from asyncbench import thresholds as limits

    checks = limits.parse(fail_if, plan.row_type)
    route = prepare(url, outputs, plan.reach())
    console = report.make_console()
    plan.check(console)
    experiment = plan.experiment
    with (tempfile.TemporaryDirectory(prefix="asyncbench-") as scratch, plan.scale(),
          target(url, server) as (target_url, ca_path)):
        spec = plan.bind(target_url, Path(scratch))
        if ca_path is not None and spec.tls is not None and spec.tls.cacert is None and not spec.tls.insecure:
            spec.tls = replace(spec.tls, cacert=ca_path)  # the embedded server's throwaway CA, for this run
        if route is not None:
            # Every connection of the run goes to the addresses resolved once, here.
            spec.addresses, spec.connect_port = route.addresses, route.connect_port
            if route.remote:
                print(f"asyncbench: loading {route.describe()}, which is not this machine: {plan.bound()}",
                      file=sys.stderr, flush=True)
        detail = preflight_or_fail(spec, plan.loop)
        metadata = metadata_for(experiment.name, url, spec.url, server, plan.config(), detail,
                                **plan.metadata(), **{experiment.completed_key: 0},
                                **({"route": route.to_dict()} if route is not None else {}))
        columns = [f.name for f in fields(plan.row_type)]
        with ResultsWriter(outputs.results_dir, experiment.name, columns, metadata, datetime.now(),
                           latency_file=plan.latency_file, timeline_file=plan.timeline is not None,
                           hdr_log=plan.timeline.hdr_log if plan.timeline is not None else None) as writer:
            progress = report.SweepProgress(console, experiment.step) if console.is_terminal and plan.live else None
            steps = Steps(plan, writer, progress, console)
            interrupted, ended = run_steps(progress, plan.run(steps, writer), plan.loop, plan.blocking)
            gone = plan.gone = ended if isinstance(ended, TargetGone) else None
            stopped = plan.stopped = ended if isinstance(ended, RunStopped) else None
            target_name = "embedded server" if url is None else redact_url(spec.url)
            title = f"{experiment.name}: {target_name}"
            conclusion = plan.conclude(steps.results, interrupted, title)
            keys = experiment.row_keys
            failures = limits.evaluate(checks, steps.rows, lambda row: ", ".join(f"{k} {row[k]}" for k in keys))
            status = "interrupted" if interrupted else ("failed" if gone else ("stopped" if stopped else "complete"))
            writer.write_metadata(
                status=status,
                **({"reason": str(gone), "target_gone": {"step": gone.step, "level": gone.level}} if gone else {}),
                **({"reason": stopped.reason, "partial": stopped.level} if stopped else {}),
                finished_at=datetime.now().isoformat(timespec="seconds"),
                **conclusion.metadata,
                **({"thresholds": limits.summary(checks)} if checks else {}),
            )
            for renderable in conclusion.renderables:
                console.print(renderable)
            for line in failures:
                console.print(f"threshold failed: {line}", style="bold red", markup=False, highlight=False)
    finish(console, writer, experiment, conclusion, outputs, bool(steps.results))
    if interrupted:
        raise Interrupted(f"interrupted; the finished {experiment.step}s are saved")
    if gone is not None:
        kept = len(steps.results) - 1
        raise TargetError(f"{gone}; the {kept} {experiment.step}{'s' if kept != 1 else ''} before it "
                          f"{'are' if kept != 1 else 'is'} kept, and no answer is drawn from {gone.step}")
    if conclusion.failed is not None:
        raise RunFailed(conclusion.failed)
    if conclusion.objective_missed is not None:
        raise ObjectiveNotMet(conclusion.objective_missed)
    if failures:
        failed = [t.text for t in checks if t.failed]
        raise ObjectiveNotMet(f"{len(failed)} of {len(checks)} --fail-if thresholds failed: {', '.join(failed)}")

