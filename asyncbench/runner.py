"""Runs one experiment for the command line, once its input is validated.

The wiring between the layers: start the target (or take the URL), send the pre-flight request,
open the results writer, run the experiment under the progress display with asyncbench's own
Ctrl-C handling, print the report, render the charts. An interrupted run keeps every finished
step and raises `Interrupted`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncbench import metrics, report, signals
from asyncbench.errors import Interrupted, OutputError, TargetError
from asyncbench.options import check_target_url
from asyncbench.redact import redact_header, redact_text, redact_url
from asyncbench.results import ResultsWriter, run_metadata

if TYPE_CHECKING:
    from asyncbench.experiments.descriptor import Experiment
    from asyncbench.experiments.load import LevelResult, RequestSpec
    from asyncbench.metrics import LevelRecorder
    from asyncbench.server import ServerConfig


@dataclass
class Outputs:
    """Where a run's files go; `plots_dir` None means --no-plot."""

    results_dir: Path
    plots_dir: Path | None

    def check(self) -> None:
        """Fail before running anything when an output folder cannot be written."""
        for path, option in ((self.results_dir, "--results-dir"), (self.plots_dir, "--plots-dir")):
            if path is not None:
                check_output_dir(path, option)


def prepare(url: str | None, outputs: Outputs) -> None:
    """Refuse a bad target URL, then an unwritable output folder: both before anything runs
    or any folder is made."""
    if url is not None:
        check_target_url(url)
    outputs.check()


def check_output_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {option} {str(path)!r}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {str(path)!r} is not writable")


def check_output_file(path: Path, option: str) -> None:
    """Fail before running anything when a file named by the user cannot be written."""
    if path.is_dir():
        raise OutputError(f"cannot write {option} {str(path)!r}: it is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {option} {str(path)!r}: no folder {str(folder)!r}")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise OutputError(f"cannot write {option} {str(path)!r}: permission denied")


@contextmanager
def target(url: str | None, server: ServerConfig) -> Iterator[str]:
    """The URL to load: the given one, or the embedded server started for the run."""
    if url is not None:
        yield check_target_url(url)
        return
    from asyncbench.server import EmbeddedServer

    embedded = EmbeddedServer(server)
    try:
        started = embedded.start()
    except RuntimeError as exc:
        raise TargetError(str(exc)) from None
    try:
        yield started + "/"
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


def run_steps(progress: Any, coro: Coroutine[Any, Any, Any], loop: str = "asyncio", blocking: bool = False) -> bool:
    """Run an experiment under the progress display; True when Ctrl-C interrupted it."""
    try:
        if progress is not None:
            with progress:
                run_async(coro, loop, blocking)
        else:
            run_async(coro, loop, blocking)
    except KeyboardInterrupt:
        return True
    return False


def preflight_or_fail(spec: RequestSpec, loop: str = "asyncio") -> str:
    """One request before the run; TargetError when the target cannot be reached. Says what it
    answered, and warns when that answer is an error every request of the run would likely get."""
    from asyncbench.experiments.load import preflight

    answer = run_async(preflight(spec), loop)
    if not answer.reachable:
        raise TargetError(f"target {redact_url(spec.url)} is unreachable: {answer.detail}")
    print(f"asyncbench: pre-flight {spec.method} {redact_url(spec.url)}: {answer.summary}", file=sys.stderr)
    if answer.status is not None and answer.status >= 400:
        said = f" ({redact_text(answer.body_excerpt)})" if answer.body_excerpt else ""
        hint = ("check the URL, --method, -H and --data" if answer.status < 500
                else "the target is failing before any load")
        print(f"asyncbench: warning: the pre-flight request got HTTP {answer.status}{said}: every request "
              f"of the run will likely fail the same way; {hint}", file=sys.stderr, flush=True)
    return answer.summary


def _metadata(experiment: str, url: str | None, target_url: str, server: ServerConfig,
              config: dict[str, Any], preflight: str, **extra: Any) -> dict[str, Any]:
    return run_metadata(
        experiment, ["asyncbench", *sys.argv[1:]], target_url,
        target_kind="url" if url else "embedded",
        server=asdict(server) if url is None else None,
        config=config,
        preflight=preflight,
        **extra,
    )


def finish(console: Any, writer: ResultsWriter, extra_files: list[Path], plots_dir: Path | None,
           any_rows: bool, interrupted: bool, steps: str, min_success: float | None = None) -> None:
    """List the files written, render the charts, and raise Interrupted if the run was."""
    files = [str(f) for f in (writer.csv_path, writer.json_path, writer.latency_path) if f]
    if len(extra_files) > 3:  # say where they are rather than list a screenful
        files.append(f"{len(extra_files)} files {writer.csv_path.parent / writer.stem}-*{extra_files[0].suffix}")
    else:
        files += [str(f) for f in extra_files]
    console.print("results: " + "\n         ".join(files), soft_wrap=True)
    if plots_dir is not None and any_rows:
        from asyncbench.experiments import read_run, run_charts

        charts = run_charts(read_run(writer.csv_path), plots_dir, min_success)
        if charts:
            console.print("charts:  " + "\n         ".join(str(p) for p in charts), soft_wrap=True)
        else:
            console.print("charts:  none: every setting had one value, so there is nothing to chart "
                          "against (give a setting a list, e.g. --concurrency 10,25,50)")
    if interrupted:
        raise Interrupted(f"interrupted; the finished {steps} are saved")


# --- trap and semaphore ------------------------------------------------------------------------


class LoadEvents:
    """Wires an experiment's level events to the results writer and the progress display."""

    def __init__(self, writer: ResultsWriter, progress: Any, what: str, total_levels: int) -> None:
        # `what` names one step, as the experiment declares it ("level", "limit")
        self.writer = writer
        self.progress = progress
        self.what = what
        self.total_levels = total_levels
        self.rows: list[Any] = []

    def level_started(self, level: int, total: int, recorders: list[LevelRecorder]) -> None:
        if self.progress is not None:
            self.progress.start_step(f"{self.what} {level:,}", total, lambda: sum(r.count for r in recorders))

    def level_finished(self, result: LevelResult) -> None:
        self.writer.write_row(asdict(result.stats))
        self.writer.write_quantiles(result.stats.level, result.quantiles)
        self.rows.append(result.stats)
        self.writer.write_metadata(levels_completed=len(self.rows))
        if self.progress is None:
            # Not a terminal: one line per finished level, on stderr, for logs and pipes.
            print(f"asyncbench: {report.level_line(result.stats, self.what)} "
                  f"({len(self.rows)} of {self.total_levels} {self.what}s)", file=sys.stderr, flush=True)


def run_load(
    experiment: Experiment,
    url: str | None,
    spec: RequestSpec,
    server: ServerConfig,
    outputs: Outputs,
    min_success: float,
    settings: dict[str, Any],
    levels: list[int],
    run: Callable[[RequestSpec, Any], Coroutine[Any, Any, Any]],
    loop: str = "asyncio",
) -> None:
    """The flow of `trap` and `semaphore`: target, pre-flight, sweep, files, table, charts."""
    from asyncbench.metrics import LevelStats
    from asyncbench.system import raise_nofile_limit

    prepare(url, outputs)
    console = report.make_console()
    what = experiment.step
    nofile = raise_nofile_limit()
    if levels[-1] + 64 > nofile:
        console.print(
            f"[yellow]warning: {what} {levels[-1]:,} needs about {levels[-1] + 64:,} open files but the "
            f"limit is {nofile:,}: requests beyond it fail with 'Too many open files' "
            "(raise the hard limit: ulimit -Hn)[/]"
        )
    with target(url, server) as target_url:
        spec.url = target_url
        detail = preflight_or_fail(spec, loop)
        config = {
            **settings,
            "method": spec.method,
            "headers": [redact_header(f"{k}: {v}") for k, v in spec.headers.items()],
            "timeout_s": spec.timeout,
            "retries": spec.retries,
            "min_success": min_success,
            "engine": spec.engine,
            "loop": loop,
            "insecure": spec.insecure,
        }
        metadata = _metadata(experiment.name, url, target_url, server, config, detail, engine=spec.engine,
                             levels_completed=0)
        with ResultsWriter(outputs.results_dir, experiment.name, LevelStats.columns(), metadata, datetime.now(),
                           latency_file=True) as writer:
            progress = report.SweepProgress(console) if console.is_terminal else None
            events = LoadEvents(writer, progress, what, len(levels))
            interrupted = run_steps(progress, run(spec, events), loop)
            rows = events.rows
            sweet = metrics.sweet_spot(rows, min_success)
            notes = [n for r in rows for n in metrics.warnings_for(r, min_success, what)]
            writer.write_metadata(
                status="interrupted" if interrupted else "complete",
                finished_at=datetime.now().isoformat(timespec="seconds"),
                sweet_spot=None if sweet is None else {
                    "level": sweet.level,
                    "goodput_rps": sweet.goodput_rps,
                    "success_rate": sweet.success_rate,
                    "latency_p99_s": sweet.latency_p99_s,
                    "reliable": not sweet.client_limited,
                },
                client_limited_levels=[r.level for r in rows if r.client_limited],
                warnings=notes,
            )
            title = (
                f"{experiment.name}: {'embedded server' if url is None else redact_url(target_url)} — "
                f"{'interrupted, ' if interrupted else ''}{len(rows)} {what}{'s' if len(rows) != 1 else ''}"
            )
            console.print(report.level_table(rows, sweet, title, what, experiment.queue_wait))
            console.print(report.verdict(rows, sweet, experiment.verdict_word, min_success, experiment.collapses))
            block = report.warnings_block(notes)
            if block is not None:
                console.print(block)
    finish(console, writer, [], outputs.plots_dir, bool(rows), interrupted, f"{what}s", min_success)


# --- pipeline ----------------------------------------------------------------------------------


class PipelineEvents:
    """Wires the pipeline's run events to the results writer and the progress display."""

    def __init__(self, writer: ResultsWriter, progress: Any, total: int) -> None:
        self.writer = writer
        self.progress = progress
        self.total = total
        self.rows: list[Any] = []

    def pair_started(self, input_mb: float, batch_size: int, concurrency: int, expected: int,
                     progress: list[int]) -> None:
        if self.progress is not None:
            self.progress.start_step(f"{metrics.fmt_mb(input_mb)} MB, batch {batch_size}, concurrency {concurrency}",
                                     expected, lambda: progress[0])

    def pair_finished(self, result: Any) -> None:
        self.writer.write_row(asdict(result))
        self.rows.append(result)
        self.writer.write_metadata(pairs_completed=len(self.rows))
        if self.progress is None:
            print(f"asyncbench: batch {result.batch_size}, concurrency {result.concurrency}, "
                  f"{metrics.fmt_mb(result.input_mb)} MB done: {result.chunks:,} chunks, "
                  f"{result.throughput_cps:,.1f} chunks/s, {result.success_rate * 100:.1f} % ok, "
                  f"peak traced {result.peak_traced_mb:.2f} MB ({len(self.rows)} of {self.total} runs)",
                  file=sys.stderr, flush=True)


@dataclass
class PipelineRequest:
    """The validated settings of one `pipeline` command."""

    input_file: Path | None
    sizes: list[float]  # --generate-mb sizes (empty with --input)
    chunk_bytes: int
    batch_sizes: list[int]
    concurrency: list[int]
    output: Path | None
    headers: dict[str, str]
    timeout: float
    retries: int
    cooldown: float

    @property
    def runs(self) -> int:
        return (1 if self.input_file else len(self.sizes)) * len(self.batch_sizes) * len(self.concurrency)


def run_pipeline(url: str | None, server: ServerConfig, outputs: Outputs, req: PipelineRequest,
                 loop: str = "asyncio") -> None:
    """Stream the input(s) through every (batch size, concurrency) pair; table, findings, charts."""
    from asyncbench.experiments import pipeline as experiment
    from asyncbench.experiments.load import RequestSpec

    prepare(url, outputs)
    console = report.make_console()
    with tempfile.TemporaryDirectory(prefix="asyncbench-") as scratch, target(url, server) as target_url:
        endpoint = target_url.rstrip("/") + "/embed" if url is None else target_url
        inputs: list[tuple[Path, float]] = []
        if req.input_file is not None:
            inputs.append((req.input_file, req.input_file.stat().st_size / (1024 * 1024)))
        for size in req.sizes:
            path = Path(scratch) / f"generated-{size:g}mb.txt"
            experiment.generate_text(path, size)
            inputs.append((path, size))
        detail = preflight_or_fail(RequestSpec(
            url=endpoint, method="POST", headers={**req.headers, "Content-Type": "application/json"},
            data=b'{"id": -1, "text": "asyncbench pre-flight"}', timeout=req.timeout), loop)
        config = {
            "input": str(req.input_file) if req.input_file else None,
            "generate_mb": req.sizes or None,
            "chunk_bytes": req.chunk_bytes, "batch_sizes": req.batch_sizes, "concurrency": req.concurrency,
            "retries": req.retries, "timeout_s": req.timeout, "cooldown_s": req.cooldown, "loop": loop,
            "headers": [redact_header(f"{k}: {v}") for k, v in req.headers.items()],
        }
        metadata = _metadata(experiment.EXPERIMENT.name, url, endpoint, server, config, detail, pairs_completed=0)
        columns = [f.name for f in fields(experiment.PairResult)]
        with ResultsWriter(outputs.results_dir, experiment.EXPERIMENT.name, columns, metadata, datetime.now()) as writer:
            output_for = {}
            for _, size in inputs:
                for b in req.batch_sizes:
                    for c in req.concurrency:
                        suffix = f"-{size:g}mb" if len(inputs) > 1 else ""
                        output_for[(size, b, c)] = (
                            req.output or outputs.results_dir / f"{writer.stem}{suffix}-b{b}-c{c}.jsonl"
                        )
            pipeline_config = experiment.PipelineConfig(
                request=experiment.PipelineSpec(url=endpoint, headers=req.headers, timeout=req.timeout,
                                                retries=req.retries),
                inputs=inputs, chunk_bytes=req.chunk_bytes, batch_sizes=req.batch_sizes,
                concurrency=req.concurrency, output_for=output_for, cooldown=req.cooldown,
            )
            progress = report.SweepProgress(console) if console.is_terminal else None
            events = PipelineEvents(writer, progress, req.runs)
            interrupted = run_steps(progress, experiment.run(pipeline_config, events), loop)
            rows = events.rows
            findings = metrics.pipeline_findings(rows)
            writer.write_metadata(
                status="interrupted" if interrupted else "complete",
                finished_at=datetime.now().isoformat(timespec="seconds"),
                findings=findings,
                outputs=[str(p) for p in output_for.values()],
            )
            source = f"{req.input_file}" if req.input_file else "generated text"
            title = (f"pipeline: {source} → {'embedded server /embed' if url is None else redact_url(endpoint)}"
                     f"{' — interrupted' if interrupted else ''}")
            console.print(report.pipeline_table(rows, title))
            for line in findings:
                console.print(line)
            if rows and not findings:
                best = max(rows, key=lambda r: r.throughput_cps)
                console.print(
                    f"{best.chunks:,} chunks in {best.elapsed_s:.1f} s at {best.success_rate * 100:.1f} % success; "
                    f"peak traced memory {best.peak_traced_mb:.2f} MB above baseline"
                )
    finish(console, writer, sorted({Path(r.output) for r in rows}), outputs.plots_dir, bool(rows),
           interrupted, "runs")


# --- threads -----------------------------------------------------------------------------------


def run_threads(url: str | None, server: ServerConfig, outputs: Outputs, tasks: int, sleep: float,
                timeout: float) -> None:
    """The four phases; a table per phase as it finishes, the summary, the verdict, the timeline."""
    from asyncbench.experiments import threads as experiment
    from asyncbench.experiments.load import RequestSpec

    prepare(url, outputs)
    console = report.make_console()
    with target(url, server) as target_url:
        detail = preflight_or_fail(RequestSpec(url=target_url, timeout=timeout))
        config = {"tasks": tasks, "sleep_s": sleep, "timeout_s": timeout,
                  "to_thread_workers": tasks, "default_executor_workers": experiment.default_pool_size()}
        metadata = _metadata(experiment.EXPERIMENT.name, url, target_url, server, config, detail)
        columns = [f.name for f in fields(experiment.TaskRecord)]
        summaries: list[metrics.PhaseSummary] = []
        coroutine_threads: set[str] = set()
        with ResultsWriter(outputs.results_dir, experiment.EXPERIMENT.name, columns, metadata, datetime.now()) as writer:

            def on_phase(phase: Any) -> None:
                for record in phase.records:
                    writer.write_row(asdict(record))
                    coroutine_threads.add(record.coroutine_thread)
                summaries.append(metrics.summarize_phase(
                    phase.phase, [r.duration_s for r in phase.records], [r.thread_name for r in phase.records],
                    phase.wall_s, phase.loop_lag_max_s))
                console.print(report.phase_table(phase.phase, phase.records))

            threads_config = experiment.ThreadsConfig(url=target_url, tasks=tasks, sleep=sleep, timeout=timeout)
            interrupted = run_steps(None, experiment.run(threads_config, on_phase), blocking=True)
            console.print(report.phase_summary_table(summaries))
            verdict = metrics.threads_verdict(summaries, coroutine_threads) if summaries else "no phase finished"
            console.print(verdict, style="bold")
            if any(s.phase == "to_thread" for s in summaries) and tasks > experiment.default_pool_size():
                console.print(
                    f"note: to_thread ran on a pool of {tasks} workers; asyncio's default pool has "
                    f"{experiment.default_pool_size()} (min(32, CPUs + 4)) and would run {tasks} tasks in waves",
                    style="yellow",
                )
            writer.write_metadata(
                status="interrupted" if interrupted else "complete",
                finished_at=datetime.now().isoformat(timespec="seconds"),
                summary=[asdict(s) for s in summaries],
                verdict=verdict,
            )
    finish(console, writer, [], outputs.plots_dir, bool(summaries), interrupted, "phases")


# --- plot --------------------------------------------------------------------------------------


def plot_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    """Every chart for a folder: the newest run of each experiment, overlays, the comparison."""
    from asyncbench.experiments import registry, run_charts
    from asyncbench.experiments import semaphore as semaphore_lab
    from asyncbench.experiments import trap as trap_lab
    from asyncbench.results import find_runs

    experiments = registry()
    runs, skipped = find_runs(results_dir, experiments)
    for note in skipped:
        print(f"asyncbench: warning: {note}", file=sys.stderr)
    if not runs:
        raise OutputError(f"no asyncbench results to plot in {str(results_dir)!r}")
    check_output_dir(out, "--out")
    from asyncbench.plots import comparison_chart, overlay_charts

    console = report.make_console()
    newest: dict[str, Any] = {}
    by_experiment: dict[str, list[Any]] = {}
    for run in runs:  # oldest first: the last one seen is the newest
        newest[run.experiment] = run
        by_experiment.setdefault(run.experiment, []).append(run)
    written: list[Path] = []
    for name, run in newest.items():
        written += run_charts(run, out)
        experiment = experiments[name]
        if all_runs and experiment.load_sweep and len(by_experiment[name]) > 1:
            written += overlay_charts(by_experiment[name], out, experiment.axis_label)
    # The lab's comparison: the same load all at once (Lab 2.2) and through a semaphore (Lab 2.3).
    trap_name, sem_name = trap_lab.EXPERIMENT.name, semaphore_lab.EXPERIMENT.name
    if trap_name in newest and sem_name in newest:
        trap_run, sem_run = newest[trap_name], newest[sem_name]
        name = f"{trap_name}-vs-{sem_name}-{sem_run.stem.removeprefix(sem_name + '-')}"
        written.append(comparison_chart(trap_run, sem_run, out, name))
        console.print(report.comparison_table(trap_run.frame, sem_run.frame))
    used = ", ".join(f"{r.stem}" for r in newest.values())
    overlaid = sum(len(runs) for name, runs in by_experiment.items() if experiments[name].load_sweep)
    console.print(f"charted {used}" + (f" and overlaid {overlaid} load runs" if all_runs else ""))
    console.print(f"wrote {len(written)} charts:")
    for path in written:
        console.print(f"  {path}", soft_wrap=True)
