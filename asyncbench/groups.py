"""The command line's option groups, each declared once, and how a command takes them.

A command is a plain function whose parameters are groups: dataclasses whose fields carry their
typer declaration (`Annotated[type, typer.Option(...)]`). `command()` expands each group into
its options for typer, in place (so `--help` lists them where the function names the group),
and calls the function with the group objects rebuilt from what was parsed. A group turns its
values into what the run needs, validated (`Request.spec()`, `Server.config()`, ...), so an
option added to a group — a connection option, say — reaches every command that takes it.

    def trap(target: Target, options: TrapOptions, request: Request, server: Server, ...) -> None

`Annotated[Request, Only("timeout")]` takes part of a group, in the order given;
`Annotated[Request, Defaults(retries=3)]` changes a default for one command.
"""

from __future__ import annotations

import functools
import inspect
import os
import ssl
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncbench.errors import UsageError
from asyncbench.options import MAX_REQUESTS, check_range, check_readable_file, parse_data, parse_headers, parse_method

if TYPE_CHECKING:
    from asyncbench.load.budget import Budget
    from asyncbench.load.driver import Driver
    from asyncbench.load.spec import RequestSpec
    from asyncbench.server import ServerConfig
    from asyncbench.session import Outputs, TimelineSettings

REQUEST = "Request"
CONNECTION = "Connection"
BOUNDS = "Bounds of the whole run"
OUTPUT = "Output"
SERVER = "Embedded server (when no URL is given)"
SCALE = "Scale out"


class Only:
    """Take only these options of a group, in this order."""

    def __init__(self, *names: str) -> None:
        self.names = names


class Defaults:
    """Other defaults for some options of a group, for one command."""

    def __init__(self, **values: Any) -> None:
        self.values = values


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """`fn` with its group parameters expanded into their options, for typer."""
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    parameters: list[inspect.Parameter] = []
    shape: list[tuple[str, type | None, list[str]]] = []  # each parameter: its group and options
    for param in signature.parameters.values():
        group, only, defaults = _group_of(hints[param.name])
        if group is None:
            parameters.append(param.replace(annotation=hints[param.name], kind=inspect.Parameter.KEYWORD_ONLY))
            shape.append((param.name, None, []))
            continue
        field_hints = typing.get_type_hints(group, include_extras=True)
        by_name = {f.name: f for f in fields(group)}
        names = list(only or by_name)
        for name in names:
            f = by_name[name]
            if name in defaults:
                default = defaults[name]
            elif f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            else:
                default = ...  # typer's word for a required option
            # Keyword-only: a required option may follow ones with defaults, in the order shown.
            parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                                annotation=field_hints[name]))
        shape.append((param.name, group, names))

    @functools.wraps(fn)
    def run(**parsed: Any) -> None:
        args = {name: parsed[name] if group is None else group(**{n: parsed[n] for n in names})
                for name, group, names in shape}
        fn(**args)

    run.__signature__ = signature.replace(parameters=parameters, return_annotation=None)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run


def _group_of(hint: Any) -> tuple[type | None, tuple[str, ...], dict[str, Any]]:
    """The group a parameter's annotation names (with its Only and Defaults), or None."""
    only: tuple[str, ...] = ()
    defaults: dict[str, Any] = {}
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, Only):
                only = extra.names
            elif isinstance(extra, Defaults):
                defaults = extra.values
        hint = base
    if isinstance(hint, type) and is_dataclass(hint):
        return hint, only, defaults
    return None, (), {}


# --- the groups ---------------------------------------------------------------------------------


@dataclass
class Target:
    """What is loaded."""

    url: Annotated[str | None, typer.Argument(
        metavar="URL", help="Target URL; one that is not this machine needs --allow-remote. Omitted: the embedded "
        "server.",
        show_default=False)] = None


@dataclass
class Rounds:
    """How often each level runs."""

    rounds: Annotated[int, typer.Option(
        "--rounds", help="Run each level this many times; report the median and the spread.",
        rich_help_panel=REQUEST)] = 1

    def value(self) -> int:
        return int(check_range("--rounds", self.rounds, 1, 100))


@dataclass
class Request:
    """What every request looks like, and how long it may take."""

    timeout: Annotated[float, typer.Option(
        "--timeout", help="Total time allowed per request, seconds.", rich_help_panel=REQUEST)] = 10.0
    method: Annotated[str, typer.Option("--method", "-X", help="HTTP method.", rich_help_panel=REQUEST)] = "GET"
    header: Annotated[list[str] | None, typer.Option(
        "--header", "-H", metavar="'NAME: VALUE'",
        help="Request header 'Name: value' (repeatable). Secrets are redacted from results.",
        rich_help_panel=REQUEST, show_default=False)] = None
    data: Annotated[str | None, typer.Option(
        "--data", "-d", help="Request body; '@FILE' reads a file.", rich_help_panel=REQUEST,
        show_default=False)] = None
    retries: Annotated[int, typer.Option(
        "--retries", help="Retries per request (timeouts, connection errors, 5xx, 429).",
        rich_help_panel=REQUEST)] = 0

    def spec(self) -> RequestSpec:
        """The request every step sends (its URL is the target's, bound later)."""
        from asyncbench.load.spec import RequestSpec

        check_range("--timeout", self.timeout, 0, low_inclusive=False)
        check_range("--retries", self.retries, 0, 100)
        return RequestSpec(url="", method=parse_method(self.method), headers=parse_headers(self.header),
                           data=parse_data(self.data), timeout=self.timeout, retries=self.retries)

    def check_timeout(self) -> float:
        return float(check_range("--timeout", self.timeout, 0, low_inclusive=False))


@dataclass
class Cooldown:
    """The pause between steps."""

    cooldown: Annotated[float, typer.Option(
        "--cooldown", help="Pause between levels, seconds, so the target drains.", rich_help_panel=REQUEST)] = 1.0

    def value(self) -> float:
        return float(check_range("--cooldown", self.cooldown, 0, 600))


@dataclass
class Connection:
    """How the load is sent: the engine, the event loop, and how connections are made."""

    engine: Annotated[str, typer.Option(
        "--engine", help="Load engine: fast (uvloop, httptools, a connection per worker) or aiohttp (the lab's "
        "AsyncHttpClient).", rich_help_panel=REQUEST)] = "fast"
    insecure: Annotated[bool, typer.Option(
        "--insecure", "-k", metavar="", help="For https://: do not check the server's certificate.",
        rich_help_panel=REQUEST)] = False
    loop: Annotated[str, typer.Option(
        "--loop", help="Event loop of the load generator: asyncio, uvloop, or auto (uvloop for the fast engine, "
        "asyncio for aiohttp).", rich_help_panel=REQUEST)] = "auto"
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", metavar="", help="Load a target that is not this machine (also: ASYNCBENCH_ALLOW_REMOTE=1). "
        "Without it only loopback addresses are loaded.", rich_help_panel=CONNECTION)] = False
    resolve: Annotated[list[str] | None, typer.Option(
        "--resolve", metavar="HOST:PORT:ADDRESS", help="Connect to ADDRESS (or a comma list) for HOST:PORT; the URL, "
        "the Host header and TLS's server name stay the URL's (repeatable; as curl).", rich_help_panel=CONNECTION,
        show_default=False)] = None
    connect_to: Annotated[list[str] | None, typer.Option(
        "--connect-to", metavar="HOST:PORT:HOST2:PORT2", help="Connect to HOST2:PORT2 instead of HOST:PORT (an empty "
        "part matches any); the URL, Host and server name stay the URL's (repeatable; as curl).",
        rich_help_panel=CONNECTION, show_default=False)] = None
    cacert: Annotated[Path | None, typer.Option(
        "--cacert", metavar="FILE", help="Trust this CA (PEM) for https:// instead of the system's.",
        rich_help_panel=CONNECTION, show_default=False)] = None
    cert: Annotated[Path | None, typer.Option(
        "--cert", metavar="FILE", help="Client certificate (PEM) to present over TLS; needs --key.",
        rich_help_panel=CONNECTION, show_default=False)] = None
    key: Annotated[Path | None, typer.Option(
        "--key", metavar="FILE", help="Private key (PEM) of --cert.", rich_help_panel=CONNECTION,
        show_default=False)] = None
    no_tls_resume: Annotated[bool, typer.Option(
        "--no-tls-resume", metavar="", help="Make every new connection do a full TLS handshake (default: resume an "
        "earlier session).", rich_help_panel=CONNECTION)] = False

    def apply(self, spec: RequestSpec) -> str:
        """Set the engine, TLS and the way to the target on `spec`; the event loop to run on."""
        from asyncbench.engines import DEFAULT_LOOP, ENGINES
        from asyncbench.load.route import parse_connect_to, parse_resolve
        from asyncbench.tls import TlsSettings

        if self.engine not in ENGINES:
            raise UsageError(f"invalid --engine {self.engine!r}: expected {' or '.join(ENGINES)}")
        spec.engine, spec.insecure = self.engine, self.insecure
        spec.resolve = parse_resolve(self.resolve or [])
        spec.connect_to = parse_connect_to(self.connect_to or [])
        spec.allow_remote = self.remote_allowed()
        for path, option in ((self.cacert, "--cacert"), (self.cert, "--cert"), (self.key, "--key")):
            if path is not None:
                check_pem(path, option)
        if (self.cert is None) != (self.key is None):
            raise UsageError("give both --cert, the certificate, and --key, its private key")
        spec.tls = TlsSettings(cacert=self.cacert, cert=self.cert, key=self.key, insecure=self.insecure,
                               resume=not self.no_tls_resume)
        try:
            spec.tls.context()
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(f"cannot use the TLS files given ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})") from None
        return check_loop(DEFAULT_LOOP[self.engine] if self.loop == "auto" else self.loop)

    def remote_allowed(self) -> bool:
        return self.allow_remote or os.environ.get("ASYNCBENCH_ALLOW_REMOTE", "") not in ("", "0")


def check_pem(path: Path, option: str) -> None:
    """A readable PEM file, or UsageError naming the option and why."""
    try:
        check_readable_file(path, 1024 * 1024)
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {option} {str(path)!r}: {exc.strerror or exc}") from None
    if "-----BEGIN " not in text:
        raise UsageError(f"invalid {option} {str(path)!r}: not a PEM file")


def check_loop(name: str) -> str:
    """asyncio or uvloop (when installed)."""
    if name not in ("asyncio", "uvloop"):
        raise UsageError(f"invalid --loop {name!r}: expected asyncio or uvloop")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise UsageError("--loop uvloop needs the uvloop package (pip install uvloop)") from None
    return name


@dataclass
class Bounds:
    """What the whole run may send, at most: a bound for a target that is not one's own."""

    max_requests: Annotated[int | None, typer.Option(
        "--max-requests", metavar="N", help="Send at most N requests in the whole run (every level, round and "
        "retry); the run stops when it has.", rich_help_panel=BOUNDS, show_default=False)] = None
    max_duration: Annotated[float | None, typer.Option(
        "--max-duration", metavar="SECONDS", help="Send nothing new after this many seconds from the first request; "
        "the run stops when they have passed.", rich_help_panel=BOUNDS, show_default=False)] = None

    def budget(self) -> Budget:
        from asyncbench.load.budget import Budget

        if self.max_requests is not None:
            check_range("--max-requests", self.max_requests, 1, MAX_REQUESTS)
        if self.max_duration is not None:
            check_range("--max-duration", self.max_duration, 0, 7 * 24 * 3600, low_inclusive=False)
        return Budget(self.max_requests, self.max_duration)


@dataclass
class Scale:
    """Where the load is made: this process, local worker processes, or a Dask cluster."""

    processes: Annotated[int, typer.Option(
        "--processes", help="Local worker processes making the load: each level is split among them and merged "
        "exactly (one Python process drives one core).", rich_help_panel=SCALE)] = 1
    cluster: Annotated[str | None, typer.Option(
        "--cluster", metavar="ADDRESS", help="Run the shards on the workers of a Dask scheduler (tcp://host:8786), "
        "or local:N for a local Dask cluster of N workers. Needs asyncbench\\[cluster] (pip install "
        "'asyncbench\\[cluster]').", rich_help_panel=SCALE, show_default=False)] = None

    def driver(self, loop: str, budget: Budget | None = None) -> Driver:
        from asyncbench.load.driver import make_driver

        return make_driver(self.processes, self.cluster, loop, budget)


@dataclass
class Floor:
    """The success rate an answer needs."""

    min_success: Annotated[float, typer.Option(
        "--min-success", help="Success-rate floor (0..1) for the sweet spot.", rich_help_panel=OUTPUT)] = 0.99

    def value(self) -> float:
        return float(check_range("--min-success", self.min_success, 0, 1))


@dataclass
class Outputs:
    """Where the results, charts and report go."""

    results_dir: Annotated[Path, typer.Option(
        "--results-dir", help="Folder for CSV/JSON results.", rich_help_panel=OUTPUT)] = Path("results")
    plots_dir: Annotated[Path, typer.Option(
        "--plots-dir", help="Folder for charts.", rich_help_panel=OUTPUT)] = Path("plots")
    no_plot: Annotated[bool, typer.Option(
        "--no-plot", metavar="", help="Skip the charts.", rich_help_panel=OUTPUT)] = False
    html_report: Annotated[bool, typer.Option(
        "--report", metavar="", help="Also write the run's HTML report (one self-contained page) beside its results.",
        rich_help_panel=OUTPUT)] = False

    def outputs(self) -> Outputs:
        from asyncbench.session import Outputs as Folders

        return Folders(self.results_dir, None if self.no_plot else self.plots_dir, self.html_report)


@dataclass
class Timeline:
    """How the run is recorded over time."""

    interval: Annotated[float, typer.Option(
        "--interval", help="Seconds per row of the run's -timeline.csv.", rich_help_panel=OUTPUT)] = 1.0
    hdr_log: Annotated[Path | None, typer.Option(
        "--hdr-log", metavar="FILE", help="Also write every interval's latency histogram to FILE in HdrHistogram's log "
        "format (.hlog), tagged by level.", rich_help_panel=OUTPUT, show_default=False)] = None

    def settings(self) -> TimelineSettings:
        from asyncbench.session import TimelineSettings, check_output_file

        check_range("--interval", self.interval, 0.01, 3600)
        if self.hdr_log is not None:
            check_output_file(self.hdr_log, "--hdr-log")  # exit 1 before any request
        return TimelineSettings(float(self.interval), self.hdr_log)


@dataclass
class Thresholds:
    """What makes a run fail its objective (exit 3)."""

    fail_if: Annotated[list[str] | None, typer.Option(
        "--fail-if", metavar="'COLUMN<OP>VALUE'", help="Exit 3 when any row matches, e.g. 'success_rate<0.99' or "
        "'latency_p99_s>0.25' (repeatable; OP: < <= > >=). Results are written as usual.", rich_help_panel=OUTPUT,
        show_default=False)] = None

    def expressions(self) -> list[str]:
        return list(self.fail_if or [])


@dataclass
class Server:
    """The embedded target's settings (ignored with a URL)."""

    server_latency: Annotated[float, typer.Option(
        "--server-latency", help="Service time per request, seconds.", rich_help_panel=SERVER)] = 0.05
    server_capacity: Annotated[int, typer.Option(
        "--server-capacity", help="Requests served at once.", rich_help_panel=SERVER)] = 100
    server_queue: Annotated[int, typer.Option(
        "--server-queue", help="Requests that may wait; past that, 503.", rich_help_panel=SERVER)] = 400
    server_error_rate: Annotated[float, typer.Option(
        "--server-error-rate", help="Fraction answered 500 (0..1).", rich_help_panel=SERVER)] = 0.0
    server_tls: Annotated[bool, typer.Option(
        "--server-tls", metavar="", help="Serve https with a throwaway certificate, which the run trusts (its "
        "CA made for the occasion).", rich_help_panel=SERVER)] = False

    def config(self, **overrides: Any) -> ServerConfig:
        from asyncbench.server import ServerConfig

        settings = {"latency": self.server_latency, "capacity": self.server_capacity, "queue": self.server_queue,
                    "error_rate": self.server_error_rate, "tls": self.server_tls, **overrides}
        config = ServerConfig(**settings)
        try:
            config.validate()
        except ValueError as exc:
            raise UsageError(str(exc).replace("invalid --", "invalid --server-")) from None
        return config
