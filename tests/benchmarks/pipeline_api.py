"""The pipeline against a rate-limited OpenAI-style API, against the approach most people copy.

The embedded server's /v1/embeddings at `--server-rpm 3000 --server-tpm 600000` (tokens are the
tighter limit: 10,000 a second), 2 MB of generated text in 512-byte chunks, one chunk a request:

1. `asyncbench pipeline --api openai` with the same budgets on the client: its time against the
   time the token limit allows (goal <= 1.05 ×), its 429s (goal <= 1 % of requests), chunks lost
   (goal 0) and sent twice (the server's count of embedded inputs against the chunks; goal 0).
2. The same data through a re-implementation of openai-cookbook's
   api_request_parallel_processor.py as it is described: two buckets holding a minute's worth,
   refilled continuously, a 15 s pause of everything after a 429, no header read.
   It pauses everything for 15 s after each 429, so it is given `--cookbook-s` seconds (120)
   and its pace is projected to the whole input.
3. A `kill -9` at half way, then `--resume`: every chunk once in the output, the server's count
   at most the chunks plus the requests that were in flight.
4. Memory flat in input size: a sparse file of `--sparse-gb` GiB (1) against one of 8 MiB, in
   1 MiB chunks to an unlimited server: peak traced memory and peak RSS of each.

    python tests/benchmarks/pipeline_api.py [--mb 2] [--concurrency 50] [--cookbook-s 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from asyncbench.ratelimit import tokens_of
from asyncbench.server import EmbeddedServer, ServerConfig

RPM, TPM = 3000, 600_000


def stats(url: str, reset: bool = False) -> dict:
    request = urllib.request.Request(url + "/stats", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def chunks_of(path: Path, chunk_bytes: int) -> list[str]:
    from asyncbench.experiments.pipeline import clean, read_chunks

    with open(path, "rb") as f:
        return list(clean(read_chunks(f, chunk_bytes)))


def asyncbench_run(url: str, source: Path, out: Path, concurrency: int, extra: list[str] | None = None,
                   wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    args = [sys.executable, "-m", "asyncbench", "pipeline", "--api", "openai", url + "/v1/embeddings", "--input",
            str(source), "--chunk-bytes", "512", "--batch-sizes", "500", "--concurrency", str(concurrency),
            "--rpm", str(RPM), "--tpm", str(TPM), "--no-plot", "--results-dir", str(out.parent), "--output", str(out),
            *(extra or [])]
    if wait:
        return subprocess.run(args, capture_output=True, text=True, check=True)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def cookbook(url: str, texts: list[str], concurrency: int, deadline_s: float) -> dict:
    """Two buckets of a minute's capacity each, refilled continuously; a 429 pauses every send
    for 15 s; the rate-limit headers are not read. Stops sending after `deadline_s`."""
    import aiohttp

    capacity = {"requests": float(RPM), "tokens": float(TPM)}
    stamp = time.monotonic()
    pause_until = 0.0
    throttled = 0
    done = 0
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(texts):
        queue.put_nowait(item)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal stamp, pause_until, throttled, done
        while not queue.empty() and time.monotonic() < started + deadline_s:
            i, text = await queue.get()
            cost = tokens_of(text)
            while True:
                now = time.monotonic()
                if now < pause_until:
                    await asyncio.sleep(pause_until - now)
                    continue
                elapsed, stamp = now - stamp, now
                capacity["requests"] = min(RPM, capacity["requests"] + RPM * elapsed / 60)
                capacity["tokens"] = min(TPM, capacity["tokens"] + TPM * elapsed / 60)
                if capacity["requests"] >= 1 and capacity["tokens"] >= cost:
                    capacity["requests"] -= 1
                    capacity["tokens"] -= cost
                    break
                await asyncio.sleep(0.001)
            async with session.post(url + "/v1/embeddings", json={"model": "m", "input": [text]}) as resp:
                await resp.read()
                if resp.status == 429:
                    throttled += 1
                    pause_until = time.monotonic() + 15  # the cookbook's pause after a rate-limit error
                    queue.put_nowait((i, text))
                    continue
            done += 1

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return {"elapsed_s": time.monotonic() - started, "throttled": throttled, "done": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--cookbook-s", type=float, default=120.0)
    parser.add_argument("--sparse-gb", type=float, default=1.0)
    args = parser.parse_args()
    from asyncbench.experiments.pipeline import generate_text

    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(ServerConfig(latency=0.02, capacity=1000, queue=1000,
                                                                             rpm=RPM, tpm=TPM)) as url:
        work = Path(tmp)
        source = work / "input.txt"
        generate_text(source, args.mb)
        texts = chunks_of(source, 512)
        tokens = sum(tokens_of(t) for t in texts)
        allowed = max(len(texts) / (RPM / 60), tokens / (TPM / 60))
        print(f"{len(texts):,} chunks, {tokens:,} tokens: the tighter limit allows {allowed:.1f} s "
              f"({'tokens' if tokens / (TPM / 60) >= len(texts) / (RPM / 60) else 'requests'})")

        stats(url, reset=True)
        out = work / "out.jsonl"
        time.sleep(1.1)  # the server's buckets full again
        asyncbench_run(url, source, out, args.concurrency)
        meta = json.loads(max(work.glob("pipeline-*.json")).read_text())
        row = _csv_row(max(work.glob("pipeline-*.csv")))
        seen = stats(url)
        ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        elapsed = float(row["elapsed_s"])
        requests = int(row["attempts"])
        print(f"asyncbench: {elapsed:.2f} s = {elapsed / allowed:.3f} × the limit's time (goal <= 1.05), "
              f"{int(row['throttled'])} × 429 of {requests:,} requests ({int(row['throttled']) / requests:.2%}; goal "
              f"<= 1 %), {len(texts) - len(set(ids)):,} chunks lost, {seen['embedded_inputs'] - 1 - len(texts):,} sent "
              f"twice (server count {seen['embedded_inputs'] - 1:,} for {len(texts):,} chunks), limited by "
              f"{row['limited_by']}; status {meta['status']}")

        stats(url, reset=True)
        time.sleep(1.1)
        book = asyncio.run(cookbook(url, texts, args.concurrency, args.cookbook_s))
        pace = book["done"] / book["elapsed_s"]
        whole = len(texts) / pace if pace else float("inf")
        print(f"cookbook-style: {book['done']:,} of {len(texts):,} chunks in {book['elapsed_s']:.1f} s "
              f"({pace:.1f} chunks/s, {book['throttled']:,} × 429): the whole input at that pace "
              f"{whole:.0f} s = {whole / allowed:.1f} × the limit's time")

        stats(url, reset=True)
        time.sleep(1.1)
        out2 = work / "resumed.jsonl"
        proc = asyncbench_run(url, source, out2, args.concurrency, wait=False)
        while not out2.exists() or out2.read_bytes().count(b"\n") < len(texts) // 2:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = out2.read_bytes().count(b"\n")
        asyncbench_run(url, source, out2, args.concurrency, extra=["--resume"])
        ids = [json.loads(line)["id"] for line in out2.read_text().splitlines()]
        count = stats(url)["embedded_inputs"] - 2  # less the two pre-flights
        print(f"kill -9 at {killed_at:,} of {len(texts):,} chunks, then --resume: {len(ids):,} lines, "
              f"{len(set(ids)):,} distinct, {len(texts) - len(set(ids)):,} missing; the server embedded {count:,} "
              f"(at most {len(texts) + args.concurrency:,}: the chunks plus those in flight)")

    memory(args.sparse_gb)


def memory(sparse_gb: float) -> None:
    """The same pipeline over a small and a large sparse file: its memory must not follow the size."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(ServerConfig(capacity=1000, queue=1000)) as url:
        figures = []
        for name, size in (("8 MiB", 8 << 20), (f"{sparse_gb:g} GiB", int(sparse_gb * (1 << 30)))):
            source = Path(tmp) / f"sparse-{size}.txt"
            with open(source, "wb") as f:
                f.truncate(size)
            out = Path(tmp) / f"out-{size}" / "out.jsonl"
            out.parent.mkdir()
            subprocess.run([sys.executable, "-m", "asyncbench", "pipeline", "--api", "openai", url + "/v1/embeddings",
                            "--input", str(source), "--chunk-bytes", str(1 << 20), "--batch-sizes", "64",
                            "--concurrency", "16", "--no-plot", "--results-dir", str(out.parent), "--output", str(out)],
                           capture_output=True, text=True, check=True)
            row = _csv_row(max(out.parent.glob("pipeline-*.csv")))
            figures.append((name, int(row["chunks"]), float(row["peak_traced_mb"]), float(row["peak_rss_mb"])))
        for name, chunks, traced, rss in figures:
            print(f"memory, {name} sparse input ({chunks:,} chunks of 1 MiB): peak traced {traced:.1f} MB, "
                  f"peak RSS {rss:.0f} MB")
        print(f"memory ratio large/small: traced {figures[1][2] / figures[0][2]:.2f} ×, RSS "
              f"{figures[1][3] / figures[0][3]:.2f} × for {figures[1][1] / figures[0][1]:.0f} × the input")


def _csv_row(path: Path) -> dict:
    import csv

    with open(path, newline="") as f:
        return next(csv.DictReader(f))


if __name__ == "__main__":
    main()
