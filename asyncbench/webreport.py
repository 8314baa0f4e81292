"""`asyncbench report`: the findings of a results folder as one self-contained HTML page.

Everything is inside the file — CSS in a <style>, charts as PNG data URIs — so it opens offline,
attached to a pull request or a chat, and prints. No script: the page is static HTML. The tables
and verdicts are the ones the terminal showed (each experiment's `summary`), turned into HTML.
"""

from __future__ import annotations

import base64
import html
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncbench.redact import redact_known, redact_text
from asyncbench.results import Run
from asyncbench.version import __version__

_STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --good: #1a7f37; --bad: #cf222e; --warn: #9a6700;
        --bg-warn: #fff8c5; --bg-head: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       max-width: 1100px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin: 1.6em 0 0.3em; padding-top: 0.6em; border-top: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 1.2em 0 0.3em; break-after: avoid; }
.muted, figcaption, caption { color: var(--muted); }
nav ul { padding-left: 1.2em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0.5em 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.scroll { overflow-x: auto; margin: 0.6em 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
caption { text-align: left; caption-side: top; padding: 2px 0 6px; font-weight: 600; }
th, td { padding: 3px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg-head); font-weight: 600; white-space: nowrap; }
td.r, th.r { text-align: right; white-space: nowrap; }
td:first-child { white-space: nowrap; }
tr.good td { color: var(--good); font-weight: 600; }
tr.bad td { color: var(--bad); }
tr.warn td { color: var(--warn); }
p.table-note { color: var(--muted); margin: 0.2em 0 0.8em; font-size: 0.92em; }
p.line { white-space: pre-line; margin: 0.4em 0; }
.good { color: var(--good); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); }
ul.warnings { background: var(--bg-warn); padding: 8px 12px 8px 28px; border-radius: 6px; }
figure { margin: 1em 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; }
.charts figure.wide { grid-column: 1 / -1; }
@media (max-width: 600px) {
  body { font-size: 14px; padding: 10px; }
  .charts { grid-template-columns: 1fr; }
  dl.facts { grid-template-columns: 1fr; }
  dl.facts dd { margin-bottom: 4px; }
}
@media print {
  body { max-width: none; font-size: 11pt; }
  h2 { break-before: page; }
  section:first-of-type h2 { break-before: auto; }
  figure, table, dl.facts { break-inside: avoid; }
  .charts { display: block; }
  figure { width: 85%; }
  figure.wide { width: 100%; }
  .scroll { overflow: visible; }
}
"""


def render(runs: Sequence[Run], folder: Path, comparison: tuple[Run, Run] | None, experiments: Mapping[str, Any],
           skipped: Iterable[str] = (), charts: dict[str, list[Path]] | None = None) -> str:
    """The page for `runs` (oldest first), with the trap-vs-semaphore comparison when given;
    `experiments` are the runs' descriptors by name (what they render and chart). `charts`: a
    run's charts already drawn (by its stem); the others are drawn here."""
    body: list[str] = [
        "<header>",
        "<h1>asyncbench report</h1>",
        f"<p class='muted'>{len(runs)} run{'s' if len(runs) != 1 else ''} from <code>{_e(str(folder))}</code>, "
        f"written {_e(datetime.now().isoformat(timespec='seconds'))} by asyncbench {_e(__version__)}</p>",
        "<nav><ul>",
    ]
    if comparison is not None:
        body.append("<li><a href='#trap-vs-semaphore'>the trap against the semaphore</a></li>")
    body += [f"<li><a href='#{_e(run.stem)}'>{_e(_heading(run))}</a></li>" for run in runs]
    body += ["</ul></nav>", "</header>"]
    notes = list(skipped)
    if notes:
        body.append(_list("warnings", notes))
    with tempfile.TemporaryDirectory(prefix="asyncbench-report-") as scratch:
        charts_dir = Path(scratch)
        if comparison is not None:
            body += _comparison(*comparison, charts_dir)
        for run in runs:
            drawn = (charts or {}).get(run.stem)
            try:
                body += _section(run, experiments[run.experiment], charts_dir / run.stem, drawn)
            except (KeyError, TypeError, ValueError) as exc:
                # A file asyncbench did not write as it is (hand-edited, foreign): said, and skipped.
                body.append(_list("warnings", [f"skipped {run.csv_path}: it cannot be reported ({exc})"]))
    return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>asyncbench report — {_e(', '.join(dict.fromkeys(r.experiment for r in runs)))}</title>\n"
            f"<style>{_STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _heading(run: Run) -> str:
    from asyncbench.plots import target_label

    return f"{run.experiment} — {target_label(run.meta)} — {run.started.replace('T', ' ')}"


def _section(run: Run, experiment: Any, charts_dir: Path, drawn: list[Path] | None) -> list[str]:
    meta = run.meta
    out = [f"<section id='{_e(run.stem)}'>", f"<h2>{_e(_heading(run))}</h2>", _facts(run)]
    if experiment.summary is not None:
        out += [_renderable(r) for r in experiment.summary(run)]
    usl = meta.get("usl")
    if isinstance(usl, dict):
        from asyncbench.usl import POOR_R2, UslFit

        fit = UslFit.from_dict(usl)
        if fit is not None:
            warn = not fit.reliable or fit.r2 < POOR_R2
            out.append(f"<p class='line{' warn' if warn else ''}'>{_e(fit.describe())}</p>")
        elif usl.get("reason"):
            out.append(f"<p class='line warn'>{_e('USL: not fitted: ' + str(usl['reason']))}</p>")
    thresholds = meta.get("thresholds")
    if isinstance(thresholds, list) and thresholds:
        out.append(_thresholds(thresholds))
    warnings = meta.get("warnings")
    if isinstance(warnings, list) and warnings:
        out += ["<h3>Warnings</h3>", _list("warnings", [str(w) for w in warnings])]
    shards = meta.get("shards")
    if isinstance(shards, list) and shards:
        out.append(_shards(shards))
    if drawn is None:
        drawn = experiment.charts(run, charts_dir, run.setting("min_success", None))
    out.append(_charts(drawn, run.stem))
    out.append("</section>")
    return out


def _facts(run: Run) -> str:
    """What ran: the command line, the target, the engine, how the load was made, versions, host."""
    meta = run.meta
    facts: list[tuple[str, str]] = []
    command = meta.get("command")
    if isinstance(command, list):
        facts.append(("command", " ".join(str(a) for a in command)))
    facts.append(("target", str(meta.get("target", "?"))
                  + (" (the embedded server)" if meta.get("target_kind") == "embedded" else "")))
    if isinstance(meta.get("server"), dict):
        server = meta["server"]
        facts.append(("embedded server", ", ".join(f"{k} {server[k]}" for k in ("latency", "capacity", "queue",
                                                                                  "error_rate") if k in server)))
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    engine = meta.get("engine") or config.get("engine")
    if engine:
        facts.append(("engine", f"{engine}" + (f" on {config['loop']}" if config.get("loop") else "")))
    scale = meta.get("scale")
    if isinstance(scale, dict) and (scale.get("cluster") or (scale.get("processes") or 1) > 1):
        where = f"Dask cluster {scale['cluster']}" if scale.get("cluster") else f"{scale['processes']} local processes"
        facts.append(("load made by", f"{where}, {scale.get('workers')} workers"))
    facts.append(("status", str(meta.get("status", "?"))))
    when = " to ".join(str(meta[k]).replace("T", " ") for k in ("started_at", "finished_at") if meta.get(k))
    if when:
        facts.append(("when", when))
    if isinstance(meta.get("versions"), dict):
        facts.append(("versions", ", ".join(f"{k} {v}" for k, v in meta["versions"].items())))
    if isinstance(meta.get("host"), dict):
        facts.append(("host", ", ".join(f"{k} {v}" for k, v in meta["host"].items())))
    facts.append(("results", f"{run.csv_path.name} (and its .json sidecar)"))
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_code(v) if k == 'command' else _e(v)}</dd>" for k, v in facts)
    return f"<dl class='facts'>{rows}</dl>"


def _renderable(item: Any) -> str:
    """A table or line of the terminal's conclusion, as HTML."""
    from rich.text import Text

    from asyncbench.report import FitTable

    if isinstance(item, FitTable):
        return _table(item)
    if isinstance(item, Text):
        return f"<p class='line {_style_class(str(item.style))}'>{_e(item.plain)}</p>"
    return f"<p class='line'>{_e(str(item))}</p>"


def _style_class(style: str | None) -> str:
    style = style or ""
    if "green" in style:
        return "good"
    if "red" in style:
        return "bad"
    if "yellow" in style:
        return "warn"
    return ""


def _table(table: Any) -> str:
    right = [c["justify"] == "right" for c in table.columns]
    head = "".join(f"<th{' class=r' if r else ''}>{_e(c['header']).replace(chr(10), '<br>')}</th>"
                   for c, r in zip(table.columns, right, strict=True))
    rows = []
    for cells, style in table.rows:
        cls = _style_class(style)
        tds = "".join(f"<td{' class=r' if r else ''}>{_e(c)}</td>" for c, r in zip(cells, right, strict=True))
        rows.append(f"<tr{f' class={cls}' if cls else ''}>{tds}</tr>")
    note = f"<p class='table-note'>{_e(table.caption)}</p>" if table.caption else ""
    return (f"<div class='scroll'><table><caption>{_e(table.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>{note}")


def _thresholds(thresholds: list[Any]) -> str:
    items = []
    for t in thresholds:
        if not isinstance(t, dict):
            continue
        failed = t.get("failed") or []
        if failed:
            shown = "; ".join(str(f) for f in failed[:10]) + (f"; and {len(failed) - 10} more" if len(failed) > 10 else "")
            items.append(f"<li class='bad'><code>--fail-if {_e(str(t.get('expr')))}</code> failed: {_e(shown)}</li>")
        else:
            items.append(f"<li class='good'><code>--fail-if {_e(str(t.get('expr')))}</code> passed</li>")
    return "<h3>Thresholds</h3><ul>" + "".join(items) + "</ul>"


def _shards(steps: list[Any]) -> str:
    rows = []
    for step in steps:
        for s in step.get("shards", []) if isinstance(step, dict) else []:
            share = (f"{s['connections']:,} connections" if "connections" in s
                     else f"{s.get('offered_rps', 0):,.0f} req/s offered")
            cls = "" if s.get("status") == "ok" else " class=bad"
            rows.append(f"<tr{cls}><td>{_e(str(step.get('step')))}</td><td class=r>{s.get('shard')}</td>"
                        f"<td>{_e(str(s.get('worker')))}</td><td>{_e(share)}</td>"
                        f"<td class=r>{s.get('requests', 0):,} of {s.get('requests_planned', 0):,}</td>"
                        f"<td>{_e(str(s.get('status')))} {_e(str(s.get('reason', '')))}</td></tr>")
    return ("<h3>Shards</h3><div class='scroll'><table><thead><tr><th>step</th><th class=r>shard</th><th>worker</th>"
            "<th>share</th><th class=r>requests</th><th>status</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")


def _charts(paths: Sequence[Path], stem: str) -> str:
    if not paths:
        return ""
    figures = []
    for path in paths:
        png = path.read_bytes()
        width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR
        data = base64.b64encode(png).decode("ascii")
        what = path.stem.removeprefix(stem).strip("-") or path.stem
        wide = " class='wide'" if width > 1.8 * height else ""  # several panels side by side: a whole row
        figures.append(f"<figure{wide}><img src='data:image/png;base64,{data}' alt='{_e(what)} chart' "
                       f"width='{width}' height='{height}'>"
                       f"<figcaption>{_e(what)}</figcaption></figure>")
    return "<h3>Charts</h3><div class='charts'>" + "".join(figures) + "</div>"


def _comparison(trap: Run, sem: Run, charts_dir: Path) -> list[str]:
    from asyncbench import report
    from asyncbench.plots import comparison_chart

    chart = comparison_chart(trap, sem, charts_dir, "trap-vs-semaphore")
    return ["<section id='trap-vs-semaphore'>", "<h2>The trap against the semaphore</h2>",
            f"<p class='muted'>{_e(trap.stem)} and {_e(sem.stem)}: the same load all at once, and through a "
            "semaphore of each limit.</p>",
            _table(report.comparison_table(trap.frame, sem.frame)), _charts([chart], "trap-vs-semaphore"),
            "</section>"]


def _list(cls: str, items: Sequence[str]) -> str:
    return f"<ul class='{cls}'>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _e(text: str) -> str:
    """Escaped for HTML, with any secret a text could hold redacted (the sidecars already are)."""
    return html.escape(redact_text(text), quote=True)


def _code(text: str) -> str:
    return f"<code>{_e(text)}</code>"


def write(path: Path, page: str) -> None:
    """Write the page whole (a temporary file renamed), so a reader never sees half of it. A
    symbolic link is written through — the file it names is replaced, the link stays — and
    anything but a regular file (a FIFO, a device) is refused."""
    from asyncbench.errors import OutputError

    path = Path(os.path.realpath(path))  # the link's target: the link itself is never replaced
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write report {path}: not a regular file (a FIFO, socket or device)")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(redact_known(page), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write report {path}: {exc.strerror or exc}") from None
