"""Do the answers hold on a server that is not ours? httpbin under gunicorn (2 workers × 50
threads) on 127.0.0.1, `/delay/0.1`:

- a hand sweep (`semaphore`) and `find --slo-p99 0.3` should agree on the most concurrency that
  keeps p99 within 300 ms;
- the sweep's USL fit should have R² >= 0.9 and a predicted peak near the measured best.

    pip install gunicorn httpbin
    python tests/benchmarks/answers.py [--limits 10,25,50,75,100,150,200]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from third_party import gunicorn


def run(args: list[str], tmp: str) -> tuple[list[dict[str, str]], dict]:
    out = subprocess.run([sys.executable, "-m", "asyncbench", *args, "--no-plot", "--results-dir", tmp],
                         capture_output=True, text=True)
    if out.returncode not in (0, 3):
        sys.exit(f"asyncbench {' '.join(args)} failed: {out.stderr[-400:]}")
    [path] = [p for p in Path(tmp).glob("*.csv") if not p.stem.endswith("latency")]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads(path.with_suffix(".json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", default="10,25,50,75,100,150,200")
    parser.add_argument("--slo", type=float, default=0.3)
    args = parser.parse_args()
    proc, base = gunicorn(2, 50, backlog=2048)
    url = f"{base}/delay/0.1"
    try:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            sweep, meta = run(["semaphore", url, "--limits", args.limits, "--requests", "1500", "--cooldown", "1"], a)
            found, fmeta = run(["find", url, "--slo-p99", str(args.slo), "--probe-duration", "3", "--max", "400"], b)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    print(f"hand sweep, semaphore on httpbin {url.split('/', 3)[-1]}:")
    for r in sweep:
        ok = float(r["latency_p99_s"]) <= args.slo and float(r["success_rate"]) >= 0.99
        print(f"  limit {int(r['level']):>4}  goodput {float(r['goodput_rps']):8,.1f} req/s  p99 "
              f"{float(r['latency_p99_s']) * 1000:7.1f} ms  {'meets' if ok else 'misses'} p99 <= {args.slo * 1000:g} ms")
    hand = [int(r["level"]) for r in sweep if float(r["latency_p99_s"]) <= args.slo and float(r["success_rate"]) >= 0.99]
    print(f"  by hand: the most that meets it is {max(hand) if hand else 'none'}"
          f" (the next limit swept misses it)")
    print("find:")
    for i, r in enumerate(found, 1):
        print(f"  probe {i:>2}: {int(r['level']):>4}  p99 {float(r['latency_p99_s']) * 1000:7.1f} ms  "
              f"{'met' if r['passed'] == 'true' else 'missed: ' + r['reason']}")
    print(f"  found: {fmeta['result']}")
    usl = meta.get("usl")
    best = max(sweep, key=lambda r: float(r["goodput_rps"]))
    print(f"USL of the sweep: {usl}")
    print(f"  measured best: {float(best['goodput_rps']):,.1f} req/s at limit {best['level']}")


if __name__ == "__main__":
    main()
