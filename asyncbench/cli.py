"""The command line: parses and validates, calls an experiment, wires its results to the outputs.

This is the only module that prints errors and sets exit codes (see `main`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncbench import __version__
from asyncbench.errors import AsyncbenchError, ExitCode, OutputError, TargetError, UsageError
from asyncbench.options import (
    MAX_REQUESTS,
    check_range,
    check_target_url,
    parse_data,
    parse_headers,
    parse_int_list,
    parse_method,
)

if TYPE_CHECKING:
    from asyncbench.experiments.load import LevelResult, RequestSpec
    from asyncbench.metrics import LevelRecorder
    from asyncbench.server import ServerConfig

app = typer.Typer(
    name="asyncbench",
    help="A concurrency lab for HTTP services: sweep concurrency, explain the result, "
    "find the sweet spot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"asyncbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """asyncbench: how much concurrency should I use, and what happens when I use too much?"""


# --- options shared by the experiment commands -------------------------------------------------

_REQ = "Request"
_OUT = "Output"
_SRV = "Embedded server (when no URL is given)"

UrlArg = Annotated[
    str | None,
    typer.Argument(help="Target URL, on a loopback address. Omitted: the embedded server.", show_default=False),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Total time allowed per request, seconds.", rich_help_panel=_REQ)]
MethodOpt = Annotated[str, typer.Option("--method", "-X", help="HTTP method.", rich_help_panel=_REQ)]
HeaderOpt = Annotated[
    list[str] | None,
    typer.Option("--header", "-H", help="Request header 'Name: value' (repeatable). Secrets are redacted from results.", rich_help_panel=_REQ, show_default=False),
]
DataOpt = Annotated[str | None, typer.Option("--data", "-d", help="Request body; '@FILE' reads a file.", rich_help_panel=_REQ, show_default=False)]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Retries per request (timeouts, connection errors, 5xx, 429).", rich_help_panel=_REQ)]
CooldownOpt = Annotated[float, typer.Option("--cooldown", help="Pause between levels, seconds, so the target drains.", rich_help_panel=_REQ)]
RoundsOpt = Annotated[int, typer.Option("--rounds", help="Run each level this many times; report the median and the spread.", rich_help_panel=_REQ)]
MinSuccessOpt = Annotated[float, typer.Option("--min-success", help="Success-rate floor (0..1) for the sweet spot.", rich_help_panel=_OUT)]
ResultsDirOpt = Annotated[Path, typer.Option("--results-dir", help="Folder for CSV/JSON results.", rich_help_panel=_OUT)]
PlotsDirOpt = Annotated[Path, typer.Option("--plots-dir", help="Folder for charts.", rich_help_panel=_OUT)]
NoPlotOpt = Annotated[bool, typer.Option("--no-plot", help="Skip the charts.", rich_help_panel=_OUT)]
LoopOpt = Annotated[str, typer.Option("--loop", help="Event loop of the load generator: asyncio or uvloop.", rich_help_panel=_REQ)]
SrvLatencyOpt = Annotated[float, typer.Option("--server-latency", help="Service time per request, seconds.", rich_help_panel=_SRV)]
SrvCapacityOpt = Annotated[int, typer.Option("--server-capacity", help="Requests served at once.", rich_help_panel=_SRV)]
SrvQueueOpt = Annotated[int, typer.Option("--server-queue", help="Requests that may wait; past that, 503.", rich_help_panel=_SRV)]
SrvErrorRateOpt = Annotated[float, typer.Option("--server-error-rate", help="Fraction answered 500 (0..1).", rich_help_panel=_SRV)]


def _request_spec(timeout: float, method: str, header: list[str] | None, data: str | None, retries: int) -> RequestSpec:
    from asyncbench.experiments.load import RequestSpec

    check_range("--timeout", timeout, 0, low_inclusive=False)
    check_range("--retries", retries, 0, 100)
    return RequestSpec(
        url="", method=parse_method(method), headers=parse_headers(header),
        data=parse_data(data), timeout=timeout, retries=retries,
    )


def _server_config(latency: float, capacity: int, queue: int, error_rate: float) -> ServerConfig:
    from asyncbench.server import ServerConfig

    config = ServerConfig(latency=latency, capacity=capacity, queue=queue, error_rate=error_rate)
    try:
        config.validate()
    except ValueError as exc:
        raise UsageError(str(exc).replace("invalid --", "invalid --server-")) from None
    return config


@contextmanager
def _target(url: str | None, server: ServerConfig) -> Iterator[str]:
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


def _check_output_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {option} {str(path)!r}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {str(path)!r} is not writable")


def _run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine with asyncbench's own Ctrl-C (and SIGTERM) handling.

    The first signal cancels the run — closing its connections, keeping what was written — and
    raises KeyboardInterrupt; a second one exits at once. Installed explicitly, because asyncio's
    own handler is skipped when SIGINT was ignored at start (as for a background job).
    """

    import asyncio

    async def guarded() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        signalled = False

        def on_signal() -> None:
            nonlocal signalled
            if signalled:
                os._exit(int(ExitCode.INTERRUPTED))
            signalled = True
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await coro
        except asyncio.CancelledError:
            if signalled:
                raise KeyboardInterrupt from None
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    if _LOOP["name"] == "uvloop":
        import uvloop

        return uvloop.run(guarded())
    return asyncio.run(guarded())


# The event loop the experiments run on, set from --loop by each experiment command.
_LOOP = {"name": "asyncio"}


def _select_loop(name: str) -> None:
    if name not in ("asyncio", "uvloop"):
        raise UsageError(f"invalid --loop {name!r}: expected asyncio or uvloop")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise UsageError("--loop uvloop needs the uvloop package (pip install uvloop)") from None
    _LOOP["name"] = name


class _LoadEvents:
    """Wires an experiment's level events to the results writer and the progress display."""

    def __init__(self, writer: Any, progress: Any, what: str, total_levels: int) -> None:
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
            from asyncbench.report import level_line

            print(f"asyncbench: {level_line(result.stats)} ({len(self.rows)} of {self.total_levels} {self.what}s)",
                  file=sys.stderr, flush=True)


def _run_load(
    experiment: str,
    url: str | None,
    spec: RequestSpec,
    server: ServerConfig,
    results_dir: Path,
    plots_dir: Path | None,
    min_success: float,
    settings: dict[str, Any],
    run: Callable[[RequestSpec, Any], Coroutine[Any, Any, Any]],
) -> None:
    """The shared flow of `trap` and `semaphore`: target, pre-flight, sweep, files, table."""
    from asyncbench import metrics, report
    from asyncbench.experiments.load import preflight
    from asyncbench.metrics import LevelStats
    from asyncbench.results import ResultsWriter, redact_header, redact_url, run_metadata
    from asyncbench.system import raise_nofile_limit

    check_range("--min-success", min_success, 0, 1)
    _check_output_dir(results_dir, "--results-dir")
    if plots_dir is not None:
        _check_output_dir(plots_dir, "--plots-dir")
    console = report.make_console()
    what = "limit" if experiment == "semaphore" else "level"
    nofile = raise_nofile_limit()
    biggest = max(settings.get("levels") or settings.get("limits") or [1])
    if biggest + 64 > nofile:
        console.print(
            f"[yellow]warning: {what} {biggest:,} needs about {biggest + 64:,} open files but the "
            f"limit is {nofile:,}: requests beyond it fail with 'Too many open files' "
            "(raise the hard limit: ulimit -Hn)[/]"
        )
    with _target(url, server) as target:
        spec.url = target
        ok, detail = _run_async(preflight(spec))
        if not ok:
            raise TargetError(f"target {redact_url(target)} is unreachable: {detail}")
        started = datetime.now()
        metadata = run_metadata(
            experiment, ["asyncbench", *sys.argv[1:]], target,
            target_kind="url" if url else "embedded",
            server=asdict(server) if url is None else None,
            config={
                **settings,
                "method": spec.method,
                "headers": [redact_header(f"{k}: {v}") for k, v in spec.headers.items()],
                "timeout_s": spec.timeout,
                "retries": spec.retries,
                "min_success": min_success,
            },
            preflight=detail,
            levels_completed=0,
        )
        with ResultsWriter(results_dir, experiment, LevelStats.columns(), metadata, started, latency_file=True) as writer:
            progress = report.SweepProgress(console) if console.is_terminal else None
            events = _LoadEvents(writer, progress, what, len(settings.get("levels") or settings.get("limits") or []))
            interrupted = _run_steps(progress, run(spec, events))
            rows = events.rows
            sweet = metrics.sweet_spot(rows, min_success)
            notes = [n for r in rows for n in metrics.warnings_for(r, min_success)]
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
                f"{experiment}: {'embedded server' if url is None else redact_url(target)} — "
                f"{'interrupted, ' if interrupted else ''}{len(rows)} {what}{'s' if len(rows) != 1 else ''}"
            )
            console.print(report.level_table(rows, sweet, title, show_queue_wait=experiment == "semaphore"))
            console.print(report.verdict(rows, sweet, experiment, min_success))
            block = report.warnings_block(notes)
            if block is not None:
                console.print(block)
        _finish(console, writer, [], plots_dir, bool(rows), interrupted, f"{what}s", min_success)


def _run_steps(progress: Any, coro: Coroutine[Any, Any, Any]) -> bool:
    """Run an experiment under the progress display; True when Ctrl-C interrupted it."""
    try:
        if progress is not None:
            with progress:
                _run_async(coro)
        else:
            _run_async(coro)
    except KeyboardInterrupt:
        return True
    return False


def _finish(
    console: Any, writer: Any, extra_files: list[Path], plots_dir: Path | None, any_rows: bool,
    interrupted: bool, steps: str, min_success: float | None = None,
) -> None:
    """List the files written, render the charts, and exit 130 if the run was interrupted."""
    files = [str(f) for f in (writer.csv_path, writer.json_path, writer.latency_path) if f]
    if len(extra_files) > 3:  # say where they are rather than list a screenful
        files.append(f"{len(extra_files)} files {writer.csv_path.parent / writer.stem}-*{extra_files[0].suffix}")
    else:
        files += [str(f) for f in extra_files]
    console.print("results: " + "\n         ".join(files), soft_wrap=True)
    if plots_dir is not None and any_rows:
        from asyncbench.plots import run_charts
        from asyncbench.results import read_run

        charts = run_charts(read_run(writer.csv_path), plots_dir, min_success)
        console.print("charts:  " + "\n         ".join(str(p) for p in charts), soft_wrap=True)
    if interrupted:
        print(f"asyncbench: interrupted; the finished {steps} are saved", file=sys.stderr)
        raise typer.Exit(int(ExitCode.INTERRUPTED))


@app.command(rich_help_panel="Experiments")
def trap(
    url: UrlArg = None,
    levels: Annotated[str, typer.Option("--levels", help="Concurrency levels, comma-separated.")] = "1,5,10,25,50,100,200,500,1000,2000",
    requests_per_level: Annotated[int | None, typer.Option("--requests-per-level", help="Requests per level. Default: the level itself, one burst.", show_default=False)] = None,
    rounds: RoundsOpt = 1,
    timeout: TimeoutOpt = 10.0,
    method: MethodOpt = "GET",
    header: HeaderOpt = None,
    data: DataOpt = None,
    retries: RetriesOpt = 0,
    cooldown: CooldownOpt = 1.0,
    loop: LoopOpt = "asyncio",
    min_success: MinSuccessOpt = 0.99,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    server_latency: SrvLatencyOpt = 0.05,
    server_capacity: SrvCapacityOpt = 100,
    server_queue: SrvQueueOpt = 400,
    server_error_rate: SrvErrorRateOpt = 0.0,
) -> None:
    """The concurrency trap: at each level, that many simultaneous requests with no limit.

    Throughput climbs with the level until the server is full; then it sheds requests and the
    success rate collapses.
    """
    from asyncbench.experiments import trap as experiment

    level_list = parse_int_list("--levels", levels)
    if requests_per_level is not None:
        check_range("--requests-per-level", requests_per_level, 1, MAX_REQUESTS)
        if requests_per_level < level_list[-1]:
            raise UsageError(
                f"invalid --requests-per-level {requests_per_level}: level {level_list[-1]} needs at least "
                f"{level_list[-1]} requests to have them all in flight at once"
            )
    check_range("--rounds", rounds, 1, 100)
    check_range("--cooldown", cooldown, 0, 600)
    spec = _request_spec(timeout, method, header, data, retries)
    _select_loop(loop)
    server = _server_config(server_latency, server_capacity, server_queue, server_error_rate)

    def run(spec: RequestSpec, events: Any) -> Coroutine[Any, Any, Any]:
        config = experiment.TrapConfig(spec, level_list, requests_per_level, rounds, cooldown)
        return experiment.run(config, events)

    settings = {"levels": level_list, "requests_per_level": requests_per_level, "rounds": rounds, "cooldown_s": cooldown}
    _run_load("trap", url, spec, server, results_dir, None if no_plot else plots_dir, min_success, settings, run)


@app.command(rich_help_panel="Experiments")
def semaphore(
    url: UrlArg = None,
    limits: Annotated[str, typer.Option("--limits", help="Semaphore limits, comma-separated.")] = "10,25,50,100,200,500",
    requests: Annotated[int, typer.Option("--requests", help="Requests per limit, all submitted at once.")] = 1000,
    rounds: RoundsOpt = 1,
    timeout: TimeoutOpt = 10.0,
    method: MethodOpt = "GET",
    header: HeaderOpt = None,
    data: DataOpt = None,
    retries: RetriesOpt = 0,
    cooldown: CooldownOpt = 1.0,
    loop: LoopOpt = "asyncio",
    min_success: MinSuccessOpt = 0.99,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    server_latency: SrvLatencyOpt = 0.05,
    server_capacity: SrvCapacityOpt = 100,
    server_queue: SrvQueueOpt = 400,
    server_error_rate: SrvErrorRateOpt = 0.0,
) -> None:
    """Controlled concurrency: the same load through an asyncio.Semaphore of each limit.

    Requests wait in the client for a slot (the wait is measured apart from latency) instead
    of overloading the server: success stays at 100 %.
    """
    from asyncbench.experiments import semaphore as experiment

    limit_list = parse_int_list("--limits", limits)
    check_range("--requests", requests, 1, MAX_REQUESTS)
    if limit_list[-1] > requests:
        print(f"asyncbench: warning: --requests {requests} is below limit {limit_list[-1]:,}: "
              f"at most {requests} requests can be in flight at once", file=sys.stderr)
    check_range("--rounds", rounds, 1, 100)
    check_range("--cooldown", cooldown, 0, 600)
    spec = _request_spec(timeout, method, header, data, retries)
    _select_loop(loop)
    server = _server_config(server_latency, server_capacity, server_queue, server_error_rate)

    def run(spec: RequestSpec, events: Any) -> Coroutine[Any, Any, Any]:
        config = experiment.SemaphoreConfig(spec, limit_list, requests, rounds, cooldown)
        return experiment.run(config, events)

    settings = {"limits": limit_list, "requests": requests, "rounds": rounds, "cooldown_s": cooldown}
    _run_load("semaphore", url, spec, server, results_dir, None if no_plot else plots_dir, min_success, settings, run)



class _PipelineEvents:
    """Wires the pipeline's pair events to the results writer and the progress display."""

    def __init__(self, writer: Any, progress: Any, total: int) -> None:
        self.writer = writer
        self.progress = progress
        self.total = total
        self.rows: list[Any] = []

    def pair_started(self, input_mb: float, batch_size: int, concurrency: int, expected: int,
                     progress: list[int]) -> None:
        if self.progress is not None:
            self.progress.start_step(f"{input_mb:g} MB, batch {batch_size}, concurrency {concurrency}",
                                     expected, lambda: progress[0])

    def pair_finished(self, result: Any) -> None:
        self.writer.write_row(asdict(result))
        self.rows.append(result)
        self.writer.write_metadata(pairs_completed=len(self.rows))
        if self.progress is None:
            print(f"asyncbench: batch {result.batch_size}, concurrency {result.concurrency}, "
                  f"{result.input_mb:g} MB done: {result.chunks:,} chunks, "
                  f"{result.throughput_cps:,.1f} chunks/s, {result.success_rate * 100:.1f} % ok, "
                  f"peak traced {result.peak_traced_mb:.2f} MB ({len(self.rows)} of {self.total} runs)",
                  file=sys.stderr, flush=True)


def _parse_sizes(text: str) -> list[float]:
    sizes: list[float] = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"invalid --generate-mb value {item.strip()!r} in {text!r}: expected sizes in MB") from None
        check_range("--generate-mb", value, 0, 4096, low_inclusive=False)
        sizes.append(value)
    return sorted(set(sizes))


@app.command(rich_help_panel="Experiments")
def pipeline(
    url: Annotated[str | None, typer.Argument(help="Embedding API URL (loopback). Omitted: the embedded server's /embed.", show_default=False)] = None,
    input_file: Annotated[Path | None, typer.Option("--input", help="Text file to ingest.", show_default=False)] = None,
    generate_mb: Annotated[str | None, typer.Option("--generate-mb", help="Synthetic input of this many MB (comma list: one run per size). Default 1 without --input.", show_default=False)] = None,
    chunk_bytes: Annotated[int, typer.Option("--chunk-bytes", help="Chunk size in bytes (UTF-8 characters are never split).")] = 1024,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes, comma-separated.")] = "50",
    concurrency: Annotated[str, typer.Option("--concurrency", help="Requests in flight, comma-separated.")] = "25",
    output: Annotated[Path | None, typer.Option("--output", help="JSONL file for the results (only when one combination runs).", show_default=False)] = None,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = 10.0,
    header: HeaderOpt = None,
    cooldown: CooldownOpt = 1.0,
    loop: LoopOpt = "asyncio",
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    server_latency: SrvLatencyOpt = 0.05,
    server_capacity: SrvCapacityOpt = 100,
    server_queue: SrvQueueOpt = 400,
    server_error_rate: SrvErrorRateOpt = 0.0,
) -> None:
    """Stream a file in chunks to an embedding API in batches, in flat memory (Lab 2.5).

    Every (batch size, concurrency) pair runs; results stream to a JSONL file per pair.
    """
    import tempfile

    from asyncbench import metrics, report
    from asyncbench.experiments import pipeline as experiment
    from asyncbench.experiments.load import RequestSpec, preflight
    from asyncbench.results import ResultsWriter, redact_header, redact_url, run_metadata

    if input_file is not None and generate_mb is not None:
        raise UsageError("use --input FILE or --generate-mb N, not both")
    check_range("--chunk-bytes", chunk_bytes, 4, 16 * 1024 * 1024)
    batch_list = parse_int_list("--batch-sizes", batch_sizes, maximum=100_000)
    conc_list = parse_int_list("--concurrency", concurrency, maximum=10_000)
    check_range("--retries", retries, 0, 100)
    check_range("--timeout", timeout, 0, low_inclusive=False)
    check_range("--cooldown", cooldown, 0, 600)
    headers = parse_headers(header)
    _select_loop(loop)
    server = _server_config(server_latency, server_capacity, server_queue, server_error_rate)
    sizes = _parse_sizes(generate_mb) if generate_mb is not None else ([] if input_file else [1.0])
    if input_file is not None:
        try:
            with open(input_file, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise UsageError(f"cannot read --input {str(input_file)!r}: {exc.strerror or exc}") from None
        if input_file.is_dir():
            raise UsageError(f"cannot read --input {str(input_file)!r}: it is a folder")
    runs = (1 if input_file else len(sizes)) * len(batch_list) * len(conc_list)
    if output is not None and runs > 1:
        raise UsageError(f"--output {str(output)!r} takes one run, but {runs} combinations were asked for")
    _check_output_dir(results_dir, "--results-dir")
    if plots_dir is not None and not no_plot:
        _check_output_dir(plots_dir, "--plots-dir")
    console = report.make_console()

    with tempfile.TemporaryDirectory(prefix="asyncbench-") as scratch, _target(url, server) as target:
        endpoint = target.rstrip("/") + "/embed" if url is None else target
        inputs: list[tuple[Path, float]] = []
        if input_file is not None:
            inputs.append((input_file, input_file.stat().st_size / (1024 * 1024)))
        for size in sizes:
            path = Path(scratch) / f"generated-{size:g}mb.txt"
            experiment.generate_text(path, size)
            inputs.append((path, size))
        probe = RequestSpec(url=endpoint, method="POST", headers={**headers, "Content-Type": "application/json"},
                            data=b'{"id": -1, "text": "asyncbench pre-flight"}', timeout=timeout)
        ok, detail = _run_async(preflight(probe))
        if not ok:
            raise TargetError(f"target {redact_url(endpoint)} is unreachable: {detail}")
        started = datetime.now()
        metadata = run_metadata(
            "pipeline", ["asyncbench", *sys.argv[1:]], endpoint,
            target_kind="url" if url else "embedded",
            server=asdict(server) if url is None else None,
            config={
                "input": str(input_file) if input_file else None,
                "generate_mb": sizes or None,
                "chunk_bytes": chunk_bytes, "batch_sizes": batch_list, "concurrency": conc_list,
                "retries": retries, "timeout_s": timeout, "cooldown_s": cooldown,
                "headers": [redact_header(f"{k}: {v}") for k, v in headers.items()],
            },
            preflight=detail,
            pairs_completed=0,
        )
        columns = [f.name for f in fields(experiment.PairResult)]
        with ResultsWriter(results_dir, "pipeline", columns, metadata, started) as writer:
            several_inputs = len(inputs) > 1
            output_for = {}
            for _, size in inputs:
                for b in batch_list:
                    for c in conc_list:
                        suffix = f"-{size:g}mb" if several_inputs else ""
                        output_for[(size, b, c)] = output or results_dir / f"{writer.stem}{suffix}-b{b}-c{c}.jsonl"
            config = experiment.PipelineConfig(
                request=experiment.PipelineSpec(url=endpoint, headers=headers, timeout=timeout, retries=retries),
                inputs=inputs, chunk_bytes=chunk_bytes, batch_sizes=batch_list, concurrency=conc_list,
                output_for=output_for, cooldown=cooldown,
            )
            progress = report.SweepProgress(console) if console.is_terminal else None
            events = _PipelineEvents(writer, progress, runs)
            interrupted = _run_steps(progress, experiment.run(config, events))
            rows = events.rows
            findings = metrics.pipeline_findings(rows)
            writer.write_metadata(
                status="interrupted" if interrupted else "complete",
                finished_at=datetime.now().isoformat(timespec="seconds"),
                findings=findings,
                outputs=[str(p) for p in output_for.values()],
            )
            source = f"{input_file}" if input_file else "generated text"
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
            jsonl = sorted({Path(r.output) for r in rows})
        _finish(console, writer, jsonl, None if no_plot else plots_dir, bool(rows), interrupted, "runs")


@app.command(rich_help_panel="Experiments")
def threads(
    url: UrlArg = None,
    tasks: Annotated[int, typer.Option("--tasks", help="Coroutines per phase.")] = 10,
    sleep: Annotated[float, typer.Option("--sleep", help="Seconds each task sleeps (blocking, non-blocking, to_thread).")] = 0.2,
    timeout: TimeoutOpt = 10.0,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    server_latency: SrvLatencyOpt = 0.05,
) -> None:
    """asyncio is one thread: concurrent, not parallel (Lab 2.1).

    Four phases of coroutines — awaiting a GET, calling time.sleep, awaiting asyncio.sleep,
    awaiting asyncio.to_thread — with the thread each ran on and the event loop's worst lag.
    """
    from asyncbench import metrics, report
    from asyncbench.experiments import threads as experiment
    from asyncbench.experiments.load import RequestSpec, preflight
    from asyncbench.results import ResultsWriter, redact_url, run_metadata

    check_range("--tasks", tasks, 1, 1000)
    check_range("--sleep", sleep, 0, 10)
    check_range("--timeout", timeout, 0, low_inclusive=False)
    server = _server_config(server_latency, 100, 400, 0.0)
    _check_output_dir(results_dir, "--results-dir")
    if not no_plot:
        _check_output_dir(plots_dir, "--plots-dir")
    console = report.make_console()
    with _target(url, server) as target:
        ok, detail = _run_async(preflight(RequestSpec(url=target, timeout=timeout)))
        if not ok:
            raise TargetError(f"target {redact_url(target)} is unreachable: {detail}")
        metadata = run_metadata(
            "threads", ["asyncbench", *sys.argv[1:]], target,
            target_kind="url" if url else "embedded",
            server=asdict(server) if url is None else None,
            config={"tasks": tasks, "sleep_s": sleep, "timeout_s": timeout,
                    "to_thread_workers": tasks, "default_executor_workers": experiment.default_pool_size()},
            preflight=detail,
        )
        columns = [f.name for f in fields(experiment.TaskRecord)]
        summaries: list[Any] = []
        with ResultsWriter(results_dir, "threads", columns, metadata, datetime.now()) as writer:

            def on_phase(phase: Any) -> None:
                for record in phase.records:
                    writer.write_row(asdict(record))
                summaries.append(metrics.summarize_phase(
                    phase.phase, [r.duration_s for r in phase.records], [r.thread_name for r in phase.records],
                    phase.wall_s, phase.loop_lag_max_s))
                console.print(report.phase_table(phase.phase, phase.records))

            config = experiment.ThreadsConfig(url=target, tasks=tasks, sleep=sleep, timeout=timeout)
            interrupted = _run_steps(None, experiment.run(config, on_phase))
            console.print(report.phase_summary_table(summaries))
            coroutine_threads = {r["coroutine_thread"] for r in _read_rows(writer.csv_path)}
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
        _finish(console, writer, [], None if no_plot else plots_dir, bool(summaries), interrupted, "phases")


def _read_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@app.command(rich_help_panel="Tools")
def plot(
    results_dir: Annotated[Path, typer.Argument(help="Folder of results (CSV + JSON) to chart.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for the charts.")] = Path("plots"),
    all_runs: Annotated[bool, typer.Option("--all", help="Overlay every trap / semaphore run, not just the newest.")] = False,
) -> None:
    """Render every chart for a folder of results, and compare trap with semaphore."""
    from asyncbench import report
    from asyncbench.results import find_runs

    runs, skipped = find_runs(results_dir)
    for note in skipped:
        print(f"asyncbench: warning: {note}", file=sys.stderr)
    if not runs:
        raise OutputError(f"no asyncbench results to plot in {str(results_dir)!r}")
    _check_output_dir(out, "--out")
    from asyncbench.plots import comparison_chart, overlay_charts, run_charts

    console = report.make_console()
    newest: dict[str, Any] = {}
    by_experiment: dict[str, list[Any]] = {}
    for run in runs:  # oldest first: the last one seen is the newest
        newest[run.experiment] = run
        by_experiment.setdefault(run.experiment, []).append(run)
    written: list[Path] = []
    for experiment, run in newest.items():
        written += run_charts(run, out)
        if all_runs and experiment in ("trap", "semaphore") and len(by_experiment[experiment]) > 1:
            written += overlay_charts(by_experiment[experiment], out)
    if "trap" in newest and "semaphore" in newest:
        trap_run, sem_run = newest["trap"], newest["semaphore"]
        name = f"trap-vs-semaphore-{sem_run.stem.removeprefix('semaphore-')}"
        written.append(comparison_chart(trap_run, sem_run, out, name))
        console.print(report.comparison_table(trap_run.frame, sem_run.frame))
    used = ", ".join(f"{r.stem}" for r in newest.values())
    console.print(f"charted {used}" + (f" and {sum(map(len, by_experiment.values()))} runs overlaid" if all_runs else ""))
    console.print(f"wrote {len(written)} charts:")
    for path in written:
        console.print(f"  {path}", soft_wrap=True)



@app.command(rich_help_panel="Tools")
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one.")] = 8080,
    latency: Annotated[float, typer.Option(help="Service time per request, seconds.")] = 0.05,
    jitter: Annotated[float, typer.Option(help="Service time varies uniformly by ± this, seconds.")] = 0.0,
    capacity: Annotated[int, typer.Option(help="Requests served at once.")] = 100,
    queue: Annotated[int, typer.Option(help="Requests that may wait for a slot; past that, 503.")] = 400,
    error_rate: Annotated[float, typer.Option(help="Fraction of requests answered 500 (0..1).")] = 0.0,
    rate_limit: Annotated[float, typer.Option(help="Requests per second before 429 with Retry-After; 0 is off.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for the injected faults (reproducible runs).")] = None,
) -> None:
    """Run the embedded target server until Ctrl-C or SIGTERM."""
    from asyncbench.server import ServerConfig
    from asyncbench.server import serve as run_server

    config = ServerConfig(
        host=host, port=port, latency=latency, jitter=jitter, capacity=capacity, queue=queue,
        error_rate=error_rate, rate_limit=rate_limit, seed=seed,
    )

    try:
        config.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def ready(url: str) -> None:
        limit = f", rate limit {rate_limit:g} req/s" if rate_limit else ""
        print(
            f"asyncbench serve: listening on {url}  (capacity {capacity}, queue {queue}, "
            f"latency {latency:g} s ± {jitter:g}, error rate {error_rate:g}{limit})",
            flush=True,
        )
        print("  endpoints: any path (load), POST /embed, GET /stats, DELETE /stats", flush=True)

    try:
        import asyncio

        asyncio.run(run_server(config, ready))
    except OSError as exc:
        raise TargetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print("asyncbench serve: stopped", flush=True)


def main() -> None:
    """Console-script entry point: the one place where errors become messages and exit codes."""
    try:
        app()
    except AsyncbenchError as exc:
        print(f"asyncbench: error: {exc}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        print("asyncbench: interrupted", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug must not print a traceback
        if os.environ.get("ASYNCBENCH_DEBUG"):
            raise
        print(f"asyncbench: internal error: {type(exc).__name__}: {exc} "
              "(set ASYNCBENCH_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        sys.exit(int(ExitCode.RUN_FAILED))
