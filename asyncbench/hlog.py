"""HdrHistogram's own formats, for its tools (HistogramLogProcessor, the plotter): a log of every
interval's histogram (`.hlog`, `--hdr-log`), and a level's percentile distribution (`.hgrm`).

Values are recorded in microseconds (HdrHistogram's integers) from our buckets' midpoints; the
`hdrhistogram` package encodes them. The log's lines are written here: the package's writer
formats its StartTime line with a method `datetime` does not have.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from asyncbench.errors import OutputError
from asyncbench.histogram import LatencyHistogram

_HIGHEST_US = 3_600_000_000  # an hour, as LatencyHistogram's range
_DIGITS = 3
_MS_PER_US = 1000.0  # the log's Interval_Max, and the .hgrm's values, in milliseconds


def to_hdr(hist: LatencyHistogram) -> Any:
    """Our histogram as an hdrh.HdrHistogram in microseconds."""
    from hdrh.histogram import HdrHistogram

    hdr = HdrHistogram(1, _HIGHEST_US, _DIGITS)
    counts = hist.counts
    index = np.flatnonzero(counts)
    values = np.clip(np.rint(LatencyHistogram.bucket_value(index) * 1e6), 1, _HIGHEST_US).astype(np.int64)
    for value, count in zip(values.tolist(), counts[index].tolist(), strict=True):
        hdr.record_value(value, count)
    return hdr


def percentile_distribution(hist: LatencyHistogram) -> str:
    """The .hgrm text of a histogram (values in milliseconds), as HdrHistogram prints it."""
    out = io.BytesIO()
    hdr = to_hdr(hist)
    hdr.output_percentile_distribution(out, _MS_PER_US)
    return out.getvalue().decode("ascii")


class HdrLog:
    """An interval log being written: a header at open, then a line per interval as each level
    finishes, flushed at once (a run cut short keeps the levels it finished)."""

    def __init__(self, path: Path, started: float | None = None) -> None:
        self.path = path
        self.started = time.time() if started is None else started
        self._begin: dict[str, float] = {}  # each tag's start on the log's clock, fixed at its first lines
        try:
            self._file: IO[str] = open(path, "w", encoding="ascii")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise OutputError(f"cannot write --hdr-log {path}: {exc.strerror or exc}") from None
        stamp = datetime.fromtimestamp(self.started, UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
        self._write("#[Logged with asyncbench]\n#[Histogram log format version 1.3]\n"
                    f"#[StartTime: {self.started:.3f} (seconds since epoch), {stamp}]\n"
                    '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n')

    def write_level(self, tag: str, intervals: list[Any], ended: float | None = None) -> None:
        """A level's intervals (timeline.Interval), tagged; placed on the run's clock by when its
        first ones were written (now: just as they closed, or as the level finished)."""
        if not intervals:
            return
        if tag not in self._begin:
            end = (time.time() if ended is None else ended) - self.started
            self._begin[tag] = max(0.0, end - (intervals[-1].start_s + intervals[-1].length_s))
        begin = self._begin[tag]
        lines = []
        for interval in intervals:
            hdr = to_hdr(interval.ok)
            payload = hdr.encode().decode("ascii")
            peak = interval.ok.max * 1e6 / _MS_PER_US if interval.ok.count else 0.0
            lines.append(f"Tag={tag},{begin + interval.start_s:.3f},{interval.length_s:.3f},{peak:.3f},{payload}\n")
        self._write("".join(lines))

    def _write(self, text: str) -> None:
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write --hdr-log {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # a failed flush was reported when it happened
