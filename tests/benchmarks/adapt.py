"""Does the adaptive limit find the knee and follow it? `asyncbench adapt` on the embedded server
(50 ms service, queue 20) whose capacity moves 100 → 50 → 150 every 10 s, for each algorithm,
with the fixed limits 50, 100 and 150 through the same schedule. Goals, per algorithm:

- the limit settles within 20 % of each phase's capacity in <= 3 s;
- <= 1 % of its requests fail over the whole run;
- goodput >= 90 % of what the capacity allows (capacity / service time), phase by phase;
- it beats every fixed limit on goodput × success rate.

    python tests/benchmarks/adapt.py [--duration 30] [--schedule 0:100,10:50,20:150] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def adapt(algorithm: str, duration: float, schedule: str, static: str, keep: str | None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        tmp = keep or scratch
        subprocess.run(
            [sys.executable, "-m", "asyncbench", "adapt", "--algorithm", algorithm, "--duration", f"{duration:g}",
             "--server-latency", "0.05", "--server-queue", "20", "--server-capacity-schedule", schedule,
             "--compare-static", static, "--cooldown", "1", "--results-dir", tmp, "--plots-dir", tmp],
            check=True, capture_output=True, text=True,
        )
        sidecar = max(Path(tmp).glob("adapt-*.json"))
        return json.loads(sidecar.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--schedule", default="0:100,10:50,20:150")
    parser.add_argument("--static", default="50,100,150")
    parser.add_argument("--algorithms", default="aimd,gradient")
    parser.add_argument("--keep", metavar="DIR", help="keep the results and charts in DIR")
    args = parser.parse_args()
    for algorithm in args.algorithms.split(","):
        meta = adapt(algorithm, args.duration, args.schedule, args.static, args.keep)
        [mine] = [r for r in meta["runs"] if r["adaptive"]]
        fail = 1 - mine["success_rate"]
        print(f"{algorithm}: goodput {mine['goodput_rps']:,.0f} req/s, {fail:.2%} failed "
              f"({mine['failures']:,} of {mine['requests']:,}), ok p99 {mine['ok_latency_p99_s'] * 1000:.1f} ms "
              f"{'(goal <= 1 %: met)' if fail <= 0.01 else '(goal <= 1 %: MISSED)'}")
        for p in meta["phases"]:
            settle = p.get("settle_capacity_s")
            share = p["goodput_rps"] / p["capacity_rps"]
            print(f"  {p['start_s']:g}-{p['end_s']:g} s, capacity {p['capacity']}: limit ended at "
                  f"{p['final_limit']:g}, within 20 % of the capacity after "
                  f"{'never' if settle is None else f'{settle:.1f} s'} "
                  f"{'(met)' if settle is not None and settle <= 3 else '(MISSED)'}, goodput "
                  f"{p['goodput_rps']:,.0f} req/s = {share:.0%} of {p['capacity_rps']:,.0f} "
                  f"{'(met)' if share >= 0.9 else '(MISSED)'}")
        score = mine["goodput_rps"] * mine["success_rate"]
        for s in meta.get("static", []):
            other = s["goodput_rps"] * s["success_rate"]
            print(f"  against static {s['limit']}: {s['goodput_rps']:,.0f} req/s at {s['success_rate']:.1%} "
                  f"success, goodput × success {other:,.0f} against {score:,.0f} "
                  f"{'(beaten)' if score > other else '(NOT beaten)'}")


if __name__ == "__main__":
    main()
