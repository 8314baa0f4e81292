"""Lab 2.5, the ingestion pipeline: a file streamed in chunks to an embedding API in flat memory.

Stages are generators — read → clean → batch — so the file is never held in memory. Batches are
taken one at a time with `itertools.islice`; a batch's chunks are posted concurrently through
AsyncHttpClient (at most `concurrency` in flight) and each result is appended to a JSONL file the
moment it arrives. The next batch is read only when the current one is done, so memory is bounded
by batch size × concurrency, never by the input's size.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from asyncbench.client import AsyncHttpClient, FetchResult
from asyncbench.experiments.descriptor import Experiment, StepEvents
from asyncbench.metrics import LatencyHistogram, fmt_mb
from asyncbench.results import WholeLines
from asyncbench.system import PeakRss


def _charts(run: Any, out_dir: Path, min_success: float | None) -> list[Path]:
    from asyncbench import plots

    return plots.pipeline_charts(run, out_dir)


def _summary(run: Any) -> list[Any]:
    from asyncbench import report

    rows = run.rows()
    findings = run.meta.get("findings")
    return [report.pipeline_table(rows, f"pipeline: {len(rows)} runs"),
            *(str(f) for f in (findings if isinstance(findings, list) else []))]


_perf = time.perf_counter
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


EXPERIMENT = Experiment(
    name="pipeline", completed_key="pairs_completed", step="run",
    required=("experiment", "input_mb", "batch_size", "concurrency", "chunks", "success_rate",
              "throughput_cps", "peak_traced_mb", "peak_rss_mb"),
    sort_by=("input_mb", "batch_size", "concurrency"), charts=_charts,
    row_keys=("input_mb", "batch_size", "concurrency"), summary=_summary,
)



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


def _jsonl_line(ident: int, result: FetchResult) -> str:
    if result.ok:
        try:
            embedding = result.json()["embedding"]
            return json.dumps({"id": ident, "embedding": embedding}, separators=(",", ":")) + "\n"
        except (ValueError, KeyError, TypeError):
            return json.dumps({"id": ident, "error": "other", "detail": "response has no embedding"}) + "\n"
    return json.dumps({"id": ident, "error": result.error, "status": result.status, "detail": result.detail}) + "\n"


@contextmanager
def _closing(sink: WholeLines) -> Iterator[WholeLines]:
    try:
        yield sink
    finally:
        sink.close()


async def run_pair(
    spec: PipelineSpec, source: Path, chunk_bytes: int, batch_size: int, concurrency: int,
    output: Path, input_mb: float, progress: list[int],
) -> PairResult:
    """Stream `source` through the pipeline once; each result goes to `output` as it completes."""
    rss = PeakRss()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    latency = LatencyHistogram()
    successes = attempts = n_batches = 0
    started = _perf()
    # A whole line at a time: the file is valid JSONL after Ctrl-C or a full disk too.
    sink = WholeLines(output)
    with open(source, "rb") as stream, _closing(sink):
        async with AsyncHttpClient(max_concurrency=concurrency, timeout=spec.timeout, retries=spec.retries,
                                   headers=spec.headers) as client:

            async def post(ident: int, text: str) -> None:
                nonlocal successes, attempts
                result = await client.fetch(spec.url, method="POST", json={"id": ident, "text": text})
                # One write per line: a line is whole even if the run is cancelled after it.
                sink.write(_jsonl_line(ident, result))
                latency.record(result.latency_s)
                attempts += result.attempts
                successes += result.ok
                progress[0] += 1

            for batch in batches(clean(read_chunks(stream, chunk_bytes)), batch_size):
                n_batches += 1
                try:
                    # A task group: when one post fails to write, the batch's others are cancelled.
                    async with asyncio.TaskGroup() as group:
                        for i, text in batch:
                            group.create_task(post(i, text))
                except ExceptionGroup as failed:
                    raise failed.exceptions[0] from None
    elapsed = _perf() - started
    peak = tracemalloc.get_traced_memory()[1]
    if not tracing:
        tracemalloc.stop()
    chunks = latency.count
    return PairResult(
        experiment=EXPERIMENT.name,
        input_mb=input_mb,
        batch_size=batch_size,
        concurrency=concurrency,
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
    )


@dataclass
class PipelineConfig:
    request: PipelineSpec
    inputs: list[tuple[Path, float]]  # (file, size in MiB)
    chunk_bytes: int = 1024
    batch_sizes: list[int] = field(default_factory=lambda: [50])
    concurrency: list[int] = field(default_factory=lambda: [25])
    output_for: dict[tuple[float, int, int], Path] = field(default_factory=dict)
    cooldown: float = 0.0


async def run(config: PipelineConfig, events: StepEvents) -> list[PairResult]:
    """Every (input, batch size, concurrency) combination, reported as each finishes."""
    results: list[PairResult] = []
    for source, size_mb in config.inputs:
        for batch_size in config.batch_sizes:
            for concurrency in config.concurrency:
                if results and config.cooldown > 0:
                    await asyncio.sleep(config.cooldown)
                progress = [0]
                expected = -(-source.stat().st_size // config.chunk_bytes)
                events.started(f"{fmt_mb(size_mb)} MB, batch {batch_size}, concurrency {concurrency}", expected,
                               lambda progress=progress: progress[0])
                result = await run_pair(
                    config.request, source, config.chunk_bytes, batch_size, concurrency,
                    config.output_for[(size_mb, batch_size, concurrency)], size_mb, progress,
                )
                results.append(result)
                events.finished(result)
    return results
