"""How close is each engine to the physical limit? asyncbench (each engine), wrk and a bare aiohttp
loop, alternating in one run, on nginx from Debian's packages on 127.0.0.1:

- nginx static (`return 200`), 50 connections: req/s of each; asyncbench/wrk must be >= 0.8 for
  the fast engine (wrk with one thread, as asyncbench drives one core);
- nginx echo_sleep 20 ms (libnginx-mod-http-echo) at 100 and 1,000 connections: req/s and p50
  of each; the fast engine's p50 should sit within 10 % of wrk's, its req/s >= 0.9 of wrk's.

    python tests/benchmarks/engines.py [--pairs 3] [--seconds 5]
"""

from __future__ import annotations

import argparse

from _peers import asyncbench_semaphore, bare_aiohttp, median, nginx, wrk

ENGINES = ("fast", "aiohttp")


def scenario(url: str, connections: int, seconds: float, pairs: int, bare: bool) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {e: [] for e in ENGINES} | {"wrk": []} | ({"bare aiohttp": []} if bare else {})
    # Size each engine's run to the time asked for, from a short calibration run.
    requests = {}
    for engine in ENGINES:
        probe = asyncbench_semaphore(url, connections, max(2000, 4 * connections), ["--engine", engine])
        requests[engine] = max(5 * connections, int(probe["rps"] * seconds))
    for i in range(pairs):
        for engine in ENGINES:
            runs[engine].append(asyncbench_semaphore(url, connections, requests[engine], ["--engine", engine]))
        runs["wrk"].append(wrk(url, connections, seconds))
        if bare:
            runs["bare aiohttp"].append(bare_aiohttp(url, connections, seconds))
        print(f"  pair {i + 1}: " + " | ".join(
            f"{name} {r[-1]['rps']:,.0f} req/s" + (f" p50 {r[-1]['p50_s'] * 1000:.1f} ms" if "p50_s" in r[-1] else "")
            for name, r in runs.items()), flush=True)
    return runs


def report(title: str, runs: dict[str, list[dict]]) -> None:
    print(f"\n{title} (medians)")
    w = median([r["rps"] for r in runs["wrk"]])
    w50 = median([r["p50_s"] for r in runs["wrk"]])
    for name, rs in runs.items():
        rps = median([r["rps"] for r in rs])
        line = f"  {name:<13} {rps:9,.0f} req/s   ratio to wrk {rps / w:5.2f}"
        if "p50_s" in rs[0]:
            p50 = median([r["p50_s"] for r in rs])
            line += f"   p50 {p50 * 1000:6.2f} ms ({(p50 - w50) * 1000:+.2f} ms vs wrk)"
        if "cpu_pct" in rs[0]:
            line += f"   CPU {median([r['cpu_pct'] for r in rs]):.0f} %"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with nginx() as url:
        print("nginx static, 50 connections")
        report("nginx static, 50 connections", scenario(url, 50, args.seconds, args.pairs, bare=True))
    with nginx(delay_ms=20) as url:
        for connections in (100, 1000):
            print(f"nginx echo_sleep 20 ms, {connections} connections")
            report(f"nginx echo_sleep 20 ms, {connections:,} connections",
                   scenario(url, connections, args.seconds, args.pairs, bare=False))


if __name__ == "__main__":
    main()
