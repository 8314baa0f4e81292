"""Results files: the CSV written row by row, the JSON sidecar, the -latency.csv; and reading them.

Nothing measured is lost: each row is flushed as its level finishes, and the sidecar is
rewritten (atomically) after every level, so an interrupted run keeps what it measured.
Secrets never reach these files: header values and URL credentials are redacted first.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from asyncbench import signals
from asyncbench.errors import AsyncbenchError, Interrupted, OutputError
from asyncbench.options import check_readable_file
from asyncbench.redact import redact_argv, redact_known, redact_text, redact_url
from asyncbench.version import __version__

if TYPE_CHECKING:
    from asyncbench.histogram import LatencyHistogram
    from asyncbench.hlog import HdrLog
    from asyncbench.timeline import Interval

# Space set aside beside the results while a run writes them: released when a write fails, so
# that a full disk still leaves room to mark the sidecar failed with its reason.
RESERVE_BYTES = 64 * 1024


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


class WholeLines:
    """A file written a whole line (or row) at a time, unbuffered: what cannot be written whole
    (a full disk) is cut back off, so a reader never finds half a row, and OutputError names
    the file. Secrets the command line carries are masked."""

    def __init__(self, path: Path, exclusive: bool = False, append: bool = False) -> None:
        self.path = path
        mode = "ab" if append else "xb" if exclusive else "wb"
        try:
            self._file = open(path, mode, buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise OutputError(f"cannot write results to {path.parent}: {exc.strerror or exc}") from None
        self._size = self._file.tell()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, text: str) -> None:
        data = redact_known(text).encode("utf-8")
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view):]
        except OSError as exc:
            try:
                self._file.truncate(self._size)
            except OSError:
                pass
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._size += len(data)

    def close(self) -> None:
        self._file.close()


def _csv_line(cells: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue()


class ResultsWriter:
    """Writes one run's files under `results_dir` with the stem `<experiment>-<YYYYmmdd-HHMMSS>`.

    Used as a context manager: a run that ends by an exception is marked in the sidecar —
    `interrupted` for Ctrl-C, `failed` with the reason for anything else — so that no sidecar
    is left saying `running`. A file that cannot be written raises OutputError naming it.
    """

    def __init__(
        self,
        results_dir: Path,
        experiment: str,
        columns: Sequence[str],
        metadata: dict[str, Any],
        started: datetime,
        latency_file: bool = False,
        timeline_file: bool = False,
        hdr_log: Path | None = None,
    ) -> None:
        self.columns = list(columns)
        self.metadata = dict(metadata)
        self._csv_file: WholeLines | None = None
        self._latency_file: WholeLines | None = None
        self._timeline_file: WholeLines | None = None
        self._hdr_log: HdrLog | None = None
        self.hdr_log_path = hdr_log
        self._hgrm: dict[str, LatencyHistogram] = {}  # each step's successes, for write_hgrm()
        self.results_dir = results_dir
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write results to {results_dir}: {exc.strerror or exc}") from None
        stem = f"{experiment}-{started:%Y%m%d-%H%M%S}"
        self.stem = stem
        n = 1
        while (results_dir / f"{self.stem}.csv").exists():
            n += 1
            self.stem = f"{stem}-{n}"
        self.csv_path = results_dir / f"{self.stem}.csv"
        self.json_path = results_dir / f"{self.stem}.json"
        self._reserve = results_dir / f".{self.stem}.reserve"
        self.latency_path = results_dir / f"{self.stem}-latency.csv" if latency_file else None
        self.timeline_path = results_dir / f"{self.stem}-timeline.csv" if timeline_file else None
        self.metadata.update(
            stem=self.stem,
            files={"csv": self.csv_path.name, "json": self.json_path.name}
            | ({"latency": self.latency_path.name} if self.latency_path else {})
            | ({"timeline": self.timeline_path.name} if self.timeline_path else {})
            | ({"hdr_log": str(hdr_log)} if hdr_log is not None else {}),
            started_at=started.isoformat(timespec="seconds"),
            status="running",
        )
        try:
            with signals.protected():
                self._set_aside()
                self._csv_file = WholeLines(self.csv_path, exclusive=True)
                self._csv_file.write(_csv_line(self.columns))
                if self.latency_path is not None:
                    self._latency_file = WholeLines(self.latency_path, exclusive=True)
                    self._latency_file.write(_csv_line(["level", "quantile", "latency_s"]))
                if self.timeline_path is not None:
                    from asyncbench.timeline import COLUMNS

                    self._timeline_file = WholeLines(self.timeline_path, exclusive=True)
                    self._timeline_file.write(_csv_line(COLUMNS))
                if hdr_log is not None:
                    from asyncbench.hlog import HdrLog

                    self._hdr_log = HdrLog(hdr_log, started.timestamp())
                self.write_metadata()
        except BaseException:
            # Nothing was measured yet: leave no empty files behind.
            self.close()
            made = hdr_log if self._hdr_log is not None else None
            for path in (self.csv_path, self.latency_path, self.timeline_path, self.json_path, made):
                if path is not None:
                    path.unlink(missing_ok=True)
            raise

    def _set_aside(self) -> None:
        """Take RESERVE_BYTES of the disk now (allocated, not just claimed), for the last word."""
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise OutputError(f"cannot write results to {self._reserve.parent}: {exc.strerror or exc}") from None
        try:
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            except (OSError, AttributeError):
                os.write(fd, b"\0" * RESERVE_BYTES)
        except OSError:
            self._release()  # not even that much room: nothing to set aside
        finally:
            os.close(fd)

    def _release(self) -> None:
        self._reserve.unlink(missing_ok=True)

    def write_row(self, row: dict[str, Any]) -> None:
        assert self._csv_file is not None
        with signals.protected():
            self._csv_file.write(_csv_line(_cell(row[c]) for c in self.columns))

    def write_quantiles(self, level: int, quantiles: Iterable[tuple[float, float]]) -> None:
        if self._latency_file is None or self.latency_path is None:
            return
        with signals.protected():
            self._latency_file.write("".join(_csv_line((level, f"{q:g}", f"{v:.6g}")) for q, v in quantiles))

    def write_timeline(self, tag: str, level: int, intervals: Sequence[Interval]) -> None:
        """A level over time (finished, or the intervals of one still running that are final):
        its rows of the -timeline.csv, its intervals in the --hdr-log, and its successes added to
        the .hgrm distribution write_hgrm() writes under `tag`."""
        from asyncbench.timeline import COLUMNS

        if self._timeline_file is None or not intervals:
            return
        with signals.protected():
            self._timeline_file.write("".join(_csv_line(_cell(row[c]) for c in COLUMNS)
                                              for row in (i.row() for i in intervals)))
            if self._hdr_log is not None:
                self._hdr_log.write_level(tag, list(intervals))
        from asyncbench.histogram import LatencyHistogram

        ok = self._hgrm.setdefault(tag, LatencyHistogram())  # a step written in parts adds up
        for interval in intervals:
            ok.merge(interval.ok)

    def write_hgrm(self) -> None:
        """Each level's .hgrm percentile distribution, named in the sidecar: at the end of the
        run (also an interrupted one), as HdrHistogram's percentile walk is slow enough to
        disturb a schedule that is still running."""
        from asyncbench.hlog import percentile_distribution

        hgrm = dict(self.metadata.get("hgrm") or {})
        for tag, ok in self._hgrm.items():
            if not ok.count:
                continue
            path = self.results_dir / f"{self.stem}-{tag}.hgrm"
            try:
                path.write_text(percentile_distribution(ok), encoding="ascii")
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
            hgrm[tag] = path.name
        self._hgrm.clear()
        if hgrm:
            self.write_metadata(hgrm=hgrm)

    def write_metadata(self, **updates: Any) -> None:
        """Merge `updates` into the sidecar and rewrite it atomically (never half-written)."""
        tmp = self.json_path.with_suffix(".json.tmp")
        with signals.protected():  # what is in memory and what is on disk change together
            self.metadata.update(updates)
            text = redact_known(json.dumps(self.metadata, indent=2, default=str)) + "\n"
            try:
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, self.json_path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise OutputError(f"cannot write {self.json_path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._hdr_log is not None:
            self._hdr_log.close()
        for f in (self._csv_file, self._latency_file, self._timeline_file):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass  # a flush that failed has been reported already
        self._release()

    def _mark_interrupted(self) -> None:
        self._release()
        if self.metadata.get("status") == "running":
            self.write_metadata(status="interrupted", finished_at=datetime.now().isoformat(timespec="seconds"))

    def __enter__(self) -> ResultsWriter:
        self._hard_exit = signals.on_hard_exit(self._mark_interrupted)
        self._hard_exit.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._hard_exit.__exit__(None, None, None)
        try:
            if self._hgrm:
                try:
                    self.write_hgrm()
                except OutputError:
                    if exc is None:
                        raise
            if exc is not None and self.metadata.get("status") == "running":
                self._release()  # a full disk: the room set aside is for this
                now = datetime.now().isoformat(timespec="seconds")
                if isinstance(exc, KeyboardInterrupt | Interrupted):
                    self.write_metadata(status="interrupted", finished_at=now)
                else:
                    reason = str(exc) if isinstance(exc, AsyncbenchError) else f"{type(exc).__name__}: {exc}"
                    self.write_metadata(status="failed", finished_at=now, reason=redact_text(reason))
        except OutputError:
            pass  # the sidecar cannot be written either: the original error is the one to report
        finally:
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

# A results file is a few kB per level; anything this large is not one (or is a device).
MAX_RESULT_BYTES = 256 * 1024 * 1024

class Schema(Protocol):
    """What reading a results file needs to know of its experiment."""

    required: tuple[str, ...]  # columns it must have to be charted
    sort_by: tuple[str, ...]  # the order its rows are charted in


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

    def rows(self) -> list[Any]:
        """The rows with their columns as attributes (as the row dataclasses have them), for the
        functions that render finished runs; an empty text cell is "" rather than NaN."""
        from types import SimpleNamespace

        frame = self.frame.astype(object).where(self.frame.notna(), "")
        return [SimpleNamespace(**row) for row in frame.to_dict("records")]

    @property
    def timeline(self) -> Any | None:
        """Its -timeline.csv as a frame (None without one, or one that is not ours)."""
        import pandas as pd

        from asyncbench.timeline import COLUMNS

        path = self.csv_path.with_name(self.stem + "-timeline.csv")
        if not path.exists():
            return None
        try:
            check_readable_file(path, MAX_RESULT_BYTES)
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            return None
        if not set(COLUMNS) <= set(frame.columns):
            return None
        return frame

    def setting(self, name: str, default: Any) -> Any:
        """A setting of the run, from its sidecar's config."""
        config = self.meta.get("config")
        value = config.get(name) if isinstance(config, dict) else None
        return default if value is None else value


def read_run(csv_path: Path, schemas: Mapping[str, Schema]) -> Run:
    """Read a run's CSV (and its sidecars) of one of the experiments `schemas` names;
    OutputError naming the file when it is not one."""
    import pandas as pd

    meta = _read_sidecar(csv_path.with_suffix(".json"))
    try:
        check_readable_file(csv_path, MAX_RESULT_BYTES)
        frame = pd.read_csv(csv_path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OutputError(f"{csv_path}: not a readable CSV ({why})") from None
    if frame.empty and meta.get("status") in ("failed", "interrupted", "running"):
        why = f": {meta['reason']}" if meta.get("reason") else ""
        raise OutputError(f"{csv_path}: the run {'stopped' if meta['status'] == 'running' else meta['status']} "
                          f"before any level finished{why}")
    if "experiment" not in frame.columns or frame.empty:
        raise OutputError(f"{csv_path}: not an asyncbench result (no experiment column, or no rows)")
    experiments = set(frame["experiment"].astype(str))
    if len(experiments) != 1 or not experiments <= set(schemas):
        raise OutputError(f"{csv_path}: not an asyncbench result (experiment {sorted(experiments)})")
    experiment = experiments.pop()
    schema = schemas[experiment]
    missing = [c for c in schema.required if c not in frame.columns]
    if missing:
        raise OutputError(f"{csv_path}: not an asyncbench {experiment} result (no {', '.join(missing)})")
    numeric = [c for c in schema.required if c not in ("experiment", "phase", "thread_name", "run")]
    try:
        frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="raise")
    except (ValueError, TypeError):
        raise OutputError(f"{csv_path}: non-numeric values in its measurements") from None
    _check_finite(csv_path, frame, numeric)
    if schema.sort_by:
        frame = frame.sort_values(list(schema.sort_by)).reset_index(drop=True)
    latency = None
    latency_path = csv_path.with_name(csv_path.stem + "-latency.csv")
    if latency_path.exists():
        try:
            check_readable_file(latency_path, MAX_RESULT_BYTES)
            latency = pd.read_csv(latency_path)
            if not {"level", "quantile", "latency_s"} <= set(latency.columns):
                latency = None
        except (OSError, ValueError, pd.errors.ParserError):
            latency = None
    return Run(csv_path, frame, latency, meta)


def _check_finite(csv_path: Path, frame: Any, required: list[str]) -> None:
    """Measurements are finite numbers, and a level a whole one: `nan`, `inf` or a level of
    1e309 is not something asyncbench wrote, and no chart or comparison can be drawn from it."""
    import numpy as np

    numbers = frame.select_dtypes(include="number")
    for column in numbers.columns:
        values = numbers[column].to_numpy(dtype=float)
        bad = ~np.isfinite(values) if column in required else np.isinf(values)
        if bad.any():
            raise OutputError(f"{csv_path}: not an asyncbench result ({column} = {values[bad][0]!r} in row "
                              f"{int(np.flatnonzero(bad)[0]) + 1})")
    if "level" in frame.columns:
        levels = frame["level"].to_numpy(dtype=float)
        odd = (levels != np.round(levels)) | (np.abs(levels) > 1e12)
        if odd.any():
            raise OutputError(f"{csv_path}: not an asyncbench result (level = {levels[odd][0]!r})")


def _read_sidecar(json_path: Path) -> dict[str, Any]:
    """The run's JSON sidecar, or {} when there is none or it is not readable JSON."""
    if not json_path.exists():
        return {}
    try:
        check_readable_file(json_path, MAX_RESULT_BYTES)
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _sane(meta) if isinstance(meta, dict) else {}


# The shape each field of a sidecar that charts, reports and comparisons read must have; a field
# of another shape (a hand-edited or foreign file) is dropped, so that what reads it never
# meets a string where it counts on a number.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "server": dict, "rounds": dict, "sweet_spot": dict, "result": dict, "recommended": dict,
    "usl": dict, "scale": dict, "versions": dict, "host": dict, "target_gone": dict,
    "warnings": list, "thresholds": list, "shards": list, "summary": list, "impact": list, "command": list,
}


def _sane(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in meta.items()
           if k not in _FIELD_TYPES or v is None or isinstance(v, _FIELD_TYPES[k])}
    rounds = out.get("rounds")
    if isinstance(rounds, dict):
        out["rounds"] = {str(k): [r for r in v if isinstance(r, dict)] for k, v in rounds.items() if isinstance(v, list)}
    server = out.get("server")
    if isinstance(server, dict) and not all(_is_number(server.get(k)) for k in ("capacity", "queue", "latency")):
        out.pop("server")
    for key in ("sweet_spot", "result", "recommended"):
        value = out.get(key)
        if isinstance(value, dict) and not _is_number(value.get("level")):
            out.pop(key)
    for key in ("impact", "summary", "shards", "thresholds"):
        if isinstance(out.get(key), list) and not all(isinstance(x, dict) for x in out[key]):
            out.pop(key)
    return out


def _is_number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def find_runs(results_dir: Path, schemas: Mapping[str, Schema]) -> tuple[list[Run], list[str]]:
    """Every run in a folder, oldest first, and a warning for each file skipped."""
    if not results_dir.is_dir():
        raise OutputError(f"results folder {str(results_dir)!r} does not exist")
    runs: list[Run] = []
    skipped: list[str] = []
    for path in sorted(results_dir.glob("*.csv")):
        if path.stem.endswith(("-latency", "-timeline")):
            continue
        try:
            runs.append(read_run(path, schemas))
        except OutputError as exc:
            skipped.append(f"skipped {exc}")
    runs.sort(key=lambda r: (r.started, r.stem))
    return runs, skipped
