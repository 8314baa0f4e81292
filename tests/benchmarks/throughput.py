"""Is asyncbench a load engine that costs nothing to measure with?

Mode `rate` (default): nginx from Debian's packages on 127.0.0.1 (`return 200` of a short body);
alternating, in one run: (a) asyncbench `semaphore --limits 50` over enough requests to last
several seconds, (b) a bare aiohttp loop (50 workers on one session, no instrumentation) for the
same time, (c) wrk at 50 connections. Prints req/s of each, the ratios asyncbench/bare and
asyncbench/wrk (medians of the pairs) and asyncbench's CPU use.

Mode `memory`: peak RSS of `semaphore --limits 100` for N and 10·N requests, and of `trap` at
one level for 1 and 5 rounds.

    python tests/benchmarks/throughput.py [--pairs 3] [--seconds 5] [--loop asyncio|uvloop]
    python tests/benchmarks/throughput.py --mode memory [--requests 5000]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

from _peers import asyncbench_semaphore, bare_aiohttp, median, nginx, wrk


def rate(args: argparse.Namespace) -> None:
    concurrency = 50
    extra = ["--loop", args.loop] if args.loop else []
    with nginx() as url:
        # Size asyncbench's run to the time asked for, from a short calibration run.
        probe = asyncbench_semaphore(url, concurrency, 2000, extra)
        requests = max(5000, int(probe["rps"] * args.seconds))
        ab, bare, wk = [], [], []
        for i in range(args.pairs):
            ab.append(asyncbench_semaphore(url, concurrency, requests, extra))
            bare.append(bare_aiohttp(url, concurrency, args.seconds))
            wk.append(wrk(url, concurrency, args.seconds))
            print(f"pair {i + 1}: asyncbench {ab[-1]['rps']:8.0f} req/s (CPU {ab[-1]['cpu_pct']:.0f} %) | "
                  f"bare aiohttp {bare[-1]['rps']:8.0f} req/s (CPU {bare[-1]['cpu_pct']:.0f} %) | "
                  f"wrk {wk[-1]['rps']:8.0f} req/s", flush=True)
    a, b, w = (median([r["rps"] for r in xs]) for xs in (ab, bare, wk))
    print()
    print(f"nginx on 127.0.0.1, 50 concurrent, {args.pairs} alternating pairs, "
          f"asyncbench {requests} requests per run, loop {args.loop or 'default'} (medians)")
    print(f"  asyncbench      {a:9.0f} req/s   CPU {median([r['cpu_pct'] for r in ab]):.0f} % of a core")
    print(f"  bare aiohttp    {b:9.0f} req/s   CPU {median([r['cpu_pct'] for r in bare]):.0f} % of a core")
    print(f"  wrk             {w:9.0f} req/s")
    print(f"  ratio asyncbench/bare  {a / b:.3f}")
    print(f"  ratio asyncbench/wrk   {a / w:.3f}")


def _trap_peak(url: str, level: int, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "asyncbench", "trap", url, "--levels", str(level), "--rounds", str(rounds),
             "--cooldown", "0", "--no-plot", "--results-dir", tmp], check=True, capture_output=True,
        )
        [path] = [p for p in Path(tmp).glob("trap-*.csv") if not p.stem.endswith("latency")]
        with open(path, newline="") as f:
            return float(next(csv.DictReader(f))["peak_rss_mb"])


def memory(args: argparse.Namespace) -> None:
    n = args.requests
    with nginx() as url:
        small = median([asyncbench_semaphore(url, 100, n)["peak_rss_mb"] for _ in range(3)])
        large = median([asyncbench_semaphore(url, 100, 10 * n)["peak_rss_mb"] for _ in range(3)])
        one = _trap_peak(url, 1000, 1)
        five = _trap_peak(url, 1000, 5)
        level_small = _trap_peak(url, 100, 1)
    print(f"semaphore --limits 100: peak RSS {small:.1f} MB for {n} requests, "
          f"{large:.1f} MB for {10 * n} (+{large - small:.1f} MB; must be < 10)")
    print(f"trap level 1000: peak RSS {one:.1f} MB for 1 round, {five:.1f} MB for 5 rounds "
          f"(+{five - one:.1f} MB); level 100: {level_small:.1f} MB (grows with the level)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("rate", "memory"), default="rate")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default=None)
    args = parser.parse_args()
    (rate if args.mode == "rate" else memory)(args)


if __name__ == "__main__":
    main()
