"""Terminal output: rich tables, the verdict, warnings and the progress display.

Pure renderers: each takes result rows and returns something rich can print.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from asyncbench import metrics
from asyncbench.metrics import LevelStats

SWEET_MARK = "★"
KNEE_MARK = "◆"
_ERROR_LABELS = (
    ("errors_http_5xx", "5xx"),
    ("errors_http_4xx", "4xx"),
    ("errors_timeout", "timeout"),
    ("errors_connect", "conn"),
    ("errors_other", "other"),
)


class TrimmedConsole(Console):
    """A console whose lines end at their last visible character: no trailing spaces from table
    padding or word wrap, in a terminal or in a file."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if kwargs.get("soft_wrap"):
            super().print(*objects, **kwargs)
            return
        renderables = [self.render_str(o) if isinstance(o, str) else o for o in objects]
        super().print(*(Trimmed(r) for r in renderables), **kwargs)


class Trimmed:
    """Renders what it wraps line by line, dropping trailing white space from each line."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.renderable, options, pad=False):
            yield from _rstrip(line)
            yield Segment.line()


def _rstrip(line: list[Segment]) -> list[Segment]:
    end = len(line)
    while end and not line[end - 1].control and not line[end - 1].text.strip():
        end -= 1
    if end and not line[end - 1].control:
        last = line[end - 1]
        line = [*line[: end - 1], Segment(last.text.rstrip(), last.style), *(s for s in line[end:] if s.control)]
    else:
        line = [*line[:end], *(s for s in line[end:] if s.control)]
    return line


def make_console() -> Console:
    """A console that wraps at the terminal's width, or 80 columns (or $COLUMNS) when piped."""
    return TrimmedConsole(highlight=False)


def fmt_rate(x: float) -> str:
    """Requests per second (or any rate): one decimal below 100, none above."""
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 10:
        return f"{ms:.2f}"
    return f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def fmt_pct(fraction: float) -> str:
    return f"{fraction * 100:.1f}"


def errors_cell(row: Any) -> str:
    """The failures of a row, most first, as counts of what: '500 × 503, 3 × timeout' (the HTTP
    status when the row has them, else its class: '500 × 5xx')."""
    statuses = metrics.parse_statuses(getattr(row, "error_statuses", ""))
    parts: list[tuple[int, str]] = [(n, str(code)) for code, n in statuses.items()]
    for name, label in _ERROR_LABELS:
        n = int(getattr(row, name) or 0)
        if name.startswith("errors_http"):
            klass = label[0]  # '5' or '4'
            n -= sum(c for code, c in statuses.items() if str(code).startswith(klass))
        if n > 0:
            parts.append((n, label))
    parts.sort(key=lambda p: -p[0])
    return ", ".join(f"{n:,} × {label}" for n, label in parts) if parts else "-"


def ok_latency(row: Any, q: str) -> float:
    """A row's latency of successes at `q` ("p50", "p99", "max"), or of every request for rows
    written before the two were kept apart."""
    value = getattr(row, f"ok_latency_{q}_s", None)
    if value is None or value == "":
        value = getattr(row, f"latency_{q}_s")
    return float(value)


def retries_of(row: Any) -> int:
    """Attempts beyond the first of each request (0 for rows without the column)."""
    attempts = getattr(row, "attempts", None)
    return max(0, int(attempts) - int(row.requests)) if attempts not in (None, "") else 0


def throttled_of(row: Any) -> int:
    value = getattr(row, "throttled", None)
    return 0 if value in (None, "") else int(value)


class FitTable:
    """A table that never cuts a value: built like a rich Table, and at render time split into
    stacked tables (the first column repeated in each) when its columns do not fit the width.
    The house style: left-aligned title, a rule under the header, one space between columns (so
    ten numeric columns fit in 80), no edge padding (so piped output has no ragged margin)."""

    def __init__(self, title: str, keys: int = 1) -> None:
        self.title = title
        self.keys = keys  # the leading columns that name a row, repeated in every stacked part
        self.caption: str | None = None
        self.columns: list[dict[str, Any]] = []
        self.rows: list[tuple[list[str], str | None]] = []

    def add_column(self, header: str, justify: str = "left", wrap: bool = False) -> None:
        self.columns.append({"header": header, "justify": justify, "wrap": wrap})

    def add_row(self, *cells: str, style: str | None = None) -> None:
        self.rows.append((list(cells), style))

    def _table(self, indexes: list[int]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False,
                      padding=(0, 0), collapse_padding=True)
        for i in indexes:
            col = self.columns[i]
            table.add_column(col["header"], justify=col["justify"], no_wrap=not col["wrap"],
                             overflow="fold")
        for cells, style in self.rows:
            table.add_row(*(cells[i] for i in indexes), style=style)
        return table

    def _parts(self, console: Console, options: ConsoleOptions) -> list[list[int]]:
        """Columns packed into as few tables as fit the width, in order; a wrapping column may
        take what is left of a line if that is at least a dozen characters."""
        width = options.max_width
        keys = list(range(self.keys))
        parts: list[list[int]] = [list(keys)]
        for i in range(self.keys, len(self.columns)):
            trial = self._table([*parts[-1], i])
            needed = Measurement.get(console, options.update(width=10_000), trial).maximum
            if needed > width and len(parts[-1]) > self.keys:
                fits_wrapped = self.columns[i]["wrap"] and needed - self._widest(i) + 12 <= width
                if not fits_wrapped:
                    parts.append(list(keys))
            parts[-1].append(i)
        return parts

    def _widest(self, i: int) -> int:
        cells = [cells[i] for cells, _ in self.rows] + self.columns[i]["header"].split("\n")
        return max(cell_len(c) for c in cells)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        parts = self._parts(console, options)
        yield Text(self.title)  # wrapped at the console's width, not the (narrower) table's
        for indexes in parts:
            yield self._table(indexes)
        if self.caption:  # under the last table, wrapped at the console's width, not the table's
            yield Text(self.caption)


def _table(title: str, keys: int = 1) -> FitTable:
    return FitTable(title, keys)


def _row_name(value: str, is_sweet: bool, client_limited: bool) -> str:
    """A row's first cell: its level, marked ★ for the sweet spot and ! when client-limited."""
    name = f"{SWEET_MARK} {value}" if is_sweet else value
    return f"! {name}" if client_limited else name


def level_line(r: LevelStats, step: str = "level") -> str:
    """One finished level as a line: for logs and output that is not a terminal."""
    return (
        f"{step} {r.level:,} done: {fmt_rate(r.throughput_rps)} req/s, goodput "
        f"{fmt_rate(r.goodput_rps)} req/s, p50 {fmt_ms(r.latency_p50_s)} ms, "
        f"{fmt_pct(r.success_rate)} % ok"
    )


def level_table(
    rows: Sequence[LevelStats], sweet: LevelStats | None, title: str, step: str = "level",
    show_queue_wait: bool = False,
) -> FitTable:
    """Little's-law table: λ throughput, goodput, W mean latency, L = λW, L/level, p50/p99."""
    table = _table(title)
    table.add_column(step, justify="right")
    for header in ("λ\nreq/s", "goodput\nreq/s", "W mean\nms", "L=λW", "L /\nlevel"):
        table.add_column(header, justify="right")
    if show_queue_wait:
        table.add_column("wait\nms", justify="right")
    for header in ("ok p50\nms", "ok p99\nms", "ok\n%"):
        table.add_column(header, justify="right")
    retried = any(retries_of(r) for r in rows)
    throttled = any(throttled_of(r) for r in rows)
    if retried or throttled:
        table.add_column("retry/\nthrottle", justify="right")
    table.add_column("errors", justify="left", wrap=True)
    for r in rows:
        is_sweet = sweet is not None and r.level == sweet.level
        cells = [
            _row_name(f"{r.level:,}", is_sweet, r.client_limited),
            fmt_rate(r.throughput_rps),
            fmt_rate(r.goodput_rps),
            fmt_ms(r.latency_mean_s),
            fmt_rate(r.littles_l),
            f"{r.efficiency:.2f}",
        ]
        if show_queue_wait:
            cells.append(fmt_ms(r.queue_wait_mean_s))
        cells += [_ok_ms(r, "p50"), _ok_ms(r, "p99"), fmt_pct(r.success_rate)]
        if retried or throttled:
            cells.append(f"{retries_of(r):,}/{throttled_of(r):,}")
        cells.append(errors_cell(r))
        style = "bold green" if is_sweet else ("red" if r.success_rate < 0.5 else None)
        table.add_row(*cells, style=style)
    notes = ["ok p50, ok p99: successful requests only (W: every request)"]
    if retried or throttled:
        notes.append("retry: attempts beyond each request's first; throttle: attempts answered 429, or 503 "
                     "with Retry-After")
    if any(r.client_limited for r in rows):
        notes.append("! the client, not the server, was the limit at this level")
    table.caption = "; ".join(notes)
    return table


def _ok_ms(row: Any, q: str) -> str:
    """A latency of successes, in ms; '-' when none succeeded."""
    return fmt_ms(ok_latency(row, q)) if int(row.successes) else "-"


def throttle_note(row: Any, what: str) -> str | None:
    """What it means that the server throttled the chosen level, or None when it did not."""
    n = throttled_of(row)
    if not n:
        return None
    attempts = getattr(row, "attempts", None)
    of = f" of {int(attempts):,} attempts" if attempts not in (None, "") else ""
    return (f"{what} {int(row.level):,} was throttled: {n:,}{of} were answered 429 (or 503 with Retry-After)"
            f"{' and retried' if retries_of(row) else ''}; its goodput is what the server let through, and a "
            f"level this short ({float(row.elapsed_s):.1f} s) rides the server's burst allowance: run more "
            "requests per level to see the rate it sustains")


def verdict(
    rows: Sequence[LevelStats], sweet: LevelStats | None, what: str, min_success: float,
    collapses: bool = False,
) -> Text:
    """One line: the sweet spot (`what` names the axis: "concurrency 100"), or why there is
    none; and, for an experiment whose goodput `collapses` (the trap), where it did."""
    if not rows:
        return Text("no level finished: nothing to conclude")
    if sweet is None:
        failed = [r for r in rows if r.requests and not r.successes]
        if len(failed) == len(rows):
            return Text(f"no sweet spot: every request failed: {failure_summary_all(rows)}", style="bold red")
        best = max(rows, key=lambda r: r.success_rate)
        line = Text(
            f"no sweet spot: no level reached {fmt_pct(min_success)} % success "
            f"(best: {what} {best.level:,} at {fmt_pct(best.success_rate)} %)",
            style="bold red",
        )
        if failed:
            line.append(f"\nno request succeeded at {what} {', '.join(f'{r.level:,}' for r in failed)}: "
                        f"{metrics.failure_summary(failed[0])}", style="red")
        return line
    line = Text(
        f"sweet spot: {what} {sweet.level:,} — {fmt_rate(sweet.goodput_rps)} req/s "
        f"at {fmt_pct(sweet.success_rate)} % success, p99 {fmt_ms(ok_latency(sweet, 'p99'))} ms",
        style="bold green",
    )
    if sweet.client_limited:
        line.append(
            " (unreliable: the client, not the server, was the limit at this level)",
            style="bold yellow",
        )
    throttled = throttle_note(sweet, what)
    if throttled is not None:
        line.append(f"\n{throttled}", style="yellow")
    # A level the client could not make (out of open files, a saturated loop) is not the trap.
    above = [r for r in rows if r.level > sweet.level and r.success_rate < min_success and not r.client_limited]
    if collapses and above:
        worst = min(above, key=lambda r: r.success_rate)
        line.append(
            f"\nabove it the trap springs: success fell to {fmt_pct(worst.success_rate)} % "
            f"at {worst.level:,} simultaneous requests",
            style="yellow",
        )
    return line


def failure_summary_all(rows: Sequence[LevelStats]) -> str:
    """The failures of every level together, as `metrics.failure_summary` words them."""
    # Rows are dataclasses when just measured and plain records when read back from disk.
    total = SimpleNamespace(**{name: sum(int(getattr(r, name) or 0) for r in rows) for name in (
        "errors_timeout", "errors_connect", "errors_http_4xx", "errors_http_5xx", "errors_other")})
    statuses: dict[int, int] = {}
    for r in rows:
        for code, n in metrics.parse_statuses(getattr(r, "error_statuses", "")).items():
            statuses[code] = statuses.get(code, 0) + n
    total.error_statuses = metrics.format_statuses(statuses)
    return metrics.failure_summary(total)


def warnings_block(notes: Iterable[str]) -> RenderableType | None:
    notes = list(notes)
    if not notes:
        return None
    return Group(*(Text(f"warning: {n}", style="yellow") for n in notes))


class SweepProgress(Progress):
    """A progress bar per step (level, pair) that polls a counter on its own refresh timer, so
    the request path never pays for display updates.

    Rich renders from its own refresh thread, so the current step is one attribute swapped
    whole, and a task that rich has already dropped (at stop) is skipped, not looked up.
    """

    def __init__(self, console: Console) -> None:
        # Set before Progress.__init__, which already calls get_renderables() (rich 13.9+).
        self._step: tuple[TaskID, Callable[[], int]] | None = None
        super().__init__(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            refresh_per_second=8,
        )

    def start_step(self, description: str, total: int, done: Callable[[], int]) -> None:
        if self._step is None:
            task_id = self.add_task(description, total=total)
        else:
            task_id = self._step[0]
            self.reset(task_id, total=total, completed=0, description=description)
        self._step = (task_id, done)

    def get_renderables(self):  # type: ignore[override]
        step = self._step
        if step is not None:
            with self._lock:  # an RLock: update() takes it again
                if step[0] in self._tasks:
                    self.update(step[0], completed=step[1]())
        yield from super().get_renderables()


def comparison_table(trap: Any, sem: Any) -> FitTable:
    """Trap vs semaphore (frames with the CSV columns). When the trap has a level of as many
    requests as each semaphore limit sent, the lab's comparison: the same N requests all at once,
    then through each limit. Otherwise, each level beside the limit of the same number."""
    same = metrics.same_requests(trap, sem)
    if same is not None:
        n, t = same
        table = _table(f"the same {n:,} requests: all at once (trap) vs through a semaphore")
        table.add_column("how", justify="left")
        for header in ("goodput\nreq/s", "ok\n%", "p50\nms", "p99\nms", "wall\ns"):
            table.add_column(header, justify="right")

        def cells(r: Any) -> list[str]:
            return [fmt_rate(r.goodput_rps), fmt_pct(r.success_rate), fmt_ms(r.latency_p50_s),
                    fmt_ms(r.latency_p99_s), f"{r.elapsed_s:,.2f}"]

        table.add_row(f"{n:,} at once", *cells(t), style="red" if t.success_rate < 0.99 else None)
        for r in sem.itertuples():
            table.add_row(f"limit {int(r.level):,}", *cells(r))
        return table
    table = _table("trap level N (N requests at once) vs semaphore limit N "
                   f"({int(sem['requests'].iloc[0]):,} requests); for the same requests both ways, "
                   "give semaphore --requests equal to a trap level")
    table.add_column("level /\nlimit", justify="right")
    for header in ("trap\ngoodput\nreq/s", "sem.\ngoodput\nreq/s", "trap\nok %", "sem.\nok %",
                   "trap\np99 ms", "sem.\np99 ms"):
        table.add_column(header, justify="right")
    t = {int(r.level): r for r in trap.itertuples()}
    s = {int(r.level): r for r in sem.itertuples()}
    for level in sorted(set(t) & set(s)) or sorted(set(t) | set(s)):
        a, b = t.get(level), s.get(level)
        table.add_row(
            f"{level:,}",
            fmt_rate(a.goodput_rps) if a else "-",
            fmt_rate(b.goodput_rps) if b else "-",
            fmt_pct(a.success_rate) if a else "-",
            fmt_pct(b.success_rate) if b else "-",
            fmt_ms(a.latency_p99_s) if a else "-",
            fmt_ms(b.latency_p99_s) if b else "-",
        )
    return table


def pipeline_table(rows: Sequence[Any], title: str) -> FitTable:
    """One row per (input, batch size, concurrency): throughput and memory."""
    table = _table(title, keys=3)
    for header in ("input\nMB", "batch", "conc.", "chunks", "ok\n%", "chunks\n/s", "p50\nms",
                   "p99\nms", "traced\nMB", "RSS\nMB"):
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(
            metrics.fmt_mb(r.input_mb), f"{r.batch_size:,}", f"{r.concurrency:,}", f"{r.chunks:,}",
            fmt_pct(r.success_rate), fmt_rate(r.throughput_cps), fmt_ms(r.latency_p50_s),
            fmt_ms(r.latency_p99_s), f"{r.peak_traced_mb:.2f}", f"{r.peak_rss_mb:.1f}",
            style=None if r.success_rate == 1.0 else "red",
        )
    return table


def phase_table(phase: str, records: Sequence[Any]) -> FitTable:
    """Task id → thread, start, end, for one `threads` phase."""
    table = _table(f"phase: {phase}")
    table.add_column("task", justify="right")
    table.add_column("thread")
    for header in ("start\nms", "end\nms", "took\nms"):
        table.add_column(header, justify="right")
    for r in records:
        thread = r.thread_name if r.thread_name == r.coroutine_thread else f"{r.thread_name} (from {r.coroutine_thread})"
        table.add_row(str(r.task_id), thread, f"{r.start_s * 1000:,.1f}", f"{r.end_s * 1000:,.1f}",
                      f"{r.duration_s * 1000:,.1f}", style=None if r.ok else "red")
    return table


def phase_summary_table(summaries: Sequence[Any]) -> FitTable:
    """Wall time against the sum and the max of the tasks, and the loop's worst lag, per phase."""
    table = _table("summary")
    table.add_column("phase")
    for header in ("wall\ns", "sum\ns", "max\ns", "wall/\nsum", "wall/\nmax", "loop\nlag ms", "threads"):
        table.add_column(header, justify="right")
    table.add_column("tasks\nwere")
    for s in summaries:
        table.add_row(s.phase, f"{s.wall_s:.3f}", f"{s.sum_s:.3f}", f"{s.max_s:.3f}", f"{s.wall_over_sum:.2f}",
                      f"{s.wall_over_max:.2f}", f"{s.loop_lag_max_s * 1000:,.1f}", str(len(s.threads)),
                      s.pattern, style="yellow" if s.pattern == "serialized" else None)
    return table


def impact_line(w: Any) -> str:
    """One way of `threads --impact`, as it finishes."""
    return (f"impact {w.way}: {w.requests:,} GETs in {w.wall_s:.2f} s, {w.successes:,} ok, at most "
            f"{w.threads_peak:,} threads alive, peak RSS {w.peak_rss_mb:,.1f} MB (+{w.rss_growth_mb:,.1f})")


def impact_table(ways: Sequence[Any], title: str) -> FitTable:
    """`threads --impact`: threads, memory and time of the same requests done three ways."""
    table = _table(title)
    table.add_column("way")
    for header in ("threads\npeak", "workers", "peak RSS\nMB", "RSS +\nMB", "wall\ns", "req/s", "ok"):
        table.add_column(header, justify="right")
    for w in ways:
        table.add_row(w.way, f"{w.threads_peak:,}", f"{w.workers:,}" if w.workers else "-", f"{w.peak_rss_mb:,.1f}",
                      f"{w.rss_growth_mb:,.1f}", f"{w.wall_s:.2f}", fmt_rate(w.throughput_rps),
                      f"{w.successes:,}", style="bold green" if w.way == "asyncio" else None)
    return table


# --- the open model ------------------------------------------------------------------------------


def rate_line(r: Any) -> str:
    """One finished rate as a line: for logs and output that is not a terminal."""
    dropped = f", {r.dropped:,} dropped" if r.dropped else ""
    return (f"rate {r.offered_rps:,.0f}/s done: sent {fmt_rate(r.achieved_rps)}/s, p50 {fmt_ms(r.latency_p50_s)} ms, "
            f"p99 {fmt_ms(r.latency_p99_s)} ms, {fmt_pct(r.success_rate)} % ok{dropped}")


def rate_table(rows: Sequence[Any], sweet: Any | None, title: str) -> FitTable:
    """Offered against achieved, latency from the intended send (p50, p99, p99.9) and from the
    actual send (service p99), how late the sends left, what was dropped."""
    table = _table(title)
    table.add_column("rate\nreq/s", justify="right")
    for header in ("sent\nreq/s", "goodput\nreq/s", "ok p50\nms", "ok p99\nms", "p99.9\nms", "svc p99\nms",
                   "lag p99\nms", "dropped", "ok\n%"):
        table.add_column(header, justify="right")
    table.add_column("errors", justify="left", wrap=True)
    for r in rows:
        is_sweet = sweet is not None and r.level == sweet.level
        table.add_row(
            _row_name(f"{r.offered_rps:,.0f}", is_sweet, r.client_limited), fmt_rate(r.achieved_rps),
            fmt_rate(r.goodput_rps), _ok_ms(r, "p50"), _ok_ms(r, "p99"), fmt_ms(r.latency_p999_s),
            fmt_ms(r.service_p99_s), fmt_ms(r.send_lag_p99_s),
            f"{r.dropped:,}", fmt_pct(r.success_rate), errors_cell(r),
            style="bold green" if is_sweet else ("red" if r.success_rate < 0.5 else None),
        )
    notes = ["latency runs from when each request was due (the schedule), svc from when it was sent; "
             "ok p50, ok p99: successful requests only (p99.9: every request)"]
    if any(r.client_limited for r in rows):
        notes.append("! the client could not keep the schedule at this rate")
    table.caption = "; ".join(notes)
    return table


def rate_verdict(rows: Sequence[Any], sweet: Any | None, min_success: float, slo_p99: float | None) -> Text:
    """The highest rate that met the floor (and the objective), and what happened above it."""
    if not rows:
        return Text("no rate finished: nothing to conclude")
    slo = f" and p99 ≤ {fmt_ms(slo_p99)} ms" if slo_p99 is not None else ""
    if sweet is None:
        return Text(f"no sweet spot: no rate met {fmt_pct(min_success)} % success{slo} with nothing dropped "
                    "and the client keeping the schedule", style="bold red")
    line = Text(
        f"sweet spot: rate {sweet.offered_rps:,.0f}/s — the highest offered rate that met "
        f"{fmt_pct(min_success)} % success{slo}: p99 {fmt_ms(ok_latency(sweet, 'p99'))} ms from the schedule",
        style="bold green",
    )
    above = [r for r in rows if r.offered_rps > sweet.offered_rps]
    if above:
        r = above[0]
        why = []
        if r.success_rate < min_success:
            why.append(f"success {fmt_pct(r.success_rate)} %")
        if slo_p99 is not None and ok_latency(r, "p99") > slo_p99:
            why.append(f"p99 {fmt_ms(ok_latency(r, 'p99'))} ms")
        if getattr(r, "client_limited", False) in (True, "true"):
            why.append("the client could not keep the schedule")
        if r.dropped:
            why.append(f"{r.dropped:,} dropped")
        if why:
            line.append(f"\nat {r.offered_rps:,.0f}/s: {', '.join(why)}", style="yellow")
    return line


# --- compare ---------------------------------------------------------------------------------------


def compare_table(levels: Sequence[Any], title: str, step: str = "level") -> FitTable:
    """Per shared level: goodput, p50 and p99 in both runs with the change, and the verdict."""
    from asyncbench.compare import METRICS

    table = _table(title)
    table.add_column(step, justify="right")
    for _, name, _ in METRICS:
        unit = "req/s" if name == "goodput" else "ms"
        table.add_column(f"{name} base\n{unit}", justify="right")
        table.add_column(f"{name} new\n{unit}", justify="right")
        table.add_column("change\n%", justify="right")
    table.add_column("verdict", justify="left")
    for lv in levels:
        cells = [f"{lv.level:,}"]
        for change in lv.changes:
            show = fmt_rate if change.metric == "goodput_rps" else fmt_ms
            mark = {"better": " +", "worse": " !"}.get(change.verdict, "")
            cells += [show(change.base), show(change.cand), f"{change.relative * 100:+.1f}{mark}"]
        style = {"worse": "red", "better": "green"}.get(lv.verdict)
        table.add_row(*cells, lv.verdict, style=style)
    table.caption = ("a change counts beyond the tolerance and beyond the runs' own spread (their rounds); "
                     "! worse, + better")
    return table


# --- find ------------------------------------------------------------------------------------------


def find_table(rows: Sequence[Any], best: Any | None, title: str, unit: str, knee: Any | None = None) -> FitTable:
    """Every probe in the order it ran: its level, goodput, p50, p99 (of the successes), success,
    and the judgement; ★ marks the most within the objective, ◆ the knee (recommended)."""
    table = _table(title)
    table.add_column("#", justify="right")
    table.add_column(f"level\n{unit}", justify="right")
    for header in ("goodput\nreq/s", "ok p50\nms", "ok p99\nms", "ok\n%"):
        table.add_column(header, justify="right")
    table.add_column("objective", justify="left", wrap=True)
    for i, r in enumerate(rows, 1):
        is_best = best is not None and r is best
        is_knee = knee is not None and r is knee
        name = _row_name(f"{r.level:,}", is_best, r.client_limited)
        if is_knee:
            name = f"{KNEE_MARK} {name}"
        table.add_row(str(i), name, fmt_rate(r.goodput_rps), _ok_ms(r, "p50"), _ok_ms(r, "p99"),
                      fmt_pct(r.success_rate), "met" if r.passed else f"missed: {r.reason}",
                      style="bold green" if is_best or is_knee else (None if r.passed else "red"))
    marks = [f"{SWEET_MARK} the most within the objective"]
    if knee is not None:
        marks.append(f"{KNEE_MARK} recommended: the knee, the lowest level within 5 % of the best goodput")
    table.caption = "; ".join(marks) + "; ok p50, ok p99: successful requests only"
    return table


def find_verdict(rows: Sequence[Any], best: Any, knee: Any, objective: str, unit: str, max_level: int) -> Text:
    """The knee first (what to run at), then how far the objective holds and what lies past it."""
    p99 = ok_latency(best, "p99")
    if knee.level == best.level:
        line = Text(f"recommended: {knee.level:,} {unit} — {fmt_rate(knee.goodput_rps)} req/s at p99 "
                    f"{fmt_ms(p99)} ms: the most that met {objective}, and no lower level came within 5 % "
                    "of its goodput", style="bold green")
    else:
        knee_p99 = ok_latency(knee, "p99")
        ratio = p99 / knee_p99 if knee_p99 > 0 else float("inf")
        gain = best.goodput_rps / knee.goodput_rps - 1 if knee.goodput_rps else 0.0
        more = f"{gain * 100:+.0f} % goodput" if abs(gain) >= 0.005 else "no more goodput"
        line = Text(f"recommended: {knee.level:,} {unit} — {fmt_rate(knee.goodput_rps)} req/s at p99 "
                    f"{fmt_ms(knee_p99)} ms; the objective holds up to {best.level:,} {unit}, with {ratio:.1f}× "
                    f"the latency for {more}", style="bold green")
    above = [r for r in rows if r.level > best.level and not r.passed]
    if above:
        nearest = min(above, key=lambda r: r.level)
        line.append(f"\n{best.level:,} {unit} is the edge, with no headroom: {nearest.level:,} {unit} missed it: "
                    f"{nearest.reason}", style="yellow")
    elif best.level >= max_level:
        line.append(f"\nstill met at --max {max_level:,}: the limit is higher", style="yellow")
    return line
