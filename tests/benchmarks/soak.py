"""Soak: does a long `rate` run stay flat? `asyncbench rate --rates 1000 --duration 3600` on nginx
(Debian's nginx-light) on 127.0.0.1, its resident memory read every minute from /proc: flat after
the warm-up (goal: within ±10 MB from minute 2 on), the -timeline.csv growing linearly (a row a
second), nothing else growing.

    python tests/benchmarks/soak.py              # the hour
    python tests/benchmarks/soak.py --minutes 10 # a quick look
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peers import nginx


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    seconds = args.minutes * 60
    with nginx() as url, tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        proc = subprocess.Popen([sys.executable, "-m", "asyncbench", "rate", url, "--rates", str(args.rate),
                                 "--duration", f"{seconds:g}", "--no-plot", "--results-dir", str(results)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples: list[tuple[float, float, int]] = []
        started = time.monotonic()
        print(f"{'minute':>6} {'RSS MB':>7} {'timeline bytes':>15}")
        while proc.poll() is None:
            time.sleep(min(args.every, max(0.1, started + (len(samples) + 1) * args.every - time.monotonic())))
            if proc.poll() is not None:
                break
            timeline = sum(p.stat().st_size for p in results.glob("*-timeline.csv"))
            samples.append(((time.monotonic() - started) / 60, rss_mb(proc.pid), timeline))
            print(f"{samples[-1][0]:6.1f} {samples[-1][1]:7.1f} {samples[-1][2]:15,}", flush=True)
        code = proc.wait()
        settled = [s for s in samples if s[0] >= 2] or samples
        spread = max(s[1] for s in settled) - min(s[1] for s in settled) if settled else 0.0
        print(f"exit {code}; RSS from minute 2 on: {min(s[1] for s in settled):.1f} to "
              f"{max(s[1] for s in settled):.1f} MB (spread {spread:.1f} MB; goal <= 20, i.e. ±10)")
        if len(settled) >= 2:
            (t0, _, b0), (t1, _, b1) = settled[0], settled[-1]
            print(f"timeline: {(b1 - b0) / max(1e-9, t1 - t0):,.0f} bytes a minute "
                  f"({(b1 - b0) / max(1e-9, (t1 - t0) * 60):,.0f} a second)")


if __name__ == "__main__":
    main()
