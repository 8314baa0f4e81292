"""Lab 2.5, the ingestion pipeline: a file streamed in chunks to an embedding API in flat memory.

Stages are generators — read → clean → batch — so the file is never held in memory. Batches are
taken one at a time with `itertools.islice`; a batch's chunks are posted concurrently through
AsyncHttpClient (at most `concurrency` in flight) and each result is appended to a JSONL file the
moment it arrives. The next batch is read only when the current one is done, so memory is bounded
by batch size × concurrency, never by the input's size.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import os
import random
import re
import time
import tracemalloc
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from asyncbench import report
from asyncbench.engines.retry import RetryPolicy
from asyncbench.errors import UsageError
from asyncbench.experiments.descriptor import Experiment, StepEvents
from asyncbench.groups import REQUEST, Connection, Defaults, Only, Outputs, Request, Server, Thresholds, check_loop
from asyncbench.options import check_range, check_readable_file, parse_headers, parse_int_list
from asyncbench.ratelimit import ClientBudget, tokens_of
from asyncbench.redact import redact_header, redact_url
from asyncbench.session import Conclusion, PlanDefaults, check_output_file

if TYPE_CHECKING:
    from rich.console import RenderableType

    from asyncbench.client import FetchResult
    from asyncbench.load.route import Reach
    from asyncbench.load.spec import RequestSpec
    from asyncbench.results import ResultsWriter, Run, WholeLines
    from asyncbench.resume import Done
    from asyncbench.session import Steps


@dataclass
class PipelineOptions:
    url: Annotated[str | None, typer.Argument(
        metavar="URL", help="Embedding API URL (another machine needs --allow-remote). Omitted: the embedded "
        "server's /embed.",
        show_default=False)] = None
    input_file: Annotated[Path | None, typer.Option("--input", help="Text file to ingest.", show_default=False)] = None
    generate_mb: Annotated[str | None, typer.Option(
        "--generate-mb", help="Synthetic input of this many MB (comma list: one run per size). Default 1 without "
        "--input.", show_default=False)] = None
    chunk_bytes: Annotated[int, typer.Option(
        "--chunk-bytes", help="Chunk size in bytes (UTF-8 characters are never split).")] = 1024
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes, comma-separated.")] = "50"
    concurrency: Annotated[str, typer.Option("--concurrency", help="Requests in flight, comma-separated; auto (or "
        "auto:aimd, auto:gradient) for a limit that adapts to the server.")] = "25"
    output: Annotated[Path | None, typer.Option(
        "--output", help="JSONL file for the results (only when one combination runs).", show_default=False)] = None


API = "API (OpenAI-style)"


@dataclass
class PipelineApi:
    api: Annotated[str, typer.Option(
        "--api", help="What the API speaks: embed (the lab's {id, text} → {id, embedding}) or openai (POST "
        "{model, input: [...]} → data[index].embedding, usage).", rich_help_panel=API)] = "embed"
    inputs_per_request: Annotated[int, typer.Option(
        "--inputs-per-request", help="--api openai: chunks in each request's input list.", rich_help_panel=API)] = 1
    model: Annotated[str, typer.Option("--model", help="--api openai: the model to name.",
                                       rich_help_panel=API)] = "asyncbench-embedding"
    rpm: Annotated[float, typer.Option(
        "--rpm", help="The client's budget: requests per minute, spent per second (0: none).",
        rich_help_panel=API)] = 0.0
    tpm: Annotated[float, typer.Option(
        "--tpm", help="The client's budget: tokens per minute (4 bytes a token), spent per second (0: none).",
        rich_help_panel=API)] = 0.0
    resume: Annotated[bool, typer.Option(
        "--resume", metavar="", help="Continue an interrupted run from what --output holds: chunks with a result "
        "are not sent again (the input must be the same).", rich_help_panel=API)] = False
    ordered: Annotated[bool, typer.Option(
        "--ordered", metavar="", help="Write results in input order: each batch's are held until it is done (memory: "
        "one batch).", rich_help_panel=API)] = False
    server_rpm: Annotated[float, typer.Option(
        "--server-rpm", help="Embedded server: requests per minute of its /v1/embeddings (0: none).",
        rich_help_panel="Embedded server (when no URL is given)")] = 0.0
    server_tpm: Annotated[float, typer.Option(
        "--server-tpm", help="Embedded server: tokens per minute of its /v1/embeddings (0: none).",
        rich_help_panel="Embedded server (when no URL is given)")] = 0.0


@dataclass
class PipelineRun:
    cooldown: Annotated[float, typer.Option(
        "--cooldown", help="Pause between runs (one per batch size and concurrency), seconds, so the target drains.",
        rich_help_panel=REQUEST)] = 1.0
    loop: Annotated[str, typer.Option(
        "--loop", help="Event loop of the load generator: asyncio or uvloop.", rich_help_panel=REQUEST)] = "asyncio"


_perf = time.perf_counter
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")  # Unicode category Cc, a run at a time (a sparse file is one run)


# --- stages ---------------------------------------------------------------------------------------


def _utf8_cut(buf: bytes) -> int:
    """Where to cut `buf` so that no UTF-8 character is split: before an incomplete sequence at
    its end. Invalid bytes are left in place (the decoder replaces them)."""
    n = len(buf)
    for back in range(1, min(4, n) + 1):
        byte = buf[n - back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last sequence starts here
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
            return n - back if need > back else n
    return n


def read_chunks(stream: IO[bytes], chunk_bytes: int) -> Iterator[str]:
    """Yield the stream's text in pieces of at most `chunk_bytes` bytes, never splitting a UTF-8
    character (bytes that are not UTF-8 become U+FFFD)."""
    if chunk_bytes < 4:
        raise ValueError("chunk_bytes must be at least 4 (the longest UTF-8 character)")
    carry = b""
    while True:
        data = stream.read(chunk_bytes - len(carry))
        buf = carry + data
        if not buf:
            return
        cut = len(buf) if not data else _utf8_cut(buf)
        if cut == 0:  # only possible with invalid input: do not stall
            cut = len(buf)
        carry = buf[cut:]
        yield buf[:cut].decode("utf-8", errors="replace")
        if not data and not carry:
            return


def clean(chunks: Iterable[str]) -> Iterator[str]:
    """Normalise whitespace (runs become one space, ends trimmed) and drop control characters."""
    for text in chunks:
        # Whitespace first (tabs and newlines are controls too, and should become spaces).
        yield _CONTROL.sub("", _WHITESPACE.sub(" ", text)).strip()


def batches(items: Iterable[str], size: int) -> Iterator[list[tuple[int, str]]]:
    """Number the items and group them in lists of `size`, one at a time with islice."""
    numbered = enumerate(items)
    while batch := list(itertools.islice(numbered, size)):
        yield batch


_WORDS = (
    "the quick brown fox jumps over lazy dog asyncio event loop semaphore request response "
    "latency throughput embedding vector chunk batch pipeline stream memory generator café "
    "naïve résumé Übergröße 東京 データ 🚀 ✓ λ"
).split()


def generate_text(path: Path, megabytes: float, seed: int = 2) -> int:
    """Write a synthetic text file of about `megabytes` MiB, line by line (never all in memory),
    with multi-byte characters, runs of whitespace and a few control characters. Returns bytes."""
    rng = random.Random(seed)
    target = int(megabytes * 1024 * 1024)
    written = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        while written < target:
            words = rng.choices(_WORDS, k=rng.randint(6, 18))
            line = " ".join(words)
            if rng.random() < 0.1:
                line += "  \t  \x07"
            line = line + ("\r\n" if rng.random() < 0.2 else "\n")
            encoded = line.encode("utf-8")
            if written + len(encoded) > target:
                line = encoded[: target - written].decode("utf-8", errors="ignore")
                encoded = line.encode("utf-8")
                if not encoded:
                    break
            f.write(line)
            written += len(encoded)
    return written


# --- the run --------------------------------------------------------------------------------------


@dataclass
class PipelineSpec:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    retries: int = 3
    api: str = "embed"  # or "openai"
    inputs_per_request: int = 1
    model: str = "asyncbench-embedding"
    rpm: float = 0.0  # the client's budget (0: none)
    tpm: float = 0.0
    ordered: bool = False


@dataclass
class PairResult:
    """One CSV row of `pipeline`: a (batch_size, concurrency) run over one input."""

    experiment: str
    input_mb: float
    batch_size: int
    concurrency: int
    chunks: int
    successes: int
    failures: int
    success_rate: float
    batches: int
    attempts: int
    elapsed_s: float
    throughput_cps: float
    latency_p50_s: float
    latency_p99_s: float
    peak_traced_mb: float
    peak_rss_mb: float
    output: str
    limiter: str = "fixed"  # fixed, or the adaptive limit's algorithm (concurrency: its mean limit)
    throttled: int = 0  # attempts answered 429
    waited_s: float = 0.0  # seconds requests waited for the budget or the server, summed over them
    tokens: int = 0  # as the server counted them (usage), or estimated where it says nothing
    tokens_per_min: float = 0.0
    resumed: int = 0  # chunks the output already held (--resume): not sent again
    limited_by: str = "concurrency"  # what held the run back: budget (the client's), server, or concurrency


Concurrency = int | str  # a fixed number, or "auto:aimd" / "auto:gradient"


def parse_concurrency(text: str) -> list[Concurrency]:
    """'10,50,auto' → [10, 50, 'auto:aimd']: fixed limits (sorted) then adaptive ones."""
    from asyncbench.limiters import ALGORITHMS

    fixed: list[int] = []
    auto: list[str] = []
    for item in text.split(","):
        word = item.strip().lower()
        if word.startswith("auto"):
            algorithm = word.partition(":")[2] or "aimd"
            if word not in ("auto", f"auto:{algorithm}") or algorithm not in ALGORITHMS:
                raise UsageError(f"invalid --concurrency value {item.strip()!r} in {text!r}: expected a whole number, "
                                 f"auto, {', '.join(f'auto:{a}' for a in ALGORITHMS)}")
            if f"auto:{algorithm}" not in auto:
                auto.append(f"auto:{algorithm}")
        else:
            fixed += parse_int_list("--concurrency", item, maximum=10_000)
    return [*sorted(set(fixed)), *auto]


def concurrency_label(concurrency: Concurrency) -> str:
    """For file names: 25, auto-aimd."""
    return str(concurrency).replace(":", "-")


Line = tuple[int, str, bool]  # a chunk's number, its JSONL line, whether it has an embedding


def _openai_lines(group: list[tuple[int, str]], result: FetchResult) -> tuple[list[Line], int | None]:
    """A line per chunk of an OpenAI-style request, by `index`; and the tokens its `usage` says.
    An answer of another shape fails its chunks as `other`, with the reason."""
    if not result.ok:
        line = {"error": result.error, "status": result.status, "detail": result.detail}
        return [(i, json.dumps({"id": i, **line}) + "\n", False) for i, _ in group], None
    try:
        body = result.json()
        data = body["data"]
        if not isinstance(data, list):
            raise TypeError("data is not a list")
        by_index = {int(d["index"]): d["embedding"] for d in data}
        usage = body.get("usage") or {}
        reported = int(usage["total_tokens"]) if "total_tokens" in usage else None
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"the answer is not an embeddings list ({type(exc).__name__}: {exc})"
        return [(i, json.dumps({"id": i, "error": "other", "detail": detail}) + "\n", False) for i, _ in group], None
    lines = []
    for k, (i, text) in enumerate(group):
        if k in by_index:
            lines.append((i, json.dumps({"id": i, "embedding": by_index[k], "tokens": tokens_of(text)},
                                        separators=(",", ":")) + "\n", True))
        else:
            lines.append((i, json.dumps({"id": i, "error": "other", "detail": f"no data with index {k} in the answer"})
                          + "\n", False))
    return lines, reported


def _jsonl_line(ident: int, result: FetchResult) -> Line:
    if result.ok:
        try:
            embedding = result.json()["embedding"]
            return ident, json.dumps({"id": ident, "embedding": embedding}, separators=(",", ":")) + "\n", True
        except (ValueError, KeyError, TypeError):
            return ident, json.dumps({"id": ident, "error": "other", "detail": "response has no embedding"}) + "\n", False
    line = {"id": ident, "error": result.error, "status": result.status, "detail": result.detail}
    return ident, json.dumps(line) + "\n", False


@contextmanager
def _closing(sink: WholeLines) -> Iterator[WholeLines]:
    try:
        yield sink
    finally:
        sink.close()


async def run_pair(
    spec: PipelineSpec, source: Path, *, chunk_bytes: int, batch_size: int, concurrency: Concurrency,
    output: Path, input_mb: float, progress: PairProgress, done: Done | None = None,
) -> PairResult:
    """Stream `source` through the pipeline once; each result goes to `output` as it completes.
    An adaptive `concurrency` ("auto:aimd") lets its limiter set the requests in flight. With
    `done` (a resume), the chunks it holds are skipped and the output is appended to."""
    from asyncbench.client import AsyncHttpClient
    from asyncbench.limiters import Fixed, Limiter, make_limiter
    from asyncbench.metrics import LatencyHistogram
    from asyncbench.results import WholeLines
    from asyncbench.system import PeakRss

    rss = PeakRss()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    latency = LatencyHistogram()
    successes = attempts = n_batches = 0
    limiter: Limiter = (make_limiter(concurrency.partition(":")[2], 10, 1000) if isinstance(concurrency, str)
                        else Fixed(concurrency))
    limits = 0  # the limit as each chunk ended, added up: its mean is the row's concurrency
    chunks = throttled = tokens = 0
    waited = 0.0
    openai = spec.api == "openai"
    per_request = spec.inputs_per_request if openai else 1
    budget = ClientBudget(spec.rpm, spec.tpm) if (openai or spec.rpm or spec.tpm) else None
    started = _perf()
    # A whole line at a time: the file is valid JSONL after Ctrl-C or a full disk too.
    sink = WholeLines(output, append=done is not None)
    with open(source, "rb") as stream, _closing(sink):
        # With a budget, every attempt (retries too) waits for it and for what the server said:
        # the retries are made here, not by the client.
        async with AsyncHttpClient(limiter=limiter, timeout=spec.timeout, retries=0 if budget else spec.retries,
                                   headers=spec.headers,
                                   on_response=budget.observe if budget is not None else None) as client:

            async def send(payload: Any, estimate: int) -> FetchResult:
                nonlocal waited, attempts, throttled
                async def pace() -> None:
                    nonlocal waited
                    if budget is not None:
                        waited += await budget.acquire(estimate)

                for attempt in range(spec.retries + 1):
                    result = await client.fetch(spec.url, method="POST", json=payload, before=pace)
                    attempts += result.attempts
                    throttled += result.throttled
                    progress.throttled = throttled
                    if (result.ok or budget is None or attempt == spec.retries
                            or not RetryPolicy.retryable(result.error or "other", result.status)):
                        return result
                    if result.status != 429:  # a 429's wait is the budget's pause (its Retry-After)
                        await asyncio.sleep(random.uniform(0.0, min(5.0, 0.05 * 2 ** attempt)))
                return result

            async def post(group: list[tuple[int, str]], held: dict[int, str] | None) -> None:
                nonlocal successes, limits, chunks, tokens
                estimate = sum(tokens_of(text) for _, text in group)
                if openai:
                    payload: Any = {"model": spec.model, "input": [text for _, text in group]}
                else:
                    payload = {"id": group[0][0], "text": group[0][1]}
                result = await send(payload, estimate)
                if openai:
                    lines, reported = _openai_lines(group, result)
                    if reported is not None and budget is not None:
                        budget.reconcile(estimate, reported)
                else:
                    lines, reported = [_jsonl_line(group[0][0], result)], None
                tokens += reported if reported is not None else (estimate if result.ok else 0)
                for ident, line, ok in lines:
                    if held is not None:
                        held[ident] = line
                    else:
                        sink.write(line)  # one write per line: whole even if the run is cancelled after it
                    successes += ok
                latency.record(result.latency_s)
                chunks += len(group)
                limits += limiter.limit * len(group)
                progress.done += len(group)

            for batch in batches(clean(read_chunks(stream, chunk_bytes)), batch_size):
                n_batches += 1
                todo = [(i, text) for i, text in batch if done is None or i not in done]
                progress.done += len(batch) - len(todo)
                held: dict[int, str] | None = {} if spec.ordered else None
                try:
                    # A task group: when one post fails to write, the batch's others are cancelled.
                    async with asyncio.TaskGroup() as group:
                        for k in range(0, len(todo), per_request):
                            group.create_task(post(todo[k:k + per_request], held))
                except ExceptionGroup as failed:
                    raise failed.exceptions[0] from None
                if held:
                    for ident in sorted(held):
                        sink.write(held[ident])
    elapsed = _perf() - started
    peak = tracemalloc.get_traced_memory()[1]
    if not tracing:
        tracemalloc.stop()
    return PairResult(
        experiment=EXPERIMENT.name,
        input_mb=input_mb,
        batch_size=batch_size,
        concurrency=concurrency if isinstance(concurrency, int) else round(limits / chunks) if chunks else 0,
        chunks=chunks,
        successes=successes,
        failures=chunks - successes,
        success_rate=successes / chunks if chunks else 1.0,
        batches=n_batches,
        attempts=attempts,
        elapsed_s=elapsed,
        throughput_cps=chunks / elapsed if elapsed > 0 else 0.0,
        latency_p50_s=latency.quantile(0.5),
        latency_p99_s=latency.quantile(0.99),
        peak_traced_mb=max(0.0, peak - baseline) / (1024 * 1024),
        peak_rss_mb=rss.peak_mb(),
        output=str(output),
        limiter="fixed" if isinstance(concurrency, int) else concurrency.partition(":")[2],
        throttled=throttled,
        waited_s=waited,
        tokens=tokens,
        tokens_per_min=60 * tokens / elapsed if elapsed > 0 else 0.0,
        resumed=done.count if done is not None else 0,
        limited_by=_limited_by(budget, throttled, latency.mean * latency.count,
                               60 * attempts / elapsed if elapsed > 0 else 0.0,
                               60 * tokens / elapsed if elapsed > 0 else 0.0),
    )


def _limited_by(budget: ClientBudget | None, throttled: int, busy_s: float, requests_per_min: float,
                tokens_per_min: float) -> str:
    """What held a run back: the limit its rates ran at — the client's budget, or the server's
    when lower (ClientBudget.binding) — else the server when it said no (429s, or waits it
    asked for beyond a tenth of the time on the wire), else the concurrency."""
    if budget is not None:
        bound = budget.binding(requests_per_min, tokens_per_min)
        if bound is not None:
            return bound
        if budget.waited_budget > 0.1 * busy_s and budget.waited_budget >= budget.waited_server:
            return "budget"
    if throttled or (budget is not None and budget.waited_server > 0.1 * busy_s):
        return "server"
    return "concurrency"


@dataclass
class PairProgress:
    """What the live display polls while a pair runs."""

    done: int = 0  # chunks finished (or skipped by a resume)
    throttled: int = 0  # answers 429

    def note(self) -> str:
        return f"{self.throttled:,} × 429" if self.throttled else ""


@dataclass
class PipelineConfig:
    request: PipelineSpec
    inputs: list[tuple[Path, float]]  # (file, size in MiB)
    chunk_bytes: int = 1024
    batch_sizes: list[int] = field(default_factory=lambda: [50])
    concurrency: list[Concurrency] = field(default_factory=lambda: [25])
    output_for: dict[tuple[float, int, Concurrency], Path] = field(default_factory=dict)
    cooldown: float = 0.0
    done: Done | None = None  # --resume: the chunks the output already holds


async def run(config: PipelineConfig, events: StepEvents) -> list[PairResult]:
    """Every (input, batch size, concurrency) combination, reported as each finishes."""
    results: list[PairResult] = []
    for source, size_mb in config.inputs:
        for batch_size in config.batch_sizes:
            for concurrency in config.concurrency:
                if results and config.cooldown > 0:
                    await asyncio.sleep(config.cooldown)
                progress = PairProgress()
                expected = -(-source.stat().st_size // config.chunk_bytes)
                events.started(f"{report.fmt_mb(size_mb)} MB, batch {batch_size}, c {concurrency}", expected,
                               lambda progress=progress: progress.done, "chunk", progress.note)
                result = await run_pair(
                    config.request, source, chunk_bytes=config.chunk_bytes, batch_size=batch_size,
                    concurrency=concurrency, output=config.output_for[(size_mb, batch_size, concurrency)],
                    input_mb=size_mb, progress=progress, done=config.done,
                )
                results.append(result)
                events.finished(result)
    return results


def command(options: PipelineOptions, request: Annotated[Request, Only("retries", "timeout", "header"), Defaults(retries=3)],
            api: PipelineApi, run_options: PipelineRun, connection: Annotated[Connection, Only("allow_remote")],
            outputs: Outputs, thresholds: Thresholds, server: Server) -> None:
    """Stream a file in chunks to an embedding API in batches, in flat memory (Lab 2.5).

    Every (batch size, concurrency) pair runs; results stream to a JSONL file per pair.
    """
    input_file, generate_mb, output = options.input_file, options.generate_mb, options.output
    if input_file is not None and generate_mb is not None:
        raise UsageError("use --input FILE or --generate-mb N, not both")
    check_range("--chunk-bytes", options.chunk_bytes, 4, 16 * 1024 * 1024)
    batch_list = parse_int_list("--batch-sizes", options.batch_sizes, maximum=100_000)
    conc_list = parse_concurrency(options.concurrency)
    check_range("--retries", request.retries, 0, 100)
    timeout = request.check_timeout()
    check_range("--cooldown", run_options.cooldown, 0, 600)
    if api.api not in ("embed", "openai"):
        raise UsageError(f"invalid --api {api.api!r}: expected embed or openai")
    check_range("--inputs-per-request", api.inputs_per_request, 1, 2048)
    if api.inputs_per_request > 1 and api.api != "openai":
        raise UsageError(f"--inputs-per-request {api.inputs_per_request} needs --api openai (the lab's /embed takes one text)")
    for name, value in (("--rpm", api.rpm), ("--tpm", api.tpm), ("--server-rpm", api.server_rpm),
                        ("--server-tpm", api.server_tpm)):
        check_range(name, value, 0)
    if api.resume:
        if output is None:
            raise UsageError("--resume needs --output FILE: the output of the run to continue")
        from asyncbench.resume import fingerprint_path

        if not output.exists() or not fingerprint_path(output).exists():
            raise UsageError(f"--resume: no earlier output at {str(output)!r} (and its {fingerprint_path(output).name}) "
                             "to continue")
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
        chunk_bytes=options.chunk_bytes, batch_sizes=batch_list, concurrency=conc_list, output=output,
        headers=parse_headers(request.header), timeout=timeout, retries=request.retries, cooldown=run_options.cooldown,
        api=api.api, inputs_per_request=api.inputs_per_request, model=api.model, rpm=api.rpm, tpm=api.tpm,
        resume=api.resume, ordered=api.ordered,
    )
    if output is not None and req.runs > 1:
        raise UsageError(f"--output {str(output)!r} takes one run, but {req.runs} combinations were asked for")
    if output is not None:
        check_output_file(output, "--output")
    config = server.config(rpm=api.server_rpm, tpm=api.server_tpm)
    folders = outputs.outputs()
    plan = PipelinePlan(req, folders.results_dir, options.url is None, check_loop(run_options.loop))
    plan.allow_remote = connection.remote_allowed()
    from asyncbench import session

    session.run(plan, options.url, config, folders, thresholds.expressions())


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


# --- its plan, table, findings and charts -------------------------------------------------------


@dataclass
class PipelineRequest:
    """The validated settings of one `pipeline` command."""

    input_file: Path | None
    sizes: list[float]  # --generate-mb sizes (empty with --input)
    chunk_bytes: int
    batch_sizes: list[int]
    concurrency: list[Concurrency]
    output: Path | None
    headers: dict[str, str]
    timeout: float
    retries: int
    cooldown: float
    api: str = "embed"
    inputs_per_request: int = 1
    model: str = "asyncbench-embedding"
    rpm: float = 0.0
    tpm: float = 0.0
    resume: bool = False
    ordered: bool = False

    @property
    def runs(self) -> int:
        return (1 if self.input_file else len(self.sizes)) * len(self.batch_sizes) * len(self.concurrency)


class PipelinePlan(PlanDefaults):
    """Stream the input(s) through every (batch size, concurrency) pair; a row per pair."""

    blocking = False
    live = True
    latency_file = False

    def __init__(self, req: PipelineRequest, results_dir: Path, embedded: bool, loop: str) -> None:
        self.experiment = EXPERIMENT
        self.req = req
        self.results_dir = results_dir
        self.embedded = embedded
        self.loop = loop
        self.total_steps = req.runs
        self.inputs: list[tuple[Path, float]] = []
        self.endpoint = ""
        self.output_for: dict[tuple[float, int, Concurrency], Path] = {}

    allow_remote = False

    def reach(self) -> Reach:
        from asyncbench.load.route import Reach

        return Reach(allow_remote=self.allow_remote)

    def bind(self, target_url: str, scratch: Path) -> RequestSpec:
        from asyncbench.load.spec import RequestSpec

        req = self.req
        path = "/v1/embeddings" if req.api == "openai" else "/embed"
        self.endpoint = target_url.rstrip("/") + path if self.embedded else target_url
        if req.input_file is not None:
            self.inputs.append((req.input_file, req.input_file.stat().st_size / (1024 * 1024)))
        for size in req.sizes:
            path = scratch / f"generated-{size:g}mb.txt"
            generate_text(path, size)
            self.inputs.append((path, size))
        probe = ({"model": req.model, "input": ["asyncbench pre-flight"]} if req.api == "openai"
                 else {"id": -1, "text": "asyncbench pre-flight"})
        return RequestSpec(url=self.endpoint, method="POST", headers={**req.headers, "Content-Type": "application/json"},
                           data=json.dumps(probe).encode(), timeout=req.timeout)

    def config(self) -> dict[str, Any]:
        req = self.req
        return {
            "input": str(req.input_file) if req.input_file else None,
            "generate_mb": req.sizes or None,
            "chunk_bytes": req.chunk_bytes, "batch_sizes": req.batch_sizes, "concurrency": req.concurrency,
            "retries": req.retries, "timeout_s": req.timeout, "cooldown_s": req.cooldown, "loop": self.loop,
            "api": req.api, "inputs_per_request": req.inputs_per_request, "model": req.model, "rpm": req.rpm,
            "tpm": req.tpm, "resume": req.resume, "ordered": req.ordered,
            "headers": [redact_header(f"{k}: {v}") for k, v in req.headers.items()],
        }

    @property
    def row_type(self) -> type:
        return PairResult

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        req = self.req
        for _, size in self.inputs:
            for b in req.batch_sizes:
                for c in req.concurrency:
                    suffix = f"-{size:g}mb" if len(self.inputs) > 1 else ""
                    self.output_for[(size, b, c)] = (req.output or self.results_dir
                                                     / f"{writer.stem}{suffix}-b{b}-c{concurrency_label(c)}.jsonl")
        done = None
        if req.output is not None:
            from asyncbench.resume import check_resumable, fingerprint, recover, write_fingerprint

            [(source, _)] = self.inputs
            facts = fingerprint(source, req.chunk_bytes)
            if req.resume:
                check_resumable(req.output, facts)
                done = recover(req.output)
            write_fingerprint(req.output, facts)
        config = PipelineConfig(
            request=PipelineSpec(url=self.endpoint, headers=req.headers, timeout=req.timeout, retries=req.retries,
                                 api=req.api, inputs_per_request=req.inputs_per_request, model=req.model, rpm=req.rpm,
                                 tpm=req.tpm, ordered=req.ordered),
            inputs=self.inputs, chunk_bytes=req.chunk_bytes, batch_sizes=req.batch_sizes,
            concurrency=req.concurrency, output_for=self.output_for, cooldown=req.cooldown, done=done,
        )
        return run(config, steps)

    def rows(self, result: Any) -> list[dict[str, Any]]:
        return [asdict(result)]

    def step_done(self, result: Any, done: int) -> tuple[str | None, RenderableType | None]:
        auto = f" (auto:{result.limiter}, on average)" if result.limiter != "fixed" else ""
        return (f"batch {result.batch_size}, concurrency {result.concurrency}{auto}, "
                f"{report.fmt_mb(result.input_mb)} MB done: {result.chunks:,} chunks, "
                f"{result.throughput_cps:,.1f} chunks/s, {result.success_rate * 100:.1f} % ok, "
                f"peak traced {result.peak_traced_mb:.2f} MB{_budget_words(result)} "
                f"({done} of {self.total_steps} runs)"), None

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        req = self.req
        findings = pipeline_findings(results)
        metadata = {"findings": findings, "outputs": [str(p) for p in self.output_for.values()]}
        source = f"{req.input_file}" if req.input_file else "generated text"
        path = "/v1/embeddings" if req.api == "openai" else "/embed"
        target = f"embedded server {path}" if self.embedded else redact_url(self.endpoint)
        shown: list[RenderableType] = [pipeline_table(
            results, f"pipeline: {source} → {target}{' — interrupted' if interrupted else ''}")]
        shown += findings
        for r in results:
            if r.limited_by != "concurrency" or r.throttled or r.resumed:
                shown.append(f"batch {r.batch_size}, concurrency {r.concurrency}: {limited_words(r)}")
        if results and not findings:
            best = max(results, key=lambda r: r.throughput_cps)
            shown.append(f"{best.chunks:,} chunks in {best.elapsed_s:.1f} s at {best.success_rate * 100:.1f} % success; "
                         f"peak traced memory {best.peak_traced_mb:.2f} MB above baseline")
        return Conclusion(metadata, shown, files=sorted({Path(r.output) for r in results}))


def limited_words(r: Any) -> str:
    """What held a run back, in words, with what the budget went on."""
    why = {"budget": "limited by the client's budget (--rpm/--tpm)", "server": "limited by the server's rate limit",
           "concurrency": "limited by the concurrency"}.get(str(r.limited_by), str(r.limited_by))
    parts = [why, f"{int(r.throttled):,} × 429", f"waited {float(r.waited_s):,.1f} s (summed over requests)",
             f"{int(r.tokens):,} tokens, {float(r.tokens_per_min):,.0f} a minute"]
    if int(r.resumed or 0):
        parts.append(f"{int(r.resumed):,} chunks already in the output, not sent again")
    return "; ".join(parts)


def _budget_words(r: Any) -> str:
    if not (r.throttled or r.waited_s or r.resumed):
        return ""
    return f", {r.throttled:,} × 429, waited {r.waited_s:,.1f} s, {r.tokens:,} tokens"


def pipeline_findings(rows: Sequence[Any]) -> list[str]:
    """What the pipeline sweeps show about memory: flat across input sizes and batch sizes,
    growing with concurrency. Each finding compares rows that differ in one setting only."""
    findings: list[str] = []

    names = {"input_mb": ("input", " MB"), "batch_size": ("batch size", ""), "concurrency": ("concurrency", "")}

    def compare(axis: str) -> None:
        groups: dict[tuple[Any, ...], list[Any]] = {}
        others = [a for a in names if a != axis]
        for r in rows:
            groups.setdefault(tuple(getattr(r, a) for a in others), []).append(r)
        swept = {k: g for k, g in groups.items() if len(g) > 1}
        if not swept:
            return
        # At the largest other settings: there a change in this one has the most room to show
        # (concurrency above the batch size, say, cannot take effect).
        key = max(swept)
        group = sorted(swept[key], key=lambda r: getattr(r, axis))
        lo, hi = group[0], group[-1]
        x_lo, x_hi = getattr(lo, axis), getattr(hi, axis)
        label, unit = names[axis]
        at = ", ".join(f"{names[a][0]} {report.fmt_mb(v) if a == 'input_mb' else f'{v:g}'}{names[a][1]}"
                       for a, v in zip(others, key, strict=True))
        change = (hi.peak_traced_mb / lo.peak_traced_mb) if lo.peak_traced_mb > 0 else float("inf")
        findings.append(
            f"{label} {x_lo:g}{unit} → {x_hi:g}{unit} (×{x_hi / x_lo:g}, at {at}): peak traced memory "
            f"{lo.peak_traced_mb:.2f} → {hi.peak_traced_mb:.2f} MB (×{change:.2f}), "
            f"throughput {lo.throughput_cps:,.0f} → {hi.throughput_cps:,.0f} chunks/s"
        )

    for axis in names:
        compare(axis)
    return findings


def pipeline_table(rows: Sequence[Any], title: str) -> report.FitTable:
    """One row per (input, batch size, concurrency): throughput and memory."""
    table = report.FitTable(title, keys=3)
    for header in ("input\nMB", "batch", "conc.", "chunks", "ok\n%", "chunks\n/s", "p50\nms",
                   "p99\nms", "traced\nMB", "RSS\nMB"):
        table.add_column(header, justify="right")
    for r in rows:
        cells = (
            report.fmt_mb(r.input_mb),
            f"{r.batch_size:,}",
            (f"auto {int(r.concurrency):,}" if getattr(r, "limiter", "fixed") not in ("fixed", "") else
             f"{int(r.concurrency):,}"),
            f"{r.chunks:,}",
            report.fmt_pct(r.success_rate),
            report.fmt_rate(r.throughput_cps),
            report.fmt_ms(r.latency_p50_s),
            report.fmt_ms(r.latency_p99_s),
            f"{r.peak_traced_mb:.2f}",
            f"{r.peak_rss_mb:.1f}",
        )
        table.add_row(*cells, style=None if r.success_rate == 1.0 else "red")
    return table


_PIPELINE_AXES = {
    "input_mb": ("input size (MB)", "input"),
    "batch_size": ("batch size (chunks)", "batch"),
    "concurrency": ("concurrency (requests in flight)", "concurrency"),
}


def pipeline_sweep_chart(run: Run, out_dir: Path, axis: str) -> Path:
    """Throughput and peak traced memory against one setting, a line per value of the others."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    from asyncbench import plots

    df = run.frame
    xlabel, chart = _PIPELINE_AXES[axis]
    others = [a for a in _PIPELINE_AXES if a != axis]
    fig, (left, right) = plots.plt.subplots(1, 2, figsize=(12, 4.8))
    for i, (key, group) in enumerate(df.groupby(others, sort=True)):
        group = group.sort_values(axis)
        label = ", ".join(f"{_PIPELINE_AXES[a][1]} {report.fmt_mb(v) + ' MB' if a == 'input_mb' else f'{v:g}'}"
                          for a, v in zip(others, key, strict=True))
        style = dict(marker=plots.MARKERS[i % len(plots.MARKERS)], color=plots.CYCLE[i % len(plots.CYCLE)], label=label)
        left.plot(group[axis], group["throughput_cps"], **style)
        right.plot(group[axis], group["peak_traced_mb"], **style)
    for ax in (left, right):
        values = sorted(df[axis].unique())
        if len(values) > 1 and values[-1] / values[0] >= 4:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: report.fmt_mb(v) if axis == "input_mb" else plots.thousands(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        plots.plain_y(ax)
        ax.set_xlabel(xlabel)
    # Start at zero (flat must look flat) with headroom above the highest point.
    left.set_ylim(0, max(df["throughput_cps"].max(), 1e-9) * 1.15)
    right.set_ylim(0, max(df["peak_traced_mb"].max(), 1e-9) * 1.15)
    left.set_ylabel("throughput (chunks per second)")
    right.set_ylabel("peak traced memory above baseline (MB)")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.suptitle(f"Pipeline throughput and memory vs {xlabel.split(' (')[0]}", fontsize=12,
                 fontweight="bold", x=0.01, ha="left")
    fig.text(0.01, 0.925, f"{plots.target_label(run.meta)} · {run.stem}", fontsize=8.5, color="#444444", ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return plots.save(fig, out_dir, f"{run.stem}-{chart}")


def pipeline_charts(run: Run, out_dir: Path) -> list[Path]:
    """The lab's sweeps: one chart per setting that varied (batch size, concurrency, input size).
    A setting that did not vary would draw one dot: none is drawn."""

    swept = [a for a in _PIPELINE_AXES if run.frame[a].nunique() > 1]
    return [pipeline_sweep_chart(run, out_dir, axis) for axis in swept]


def _charts(run: Any, out_dir: Path, min_success: float | None) -> list[Path]:
    return pipeline_charts(run, out_dir)


def _summary(run: Any) -> list[Any]:
    rows = run.rows()
    findings = run.meta.get("findings")
    return [pipeline_table(rows, f"pipeline: {len(rows)} runs"),
            *(str(f) for f in (findings if isinstance(findings, list) else []))]


EXPERIMENT = Experiment(
    name="pipeline", completed_key="pairs_completed", step="run",
    required=("experiment", "input_mb", "batch_size", "concurrency", "chunks", "success_rate",
              "throughput_cps", "peak_traced_mb", "peak_rss_mb"),
    sort_by=("input_mb", "batch_size", "concurrency"), charts=_charts,
    row_keys=("input_mb", "batch_size", "concurrency"), summary=_summary, command=command,
)



