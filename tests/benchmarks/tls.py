"""What does TLS cost asyncbench, and what does measuring where the time goes cost?

On nginx from Debian's packages on 127.0.0.1, alternating in one run:

- keep-alive over TLS (a throwaway CA's certificate, verified by asyncbench; wrk does not
  verify), nginx static at 50 connections and echo_sleep 20 ms at 100 (needs
  libnginx-mod-http-echo): the fast engine's req/s and p50 against wrk -t1's. Goal: >= 0.8.
- connection per request over TLS: `trap` at one level (every request opens its connection),
  with session resumption (the default) and with `--no-tls-resume` (full handshakes): req/s,
  the mean handshake and how many handshakes were resumed.
- plain HTTP, 50 connections: this checkout's fast engine against a checkout from before the
  timing breakdown (`--baseline DIR`, e.g. `git worktree add /tmp/before 2569e72`). Goal: the
  breakdown costs < 5 % of req/s.

    python tests/benchmarks/tls.py [--pairs 3] [--seconds 5] [--level 200] [--baseline DIR]
                                   [--parts keepalive,per-request,breakdown]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _peers import asyncbench_semaphore, median, nginx, nginx_tls, wrk


def trap(url: str, level: int, rounds: int, extra: list[str]) -> dict[str, float]:
    """`trap` at one level, as a user would run it; its CSV row and the sidecar's handshakes."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "asyncbench", "trap", url, "--levels", str(level), "--rounds", str(rounds),
             "--cooldown", "0", "--no-plot", "--results-dir", tmp, *extra],
            check=True, capture_output=True, text=True,
        )
        [path] = [p for p in Path(tmp).glob("trap-*.csv") if not p.stem.endswith("latency")]
        with open(path, newline="") as f:
            [row] = list(csv.DictReader(f))
        sidecar = json.loads(path.with_suffix(".json").read_text())
    handshakes = sidecar.get("tls") or {}
    return {
        "rps": float(row["throughput_rps"]),
        "tls_mean_s": float(row["tls_mean_s"] or 0),
        "connect_mean_s": float(row["connect_mean_s"] or 0),
        "connections": float(row["connections_opened"]),
        "resumed": float(handshakes.get("handshakes_resumed", 0)),
        "full": float(handshakes.get("handshakes_full", 0)),
    }


def keepalive(args: argparse.Namespace) -> None:
    # A static answer (the client's cost per request is the story) and a 20 ms service time
    # (does TLS change what is measured?).
    for delay_ms, connections in ((0, 50), (20, 100)):
        with nginx_tls(delay_ms) as (url, ca):
            extra = ["--engine", "fast", "--cacert", str(ca)]
            probe = asyncbench_semaphore(url, connections, 5000, extra)
            requests = max(5000, int(probe["rps"] * args.seconds))
            ab, wk = [], []
            for i in range(args.pairs):
                ab.append(asyncbench_semaphore(url, connections, requests, extra))
                wk.append(wrk(url, connections, args.seconds))
                print(f"  pair {i + 1}: asyncbench {ab[-1]['rps']:,.0f} req/s | wrk -t1 {wk[-1]['rps']:,.0f} req/s",
                      flush=True)
            a, w = median([r["rps"] for r in ab]), median([r["rps"] for r in wk])
            a50, w50 = median([r["p50_s"] for r in ab]), median([r["p50_s"] for r in wk])
            what = f"echo_sleep {delay_ms} ms" if delay_ms else "static"
            print(f"TLS keep-alive, nginx {what}, {connections} connections (medians): asyncbench {a:,.0f} req/s "
                  f"(p50 {a50 * 1000:.2f} ms, CPU {median([r['cpu_pct'] for r in ab]):.0f} %), wrk -t1 {w:,.0f} req/s "
                  f"(p50 {w50 * 1000:.2f} ms), ratio {a / w:.2f} (goal >= 0.80)\n")


def per_request(args: argparse.Namespace) -> None:
    with nginx_tls() as (url, ca):
        runs: dict[str, list[dict[str, float]]] = {"resumed": [], "full handshakes": []}
        for i in range(args.pairs):
            runs["resumed"].append(trap(url, args.level, args.rounds, ["--cacert", str(ca)]))
            runs["full handshakes"].append(trap(url, args.level, args.rounds, ["--cacert", str(ca), "--no-tls-resume"]))
            print(f"  pair {i + 1}: " + " | ".join(
                f"{name} {r[-1]['rps']:,.0f} req/s, TLS {r[-1]['tls_mean_s'] * 1000:.2f} ms"
                for name, r in runs.items()), flush=True)
        print(f"TLS connection per request, trap level {args.level} (medians):")
        for name, rs in runs.items():
            print(f"  {name:<16} {median([r['rps'] for r in rs]):8,.0f} req/s   "
                  f"TCP {median([r['connect_mean_s'] for r in rs]) * 1000:6.2f} ms   "
                  f"TLS {median([r['tls_mean_s'] for r in rs]) * 1000:6.2f} ms   "
                  f"handshakes resumed {median([r['resumed'] for r in rs]):,.0f} "
                  f"of {median([r['resumed'] + r['full'] for r in rs]):,.0f}")
        print()


def breakdown_cost(args: argparse.Namespace) -> None:
    baseline = Path(args.baseline).resolve()
    if not (baseline / "asyncbench").is_dir():
        sys.exit(f"--baseline {baseline}: no asyncbench package there")
    here = str(Path(__file__).resolve().parents[2])

    def run(tree: str, url: str, requests: int) -> float:
        os.environ["PYTHONPATH"] = tree
        try:
            return asyncbench_semaphore(url, 50, requests, ["--engine", "fast"])["rps"]
        finally:
            os.environ.pop("PYTHONPATH")

    with nginx() as url:
        requests = max(5000, int(run(here, url, 5000) * args.seconds))
        now, before = [], []
        for i in range(args.pairs):
            now.append(run(here, url, requests))
            before.append(run(str(baseline), url, requests))
            print(f"  pair {i + 1}: this checkout {now[-1]:,.0f} req/s | baseline {before[-1]:,.0f} req/s", flush=True)
        n, b = median(now), median(before)
        print(f"plain HTTP, 50 connections (medians): this checkout {n:,.0f} req/s, baseline {b:,.0f} req/s, "
              f"cost of the timing breakdown {100 * (b - n) / b:+.1f} % (goal < 5 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--level", type=int, default=200, help="the trap's level for connection per request")
    parser.add_argument("--rounds", type=int, default=20, help="the trap's rounds at that level")
    parser.add_argument("--baseline", help="a checkout from before the timing breakdown")
    parser.add_argument("--parts", default="keepalive,per-request,breakdown",
                        help="which measurements, comma-separated: keepalive, per-request, breakdown")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if "keepalive" in parts:
        keepalive(args)
    if "per-request" in parts:
        per_request(args)
    if "breakdown" in parts and args.baseline:
        breakdown_cost(args)
    elif "breakdown" in parts:
        print("plain HTTP cost of the breakdown: skipped (give --baseline DIR)")


if __name__ == "__main__":
    main()
