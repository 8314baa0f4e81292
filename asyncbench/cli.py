"""The command line: parses and validates every value, then hands a clean run to `runner`.

This is the only module that turns errors into messages and exit codes (see `main`).
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from asyncbench import __version__
from asyncbench.errors import AsyncbenchError, ExitCode, Interrupted, ObjectiveNotMet, TargetError, UsageError
from asyncbench.options import (
    MAX_REQUESTS,
    check_range,
    check_readable_file,
    check_utf8_args,
    parse_data,
    parse_headers,
    parse_int_list,
    parse_method,
)
from asyncbench.redact import redact_text

if TYPE_CHECKING:
    from asyncbench.experiments.load import RequestSpec
    from asyncbench.server import ServerConfig

class _NoHelpMetavar:
    """`--help` is a flag: typer 0.2x would show it as `--help <bool>`."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Command(_NoHelpMetavar, TyperCommand):
    pass


class _Group(_NoHelpMetavar, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    name="asyncbench",
    help="A concurrency lab for HTTP services: sweep concurrency, explain the result, "
    "find the sweet spot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _help(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the lines within each joined, so the help
    wraps at the terminal's width instead of where the source happened to break."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def command(panel: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command; Ctrl-C anywhere in it (typer would turn it into a silent exit 130)
    becomes `Interrupted`, which `main` reports."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            from asyncbench import signals

            signals.command_started()
            try:
                fn(*args, **kwargs)
            except KeyboardInterrupt:
                raise Interrupted("interrupted") from None
            signals.command_done()

        return app.command(cls=_Command, rich_help_panel=panel, help=_help(fn.__doc__))(run)

    return register


def _version(value: bool) -> None:
    if value:
        print(f"asyncbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", metavar="", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """asyncbench: how much concurrency should I use, and what happens when I use too much?"""


# --- options shared by the experiment commands -------------------------------------------------

_REQ = "Request"
_OUT = "Output"
_SRV = "Embedded server (when no URL is given)"
_SCALE = "Scale out"

UrlArg = Annotated[
    str | None,
    typer.Argument(metavar="URL", help="Target URL, on a loopback address. Omitted: the embedded server.", show_default=False),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Total time allowed per request, seconds.", rich_help_panel=_REQ)]
MethodOpt = Annotated[str, typer.Option("--method", "-X", help="HTTP method.", rich_help_panel=_REQ)]
HeaderOpt = Annotated[
    list[str] | None,
    typer.Option("--header", "-H", metavar="'NAME: VALUE'", help="Request header 'Name: value' (repeatable). Secrets are redacted from results.", rich_help_panel=_REQ, show_default=False),
]
DataOpt = Annotated[str | None, typer.Option("--data", "-d", help="Request body; '@FILE' reads a file.", rich_help_panel=_REQ, show_default=False)]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Retries per request (timeouts, connection errors, 5xx, 429).", rich_help_panel=_REQ)]
CooldownOpt = Annotated[float, typer.Option("--cooldown", help="Pause between levels, seconds, so the target drains.", rich_help_panel=_REQ)]
RoundsOpt = Annotated[int, typer.Option("--rounds", help="Run each level this many times; report the median and the spread.", rich_help_panel=_REQ)]
MinSuccessOpt = Annotated[float, typer.Option("--min-success", help="Success-rate floor (0..1) for the sweet spot.", rich_help_panel=_OUT)]
ResultsDirOpt = Annotated[Path, typer.Option("--results-dir", help="Folder for CSV/JSON results.", rich_help_panel=_OUT)]
PlotsDirOpt = Annotated[Path, typer.Option("--plots-dir", help="Folder for charts.", rich_help_panel=_OUT)]
HtmlReportOpt = Annotated[bool, typer.Option("--report", metavar="", help="Also write the run's HTML report (one self-contained page) beside its results.", rich_help_panel=_OUT)]
NoPlotOpt = Annotated[bool, typer.Option("--no-plot", metavar="", help="Skip the charts.", rich_help_panel=_OUT)]
FailIfOpt = Annotated[
    list[str] | None,
    typer.Option("--fail-if", metavar="'COLUMN<OP>VALUE'", help="Exit 3 when any row matches, e.g. 'success_rate<0.99' or 'latency_p99_s>0.25' (repeatable; OP: < <= > >=). Results are written as usual.", rich_help_panel=_OUT, show_default=False),
]
LoopOpt = Annotated[str, typer.Option("--loop", help="Event loop of the load generator: asyncio or uvloop.", rich_help_panel=_REQ)]
LoadLoopOpt = Annotated[str, typer.Option("--loop", help="Event loop of the load generator: asyncio, uvloop, or auto (uvloop for the fast engine, asyncio for aiohttp).", rich_help_panel=_REQ)]
EngineOpt = Annotated[str, typer.Option("--engine", help="Load engine: fast (uvloop, httptools, a connection per worker) or aiohttp (the lab's AsyncHttpClient).", rich_help_panel=_REQ)]
ProcessesOpt = Annotated[int, typer.Option("--processes", help="Local worker processes making the load: each level is split among them and merged exactly (one Python process drives one core).", rich_help_panel=_SCALE)]
ClusterOpt = Annotated[str | None, typer.Option("--cluster", metavar="ADDRESS", help="Run the shards on the workers of a Dask scheduler (tcp://host:8786), or local:N for a local Dask cluster of N workers. Needs asyncbench\\[cluster] (pip install 'asyncbench\\[cluster]').", rich_help_panel=_SCALE, show_default=False)]
InsecureOpt = Annotated[bool, typer.Option("--insecure", "-k", metavar="", help="For https://: do not check the server's certificate.", rich_help_panel=_REQ)]
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


def _check_loop(name: str) -> str:
    """asyncio or uvloop (when installed)."""
    if name not in ("asyncio", "uvloop"):
        raise UsageError(f"invalid --loop {name!r}: expected asyncio or uvloop")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise UsageError("--loop uvloop needs the uvloop package (pip install uvloop)") from None
    return name


def _load_setup(
    rounds: int, cooldown: float, timeout: float, method: str, header: list[str] | None, data: str | None,
    retries: int, engine: str, insecure: bool, loop: str, min_success: float, server_latency: float,
    server_capacity: int, server_queue: int, server_error_rate: float,
) -> tuple[RequestSpec, ServerConfig, str]:
    """Validate the options trap and semaphore share: the request, the run, the embedded server."""
    from asyncbench.engines import DEFAULT_LOOP, ENGINES

    check_range("--rounds", rounds, 1, 100)
    check_range("--cooldown", cooldown, 0, 600)
    check_range("--min-success", min_success, 0, 1)
    if engine not in ENGINES:
        raise UsageError(f"invalid --engine {engine!r}: expected {' or '.join(ENGINES)}")
    spec = _request_spec(timeout, method, header, data, retries)
    spec.engine, spec.insecure = engine, insecure
    server = _server_config(server_latency, server_capacity, server_queue, server_error_rate)
    return spec, server, _check_loop(DEFAULT_LOOP[engine] if loop == "auto" else loop)


def _driver(processes: int, cluster: str | None, loop: str) -> Any:
    from asyncbench.shards import make_driver

    return make_driver(processes, cluster, loop)


def _outputs(results_dir: Path, plots_dir: Path, no_plot: bool, html_report: bool = False) -> Any:
    from asyncbench.session import Outputs

    return Outputs(results_dir, None if no_plot else plots_dir, html_report)


@command("Experiments")
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
    engine: EngineOpt = "fast",
    insecure: InsecureOpt = False,
    loop: LoadLoopOpt = "auto",
    processes: ProcessesOpt = 1,
    cluster: ClusterOpt = None,
    min_success: MinSuccessOpt = 0.99,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    html_report: HtmlReportOpt = False,
    fail_if: FailIfOpt = None,
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
    spec, server, loop = _load_setup(rounds, cooldown, timeout, method, header, data, retries, engine, insecure,
                                     loop, min_success,
                                     server_latency, server_capacity, server_queue, server_error_rate)
    driver = _driver(processes, cluster, loop)

    def run(spec: RequestSpec, events: Any) -> Coroutine[Any, Any, Any]:
        config = experiment.TrapConfig(spec, level_list, requests_per_level, rounds, cooldown, driver)
        return experiment.run(config, events)

    settings = {"levels": level_list, "requests_per_level": requests_per_level, "rounds": rounds, "cooldown_s": cooldown}
    from asyncbench.runner import run_load

    run_load(experiment.EXPERIMENT, url, spec, server, _outputs(results_dir, plots_dir, no_plot, html_report), min_success, settings,
             level_list, run, loop, fail_if or [], driver)


@command("Experiments")
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
    engine: EngineOpt = "fast",
    insecure: InsecureOpt = False,
    loop: LoadLoopOpt = "auto",
    processes: ProcessesOpt = 1,
    cluster: ClusterOpt = None,
    min_success: MinSuccessOpt = 0.99,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    html_report: HtmlReportOpt = False,
    fail_if: FailIfOpt = None,
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
    spec, server, loop = _load_setup(rounds, cooldown, timeout, method, header, data, retries, engine, insecure,
                                     loop, min_success,
                                     server_latency, server_capacity, server_queue, server_error_rate)
    driver = _driver(processes, cluster, loop)

    def run(spec: RequestSpec, events: Any) -> Coroutine[Any, Any, Any]:
        config = experiment.SemaphoreConfig(spec, limit_list, requests, rounds, cooldown, driver)
        return experiment.run(config, events)

    settings = {"limits": limit_list, "requests": requests, "rounds": rounds, "cooldown_s": cooldown}
    from asyncbench.runner import run_load

    run_load(experiment.EXPERIMENT, url, spec, server, _outputs(results_dir, plots_dir, no_plot, html_report), min_success, settings,
             limit_list, run, loop, fail_if or [], driver)


@command("Experiments")
def rate(
    url: UrlArg = None,
    rates: Annotated[str, typer.Option("--rates", help="Offered rates, requests per second, comma-separated.")] = "100,500,1000,2000",
    duration: Annotated[float, typer.Option("--duration", help="Seconds of schedule per rate.")] = 10.0,
    arrivals: Annotated[str, typer.Option("--arrivals", help="Spacing of the sends: constant, or poisson (random, as independent users arrive).")] = "constant",
    max_in_flight: Annotated[int, typer.Option("--max-in-flight", help="Requests out at once at most; a request due beyond it is dropped and counted.")] = 10_000,
    slo_p99: Annotated[float | None, typer.Option("--slo-p99", help="p99 objective, seconds: the sweet spot must meet it too.", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the Poisson arrivals (reproducible schedules).", show_default=False)] = None,
    timeout: TimeoutOpt = 10.0,
    method: MethodOpt = "GET",
    header: HeaderOpt = None,
    data: DataOpt = None,
    retries: RetriesOpt = 0,
    cooldown: CooldownOpt = 1.0,
    engine: EngineOpt = "fast",
    insecure: InsecureOpt = False,
    loop: LoadLoopOpt = "auto",
    processes: ProcessesOpt = 1,
    cluster: ClusterOpt = None,
    min_success: MinSuccessOpt = 0.99,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    html_report: HtmlReportOpt = False,
    fail_if: FailIfOpt = None,
    server_latency: SrvLatencyOpt = 0.05,
    server_capacity: SrvCapacityOpt = 100,
    server_queue: SrvQueueOpt = 400,
    server_error_rate: SrvErrorRateOpt = 0.0,
) -> None:
    """The open model: requests sent on a schedule, whatever the server does.

    Latency runs from when each request was due, so a server that stalls cannot hide it by
    slowing the sending down (coordinated omission); the time from the actual send is kept as
    the service time.
    """
    from asyncbench.experiments import rate as experiment

    rate_list = parse_int_list("--rates", rates, maximum=1_000_000)
    check_range("--duration", duration, 0, 3600, low_inclusive=False)
    if arrivals not in experiment.ARRIVALS:
        raise UsageError(f"invalid --arrivals {arrivals!r}: expected {' or '.join(experiment.ARRIVALS)}")
    check_range("--max-in-flight", max_in_flight, 1, 1_000_000)
    if slo_p99 is not None:
        check_range("--slo-p99", slo_p99, 0, low_inclusive=False)
    for r in rate_list:
        if r * duration > MAX_REQUESTS:
            raise UsageError(f"invalid --rates {r}: {r:,}/s for {duration:g} s is more than {MAX_REQUESTS:,} requests")
    spec, server, loop = _load_setup(1, cooldown, timeout, method, header, data, retries, engine, insecure,
                                     loop, min_success,
                                     server_latency, server_capacity, server_queue, server_error_rate)
    driver = _driver(processes, cluster, loop)

    def run(spec: RequestSpec, events: Any) -> Coroutine[Any, Any, Any]:
        config = experiment.RateConfig(spec, rate_list, duration, arrivals, max_in_flight, cooldown, seed, driver)
        return experiment.run(config, events)

    settings = {"rates": rate_list, "duration_s": duration, "arrivals": arrivals, "max_in_flight": max_in_flight,
                "seed": seed, "cooldown_s": cooldown}
    from asyncbench.runner import run_rate

    run_rate(url, spec, server, _outputs(results_dir, plots_dir, no_plot, html_report), min_success, slo_p99, settings,
             rate_list, run, loop, fail_if or [], driver)


@command("Experiments")
def find(
    url: UrlArg = None,
    slo_p99: Annotated[float, typer.Option("--slo-p99", help="The objective: p99 latency at most this, seconds.", show_default=False)] = ...,  # type: ignore[assignment]
    min_success: MinSuccessOpt = 0.99,
    mode: Annotated[str, typer.Option("--mode", help="What to raise: concurrency (requests in flight, as semaphore) or rate (requests per second, as rate).")] = "concurrency",
    max_level: Annotated[int, typer.Option("--max", help="The highest level to probe.")] = 10_000,
    probe_duration: Annotated[float, typer.Option("--probe-duration", help="Seconds each probe runs, about.")] = 3.0,
    max_in_flight: Annotated[int, typer.Option("--max-in-flight", help="With --mode rate: requests out at once at most.")] = 10_000,
    timeout: TimeoutOpt = 10.0,
    method: MethodOpt = "GET",
    header: HeaderOpt = None,
    data: DataOpt = None,
    retries: RetriesOpt = 0,
    cooldown: CooldownOpt = 1.0,
    engine: EngineOpt = "fast",
    insecure: InsecureOpt = False,
    loop: LoadLoopOpt = "auto",
    processes: ProcessesOpt = 1,
    cluster: ClusterOpt = None,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    html_report: HtmlReportOpt = False,
    fail_if: FailIfOpt = None,
    server_latency: SrvLatencyOpt = 0.05,
    server_capacity: SrvCapacityOpt = 100,
    server_queue: SrvQueueOpt = 400,
    server_error_rate: SrvErrorRateOpt = 0.0,
) -> None:
    """The most load the target sustains within an objective (p99, success rate).

    Doubles the level until a probe misses the objective, then bisects until the answer is
    bracketed to 10 %; every probe is kept as evidence. Exit 3 when no level meets it.
    """
    from asyncbench.experiments import find as experiment

    check_range("--slo-p99", slo_p99, 0, low_inclusive=False)
    if mode not in experiment.MODES:
        raise UsageError(f"invalid --mode {mode!r}: expected {' or '.join(experiment.MODES)}")
    check_range("--max", max_level, 1, 1_000_000)
    check_range("--probe-duration", probe_duration, 0, 600, low_inclusive=False)
    check_range("--max-in-flight", max_in_flight, 1, 1_000_000)
    spec, server, loop = _load_setup(1, cooldown, timeout, method, header, data, retries, engine, insecure,
                                     loop, min_success,
                                     server_latency, server_capacity, server_queue, server_error_rate)
    config = experiment.FindConfig(spec, slo_p99, min_success, mode, max_level, probe_duration, max_in_flight, cooldown,
                                   _driver(processes, cluster, loop))
    settings = {"mode": mode, "max": max_level, "probe_duration_s": probe_duration, "max_in_flight": max_in_flight,
                "cooldown_s": cooldown}
    from asyncbench.runner import run_find

    run_find(url, spec, server, _outputs(results_dir, plots_dir, no_plot, html_report), settings, config, loop, fail_if or [])


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


@command("Experiments")
def pipeline(
    url: Annotated[str | None, typer.Argument(metavar="URL", help="Embedding API URL (loopback). Omitted: the embedded server's /embed.", show_default=False)] = None,
    input_file: Annotated[Path | None, typer.Option("--input", help="Text file to ingest.", show_default=False)] = None,
    generate_mb: Annotated[str | None, typer.Option("--generate-mb", help="Synthetic input of this many MB (comma list: one run per size). Default 1 without --input.", show_default=False)] = None,
    chunk_bytes: Annotated[int, typer.Option("--chunk-bytes", help="Chunk size in bytes (UTF-8 characters are never split).")] = 1024,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes, comma-separated.")] = "50",
    concurrency: Annotated[str, typer.Option("--concurrency", help="Requests in flight, comma-separated.")] = "25",
    output: Annotated[Path | None, typer.Option("--output", help="JSONL file for the results (only when one combination runs).", show_default=False)] = None,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = 10.0,
    header: HeaderOpt = None,
    cooldown: Annotated[float, typer.Option("--cooldown", help="Pause between runs (one per batch size and concurrency), seconds, so the target drains.", rich_help_panel=_REQ)] = 1.0,
    loop: LoopOpt = "asyncio",
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    html_report: HtmlReportOpt = False,
    fail_if: FailIfOpt = None,
    server_latency: SrvLatencyOpt = 0.05,
    server_capacity: SrvCapacityOpt = 100,
    server_queue: SrvQueueOpt = 400,
    server_error_rate: SrvErrorRateOpt = 0.0,
) -> None:
    """Stream a file in chunks to an embedding API in batches, in flat memory (Lab 2.5).

    Every (batch size, concurrency) pair runs; results stream to a JSONL file per pair.
    """
    from asyncbench.runner import PipelineRequest, run_pipeline
    from asyncbench.session import check_output_file

    if input_file is not None and generate_mb is not None:
        raise UsageError("use --input FILE or --generate-mb N, not both")
    check_range("--chunk-bytes", chunk_bytes, 4, 16 * 1024 * 1024)
    batch_list = parse_int_list("--batch-sizes", batch_sizes, maximum=100_000)
    conc_list = parse_int_list("--concurrency", concurrency, maximum=10_000)
    check_range("--retries", retries, 0, 100)
    check_range("--timeout", timeout, 0, low_inclusive=False)
    check_range("--cooldown", cooldown, 0, 600)
    if input_file is not None:
        try:
            check_readable_file(input_file)
            if not os.access(input_file, os.R_OK):
                raise PermissionError(errno.EACCES, "permission denied")
        except OSError as exc:
            raise UsageError(f"cannot read --input {str(input_file)!r}: {exc.strerror or exc}") from None
    req = PipelineRequest(
        input_file=input_file,
        sizes=_parse_sizes(generate_mb) if generate_mb is not None else ([] if input_file else [1.0]),
        chunk_bytes=chunk_bytes, batch_sizes=batch_list, concurrency=conc_list, output=output,
        headers=parse_headers(header), timeout=timeout, retries=retries, cooldown=cooldown,
    )
    if output is not None and req.runs > 1:
        raise UsageError(f"--output {str(output)!r} takes one run, but {req.runs} combinations were asked for")
    if output is not None:
        check_output_file(output, "--output")
    server = _server_config(server_latency, server_capacity, server_queue, server_error_rate)
    run_pipeline(url, server, _outputs(results_dir, plots_dir, no_plot, html_report), req, _check_loop(loop), fail_if or [])


@command("Experiments")
def threads(
    url: UrlArg = None,
    tasks: Annotated[int, typer.Option("--tasks", help="Coroutines per phase.")] = 10,
    sleep: Annotated[float, typer.Option("--sleep", help="Seconds each task sleeps (blocking, non-blocking, to_thread).")] = 0.2,
    timeout: TimeoutOpt = 10.0,
    results_dir: ResultsDirOpt = Path("results"),
    plots_dir: PlotsDirOpt = Path("plots"),
    no_plot: NoPlotOpt = False,
    html_report: HtmlReportOpt = False,
    fail_if: FailIfOpt = None,
    server_latency: SrvLatencyOpt = 0.05,
    impact: Annotated[int, typer.Option("--impact", metavar="N", help="Then N concurrent GETs three ways — one event loop, a thread per request, asyncio's default pool — with the threads, memory and time each took (0: not).")] = 0,
) -> None:
    """asyncio is one thread: concurrent, not parallel (Lab 2.1).

    Four phases of coroutines — awaiting a GET, calling time.sleep, awaiting asyncio.sleep,
    awaiting asyncio.to_thread — with the thread each ran on and the event loop's worst lag.
    """
    from asyncbench.runner import run_threads

    check_range("--tasks", tasks, 1, 1000)
    check_range("--sleep", sleep, 0, 10)
    check_range("--timeout", timeout, 0, low_inclusive=False)
    check_range("--impact", impact, 0, 10_000)
    # With --impact, the embedded server takes all N at once: what is measured is the client's cost.
    server = _server_config(server_latency, max(100, impact), max(400, impact), 0.0)
    run_threads(url, server, _outputs(results_dir, plots_dir, no_plot, html_report), tasks, sleep, timeout,
                fail_if or [], impact)


@command("Tools")
def plot(
    results_dir: Annotated[Path, typer.Argument(metavar="RESULTS_DIR", help="Folder of results (CSV + JSON) to chart.")] = Path("results"),
    out: Annotated[Path, typer.Option("--out", help="Folder for the charts.")] = Path("plots"),
    all_runs: Annotated[bool, typer.Option("--all", metavar="", help="Overlay every trap / semaphore run, not just the newest.")] = False,
) -> None:
    """Render every chart for a folder of results, and compare trap with semaphore."""
    from asyncbench.runner import plot_folder

    plot_folder(results_dir, out, all_runs)


@command("Tools")
def report(
    results_dir: Annotated[Path, typer.Argument(metavar="RESULTS_DIR", help="Folder of results (CSV + JSON) to report on.")] = Path("results"),
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    all_runs: Annotated[bool, typer.Option("--all", metavar="", help="Every run in the folder, not just the newest of each experiment.")] = False,
) -> None:
    """One self-contained HTML page of a folder's findings: what ran, the tables, the verdicts,
    the warnings and the charts, with the trap against the semaphore when both ran.

    No external file, font or script: it opens offline, attaches to a pull request, and prints.
    """
    from asyncbench.runner import report_folder

    report_folder(results_dir, output, all_runs)


@command("Tools")
def compare(
    baseline: Annotated[Path, typer.Argument(metavar="BASELINE", help="Results CSV of the run to compare against.", show_default=False)],
    candidate: Annotated[Path, typer.Argument(metavar="CANDIDATE", help="Results CSV of the new run.", show_default=False)],
    tolerance: Annotated[float, typer.Option("--tolerance", help="Changes smaller than this fraction are no change.")] = 0.05,
    fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", metavar="", help="Exit 3 when a level got worse.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for the chart.")] = Path("plots"),
    no_plot: NoPlotOpt = False,
) -> None:
    """Compare two runs of a sweep level by level: goodput, p50 and p99, better, worse or no change.

    A change counts only beyond the tolerance and beyond the runs' own spread (their rounds).
    """
    from asyncbench.runner import compare_runs

    check_range("--tolerance", tolerance, 0, 10)
    compare_runs(baseline, candidate, tolerance, None if no_plot else out, fail_on_regression)


@command("Tools")
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
    stall_after: Annotated[int, typer.Option("--stall-after", help="After this many requests, freeze the whole server once (see --stall); 0 is off.")] = 0,
    stall: Annotated[float, typer.Option("--stall", help="Seconds the server freezes after --stall-after requests: a GC pause, a stop-the-world.")] = 0.5,
) -> None:
    """Run the embedded target server until Ctrl-C or SIGTERM."""
    from asyncbench.server import ServerConfig, run_on_best_loop
    from asyncbench.server import serve as run_server

    config = ServerConfig(
        host=host, port=port, latency=latency, jitter=jitter, capacity=capacity, queue=queue,
        error_rate=error_rate, rate_limit=rate_limit, seed=seed, stall_after=stall_after,
        stall=stall if stall_after else 0.0,
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
        run_on_best_loop(run_server(config, ready))
    except OSError as exc:
        raise TargetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print("asyncbench serve: stopped", flush=True)


def main() -> None:
    """Console-script entry point: the one place where errors become messages and exit codes."""
    from asyncbench import redact, signals

    signals.install()
    # Every secret the command line carries is masked in all that is shown, whoever shows it.
    redact.register_from_argv(sys.argv[1:])
    redact.masked_streams()
    code = _run()
    signals.command_done()  # what follows is the last word: a signal now just ends it
    _leave(code)


def _run() -> int:
    """The command, its errors turned into one line each; the exit code."""
    try:
        check_utf8_args(sys.argv[1:])
        app()
    except SystemExit as exc:  # typer's own ending: --help, a usage error, the end of a command
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return int(ExitCode.RUN_FAILED)
    except (Interrupted, ObjectiveNotMet) as exc:  # not errors: the run was done (or kept)
        print(f"asyncbench: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except AsyncbenchError as exc:
        print(f"asyncbench: error: {redact_text(str(exc))}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("asyncbench: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug must not print a traceback
        if os.environ.get("ASYNCBENCH_DEBUG"):
            raise
        print(f"asyncbench: internal error: {type(exc).__name__}: {redact_text(str(exc))} "
              "(set ASYNCBENCH_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return int(ExitCode.RUN_FAILED)
    return 0


def _leave(code: int) -> None:
    """Exit with `code` now. Everything is written and closed by here; the interpreter's own
    shutdown would put back the default signal handlers, and a Ctrl-C in that window would end
    the process by SIGINT instead of with this code."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe (asyncbench ... | head): nothing more to say to it
    os._exit(code)
