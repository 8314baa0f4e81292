"""Terminal output's shared parts: the console, the table that never cuts a value, number
formats, row marks, warnings, the progress display — and the two views across experiments (the
lab's trap-vs-semaphore comparison, `compare`'s table). Each experiment builds its own tables
and verdicts from these.

Pure renderers: each takes result rows and returns something rich can print.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from asyncbench.records import parse_statuses

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


def fmt_mb(x: float) -> str:
    """A size in MiB for people: three significant digits ('1.42', '0.25', '8'), whole above 100."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def fmt_pct(fraction: float) -> str:
    return f"{fraction * 100:.1f}"


def errors_cell(row: Any) -> str:
    """The failures of a row, most first, as counts of what: '500 × 503, 3 × timeout' (the HTTP
    status when the row has them, else its class: '500 × 5xx')."""
    statuses = parse_statuses(getattr(row, "error_statuses", ""))
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


def row_name(value: str, is_sweet: bool, client_limited: bool) -> str:
    """A row's first cell: its level, marked ★ for the sweet spot and ! when client-limited."""
    name = f"{SWEET_MARK} {value}" if is_sweet else value
    return f"! {name}" if client_limited else name


def ok_ms(row: Any, q: str) -> str:
    """A latency of successes, in ms; '-' when none succeeded."""
    return fmt_ms(ok_latency(row, q)) if int(row.successes) else "-"


def warnings_block(notes: Iterable[str]) -> RenderableType | None:
    notes = list(notes)
    if not notes:
        return None
    return Group(*(Text(f"warning: {n}", style="yellow") for n in notes))


class RateColumn(ProgressColumn):
    """Units finished per second over rich's recent samples, e.g. "412 req/s"."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "req")
        return Text(f"{fmt_rate(speed)} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")


class SweepProgress(Progress):
    """A progress bar per step (level, pair) that polls a counter on its own refresh timer, so
    the request path never pays for display updates: done of total, rate, time left, and a
    note the step polls too (the pipeline's 429s).

    Rich renders from its own refresh thread, so the current step is one attribute swapped
    whole, and a task that rich has already dropped (at stop) is skipped, not looked up.
    """

    def __init__(self, console: Console, step: str = "level") -> None:
        # Set before Progress.__init__, which already calls get_renderables() (rich 13.9+).
        self._step: tuple[TaskID, Callable[[], int], Callable[[], str] | None] | None = None
        self._word = step
        self._rows: list[tuple[str, ...]] = []  # the finished steps, shown above the bar
        columns = (TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), RateColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(compact=True), TextColumn("{task.fields[note]}"))
        super().__init__(
            *columns,
            console=console,
            transient=True,
            refresh_per_second=8,
        )

    def start_step(self, description: str, total: int, done: Callable[[], int], unit: str = "req",
                   note: Callable[[], str] | None = None) -> None:
        if self._step is None:
            task_id = self.add_task(description, total=total, unit=unit, note="")
        else:
            task_id = self._step[0]
            self.reset(task_id, total=total, completed=0, description=description, unit=unit, note="")
        self._step = (task_id, done, note)

    def add_result(self, row: Any) -> None:
        """A finished step of a load run (a row with the load columns), shown as a row of a
        table above the bar while the run goes on: results as they come."""
        cells = (f"{row.level:,}", f"{row.requests:,}", fmt_pct(row.success_rate), fmt_rate(row.goodput_rps),
                 fmt_ms(row.ok_latency_p50_s), fmt_ms(row.ok_latency_p99_s))
        self._rows = [*self._rows, cells]  # swapped whole: rich renders from its own thread

    def _table(self) -> Table:
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
        for header in (self._word, "requests", "ok\n%", "goodput\nreq/s", "ok p50\nms", "ok p99\nms"):
            table.add_column(header, justify="right", no_wrap=True)
        for cells in self._rows[-10:]:  # the last ten: a long sweep must not push the bar away
            table.add_row(*cells)
        return table

    def get_renderables(self):  # type: ignore[override]
        step = self._step
        if step is not None:
            with self._lock:  # an RLock: update() takes it again
                if step[0] in self._tasks:
                    fields = {"note": step[2]()} if step[2] is not None else {}
                    self.update(step[0], completed=step[1](), **fields)
        if self._rows:
            yield self._table()
        yield from super().get_renderables()


def comparison_table(trap: Any, sem: Any) -> FitTable:
    """Trap vs semaphore (frames with the CSV columns). When the trap has a level of as many
    requests as each semaphore limit sent, the lab's comparison: the same N requests all at once,
    then through each limit. Otherwise, each level beside the limit of the same number."""
    from asyncbench.metrics import same_requests

    same = same_requests(trap, sem)
    if same is not None:
        n, t = same
        table = FitTable(f"the same {n:,} requests: all at once (trap) vs through a semaphore")
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
    table = FitTable("trap level N (N requests at once) vs semaphore limit N "
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
        cells = (
            f"{level:,}",
            fmt_rate(a.goodput_rps) if a else "-",
            fmt_rate(b.goodput_rps) if b else "-",
            fmt_pct(a.success_rate) if a else "-",
            fmt_pct(b.success_rate) if b else "-",
            fmt_ms(a.latency_p99_s) if a else "-",
            fmt_ms(b.latency_p99_s) if b else "-",
        )
        table.add_row(*cells)
    return table


# --- the open model ------------------------------------------------------------------------------


# --- compare ---------------------------------------------------------------------------------------


def compare_table(levels: Sequence[Any], title: str, step: str = "level") -> FitTable:
    """Per shared level: goodput, p50 and p99 in both runs with the change, and the verdict."""
    from asyncbench.compare import METRICS

    table = FitTable(title)
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


