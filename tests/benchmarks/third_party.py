"""Do both engines say the same thing about a server that is neither ours nor nginx? httpbin
(Flask) under gunicorn on 127.0.0.1, the default trap levels' low end and a semaphore sweep,
once per engine, alternating:

- the trap's success rate at each level must match between the engines;
- the semaphore's p50 at each limit must agree within the run-to-run noise (printed).

    pip install gunicorn httpbin
    python tests/benchmarks/third_party.py [--repeats 3] [--workers 2] [--threads 16]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peers import need

ENGINES = ("fast", "aiohttp")


def gunicorn(workers: int, threads: int, backlog: int) -> tuple[subprocess.Popen[bytes], str]:
    need("gunicorn", "gunicorn (pip install gunicorn httpbin)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["gunicorn", "-w", str(workers), "-k", "gthread", "--threads", str(threads), "--backlog", str(backlog),
         "-b", f"127.0.0.1:{port}", "--log-level", "warning", "httpbin:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("gunicorn did not start (is httpbin installed? pip install httpbin)")


def rows(command: list[str]) -> dict[int, dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-m", "asyncbench", *command, "--cooldown", "0.5", "--no-plot",
                              "--results-dir", tmp], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"asyncbench {' '.join(command)} failed: {out.stderr[-500:]}")
        [path] = [p for p in Path(tmp).glob("*.csv") if not p.stem.endswith("latency")]
        with open(path, newline="") as f:
            return {int(r["level"]): r for r in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("gunicorn") is None:
        sys.exit("gunicorn is not installed: pip install gunicorn httpbin")
    proc, base = gunicorn(args.workers, args.threads, backlog=64)
    try:
        trap: dict[str, list[dict[int, dict[str, str]]]] = {e: [] for e in ENGINES}
        sem: dict[str, list[dict[int, dict[str, str]]]] = {e: [] for e in ENGINES}
        for i in range(args.repeats):
            for engine in ENGINES:
                trap[engine].append(rows(["trap", f"{base}/get", "--levels", "1,10,100,500", "--timeout", "5",
                                          "--engine", engine]))
                sem[engine].append(rows(["semaphore", f"{base}/get", "--limits", "1,4,16,64", "--requests",
                                         "1000", "--engine", engine]))
            print(f"  repeat {i + 1} done", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    print(f"\nhttpbin /get under gunicorn ({args.workers} workers x {args.threads} threads, backlog 64)")
    print("trap: success rate % (median of repeats, and each repeat)")
    for level in sorted(trap["fast"][0]):
        line = f"  level {level:>4}"
        for engine in ENGINES:
            rates = [float(r[level]["success_rate"]) * 100 for r in trap[engine]]
            line += f"   {engine:<8} {statistics.median(rates):6.1f} ({', '.join(f'{x:.1f}' for x in rates)})"
        print(line)
    print("semaphore: p50 ms (median of repeats, and the spread across repeats)")
    for limit in sorted(sem["fast"][0]):
        line = f"  limit {limit:>4}"
        for engine in ENGINES:
            p50s = [float(r[limit]["latency_p50_s"]) * 1000 for r in sem[engine]]
            line += f"   {engine:<8} {statistics.median(p50s):6.2f} ms ({min(p50s):.2f}-{max(p50s):.2f})"
        print(line)


if __name__ == "__main__":
    main()
