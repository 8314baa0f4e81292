"""How well does `asyncbench rate` keep time on a server of known latency? nginx `echo_sleep`
20 ms (Debian's nginx-light and libnginx-mod-http-echo) on 127.0.0.1, each engine, at offered
rates the server can carry: the achieved rate should be within 3 % of the offered, p50 within
20-23 ms, p99 at most 30 ms, nothing dropped, and sends should leave within a millisecond of
their schedule (send lag p99).

    python tests/benchmarks/rate_accuracy.py [--rates 500,3000] [--duration 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

from _peers import nginx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="500,3000")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="fast,aiohttp")
    args = parser.parse_args()
    with nginx(delay_ms=20) as url:
        print(f"{'engine':8} {'offered':>8} {'achieved':>9} {'p50 ms':>7} {'p99 ms':>7} {'lag p99 ms':>10} "
              f"{'dropped':>7} {'ok %':>6} {'CPU %':>6}")
        for _ in range(args.repeats):
            for engine in args.engines.split(","):
                with tempfile.TemporaryDirectory() as tmp:
                    subprocess.run([sys.executable, "-m", "asyncbench", "rate", url, "--rates", args.rates,
                                    "--duration", str(args.duration), "--engine", engine, "--no-plot",
                                    "--results-dir", tmp], check=True, capture_output=True)
                    [path] = [p for p in Path(tmp).glob("rate-*.csv") if not p.stem.endswith("latency")]
                    with open(path, newline="") as f:
                        for r in csv.DictReader(f):
                            print(f"{engine:8} {float(r['offered_rps']):8,.0f} {float(r['achieved_rps']):9,.1f} "
                                  f"{float(r['latency_p50_s']) * 1000:7.2f} {float(r['latency_p99_s']) * 1000:7.2f} "
                                  f"{float(r['send_lag_p99_s']) * 1000:10.3f} {int(r['dropped']):7} "
                                  f"{float(r['success_rate']) * 100:6.1f} {float(r['client_cpu_pct']):6.0f}", flush=True)


if __name__ == "__main__":
    main()
