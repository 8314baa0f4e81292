"""Does `--processes N` buy load? The same requests with 1 and 2 worker processes, on nginx
static from Debian's packages on 127.0.0.1, for each engine, alternating, with wrk (-t1, -t2)
and a bare aiohttp loop measured in the same run:

- aiohttp engine (client-bound at one core): `--processes 2` should give >= 1.4x `--processes 1`
  on a 2-core machine, with identical request counts;
- fast engine: reported too (near wrk -t1 already, it has less to gain: nginx and two clients
  share two cores).

    python tests/benchmarks/scaling.py [--pairs 3] [--requests 40000] [--connections 50]
"""

from __future__ import annotations

import argparse

from _peers import asyncbench_semaphore, bare_aiohttp, median, nginx, wrk

ENGINES = ("aiohttp", "fast")
PROCESSES = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40_000, help="requests per run (aiohttp engine)")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    c = args.connections
    # The fast engine is ~10x the aiohttp engine: more requests, so its runs last as long.
    requests = {"aiohttp": args.requests, "fast": args.requests * 8}
    runs: dict[str, list[dict]] = {f"{e} x{p}": [] for e in ENGINES for p in PROCESSES}
    runs |= {"wrk -t1": [], "wrk -t2": [], "bare aiohttp": []}
    with nginx() as url:
        for i in range(args.pairs):
            for engine in ENGINES:
                for p in PROCESSES:
                    r = asyncbench_semaphore(url, c, requests[engine], ["--engine", engine, "--processes", str(p)])
                    assert r["success_rate"] == 1.0, r
                    runs[f"{engine} x{p}"].append(r)
            runs["wrk -t1"].append(wrk(url, c, 5))
            runs["wrk -t2"].append(wrk(url, c, 5, threads=2))
            runs["bare aiohttp"].append(bare_aiohttp(url, c, 5))
            print(f"  pair {i + 1}: " + " | ".join(f"{n} {r[-1]['rps']:,.0f}" for n, r in runs.items()), flush=True)
    rps = {name: median([r["rps"] for r in rs]) for name, rs in runs.items()}
    print(f"\nnginx static, {c} connections, medians of {args.pairs} (req/s; requests per run: "
          f"aiohttp engine {requests['aiohttp']:,}, fast engine {requests['fast']:,})")
    for name, value in rps.items():
        extra = ""
        if name.endswith("x2"):
            extra = f"   x{value / rps[name[:-1] + '1']:.2f} of --processes 1"
        print(f"  {name:<13} {value:9,.0f} req/s   ratio to wrk -t1 {value / rps['wrk -t1']:5.2f}   "
              f"to bare aiohttp {value / rps['bare aiohttp']:5.2f}{extra}")
    for engine in ENGINES:
        cpu = [median([r["cpu_pct"] for r in runs[f"{engine} x{p}"]]) for p in PROCESSES]
        print(f"  {engine} engine: CPU of the busiest process {cpu[0]:.0f} % (x1), {cpu[1]:.0f} % (x2)")


if __name__ == "__main__":
    main()
