"""Light load, same target: does asyncbench report the latency wrk reports?

The embedded server at --latency 0.05, concurrency 10; alternating runs of asyncbench
`semaphore --limits 10`, wrk -c10 and a bare aiohttp loop (throughput only). Prints each p50 and
the difference; they should agree within 3 ms.

    python tests/benchmarks/p50_vs_wrk.py [--pairs 3] [--seconds 5]
"""

from __future__ import annotations

import argparse

from _peers import asyncbench_semaphore, bare_aiohttp, median, wrk

from asyncbench.server import EmbeddedServer, ServerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    concurrency, latency = 10, 0.05
    requests = int(args.seconds * concurrency / latency)
    ab, wk, bare = [], [], []
    with EmbeddedServer(ServerConfig(latency=latency)) as url:
        url += "/"
        for i in range(args.pairs):
            ab.append(asyncbench_semaphore(url, concurrency, requests))
            wk.append(wrk(url, concurrency, args.seconds))
            bare.append(bare_aiohttp(url, concurrency, args.seconds))
            print(f"pair {i + 1}: asyncbench p50 {ab[-1]['p50_s'] * 1000:.2f} ms {ab[-1]['rps']:.0f} req/s | "
                  f"wrk p50 {wk[-1]['p50_s'] * 1000:.2f} ms {wk[-1]['rps']:.0f} req/s | "
                  f"bare aiohttp {bare[-1]['rps']:.0f} req/s", flush=True)
    ab_p50 = median([r["p50_s"] for r in ab]) * 1000
    wrk_p50 = median([r["p50_s"] for r in wk]) * 1000
    ab_rps = median([r["rps"] for r in ab])
    print()
    print(f"target: embedded server, latency {latency * 1000:.0f} ms, concurrency {concurrency}, "
          f"{args.pairs} alternating runs of each (medians)")
    print(f"  asyncbench p50   {ab_p50:7.2f} ms   {ab_rps:8.1f} req/s")
    print(f"  wrk p50          {wrk_p50:7.2f} ms   {median([r['rps'] for r in wk]):8.1f} req/s")
    print(f"  bare aiohttp                  {median([r['rps'] for r in bare]):8.1f} req/s")
    diff = ab_p50 - wrk_p50
    print(f"  p50 difference   {diff:+7.2f} ms   ({'within' if abs(diff) <= 3 else 'OUTSIDE'} 3 ms)")
    print(f"  throughput ratio asyncbench/bare {ab_rps / median([r['rps'] for r in bare]):.3f}, "
          f"asyncbench/wrk {ab_rps / median([r['rps'] for r in wk]):.3f}")


if __name__ == "__main__":
    main()
