"""The command line: parses and validates, calls an experiment, wires its results to the outputs.

This is the only module that prints errors and sets exit codes (see `main`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Optional

import typer

from asyncbench import __version__
from asyncbench.errors import AsyncbenchError, ExitCode, UsageError

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
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """asyncbench: how much concurrency should I use, and what happens when I use too much?"""


def _fail(message: str, code: ExitCode) -> None:
    print(f"asyncbench: error: {message}", file=sys.stderr)
    raise typer.Exit(int(code))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one.")] = 8080,
    latency: Annotated[float, typer.Option(help="Service time per request, seconds.")] = 0.05,
    jitter: Annotated[float, typer.Option(help="Service time varies uniformly by ± this, seconds.")] = 0.0,
    capacity: Annotated[int, typer.Option(help="Requests served at once.")] = 100,
    queue: Annotated[int, typer.Option(help="Requests that may wait for a slot; past that, 503.")] = 400,
    error_rate: Annotated[float, typer.Option(help="Fraction of requests answered 500 (0..1).")] = 0.0,
    rate_limit: Annotated[float, typer.Option(help="Requests per second before 429 with Retry-After; 0 is off.")] = 0.0,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the injected faults (reproducible runs).")] = None,
) -> None:
    """Run the embedded target server until Ctrl-C or SIGTERM."""
    from asyncbench.server import ServerConfig, serve as run_server

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
        asyncio.run(run_server(config, ready))
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", ExitCode.RUN_FAILED)
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
