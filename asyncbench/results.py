"""Results files: the CSV written row by row, the JSON sidecar, the -latency.csv; and reading them.

Nothing measured is lost: each row is flushed as its level finishes, and the sidecar is
rewritten (atomically) after every level, so an interrupted run keeps what it measured.
Secrets never reach these files: header values and URL credentials are redacted first.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import socket
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from asyncbench import __version__
from asyncbench.errors import OutputError

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(r"auth|token|secret|key|cookie|passw|session|signature|credential", re.I)


def is_secret_name(name: str) -> bool:
    """Whether a header or query-parameter name usually carries a credential."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The URL without user:password and with secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="<>")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_header(header: str) -> str:
    """'Authorization: Bearer x' → 'Authorization: <redacted>'; other headers unchanged."""
    name, sep, _ = header.partition(":")
    return f"{name}: {REDACTED}" if sep and is_secret_name(name.strip()) else header


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line fit for a results file: header values and URL credentials redacted."""
    out: list[str] = []
    expect_header = False
    for arg in argv:
        if expect_header:
            out.append(redact_header(arg))
            expect_header = False
        elif arg in ("-H", "--header"):
            out.append(arg)
            expect_header = True
        elif arg.startswith("--header="):
            out.append("--header=" + redact_header(arg[len("--header="):]))
        elif arg.startswith("-H") and len(arg) > 2:
            out.append("-H" + redact_header(arg[2:]))
        elif "://" in arg:
            out.append(redact_url(arg))
        else:
            out.append(arg)
    return out


def versions() -> dict[str, str]:
    import aiohttp

    return {
        "asyncbench": __version__,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
    }


def host_facts() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "cpus": os.cpu_count()}


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class ResultsWriter:
    """Writes one run's files under `results_dir` with the stem `<experiment>-<YYYYmmdd-HHMMSS>`."""

    def __init__(
        self,
        results_dir: Path,
        experiment: str,
        columns: Sequence[str],
        metadata: dict[str, Any],
        started: datetime,
        latency_file: bool = False,
    ) -> None:
        self.columns = list(columns)
        self.metadata = dict(metadata)
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
            stem = f"{experiment}-{started:%Y%m%d-%H%M%S}"
            self.stem = stem
            n = 1
            while (results_dir / f"{self.stem}.csv").exists():
                n += 1
                self.stem = f"{stem}-{n}"
            self.csv_path = results_dir / f"{self.stem}.csv"
            self.json_path = results_dir / f"{self.stem}.json"
            self.latency_path = results_dir / f"{self.stem}-latency.csv" if latency_file else None
            self._csv_file: IO[str] = open(self.csv_path, "x", newline="", encoding="utf-8")
            self._latency_file: IO[str] | None = None
            if self.latency_path is not None:
                self._latency_file = open(self.latency_path, "x", newline="", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write results to {results_dir}: {exc.strerror or exc}") from None
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(self.columns)
        self._csv_file.flush()
        if self._latency_file is not None:
            self._latency = csv.writer(self._latency_file)
            self._latency.writerow(["level", "quantile", "latency_s"])
            self._latency_file.flush()
        self.metadata.update(
            stem=self.stem,
            files={"csv": self.csv_path.name, "json": self.json_path.name}
            | ({"latency": self.latency_path.name} if self.latency_path else {}),
            started_at=started.isoformat(timespec="seconds"),
            status="running",
        )
        self.write_metadata()

    def write_row(self, row: dict[str, Any]) -> None:
        self._csv.writerow([_cell(row[c]) for c in self.columns])
        self._csv_file.flush()

    def write_quantiles(self, level: int, quantiles: Iterable[tuple[float, float]]) -> None:
        if self._latency_file is None:
            return
        self._latency.writerows((level, f"{q:g}", f"{v:.6g}") for q, v in quantiles)
        self._latency_file.flush()

    def write_metadata(self, **updates: Any) -> None:
        """Merge `updates` into the sidecar and rewrite it atomically."""
        self.metadata.update(updates)
        tmp = self.json_path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(self.metadata, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, self.json_path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.json_path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        for f in (self._csv_file, self._latency_file):
            if f is not None and not f.closed:
                f.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_metadata(experiment: str, argv: Sequence[str], target: str, **extra: Any) -> dict[str, Any]:
    """The sidecar's fixed part: what was run, against what, where, with which versions."""
    return {
        "experiment": experiment,
        "command": redact_argv(argv),
        "target": redact_url(target),
        **extra,
        "versions": versions(),
        "host": host_facts(),
    }


# --- reading results back (for charts) ----------------------------------------------------------

LOAD_REQUIRED = (
    "experiment", "level", "requests", "success_rate", "throughput_rps", "goodput_rps",
    "latency_p50_s", "latency_p90_s", "latency_p99_s",
)
PIPELINE_REQUIRED = (
    "experiment", "input_mb", "batch_size", "concurrency", "chunks", "success_rate",
    "throughput_cps", "peak_traced_mb", "peak_rss_mb",
)
THREADS_REQUIRED = ("experiment", "phase", "task_id", "thread_name", "start_s", "end_s")
# Columns a CSV must have to be charted, and the order its rows are charted in.
REQUIRED = {"trap": LOAD_REQUIRED, "semaphore": LOAD_REQUIRED, "pipeline": PIPELINE_REQUIRED,
            "threads": THREADS_REQUIRED}
SORT_BY = {"trap": ["level"], "semaphore": ["level"], "pipeline": ["input_mb", "batch_size", "concurrency"],
           "threads": []}


class Run:
    """One run read back from disk: its rows, its latency quantiles, its sidecar."""

    def __init__(self, csv_path: Path, frame: Any, latency: Any | None, meta: dict[str, Any]) -> None:
        self.csv_path = csv_path
        self.stem = csv_path.stem
        self.frame = frame
        self.latency = latency
        self.meta = meta
        self.experiment: str = str(frame["experiment"].iloc[0])

    @property
    def started(self) -> str:
        return str(self.meta.get("started_at") or self.stem.split("-", 1)[-1])


def read_run(csv_path: Path) -> Run:
    """Read a run's CSV (and its sidecars); OutputError naming the file when it is not one."""
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise OutputError(f"{csv_path}: not a readable CSV ({exc})") from None
    if "experiment" not in frame.columns or frame.empty:
        raise OutputError(f"{csv_path}: not an asyncbench result (no experiment column, or no rows)")
    experiments = set(frame["experiment"].astype(str))
    if len(experiments) != 1 or not experiments <= set(REQUIRED):
        raise OutputError(f"{csv_path}: not an asyncbench result (experiment {sorted(experiments)})")
    experiment = experiments.pop()
    missing = [c for c in REQUIRED[experiment] if c not in frame.columns]
    if missing:
        raise OutputError(f"{csv_path}: not an asyncbench {experiment} result (no {', '.join(missing)})")
    numeric = [c for c in REQUIRED[experiment] if c not in ("experiment", "phase", "thread_name")]
    try:
        frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="raise")
    except (ValueError, TypeError):
        raise OutputError(f"{csv_path}: non-numeric values in its measurements") from None
    if SORT_BY[experiment]:
        frame = frame.sort_values(SORT_BY[experiment]).reset_index(drop=True)
    latency = None
    latency_path = csv_path.with_name(csv_path.stem + "-latency.csv")
    if latency_path.exists():
        try:
            latency = pd.read_csv(latency_path)
            if not {"level", "quantile", "latency_s"} <= set(latency.columns):
                latency = None
        except (OSError, ValueError, pd.errors.ParserError):
            latency = None
    meta: dict[str, Any] = {}
    json_path = csv_path.with_suffix(".json")
    if json_path.exists():
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
    return Run(csv_path, frame, latency, meta)


def find_runs(results_dir: Path) -> tuple[list[Run], list[str]]:
    """Every load run in a folder, oldest first, and a warning for each file skipped."""
    if not results_dir.is_dir():
        raise OutputError(f"results folder {str(results_dir)!r} does not exist")
    runs: list[Run] = []
    skipped: list[str] = []
    for path in sorted(results_dir.glob("*.csv")):
        if path.stem.endswith("-latency"):
            continue
        try:
            runs.append(read_run(path))
        except OutputError as exc:
            skipped.append(f"skipped {exc}")
    runs.sort(key=lambda r: (r.started, r.stem))
    return runs, skipped
