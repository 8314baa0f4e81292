"""The command line's surface: the app, a command per experiment (each declared in its own module,
its options as groups: `groups.py`), the tools (plot, report, compare, serve), and `main`, the
only place that turns errors into messages and exit codes.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from asyncbench import groups
from asyncbench.errors import AsyncbenchError, ExitCode, Interrupted, ObjectiveNotMet
from asyncbench.options import check_utf8_args
from asyncbench.redact import redact_text
from asyncbench.version import __version__


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


def command(panel: str, name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
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

        return app.command(name, cls=_Command, rich_help_panel=panel, help=_help(fn.__doc__))(run)

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


# --- the experiments: each declares its command (its options as groups) in its own module -------


def _register_experiments() -> None:
    from asyncbench.experiments import registry

    for experiment in registry().values():
        if experiment.command is not None:
            command("Experiments", name=experiment.name)(groups.command(experiment.command))


_register_experiments()


# --- the tools --------------------------------------------------------------------------------------


@command("Tools")
def plot(
    results_dir: Annotated[Path, typer.Argument(metavar="RESULTS_DIR", help="Folder of results (CSV + JSON) to chart.")] = Path("results"),
    out: Annotated[Path, typer.Option("--out", help="Folder for the charts.")] = Path("plots"),
    all_runs: Annotated[bool, typer.Option("--all", metavar="", help="Overlay every trap / semaphore run, not just the newest.")] = False,
) -> None:
    """Render every chart for a folder of results, and compare trap with semaphore."""
    from asyncbench.tools import plot_folder

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
    from asyncbench.tools import report_folder

    report_folder(results_dir, output, all_runs)


@command("Tools")
def compare(
    baseline: Annotated[Path, typer.Argument(metavar="BASELINE", help="Results CSV of the run to compare against.", show_default=False)],
    candidate: Annotated[Path, typer.Argument(metavar="CANDIDATE", help="Results CSV of the new run.", show_default=False)],
    tolerance: Annotated[float, typer.Option("--tolerance", help="Changes smaller than this fraction are no change.")] = 0.05,
    fail_on_regression: Annotated[bool, typer.Option("--fail-on-regression", metavar="", help="Exit 3 when a level got worse.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for the chart.")] = Path("plots"),
    no_plot: Annotated[bool, typer.Option("--no-plot", metavar="", help="Skip the charts.",
                                          rich_help_panel=groups.OUTPUT)] = False,
) -> None:
    """Compare two runs of a sweep level by level: goodput, p50 and p99, better, worse or no change.

    A change counts only beyond the tolerance and beyond the runs' own spread (their rounds).
    """
    from asyncbench.tools import compare_runs

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
    tls: Annotated[bool, typer.Option("--tls", metavar="", help="Serve https with a throwaway certificate; its CA is written to a file, for --cacert.")] = False,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", metavar="FILE", help="Serve https with this certificate (PEM, its chain after it).", show_default=False)] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", metavar="FILE", help="The private key (PEM) of --tls-cert.", show_default=False)] = None,
    rpm: Annotated[float, typer.Option("--rpm", help="POST /v1/embeddings: requests per minute, enforced per second (a sixtieth each second), then 429 with retry-after; 0 is off.")] = 0.0,
    tpm: Annotated[float, typer.Option("--tpm", help="POST /v1/embeddings: tokens per minute (4 bytes of text a token), enforced as --rpm; 0 is off.")] = 0.0,
    capacity_schedule: Annotated[str | None, typer.Option("--capacity-schedule", metavar="T:CAP,...", help="Capacity over time: seconds from the first request, capacity from then on, e.g. '0:100,10:50,20:150' (DELETE /stats starts it again).", show_default=False)] = None,
) -> None:
    """Run the embedded target server until Ctrl-C or SIGTERM."""
    from asyncbench.tools import serve_target

    serve_target(host=host, port=port, latency=latency, jitter=jitter, capacity=capacity, queue=queue,
                 error_rate=error_rate, rate_limit=rate_limit, seed=seed, stall_after=stall_after, stall=stall,
                 tls=tls, tls_cert=tls_cert, tls_key=tls_key, capacity_schedule=capacity_schedule, rpm=rpm, tpm=tpm)


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
